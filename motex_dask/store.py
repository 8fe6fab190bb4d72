"""The campaign store: a Zarr v3 group that holds every fit result, chunk by chunk.

Layout, fingerprint and crash-safety rules are documented in docs/design.md ("Store layout").
In short: each fit task writes only its own chunk-aligned rows (one Zarr chunk per array, no
sharding), data first and its entry in the ``chunk_done`` ledger last; the ledger is read so that
a missing, torn or unreadable entry means "not done". A lock object in the store keeps a second
run out; a lock left by a killed run is detected and taken over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import zarr
import zarr.storage
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from . import __version__
from .catalogue import catalogue_size, chunk_bounds, n_chunks
from .config import Campaign
from .data import PDFData
from .errors import InputError
from .fit import Status
from .structure import StartingModel

log = logging.getLogger("motex_dask")

#: Version of the layout below; a store written with a newer layout is refused.
FORMAT = 1
#: Group attribute that holds everything motex_dask knows about the store.
ATTR = "motex_dask"
#: Store key of the lock object (not a Zarr node: Zarr ignores it).
LOCK_KEY = "motex.lock"
#: Seconds between lock heartbeats of a running campaign.
HEARTBEAT_SECONDS = 30.0
#: A lock held from another host is stale when its heartbeat is older than this (4 missed beats:
#: a job killed at walltime blocks the next job, maybe on another node, this long at most).
STALE_LOCK_SECONDS = 120.0

# Per-candidate arrays: name -> (dtype, fill value). All have dims (candidate[, atom]).
ROW_ARRAYS: dict[str, tuple[str, Any]] = {
    "mask": ("bool", False),
    "n_atoms": ("int32", 0),
    "rwp": ("float64", float("nan")),
    "scale": ("float64", float("nan")),
    "zoom": ("float64", float("nan")),
    "uiso": ("float64", float("nan")),
    "status": ("int8", int(Status.PENDING)),
    "duplicate_of": ("int64", -1),
}
#: Refined values: finite for OK rows, NaN for every other row except the EMPTY_VALUES.
REFINED = ("rwp", "scale", "zoom", "uiso")
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
#: Every array the store holds (also: `atom_index`, dims (atom,)).
ARRAY_NAMES = (*ROW_ARRAYS, *CHUNK_ARRAYS, SNAPSHOT, "atom_index")
#: Arrays that record run times, not results: they differ between two runs of the same campaign.
TIMING_ARRAYS = ("chunk_seconds", "chunk_end")


# ---------------------------------------------------------------------------------------- helpers

def _open_zarr_store(url: str, read_only: bool) -> zarr.abc.store.Store:
    """A local directory (plain path or file path) or any fsspec URL (s3://, gs://, memory://, …)."""
    if "://" in url:
        # fsspec's local file system makes no parent folders unless asked (chunk keys are nested)
        options = {"auto_mkdir": True} if url.startswith(("file://", "local://")) else None
        return zarr.storage.FsspecStore.from_url(url, read_only=read_only, storage_options=options)
    return zarr.storage.LocalStore(Path(url), read_only=read_only)


def _get_bytes(store: zarr.abc.store.Store, key: str) -> bytes | None:
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def _put_bytes(store: zarr.abc.store.Store, key: str, value: bytes, exclusive: bool = False) -> None:
    buf = default_buffer_prototype().buffer.from_bytes(value)
    sync(store.set_if_not_exists(key, buf) if exclusive else store.set(key, buf))


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))  # length prefix: no ambiguity between parts
        h.update(part)
    return h.hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def fingerprint_parts(campaign: Campaign, model: StartingModel, data: PDFData) -> dict[str, str]:
    """Hashes of everything that changes fit results: starting model, data, settings, version."""
    positions = np.ascontiguousarray(model.positions, dtype="<f8")
    arrays = [np.ascontiguousarray(a, dtype="<f8") for a in (data.r, data.g)]
    dg = b"" if data.dg is None else np.ascontiguousarray(data.dg, dtype="<f8").tobytes()
    return {
        "model": _sha256(_canonical([str(s) for s in model.symbols]), positions.tobytes()),
        "data": _sha256(*(a.tobytes() for a in arrays), dg),
        "settings": _sha256(_canonical(campaign.result_settings())),
        "version": _sha256(__version__.encode()),
    }


