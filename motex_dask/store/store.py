"""CampaignStore: open once per command; create, verify and extend a store; read and write chunks.

A lock object in the store keeps a second run out; a lock left by a killed run is detected and
taken over (`lock.RunLock`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.sync import sync

from .. import __version__
from ..catalogue import catalogue_size, chunk_bounds, n_chunks
from ..data import PDFData
from ..errors import InputError
from ..fit import Status
from ..settings import Campaign
from ..structure import StartingModel
from .layout import (
    ARRAY_NAMES,
    HOST,
    HOST_BYTES,
    ATTR,
    CHUNK_ARRAYS,
    FORMAT,
    FRAME_LEDGER,
    LOCK_KEY,
    DEFAULT_FIT_COLUMNS,
    SNAPSHOT,
    check_chunk,
    combine,
    describe_changes,
    fingerprint_parts,
    fit_columns,
    frame_arrays,
    frame_fingerprint,
    is_fit_column,
    open_zarr_store,
    refined_names,
    row_arrays,
)
from .lock import RunLock

log = logging.getLogger("motex_dask")

@dataclasses.dataclass
class _Meta:
    """What a store's attributes say; shipped with the store to workers."""

    url: str
    attrs: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.attrs["size"])

    @property
    def chunk_size(self) -> int:
        return int(self.attrs["chunk_size"])

    @property
    def n_perm(self) -> int:
        return int(self.attrs["n_perm"])

    @property
    def n_frames(self) -> int | None:
        return len(self.attrs["frames"]) if "frames" in self.attrs else None


