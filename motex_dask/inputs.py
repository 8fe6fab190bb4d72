"""A campaign's validated inputs: settings, starting model and data, read and checked before anything
is written, and the fit problem every fit task receives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .catalogue import check_catalogue
from .data import PDFData, read_frames, read_pdf
from .errors import InputError
from .fit.recipe import Recipe
from .graph import FitProblem
from .settings import Campaign
from .structure import StartingModel, load_model


@dataclass(frozen=True)
class Inputs:
    """A validated campaign with its starting model and the data on the fit range."""

    campaign: Campaign
    model: StartingModel
    data: PDFData  # the first frame of a series
    frames: tuple[PDFData, ...] = ()  # every frame of a series, in order (empty for one PDF)


def prepare(campaign: Campaign) -> Inputs:
    """Read and check every input file before anything is written."""
    model = load_model(campaign.structure, campaign.permute, campaign.threshold, campaign.fit.radiation)
    try:  # per-element Uiso must name exactly the model's elements
        Recipe.from_settings(campaign.fit, dict.fromkeys(str(s) for s in model.symbols))
    except ValueError as err:
        raise InputError(f"{campaign.path}: field 'fit.uiso': {err}") from None
    frames = read_frames(campaign.frames, campaign.fit.rmin, campaign.fit.rmax) if campaign.is_series else ()
    data = frames[0] if frames else read_pdf(campaign.data).window(campaign.fit.rmin, campaign.fit.rmax)
    check_catalogue(campaign.catalogue, model.n_perm, str(campaign.path))
    return Inputs(campaign, model, data, frames)


def fit_problem(inputs: Inputs, fingerprint: str, plans: tuple = ()) -> FitProblem:
    """What every fit task needs: the model, the data (every frame's G for a series), the settings."""
    frames = np.array([f.g for f in inputs.frames]) if inputs.frames else None
    return FitProblem(inputs.model, inputs.data, inputs.campaign.fit, inputs.campaign.catalogue, fingerprint, plans,
                      frames=frames)
