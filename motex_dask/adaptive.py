"""Adaptive campaigns (``catalogue.strategy: adaptive``), and the ranking-stability report of any store.

An adaptive campaign runs in rounds. Round 0 is drawn blind (by ``catalogue.adaptive.first``);
after each round the model is trained on every fit so far and explained, the ranking is compared
with the previous round's (stability.py), and the next round is planned from the atoms' motif
probabilities and the best candidates (proposal.py), until the ranking is stable, the fit budget
is spent or ``catalogue.size`` candidates are drawn.

The store's round ledger (its ``rounds`` attribute) holds each round's plan, written before the
round is fitted, and its ranking, written together with the next round's plan. A killed run
therefore resumes inside its round (the chunks regenerate from the stored plan) and draws the same
rounds as an uninterrupted one; only a round whose ranking was not yet saved is learnt again.

Explanation: the model is trained on every fit; the SHAP contributions average over the candidates
chosen by ``catalogue.adaptive.explain``. ``all`` (default) uses every fit: the guided rows sit
around the good motifs, where the contribution of an atom is its effect on the fit of a near-motif,
which is what the ranking is for. ``blind`` restricts the average to the blind rows, so the
contributions estimate exactly what a blind catalogue's do (same distribution), at the cost of
explaining fewer rows. Importance weights are not offered: the blind density of a near-motif mask
of N atoms is about 1/(N·C(N, k)) against a guided density many orders of magnitude larger, so the
weights of guided rows are ~0 and a weighted average is the blind-only one with more variance.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client

from .cluster import open_client
from .fit import Status
from .graph import run_fits
from .inputs import Inputs, fit_problem
from .proposal import BLIND, RoundPlan, plan_round
from .settings import Campaign
from .stability import Ranking, StoppingRule, decision, report
from .store import STOP_REASONS, CampaignStore

log = logging.getLogger("motex_dask")


def stopping_rule(campaign: Campaign) -> StoppingRule:
    ad = campaign.catalogue.adaptive
    return StoppingRule(tolerance=ad.tolerance, min_tau=ad.min_tau, patience=ad.patience, max_fits=ad.max_fits,
                        boundary=ad.boundary)


@contextlib.contextmanager
def _stage_clients(profile: Any, client: Client | None = None) -> Iterator[Callable[[str], Any]]:
    """`stage -> context manager of a Client`: the given client or one local cluster for every round
    and stage, or a fresh batch cluster per stage (the fit and learn stages want different clusters)."""
    if client is not None:
        yield lambda stage: contextlib.nullcontext(client)
    elif profile.kind == "local":
        with open_client(profile, stage="fit") as client:
            yield lambda stage: contextlib.nullcontext(client)
    else:
        yield lambda stage: open_client(profile, stage=stage)


#: Stores up to this many rows are learnt as one Dask block in each round: the model is then
#: bit-reproducible (xgboost.dask's result depends on which worker holds which block), so a round
#: learnt again after a kill gives the same ranking and the same next round.
ONE_BLOCK_ROWS = 200_000


def restrict(features: Any, rows: da.Array) -> Any:
    """`features` with only the OK rows where `rows` is true counted as OK."""
    ok = features.ok & rows
    return replace(features, ok=ok, n_ok=int(ok.sum().compute()))


def explained_features(features: Any, store: CampaignStore | str, campaign: Campaign) -> Any:
    """The rows the contributions average over (adaptive campaigns with explain: blind: blind rows only)."""
    cat = campaign.catalogue
    if cat.strategy != "adaptive" or cat.adaptive.explain == "all":
        return features
    origin = da.from_zarr(CampaignStore.readonly(store).array("origin"), chunks=features.ok.chunks)
    return restrict(features, origin == BLIND)


def learn_and_explain(client: Client, campaign: Campaign, store: CampaignStore | str, k_best: int | None = None,
                      prefix: int | None = None) -> tuple[Any, Any, Any]:
    """Train on every OK fit (of the first `prefix` rows) and explain: (features, trained, contributions)."""
    from . import explain, learn  # xgboost/shap: only loaded when learning runs

    store = CampaignStore.readonly(store)
    features = learn.load_features(store, block_rows=store.size if store.size <= ONE_BLOCK_ROWS else None)
    if prefix is not None:
        features = restrict(features, features.index < prefix)
    trained = learn.train(client, features, campaign.learn, k_best=k_best)
    contributions = explain.explain(client, explained_features(features, store, campaign), trained,
                                    campaign.learn)
    return features, trained, contributions


def best_rows(store: CampaignStore, stop: int, k: int) -> np.ndarray:
    """Indices of the k lowest-R_wp OK rows among rows [0, stop), best first (ties: lower index)."""
    rwp = store.array("rwp")[:stop]
    ok = np.flatnonzero((store.array("status")[:stop] == int(Status.OK)) & np.isfinite(rwp))
    return ok[np.lexsort((ok, rwp[ok]))][:k]


def _ranking(store: CampaignStore, features: Any, trained: Any, contributions: Any) -> Ranking:
    """The ranking of one learnt state, with the best candidate's R_wp and size."""
    best = int(trained.best_candidates["index"][0])
    size = int(store.array("mask").get_orthogonal_selection(([best], slice(None))).sum())
    return Ranking.from_contributions(contributions, features.n_ok, float(trained.best_candidates["rwp"][0]), size)