def _combine(parts: dict[str, str]) -> str:
    return _sha256(_canonical(parts))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _describe_changes(attrs: dict[str, Any], campaign: Campaign, parts: dict[str, str]) -> list[str]:
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


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


# ------------------------------------------------------------------------------------------- lock

def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class _Lock:
    """One run's claim on a store: a small JSON object written with create-if-absent.

    The holder rewrites its heartbeat every HEARTBEAT_SECONDS from a daemon thread. A lock is stale
    when its holder is on this host and its process is gone (PID dead, or reused by a process that
    started later), or when it is on another host and its heartbeat is older than STALE_LOCK_SECONDS.
    """

    def __init__(self, store: zarr.abc.store.Store, url: str):
        self.store, self.url = store, url
        now = time.time()
        pid = os.getpid()
        self.info = {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start(pid),
                     "started": now, "heartbeat": now, "token": uuid.uuid4().hex}
        self.lost = False
        self.took_over = False  # from a run that is gone (it may have left half-written files)
        self._stop = threading.Event()
        self._mutex = threading.Lock()  # a heartbeat never rewrites a lock that release() deleted
        self._thread: threading.Thread | None = None

    @staticmethod
    def read(store: zarr.abc.store.Store) -> dict[str, Any] | None:
        """The current holder, {} for an unreadable (torn) lock, None when unlocked."""
        raw = _get_bytes(store, LOCK_KEY)
        if raw is None:
            return None
        try:
            info = json.loads(raw)
            return info if isinstance(info, dict) and "token" in info else {}
        except ValueError:
            return {}

    @staticmethod
    def is_stale(holder: dict[str, Any]) -> bool:
        if not holder:
            return True  # torn by a kill in the middle of writing it
        if holder.get("host") == socket.gethostname():
            start = _process_start(int(holder["pid"]))
            return start is None or (holder.get("pid_start") is not None
                                     and abs(start - holder["pid_start"]) > 1.0)
        return time.time() - float(holder.get("heartbeat", 0)) > STALE_LOCK_SECONDS

    def acquire(self) -> None:
        for _ in range(3):
            _put_bytes(self.store, LOCK_KEY, _canonical(self.info), exclusive=True)
            holder = self.read(self.store)
            if holder and holder.get("token") == self.info["token"]:
                self._thread = threading.Thread(target=self._beat, name="motex-lock-heartbeat", daemon=True)
                self._thread.start()
                return
            if holder is None:
                continue  # released between our attempt and the read
            if holder == {}:
                time.sleep(0.2)  # a non-atomic store may show a lock half-written: look again
                if self.read(self.store) != {}:
                    continue
            if not self.is_stale(holder):
                age = time.time() - float(holder.get("heartbeat", 0))
                raise InputError(
                    f"{self.url}: another motex run is writing this store (host {holder['host']}, "
                    f"PID {holder['pid']}, started {_when(holder['started'])}, last heartbeat {age:.0f} s ago); "
                    "wait for it to finish or stop it, or give this run another store path (a run on "
                    f"another host that died releases it {STALE_LOCK_SECONDS:.0f} s after its last heartbeat)")
            if self.read(self.store) == holder:  # unchanged since we judged it: nobody took it over
                log.warning("%s: taking over the lock of a run that is gone (%s)", self.url,
                            f"host {holder['host']}, PID {holder['pid']}" if holder else "torn lock")
                sync(self.store.delete(LOCK_KEY))
                self.took_over = True
        raise InputError(f"{self.url}: could not take the store's lock ({LOCK_KEY}); another run is "
                         "starting on it at the same moment: try again")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._mutex:
                if self._stop.is_set():
                    return
                try:
                    holder = self.read(self.store)
                    if not holder or holder.get("token") != self.info["token"]:
                        self.lost = True
                        log.error("%s: this run lost the store's lock to another run", self.url)
                        return
                    self.info["heartbeat"] = time.time()
                    _put_bytes(self.store, LOCK_KEY, _canonical(self.info))
                except OSError as err:  # a flaky shared file system: try again next beat
                    log.warning("%s: lock heartbeat failed (%s)", self.url, err)

    def release(self) -> None:
        self._stop.set()
        with self._mutex:
            holder = self.read(self.store)
            if holder and holder.get("token") == self.info["token"]:
                sync(self.store.delete(LOCK_KEY))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


