"""Bijections with tractable log-determinants, one module per family."""

from flowfit.transforms.autoregressive import (
    MADE,
    MaskedAffineAutoregressive,
    MaskedAutoregressive,
    MaskedSplineAutoregressive,
)
from flowfit.transforms.base import Compose, Transform
from flowfit.transforms.coupling import AdditiveCoupling, AffineCoupling, Coupling, SplineCoupling
from flowfit.transforms.elementwise import AffineMap, ElementwiseMap, ShiftMap, SplineMap
from flowfit.transforms.linear import (
    ActNorm,
    ElementwiseAffine,
    LULinear,
    Permutation,
    RandomPermutation,
    Reverse,
)
from flowfit.transforms.preprocessing import ColumnMaps, Logit, Sigmoid, Standardize

__all__ = [
    "MADE",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "AffineMap",
    "ColumnMaps",
    "Compose",
    "Coupling",
    "ElementwiseAffine",
    "ElementwiseMap",
    "LULinear",
    "Logit",
    "MaskedAffineAutoregressive",
    "MaskedAutoregressive",
    "MaskedSplineAutoregressive",
    "Permutation",
    "RandomPermutation",
    "Reverse",
    "ShiftMap",
    "Sigmoid",
    "SplineCoupling",
    "SplineMap",
    "Standardize",
    "Transform",
]
