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
    LOCK_KEY,
    DEFAULT_FIT_COLUMNS,
    SNAPSHOT,
    check_chunk,
    combine,
    describe_changes,
    fingerprint_parts,
    fit_columns,
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

    def lock_holder(self) -> dict[str, Any] | None:
        """The run holding the store's lock now ({} for a torn lock, None when unlocked)."""
        return RunLock.read(self._store)

    @property
    def lock_lost(self) -> bool:
        """True when another run took this run's lock over (this run must stop writing)."""
        return self._lock is not None and self._lock.lost

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open_for_run(cls, url: str, campaign: Campaign, model: StartingModel, data: PDFData) -> "CampaignStore":
        """Create the store, or open it, check its fingerprint and extend it; holds the lock.

        Refusals (foreign store, other campaign, smaller catalogue, store busy) raise InputError and
        leave the store untouched.
        """
        url = str(url)
        store = open_zarr_store(url, read_only=False)
        _inspect(store, url)  # refuse a foreign path before writing anything (the lock)
        lock = RunLock(store, url)
        lock.acquire()
        try:
            attrs = _inspect(store, url)  # again, now that no other run can change it
            meta = (_create(store, url, campaign, model, data) if attrs is None
                    else _update(store, url, attrs, campaign, model, data))
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


_attached: dict[tuple[str, str, int], CampaignStore] = {}


def _host_bytes() -> np.ndarray:
    """This process's host for the HOST array: the SLURM node name where there is one (several
    nodes may share a host name, e.g. scripts/slurm_local.sh --nodes), else the host name."""
    name = (os.environ.get("SLURMD_NODENAME") or socket.gethostname()).encode()[:HOST_BYTES]
    return np.frombuffer(name.ljust(HOST_BYTES, b"\0"), dtype=np.uint8)


def _attach(meta: _Meta) -> CampaignStore:
    """A worker-side copy of a store: writes chunks, holds no lock (cached per process)."""
    key = (meta.url, meta.attrs["fingerprint"], meta.size)
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
    if len(group.attrs) or {n for n in names if not is_fit_column(n)} - {"zarr.json", *ARRAY_NAMES}:
        raise foreign
    return None


def _update(store: zarr.abc.store.Store, url: str, attrs: dict[str, Any], campaign: Campaign,
            model: StartingModel, data: PDFData) -> _Meta:
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
    size = catalogue_size(campaign.catalogue, model.n_perm)
    old_size = int(attrs["size"])
    if campaign.catalogue.strategy == "adaptive":  # grown round by round (`extend`), never shrunk
        size = max(size, old_size)
    if size < old_size:
        raise InputError(f"{url}: catalogue.size gives {size} candidates but the store already holds "
                         f"{old_size}; set catalogue.size to at least {old_size} or give a new store path")
    if size > old_size:
        log.info("%s: extending the catalogue from %d to %d candidates", url, old_size, size)
    return _grow(store, url, {**attrs, "settings": _settings(campaign)}, size)


def _grow(store: zarr.abc.store.Store, url: str, attrs: dict[str, Any], size: int) -> _Meta:
    """Set the store's size: the attributes (with the target size) first, then the arrays; both
    steps are idempotent, so a run killed in between is finished by the next run."""
    attrs = {**attrs, "size": size, "n_chunks": n_chunks(size, int(attrs["chunk_size"]))}
    group = zarr.open_group(store=store, mode="r+")
    group.attrs[ATTR] = attrs
    _resize_arrays(group, size, int(attrs["chunk_size"]), attrs.get("fit_columns", DEFAULT_FIT_COLUMNS),
                   int(attrs["n_perm"]))
    return _Meta(url, attrs)


def _settings(campaign: Campaign) -> dict[str, Any]:
    return {**campaign.to_dict(), "campaign_file": str(campaign.path) if campaign.path else None}


def _create(store: zarr.abc.store.Store, url: str, campaign: Campaign, model: StartingModel,
            data: PDFData) -> _Meta:
    """A new store: arrays first, the motex_dask attributes (what makes it a store) last."""
    parts = fingerprint_parts(campaign, model, data)
    size = catalogue_size(campaign.catalogue, model.n_perm)
    cs = campaign.catalogue.chunk_size
    nc = n_chunks(size, cs)
    group = zarr.open_group(store=store, mode="a")
    columns = fit_columns(campaign, model)
    for name, spec in row_arrays(columns).items():
        _create_row_array(group, name, spec, size, cs, model.n_perm)
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
    }
    group.attrs[ATTR] = attrs
    log.info("%s: new store, %d candidates in %d chunks of %d", url, size, nc, cs)
    return _Meta(url, attrs)


def _create_row_array(group: zarr.Group, name: str, spec: tuple[str, Any], size: int, chunk_size: int,
                      n_perm: int) -> None:
    dtype, fill = spec
    two_d = name == "mask"
    group.create_array(name, shape=(size, n_perm) if two_d else (size,),
                       chunks=(chunk_size, n_perm) if two_d else (chunk_size,), dtype=dtype, fill_value=fill,
                       dimension_names=("candidate", "atom") if two_d else ("candidate",), overwrite=True)


def _resize_arrays(group: zarr.Group, size: int, chunk_size: int, columns, n_perm: int) -> None:
    nc = n_chunks(size, chunk_size)
    for name, spec in row_arrays(tuple(columns)).items():
        if name not in group:  # a store from before this array existed: its fill value is right for it
            _create_row_array(group, name, spec, size, chunk_size, n_perm)
        arr = group[name]
        shape = (size, *arr.shape[1:])
        if arr.shape != shape:
            arr.resize(shape)
    for name in (*CHUNK_ARRAYS, SNAPSHOT, HOST):
        arr = group[name]
        if arr.shape[0] != nc:
            arr.resize((nc, *arr.shape[1:]))


def _remove_partial_files(url: str) -> None:
    """Delete the temporary files (``<chunk>.<uuid>.partial``) that LocalStore writes killed by
    SIGKILL left behind. Harmless to Zarr, so only looked for after taking over a stale lock."""
    if "://" in url:
        return
    for folder, _, files in os.walk(url):
        for name in files:
            if name.endswith(".partial"):
                Path(folder, name).unlink(missing_ok=True)