# ------------------------------------------------------------------------------------------ store

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

    def __init__(self, meta: _Meta, store: zarr.abc.store.Store, lock: _Lock | None = None):
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
    def attrs(self) -> dict[str, Any]:
        return self._meta.attrs

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
        store = _open_zarr_store(url, read_only=False)
        _inspect(store, url)  # refuse a foreign path before writing anything (the lock)
        lock = _Lock(store, url)
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
        store = _open_zarr_store(url, read_only=True)
        try:
            attrs = _inspect(store, url)
        except InputError:
            attrs = None
        if attrs is None:
            raise InputError(f"{url}: not a motex_dask campaign store; give the store of a campaign "
                             "(by default <output>/store.zarr)")
        return cls(_Meta(url, attrs), store)

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

    # -- writing -----------------------------------------------------------------------------
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
        _check_chunk(c, arrays, n, self.n_perm)
        target = {name: self.array(name).async_array for name in (*ROW_ARRAYS, *CHUNK_ARRAYS)}

        async def write() -> None:  # concurrent writes within each step, the steps in order
            await asyncio.gather(*(target[name].setitem(slice(start, stop), arrays[name]) for name in ROW_ARRAYS))
            await asyncio.gather(target["chunk_seconds"].setitem(c, seconds),
                                 target["chunk_end"].setitem(c, time.time()))
            await target["chunk_done"].setitem(c, n)  # the commit point: now the chunk counts as done

        sync(write())


_attached: dict[tuple[str, str, int], CampaignStore] = {}


def _attach(meta: _Meta) -> CampaignStore:
    """A worker-side copy of a store: writes chunks, holds no lock (cached per process)."""
    key = (meta.url, meta.attrs["fingerprint"], meta.size)
    store = _attached.get(key)
    if store is None:
        store = _attached[key] = CampaignStore(meta, _open_zarr_store(meta.url, read_only=False))
    return store


def _check_chunk(c: int, arrays: dict[str, np.ndarray], n: int, n_perm: int) -> None:
    """Refuse a chunk that breaks the layout's rules (a programming error, not user input)."""
    missing = set(ROW_ARRAYS) - set(arrays)
    if missing:
        raise ValueError(f"chunk {c}: missing arrays {sorted(missing)}")
    for name, arr in arrays.items():
        want = (n, n_perm) if name == "mask" else (n,)
        if np.shape(arr) != want:
            raise ValueError(f"chunk {c}: {name} has shape {np.shape(arr)}, expected {want}")
    status = np.asarray(arrays["status"])
    if np.any(status == Status.PENDING):
        raise ValueError(f"chunk {c}: {int(np.sum(status == Status.PENDING))} rows still PENDING")
    ok = status == Status.OK
    empty = status == Status.EMPTY
    for name in REFINED:
        values = np.asarray(arrays[name], dtype=np.float64)
        expected_nan = ~ok & ~empty if name in EMPTY_VALUES else ~ok
        if not np.all(np.isfinite(values[ok])) or not np.all(np.isnan(values[expected_nan])):
            raise ValueError(f"chunk {c}: {name} must be finite on OK rows and NaN on failed rows")
    for name, value in EMPTY_VALUES.items():
        if not np.all(np.asarray(arrays[name])[empty] == value):
            raise ValueError(f"chunk {c}: EMPTY rows must have {name} = {value}")


