"""Base distributions ``p_Z0``: where a flow starts.

Each is a module (so it moves with the flow's ``.to(device, dtype)`` and its parameters
train with the flow) with ``log_prob(z)`` of shape ``(n,)`` and ``sample(n)`` of shape
``(n, dim)``. Each has independent coordinates, so ``log_prob_by_column(z)`` gives the
log-density of each coordinate, shape ``(n, dim)``, which sums to ``log_prob(z)``. Pass
one to :class:`flowfit.Flow` (or any family) as ``base=``; the default is
:class:`StandardNormal`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowfit.config import Configurable


class Base(Configurable, nn.Module):
    """Interface of the base distributions on ``R^dim``."""

    dim: int

    def __init__(self, dim: int) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        # an empty buffer: follows .to(device, dtype), so samples come out on the flow's device and dtype
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of each row of ``z``, shape ``(n,)``."""
        return self.log_prob_by_column(z).sum(dim=1)

    def log_prob_by_column(self, z: Tensor) -> Tensor:
        """Log-density of each coordinate of ``z`` (the coordinates are independent), shape
        ``(n, dim)``."""
        raise NotImplementedError

    def sample(self, n: int) -> Tensor:
        """``n`` independent draws, shape ``(n, dim)``."""
        raise NotImplementedError

    def _noise(self, n: int) -> Tensor:
        return torch.randn(n, self.dim, device=self.anchor.device, dtype=self.anchor.dtype)


class StandardNormal(Base):
    """The standard normal ``N(0, I)``: ``log p(z) = -dim/2 log(2 pi) - |z|^2 / 2``."""

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z.square().sum(dim=1) + self.dim * math.log(2 * math.pi))

    def log_prob_by_column(self, z: Tensor) -> Tensor:
        return -0.5 * (z.square() + math.log(2 * math.pi))

    def sample(self, n: int) -> Tensor:
        return self._noise(n)


class DiagonalNormal(Base):
    """``N(loc, diag(scale^2))`` with a learnt ``loc`` and ``log_scale`` per coordinate
    (starting as ``N(0, I)``):

    ``log p(z) = -sum_j [log scale_j + (z_j - loc_j)^2 / (2 scale_j^2)] - dim/2 log(2 pi)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def log_prob_by_column(self, z: Tensor) -> Tensor:
        standardized = (z - self.loc) * torch.exp(-self.log_scale)
        return -0.5 * standardized.square() - self.log_scale - 0.5 * math.log(2 * math.pi)

    def sample(self, n: int) -> Tensor:
        return self.loc + torch.exp(self.log_scale) * self._noise(n)


class StudentT(Base):
    """Independent Student-t coordinates with learnt degrees of freedom ``nu_j`` (one per
    coordinate, starting at ``df``): heavy tails that a Gaussian base can only reach
    through extreme layers (Jaini et al. 2020, https://arxiv.org/abs/1907.04481).

    ``log p(z) = sum_j [lgamma((nu_j + 1)/2) - lgamma(nu_j / 2) - log(pi nu_j)/2
    - (nu_j + 1)/2 log(1 + z_j^2 / nu_j)]``; sampled as ``eps / sqrt(g / nu)``, ``eps ~ N(0, 1)``,
    ``g ~ Chi^2(nu)``. ``nu = 1 + softplus(.)`` stays above 1, where the mean exists.
    """

    def __init__(self, dim: int, df: float = 5.0) -> None:
        super().__init__(dim)
        if not df > 1:
            raise ValueError(f"df must be > 1, got {df}")
        self.raw_df = nn.Parameter(torch.full((dim,), math.log(math.expm1(df - 1))))

    @property
    def df(self) -> Tensor:
        """The degrees of freedom ``nu``, shape ``(dim,)``."""
        return 1 + nn.functional.softplus(self.raw_df)

    def log_prob_by_column(self, z: Tensor) -> Tensor:
        nu = self.df
        log_norm = torch.lgamma((nu + 1) / 2) - torch.lgamma(nu / 2) - 0.5 * torch.log(math.pi * nu)
        return log_norm - (nu + 1) / 2 * torch.log1p(z.square() / nu)

    def sample(self, n: int) -> Tensor:
        nu = self.df.detach()
        chi2 = torch.distributions.Chi2(nu.expand(n, self.dim)).sample()
        return self._noise(n) / torch.sqrt(chi2 / nu)
