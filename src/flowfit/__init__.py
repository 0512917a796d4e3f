"""flowfit: normalizing flows that learn an invertible map from N(0, I) to your data.

The package's top level is the core: flows and families, training, saving. It imports
neither matplotlib nor typer (the pictures are :mod:`flowfit.viz`, the command line
:mod:`flowfit.cli`); ``FlowDensity`` imports scikit-learn when first asked for.
"""

from flowfit import datasets
from flowfit._version import __version__
from flowfit.distributions import DiagonalNormal, StandardNormal, StudentT
from flowfit.errors import CheckpointError, FlowfitError, FlowfitWarning, InputError, TrainingDivergedError
from flowfit.families import CNF, FAMILIES, IAF, MAF, NICE, NSF, Glow, RealNVP
from flowfit.flow import Flow
from flowfit.io import load, save
from flowfit.options import TrainOptions
from flowfit.train import FitResult, fit
from flowfit.transforms import Transform


def __getattr__(name: str):  # the estimator imports scikit-learn: load it only when asked for
    if name == "FlowDensity":
        from flowfit.estimator import FlowDensity

        return FlowDensity
    raise AttributeError(f"module 'flowfit' has no attribute {name!r}")


__all__ = [
    "CNF",
    "FAMILIES",
    "IAF",
    "MAF",
    "NICE",
    "NSF",
    "CheckpointError",
    "DiagonalNormal",
    "FitResult",
    "Flow",
    "FlowDensity",
    "FlowfitError",
    "FlowfitWarning",
    "Glow",
    "InputError",
    "RealNVP",
    "StandardNormal",
    "StudentT",
    "TrainOptions",
    "TrainingDivergedError",
    "Transform",
    "__version__",
    "datasets",
    "fit",
    "load",
    "save",
]
