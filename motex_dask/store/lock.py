"""The run lock: one run's claim on a store (host, PID, heartbeat), taken over when its run is gone."""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import psutil
import zarr
from zarr.core.sync import sync

from ..errors import InputError
from .layout import LOCK_KEY, canonical_json, get_bytes, put_bytes

log = logging.getLogger("motex_dask")

#: Seconds between lock heartbeats of a running campaign.
HEARTBEAT_SECONDS = 30.0
#: A lock held from another host is stale when its heartbeat is older than this (4 missed beats:
#: a job killed at walltime blocks the next job, maybe on another node, this long at most).
STALE_LOCK_SECONDS = 120.0


def format_time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


def process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, OverflowError):  # also a nonsense PID
        return None


#: The fields of a lock and their types: a lock missing one (or garbled) counts as torn.
_FIELDS = {"host": str, "pid": int, "started": (int, float), "heartbeat": (int, float), "token": str}


def _well_formed(info: Any) -> bool:
    return isinstance(info, dict) and all(
        isinstance(info.get(k), t) and not isinstance(info.get(k), bool) for k, t in _FIELDS.items()) \
        and (info.get("pid_start") is None or isinstance(info["pid_start"], (int, float)))


class RunLock:
    """One run's claim on a store: a small JSON object written with create-if-absent.

    The holder rewrites its heartbeat every HEARTBEAT_SECONDS from a daemon thread. A lock is stale
    when its holder is on this host and its process is gone (PID dead, or reused by a process that
    started later), or when it is on another host and its heartbeat is older than STALE_LOCK_SECONDS.
    """

    def __init__(self, store: zarr.abc.store.Store, url: str):
        self.store, self.url = store, url
        now = time.time()
        pid = os.getpid()
        self.info = {"host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid),
                     "started": now, "heartbeat": now, "token": uuid.uuid4().hex}
        self.lost = False
        self.took_over = False  # from a run that is gone (it may have left half-written files)
        self._stop = threading.Event()
        self._mutex = threading.Lock()  # a heartbeat never rewrites a lock that release() deleted
        self._thread: threading.Thread | None = None

    @staticmethod
    def read(store: zarr.abc.store.Store) -> dict[str, Any] | None:
        """The current holder, {} for an unreadable (torn) lock, None when unlocked."""
        raw = get_bytes(store, LOCK_KEY)
        if raw is None:
            return None
        try:
            info = json.loads(raw)
        except ValueError:  # also UnicodeDecodeError
            return {}
        return info if _well_formed(info) else {}

    @staticmethod
    def is_stale(holder: dict[str, Any]) -> bool:
        if not holder:
            return True  # torn by a kill in the middle of writing it
        if holder.get("host") == socket.gethostname():
            start = process_start(int(holder["pid"]))
            return start is None or (holder.get("pid_start") is not None
                                     and abs(start - holder["pid_start"]) > 1.0)
        # A heartbeat far in the future is no sign of life either (clocks differ by seconds, not minutes).
        return abs(time.time() - holder["heartbeat"]) > STALE_LOCK_SECONDS

    def acquire(self) -> None:
        for _ in range(3):
            put_bytes(self.store, LOCK_KEY, canonical_json(self.info), exclusive=True)
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
                    f"PID {holder['pid']}, started {format_time(holder['started'])}, last heartbeat {age:.0f} s ago); "
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
                    put_bytes(self.store, LOCK_KEY, canonical_json(self.info))
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
