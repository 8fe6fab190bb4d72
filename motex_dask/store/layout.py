"""The store's layout: array names, dtypes and fill values, the chunk rules, and the fingerprint.

Layout and crash-safety rules are documented in docs/design.md ("Store layout"). In short: each
fit task writes only its own chunk-aligned rows (one Zarr chunk per array, no sharding), data first
and its entry in the ``chunk_done`` ledger last; a missing, torn or unreadable ledger entry means
"not done".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .. import __version__
from ..catalogue.candidates import SHAPE_FILL, SHAPE_NAMES, SHAPE_NONE, Candidates
from ..data import PDFData
from ..fit import Status
from ..fit.recipe import Recipe
from ..settings import Campaign
from ..structure import StartingModel

#: Version of the layout below; a store written with a newer layout is refused.
FORMAT = 1
#: Group attribute that holds everything motex_dask knows about the store.
ATTR = "motex_dask"
#: Store key of the run lock (not a Zarr node: Zarr ignores it).
LOCK_KEY = "motex.lock"

# Per-candidate arrays: name -> (dtype, fill value). All have dims (candidate[, atom]). One more
# float64 array per refined parameter of the campaign's fit recipe sits beside rwp and scale
# (`row_arrays`): zoom and uiso by default, e.g. zoom, uiso_W, uiso_O, delta2 for richer recipes.
ROW_ARRAYS: dict[str, tuple[str, Any]] = {
    "mask": ("bool", False),
    "n_atoms": ("int32", 0),
    "rwp": ("float64", float("nan")),
    "scale": ("float64", float("nan")),
    "zoom": ("float64", float("nan")),
    "uiso": ("float64", float("nan")),
    "status": ("int8", int(Status.PENDING)),
    "duplicate_of": ("int64", -1),
    # The cut of a cookie-cutter candidate (catalogue.candidates): shape_kind SHAPE_NONE (0), sphere (1),
    # ellipsoid (2); centre and semi-axes in Å (a sphere: three times its radius). Rows no shape
    # cut out hold the fill SHAPE_FILL (0.0) there, never NaN: shape_kind is the flag.
    "shape_kind": ("int8", SHAPE_NONE),
    **{name: ("float64", SHAPE_FILL) for name in ("centre_x", "centre_y", "centre_z",
                                                    "semi_axis_a", "semi_axis_b", "semi_axis_c")},
    # The round that drew the row and how (proposal.BLIND/MODEL/MUTATION); 0 and blind outside
    # adaptive catalogues, and in stores written before these arrays existed (made on opening).
    "round": ("int16", 0),
    "origin": ("int8", 0),
}
#: The shape arrays, in Candidates order: centre (x, y, z) then semi-axes (a, b, c).
CENTRE = ("centre_x", "centre_y", "centre_z")
SEMI_AXES = ("semi_axis_a", "semi_axis_b", "semi_axis_c")
#: The fit parameters stored by stores written before recipes had more (no `fit_columns` attribute).
DEFAULT_FIT_COLUMNS = ("zoom", "uiso")
#: A candidate with no atom pair has the model G = 0: R_wp 1 and scale 0 exactly.
EMPTY_VALUES = {"rwp": 1.0, "scale": 0.0}
# Per-chunk ledger arrays (one Zarr chunk per fit task, each with a CRC32C checksum).
CHUNK_ARRAYS: dict[str, tuple[str, Any]] = {
    "chunk_seconds": ("float64", 0.0),
    "chunk_end": ("float64", 0.0),
    "chunk_done": ("int32", 0),
}
#: Completed rows per chunk as the running campaign's client last saw them (it notes a chunk only
#: after its task returned, so this never claims more than `chunk_done`); a few large Zarr chunks,
#: so that resuming a store reads a handful of files, not one per fit task.
SNAPSHOT = "chunk_done_snapshot"
#: Client-side snapshot writes during a run, at most this often (and once at its end).
SNAPSHOT_SECONDS = 30.0
#: Which host fitted each chunk (its SLURM node name, else its host name), UTF-8 padded with zero
#: bytes: dims (chunk, byte), uint8 (string types have no Zarr v3 specification yet), one Zarr
#: chunk per fit task like the ledger; written with it, before the chunk counts as done.
HOST = "chunk_host"
HOST_BYTES = 64
#: Every array a store of the default recipe holds (also: `atom_index`, dims (atom,)).
ARRAY_NAMES = (*ROW_ARRAYS, *CHUNK_ARRAYS, HOST, SNAPSHOT, "atom_index")
#: Arrays that record how a run went (times, hosts), not results: they differ between two runs
#: of the same campaign.
TIMING_ARRAYS = ("chunk_seconds", "chunk_end", HOST)
#: Frames of each (chunk, frame block) done, written last by its task: dims (chunk, frame_block).
FRAME_LEDGER = "frame_done"


def fit_columns(campaign: Campaign, model: StartingModel) -> tuple[str, ...]:
    """The refined parameters the campaign's recipe reports per candidate (one array each)."""
    elements = tuple(dict.fromkeys(str(s) for s in model.symbols))
    return Recipe.from_settings(campaign.fit, elements).columns


