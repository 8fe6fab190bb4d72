"""Campaign files: YAML → validated, frozen settings.

Every section is a dataclass; `_build` walks the YAML mapping against the dataclass fields, so an
unknown or misspelt key, a wrong type or an out-of-range value becomes one `InputError` that names
the file and the field (``fit.qmin``) and says what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ase.data import chemical_symbols

from .errors import InputError

STRATEGIES = ("uniform-size", "bernoulli", "exhaustive")
ENGINES = ("batched", "srfit")
CALCULATORS = ("motex", "srreal")
RADIATIONS = ("xray", "neutron")
EXHAUSTIVE_MAX_ATOMS = 24


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
    uiso: ParamSpec = ParamSpec(True, 0.005, 0.001, 0.05)

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
        _require(self.zoom.lo > 0, "zoom.min", f"must be > 0 (got {self.zoom.lo})")
        _require(self.uiso.lo > 0, "uiso.min", f"must be > 0 Å² (got {self.uiso.lo})")


@dataclass(frozen=True)
class CatalogueSettings:
    """Which candidate masks are drawn, and how they are split into fit tasks."""

    size: int = 20000
    chunk_size: int = 2000
    seed: int = 0
    strategy: str = "uniform-size"
    keep_probability: float = 0.5

    def __post_init__(self) -> None:
        _require(self.size > 0, "size", f"must be a positive number of candidates (got {self.size})")
        _require(self.chunk_size > 0, "chunk_size", f"must be > 0 (got {self.chunk_size})")
        _require(self.seed >= 0, "seed", f"must be >= 0 (got {self.seed})")
        _require(self.strategy in STRATEGIES, "strategy",
                 f"must be one of {', '.join(STRATEGIES)} (got {self.strategy!r})")
        _require(0 < self.keep_probability < 1, "keep_probability",
                 f"must lie strictly between 0 and 1 (got {self.keep_probability})")


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

    @property
    def store_path(self) -> str:
        """The store URL; defaults to <output>/store.zarr."""
        return self.store or str(self.output / "store.zarr")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings (for store attributes and reports)."""
        out = _to_plain(self)
        out.pop("path", None)
        out["store"] = self.store_path
        return out

    def result_settings(self) -> dict[str, Any]:
        """The settings that change fit results (the catalogue size may grow: extension)."""
        d = self.to_dict()
        d["catalogue"].pop("size")
        for key in ("structure", "data", "output", "store", "cluster", "learn"):
            d.pop(key)
        return d


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {_key(f): _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _yaml_scalar(value: Any) -> str:
    """A value as it is written in a campaign file."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if re.fullmatch(r"[\w./+-]+", text) else json.dumps(text)


def _type_name(tp: Any) -> str:
    return {float: "a number", int: "a whole number", bool: "true or false", str: "a string",
            Path: "a file path"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, where: str, default: Any = None) -> Any:
    """Check/convert one YAML value to the annotated type (`default`: the field's default value)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, args[0], where, default)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            example = ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in _to_plain(default or tp()).items()) \
                if tp is ParamSpec else ""
            raise SettingError(where, f"must be a mapping of keys{f' such as {{{example}}}' if example else ''} "
                                      f"(got {value!r})")
        # Keys left out keep the field's default (zoom: {start: 1.01} keeps min 0.97, max 1.03).
        return _build(tp, value, f"{where}.", base=default if dataclasses.is_dataclass(default) else None)
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise SettingError(where, f"must be a list of element symbols such as [W] (got {value!r})")
        return tuple(items)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        Path: isinstance(value, str) and value != "",
    }[tp]
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)  # size: 2e4
    if not ok:
        raise SettingError(where, f"must be {_type_name(tp)} (got {value!r})")
    if tp is float and math.isnan(value):
        raise SettingError(where, "must be a number, not NaN")
    return Path(value) if tp is Path else (float(value) if tp is float else value)


