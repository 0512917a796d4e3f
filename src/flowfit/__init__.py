"""flowfit: normalizing flows that learn an invertible map from N(0, I) to your data."""

from flowfit import datasets
from flowfit._version import __version__
from flowfit.errors import CheckpointError, FlowfitError, InputError, TrainingDivergedError
from flowfit.families import CNF, FLOWS, IAF, MAF, NICE, NSF, Glow, RealNVP
from flowfit.flow import Flow
from flowfit.io import load, save
from flowfit.train import FitResult, fit
from flowfit.transforms import Transform

__all__ = [
    "CNF",
    "FLOWS",
    "IAF",
    "MAF",
    "NICE",
    "NSF",
    "CheckpointError",
    "FitResult",
    "Flow",
    "FlowfitError",
    "Glow",
    "InputError",
    "RealNVP",
    "TrainingDivergedError",
    "Transform",
    "__version__",
    "datasets",
    "fit",
    "load",
    "save",
]