def refined_names(columns: tuple[str, ...]) -> tuple[str, ...]:
    """rwp, scale and the fit parameters: finite on OK rows, NaN on every other row except the
    EMPTY_VALUES."""
    return ("rwp", "scale", *columns)


def row_arrays(columns: tuple[str, ...]) -> dict[str, tuple[str, Any]]:
    """Per-candidate arrays of a store whose recipe refines `columns` (in place of zoom, uiso)."""
    out: dict[str, tuple[str, Any]] = {}
    for name, spec in ROW_ARRAYS.items():
        if name == "scale":
            out[name] = spec
            out.update({c: ("float64", float("nan")) for c in columns})
        elif name not in DEFAULT_FIT_COLUMNS:
            out[name] = spec
    return out


def frame_arrays(columns: tuple[str, ...]) -> tuple[str, ...]:
    """A series store (`data:` several frames) holds these per (candidate, frame): dims (candidate,
    frame), one Zarr chunk per fit task's (chunk_size x frames_per_task) block."""
    return (*refined_names(columns), "status")


def is_fit_column(name: str) -> bool:
    """Whether an array name is one a fit recipe can add (a half-created store may hold it)."""
    return name in ("zoom", "uiso", "delta1", "delta2") or name.startswith("uiso_")



# ------------------------------------------------------------------------------------ raw keys

def open_zarr_store(url: str, read_only: bool) -> zarr.abc.store.Store:
    """A local directory (plain path or file path) or any fsspec URL (s3://, gs://, memory://, …)."""
    if "://" in url:
        # fsspec's local file system makes no parent folders unless asked (chunk keys are nested)
        options = {"auto_mkdir": True} if url.startswith(("file://", "local://")) else None
        return zarr.storage.FsspecStore.from_url(url, read_only=read_only, storage_options=options)
    return zarr.storage.LocalStore(Path(url), read_only=read_only)


def get_bytes(store: zarr.abc.store.Store, key: str) -> bytes | None:
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def put_bytes(store: zarr.abc.store.Store, key: str, value: bytes, exclusive: bool = False) -> None:
    buf = default_buffer_prototype().buffer.from_bytes(value)
    sync(store.set_if_not_exists(key, buf) if exclusive else store.set(key, buf))


def sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))  # length prefix: no ambiguity between parts
        h.update(part)
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def frame_fingerprint(data: PDFData) -> str:
    """Hash of one PDF's r, G and dG on the fit range."""
    arrays = [np.ascontiguousarray(a, dtype="<f8") for a in (data.r, data.g)]
    dg = b"" if data.dg is None else np.ascontiguousarray(data.dg, dtype="<f8").tobytes()
    return sha256(*(a.tobytes() for a in arrays), dg)


def fingerprint_parts(campaign: Campaign, model: StartingModel, data: PDFData) -> dict[str, str]:
    """Hashes of everything that changes fit results: starting model, data, settings, version.

    A series hashes only its r grid here: each frame has its own fingerprint (attrs "frames"),
    so frames can be added to a store without changing the store's fingerprint.
    """
    positions = np.ascontiguousarray(model.positions, dtype="<f8")
    grid = np.ascontiguousarray(data.r, dtype="<f8").tobytes()
    return {
        "model": sha256(canonical_json([str(s) for s in model.symbols]), positions.tobytes()),
        "data": sha256(b"series r grid", grid) if campaign.is_series else frame_fingerprint(data),
        "settings": sha256(canonical_json(campaign.result_settings())),
        "version": sha256(__version__.encode()),
    }


