"""Linear bijections: permutations (more to come: LU-decomposed linear maps, ActNorm)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowfit.transforms.base import Transform


class Permutation(Transform):
    """Reorder coordinates: ``x = z[:, perm]``; ``z = x[:, perm^-1]``; log|det| = 0."""

    def __init__(self, perm: Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError(f"not a permutation: {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z[:, self.perm], z.new_zeros(z.shape[0])

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x[:, self.inverse_perm], x.new_zeros(x.shape[0])


class Reverse(Permutation):
    """Reverse the order of the coordinates (its own inverse)."""

    def __init__(self, dim: int) -> None:
        super().__init__(torch.arange(dim - 1, -1, -1))


class RandomPermutation(Permutation):
    """A fixed random permutation, drawn once from ``seed``."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        super().__init__(torch.randperm(dim, generator=generator))
