"""Run one demo campaign with uniform-size, cookie-cutter and mixed catalogues; compare motif recovery.

Every variant gets the campaign's catalogue size (equal fit counts), chunk size and seed, and its
own output folder. The cookie-cutter variant is the campaign file's catalogue as written when that
is cookie-cutter, else the keys given with ``--cookie`` (a YAML mapping such as
``"{radius: [6, 10], keep_probability: 1.0}"``); the mixed one gives half the rows to that
cookie-cutter and half to uniform-size. Recovery is measured against the truth file next to the
structure (``<name>_truth.txt``, from build_nanoparticle_demo.py):

* ``overlap``: the k atoms with the lowest contribution values against the k truth atoms (top-k);
* ``best_candidate_overlap``: |best (lowest R_wp) candidate ∩ truth| / k, and that candidate's size;
* ``best_1pct_overlap``: no ML: the k atoms with the highest ``best_fits_share`` (kept most often among
  the 1 % of fits with the lowest R_wp), against the truth (whether the fits themselves locate the motif).

    python scripts/compare_catalogues.py workflows/au_aggregate.yaml --cookie "{radius: [6, 10], keep_probability: 1.0}"
    python scripts/compare_catalogues.py workflows/auag_rod.yaml [--size N] [--out DIR] [--json]

Wall times are end to end (fits, learning, explanation, report) on whatever the machine is doing.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from motex_dask.campaign import run_campaign
from motex_dask.campaign_file import load_campaign
from motex_dask.stability import truth_overlap

VARIANTS = ("uniform-size", "cookie-cutter", "mixed")


def variant_catalogue(catalogue: dict, cookie: dict, variant: str) -> dict:
    """The campaign's catalogue section rewritten for one variant (size, chunks and seed kept)."""
    common = {k: catalogue[k] for k in ("size", "chunk_size", "seed") if k in catalogue}
    if variant == "uniform-size":
        return {**common, "strategy": "uniform-size"}
    if variant == "cookie-cutter":
        return {**common, **cookie}
    return {**common, "strategy": "mixed", "parts": [{**cookie, "share": 0.5},
                                                     {"strategy": "uniform-size", "share": 0.5}]}


def truth_of(campaign_path: Path) -> np.ndarray:
    structure = load_campaign(campaign_path).structure
    path = structure.with_name(structure.stem.removesuffix("_model") + "_truth.txt")
    return np.loadtxt(path, dtype=np.int64, comments="#", ndmin=1)


def recovery(output: Path, truth: np.ndarray) -> dict:
    """Top-k overlap of the contributions and overlap of the best candidate with the truth."""
    k = len(truth)
    table = pd.read_csv(output / "atom_contributions.csv")
    # The demos permute every atom, so permuted-atom indices are the model's atom indices.
    best = pd.read_csv(output / "best_candidates.csv").set_index("name").loc["best_candidate_01"]
    kept = np.array(str(best["kept_permuted"]).split(), dtype=np.int64)
    is_truth = table["index"].isin(truth).to_numpy()
    return {"overlap": truth_overlap(table["contribution"].to_numpy(), is_truth),
            "best_candidate_overlap": len(np.intersect1d(kept, truth)) / k,
            "best_candidate_size": int(kept.size), "best_candidate_rwp": float(best["rwp"]),
            "best_1pct_overlap": truth_overlap(-table["best_fits_share"].to_numpy(), is_truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", type=Path)
    parser.add_argument("--size", type=int, help="candidates per variant (default: the campaign's)")
    parser.add_argument("--out", type=Path, default=Path("results/compare"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--cookie", type=yaml.safe_load,
                        help="the cookie-cutter variant's keys, a YAML mapping (default: the campaign's "
                             "catalogue, which must then be cookie-cutter)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    base = yaml.safe_load(args.campaign.read_text())
    if args.cookie is not None:
        if not isinstance(args.cookie, dict):
            parser.error(f"--cookie {args.cookie!r}: give a YAML mapping, e.g. \"{{radius: [6, 10]}}\"")
        cookie = {"strategy": "cookie-cutter", **args.cookie}
    elif base["catalogue"].get("strategy") == "cookie-cutter":
        cookie = {k: v for k, v in base["catalogue"].items() if k not in ("size", "chunk_size", "seed")}
    elif {"cookie-cutter", "mixed"} & set(args.variants):
        parser.error(f"{args.campaign}: catalogue.strategy is not cookie-cutter; give the cookie-cutter "
                     "variant's keys with --cookie")
    else:
        cookie = {}  # only uniform-size runs
    truth = truth_of(args.campaign)
    folder = args.campaign.resolve().parent
    rows = []
    for variant in args.variants:
        settings = copy.deepcopy(base)
        settings["catalogue"] = variant_catalogue(base["catalogue"], cookie, variant)
        if args.size:
            settings["catalogue"]["size"] = args.size
        out = (args.out / f"{args.campaign.stem}-{variant}").resolve()
        for key in ("structure", "data"):
            settings[key] = str((folder / settings[key]).resolve())
        settings.update(output=str(out), store="")
        path = out.parent / f"{out.name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        t0 = time.perf_counter()
        summary = run_campaign(path, progress=False)
        seconds = time.perf_counter() - t0
        rows.append({"variant": variant, "candidates": settings["catalogue"]["size"],
                     "fits": summary["fits"]["fits"], **recovery(out, truth), "wall_seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    if args.json:
        print(json.dumps({"campaign": str(args.campaign), "truth_atoms": len(truth), "rows": rows}))


if __name__ == "__main__":
    main()
