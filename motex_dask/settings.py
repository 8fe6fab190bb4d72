"""What a campaign *is*: frozen, validated settings dataclasses (no YAML, no I/O).

Each dataclass checks its own values in `__post_init__` and raises `SettingError` naming the field;
`campaign_file` adds the file name and the section path.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase.data import chemical_symbols

STRATEGIES = ("uniform-size", "bernoulli", "exhaustive", "cookie-cutter", "mixed", "adaptive")
#: Strategies that may be one part of a mixed catalogue (random draws; exhaustive enumerates rows).
PART_STRATEGIES = ("uniform-size", "bernoulli", "cookie-cutter")
SHAPES = ("sphere", "ellipsoid")
#: Where cookie-cutter centres are drawn: near a random permuted atom, or anywhere in their bounding sphere.
CENTRES = ("atoms", "bounding-sphere")
#: keep_probability when it is left out: bernoulli keeps half the atoms, a cookie-cutter the whole cut.
DEFAULT_KEEP_PROBABILITY = {"bernoulli": 0.5, "cookie-cutter": 1.0}
#: Strategies an adaptive catalogue may draw its first round and its blind rows with.
FIRST_STRATEGIES = (*PART_STRATEGIES, "mixed")
#: Which candidates an adaptive campaign explains.
EXPLAIN_ROWS = ("blind", "all")
MUTATE_ATOMS = ("anywhere", "boundary")
KEEP_COMBINE = ("mean", "product")
#: Adaptive settings that may change between runs of one store (they decide when to stop, not what is drawn).
STOPPING_KEYS = ("tolerance", "min_tau", "patience", "max_fits", "explain", "boundary")
BOUNDARIES = ("sign", "best")
ENGINES = ("batched", "srfit")
CALCULATORS = ("motex", "srreal")
RADIATIONS = ("xray", "neutron")
EXHAUSTIVE_MAX_ATOMS = 24
#: Accepted values of each PDF calculator setting: (lowest, highest, whether `lowest` itself is
#: allowed), for campaign files and `motex pdf` alike. Past them the PDF means nothing or its grids
#: outgrow memory (qmax and rmax size the Q grid); the usual values sit well inside: qmax 20–40 Å⁻¹,
#: qdamp/qbroad 0.01–0.1 Å⁻¹, uiso 0.001–0.05 Å².
SETTING_RANGES: dict[str, tuple[float, float, bool]] = {
    "qmin": (0.0, 100.0, True), "qmax": (0.0, 100.0, False), "qdamp": (0.0, 1.0, True),
    "qbroad": (0.0, 1.0, True), "rmin": (0.0, 1000.0, True), "rmax": (0.0, 1000.0, False),
    "rstep": (1e-4, 1.0, True), "uiso": (0.0, 1.0, False), "zoom": (0.1, 10.0, True),
    "delta1": (0.0, 100.0, True), "delta2": (0.0, 100.0, True),
}


def range_problem(name: str, value: float) -> str | None:
    """What is wrong with `value` for calculator setting `name` (SETTING_RANGES), or None."""
    lo, hi, lo_ok = SETTING_RANGES[name]
    if not math.isfinite(value):
        return f"must be a finite number (got {value})"
    if not (lo <= value if lo_ok else lo < value) or value > hi:
        return f"must lie in {'[' if lo_ok else '('}{lo:g}, {hi:g}] (got {value:g})"
    return None


#: How the frames of a series (`data:` a list or a glob) are ordered: by a natural sort of their
#: file names (frame2 before frame10), or as the list gives them.
FRAME_ORDERS = ("natural", "listed")


class SettingError(Exception):
    """A bad value in one field; the loader adds the file name and the section path."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field_name = field_name
        self.message = message


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise SettingError(field_name, message)


@dataclass(frozen=True)
class ParamSpec:
    """One refinable fit parameter: refined within [lo, hi] from `start`, or fixed at `start`."""

    refine: bool = True
    start: float = 1.0
    lo: float = field(default=-float("inf"), metadata={"key": "min"})
    hi: float = field(default=float("inf"), metadata={"key": "max"})

    def __post_init__(self) -> None:
        _require(self.lo < self.hi, "min", f"must be below max (got min={self.lo}, max={self.hi})")
        _require(self.lo <= self.start <= self.hi, "start",
                 f"must lie within [min, max] = [{self.lo}, {self.hi}] (got {self.start})")