class CampaignStore:
    """A campaign's Zarr store: created/verified/extended by `open_for_run`, read by `open_readonly`.

    Picklable: a copy sent to a Dask worker writes chunks but never holds the lock.
    """

    def __init__(self, meta: _Meta, store: zarr.abc.store.Store, lock: RunLock | None = None):
        self._meta = meta
        self._store = store
        self._lock = lock
        self._group = zarr.open_group(store=store, mode="r" if store.read_only else "r+")
        self._arrays: dict[str, zarr.Array] = {}
        self._done: np.ndarray | None = None   # completed rows per chunk, as this process knows them
        self._saved: np.ndarray | None = None  # ... and as the snapshot holds them

    # -- public attributes ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._meta.url

    @property
    def size(self) -> int:
        return self._meta.size

    @property
    def chunk_size(self) -> int:
        return self._meta.chunk_size

    @property
    def n_perm(self) -> int:
        return self._meta.n_perm

    @property
    def n_chunks(self) -> int:
        return n_chunks(self.size, self.chunk_size)

    @property
    def settings(self) -> dict[str, Any]:
        """The full campaign settings (`Campaign.to_dict()` plus `campaign_file`) of the last run."""
        return self._meta.attrs["settings"]

    @property
    def fingerprint(self) -> str:
        return self._meta.attrs["fingerprint"]

    @property
    def fit_columns(self) -> tuple[str, ...]:
        """The refined parameters stored per candidate (zoom, uiso or uiso_<El>, refined deltas)."""
        return tuple(self._meta.attrs.get("fit_columns", DEFAULT_FIT_COLUMNS))

    @property
    def refined(self) -> tuple[str, ...]:
        """rwp, scale and the fit columns."""
        return refined_names(self.fit_columns)

    @property
    def row_arrays(self) -> dict[str, tuple[str, Any]]:
        """Per-candidate arrays: name -> (dtype, fill value)."""
        return row_arrays(self.fit_columns)

    @property
    def attrs(self) -> dict[str, Any]:
        return self._meta.attrs

    # -- a series of frames (attrs "frames"; a one-PDF store has none) ------------------------------
    @property
    def n_frames(self) -> int | None:
        """Frames of a series store; None for a one-PDF store."""
        return self._meta.n_frames

    @property
    def frame_names(self) -> list[str]:
        """The frames' file names, in order (empty for a one-PDF store)."""
        return [f["name"] for f in self.attrs.get("frames", [])]

    @property
    def frame_arrays(self) -> tuple[str, ...]:
        """The arrays a series store holds per (candidate, frame)."""
        return frame_arrays(self.fit_columns)

    @property
    def frames_per_task(self) -> int:
        return int(self.attrs.get("frames_per_task", 1))

    @property
    def n_blocks(self) -> int:
        """Frame blocks: each fit task owns one (chunk, block) of the (candidate, frame) arrays."""
        return -(-(self.n_frames or 1) // self.frames_per_task)

    def block_frames(self, b: int) -> tuple[int, int]:
        """Frames [lo, hi) of frame block b."""
        lo = b * self.frames_per_task
        return lo, min(lo + self.frames_per_task, self.n_frames or 1)

    def frame_done(self) -> np.ndarray:
        """(n_chunks, n_blocks): frames of each block done (from its start) per chunk; a missing,
        torn or impossible ledger entry counts as 0."""
        arr = self.array(FRAME_LEDGER)
        shape = (self.n_chunks, self.n_blocks)
        try:
            done = np.asarray(arr[: shape[0], : shape[1]], dtype=np.int64)
        except Exception:  # a torn entry (a non-atomic store killed mid-write): entry by entry
            done = np.zeros(shape, dtype=np.int64)
            for c, b in np.ndindex(*shape):
                try:
                    done[c, b] = arr[c, b]
                except Exception:
                    log.warning("%s: frame ledger entry (%d, %d) is unreadable; it counts as not done",
                                self.url, c, b)
        done = np.pad(done, ((0, shape[0] - done.shape[0]), (0, shape[1] - done.shape[1])))
        width = np.array([hi - lo for lo, hi in map(self.block_frames, range(shape[1]))])
        return np.where((done >= 0) & (done <= width[None, :]), done, 0)

    def incomplete_blocks(self) -> list[tuple[int, int, int]]:
        """(chunk, block, first frame to fit) of every task of a series with frames left to fit."""
        done = self.frame_done()
        return [(c, b, self.block_frames(b)[0] + int(done[c, b])) for c, b in np.ndindex(*done.shape)
                if self.block_frames(b)[0] + done[c, b] < self.block_frames(b)[1]]

    def frames_fitted(self) -> np.ndarray:
        """(n_chunks, n_frames) bool: which frames each chunk has fitted."""
        done = self.frame_done()
        frame = np.arange(self.n_frames or 0)
        return done[:, frame // self.frames_per_task] > (frame % self.frames_per_task)[None, :]

    def lock_holder(self) -> dict[str, Any] | None:
        """The run holding the store's lock now ({} for a torn lock, None when unlocked)."""
        return RunLock.read(self._store)

    @property
    def lock_lost(self) -> bool:
        """True when another run took this run's lock over (this run must stop writing)."""
        return self._lock is not None and self._lock.lost

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open_for_run(cls, url: str, campaign: Campaign, model: StartingModel, data: PDFData,
                     frames: tuple[PDFData, ...] = ()) -> "CampaignStore":
        """Create the store, or open it, check its fingerprint and extend it; holds the lock.

        `frames`: every frame of a series (data is the first). Refusals (foreign store, other
        campaign, smaller catalogue, a changed or removed frame, store busy) raise InputError and
        leave the store untouched.
        """
        url = str(url)
        store = open_zarr_store(url, read_only=False)
        _inspect(store, url)  # refuse a foreign path before writing anything (the lock)
        lock = RunLock(store, url)
        lock.acquire()
        try:
            attrs = _inspect(store, url)  # again, now that no other run can change it
            meta = (_create(store, url, campaign, model, data, frames) if attrs is None
                    else _update(store, url, attrs, campaign, model, data, frames))
            if lock.took_over:
                _remove_partial_files(url)
        except BaseException:
            lock.release()
            raise
        return cls(meta, store, lock)

    @classmethod
    def open_readonly(cls, url: str) -> "CampaignStore":
        """Open an existing store for reading (status, learning, reports)."""
        url = str(url)
        store = open_zarr_store(url, read_only=True)
        try:
            attrs = _inspect(store, url)
        except InputError:
            attrs = None
        if attrs is None:
            raise InputError(f"{url}: not a motex_dask campaign store; give the store of a campaign "
                             "(by default <output>/store.zarr)")
        return cls(_Meta(url, attrs), store)

    @property
    def moved(self) -> bool:
        """Whether the store is opened elsewhere than where its campaign wrote it (moved, copied)."""
        recorded = str(self.settings.get("store", ""))
        if "://" in self.url or "://" in recorded:
            return self.url != recorded
        return Path(self.url).resolve() != Path(recorded).resolve()

    @property
    def default_output(self) -> Path:
        """Where `motex explain`/`motex report` put outputs without -o: the campaign's output folder
        while the store is where its campaign wrote it, else beside the store (a moved or copied
        store never writes into the campaign folder it came from)."""
        if not self.moved:
            return Path(self.settings["output"])
        return Path.cwd() if "://" in self.url else Path(self.url).resolve().parent

    @classmethod
    def readonly(cls, store: "CampaignStore | str") -> "CampaignStore":
        """`store` itself when it is already open (a command opens its store once), else opened."""
        return store if isinstance(store, cls) else cls.open_readonly(store)

    def __reduce__(self):
        return (_attach, (self._meta,))

    def __enter__(self) -> "CampaignStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Drop the lock (idempotent); a worker-side copy holds none."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- reading -----------------------------------------------------------------------------
    def array(self, name: str) -> zarr.Array:
        """One of the store's arrays (writes keep chunks that equal the fill value)."""
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._group[name]
            if not self._store.read_only:
                arr = arr.with_config({"write_empty_chunks": True})
            self._arrays[name] = arr
        return arr

    def chunk_rows(self) -> np.ndarray:
        """Rows in each chunk: chunk_size, except the last."""
        rows = np.full(self.n_chunks, self.chunk_size, dtype=np.int64)
        rows[-1] = self.size - (self.n_chunks - 1) * self.chunk_size
        return rows

    def ledger(self, name: str = "chunk_done", chunks: np.ndarray | None = None) -> np.ndarray:
        """A per-chunk array (at `chunks`, default all); an entry that is missing, torn or
        unreadable reads as its fill value."""
        arr = self.array(name)
        idx = np.arange(arr.shape[0]) if chunks is None else np.asarray(chunks, dtype=np.int64)
        try:
            return arr[:] if chunks is None else arr.get_coordinate_selection(idx)
        except Exception:  # a torn chunk (a non-atomic store killed mid-write): entry by entry
            values = np.full(idx.size, CHUNK_ARRAYS[name][1], dtype=arr.dtype)
            for i, c in enumerate(idx):
                try:
                    values[i] = arr[c]
                except Exception:
                    log.warning("%s: %s entry of chunk %d is unreadable; the chunk counts as not done",
                                self.url, name, c)
            return values

    def chunk_hosts(self) -> list[str]:
        """The host that fitted each chunk ('' where none is recorded: not done, or a store
        written before hosts were)."""
        try:
            raw = self.array(HOST)[: self.n_chunks]
        except KeyError:
            return [""] * self.n_chunks
        return [bytes(row).rstrip(b"\0").decode(errors="replace") for row in raw]

    def _valid(self, done: np.ndarray) -> np.ndarray:
        """Per-chunk row counts padded/cut to n_chunks; a value that cannot be right counts as 0."""
        done = np.asarray(done, dtype=np.int64)[: self.n_chunks]
        done = np.pad(done, (0, self.n_chunks - len(done)))
        return np.where((done >= 0) & (done <= self.chunk_rows()), done, 0)

    def done_rows(self) -> np.ndarray:
        """Completed rows per chunk: the snapshot, and the ledger for every chunk it lacks."""
        rows = self.chunk_rows()
        try:
            snapshot = self._valid(self.array(SNAPSHOT)[:])
        except Exception:  # torn by a kill on a non-atomic store: the ledger alone decides
            log.warning("%s: %s is unreadable; reading every chunk's ledger entry", self.url, SNAPSHOT)
            snapshot = np.zeros(self.n_chunks, dtype=np.int64)
        done = snapshot.copy()
        need = np.flatnonzero(snapshot < rows)
        need = need[need < self.array("chunk_done").shape[0]]  # shorter while an extension is half done
        if need.size:
            ledger = self.ledger("chunk_done", need).astype(np.int64)
            ledger = np.where((ledger >= 0) & (ledger <= rows[need]), ledger, 0)
            done[need] = np.maximum(snapshot[need], ledger)
        self._done, self._saved = done.copy(), snapshot
        return done

    def incomplete_chunks(self) -> list[int]:
        """Chunks whose ledger entry is short of their row count (in order)."""
        return np.flatnonzero(self.done_rows() < self.chunk_rows()).tolist()

    def bounds(self, c: int) -> tuple[int, int]:
        return chunk_bounds(c, self.size, self.chunk_size)

    @property
    def rounds(self) -> list[dict[str, Any]]:
        """The round ledger of an adaptive campaign: per round its plan, then its ranking."""
        return list(self._meta.attrs.get("rounds", []))

    # -- writing -----------------------------------------------------------------------------
    def record_rounds(self, rounds: list[dict[str, Any]], stopped: str | None = None) -> None:
        """Client side, under the lock: save the round ledger (and why the campaign stopped)."""
        self._write_attrs({**self._meta.attrs, "rounds": rounds, "stopped": stopped})

    def extend(self, size: int) -> None:
        """Client side, under the lock: grow the store to `size` rows (an adaptive campaign's next round)."""
        if size != self.size:
            self._require_lock()
            self._meta = _grow(self._store, self.url, self._meta.attrs, size)
            self._group = zarr.open_group(store=self._store, mode="r+")
            self._arrays.clear()  # their shapes changed
            self._done = self._saved = None

    def _write_attrs(self, attrs: dict[str, Any]) -> None:
        self._require_lock()
        self._group.attrs[ATTR] = attrs
        self._meta = _Meta(self.url, attrs)

    def _require_lock(self) -> None:
        if self._lock is None or self.lock_lost:
            raise InputError(f"{self.url}: this run does not hold the store's lock; stopping")

    def note_done(self, c: int) -> None:
        """Client side: chunk c's task returned, so the chunk is complete (saved by `checkpoint`)."""
        if self._done is None:
            self.done_rows()
        self._done[c] = self.chunk_rows()[c]

    def checkpoint(self) -> None:
        """Client side: save the completed chunks this run knows of into the snapshot."""
        if self._lock is None or self.lock_lost or self._done is None or np.array_equal(self._done, self._saved):
            return
        self.array(SNAPSHOT)[:] = self._done.astype(np.int32)
        self._saved = self._done.copy()

    def write_chunk(self, c: int, arrays: dict[str, np.ndarray], seconds: float) -> None:
        """Write chunk c's rows of every per-candidate array, then its ledger entries (last).

        Each array's region is exactly one Zarr chunk, so no other task touches these files.
        """
        start, stop = self.bounds(c)
        n = stop - start
        check_chunk(c, arrays, n, self.n_perm, self.fit_columns)
        rows = self.row_arrays
        target = {name: self.array(name).async_array for name in (*rows, *CHUNK_ARRAYS, HOST)}

        async def write() -> None:  # concurrent writes within each step, the steps in order
            await asyncio.gather(*(target[name].setitem(slice(start, stop), arrays[name]) for name in rows))
            await asyncio.gather(target["chunk_seconds"].setitem(c, seconds),
                                 target["chunk_end"].setitem(c, time.time()),
                                 target[HOST].setitem((c, slice(None)), _host_bytes()))
            await target["chunk_done"].setitem(c, n)  # the commit point: now the chunk counts as done

        sync(write())

    def write_block(self, c: int, b: int, lo: int, arrays: dict[str, np.ndarray], seconds: float) -> None:
        """A series task's writes: frames [lo, lo + k) of chunk c (the frame arrays, each (n, k)),
        plus the per-candidate arrays when it fits the chunk's first frames; its ledger entries last.

        Its region of each frame array lies in one Zarr chunk (block b) that no other task writes;
        frames before lo in that chunk (fitted by an earlier run) are read and written back unchanged.
        """
        start, stop = self.bounds(c)
        n = stop - start
        k = np.shape(arrays["rwp"])[1]
        per_frame = self.frame_arrays
        rows = tuple(self.row_arrays) if lo == 0 else per_frame
        check_chunk(c, arrays, n, self.n_perm, self.fit_columns, n_frames=k, names=rows)
        target = {name: self.array(name).async_array for name in (*rows, *CHUNK_ARRAYS, FRAME_LEDGER)}
        region = {name: (slice(start, stop), slice(lo, lo + k)) if name in per_frame else slice(start, stop)
                  for name in rows}

        async def write() -> None:  # concurrent writes within each step, the steps in order
            await asyncio.gather(*(target[name].setitem(region[name], arrays[name]) for name in rows))
            if lo == 0:  # the chunk's candidates are written: what `done_rows` counts
                await asyncio.gather(target["chunk_seconds"].setitem(c, seconds),
                                     target["chunk_end"].setitem(c, time.time()))
                await target["chunk_done"].setitem(c, n)
            # the commit point: now these frames count as done
            await target[FRAME_LEDGER].setitem((c, b), lo + k - self.block_frames(b)[0])

        sync(write())


_attached: dict[tuple[str, str, int, int | None], CampaignStore] = {}


def _host_bytes() -> np.ndarray:
    """This process's host for the HOST array: the SLURM node name where there is one (several
    nodes may share a host name, e.g. scripts/slurm_local.sh --nodes), else the host name."""
    name = (os.environ.get("SLURMD_NODENAME") or socket.gethostname()).encode()[:HOST_BYTES]
    return np.frombuffer(name.ljust(HOST_BYTES, b"\0"), dtype=np.uint8)


def _attach(meta: _Meta) -> CampaignStore:
    """A worker-side copy of a store: writes chunks, holds no lock (cached per process)."""
    key = (meta.url, meta.attrs["fingerprint"], meta.size, meta.n_frames)
    store = _attached.get(key)
    if store is None:
        store = _attached[key] = CampaignStore(meta, open_zarr_store(meta.url, read_only=False))
    return store



async def _root_names(store: zarr.abc.store.Store) -> set[str]:
    return {name.rstrip("/") async for name in store.list_dir("")}


def _inspect(store: zarr.abc.store.Store, url: str) -> dict[str, Any] | None:
    """The store's motex_dask attributes; None when there is no store yet (or our creation was
    killed before it finished); InputError when the path holds anything else."""
    if "://" not in url:
        path = Path(url)
        if path.exists() and not path.is_dir():
            raise InputError(f"{url}: the store path is a file; give a directory path (e.g. results/store.zarr)")
        if not path.exists():
            return None
    try:
        names = sync(_root_names(store))
    except FileNotFoundError:
        return None
    # A run killed right after taking the lock of a new store, or in the middle of a file write.
    names = {n for n in names if n != LOCK_KEY and not n.endswith(".partial")}
    if not names:
        return None
    if "zarr.json" not in names:
        raise InputError(f"{url}: the folder exists and is not a Zarr store; give a new or empty folder "
                         "as the store path")
    foreign = InputError(f"{url}: this Zarr store was not written by motex_dask; give a new store path")
    try:
        group = zarr.open_group(store=store, mode="r")
    except zarr.errors.BaseZarrError:
        raise foreign from None
    attrs = group.attrs.get(ATTR)
    if isinstance(attrs, dict) and "fingerprint" in attrs:
        return attrs
    if len(group.attrs) or {n for n in names if not is_fit_column(n)} - {"zarr.json", *ARRAY_NAMES, FRAME_LEDGER}:
        raise foreign
    return None


def _frame_entries(frames: tuple[PDFData, ...]) -> list[dict[str, str]]:
    """How the store records its frames (name and content hash), and how a later run is compared."""
    return [{"name": Path(f.path).name, "sha256": frame_fingerprint(f)} for f in frames]


def _grown_frames(url: str, stored: list[dict[str, str]], frames: tuple[PDFData, ...]) -> list[dict[str, str]]:
    """The store's frame list after this run: the stored frames unchanged, new ones after them."""
    now = _frame_entries(frames)
    for i, old in enumerate(stored):
        if i >= len(now):
            raise InputError(f"{url}: frame {old['name']} is in the store but no longer in the campaign's data; "
                             "a series may only grow: restore that file, or give a new store path")
        if now[i]["name"] != old["name"]:
            raise InputError(f"{url}: frame {i + 1} of the store is {old['name']} but the campaign now has "
                             f"{now[i]['name']} there (renamed, removed, or a new frame sorted before it); "
                             "new frames must come after the fitted ones: rename them, or give a new store path")
        if now[i]["sha256"] != old["sha256"]:
            raise InputError(f"{url}: frame {old['name']} changed since it was fitted (its r or G values "
                             "differ); restore it, or give a new store path")
    return now


def _update(store: zarr.abc.store.Store, url: str, attrs: dict[str, Any], campaign: Campaign,
            model: StartingModel, data: PDFData, frames: tuple[PDFData, ...] = ()) -> _Meta:
    """Under the lock: check an existing store against the campaign and extend it, or refuse
    without changing anything."""
    if int(attrs.get("format", 0)) > FORMAT:
        raise InputError(f"{url}: the store was written by a newer motex_dask ({attrs.get('version')}); "
                         "upgrade motex_dask to resume it")
    parts = fingerprint_parts(campaign, model, data)
    if attrs["fingerprint"] != combine(parts):
        changes = describe_changes(attrs, campaign, parts)
        raise InputError(f"{url}: the store holds another campaign: changed since it was written: "
                         f"{'; '.join(changes)}. Restore the original inputs to resume it, or give a new "
                         "store path (store: in the campaign file)")
    grown = {}
    if campaign.is_series:
        grown["frames"] = _grown_frames(url, attrs["frames"], frames)
        if len(grown["frames"]) > len(attrs["frames"]):
            log.info("%s: %d new frames after the %d fitted ones", url,
                     len(grown["frames"]) - len(attrs["frames"]), len(attrs["frames"]))
    size = catalogue_size(campaign.catalogue, model.n_perm)
    old_size = int(attrs["size"])
    if campaign.catalogue.strategy == "adaptive":  # grown round by round (`extend`), never shrunk
        size = max(size, old_size)
    if size < old_size:
        raise InputError(f"{url}: catalogue.size gives {size} candidates but the store already holds "
                         f"{old_size}; set catalogue.size to at least {old_size} or give a new store path")
    if size > old_size:
        log.info("%s: extending the catalogue from %d to %d candidates", url, old_size, size)
    return _grow(store, url, {**attrs, "settings": _settings(campaign), **grown}, size)


def _grow(store: zarr.abc.store.Store, url: str, attrs: dict[str, Any], size: int) -> _Meta:
    """Set the store's size: the attributes (with the target size) first, then the arrays; both
    steps are idempotent, so a run killed in between is finished by the next run."""
    attrs = {**attrs, "size": size, "n_chunks": n_chunks(size, int(attrs["chunk_size"]))}
    group = zarr.open_group(store=store, mode="r+")
    group.attrs[ATTR] = attrs
    _resize_arrays(group, size, int(attrs["chunk_size"]), attrs.get("fit_columns", DEFAULT_FIT_COLUMNS),
                   int(attrs["n_perm"]), len(attrs.get("frames", ())), int(attrs.get("frames_per_task", 1)))
    return _Meta(url, attrs)


def _settings(campaign: Campaign) -> dict[str, Any]:
    return {**campaign.to_dict(), "campaign_file": str(campaign.path) if campaign.path else None}


def _create(store: zarr.abc.store.Store, url: str, campaign: Campaign, model: StartingModel,
            data: PDFData, frames: tuple[PDFData, ...] = ()) -> _Meta:
    """A new store: arrays first, the motex_dask attributes (what makes it a store) last."""
    parts = fingerprint_parts(campaign, model, data)
    size = catalogue_size(campaign.catalogue, model.n_perm)
    cs = campaign.catalogue.chunk_size
    nc = n_chunks(size, cs)
    group = zarr.open_group(store=store, mode="a")
    columns = fit_columns(campaign, model)
    nf, fb = len(frames), campaign.frames_per_task
    per_frame = frame_arrays(columns) if campaign.is_series else ()
    for name, spec in row_arrays(columns).items():
        _create_row_array(group, name, spec, size, cs, model.n_perm, (nf, fb) if name in per_frame else None)
    series: dict[str, Any] = {}
    if campaign.is_series:
        group.create_array(FRAME_LEDGER, shape=(nc, -(-nf // fb)), chunks=(1, 1), dtype="int32", fill_value=0,
                           compressors=[Crc32cCodec()], dimension_names=("chunk", "frame_block"), overwrite=True)
        series = {"frames": _frame_entries(frames),
                  "frames_per_task": fb}
    for name, (dtype, fill) in CHUNK_ARRAYS.items():
        group.create_array(name, shape=(nc,), chunks=(1,), dtype=dtype, fill_value=fill,
                           compressors=[Crc32cCodec()], dimension_names=("chunk",), overwrite=True)
    group.create_array(HOST, shape=(nc, HOST_BYTES), chunks=(1, HOST_BYTES), dtype="uint8", fill_value=0,
                       compressors=[Crc32cCodec()], dimension_names=("chunk", "byte"), overwrite=True)
    group.create_array(SNAPSHOT, shape=(nc,), chunks=(nc,), dtype="int32", fill_value=0,
                       compressors=[ZstdCodec(), Crc32cCodec()], dimension_names=("chunk",), overwrite=True)
    atom_index = group.create_array("atom_index", shape=(model.n_perm,), chunks=(model.n_perm,),
                                    dtype="int64", fill_value=-1, dimension_names=("atom",), overwrite=True)
    atom_index[:] = model.permuted
    attrs = {
        "format": FORMAT,
        "version": __version__,
        "fingerprint": combine(parts),
        "fingerprint_parts": parts,
        "result_settings": campaign.result_settings(),
        "settings": _settings(campaign),
        "size": size,
        "chunk_size": cs,
        "n_chunks": nc,
        "n_perm": model.n_perm,
        "permuted_symbols": [str(model.symbols[i]) for i in model.permuted],
        "status_codes": {s.name: int(s) for s in Status},
        "fit_columns": list(columns),
        "created": time.time(),
        **series,
    }
    group.attrs[ATTR] = attrs
    log.info("%s: new store, %d candidates in %d chunks of %d", url, size, nc, cs)
    return _Meta(url, attrs)


def _create_row_array(group: zarr.Group, name: str, spec: tuple[str, Any], size: int, chunk_size: int,
                      n_perm: int, frames: tuple[int, int] | None = None) -> None:
    """One per-candidate array; `frames` (n_frames, frames_per_task): a series' (candidate, frame) array."""
    dtype, fill = spec
    if frames is not None:
        shape, chunks, dims = (size, frames[0]), (chunk_size, frames[1]), ("candidate", "frame")
    elif name == "mask":
        shape, chunks, dims = (size, n_perm), (chunk_size, n_perm), ("candidate", "atom")
    else:
        shape, chunks, dims = (size,), (chunk_size,), ("candidate",)
    group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill, dimension_names=dims,
                       overwrite=True)


def _resize_arrays(group: zarr.Group, size: int, chunk_size: int, columns, n_perm: int, n_frames: int = 0,
                   frames_per_task: int = 1) -> None:
    """Grow every array to `size` candidates (and a series' frame arrays to `n_frames` frames)."""
    nc = n_chunks(size, chunk_size)
    per_frame = frame_arrays(tuple(columns)) if n_frames else ()
    for name, spec in row_arrays(tuple(columns)).items():
        if name not in group:  # a store from before this array existed: its fill value is right for it
            _create_row_array(group, name, spec, size, chunk_size, n_perm)
        arr = group[name]
        shape = (size, n_frames) if name in per_frame else (size, *arr.shape[1:])
        if arr.shape != shape:
            arr.resize(shape)
    for name in (*CHUNK_ARRAYS, SNAPSHOT, HOST):
        arr = group[name]
        if arr.shape[0] != nc:
            arr.resize((nc, *arr.shape[1:]))
    if n_frames:
        shape = (nc, -(-n_frames // frames_per_task))
        if group[FRAME_LEDGER].shape != shape:
            group[FRAME_LEDGER].resize(shape)


def _remove_partial_files(url: str) -> None:
    """Delete the temporary files (``<chunk>.<uuid>.partial``) that LocalStore writes killed by
    SIGKILL left behind. Harmless to Zarr, so only looked for after taking over a stale lock."""
    if "://" in url:
        return
    for folder, _, files in os.walk(url):
        for name in files:
            if name.endswith(".partial"):
                Path(folder, name).unlink(missing_ok=True)