def _ranking_record(ranking: Ranking, p_motif: np.ndarray) -> dict[str, Any]:
    return {**ranking.to_dict(), "p_motif": [None if not np.isfinite(p) else float(p) for p in p_motif]}


def _next_plan(store: CampaignStore, campaign: Campaign, previous: RoundPlan, record: dict[str, Any],
               positions: np.ndarray) -> RoundPlan:
    """The plan of the round after `previous`, from its stored ranking and the store's best rows."""
    cat = campaign.catalogue
    start = previous.stop
    stop = min(start + cat.adaptive.round_size, cat.size)
    elites = best_rows(store, start, cat.adaptive.elite)
    masks = store.array("mask").get_orthogonal_selection((elites, slice(None))) if len(elites) else \
        np.zeros((0, store.n_perm), dtype=bool)
    p_motif = np.array([np.nan if p is None else p for p in record["ranking"]["p_motif"]], dtype=np.float64)
    return plan_round(cat.adaptive, previous.round + 1, start, stop, p_motif, masks, previous, positions)


def run_rounds(inputs: Inputs, profile: Any, store: CampaignStore, progress: bool = True,
               client: Client | None = None) -> dict[str, Any]:
    """Fit, learn and plan round after round until the stopping rule (or the size) ends the campaign.

    Returns the fit summaries of this run, the round ledger's stability report, why it stopped, and
    the last round's (trained, contributions) when they were computed in this run (else None).
    """
    campaign = inputs.campaign
    cat = campaign.catalogue
    rule = stopping_rule(campaign)
    rounds = store.rounds
    if not rounds:
        rounds = [{"plan": plan_round(cat.adaptive, 0, 0, min(cat.adaptive.round_size, cat.size), None,
                                      np.zeros((0, store.n_perm), dtype=bool), None).to_dict()}]
        store.record_rounds(rounds)
    fits: list[dict[str, Any]] = []
    learned = None
    with _stage_clients(profile, client) as client_for:
        while True:
            plan = RoundPlan.from_dict(rounds[-1]["plan"])
            full = min(plan.start + cat.adaptive.round_size, cat.size)
            if plan.stop < full:  # a round cut short by a smaller catalogue.size: it grows, and is learnt again
                plan = replace(plan, stop=full)
                rounds[-1] = {"plan": plan.to_dict()}
                store.record_rounds(rounds)
            store.extend(plan.stop)
            plans = tuple(RoundPlan.from_dict(r["plan"]) for r in rounds)
            problem = fit_problem(inputs, store.fingerprint, plans)
            if store.incomplete_chunks():
                log.info("round %d: candidates %d-%d", plan.round, plan.start, plan.stop - 1)
                with client_for("fit") as fit_client:
                    fits.append({"round": plan.round, **run_fits(fit_client, store, problem, progress=progress)})
            if "ranking" not in rounds[-1]:
                with client_for("learn") as learn_client:
                    features, trained, contributions = learn_and_explain(learn_client, campaign, store.url,
                                                                         k_best=campaign.learn.best_candidates)
                ranking = _ranking(store, features, trained, contributions)
                rounds[-1] = {**rounds[-1], "ranking": _ranking_record(ranking, contributions.p_motif)}
                learned = (features, trained, contributions)
            else:
                learned = None
            rows = report([Ranking.from_dict(r["ranking"]) for r in rounds], rule)
            step = rows[-1]
            log.info("round %d: %d fits, best R_wp %.4f, tau %s, %s atoms crossed, %d undecided%s", plan.round,
                     step["fits"], step["best_rwp"], "-" if step["tau"] is None else f"{step['tau']:.3f}",
                     "-" if step["crossings"] is None else step["crossings"], step["undecided"],
                     ", stable" if step["stable"] else "")
            reason = decision(rows, rule) or ("size" if plan.stop >= cat.size else None)
            if reason:
                store.record_rounds(rounds, stopped=reason)
                log.info("adaptive campaign stopped after round %d: %s", plan.round, STOP_REASONS[reason])
                return {"fits": fits, "rounds": rows, "stopped": reason, "learned": learned}
            rounds.append({"plan": _next_plan(store, campaign, plan, rounds[-1],
                                                inputs.model.permuted_positions).to_dict()})
            store.record_rounds(rounds)  # this round's ranking and the next plan, in one write


def prefix_stability(client: Client, campaign: Campaign, store: CampaignStore, steps: int,
                     rule: StoppingRule) -> list[dict[str, Any]]:
    """The stability report of any store: learn and explain on `steps` growing prefixes of its rows
    (equal shares of the rows), so a blind catalogue's user sees whether it was large enough."""
    history = []
    for i in range(1, steps + 1):
        features, trained, contributions = learn_and_explain(client, campaign, store, k_best=1,
                                                             prefix=round(store.size * i / steps))
        history.append(_ranking(CampaignStore.readonly(store), features, trained, contributions))
    return report(history, rule)
