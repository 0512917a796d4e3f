"""Base distributions ``p_Z0``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class StandardNormal(nn.Module):
    """The standard normal ``N(0, I)`` on ``R^dim``.

    ``log p(z) = -dim/2 log(2 pi) - |z|^2 / 2``. It holds an empty buffer so that it moves
    with the flow's ``.to(device, dtype)`` and samples on the flow's device and dtype.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of each row of ``z``, shape ``(n,)``."""
        return -0.5 * (z.square().sum(dim=1) + self.dim * math.log(2 * math.pi))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` independent draws, shape ``(n, dim)``."""
        anchor = self._anchor
        return torch.randn(n, self.dim, generator=generator, device=anchor.device, dtype=anchor.dtype)