@dataclass(frozen=True)
class FitSettings:
    """How each candidate is refined against the data (see docs/design.md)."""

    engine: str = "batched"
    calculator: str = "motex"
    rmin: float = 1.6
    rmax: float = 10.0
    qmin: float = 0.7
    qmax: float = 20.0
    qdamp: float = 0.05
    qbroad: float = 0.01
    radiation: str = "xray"
    zoom: ParamSpec = ParamSpec(True, 1.0, 0.97, 1.03)
    #: one block for every atom, or {element: block} (one Uiso per element)
    uiso: ParamSpec | dict[str, ParamSpec] = ParamSpec(True, 0.005, 0.001, 0.05)
    delta1: ParamSpec = ParamSpec(False, 0.0, 0.0, 5.0)  # Å, Jeong 1/r width term
    delta2: ParamSpec = ParamSpec(False, 0.0, 0.0, 5.0)  # Å², Jeong 1/r² width term

    def __post_init__(self) -> None:
        _require(self.engine in ENGINES, "engine", f"must be one of {', '.join(ENGINES)} (got {self.engine!r})")
        _require(self.calculator in CALCULATORS, "calculator",
                 f"must be one of {', '.join(CALCULATORS)} (got {self.calculator!r})")
        _require(self.calculator == "motex" or self.engine == "srfit", "calculator",
                 "the srreal calculator is only available with engine: srfit")
        _require(self.radiation in RADIATIONS, "radiation",
                 f"must be one of {', '.join(RADIATIONS)} (got {self.radiation!r})")
        _require(self.rmin > 0, "rmin", f"must be > 0 Å (got {self.rmin})")
        _require(self.rmin < self.rmax, "rmin", f"must be below rmax (got rmin={self.rmin}, rmax={self.rmax})")
        _require(self.qmin >= 0, "qmin", f"must be >= 0 (got {self.qmin})")
        _require(self.qmin < self.qmax, "qmin", f"must be below qmax (got qmin={self.qmin}, qmax={self.qmax})")
        _require(self.qdamp >= 0, "qdamp", f"must be >= 0 (got {self.qdamp})")
        _require(self.qbroad >= 0, "qbroad", f"must be >= 0 (got {self.qbroad})")
        for name in ("rmin", "rmax", "qmin", "qmax", "qdamp", "qbroad"):
            problem = range_problem(name, getattr(self, name))
            _require(problem is None, name, problem or "")
        uiso = self.uiso if isinstance(self.uiso, dict) else {"": self.uiso}
        for where, spec in (("zoom", self.zoom), *((f"uiso.{e}".rstrip("."), u) for e, u in uiso.items())):
            for key, value in (("min", spec.lo), ("max", spec.hi)):  # the fit stays inside [min, max]
                problem = range_problem(where.split(".")[0], value)
                _require(problem is None, f"{where}.{key}", problem or "")
        if isinstance(self.uiso, dict):
            _require(len(self.uiso) > 0, "uiso", "give one block for every atom or one per element, e.g. "
                     "{W: {start: 0.004}, O: {start: 0.012}}")
            for element, spec in self.uiso.items():
                _require(element in chemical_symbols[1:], f"uiso.{element}",
                         "is not an element symbol (write one block per element, e.g. uiso: {W: {start: 0.004}})")
                _require(spec.lo > 0, f"uiso.{element}.min", f"must be > 0 Å² (got {spec.lo})")
        else:
            _require(self.uiso.lo > 0, "uiso.min", f"must be > 0 Å² (got {self.uiso.lo})")
        for name in ("delta1", "delta2"):
            spec = getattr(self, name)
            _require(all(math.isfinite(v) for v in (spec.start, spec.lo, spec.hi)) or not spec.refine, name,
                     "needs finite start, min and max when refined")
            _require(math.isfinite(spec.start), f"{name}.start", f"must be a finite number (got {spec.start})")


