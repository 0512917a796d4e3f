"""Bijections with tractable log-determinants, one module per family."""

from flowfit.transforms.base import Compose, Transform
from flowfit.transforms.coupling import AdditiveCoupling, AffineCoupling, Coupling
from flowfit.transforms.linear import Permutation, RandomPermutation, Reverse
from flowfit.transforms.preprocessing import Standardize

__all__ = [
    "AdditiveCoupling",
    "AffineCoupling",
    "Compose",
    "Coupling",
    "Permutation",
    "RandomPermutation",
    "Reverse",
    "Standardize",
    "Transform",
]
