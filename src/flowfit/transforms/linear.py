"""Linear bijections: permutations, an LU-decomposed invertible matrix, elementwise affine
maps and ActNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowfit.nets import full_precision
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


class LULinear(Transform):
    """An invertible linear map in LU form (Glow's invertible 1x1 convolution, for vectors).

    ``W = P L U`` with ``P`` a fixed permutation, ``L`` unit lower triangular and ``U`` upper
    triangular with diagonal ``sign * exp(log_diag)``:

    forward:  ``x = W z + b``,          log|det| = ``sum log_diag``
    inverse:  ``z = W^-1 (x - b)`` (two triangular solves),  log|det| = ``-sum log_diag``

    Starts at a random rotation drawn from ``seed`` (volume preserving), as Glow does.
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation.float())
        self.register_buffer("sign", torch.sign(diagonal).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(dim, dim), -1))
        self.lower = nn.Parameter(torch.tril(lower, -1).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_diag = nn.Parameter(diagonal.abs().log().float())
        self.bias = nn.Parameter(torch.zeros(dim))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.bias.shape[0], dtype=self.bias.dtype, device=self.bias.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_diag))
        return lower, upper

    def matrix(self) -> Tensor:
        """The matrix ``W = P L U``."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    @full_precision  # the map stays exact under mixed-precision training
    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z @ self.matrix().T + self.bias, self.log_diag.sum().expand(z.shape[0])

    @full_precision
    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        rhs = (x - self.bias) @ self.permutation  # rows of P^T (x - b)
        y = torch.linalg.solve_triangular(lower, rhs.T, upper=False, unitriangular=True)
        z = torch.linalg.solve_triangular(upper, y, upper=True).T
        return z, -self.log_diag.sum().expand(x.shape[0])


class ElementwiseAffine(Transform):
    """A learnt elementwise affine map: ``x = loc + exp(log_scale) * z``.

    forward:  log|det| = ``sum log_scale``;  inverse: ``z = (x - loc) exp(-log_scale)``,
    log|det| = ``-sum log_scale``. Starts as the identity.
    """

    triangular = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.loc + torch.exp(self.log_scale) * z, self.log_scale.sum().expand(z.shape[0])

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (x - self.loc) * torch.exp(-self.log_scale), -self.log_scale.sum().expand(x.shape[0])

    def inverse_by_column(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (x - self.loc) * torch.exp(-self.log_scale), -self.log_scale.expand_as(x)


class ActNorm(ElementwiseAffine):
    """Activation normalisation (Glow): an :class:`ElementwiseAffine` whose ``loc`` and
    ``log_scale`` are first set from data, so that the batch it sees comes out of
    :meth:`inverse` with zero mean and unit variance; then trained like any parameter."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor, context: Tensor | None = None) -> None:
        if bool(self.initialized) or x.shape[0] < 2:
            return
        self.loc.copy_(x.mean(dim=0))
        self.log_scale.copy_(torch.log(x.std(dim=0) + 1e-6))
        self.initialized.fill_(True)