def _check_draw(obj: Any, allowed: tuple[str, ...], fix: str) -> None:
    """Checks shared by the catalogue and each of its parts: strategy, keep_probability, radius, shape."""
    _require(obj.strategy in allowed, "strategy", f"must be one of {', '.join(allowed)} (got {obj.strategy!r}){fix}")
    p = obj.keep_probability
    if p is not None:
        upper = getattr(obj, "blind_strategy", obj.strategy) == "cookie-cutter"  # 1: the whole cut (bernoulli would keep every atom, always)
        _require(0 < p < 1 or (upper and p == 1), "keep_probability",
                 f"must lie in (0, {'1]' if upper else '1)'} (got {p})")
    lo, hi = obj.radius
    _require(0 < lo <= hi, "radius", f"must be [min, max] in Å with 0 < min <= max (got [{lo}, {hi}])")
    _require(obj.shape in SHAPES, "shape", f"must be one of {', '.join(SHAPES)} (got {obj.shape!r})")
    _require(obj.centre in CENTRES, "centre", f"must be one of {', '.join(CENTRES)} (got {obj.centre!r})")


def _effective_keep_probability(obj: Any) -> float:
    if obj.keep_probability is not None:
        return obj.keep_probability
    return DEFAULT_KEEP_PROBABILITY.get(getattr(obj, "blind_strategy", obj.strategy), 1.0)


@dataclass(frozen=True)
class CataloguePart:
    """One strategy of a mixed catalogue and its share of the rows (`catalogue.parts`)."""

    strategy: str
    share: float
    keep_probability: float | None = None
    radius: tuple[float, float] = (3.0, 8.0)
    shape: str = "sphere"
    centre: str = "atoms"

    def __post_init__(self) -> None:
        _check_draw(self, PART_STRATEGIES, "; exhaustive and mixed cannot be a part")
        _require(0 < self.share <= 1, "share", f"must lie in (0, 1] (got {self.share})")

    @property
    def effective_keep_probability(self) -> float:
        """keep_probability, or its strategy's default when it was left out."""
        return _effective_keep_probability(self)


@dataclass(frozen=True)
class AdaptiveSettings:
    """`catalogue.strategy: adaptive`: rounds drawn from the model so far, and when to stop."""

    first: str = "uniform-size"
    round_size: int = 2000
    blind_share: float = 0.2
    mutation_share: float = 0.4
    shape_share: float = 0.0
    mutate: str = "anywhere"
    combine: str = "mean"
    elite: int = 20
    tolerance: float = 0.05
    min_tau: float = 0.8
    patience: int = 2
    max_fits: int = 0
    explain: str = "all"
    boundary: str = "sign"

    def __post_init__(self) -> None:
        _require(self.first in FIRST_STRATEGIES, "adaptive.first",
                 f"must be one of {', '.join(FIRST_STRATEGIES)} (got {self.first!r})")
        _require(self.round_size > 0, "adaptive.round_size", f"must be > 0 (got {self.round_size})")
        _require(0 < self.blind_share <= 1, "adaptive.blind_share",
                 f"must lie in (0, 1]: blind rows keep every atom reachable (got {self.blind_share})")
        _require(0 <= self.mutation_share <= 1 - self.blind_share, "adaptive.mutation_share",
                 f"must lie in [0, 1 - blind_share] = [0, {1 - self.blind_share:g}] (got {self.mutation_share})")
        _require(0 <= self.shape_share <= 1 - self.blind_share - self.mutation_share + 1e-12, "adaptive.shape_share",
                 f"must lie in [0, 1 - blind_share - mutation_share] = "
                 f"[0, {1 - self.blind_share - self.mutation_share:g}] (got {self.shape_share})")
        _require(self.mutate in MUTATE_ATOMS, "adaptive.mutate",
                 f"must be one of {', '.join(MUTATE_ATOMS)} (got {self.mutate!r})")
        _require(self.combine in KEEP_COMBINE, "adaptive.combine",
                 f"must be one of {', '.join(KEEP_COMBINE)} (got {self.combine!r})")
        _require(self.elite >= 1, "adaptive.elite", f"must be >= 1 (got {self.elite})")
        _require(0 < self.tolerance < 1, "adaptive.tolerance", f"must lie in (0, 1) (got {self.tolerance})")
        _require(-1 <= self.min_tau <= 1, "adaptive.min_tau", f"must lie in [-1, 1] (got {self.min_tau})")
        _require(self.patience >= 1, "adaptive.patience", f"must be >= 1 (got {self.patience})")
        _require(self.max_fits >= 0, "adaptive.max_fits", f"must be >= 0, 0 for no limit (got {self.max_fits})")
        _require(self.boundary in BOUNDARIES, "adaptive.boundary",
                 f"must be one of {', '.join(BOUNDARIES)} (got {self.boundary!r})")
        _require(self.explain in EXPLAIN_ROWS, "adaptive.explain",
                 f"must be one of {', '.join(EXPLAIN_ROWS)} (got {self.explain!r})")