def _unknown_key_hint(cls: type, key: str, prefix: str) -> str:
    """'; did you mean …?' for a misspelt key, or for a key that belongs in a section."""
    fields = [_key(f) for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    close = difflib.get_close_matches(key, fields, n=1)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            inner = [_key(g) for g in dataclasses.fields(hints[f.name])]
            close = difflib.get_close_matches(key, inner, n=1)
            if close:
                return f"; did you mean '{prefix}{_key(f)}.{close[0]}'? (it belongs in the {_key(f)} section)"
    return f"; known keys: {', '.join(fields)}"


def _build(cls: type, mapping: dict[str, Any], prefix: str = "", base: Any = None) -> Any:
    """Instantiate dataclass `cls` from a YAML mapping (over the values of `base`); unknown keys are errors."""
    fields = {_key(f): f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in mapping.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise SettingError(where, f"unknown key{_unknown_key_hint(cls, str(key), prefix)}")
        f = fields[key]
        default = getattr(base, f.name) if base is not None else f.default
        kwargs[f.name] = _convert(value, hints[f.name], where, default)
    missing = [k for k, f in fields.items() if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SettingError(f"{prefix}{missing[0]}", "is required")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except SettingError as err:
        raise SettingError(f"{prefix}{err.field_name}", err.message) from None


class _Loader(yaml.SafeLoader):
    """YAML as people write it: ``1e-3`` is a number (YAML 1.1 needs ``1.0e-3``), a repeated key is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)


def load_yaml(text: str, path: Path) -> Any:
    """Parse campaign YAML text; a syntax error becomes one InputError naming the file and line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise InputError(f"{path}: not valid YAML{line}: {getattr(err, 'problem', None) or err}") from None


def parse_campaign(mapping: Any, path: Path) -> Campaign:
    """Validate a loaded YAML mapping; `path` names the file in errors and anchors relative paths."""
    if not isinstance(mapping, dict):
        raise InputError(f"{path}: a campaign file must be a YAML mapping of keys (see `motex init`)")
    try:
        campaign = _build(Campaign, mapping)
    except SettingError as err:
        raise InputError(f"{path}: field '{err.field_name}': {err.message}") from None
    base = path.resolve().parent
    store = campaign.store
    if store and "://" not in store:
        store = str((base / store).resolve())
    campaign = dataclasses.replace(
        campaign,
        structure=(base / campaign.structure).resolve(),
        data=(base / campaign.data).resolve(),
        output=(base / campaign.output).resolve(),
        store=store,
        path=path.resolve(),
    )
    for name in ("structure", "data"):
        file = getattr(campaign, name)
        if file.is_dir():
            raise InputError(f"{path}: field '{name}': {file} is a folder; name the file itself")
        if not file.is_file():
            raise InputError(f"{path}: field '{name}': file {file} does not exist")
    if campaign.output.exists() and not campaign.output.is_dir():
        raise InputError(f"{path}: field 'output': {campaign.output} is a file; name a folder for the outputs")
    return campaign


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the campaign file (YAML), e.g. workflows/c60.yaml")
    if not path.is_file():
        raise InputError(f"{path}: campaign file not found (write one with `motex init STRUCTURE DATA`)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file; a campaign file is YAML") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the campaign file ({err.strerror})") from None
    return parse_campaign(load_yaml(text, path), path)


#: One line per campaign key (dotted path): what it means. Used by `motex init` and the README.
FIELD_HELP: dict[str, str] = {
    "structure": "starting model: any structure file ase reads (xyz, cif, pdb, …)",
    "data": "measured PDF: columns r G [dG], after an optional PDFgetX3/xPDFsuite/PDFgui header",
    "permute": "elements whose atoms are switched on/off in the candidate motifs",
    "output": "folder for the outputs (CSV, XYZ, PNG, summary.json)",
    "threshold": "Å: an atom of another element stays while a kept permuted atom is this close",
    "store": "Zarr store of the fit results: a folder or an fsspec URL (default <output>/store.zarr)",
    "cluster": "where the work runs: local, or a cluster profile name/file (see README, Cluster use)",
    "catalogue.size": "number of candidate motifs to fit (duplicates are fitted once); raise it later to extend",
    "catalogue.chunk_size": "candidates per fit task: the unit of progress, resume and parallelism",
    "catalogue.seed": "random seed: the same seed gives the same catalogue everywhere",
    "catalogue.strategy": "uniform-size (ML-MotEx: a size k uniform in 1..N, then k atoms) | bernoulli | "
                          f"exhaustive (every subset; at most {EXHAUSTIVE_MAX_ATOMS} permuted atoms)",
    "catalogue.keep_probability": "bernoulli only: the chance that each permuted atom is kept",
    "fit.engine": "batched (fast, the default) | srfit (diffpy.srfit, for cross-checks)",
    "fit.calculator": "srfit engine only: motex | srreal (needs diffpy.srreal)",
    "fit.rmin": "Å: start of the fit range (points with rmin <= r < rmax are fitted)",
    "fit.rmax": "Å: end of the fit range",
    "fit.qmin": "Å⁻¹: lowest Q used when the data were transformed to G(r)",
    "fit.qmax": "Å⁻¹: highest Q used when the data were transformed to G(r)",
    "fit.qdamp": "Å⁻¹: instrument resolution damping (from a fit to a calibrant such as Ni or CeO2)",
    "fit.qbroad": "Å⁻¹: instrument resolution peak broadening (from a calibrant fit)",
    "fit.radiation": "xray | neutron: selects X-ray form factors or neutron scattering lengths",
    "fit.zoom": "isotropic expansion of the model {refine, start, min, max}: refined in [min, max] or fixed at start",
    "fit.uiso": "Å²: one isotropic displacement parameter for every atom {refine, start, min, max}",
    "learn.test_fraction": "share of the fits held out to test the trained model",
    "learn.validation_fraction": "share of the fits used for early stopping",
    "learn.seed": "random seed of the splits, the search and the bootstrap",
    "learn.tune": "true: search XGBoost hyper-parameters (optuna); false: use fixed, sensible ones",
    "learn.n_trials": "hyper-parameter settings tried by the search",
    "learn.cv_folds": "cross-validation folds per tried setting",
    "learn.early_stopping_rounds": "stop adding trees after this many rounds without improvement",
    "learn.max_rounds": "most boosting rounds (trees); also the search's upper bound",
    "learn.bootstrap": "Bayesian-bootstrap replicates for each atom's uncertainty (below 2: a standard error)",
    "learn.best_candidates": "number of lowest-R_wp candidate motifs listed in the outputs",
    "learn.tune_rows": "training rows (a fixed hash-sample) the hyper-parameter search cross-validates on",
    "learn.explain_rows": "fitted candidates (a fixed hash-sample) explained with SHAP; 0: all of them",
}

#: Permuted atoms up to which `motex init` proposes the exhaustive catalogue (2**14 - 1 fits).
_INIT_EXHAUSTIVE_ATOMS = 14
#: `motex init` suggests threshold = this × the shortest distance from a permuted to another atom.
_INIT_THRESHOLD_FACTOR = 1.2


def _rel(path: Path, base: Path) -> str:
    """`path` relative to `base` when it is close by (a campaign folder moves as a whole), else absolute."""
    try:
        rel = Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()
    return path.resolve().as_posix() if rel.startswith("../..") else rel


def _header_float(header: dict[str, str], key: str) -> float | None:
    try:
        value = float(header[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def write_campaign_template(structure: str | Path, data: str | Path, permute: list[str] | None,
                            output: str | Path) -> Path:
    """Write a commented campaign file for a structure and a data file; refuses to overwrite one."""
    from scipy.spatial import cKDTree

    from .catalogue import check_catalogue
    from .data import read_header, read_pdf
    from .structure import build_model, read_structure

    output = Path(output)
    if output.exists() or output.is_symlink():
        raise InputError(f"{output}: already exists; pick another name with -o, or remove it first")
    structure, data = Path(structure), Path(data)
    atoms = read_structure(structure)
    pdf = read_pdf(data)
    header = read_header(data)
    symbols = atoms.get_chemical_symbols()
    elements = sorted(set(symbols), key=chemical_symbols.index)
    chosen = bool(permute)
    permute = tuple(permute) if permute else (elements[-1],)
    for element in permute:
        if element not in chemical_symbols[1:]:
            hint = f"; did you mean {element.capitalize()!r}?" if element.capitalize() in chemical_symbols else ""
            raise InputError(f"option --permute: {element!r} is not an element symbol{hint}")
    positions = atoms.get_positions()
    is_perm = np.isin(symbols, permute)
    notes = []
    if is_perm.all() or not is_perm.any():  # (no permuted atom at all: build_model says so below)
        threshold = Campaign.threshold
        notes.append("unused here: every atom is permuted")
    else:
        dist, _ = cKDTree(positions[is_perm]).query(positions[~is_perm])
        threshold = round(_INIT_THRESHOLD_FACTOR * float(dist.min()), 2)
        notes.append(f"{_INIT_THRESHOLD_FACTOR} × the shortest {'/'.join(permute)}–other distance "
                     f"({dist.min():.2f} Å)")
    model = build_model(atoms, permute, threshold, source=str(structure))
    if not is_perm.all():
        per_atom = model.ligand_of.sum(axis=0).mean()
        orphans = int((~model.ligand_of.any(axis=1) & ~is_perm).sum())
        notes.append(f"CHECK: each permuted atom keeps {per_atom:.1f} others on average"
                     + (f"; {orphans} atoms are near no permuted atom and never kept" if orphans else ""))

    # Fit range: from just below the shortest bond, inside the data, up to 10 Å.
    all_dist, _ = cKDTree(positions).query(positions, k=2)
    r_lo = math.ceil(pdf.r[0] * 100) / 100
    rmin = max(r_lo, math.floor(0.8 * float(all_dist[:, 1].min()) * 10) / 10)
    rmax = min(FitSettings.rmax, math.floor(pdf.r[-1] * 10) / 10)
    if rmin >= rmax:
        raise InputError(f"{data}: data cover only r = {pdf.r[0]:g}–{pdf.r[-1]:g} Å; "
                         "ML-MotEx needs data up to several Å (e.g. 10 Å)")
    pdf.window(rmin, rmax)

    fit_values: dict[str, Any] = {}
    fit_notes: dict[str, str] = {}
    for key in ("qmin", "qmax", "qdamp", "qbroad"):
        value = _header_float(header, key)
        fit_values[key] = value if value is not None else getattr(FitSettings, key)
        fit_notes[key] = "; from the data file header" if value is not None else \
            "; CHECK: the default, set your measurement's value"
    # PDFgetX3/xPDFsuite "mode = xray", PDFgui "stype=X", `motex pdf` "# radiation: xray"
    mode = (header.get("radiation") or header.get("mode") or header.get("stype") or "").strip().lower()
    fit_values["radiation"] = "neutron" if mode in ("neutron", "n") else "xray"
    fit_notes["radiation"] = "; from the data file header" if mode in ("neutron", "n", "xray", "x") else \
        "; CHECK which"
    n_perm = int(is_perm.sum())
    exhaustive = n_perm <= _INIT_EXHAUSTIVE_ATOMS
    catalogue = {"size": 2**n_perm - 1 if exhaustive else CatalogueSettings.size,
                 "chunk_size": CatalogueSettings.chunk_size, "seed": CatalogueSettings.seed,
                 "strategy": "exhaustive" if exhaustive else CatalogueSettings.strategy,
                 "keep_probability": CatalogueSettings.keep_probability}
    base = output.parent
    top = {"structure": _rel(structure, base), "data": _rel(data, base), "permute": list(permute),
           "threshold": threshold, "output": f"results/{structure.stem}", "cluster": "local"}
    top_notes = {"threshold": "Å; " + "; ".join(notes),
                 "permute": FIELD_HELP["permute"] + ("" if chosen else " (here: the heaviest element)")}

    lines = [
        f"# ML-MotEx campaign written by `motex init` for {structure.name} ({len(atoms)} atoms, "
        f"{atoms.get_chemical_formula()}) and {data.name} (r = {pdf.r[0]:g}–{pdf.r[-1]:g} Å).",
        "# Read the lines marked CHECK, then run:   motex run " + output.name,
        "# Every key is described in the README (Campaign file reference). Relative paths are",
        "# relative to this file's folder.",
        "",
    ]

    def entry(key: str, value: Any, note: str, indent: str = "") -> str:
        if isinstance(value, list):
            text = "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
        elif isinstance(value, ParamSpec):
            text = "{" + ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in _to_plain(value).items()) + "}"
        else:
            text = _yaml_scalar(value)
        return f"{indent}{key}: {text}".ljust(34) + f"  # {note}"

    for key, value in top.items():
        lines.append(entry(key, value, top_notes.get(key, FIELD_HELP[key])))
    lines.append(f"# store: results/{structure.stem}/store.zarr".ljust(34) + f"  # {FIELD_HELP['store']}")
    sections = {"catalogue": catalogue,
                "fit": {"engine": FitSettings.engine, "calculator": FitSettings.calculator, "rmin": rmin,
                        "rmax": rmax, **fit_values, "zoom": FitSettings.zoom, "uiso": FitSettings.uiso},
                "learn": _to_plain(LearnSettings())}
    for section, values in sections.items():
        lines += ["", f"{section}:"]
        for key, value in values.items():
            lines.append(entry(key, value, FIELD_HELP[f"{section}.{key}"] + fit_notes.get(key, ""), indent="  "))
    text = "\n".join(lines) + "\n"

    # The file must load as written: check it before anything is on disk.
    campaign = parse_campaign(load_yaml(text, output), output)
    check_catalogue(campaign.catalogue, model.n_perm, str(output))
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "x", encoding="utf-8") as fh:  # "x": never overwrite, even in a race
        fh.write(text)
    return output
