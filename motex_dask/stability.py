"""How much an atom ranking still moves as fits are added, and when it has stopped moving.

A `Ranking` is one explained state of a campaign (its contributions, ranks and bootstrap rank
intervals after a number of fits). Comparing consecutive rankings gives Kendall's τ between their
contribution values, the atoms that crossed the motif/non-motif boundary (the sign of the
contribution) and how many atoms' bootstrap rank intervals still straddle that boundary. The
stopping rule is stable when at most tolerance · N atoms crossed and τ ≥ min_tau, for `patience`
comparisons in a row. The crossings decide: the answer is the motif, and atoms that are equivalent
by symmetry (all 60 of a buckyball) keep swapping places by noise, so τ over the whole ranking
approaches 1 only slowly; it guards against a ranking that still reorders wholesale. Works on any
store: adaptive rounds or growing prefixes of a blind catalogue.

Where the motif/non-motif boundary lies (`boundary`): `sign`, the atoms with a negative
contribution, τ over every atom; or `best`, the k lowest-contribution atoms with k the size of the
best candidate so far, τ over the atoms either ranking puts among its 2k lowest. `best` is for a
compact motif in a large model: there most atoms are far from anything that fits, the model hardly
uses them, and their contributions sit near 0 with a sign and an order that are noise, so `sign`
counts hundreds of crossings and a τ that never settles while the motif itself no longer moves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import kendalltau


def truth_overlap(contribution: np.ndarray, truth: np.ndarray, k: int | None = None) -> float:
    """Share of the k lowest-contribution atoms that are true motif atoms (k: the truth's size).

    Atoms tied at the k-th value share the slots left in proportion (the expected overlap under a
    random order of the ties): a model that never uses most atoms gives them all exactly 0, and
    breaking that tie by atom order would credit whichever motif the model file lists first.
    `truth`: a boolean mask or indices into `contribution`; NaN counts as the highest value.
    """
    c = np.nan_to_num(np.asarray(contribution, dtype=np.float64), nan=np.inf)
    is_true = np.zeros(c.size, dtype=bool)
    is_true[np.asarray(truth)] = True
    k = int(is_true.sum()) if k is None else k
    kth = np.sort(c)[k - 1]
    below, tied = c < kth, c == kth
    return float((is_true[below].sum() + (k - below.sum()) * is_true[tied].sum() / tied.sum()) / k)


@dataclass(frozen=True)
class Ranking:
    """The atom ranking after `fits` successful fits (arrays in permuted-atom order)."""

    fits: int
    contribution: np.ndarray   # NaN where undefined
    rank_low: np.ndarray       # bootstrap 5th / 95th percentile of each atom's rank
    rank_high: np.ndarray
    best_rwp: float            # lowest R_wp among the fits so far
    best_size: int = 0         # permuted atoms kept by that candidate (0: not recorded)

    @classmethod
    def from_contributions(cls, contributions: Any, fits: int, best_rwp: float, best_size: int = 0) -> "Ranking":
        """From an `explain.Contributions`."""
        return cls(fits=int(fits), contribution=np.asarray(contributions.contribution, dtype=np.float64),
                   rank_low=np.asarray(contributions.rank_low, dtype=np.int64),
                   rank_high=np.asarray(contributions.rank_high, dtype=np.int64), best_rwp=float(best_rwp),
                   best_size=int(best_size))

    @property
    def motif(self) -> np.ndarray:
        """Atoms on the motif side of the boundary (negative contribution)."""
        return np.nan_to_num(self.contribution, nan=np.inf) < 0

    def motif_side(self, boundary: str = "sign") -> np.ndarray:
        """Atoms on the motif side of the boundary: `sign` (negative contribution) or `best` (the
        best_size lowest; the sign when best_size is not recorded)."""
        if boundary == "best" and self.best_size:
            return self.rank <= self.best_size
        return self.motif

    @property
    def rank(self) -> np.ndarray:
        """1 = most negative contribution (undefined atoms last, ties in atom order)."""
        order = np.argsort(np.nan_to_num(self.contribution, nan=np.inf), kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        return rank

    def lowest(self, k: int) -> np.ndarray:
        """Indices (permuted-atom order) of the k atoms with the lowest contributions."""
        return np.flatnonzero(self.rank <= k)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN written as None: JSON has no NaN)."""
        d = asdict(self)
        d["contribution"] = [None if not math.isfinite(v) else float(v) for v in self.contribution]
        d["rank_low"], d["rank_high"] = self.rank_low.tolist(), self.rank_high.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Ranking":
        return cls(fits=int(d["fits"]), best_rwp=float(d["best_rwp"]), best_size=int(d.get("best_size", 0)),
                   contribution=np.array([np.nan if v is None else v for v in d["contribution"]], dtype=np.float64),
                   rank_low=np.asarray(d["rank_low"], dtype=np.int64),
                   rank_high=np.asarray(d["rank_high"], dtype=np.int64))


def compare(previous: Ranking, current: Ranking, boundary: str = "sign") -> dict[str, Any]:
    """How far the ranking moved from `previous` to `current` (`boundary`: see the module docstring)."""
    both = np.isfinite(previous.contribution) & np.isfinite(current.contribution)
    before, after = previous.motif_side(boundary), current.motif_side(boundary)
    if boundary == "best" and previous.best_size and current.best_size:
        both &= (previous.rank <= 2 * previous.best_size) | (current.rank <= 2 * current.best_size)
    tau = kendalltau(previous.contribution[both], current.contribution[both]).statistic if both.sum() > 1 else math.nan
    crossed = np.flatnonzero(before != after)
    return {"tau": float(tau) if math.isfinite(tau) else None, "crossings": int(len(crossed)),
            "crossed": crossed.tolist()}


def undecided(ranking: Ranking, boundary: str = "sign") -> int:
    """Atoms whose bootstrap rank interval straddles the motif/non-motif boundary."""
    m = int(ranking.motif_side(boundary).sum())
    return int(np.sum((ranking.rank_low <= m) & (ranking.rank_high > m)))


@dataclass(frozen=True)
class StoppingRule:
    """Stable when crossings ≤ tolerance · N and τ ≥ min_tau, `patience` comparisons in a row."""

    tolerance: float = 0.05
    min_tau: float = 0.8
    patience: int = 2
    max_fits: int = 0  # 0: no limit
    boundary: str = "sign"  # where the motif side ends: sign | best (see the module docstring)

    def stable(self, step: dict[str, Any], n_atoms: int) -> bool:
        tau = step.get("tau")
        return (tau is not None and tau >= self.min_tau
                and step["crossings"] <= math.floor(self.tolerance * n_atoms))


def report(history: list[Ranking], rule: StoppingRule) -> list[dict[str, Any]]:
    """One row per ranking: fits, best R_wp, motif size, undecided atoms and, from the second on, τ,
    crossings, whether it was stable and how many stable comparisons in a row led to it."""
    rows: list[dict[str, Any]] = []
    streak = 0
    for i, ranking in enumerate(history):
        row: dict[str, Any] = {"fits": ranking.fits, "best_rwp": ranking.best_rwp,
                               "motif_size": int(ranking.motif_side(rule.boundary).sum()),
                               "undecided": undecided(ranking, rule.boundary),
                               "tau": None, "crossings": None, "stable": False}
        if i:
            row.update(compare(history[i - 1], ranking, rule.boundary))
            row["stable"] = rule.stable(row, len(ranking.contribution))
        streak = streak + 1 if row["stable"] else 0
        row["streak"] = streak
        rows.append(row)
    return rows


def decision(rows: list[dict[str, Any]], rule: StoppingRule) -> str | None:
    """Why to stop after the last row ("stable", "max_fits"), or None to go on."""
    if rows and rows[-1]["streak"] >= rule.patience:
        return "stable"
    if rows and rule.max_fits and rows[-1]["fits"] >= rule.max_fits:
        return "max_fits"
    return None


def format_report(rows: list[dict[str, Any]]) -> str:
    """The report as a fixed-width text table."""
    lines = [f"{'step':>4} {'fits':>8} {'best R_wp':>10} {'motif':>5} {'undecided':>9} {'tau':>6} "
             f"{'crossed':>7} {'stable':>6}"]
    for i, r in enumerate(rows):
        tau = "-" if r["tau"] is None else f"{r['tau']:.3f}"
        crossed = "-" if r["crossings"] is None else str(r["crossings"])
        lines.append(f"{i:>4} {r['fits']:>8} {r['best_rwp']:>10.4f} {r['motif_size']:>5} {r['undecided']:>9} "
                     f"{tau:>6} {crossed:>7} {'yes' if r['stable'] else 'no':>6}")
    return "\n".join(lines)


def plot(path: Any, rows: list[dict[str, Any]], rule: StoppingRule) -> Any:
    """ranking_stability.png: τ and boundary crossings against fits, and best R_wp against fits."""
    from matplotlib.figure import Figure  # no pyplot: a file only, whatever the caller's backend

    fits = [r["fits"] for r in rows]
    fig = Figure(figsize=(10, 3.8))
    ax1, ax3 = fig.subplots(1, 2)
    pts = [(r["fits"], r["tau"]) for r in rows if r["tau"] is not None]
    if pts:
        ax1.plot(*zip(*pts), "o-", color="C0", label="Kendall τ to previous")
    ax1.axhline(rule.min_tau, color="C0", ls=":", lw=1, label=f"min τ {rule.min_tau:.2f}")
    ax1.set_xlabel("fits")
    ax1.set_ylabel("Kendall τ", color="C0")
    ax1.set_ylim(min([0.0] + [t for _, t in pts]), 1.02)
    ax2 = ax1.twinx()
    cross = [(r["fits"], r["crossings"]) for r in rows if r["crossings"] is not None]
    if cross:
        ax2.plot(*zip(*cross), "s--", color="C3", label="boundary crossings")
    ax2.plot(fits, [r["undecided"] for r in rows], "^:", color="C2", label="undecided (rank interval)")
    ax2.set_ylabel("atoms")
    for r in rows:
        if r["stable"]:
            ax1.axvline(r["fits"], color="0.85", lw=4, zorder=0)
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
    ax1.set_title("ranking stability (grey: stable)")
    ax3.plot(fits, [r["best_rwp"] for r in rows], "o-", color="k")
    ax3.set_xlabel("fits")
    ax3.set_ylabel("best R$_{wp}$")
    ax3.set_title("best candidate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