def combine(parts: dict[str, str]) -> str:
    return sha256(canonical_json(parts))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def describe_changes(attrs: dict[str, Any], campaign: Campaign, parts: dict[str, str]) -> list[str]:
    """Human-readable list of what differs between a store and the campaign about to run."""
    old = attrs["fingerprint_parts"]
    changes = []
    if old.get("model") != parts["model"]:
        changes.append("the starting model (structure file atoms or positions)")
    if old.get("data") != parts["data"]:
        changes.append("the data (r or G values)")
    if old.get("settings") != parts["settings"]:
        before, after = _flatten(attrs.get("result_settings", {})), _flatten(campaign.result_settings())
        diff = [f"{k} ({before.get(k, 'unset')!r} in the store, {after.get(k, 'unset')!r} now)"
                for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
        changes.append("setting " + ", ".join(diff) if diff else "the result settings")
    if old.get("version") != parts["version"]:
        changes.append(f"the motex_dask version ({attrs.get('version')} wrote the store, this is {__version__})")
    return changes


def shape_columns(drawn: Candidates) -> dict[str, np.ndarray]:
    """The store's shape arrays of a chunk's candidates (shape_kind, centre_*, semi_axis_*)."""
    return {"shape_kind": np.asarray(drawn.shape, dtype=np.int8),
            **{name: drawn.centre[:, k] for k, name in enumerate(CENTRE)},
            **{name: drawn.axes[:, k] for k, name in enumerate(SEMI_AXES)}}


def check_chunk(c: int, arrays: dict[str, np.ndarray], n: int, n_perm: int,
                columns: tuple[str, ...] = DEFAULT_FIT_COLUMNS, n_frames: int | None = None,
                names=None) -> None:
    """Refuse a chunk that breaks the layout's rules (a programming error, not user input).

    A series task's block: `n_frames` frames (its frame arrays are (n, n_frames)), and `names` the
    arrays it writes (default: every per-candidate array).
    """
    missing = set(row_arrays(columns) if names is None else names) - set(arrays)
    if missing:
        raise ValueError(f"chunk {c}: missing arrays {sorted(missing)}")
    per_frame = frame_arrays(columns) if n_frames else ()
    for name, arr in arrays.items():
        want = (n, n_perm) if name == "mask" else (n, n_frames) if name in per_frame else (n,)
        if np.shape(arr) != want:
            raise ValueError(f"chunk {c}: {name} has shape {np.shape(arr)}, expected {want}")
    status = np.asarray(arrays["status"])
    if np.any(status == Status.PENDING):
        raise ValueError(f"chunk {c}: {int(np.sum(status == Status.PENDING))} rows still PENDING")
    ok = status == Status.OK
    empty = status == Status.EMPTY
    for name in refined_names(columns):
        values = np.asarray(arrays[name], dtype=np.float64)
        expected_nan = ~ok & ~empty if name in EMPTY_VALUES else ~ok
        if not np.all(np.isfinite(values[ok])) or not np.all(np.isnan(values[expected_nan])):
            raise ValueError(f"chunk {c}: {name} must be finite on OK rows and NaN on failed rows")
    for name, value in EMPTY_VALUES.items():
        if not np.all(np.asarray(arrays[name])[empty] == value):
            raise ValueError(f"chunk {c}: EMPTY rows must have {name} = {value}")
    if "shape_kind" not in arrays:  # a series task's later frames: no per-candidate arrays
        return
    kind = np.asarray(arrays["shape_kind"])
    if not np.all(np.isin(kind, list(SHAPE_NAMES))):
        raise ValueError(f"chunk {c}: shape_kind must be one of {sorted(SHAPE_NAMES)}")
    for name in (*CENTRE, *SEMI_AXES):
        values = np.asarray(arrays[name], dtype=np.float64)
        if not np.all(np.isfinite(values)) or not np.all(values[kind == SHAPE_NONE] == SHAPE_FILL):
            raise ValueError(f"chunk {c}: {name} must be finite, and {SHAPE_FILL} on rows without a shape")
