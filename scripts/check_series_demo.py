"""Per-frame motif recovery of a finished series demo: each frame's n lowest contributions vs its n true atoms.

Reads `frame_contributions.csv` of a run (default: results/au55_series, what
`motex run workflows/au55_series.yaml` writes) and the truth that scripts/build_series_demo.py wrote
(workflows/data/au55_series/truth.json). Prints per frame the motif size n, the overlap (share of the
n true atoms among the n lowest contributions), the number of atoms with a negative contribution
(the motif that frame_motifs.csv refines) and the gap between the highest true and the lowest other
contribution (R_wp units; > 0: the ranking separates the motif). Exit status 1 if any frame's
overlap is below --min (default 0.9).

    python scripts/check_series_demo.py [--results results/au55_series] [--truth ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from motex_dask.stability import truth_overlap

ROOT = Path(__file__).resolve().parents[1]


def frame_overlaps(table: pd.DataFrame, truth: dict[str, list[int]]) -> list[dict]:
    """One row per frame of `table` (frame_contributions.csv): n, overlap, negative, gap."""
    rows = []
    for frame, part in table.groupby("frame", sort=False):
        true = set(truth[frame])
        is_true = part["index"].isin(true)
        gap = part.loc[~is_true, "contribution"].min() - part.loc[is_true, "contribution"].max()
        rows.append({"frame": frame, "n": len(true), "overlap": truth_overlap(part["contribution"].to_numpy(), is_true.to_numpy()),
                     "negative": int((part["contribution"] < 0).sum()),
                     "gap": float(gap) if (~is_true).any() else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "au55_series")
    parser.add_argument("--truth", type=Path, default=ROOT / "workflows" / "data" / "au55_series" / "truth.json")
    parser.add_argument("--min", type=float, default=0.9, help="overlap every frame must reach")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = frame_overlaps(pd.read_csv(args.results / "frame_contributions.csv"), json.loads(args.truth.read_text()))
    for row in rows:
        gap = "" if row["gap"] is None else f"  gap {row['gap']:+.4f}"
        print(f"{row['frame']:>14}  n {row['n']:3d}  overlap {100 * row['overlap']:5.1f} %  "
              f"negative {row['negative']:3d}{gap}")
    low = [r["frame"] for r in rows if r["overlap"] < args.min]
    print(f"every frame >= {100 * args.min:.0f} %: " + ("yes" if not low else "no (" + ", ".join(low) + ")"))
    if args.json:
        print(json.dumps(rows))
    sys.exit(1 if low else 0)


if __name__ == "__main__":
    main()
