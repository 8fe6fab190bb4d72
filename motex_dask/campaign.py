"""The Python API: run a whole campaign (steps 1–4), or steps 3–4 alone on a store.

    from motex_dask.campaign import run_campaign
    summary = run_campaign("workflows/c60.yaml")
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from distributed import Client

from . import adaptive, stability
from .cluster import load_profile, open_client
from .campaign_file import load_campaign, parse_campaign
from .settings import Campaign
from .errors import InputError, Interrupted
from .graph import pending_tasks, run_fits
from .inputs import Inputs, fit_problem, prepare
from .proposal import RoundPlan
from .store import CampaignStore
from .store.layout import combine, fingerprint_parts

log = logging.getLogger("motex_dask")


def run_campaign(path: str | Path, cluster: str | None = None, fits_only: bool = False,
                 progress: bool = True, client: Client | None = None) -> dict[str, Any]:
    """Run (or resume, or extend) a campaign; returns the summary written to summary.json.

    ``client``: a cluster already running (one batch allocation) for both stages, instead of the
    clusters the profile starts for each.
    """
    inputs = prepare(load_campaign(path))
    campaign = inputs.campaign
    profile = load_profile(cluster or campaign.cluster, base_dir=campaign.path.parent)
    t0 = time.perf_counter()
    with _resumable(campaign.store_path), \
            CampaignStore.open_for_run(campaign.store_path, campaign, inputs.model, inputs.data,
                                       inputs.frames) as store:
        summary: dict[str, Any] = {"store_seconds": time.perf_counter() - t0}
        if campaign.catalogue.strategy == "adaptive" and not fits_only:
            rounds = adaptive.run_rounds(inputs, profile, store, progress=progress, client=client)
            summary["fits"] = rounds["fits"]
            return _learn_and_report(inputs, store, profile, summary, client, rounds["learned"])
        plans = tuple(RoundPlan.from_dict(r["plan"]) for r in store.rounds)  # --fits-only: the planned rounds
        problem = fit_problem(inputs, store.fingerprint, plans)
        if pending_tasks(store):
            with _stage_client(profile, "fit", client) as fit_client:
                summary["fits"] = run_fits(fit_client, store, problem, progress=progress)
                summary["peak_worker_mb"] = {"fit": worker_peak_mb(fit_client)}
        else:  # a finished campaign: no cluster to start for the fit stage
            summary["fits"] = run_fits(None, store, problem, progress=progress)
    if fits_only:
        return summary
    with _resumable(campaign.store_path):
        return _learn_and_report(inputs, store, profile, summary, client)


@contextmanager
def _resumable(store_url: str) -> Iterator[None]:
    """Ctrl-C inside: say that the finished chunks are kept and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"every finished chunk is saved in {store_url}; run the same command again "
                          "to resume") from None


def _stage_client(profile: Any, stage: str, client: Client | None) -> AbstractContextManager[Client]:
    """The given client (left open), or a cluster of the profile for this stage."""
    return nullcontext(client) if client is not None else open_client(profile, stage=stage)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker_peak_mb(client: Any) -> dict[str, float]:
    """Peak resident memory (MB) of every worker process so far, by worker address."""
    return client.run(_peak_rss_mb)


def _input_of(store: CampaignStore, key: str) -> str:
    """A campaign input of a store: where the campaign had it, or, for a store moved with its campaign
    folder (from a cluster to a laptop), at the same place relative to the store."""
    recorded = Path(store.settings[key])
    if recorded.is_file() or not store.moved or "://" in store.url:
        return str(recorded)
    moved = Path(store.url).resolve().parent / os.path.relpath(recorded, Path(store.settings["store"]).parent)
    return str(moved.resolve()) if moved.is_file() else str(recorded)


def campaign_of_store(store: CampaignStore) -> Campaign:
    """The campaign a store was written by (its settings are kept in the store's attributes), for
    the store where it is now: its URL, its inputs and where its outputs go (`default_output`)."""
    settings = {k: v for k, v in store.settings.items() if k != "campaign_file"}
    url = store.url if "://" in store.url else str(Path(store.url).resolve())
    settings.update(store=url, output=str(store.default_output),
                    structure=_input_of(store, "structure"), data=_input_of(store, "data"))
    campaign_file = store.settings.get("campaign_file")
    source = Path(campaign_file) if campaign_file and not store.moved else Path(f"{url} (stored settings)")
    return parse_campaign(settings, source)


def explain_store(store: CampaignStore, output_dir: str | Path | None = None,
                  cluster: str | None = None) -> dict[str, Any]:
    """Steps 3–4 alone on a finished or partial store: learn, explain, write the outputs (into
    `output_dir`, by default the store's `default_output`)."""
    campaign = campaign_of_store(store)
    if output_dir is not None:
        campaign = replace(campaign, output=Path(output_dir).resolve())
    inputs = prepare(campaign)
    if combine(fingerprint_parts(campaign, inputs.model, inputs.data)) != store.fingerprint:
        raise InputError(f"{store.url}: the structure or data file found for it ({campaign.structure}, "
                         f"{campaign.data}) differs from those its fits used; put the campaign's own "
                         "files at those paths")
    base = campaign.path.parent if campaign.path else Path.cwd()
    profile = load_profile(cluster or campaign.cluster, base_dir=base)
    return _learn_and_report(inputs, store, profile, {})