@dataclass(frozen=True)
class CatalogueSettings:
    """Which candidate masks are drawn, and how they are split into fit tasks."""

    size: int = 20000
    chunk_size: int = 2000
    seed: int = 0
    strategy: str = "uniform-size"
    keep_probability: float | None = None
    radius: tuple[float, float] = (3.0, 8.0)
    shape: str = "sphere"
    centre: str = "atoms"
    parts: tuple[CataloguePart, ...] = ()
    adaptive: AdaptiveSettings = AdaptiveSettings()

    def __post_init__(self) -> None:
        _require(self.size > 0, "size", f"must be a positive number of candidates (got {self.size})")
        _require(self.chunk_size > 0, "chunk_size", f"must be > 0 (got {self.chunk_size})")
        _require(self.seed >= 0, "seed", f"must be >= 0 (got {self.seed})")
        _check_draw(self, STRATEGIES, "")
        _require(self.strategy != "adaptive" or self.adaptive.round_size % self.chunk_size == 0,
                 "adaptive.round_size", f"must be a multiple of chunk_size {self.chunk_size} (got "
                 f"{self.adaptive.round_size}): every chunk belongs to one round")
        if self.blind_strategy != "mixed":
            _require(not self.parts, "parts", f"only with strategy: mixed (got strategy: {self.strategy}); "
                     "set strategy: mixed (or adaptive.first: mixed) or remove parts")
            return
        _require(len(self.parts) > 0, "parts", "strategy: mixed needs a list of parts such as "
                 "[{strategy: cookie-cutter, share: 0.5}, {strategy: uniform-size, share: 0.5}]")
        total = sum(p.share for p in self.parts)
        _require(abs(total - 1.0) < 1e-9, "parts", f"shares must add up to 1 (got {total:g})")

    @property
    def blind_strategy(self) -> str:
        """The strategy of the blind rows: an adaptive catalogue's first-round strategy, else the strategy."""
        return self.adaptive.first if self.strategy == "adaptive" else self.strategy

    @property
    def effective_keep_probability(self) -> float:
        """keep_probability, or its strategy's default when it was left out."""
        return _effective_keep_probability(self)


@dataclass(frozen=True)
class LearnSettings:
    """Steps 3–4: XGBoost training, hyper-parameter search and SHAP uncertainty."""

    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    seed: int = 0
    tune: bool = True
    n_trials: int = 12
    cv_folds: int = 3
    early_stopping_rounds: int = 20
    max_rounds: int = 2000
    bootstrap: int = 100
    best_candidates: int = 5
    tune_rows: int = 50000
    explain_rows: int = 100000

    def __post_init__(self) -> None:
        _require(0 < self.test_fraction < 0.5, "test_fraction", f"must lie in (0, 0.5) (got {self.test_fraction})")
        _require(0 < self.validation_fraction < 0.5, "validation_fraction",
                 f"must lie in (0, 0.5) (got {self.validation_fraction})")
        _require(self.test_fraction + self.validation_fraction < 0.8, "test_fraction",
                 "test_fraction + validation_fraction must leave at least 20 % for training")
        _require(self.n_trials >= 1, "n_trials", f"must be >= 1 (got {self.n_trials})")
        _require(self.cv_folds >= 2, "cv_folds", f"must be >= 2 (got {self.cv_folds})")
        _require(self.early_stopping_rounds >= 1, "early_stopping_rounds",
                 f"must be >= 1 (got {self.early_stopping_rounds})")
        _require(self.max_rounds >= 1, "max_rounds", f"must be >= 1 (got {self.max_rounds})")
        _require(self.bootstrap >= 0, "bootstrap", f"must be >= 0 (got {self.bootstrap})")
        _require(self.best_candidates >= 0, "best_candidates", f"must be >= 0 (got {self.best_candidates})")
        _require(self.tune_rows >= 100, "tune_rows", f"must be >= 100 (got {self.tune_rows})")
        _require(self.explain_rows >= 0, "explain_rows", f"must be >= 0, 0 for all (got {self.explain_rows})")


