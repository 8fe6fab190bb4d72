"""Ranking stability (Kendall τ, boundary crossings, rank intervals, stopping rule) and the
model-guided round proposal: pure functions, checked on small hand-made cases."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from motex_dask.catalogue import chunk_draw, chunk_masks
from motex_dask.proposal import (BLIND, FLOOR, MODEL, MUTATION, SHAPE, SHAPE_KEEP, RoundPlan, boundary, elite_spheres, neighbours,
                                 next_keep, plan_round)
from motex_dask.settings import AdaptiveSettings, CatalogueSettings, SettingError
from motex_dask.stability import (Ranking, StoppingRule, compare, decision, format_report, report, truth_overlap,
                                  undecided)


def ranking(contribution, fits=100, best=0.5, low=None, high=None) -> Ranking:
    c = np.asarray(contribution, dtype=float)
    rank = np.argsort(np.argsort(c)) + 1
    return Ranking(fits=fits, contribution=c, rank_low=np.asarray(low if low is not None else rank),
                   rank_high=np.asarray(high if high is not None else rank), best_rwp=best)


def test_compare_counts_kendall_tau_and_boundary_crossings():
    a = ranking([-3, -2, -1, 1, 2, 3])
    same = compare(a, a)
    assert same["tau"] == pytest.approx(1.0) and same["crossings"] == 0 and same["crossed"] == []
    b = ranking([-3, -2, 0.5, -0.5, 2, 3])  # atoms 2 and 3 swap sides of the boundary
    step = compare(a, b)
    assert step["crossings"] == 2 and step["crossed"] == [2, 3]
    assert step["tau"] == pytest.approx(13 / 15)  # one discordant pair of 15
    assert compare(a, ranking([3, 2, 1, -1, -2, -3]))["tau"] == pytest.approx(-1.0)


def test_undefined_atoms_are_left_out_of_tau_and_never_motif():
    a = ranking([-3, -2, np.nan, 1])
    assert not a.motif[2] and a.rank[2] == 4
    assert compare(a, ranking([-3, -2, 5, 1]))["tau"] == pytest.approx(1.0)
    assert json.loads(json.dumps(a.to_dict()))["contribution"][2] is None  # no NaN in the ledger
    back = Ranking.from_dict(a.to_dict())
    assert np.isnan(back.contribution[2]) and np.array_equal(back.rank, a.rank)


def test_the_best_boundary_ignores_the_sign_noise_of_atoms_far_from_the_motif():
    """boundary best: the motif side is the best candidate's size in lowest contributions, τ over the
    atoms either ranking puts among its 2k lowest; atoms near 0 that swap sign do not count."""
    a = replace(ranking([-3, -2, -1, -1e-4, 1e-4, 2e-4, 5e-4, 3, 2, 1]), best_size=3)
    b = replace(ranking([-3, -2.5, -1, 1e-4, -1e-4, -2e-4, -3e-4, 3, 2, 1]), best_size=3)
    assert compare(a, b)["crossings"] == 4  # sign: atoms 3-6 crossed
    best = compare(a, b, "best")
    assert best["crossings"] == 0 and list(np.flatnonzero(a.motif_side("best"))) == [0, 1, 2]
    # τ over atoms 0-6 (the 6 lowest of either): 0-2 keep their order, 3-6 reverse theirs
    both = [0, 1, 2, 3, 4, 5, 6]
    assert best["tau"] == pytest.approx(compare(ranking(a.contribution[both]), ranking(b.contribution[both]))["tau"])
    rows = report([a, b], StoppingRule(tolerance=0.1, min_tau=0.0, boundary="best"))
    assert rows[1]["crossings"] == 0 and rows[1]["stable"] and rows[0]["motif_size"] == 3
    assert not report([a, b], StoppingRule(tolerance=0.1, min_tau=0.0))[1]["stable"]  # sign: 4 > 1
    back = Ranking.from_dict(json.loads(json.dumps(b.to_dict())))
    assert back.best_size == 3 and np.array_equal(back.motif_side("best"), b.motif_side("best"))
    # a ledger without best_size (written before it existed): the sign decides
    old = {k: v for k, v in b.to_dict().items() if k != "best_size"}
    assert np.array_equal(Ranking.from_dict(old).motif_side("best"), b.motif)


def test_undecided_counts_rank_intervals_across_the_boundary():
    # motif = atoms 0, 1 (negative): boundary between ranks 2 and 3
    r = ranking([-2, -1, 1, 2], low=[1, 1, 2, 4], high=[1, 3, 4, 4])
    assert undecided(r) == 2  # atom 1 (1..3) and atom 2 (2..4)


def test_stopping_rule_needs_patience_stable_steps_in_a_row_or_max_fits():
    rule = StoppingRule(tolerance=0.2, min_tau=0.8, patience=2, max_fits=0)
    steady = [-3, -2, -1, 1, 2, 3]
    history = [ranking([3, -2, -1, 1, 2, -3], fits=100), ranking(steady, fits=200),
               ranking(steady, fits=300), ranking(steady, fits=400)]
    rows = report(history, rule)
    assert [r["stable"] for r in rows] == [False, False, True, True]
    assert [r["streak"] for r in rows] == [0, 0, 1, 2]
    assert decision(rows[:3], rule) is None and decision(rows, rule) == "stable"
    assert decision(rows[:2], replace(rule, max_fits=200)) == "max_fits"
    # one atom crossing is more than tolerance · N allows with tolerance 0.1 and 6 atoms
    assert not StoppingRule(tolerance=0.1).stable({"tau": 1.0, "crossings": 1}, 6)
    assert not StoppingRule(tolerance=0.5, min_tau=0.9).stable({"tau": 0.85, "crossings": 0}, 6)
    assert "stable" in format_report(rows) and len(format_report(rows).splitlines()) == 5


def test_next_keep_moves_towards_motif_probability_and_elite_frequency_and_never_to_0_or_1():
    p_motif = np.array([1.0, 0.0, 0.5, np.nan])
    elites = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=bool)
    keep = next_keep(p_motif, elites, None, smoothing=0.7, floor=FLOOR)
    assert keep == pytest.approx([1 - FLOOR, FLOOR, 0.5, 0.25])
    smoothed = next_keep(p_motif, elites, np.full(4, 0.5), smoothing=0.5, floor=FLOOR)
    assert smoothed == pytest.approx([0.75, 0.25, 0.5, 0.375])
    # product: log-odds add; an atom the model does not use (0.5, or undefined) keeps its elite frequency
    # (Laplace-smoothed: (count + 1) / (elites + 2)), so it no longer drifts towards 0.5
    product = next_keep(np.array([0.5, np.nan, 0.9, 0.1]), elites, None, smoothing=0.7, floor=FLOOR,
                        combine="product")
    assert product == pytest.approx([0.75, 0.25, 0.9, 1 / 28])  # frequencies 3/4, 1/4, 1/2, 1/4


def test_a_round_is_a_pure_function_of_settings_round_and_previous_results():
    settings = AdaptiveSettings(round_size=400, blind_share=0.25, mutation_share=0.25)
    p_motif = np.linspace(0, 1, 30)
    elites = np.random.default_rng(0).random((5, 30)) < 0.5
    a = plan_round(settings, 1, 400, 800, p_motif, elites, None)
    b = plan_round(settings, 1, 400, 800, p_motif.copy(), elites.copy(), None)
    assert a == b and RoundPlan.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert plan_round(settings, 0, 0, 400, None, elites, None) == RoundPlan(0, 0, 400)  # round 0: blind

    cat = CatalogueSettings(size=2000, chunk_size=200, seed=3, strategy="adaptive", adaptive=settings)
    plans = (RoundPlan(0, 0, 400), a)
    pos = np.zeros((30, 3))  # uniform-size is blind to positions
    drawn, rounds, origin = chunk_draw(cat, pos, 2, plans)
    masks = drawn.masks
    again = chunk_draw(cat, pos, 2, plans)
    assert all(np.array_equal(x, y) for x, y in zip((masks, rounds, origin), (again[0].masks, *again[1:])))
    assert set(rounds) == {1} and set(np.unique(origin)) == {BLIND, MODEL, MUTATION}
    assert masks.any(axis=1).all()
    # blind rows are the first strategy's rows at the same positions; round 0 is all blind
    blind = chunk_masks(replace(cat, strategy="uniform-size", size=600), pos, 2)
    assert np.array_equal(masks[origin == BLIND], blind[origin == BLIND])
    d0, r0, o0 = chunk_draw(cat, pos, 0, plans)
    assert np.array_equal(d0.masks, chunk_masks(replace(cat, strategy="uniform-size", size=400), pos, 0))
    assert (r0 == 0).all() and (o0 == BLIND).all()
    # mutations differ from their elite by at least one atom
    elite_keys = {tuple(e) for e in elites}
    assert not any(tuple(m) in elite_keys for m in masks[origin == MUTATION])


def test_compact_proposals_cut_spheres_around_the_elite_and_mutate_only_its_boundary():
    """Shape rows and boundary mutations on an fcc particle (201 atoms, a = 4.08 Å)."""
    import ase.cluster
    pos = ase.cluster.Octahedron("Au", 7, cutoff=2, latticeconstant=4.08).get_positions()
    n = len(pos)
    settings = AdaptiveSettings(round_size=400, blind_share=0.2, mutation_share=0.4, shape_share=0.3,
                                mutate="boundary", first="cookie-cutter")
    dist = np.linalg.norm(pos - pos[0], axis=1)
    elites = np.array([dist < 6.0, dist < 7.0, np.linalg.norm(pos - pos[50], axis=1) < 5.0])
    plan = plan_round(settings, 1, 400, 800, np.full(n, 0.5), elites, None, pos)
    assert plan == plan_round(settings, 1, 400, 800, np.full(n, 0.5), elites.copy(), None, pos.copy())
    assert RoundPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan  # the ledger keeps it all
    centres, radii = elite_spheres(elites, pos)
    assert np.allclose(plan.centres, centres) and np.allclose(plan.radii, radii)
    assert np.linalg.norm(centres[0] - pos[elites[0]].mean(axis=0)) < 1e-9 and 4.0 < radii[0] < 7.0
    # a ledger written before shape rows and boundary mutations reads as neither
    old = {k: v for k, v in plan.to_dict().items() if k not in ("mutate", "shape_share", "centres", "radii", "shape_keep")}
    assert RoundPlan.from_dict(old) == replace(plan, mutate="anywhere", shape_share=0.0, centres=(), radii=(),
                                               shape_keep=1.0)

    cat = CatalogueSettings(size=2000, chunk_size=200, seed=3, strategy="adaptive", adaptive=settings,
                            radius=(4.0, 7.0))
    plans = (RoundPlan(0, 0, 400), plan)
    drawn, rounds, origin = chunk_draw(cat, pos, 3, plans)
    again, _, origin_again = chunk_draw(cat, pos, 3, plans)
    assert np.array_equal(drawn.masks, again.masks) and np.array_equal(drawn.centre, again.centre)
    assert np.array_equal(origin, origin_again) and set(np.unique(origin)) == {BLIND, MODEL, MUTATION, SHAPE}
    nn = 4.08 / np.sqrt(2)
    assert plan.shape_keep == SHAPE_KEEP < 1
    kept, held = 0, 0
    for row in np.flatnonzero(origin == SHAPE):  # the kept atoms lie inside the recorded sphere, thinned
        c, r = drawn.centre[row], drawn.axes[row, 0]
        inside = np.linalg.norm(pos - c, axis=1) <= r
        assert not (drawn.masks[row] & ~inside).any() and drawn.shape[row] == 1
        kept, held = kept + drawn.masks[row].sum(), held + inside.sum()
        k = np.argmin(np.linalg.norm(centres - c, axis=1) + np.abs(radii - r))
        assert np.linalg.norm(centres[k] - c) <= nn + 1e-9 and 0.9 * radii[k] - 1e-9 <= r <= 1.1 * radii[k] + 1e-9
    assert abs(kept / held - SHAPE_KEEP) < 0.05
    edges = boundary(elites, neighbours(pos))
    assert edges.any(axis=1).all() and not (edges & elites & (dist[None, :] < 3.0)).any()  # the core is inside
    for m in drawn.masks[origin == MUTATION]:  # one elite, flipped on its boundary only, at least once
        diffs = [np.flatnonzero(m ^ e) for e in elites]
        assert any(len(d) >= 1 and edges[k, d].all() for k, d in enumerate(diffs))
    assert (drawn.shape[origin == MUTATION] == 0).all() and (drawn.shape[origin == MODEL] == 0).all()


def test_adaptive_settings_are_validated_with_the_field_and_the_fix():
    with pytest.raises(SettingError, match="multiple of chunk_size"):
        CatalogueSettings(chunk_size=300, strategy="adaptive", adaptive=AdaptiveSettings(round_size=1000))
    with pytest.raises(SettingError, match=r"\[0, 0.2\]"):
        AdaptiveSettings(blind_share=0.8, mutation_share=0.5)
    with pytest.raises(SettingError, match="uniform-size, bernoulli"):
        AdaptiveSettings(first="exhaustive")
    with pytest.raises(SettingError, match=r"mutation_share\] = \[0, 0.4\]"):
        AdaptiveSettings(blind_share=0.2, mutation_share=0.4, shape_share=0.5)
    with pytest.raises(SettingError, match="mean, product"):
        AdaptiveSettings(combine="sum")
    with pytest.raises(SettingError, match="anywhere, boundary"):
        AdaptiveSettings(mutate="near")
    with pytest.raises(SettingError, match="adaptive.first: mixed"):
        CatalogueSettings(chunk_size=200, strategy="adaptive", adaptive=AdaptiveSettings(round_size=400),
                          parts=({"strategy": "uniform-size", "share": 1.0},))


def test_truth_overlap_shares_the_slots_of_tied_atoms_instead_of_using_atom_order():
    # six atoms, truth {0, 1, 2}: atom 3 is clearly lowest, then four atoms tie at 0 (a model that
    # never used them); atom order would put truth atoms 0 and 1 in the two remaining slots
    contribution = np.array([0.0, 0.0, 0.0, -0.5, 0.0, 0.3])
    assert truth_overlap(contribution, np.array([0, 1, 2])) == pytest.approx((0 + 2 * 3 / 4) / 3)
    mask = np.array([True, True, True, False, False, False])
    assert truth_overlap(contribution, mask) == truth_overlap(contribution, np.array([0, 1, 2]))
    # no ties: the plain top-k share; NaN (undefined) counts as the highest value
    assert truth_overlap(np.array([-3.0, -2.0, np.nan, -1.0]), np.array([0, 2])) == 0.5
    assert truth_overlap(np.array([-3.0, -2.0, 1.0, 2.0]), np.array([0, 1])) == 1.0