def stability_store(store: CampaignStore, steps: int = 5, output: str | Path | None = None,
                    cluster: str | None = None) -> dict[str, Any]:
    """The ranking-stability report of a store: an adaptive store's round ledger, or (any other
    store) learning and explaining again on `steps` growing prefixes of its rows. `output`: a PNG."""
    campaign = campaign_of_store(store)
    rule = adaptive.stopping_rule(campaign)
    if store.rounds:
        rows = stability.report([stability.Ranking.from_dict(r["ranking"]) for r in store.rounds
                                 if "ranking" in r], rule)
        source = "round ledger"
    else:
        if steps < 2:
            raise InputError(f"--steps {steps}: compare at least 2 prefixes of the store (e.g. --steps 5)")
        base = campaign.path.parent if campaign.path else Path.cwd()
        with open_client(load_profile(cluster or campaign.cluster, base_dir=base), stage="learn") as client:
            rows = adaptive.prefix_stability(client, campaign, store, steps, rule)
        source = f"{steps} growing prefixes"
    if output is not None:
        stability.plot(Path(output), rows, rule)
    return {"store": store.url, "source": source, "rule": {"tolerance": rule.tolerance, "min_tau": rule.min_tau,
                                                           "patience": rule.patience},
            "stable": stability.decision(rows, replace(rule, max_fits=0)) == "stable", "rows": rows}


def _learn_and_report(inputs: Inputs, store: CampaignStore, profile: Any, summary: dict[str, Any],
                      client: Client | None = None,
                      learned: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """Learn, explain (unless `learned`, the last adaptive round's, is given) and write the outputs."""
    from . import explain, learn, report, shapes  # xgboost/shap/matplotlib: only loaded when learning runs

    campaign = inputs.campaign
    # a series: one model per frame, each explained as a one-PDF campaign would be (see README)
    frames: list[int | None] = list(range(len(inputs.frames))) or [None]
    per_frame = []
    if learned is None:
        timings = {"train_seconds": 0.0, "explain_seconds": 0.0}
        with _stage_client(profile, "learn", client) as learn_client:
            searched = None  # the first frame's hyper-parameter search serves every frame
            for frame in frames:
                t0 = time.perf_counter()
                features = learn.load_features(store, frame=frame)
                if features.n_ok < 50:
                    which = "" if frame is None else f" in frame {Path(inputs.frames[frame].path).name}"
                    raise InputError(f"{store.url}: only {features.n_ok} successful fits{which}; "
                                     "learning needs at least 50 (raise catalogue.size or run the fits first)")
                trained = learn.train(learn_client, features, campaign.learn, searched=searched)
                searched = trained.best_params
                timings["train_seconds"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                contributions = explain.explain(learn_client, adaptive.explained_features(features, store, campaign),
                                                trained, campaign.learn)
                per_frame.append(contributions)
                timings["explain_seconds"] += time.perf_counter() - t0
            shape_report = shapes.explain_shapes(store, campaign.learn)  # None without shape candidates
            peaks = {**summary.get("peak_worker_mb", {}), "learn": worker_peak_mb(learn_client)}
        summary = {**summary, **timings, "peak_worker_mb": peaks}
    else:
        _, trained, contributions = learned
        shape_report = shapes.explain_shapes(store, campaign.learn)
    t0 = time.perf_counter()
    rounds = store.rounds
    ledger = None
    if rounds and all("ranking" in r for r in rounds):
        rule = adaptive.stopping_rule(campaign)
        ledger = {"rows": stability.report([stability.Ranking.from_dict(r["ranking"]) for r in rounds], rule),
                     "rule": rule, "stopped": store.attrs.get("stopped"),
                     "explain": campaign.catalogue.adaptive.explain}
    # a series: the last frame's model gives the usual files
    data = inputs.frames[-1] if inputs.frames else inputs.data
    outputs = report.write_outputs(campaign.output, inputs.model, data, campaign, contributions,
                                   trained, store, run=summary, shapes=shape_report, stability=ledger,
                                   frame=frames[-1])
    if inputs.frames:
        from .series_report import write_series_outputs

        outputs.update(write_series_outputs(campaign.output, inputs.model, inputs.frames, campaign, per_frame, store))
    summary = {**summary, "report_seconds": time.perf_counter() - t0,
               "outputs": {k: str(v) for k, v in outputs.items()}}
    log.info("outputs in %s", campaign.output)
    log.debug("%s", json.dumps(summary, default=str))
    return summary