# ------------------------------------------------------------------------------ create / verify

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
    if len(group.attrs) or names - {"zarr.json", *ARRAY_NAMES}:
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
    if attrs["fingerprint"] != _combine(parts):
        changes = _describe_changes(attrs, campaign, parts)
        raise InputError(f"{url}: the store holds another campaign: changed since it was written: "
                         f"{'; '.join(changes)}. Restore the original inputs to resume it, or give a new "
                         "store path (store: in the campaign file)")
    size = catalogue_size(campaign.catalogue, model.n_perm)
    old_size = int(attrs["size"])
    if size < old_size:
        raise InputError(f"{url}: catalogue.size gives {size} candidates but the store already holds "
                         f"{old_size}; set catalogue.size to at least {old_size} or give a new store path")
    if size > old_size:
        log.info("%s: extending the catalogue from %d to %d candidates", url, old_size, size)
    # The attributes (with the target size) first, then the arrays: both steps are idempotent, so a
    # run killed in between is finished by the next run.
    attrs = {**attrs, "size": size, "n_chunks": n_chunks(size, int(attrs["chunk_size"])),
             "settings": _settings(campaign)}
    group = zarr.open_group(store=store, mode="r+")
    group.attrs[ATTR] = attrs
    _resize_arrays(group, size, int(attrs["chunk_size"]))
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
    for name, (dtype, fill) in ROW_ARRAYS.items():
        two_d = name == "mask"
        group.create_array(name, shape=(size, model.n_perm) if two_d else (size,),
                           chunks=(cs, model.n_perm) if two_d else (cs,), dtype=dtype, fill_value=fill,
                           dimension_names=("candidate", "atom") if two_d else ("candidate",),
                           overwrite=True)
    for name, (dtype, fill) in CHUNK_ARRAYS.items():
        group.create_array(name, shape=(nc,), chunks=(1,), dtype=dtype, fill_value=fill,
                           compressors=[Crc32cCodec()], dimension_names=("chunk",), overwrite=True)
    group.create_array(SNAPSHOT, shape=(nc,), chunks=(nc,), dtype="int32", fill_value=0,
                       compressors=[ZstdCodec(), Crc32cCodec()], dimension_names=("chunk",), overwrite=True)
    atom_index = group.create_array("atom_index", shape=(model.n_perm,), chunks=(model.n_perm,),
                                    dtype="int64", fill_value=-1, dimension_names=("atom",), overwrite=True)
    atom_index[:] = model.permuted
    attrs = {
        "format": FORMAT,
        "version": __version__,
        "fingerprint": _combine(parts),
        "fingerprint_parts": parts,
        "result_settings": campaign.result_settings(),
        "settings": _settings(campaign),
        "size": size,
        "chunk_size": cs,
        "n_chunks": nc,
        "n_perm": model.n_perm,
        "permuted_symbols": [str(model.symbols[i]) for i in model.permuted],
        "status_codes": {s.name: int(s) for s in Status},
        "created": time.time(),
    }
    group.attrs[ATTR] = attrs
    log.info("%s: new store, %d candidates in %d chunks of %d", url, size, nc, cs)
    return _Meta(url, attrs)


def _resize_arrays(group: zarr.Group, size: int, chunk_size: int) -> None:
    nc = n_chunks(size, chunk_size)
    for name in ROW_ARRAYS:
        arr = group[name]
        shape = (size, *arr.shape[1:])
        if arr.shape != shape:
            arr.resize(shape)
    for name in (*CHUNK_ARRAYS, SNAPSHOT):
        arr = group[name]
        if arr.shape != (nc,):
            arr.resize((nc,))


