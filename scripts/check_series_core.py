"""Is the bare 13-atom core of the Au55 series model singled out by the fits? R_wp of it and of its rivals.

Simulates the core's X-ray PDF as the series demo would (scripts/build_series_demo.py: its model,
Q range, Uiso 0.006, 1 % noise) and fits, with the batched engine and workflows/au55_series.yaml's
fit settings: the core; every other compact 13-atom set (an outer atom and its 12 nearest atoms);
20 random 13-atom sets; the core less one atom and the core plus one atom (each choice). Then prints
the pair distances that explain why ML-MotEx's ranking still misses the core (README, "Time-resolved
series"): the distances of the core, of the edge atoms among themselves and of first-shell-edge pairs.

    python scripts/check_series_core.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from motex_dask.campaign_file import load_campaign
from motex_dask.fit import make_engine
from motex_dask.pdf import pdf_from_atoms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_series_demo import CENTRE, EDGES, NOISE, SETTINGS, SHELL, build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def distances(pos: np.ndarray, a, b) -> dict[float, int]:
    """Pair distances (rounded to 0.1 Å) between atom groups a and b, with their counts."""
    d = np.linalg.norm(pos[list(a)][:, None] - pos[list(b)][None], axis=2)
    d = d[np.triu(np.ones_like(d, dtype=bool), 1)] if list(a) == list(b) else d.ravel()
    values, counts = np.unique(np.round(d, 1), return_counts=True)
    return {float(v): int(c) for v, c in zip(values, counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    fit = load_campaign(ROOT / "workflows" / "au55_series.yaml").fit
    model = build_model()
    pos, sym = model.get_positions(), np.array(model.get_chemical_symbols())
    n, core = len(pos), np.arange(13)
    r, g = pdf_from_atoms(sym[core], pos[core], uiso=0.006, zoom=1.0, **SETTINGS)
    g = g + np.random.default_rng(1).normal(0.0, NOISE * np.abs(g).max(), size=g.shape)
    w = (r >= fit.rmin) & (r < fit.rmax)
    engine = make_engine(sym, pos, r[w], g[w], fit)

    def mask(atoms) -> np.ndarray:
        m = np.zeros(n, dtype=bool)
        m[list(atoms)] = True
        return m

    dist = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    rng = np.random.default_rng(0)
    groups = {"core": [mask(core)],
              "other compact 13": [mask(np.argsort(dist[i], kind="stable")[:13]) for i in range(13, n)],
              "random 13": [mask(rng.choice(n, 13, replace=False)) for _ in range(20)],
              "core less one atom": [mask(np.delete(core, i)) for i in range(13)],
              "core plus one atom": [mask([*core, i]) for i in range(13, n)]}
    rwp = np.asarray(engine.fit(np.array([m for ms in groups.values() for m in ms])).rwp)
    out, k = {}, 0
    for name, ms in groups.items():
        vals = rwp[k:k + len(ms)]
        k += len(ms)
        out[name] = {"n": len(ms), "rwp_min": float(vals.min()), "rwp_max": float(vals.max())}
        print(f"{name:>20} ({len(ms):2d}): R_wp {vals.min():.4f}-{vals.max():.4f}")
    core_atoms = [*CENTRE, *SHELL]
    out["distances"] = {"core": distances(pos, core_atoms, core_atoms), "edge-edge": distances(pos, EDGES, EDGES),
                        "centre-edge": distances(pos, CENTRE, EDGES), "shell-edge": distances(pos, SHELL, EDGES)}
    for name, d in out["distances"].items():
        print(f"{name:>12} pairs (Å x count): " + ", ".join(f"{v:.1f} x {c}" for v, c in d.items()))
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
