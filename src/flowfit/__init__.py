"""flowfit: normalizing flows that learn an invertible map from N(0, I) to your data."""

from flowfit import datasets
from flowfit._version import __version__
from flowfit.errors import CheckpointError, FlowfitError, InputError, TrainingDivergedError
from flowfit.families import FLOWS, RealNVP
from flowfit.flow import Flow
from flowfit.io import load, save
from flowfit.train import FitResult, fit

__all__ = [
    "FLOWS",
    "CheckpointError",
    "FitResult",
    "Flow",
    "FlowfitError",
    "InputError",
    "RealNVP",
    "TrainingDivergedError",
    "__version__",
    "datasets",
    "fit",
    "load",
    "save",
]