def _remove_partial_files(url: str) -> None:
    """Delete the temporary files (``<chunk>.<uuid>.partial``) that LocalStore writes killed by
    SIGKILL left behind. Harmless to Zarr, so only looked for after taking over a stale lock."""
    if "://" in url:
        return
    for folder, _, files in os.walk(url):
        for name in files:
            if name.endswith(".partial"):
                Path(folder, name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- status

def status_report(url: str) -> dict[str, Any]:
    """How far a campaign is: chunks, fits, failures by reason, best R_wp, lock holder, ETA."""
    store = CampaignStore.open_readonly(url)
    rows = store.chunk_rows()
    done = store.done_rows()
    complete = done == rows
    row_done = np.zeros(store.size, dtype=bool)
    for c in np.flatnonzero(done):
        start = c * store.chunk_size
        row_done[start:start + done[c]] = True
    status = _read_rows(store, "status", done)
    rwp = _read_rows(store, "rwp", done)
    counts = {s.name.lower(): int(np.sum(status[row_done] == s)) for s in Status if s != Status.PENDING}
    ok = row_done & (status == Status.OK)
    best = int(np.argmin(np.where(ok, rwp, np.inf))) if ok.any() else None
    seconds = store.ledger("chunk_seconds")[: store.n_chunks]
    ends = store.ledger("chunk_end")[: store.n_chunks]
    n_done = int(row_done.sum())
    n_left = store.size - n_done
    # Work per row: rows of a task (fitted or duplicate) over its run time.
    timed = (done > 0) & (seconds > 0)
    row_seconds = float(seconds[timed].sum() / done[timed].sum()) if timed.any() else None
    holder = _Lock.read(store._store)
    running = bool(holder) and not _Lock.is_stale(holder)
    rate = eta = None
    if running:
        # Throughput of this run since its first chunk landed (start-up and engine set-up excluded).
        recent = np.flatnonzero((ends >= holder["started"]) & (done > 0))
        if recent.size >= 2:
            first = recent[np.argmin(ends[recent])]
            elapsed = time.time() - ends[first]
            rate = float((done[recent].sum() - done[first]) / elapsed) if elapsed > 0 else None
            eta = n_left / rate if rate else None
    return {
        "store": url,
        "fingerprint": store.fingerprint,
        "version": store.attrs.get("version"),
        "size": store.size,
        "chunk_size": store.chunk_size,
        "chunks_total": store.n_chunks,
        "chunks_done": int(complete.sum()),
        "fits_total": store.size,
        "fits_done": n_done,
        "by_status": counts,
        "failed": int(sum(v for k, v in counts.items() if k not in ("ok", "duplicate"))),
        "duplicates": counts["duplicate"],
        "best": None if best is None else {"row": best, "rwp": float(rwp[best])},
        "running": {"host": holder["host"], "pid": holder["pid"], "started": holder["started"],
                    "heartbeat_age_s": time.time() - holder["heartbeat"]} if running else None,
        "rate_rows_per_s": rate,
        "eta_s": eta,
        "work_left_s": None if row_seconds is None else n_left * row_seconds,
        "seconds_per_row": row_seconds,
    }


def _read_rows(store: CampaignStore, name: str, done: np.ndarray) -> np.ndarray:
    """A per-candidate array; chunks that are not done (maybe being written right now) are skipped."""
    arr = store.array(name)
    out = np.full(store.size, ROW_ARRAYS[name][1], dtype=arr.dtype)
    n = min(store.size, arr.shape[0])  # shorter while an extension is half done
    try:
        out[:n] = arr[:n]
    except Exception:  # a chunk torn or half-written by a running task: read the done ones only
        for c in np.flatnonzero(done):
            start, stop = store.bounds(c)
            out[start:stop] = arr[start:stop]
    return out


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def format_status(report: dict[str, Any]) -> str:
    """The status report as a few lines of text."""
    r = report
    pct = 100.0 * r["fits_done"] / r["fits_total"] if r["fits_total"] else 0.0
    lines = [
        f"store      {r['store']}",
        f"chunks     {r['chunks_done']} / {r['chunks_total']} done (chunk size {r['chunk_size']})",
        f"fits       {r['fits_done']} / {r['fits_total']} candidates ({pct:.1f} %)",
    ]
    by = r["by_status"]
    failures = ", ".join(f"{k} {v}" for k, v in by.items() if k not in ("ok", "duplicate") and v)
    lines.append(f"results    ok {by['ok']}, duplicates {r['duplicates']}, failed {r['failed']}"
                 + (f" ({failures})" if failures else ""))
    if r["best"] is not None:
        lines.append(f"best R_wp  {r['best']['rwp']:.5f} (candidate {r['best']['row']})")
    if r["running"]:
        run = r["running"]
        lines.append(f"running    on {run['host']}, PID {run['pid']}, since {_when(run['started'])}")
        if r["eta_s"] is not None:
            lines.append(f"rate       {r['rate_rows_per_s']:.1f} candidates/s, ETA {_duration(r['eta_s'])}")
    elif r["fits_done"] < r["fits_total"]:
        lines.append("running    no (run `motex run CAMPAIGN` again to resume)")
    if r["fits_done"] < r["fits_total"] and r["work_left_s"] is not None:
        lines.append(f"work left  {_duration(r['work_left_s'])} on one worker thread "
                     f"({1000 * r['seconds_per_row']:.2f} ms per candidate)")
    if r["fits_done"] == r["fits_total"]:
        lines.append("complete   every candidate is done")
    return "\n".join(lines)
