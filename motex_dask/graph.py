"""Step 2 as a Dask graph: duplicates (a reduction on the cluster, see duplicates.py) → one fit
task per incomplete chunk → store.

Every fit task regenerates its chunk's masks from (seed, chunk), fits the rows that are not
duplicates of earlier rows, and writes its own chunk of the store (data first, ledger last). A
task can therefore run twice (a retry, a worker that died after writing) without changing the
result. Tasks get explicit keys, unique per run, chunk and attempt (``motex-fit-<run>-<c>-<n>``):
Dask reschedules a task whose worker died (up to distributed.scheduler.allowed-failures), retries
one that raised (TASK_RETRIES), and the client resubmits, under a new key, a chunk whose task was
lost anyway (KilledWorker, cancelled). The FitProblem travels as a task, not as scattered data,
so the scheduler can recompute it when every worker holding it has left (adaptive clusters).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed import Client, Future, as_completed, wait
from distributed.scheduler import KilledWorker
from tqdm import tqdm

from .catalogue import chunk_draw
from .settings import CatalogueSettings, FitSettings
from .data import PDFData
from .duplicates import Pairs, chunk_duplicates, find_duplicates
from .errors import InputError, LostWorkError
from .fit import Engine, Status, make_engine
from .proposal import RoundPlan
from .store import SNAPSHOT_SECONDS, CampaignStore, shape_columns
from .structure import StartingModel

log = logging.getLogger("motex_dask")

#: Dask retries of a fit task that raised (e.g. a hiccup of a shared file system).
TASK_RETRIES = 2
#: Resubmissions of a chunk whose worker died or left while it ran (beyond Dask's own rescheduling).
MAX_RESUBMITS = 5
#: Without a terminal, progress goes to the log this often (seconds).
LOG_EVERY = 60.0


@dataclass(frozen=True)
class FitProblem:
    """Everything a fit task needs besides its chunk index; shipped once to every worker."""

    model: StartingModel
    data: PDFData          # already windowed to the fit range
    fit: FitSettings
    catalogue: CatalogueSettings
    fingerprint: str       # the store's; keys the per-process engine cache
    plans: tuple[RoundPlan, ...] = ()  # an adaptive catalogue's rounds so far
    frames: np.ndarray | None = None  # a series: G of every frame on data.r, (n_frames, n_r)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _engine(problem: FitProblem) -> Engine:
    """The fit engine of this worker process, built on its first task (engines compile/tabulate)."""
    with _engines_lock:
        # a series grows: the same store (fingerprint) with more frames needs a new engine
        key = f"{problem.fingerprint}/{0 if problem.frames is None else len(problem.frames)}"
        engine = _engines.get(key)
        if engine is None:
            _engines.clear()  # one campaign per process at a time: keep memory bounded
            engine = make_engine(problem.model.symbols, problem.model.positions, problem.data.r,
                                 problem.data.g if problem.frames is None else problem.frames, problem.fit)
            _engines[key] = engine
        return engine


def _identity(x: Any) -> Any:
    return x


def fit_chunk(problem: FitProblem, store: CampaignStore, c: int, duplicates: Pairs,
              block: tuple[int, int] | None = None) -> dict[str, Any]:
    """Fit every row of chunk c and write it (a Dask task; idempotent).

    duplicates: (row, first row) of the duplicates of the chunk's group; those in the chunk are
    not fitted but point to the earlier row they repeat.
    block (b, lo): a series task, which fits frames lo .. the end of frame block b. Within a block
    each frame starts from the previous frame's values, so a block continued in a later run (new
    frames) starts from the stored values of its last fitted frame: the same numbers a run of the
    whole block gives. Each block's first frame starts from the settings, so blocks are independent.
    A chunk cut short by a smaller catalogue is fitted whole again when the catalogue grows: a row's
    refined values may depend on the batch it was fitted in (in the last bits), and a campaign's
    result must not depend on its history.
    """
    t0 = time.perf_counter()
    start, stop = store.bounds(c)
    n = stop - start
    dup_rows, dup_first = chunk_duplicates(duplicates, start, stop)
    drawn, round_, origin = chunk_draw(problem.catalogue, problem.model.permuted_positions, c, problem.plans)
    masks = drawn.masks
    keep = problem.model.keep_atoms(masks)
    if block is not None:
        b, lo = block
        first, hi = store.block_frames(b)
    shape = n if block is None else (n, hi - lo)
    out: dict[str, np.ndarray] = {
        "mask": masks,
        "round": round_,
        "origin": origin,
        "n_atoms": keep.sum(axis=1).astype(np.int32),
        **{name: np.full(shape, np.nan) for name in store.refined},
        "status": np.full(shape, Status.DUPLICATE, dtype=np.int8),
        "duplicate_of": np.full(n, -1, dtype=np.int64),
        **shape_columns(drawn),
    }
    out["duplicate_of"][dup_rows] = dup_first
    unique = np.ones(n, dtype=bool)
    unique[dup_rows] = False
    todo = np.flatnonzero(unique)
    if todo.size:
        if block is None:
            result = _engine(problem).fit(keep[todo])
        else:
            start_values = None
            if lo > first:  # the block's chain goes on from its last stored frame
                start_values = np.column_stack([store.array(name)[start:stop, lo - 1][todo]
                                                for name in store.fit_columns])
            result = _engine(problem).fit(keep[todo], start=start_values, frames=range(lo, hi))
        status = np.asarray(result.status, dtype=np.int8)
        out["status"][todo] = status
        for name in store.refined:  # NaN on failed rows; EMPTY rows: rwp 1, scale 0 (the store checks)
            out[name][todo] = result[name]
    seconds = time.perf_counter() - t0
    if block is None:
        store.write_chunk(c, out, seconds)
    else:
        store.write_block(c, b, lo, out, seconds)  # it writes the per-candidate arrays with block 0 only
    return {"chunk": c, "rows": out["status"].size, "fits": int(todo.size) * (1 if block is None else hi - lo),
            "status": np.bincount(out["status"].ravel(), minlength=len(Status)).tolist(), "seconds": seconds}


class _Progress:
    """Candidates done, rate and ETA: a bar on a terminal, a log line now and then otherwise."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.failed = total, 0, 0
        self.t0 = self.last_log = time.monotonic()
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, unit="cand", desc="fits", file=sys.stderr, dynamic_ncols=True,
                            smoothing=0.1)

    def update(self, rows: int, failed: int) -> None:
        self.done += rows
        self.failed += failed
        if self.bar is not None:
            self.bar.update(rows)
            self.bar.set_postfix(failed=self.failed, refresh=False)
        elif self.enabled and time.monotonic() - self.last_log >= LOG_EVERY:
            self.last_log = time.monotonic()
            rate = self.done / max(self.last_log - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("fits: %d / %d candidates (%.0f %%), %.1f/s, %d failed, ETA %.0f s", self.done,
                     self.total, 100 * self.done / max(self.total, 1), rate, self.failed, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


Task = tuple[int, "tuple[int, int] | None"]


def pending_tasks(store: CampaignStore) -> list[Task]:
    """The fit tasks a store still needs: (chunk, None), or for a series (chunk, (frame block, first
    frame to fit)): a task owns a (candidates x frames) block."""
    if store.n_frames is None:
        return [(c, None) for c in store.incomplete_chunks()]
    return [(c, (b, lo)) for c, b, lo in store.incomplete_blocks()]


def run_fits(client: Client | None, store: CampaignStore, problem: FitProblem, progress: bool = True) -> dict[str, Any]:
    """Fit every incomplete chunk (or frame block) of the store on the cluster; returns a summary.

    `client` may be None when the store is complete (callers skip starting a cluster then).
    """
    t0 = time.perf_counter()
    todo = pending_tasks(store)
    summary: dict[str, Any] = {"chunks_total": store.n_chunks, "chunks": len(todo), "candidates": 0, "fits": 0,
                               "duplicates": 0, "failed": {}, "resubmitted": 0}
    if not todo:
        store.checkpoint()  # the ledger knew more than the snapshot: a run killed before saving it
        log.info("fit stage: all %d chunks are already done", store.n_chunks)
        return {**summary, "seconds": time.perf_counter() - t0, "catalogue_seconds": 0.0, "fits_per_second": 0.0}
    if client is None:
        raise ValueError("run_fits needs a Dask client while chunks remain to be fitted")
    rows = store.chunk_rows()
    # (candidate, frame) pairs of each task; one frame per candidate without a series
    total = sum(int(rows[c]) * (1 if block is None else store.block_frames(block[0])[1] - block[1])
                for c, block in todo)
    if store.n_frames is None:
        log.info("fit stage: %d of %d chunks to do (%d candidates)", len(todo), store.n_chunks, total)
    else:
        log.info("fit stage: %d of %d (chunk, frame block) tasks to do (%d candidate-frame fits)", len(todo),
                 store.n_chunks * store.n_blocks, total)

    duplicates = find_duplicates(client, problem.catalogue, problem.model.permuted_positions,
                                 max(c for c, _ in todo) + 1, problem.plans)
    wait(list(duplicates.groups.values()))  # the fits need them anyway; this times the catalogue step
    summary["catalogue_seconds"] = time.perf_counter() - t0
    run = uuid.uuid4().hex[:8]
    # A task, not scattered data: if every worker holding it leaves, the scheduler recomputes it.
    problem_future = client.submit(_identity, problem, key=f"motex-problem-{run}")
    attempts = dict.fromkeys(todo, 0)

    def submit(task: Task) -> Future:
        c, block = task
        name = f"{c}" if block is None else f"{c}-{block[0]}"
        return client.submit(fit_chunk, problem_future, store, c, duplicates.of_chunk(c), block,
                             key=f"motex-fit-{run}-{name}-{attempts[task]}", retries=TASK_RETRIES)

    futures = {}
    for task in todo:
        f = submit(task)
        futures[f.key] = (task, f)
    bar = _Progress(total, progress)
    by_status = np.zeros(len(Status), dtype=np.int64)
    pending = as_completed([f for _, f in futures.values()])
    saved = time.monotonic()
    try:
        for future in pending:
            if store.lock_lost:
                raise InputError(f"{store.url}: another run took over this store's lock; stopping this one")
            task, _ = futures.pop(future.key)
            c, block = task
            try:
                stats = future.result() if future.status == "finished" else None
            except CancelledError:  # finished, then its result was lost with its worker
                stats = None
            if stats is not None:
                if block is None or block == (0, 0):  # this task wrote the chunk's candidates
                    store.note_done(c)
                if time.monotonic() - saved > SNAPSHOT_SECONDS:
                    store.checkpoint()
                    saved = time.monotonic()
                summary["candidates"] += stats["rows"]
                summary["fits"] += stats["fits"]
                by_status += stats["status"]
                bar.update(stats["rows"], stats["rows"] - stats["status"][Status.OK]
                           - stats["status"][Status.DUPLICATE])
                continue
            error = future.exception() if future.status == "error" else None
            if error is not None and not isinstance(error, KilledWorker):
                raise error  # the task itself failed, after TASK_RETRIES retries
            if attempts[task] < MAX_RESUBMITS:
                # The worker died or left (or the problem's copies were lost with it): run it again.
                attempts[task] += 1
                summary["resubmitted"] += 1
                log.warning("chunk %d: %s; resubmitting it (attempt %d)", c,
                            error or f"task {future.status}", attempts[task] + 1)
                f = submit(task)
                futures[f.key] = (task, f)
                pending.add(f)
                continue
            raise LostWorkError(f"the fit task of chunk {c} was lost with its worker {attempts[task] + 1} times "
                                f"({error or future.status}): workers are dying or leaving while they fit, "
                                "often out of memory; give workers more memory (cluster profile: jobqueue.memory "
                                "or local.memory-limit) or lower catalogue.chunk_size, then run again to resume")
    finally:
        bar.close()
        client.cancel([f for _, f in futures.values()])
        try:
            store.checkpoint()
        except Exception as err:  # never hide the error that brought us here
            log.warning("%s: could not save the ledger snapshot (%s)", store.url, err)
    seconds = time.perf_counter() - t0
    summary["duplicates"] = int(by_status[Status.DUPLICATE])
    summary["failed"] = {s.name.lower(): int(by_status[s]) for s in Status
                         if s not in (Status.OK, Status.DUPLICATE, Status.PENDING) and by_status[s]}
    summary.update(seconds=seconds, fits_per_second=summary["fits"] / seconds if seconds > 0 else 0.0)
    log.info("fit stage: %d candidates in %d chunks, %d fits, %d duplicates, failed %s, %.1f s (%.0f fits/s)",
             summary["candidates"], len(todo), summary["fits"], summary["duplicates"], summary["failed"] or "none",
             seconds, summary["fits_per_second"])
    return summary
