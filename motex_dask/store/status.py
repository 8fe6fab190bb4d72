"""What `motex status` reports: chunks and fits done, failures by reason, best R_wp, lock holder, ETA."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from ..fit import Status
from .lock import RunLock, format_time
from .store import CampaignStore

#: Why an adaptive campaign stopped (the ledger's `stopped`), in words.
STOP_REASONS = {"stable": "the ranking is stable", "max_fits": "catalogue.adaptive.max_fits reached",
                "size": "catalogue.size candidates drawn"}


def status_report(store: CampaignStore | str) -> dict[str, Any]:
    """How far a campaign is: chunks, fits, failures by reason, best R_wp, lock holder, ETA."""
    store = CampaignStore.readonly(store)
    url = store.url
    rows = store.chunk_rows()
    done = store.done_rows()
    complete = done == rows
    row_done = np.zeros(store.size, dtype=bool)
    for c in np.flatnonzero(done):
        start = c * store.chunk_size
        row_done[start:start + done[c]] = True
    # a series: the candidate counts below are those of its first frame; "frames" adds the rest
    status = _read_rows(store, "status", done)
    rwp = _read_rows(store, "rwp", done)
    at = (0,) if store.n_frames is not None else ()
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
    holder = store.lock_holder()
    running = bool(holder) and not RunLock.is_stale(holder)
    rate = eta = None
    if running:
        # Throughput of this run since its first chunk landed (start-up and engine set-up excluded).
        recent = np.flatnonzero((ends >= holder["started"]) & (done > 0))
        if recent.size >= 2:
            first = recent[np.argmin(ends[recent])]
            elapsed = time.time() - ends[first]
            rate = float((done[recent].sum() - done[first]) / elapsed) if elapsed > 0 else None
            eta = n_left / rate if rate else None
    rounds = store.rounds  # an adaptive campaign's ledger
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
        "best": None if best is None else {"row": best, "rwp": float(rwp[best]),
                                           **{k: float(store.array(k)[(best, *at)]) for k in store.refined[1:]}},
        "running": {"host": holder["host"], "pid": holder["pid"], "started": holder["started"],
                    "heartbeat_age_s": time.time() - holder["heartbeat"]} if running else None,
        "rate_rows_per_s": rate,
        "eta_s": eta,
        "work_left_s": None if row_seconds is None else n_left * row_seconds,
        "seconds_per_row": row_seconds,
        "hosts": _hosts(store, done),
        **({} if store.n_frames is None else {"frames": _frames_report(store)}),
        **({"rounds": _rounds_report(store, rounds)} if rounds else {}),
    }


def _rounds_report(store: CampaignStore, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """An adaptive campaign's round ledger: rounds planned and ranked, why it stopped (None: not yet),
    the most candidates it may draw. Its store holds only the rounds drawn so far (`size`)."""
    return {"planned": len(rounds), "ranked": sum("ranking" in r for r in rounds),
            "stopped": store.attrs.get("stopped"), "max_candidates": store.settings["catalogue"]["size"]}


def _hosts(store: CampaignStore, done: np.ndarray) -> dict[str, int]:
    """Chunks done per host that fitted them, most first."""
    counts = Counter(h for h, d in zip(store.chunk_hosts(), done) if d > 0 and h)
    return dict(sorted(counts.items(), key=lambda hk: (-hk[1], hk[0])))


def _frames_report(store: CampaignStore) -> dict[str, Any]:
    """A series: frames whose every candidate is fitted, and (candidate, frame) fits done."""
    fitted = store.frames_fitted()  # (chunk, frame)
    rows = store.chunk_rows()
    return {"done": int(fitted.all(axis=0).sum()), "total": store.n_frames,
            "fits_done": int((fitted * rows[:, None]).sum()), "fits_total": store.size * store.n_frames,
            "names": store.frame_names}


def _read_rows(store: CampaignStore, name: str, done: np.ndarray) -> np.ndarray:
    """A per-candidate array; chunks that are not done (maybe being written right now) are skipped."""
    arr = store.array(name)
    column = (0,) if arr.ndim == 2 else ()  # a series' (candidate, frame) array: its first frame
    out = np.full(store.size, store.row_arrays[name][1], dtype=arr.dtype)
    n = min(store.size, arr.shape[0])  # shorter while an extension is half done
    try:
        out[:n] = arr[(slice(0, n), *column)]
    except Exception:  # a chunk torn or half-written by a running task: read the done ones only
        for c in np.flatnonzero(done):
            start, stop = store.bounds(c)
            out[start:stop] = arr[(slice(start, stop), *column)]
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
    if "frames" in r:
        fr = r["frames"]
        lines.append(f"frames     {fr['done']} / {fr['total']} done ({fr['fits_done']} / {fr['fits_total']} "
                     "candidate-frame fits; the lines below count the first frame)")
    by = r["by_status"]
    failures = ", ".join(f"{k} {v}" for k, v in by.items() if k not in ("ok", "duplicate") and v)
    lines.append(f"results    ok {by['ok']}, duplicates {r['duplicates']}, failed {r['failed']}"
                 + (f" ({failures})" if failures else ""))
    if r["hosts"]:
        lines.append("hosts      " + ", ".join(f"{host} {chunks}" for host, chunks in r["hosts"].items())
                     + " (chunks fitted)")
    if r["best"] is not None:
        refined = ", ".join(f"{k} {v:.6g}" for k, v in r["best"].items() if k not in ("row", "rwp"))
        lines.append(f"best R_wp  {r['best']['rwp']:.5f} (candidate {r['best']['row']}: {refined})")
    if r["running"]:
        run = r["running"]
        lines.append(f"running    on {run['host']}, PID {run['pid']}, since {format_time(run['started'])}")
        if r["eta_s"] is not None:
            lines.append(f"rate       {r['rate_rows_per_s']:.1f} candidates/s, ETA {_duration(r['eta_s'])}")
    elif r["fits_done"] < r["fits_total"]:
        lines.append("running    no (run `motex run CAMPAIGN` again to resume)")
    rounds = r.get("rounds")
    if rounds:
        stop = f"stopped: {STOP_REASONS.get(rounds['stopped'], rounds['stopped'])}" if rounds["stopped"] else \
            "not stopped yet" + ("" if r["running"] else " (run `motex run CAMPAIGN` again to go on)")
        lines.append(f"rounds     {rounds['ranked']} ranked of {rounds['planned']} drawn, at most "
                     f"{rounds['max_candidates']} candidates; {stop}")
    if r["fits_done"] < r["fits_total"] and r["work_left_s"] is not None:
        lines.append(f"work left  {_duration(r['work_left_s'])} on one worker thread "
                     f"({1000 * r['seconds_per_row']:.2f} ms per candidate)")
    frames = r.get("frames", {})
    if r["fits_done"] == r["fits_total"] and frames.get("done") == frames.get("total") \
            and (not rounds or rounds["stopped"]):
        lines.append("complete   every candidate is done" + (" in every frame" if frames else ""))
    return "\n".join(lines)
