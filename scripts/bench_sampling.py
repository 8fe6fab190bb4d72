"""Adaptive against blind catalogues: fits needed to reach a final atom ranking (issue 15).

A ranking is *final* when at least 95 % of the true motif's atoms are among the k atoms with the
lowest contributions (k = the motif's size) and the stopping rule calls it stable (at most
tolerance · N atoms across the motif boundary and Kendall τ to the previous round ≥ min_tau,
`patience` rounds in a row). Both catalogues run through the same round loop
(motex_dask.adaptive.run_rounds) with the same round size, learning and stopping rule; the blind
one has blind_share 1, so its rows are exactly the workflow's first-round strategy's catalogue (the
seed's uniform-size rows for C60). Rounds are run one at a time (max_fits raised by a round each
time, a stopping patience no run reaches) until the ranking is final or --max-fits is spent; the
campaign's own rule is then applied to the ledger afterwards: where it would have stopped by itself,
and whether the ranking was right there.

    python scripts/bench_sampling.py                                   # C60 demo, truth atoms 0-59
    python scripts/bench_sampling.py --json                            # last line: one JSON object
    # the large-model demo (345 atoms, a 135-atom grain), with the large-model settings of the
    # README's adaptive section; the blind catalogue is the workflow's cookie-cutter one
    python scripts/bench_sampling.py --workflow workflows/au_aggregate.yaml \
        --truth workflows/data/au_aggregate_truth.txt --first cookie-cutter --round-size 500 \
        --chunk-size 500 --boundary best --blind-share 0.2 --mutation-share 0.3 --shape-share 0.3 \
        --mutate boundary --combine product

Besides the ranking, each round reports the best candidate so far: the share of the truth it holds
and the share of it that is truth (the search and the ranking can succeed apart: on the large-model
demo the adaptive rounds find a pure subset of the truth long before the SHAP ranking names it).
--modes runs one catalogue only; --keep DIR keeps the stores (a later run with the same arguments
resumes them). Fits are counted as successful fits (duplicates and failed fits excluded), the unit
the stopping rule's max_fits uses. Timings are not the point here; the machine may be loaded by others.

Measured (README, "Adaptive campaigns and ranking stability"): C60, adaptive 7,905 and blind 7,870
fits to a final ranking with rounds of 2,000 (ratio 1.00), 3,476 and 3,939 with rounds of 500 (0.88); au_aggregate: neither reaches a final ranking within ~10,000
fits, with cookie-cutter (adaptive: 52-56 % of the grain in the lowest 135; blind: 30-40 %, chance) or
uniform-size as the blind strategy (adaptive: 0.53 -> 0.73; blind: up to 0.985, never stable), so the
<= 1/5 goal is not met. Those recoveries broke ties by atom order and overstate; recovery is now
scored with stability.truth_overlap (ties share the slots left). No per-atom ranking can be final on
au_aggregate: an oracle ranking by single-flip costs at the truth holds 0.90 (check_identifiability.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from motex_dask.adaptive import best_rows, run_rounds
from motex_dask.inputs import Inputs, prepare
from motex_dask.campaign_file import load_campaign
from motex_dask.cluster import load_profile
from motex_dask.stability import Ranking, StoppingRule, report, truth_overlap
from motex_dask.store import CampaignStore

ROOT = Path(__file__).resolve().parents[1]
RECOVERY = 0.95


def read_truth(spec: str) -> np.ndarray:
    """Model atom indices of the true motif: 'a-b' (inclusive) or a file of indices (# comments)."""
    if "-" in spec and not Path(spec).exists():
        a, b = (int(x) for x in spec.split("-"))
        return np.arange(a, b + 1)
    lines = [ln.split("#")[0].strip() for ln in Path(spec).read_text().splitlines()]
    return np.array([int(x) for ln in lines if ln for x in ln.replace(",", " ").split()])


def evaluate(store_url: str, truth_perm: np.ndarray, rule: StoppingRule) -> list[dict]:
    """Per round: fits, recovery of the truth in the lowest-k, the stability row, final or not, and
    the best candidate so far: the share of the truth it holds and the share of it that is truth."""
    store = CampaignStore.open_readonly(store_url)
    done = [r for r in store.rounds if "ranking" in r]
    history = [Ranking.from_dict(r["ranking"]) for r in done]
    rows = report(history, rule)
    for r, ranking, row in zip(done, history, rows):
        row["recovery"] = truth_overlap(ranking.contribution, truth_perm)
        row["final"] = row["recovery"] >= RECOVERY and row["streak"] >= rule.patience
        best = best_rows(store, r["plan"]["stop"], 1)[0]
        mask = store.array("mask").get_orthogonal_selection(([best], slice(None)))[0]
        row["best_holds"] = float(mask[truth_perm].mean())
        row["best_is_truth"] = float(mask[truth_perm].sum() / mask.sum())
    return rows


def run_mode(base, mode: str, args, folder: Path, truth_perm: np.ndarray, rule: StoppingRule) -> dict:
    cat = base.catalogue
    guided = {"blind_share": 1.0, "mutation_share": 0.0, "shape_share": 0.0} if mode == "blind" else \
        {k: v for k, v in (("blind_share", args.blind_share), ("mutation_share", args.mutation_share),
                           ("shape_share", args.shape_share), ("mutate", args.mutate), ("elite", args.elite),
                           ("combine", args.combine))
         if v is not None}
    ad = replace(cat.adaptive, first=args.first, round_size=args.round_size, tolerance=rule.tolerance,
                 min_tau=rule.min_tau, patience=10**6, max_fits=0, explain=args.explain,
                 boundary=rule.boundary, **guided)
    campaign = replace(base, output=folder / mode, store=str(folder / mode / "store.zarr"),
                       catalogue=replace(cat, strategy="adaptive", size=args.max_fits * 2,
                                         chunk_size=args.chunk_size, adaptive=ad))
    inputs = prepare(campaign)
    profile = load_profile("local", base_dir=ROOT)
    t0 = time.perf_counter()
    rows: list[dict] = []
    budget = args.round_size
    while True:
        step = replace(campaign, catalogue=replace(campaign.catalogue,
                                                   adaptive=replace(ad, max_fits=budget)))
        with CampaignStore.open_for_run(step.store_path, step, inputs.model, inputs.data) as store:
            run_rounds(Inputs(step, inputs.model, inputs.data), profile, store, progress=False)
        rows = evaluate(step.store_path, truth_perm, rule)
        last = rows[-1]
        tau = "-" if last["tau"] is None else f"{last['tau']:.3f}"
        print(f"{mode:>8}: round {len(rows) - 1:>2}  fits {last['fits']:>6}  recovery {last['recovery']:.3f}  "
              f"tau {tau}  crossed {last['crossings']}  best R_wp {last['best_rwp']:.4f} "
              f"(holds {last['best_holds']:.2f} of the truth, {last['best_is_truth']:.2f} of it truth)"
              f"{'  FINAL' if last['final'] else ''}", flush=True)
        if last["final"] or last["fits"] >= args.max_fits:
            break
        budget = last["fits"] + 1
    reached = next((r for r in rows if r["final"]), None)
    own = next((r for r in rows if r["streak"] >= rule.patience), None)
    return {"fits_to_final": reached["fits"] if reached else None,
            "rounds": len(rows), "fits_run": rows[-1]["fits"],
            "own_stop": None if own is None else {"fits": own["fits"], "recovery": own["recovery"]},
            "seconds": time.perf_counter() - t0,
            "settings": {k: getattr(ad, k) for k in ("first", "round_size", "blind_share", "mutation_share",
                                                     "shape_share", "mutate", "combine", "elite", "explain")},
            "ledger": [{k: r[k] for k in ("fits", "recovery", "tau", "crossings", "undecided", "best_rwp", "best_holds",
                                          "best_is_truth", "stable", "final")} for r in rows]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workflow", default=str(ROOT / "workflows" / "c60.yaml"))
    ap.add_argument("--truth", default="0-59", help="model atom indices of the true motif: a-b or a file")
    ap.add_argument("--first", default="uniform-size", help="the blind strategy (round 0 and blind rows)")
    ap.add_argument("--round-size", type=int, default=1000)
    ap.add_argument("--chunk-size", type=int, default=500)
    ap.add_argument("--max-fits", type=int, default=12000, help="give up on a catalogue after this many fits")
    ap.add_argument("--tolerance", type=float, default=None, help="default: the workflow's (or 0.05)")
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--boundary", default=None, choices=("sign", "best"), help="default: the workflow's")
    ap.add_argument("--explain", default="all", choices=("all", "blind"))
    ap.add_argument("--blind-share", type=float, default=None, help="adaptive rows: default the workflow's")
    ap.add_argument("--mutation-share", type=float, default=None)
    ap.add_argument("--shape-share", type=float, default=None, help="sphere cuts around the elite (compact motifs)")
    ap.add_argument("--mutate", default=None, choices=("anywhere", "boundary"))
    ap.add_argument("--elite", type=int, default=None)
    ap.add_argument("--combine", default=None, choices=("mean", "product"), help="keep-probability update")
    ap.add_argument("--keep", default=None, help="keep the stores in this folder (default: a temporary one)")
    ap.add_argument("--modes", nargs="+", default=["adaptive", "blind"], choices=("adaptive", "blind"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    base = load_campaign(args.workflow)
    ad = base.catalogue.adaptive
    rule = StoppingRule(tolerance=args.tolerance or ad.tolerance, min_tau=ad.min_tau,
                        patience=args.patience or ad.patience, boundary=args.boundary or ad.boundary)
    model_truth = read_truth(args.truth)
    inputs = prepare(base)
    truth_perm = np.flatnonzero(np.isin(inputs.model.permuted, model_truth))
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_sampling_") as tmp:
        for mode in args.modes:
            results[mode] = run_mode(base, mode, args, Path(args.keep or tmp), truth_perm, rule)
    a, b = (results.get(m, {}).get("fits_to_final") for m in ("adaptive", "blind"))
    out = {"workflow": str(args.workflow), "truth_atoms": len(truth_perm), "recovery_needed": RECOVERY,
           "rule": {"tolerance": rule.tolerance, "min_tau": rule.min_tau, "patience": rule.patience,
                    "boundary": rule.boundary}, "round_size": args.round_size,
           "explain": args.explain, "max_fits": args.max_fits, **results,
           "ratio_adaptive_to_blind": (a / b) if a and b else None}
    for mode, r in results.items():
        own = r["own_stop"]
        print(f"{mode:>8}: final ranking after {r['fits_to_final'] or 'not within ' + str(r['fits_run'])} fits; "
              f"own stopping rule: " + ("never fired" if own is None else
                                        f"{own['fits']} fits, recovery {own['recovery']:.3f}"))
    if out["ratio_adaptive_to_blind"] is not None:
        print(f"adaptive / blind fits: {out['ratio_adaptive_to_blind']:.3f} (goal <= 0.2)")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