@dataclass(frozen=True)
class Campaign:
    """A whole campaign file. Relative paths are resolved against the file's folder."""

    structure: Path
    data: Path
    permute: tuple[str, ...]
    output: Path
    threshold: float = 2.5
    catalogue: CatalogueSettings = CatalogueSettings()
    fit: FitSettings = FitSettings()
    learn: LearnSettings = LearnSettings()
    store: str = ""
    cluster: str = "local"
    frame_order: str = "natural"
    frames_per_task: int = 10
    # a series: every frame's file in order (`data:` a list or a glob; data is then frames[0])
    frames: tuple[Path, ...] = field(default=(), metadata={"internal": True})
    path: Path | None = field(default=None, metadata={"internal": True})

    def __post_init__(self) -> None:
        _require(len(self.permute) > 0, "permute", "name at least one element to permute, e.g. [C] or [W]")
        for element in self.permute:
            _require(element in chemical_symbols[1:], "permute", f"{element!r} is not an element symbol"
                     + (f"; did you mean {element.capitalize()!r}?" if element.capitalize() in chemical_symbols
                        else " (write e.g. [Ga] or [W, Mo])"))
        _require(len(set(self.permute)) == len(self.permute), "permute",
                 f"lists an element twice ({list(self.permute)})")
        _require(self.threshold > 0, "threshold", f"must be a distance > 0 Å (got {self.threshold})")
        _require(self.frame_order in FRAME_ORDERS, "frame_order",
                 f"must be one of {', '.join(FRAME_ORDERS)} (got {self.frame_order!r})")
        _require(self.frames_per_task >= 1, "frames_per_task", f"must be >= 1 (got {self.frames_per_task})")
        _require(not self.frames or self.fit.engine == "batched", "fit.engine",
                 f"{self.fit.engine!r} fits one PDF; fit a series of frames with engine: batched")
        _require(not self.frames or self.catalogue.strategy != "adaptive", "catalogue.strategy",
                 "adaptive rounds follow one PDF's ranking; give a series another strategy (e.g. uniform-size)")

    @property
    def is_series(self) -> bool:
        """True when `data:` names a series of frames (a list or a glob), even of one frame."""
        return bool(self.frames)

    @property
    def store_path(self) -> str:
        """The store URL; defaults to <output>/store.zarr."""
        return self.store or str(self.output / "store.zarr")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings (for store attributes and reports)."""
        out = to_plain(self)
        out.pop("path", None)
        out.pop("frames")
        if self.frames:  # the resolved frames, in order: a stored campaign reads back the same series
            out["data"] = [str(p) for p in self.frames]
        else:  # one PDF: the series keys do not apply (and its settings stay as they were)
            out.pop("frame_order")
            out.pop("frames_per_task")
        out["store"] = self.store_path
        return out

    def result_settings(self) -> dict[str, Any]:
        """The settings that change fit results (the catalogue size may grow: extension)."""
        d = self.to_dict()
        d["catalogue"].pop("size")
        if self.catalogue.strategy == "adaptive":  # when to stop and what to explain: not which rows are drawn
            for key in STOPPING_KEYS:
                d["catalogue"]["adaptive"].pop(key)
        else:  # stores of other strategies keep the fingerprint they had before adaptive existed
            d["catalogue"].pop("adaptive")
        # a series: the frames' order and content are each frame's own fingerprint in the store
        for key in ("structure", "data", "output", "store", "cluster", "learn", "frame_order"):
            d.pop(key, None)
        return d


def to_plain(obj: Any) -> Any:
    """Settings as plain JSON/YAML values (dataclasses → dicts, paths → strings)."""
    if dataclasses.is_dataclass(obj):
        return {field_key(f): to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def field_key(f: dataclasses.Field) -> str:
    """The key a field has in a campaign file (`lo` is written `min`)."""
    return f.metadata.get("key", f.name)
