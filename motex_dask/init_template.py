"""`motex init`: read a structure and a data file, write a commented campaign file to start from."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols
from scipy.spatial import cKDTree

from .campaign_file import load_yaml, parse_campaign, yaml_scalar
from .catalogue import check_catalogue
from .data import read_header, read_pdf
from .errors import InputError
from .settings import (DEFAULT_KEEP_PROBABILITY, EXHAUSTIVE_MAX_ATOMS, AdaptiveSettings, Campaign, CatalogueSettings,
                       FitSettings, LearnSettings, ParamSpec, to_plain)
from .structure import build_model, read_structure

#: One line per campaign key (dotted path): what it means. Used by `motex init` and the README.
FIELD_HELP: dict[str, str] = {
    "structure": "starting model: any structure file ase reads (xyz, cif, pdb, …)",
    "data": "measured PDF: columns r G [dG], after an optional PDFgetX3/xPDFsuite/PDFgui header",
    "permute": "elements whose atoms are switched on/off in the candidate motifs",
    "output": "folder for the outputs (CSV, XYZ, PNG, summary.json)",
    "threshold": "Å: an atom of another element stays while a kept permuted atom is this close",
    "store": "Zarr store of the fit results: a folder or an fsspec URL (default <output>/store.zarr)",
    "cluster": "where the work runs: local, or a cluster profile name/file (see README, Cluster use)",
    "frame_order": "a series (data: a list or a glob): natural (frame_2 before frame_10) | listed",
    "frames_per_task": "a series: frames one fit task fits against its candidates' shared pair tables",
    "catalogue.size": "number of candidate motifs to fit (duplicates are fitted once); raise it later to extend",
    "catalogue.chunk_size": "candidates per fit task: the unit of progress, resume and parallelism",
    "catalogue.seed": "random seed: the same seed gives the same catalogue everywhere",
    "catalogue.strategy": "uniform-size (ML-MotEx: a size k uniform in 1..N, then k atoms) | bernoulli | "
                          f"exhaustive (every subset; at most {EXHAUSTIVE_MAX_ATOMS} permuted atoms) | "
                          "cookie-cutter (the atoms inside a random sphere/ellipsoid) | mixed (see parts) | "
                          "adaptive (rounds guided by the model so far; stops when the ranking is stable)",
    "catalogue.keep_probability": "bernoulli: the chance that each permuted atom is kept (default 0.5); "
                                  "cookie-cutter: of each atom inside the cut (default 1, the whole cut)",
    "catalogue.radius": "Å, cookie-cutter: [min, max] of the sphere radius (of each ellipsoid semi-axis)",
    "catalogue.shape": "cookie-cutter: sphere | ellipsoid (randomly oriented)",
    "catalogue.centre": "cookie-cutter: atoms (near a random permuted atom) | bounding-sphere (anywhere around them)",
    "catalogue.parts": "strategy mixed: a list of {strategy, share, keep_probability, radius, shape, centre}; "
                       "shares add to 1",
    "catalogue.adaptive.first": "adaptive only: uniform-size | bernoulli | cookie-cutter | mixed, the strategy "
                                "of round 0 and of blind rows (its keys above apply to it)",
    "catalogue.adaptive.round_size": "adaptive only: candidates per round (a multiple of chunk_size)",
    "catalogue.adaptive.blind_share": "adaptive only: share of each later round drawn blind (by `first`)",
    "catalogue.adaptive.mutation_share": "adaptive only: share of each later round mutated from the best candidates",
    "catalogue.adaptive.shape_share": "adaptive only: share of each later round cut as spheres around the best "
                                      "candidates (compact motifs in large models)",
    "catalogue.adaptive.mutate": "adaptive only: anywhere | boundary: which atoms a mutation flips (boundary: "
                                 "keeps a compact candidate compact)",
    "catalogue.adaptive.combine": "adaptive only: mean | product: how motif probability and elite frequency "
                                  "make an atom's keep probability (product: large models)",
    "catalogue.adaptive.elite": "adaptive only: how many lowest-R_wp candidates guide (and are mutated in) a round",
    "catalogue.adaptive.tolerance": "adaptive only: stable when at most tolerance·N atoms crossed the motif boundary",
    "catalogue.adaptive.min_tau": "adaptive only: ... and Kendall tau to the previous round's ranking is at least this",
    "catalogue.adaptive.patience": "adaptive only: stable comparisons in a row that stop the campaign",
    "catalogue.adaptive.max_fits": "adaptive only: stop after this many fits even if not stable; 0: catalogue.size decides",
    "catalogue.adaptive.boundary": "adaptive only: sign | best: the motif side is the negative contributions, or "
                                   "the best candidate's size in lowest contributions (large models)",
    "catalogue.adaptive.explain": "adaptive only: all | blind: the candidates the SHAP contributions average over",
    "fit.engine": "batched (fast, the default) | srfit (diffpy.srfit, for cross-checks)",
    "fit.calculator": "srfit engine only: motex | srreal (needs diffpy.srreal)",
    "fit.rmin": "Å: start of the fit range (points with rmin <= r < rmax are fitted)",
    "fit.rmax": "Å: end of the fit range",
    "fit.qmin": "Å⁻¹: lowest Q used when the data were transformed to G(r)",
    "fit.qmax": "Å⁻¹: highest Q used when the data were transformed to G(r)",
    "fit.qdamp": "Å⁻¹: instrument resolution damping (from a fit to a calibrant such as Ni or CeO2)",
    "fit.qbroad": "Å⁻¹: instrument resolution peak broadening (from a calibrant fit)",
    "fit.radiation": "xray | neutron: selects X-ray form factors or neutron scattering lengths",
    "fit.zoom": "isotropic expansion of the model {refine, start, min, max}: refined in [min, max] or fixed at start",
    "fit.uiso": "Å²: isotropic displacement {refine, start, min, max} for every atom, or one block per element "
                "({W: {...}, O: {...}})",
    "fit.delta1": "Å: correlated-motion peak sharpening delta1/r {refine, start, min, max} (Jeong model)",
    "fit.delta2": "Å²: correlated-motion peak sharpening delta2/r² {refine, start, min, max}; metal particles need it",
    "learn.test_fraction": "share of the fits held out to test the trained model",
    "learn.validation_fraction": "share of the fits used for early stopping",
    "learn.seed": "random seed of the splits, the search and the bootstrap",
    "learn.tune": "true: search XGBoost hyper-parameters (optuna); false: use fixed, sensible ones",
    "learn.n_trials": "hyper-parameter settings tried by the search",
    "learn.cv_folds": "cross-validation folds per tried setting",
    "learn.early_stopping_rounds": "stop adding trees after this many rounds without improvement",
    "learn.max_rounds": "most boosting rounds (trees); also the search's upper bound",
    "learn.bootstrap": "Bayesian-bootstrap replicates for each atom's uncertainty (below 2: a standard error)",
    "learn.best_candidates": "number of lowest-R_wp candidate motifs listed in the outputs",
    "learn.tune_rows": "training rows (a fixed hash-sample) the hyper-parameter search cross-validates on",
    "learn.explain_rows": "fitted candidates (a fixed hash-sample) explained with SHAP; 0: all of them",
}


#: Permuted atoms up to which `motex init` proposes the exhaustive catalogue (2**14 - 1 fits).
_INIT_EXHAUSTIVE_ATOMS = 14
#: The first coordination shell of the permuted element ends, for `motex init`, at the largest
#: relative gap between its distances to other atoms that starts within this × the shortest one
#: (a shell's bonds spread by far less: W–O 1.71–2.36 Å in a polyoxometalate, then 3.56 Å).
_SHELL_SPREAD = 1.5
#: Without a next distance within this × the shortest one, the threshold is the shell's end × 1.2.
_SHELL_LOOKOUT = 2.5


def _shell_threshold(permuted: np.ndarray, others: np.ndarray, name: str) -> tuple[float, str]:
    """The ligand threshold midway between the permuted atoms' first coordination shell and the next
    distance to another atom, and a note saying which distances it saw."""
    tree = cKDTree(others)
    shortest = float(tree.query(permuted)[0].min())
    pairs = cKDTree(permuted).sparse_distance_matrix(tree, _SHELL_LOOKOUT * shortest, output_type="ndarray")
    d = np.unique(np.round(pairs["v"], 2))
    starts = np.flatnonzero(d[:-1] <= _SHELL_SPREAD * shortest)
    if d[-1] <= _SHELL_SPREAD * shortest:  # nothing within the lookout past the shell
        end = float(d[-1])
        return round(1.2 * end, 2), (f"1.2 × the end of the first {name} shell ({name}–other {shortest:.2f}–"
                                     f"{end:.2f} Å; no other distance up to {_SHELL_LOOKOUT * shortest:.2f} Å)")
    k = starts[np.argmax(d[starts + 1] / d[starts])]
    end, beyond = float(d[k]), float(d[k + 1])
    return round((end + beyond) / 2, 2), (f"midway between the first {name} shell ({name}–other {shortest:.2f}–"
                                          f"{end:.2f} Å) and the next {name}–other distance ({beyond:.2f} Å)")


def _rel(path: Path, base: Path) -> str:
    """`path` relative to `base` when it is close by (a campaign folder moves as a whole), else absolute."""
    try:
        rel = Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()
    return path.resolve().as_posix() if rel.startswith("../..") else rel


def _header_float(header: dict[str, str], key: str) -> float | None:
    try:
        value = float(header[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def write_campaign_template(structure: str | Path, data: str | Path, permute: list[str] | None,
                            output: str | Path) -> Path:
    """Write a commented campaign file for a structure and a data file; refuses to overwrite one."""
    output = Path(output)
    if output.exists() or output.is_symlink():
        raise InputError(f"{output}: already exists; pick another name with -o, or remove it first")
    structure, data = Path(structure), Path(data)
    atoms = read_structure(structure)
    pdf = read_pdf(data)
    header = read_header(data)
    symbols = atoms.get_chemical_symbols()
    elements = sorted(set(symbols), key=chemical_symbols.index)
    chosen = bool(permute)
    permute = tuple(permute) if permute else (elements[-1],)
    for element in permute:
        if element not in chemical_symbols[1:]:
            hint = f"; did you mean {element.capitalize()!r}?" if element.capitalize() in chemical_symbols else ""
            raise InputError(f"option --permute: {element!r} is not an element symbol{hint}")
    positions = atoms.get_positions()
    is_perm = np.isin(symbols, permute)
    notes = []
    if is_perm.all() or not is_perm.any():  # (no permuted atom at all: build_model says so below)
        threshold = Campaign.threshold
        notes.append("unused here: every atom is permuted")
    else:
        threshold, note = _shell_threshold(positions[is_perm], positions[~is_perm], "/".join(permute))
        notes.append(note)
    model = build_model(atoms, permute, threshold, source=str(structure))
    if not is_perm.all():
        per_atom = model.ligand_of.sum(axis=0).mean()
        orphans = int((~model.ligand_of.any(axis=1) & ~is_perm).sum())
        notes.append(f"CHECK: each permuted atom keeps {per_atom:.1f} others on average"
                     + (f"; {orphans} atoms are near no permuted atom and never kept" if orphans else ""))

    # Fit range: from just below the shortest bond, inside the data, up to 10 Å.
    all_dist, _ = cKDTree(positions).query(positions, k=2)
    r_lo = math.ceil(pdf.r[0] * 100) / 100
    rmin = max(r_lo, math.floor(0.8 * float(all_dist[:, 1].min()) * 10) / 10)
    rmax = min(FitSettings.rmax, math.floor(pdf.r[-1] * 10) / 10)
    if rmin >= rmax:
        raise InputError(f"{data}: data cover only r = {pdf.r[0]:g}–{pdf.r[-1]:g} Å; "
                         "ML-MotEx needs data up to several Å (e.g. 10 Å)")
    pdf.window(rmin, rmax)

    fit_values: dict[str, Any] = {}
    fit_notes: dict[str, str] = {}
    for key in ("qmin", "qmax", "qdamp", "qbroad"):
        value = _header_float(header, key)
        fit_values[key] = value if value is not None else getattr(FitSettings, key)
        fit_notes[key] = "; from the data file header" if value is not None else \
            "; CHECK: the default, set your measurement's value"
    # PDFgetX3/xPDFsuite "mode = xray", PDFgui "stype=X", `motex pdf` "# radiation: xray"
    mode = (header.get("radiation") or header.get("mode") or header.get("stype") or "").strip().lower()
    fit_values["radiation"] = "neutron" if mode in ("neutron", "n") else "xray"
    fit_notes["radiation"] = "; from the data file header" if mode in ("neutron", "n", "xray", "x") else \
        "; CHECK which"
    n_perm = int(is_perm.sum())
    exhaustive = n_perm <= _INIT_EXHAUSTIVE_ATOMS
    catalogue = {"size": 2**n_perm - 1 if exhaustive else CatalogueSettings.size,
                 "chunk_size": CatalogueSettings.chunk_size, "seed": CatalogueSettings.seed,
                 "strategy": "exhaustive" if exhaustive else CatalogueSettings.strategy,
                 "radius": list(CatalogueSettings.radius), "shape": CatalogueSettings.shape,
                 "centre": CatalogueSettings.centre, "adaptive": to_plain(AdaptiveSettings())}
    # Keys whose default depends on the strategy, or that only a mixed catalogue has: shown, commented out.
    commented = {"catalogue": {
        "keep_probability": yaml_scalar(DEFAULT_KEEP_PROBABILITY["bernoulli"]),
        "parts": "[{strategy: cookie-cutter, share: 0.5}, {strategy: uniform-size, share: 0.5}]"}}
    base = output.parent
    top = {"structure": _rel(structure, base), "data": _rel(data, base), "permute": list(permute),
           "threshold": threshold, "output": f"results/{structure.stem}", "cluster": "local"}
    top_notes = {"threshold": "Å; " + "; ".join(notes),
                 "permute": FIELD_HELP["permute"] + ("" if chosen else " (here: the heaviest element)")}

    lines = [
        f"# ML-MotEx campaign written by `motex init` for {structure.name} ({len(atoms)} atoms, "
        f"{atoms.get_chemical_formula()}) and {data.name} (r = {pdf.r[0]:g}–{pdf.r[-1]:g} Å).",
        "# Read the lines marked CHECK, then run:   motex run " + output.name,
        "# Every key is described in the README (Campaign file reference). Relative paths are",
        "# relative to this file's folder.",
        "",
    ]

    def entry(key: str, value: Any, note: str, indent: str = "") -> str:
        if isinstance(value, list):
            text = "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
        elif isinstance(value, ParamSpec):
            text = "{" + ", ".join(f"{k}: {yaml_scalar(v)}" for k, v in to_plain(value).items()) + "}"
        else:
            text = yaml_scalar(value)
        return f"{indent}{key}: {text}".ljust(34) + f"  # {note}"

    for key, value in top.items():
        lines.append(entry(key, value, top_notes.get(key, FIELD_HELP[key])))
    lines.append(f"# store: results/{structure.stem}/store.zarr".ljust(34) + f"  # {FIELD_HELP['store']}")
    for key in ("frame_order", "frames_per_task"):  # only with data: a list or a glob of frames
        lines.append(f"# {key}: {yaml_scalar(getattr(Campaign, key))}".ljust(34) + f"  # {FIELD_HELP[key]}")
    sections = {"catalogue": catalogue,
                "fit": {"engine": FitSettings.engine, "calculator": FitSettings.calculator, "rmin": rmin,
                        "rmax": rmax, **fit_values, "zoom": FitSettings.zoom, "uiso": FitSettings.uiso,
                        "delta1": FitSettings.delta1, "delta2": FitSettings.delta2},
                "learn": to_plain(LearnSettings())}
    for section, values in sections.items():
        lines += ["", f"{section}:"]
        for key, value in values.items():
            if isinstance(value, dict):  # a nested section (catalogue.adaptive)
                lines.append(f"  {key}:")
                lines += [entry(k, v, FIELD_HELP[f"{section}.{key}.{k}"], indent="    ") for k, v in value.items()]
                continue
            lines.append(entry(key, value, FIELD_HELP[f"{section}.{key}"] + fit_notes.get(key, ""), indent="  "))
        for key, text in commented.get(section, {}).items():
            lines.append(f"  # {key}: {text}".ljust(34) + f"  # {FIELD_HELP[f'{section}.{key}']}")
    text = "\n".join(lines) + "\n"

    # The file must load as written: check it before anything is on disk.
    campaign = parse_campaign(load_yaml(text, output), output)
    check_catalogue(campaign.catalogue, model.n_perm, str(output))
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "x", encoding="utf-8") as fh:  # "x": never overwrite, even in a race
        fh.write(text)
    return output
