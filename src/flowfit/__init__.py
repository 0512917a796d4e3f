"""flowfit: normalizing flows that learn an invertible map from N(0, I) to your data."""

from flowfit import datasets
from flowfit._version import __version__
from flowfit.errors import CheckpointError, FlowfitError, InputError, TrainingDivergedError
from flowfit.families import CNF, FLOWS, IAF, MAF, NICE, NSF, Glow, RealNVP
from flowfit.flow import Flow
from flowfit.io import load, save
from flowfit.train import FitResult, fit
from flowfit.transforms import Transform


def __getattr__(name: str):  # the estimator imports scikit-learn: load it only when asked for
    if name == "FlowDensity":
        from flowfit.estimator import FlowDensity

        return FlowDensity
    raise AttributeError(f"module 'flowfit' has no attribute {name!r}")


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
    "FlowDensity",
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
