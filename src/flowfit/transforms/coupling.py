"""Coupling transforms (Dinh et al. 2015, 2017; Durkan et al. 2019): one part of the vector
is transformed elementwise with parameters predicted from the other part, which passes
unchanged.

Split ``z = (z_A, z_B)`` where ``z_A`` is the identity part. Then

    x_A = z_A,    x_B = tau(z_B; theta),    theta = NN(z_A, context)

and because the Jacobian is block triangular, ``log|det df/dz| = sum_j log|tau'(z_Bj)|``.
The inverse needs the same single network pass: ``theta`` depends on ``x_A = z_A`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flowfit.nets import MLP
from flowfit.transforms.base import Transform
from flowfit.transforms.elementwise import AffineMap, ElementwiseMap, ShiftMap, SplineMap


class Coupling(Transform):
    """A coupling transform with elementwise map ``tau`` (an :class:`ElementwiseMap`).

    The vector is cut into its first ``split`` coordinates (default ``dim // 2``) and the
    rest. With ``swap=False`` the first part is the identity part and the rest is
    transformed; with ``swap=True`` the roles are exchanged (alternate ``swap`` between layers
    so that every coordinate gets transformed; for ``dim = 2`` these are the tutorial's flips).
    """

    def __init__(
        self,
        dim: int,
        elementwise: ElementwiseMap,
        swap: bool = False,
        hidden: Sequence[int] = (256, 256),
        context_dim: int = 0,
        activation: str = "relu",
        split: int | None = None,
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling transform needs dim >= 2, got {dim}")
        split = dim // 2 if split is None else split
        if not 1 <= split < dim:
            raise ValueError(f"a coupling's split must leave both parts non-empty (1..{dim - 1}), got {split}")
        self.dim = dim
        self.swap = swap
        self.split = split
        self.identity_dim = dim - self.split if swap else self.split
        self.transformed_dim = dim - self.identity_dim
        self.context_dim = context_dim
        self.elementwise = elementwise
        self.conditioner = MLP(
            self.identity_dim + context_dim, self.transformed_dim * elementwise.params_per_dim, hidden, activation
        )

    def _parts(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(identity part, transformed part)``."""
        first, second = z[:, : self.split], z[:, self.split :]
        return (second, first) if self.swap else (first, second)

    def _join(self, identity: Tensor, transformed: Tensor) -> Tensor:
        parts = (transformed, identity) if self.swap else (identity, transformed)
        return torch.cat(parts, dim=1)

    def _theta(self, identity: Tensor, context: Tensor | None) -> Tensor:
        if self.context_dim:
            if context is None:
                raise ValueError("this transform is conditional: pass a context")
            identity = torch.cat((identity, context), dim=1)
        return self.conditioner(identity).view(-1, self.transformed_dim, self.elementwise.params_per_dim)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        identity, transformed = self._parts(z)
        out, log_derivative = self.elementwise(transformed, self._theta(identity, context), inverse=False)
        return self._join(identity, out), log_derivative.sum(dim=1)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        identity, transformed = self._parts(x)
        out, log_derivative = self.elementwise(transformed, self._theta(identity, context), inverse=True)
        return self._join(identity, out), log_derivative.sum(dim=1)


class AffineCoupling(Coupling):
    """Affine coupling (RealNVP): ``x_B = z_B * exp(s) + t`` with ``s`` bounded in ``(-B, B)``.

    forward:  ``x_B = z_B * exp(s) + t``,     log|det| = ``sum_j s_j``
    inverse:  ``z_B = (x_B - t) * exp(-s)``,  log|det| = ``-sum_j s_j``

    with ``(s_raw, t) = NN(z_A, context)`` and ``s = B tanh(s_raw / B)``, ``B = scale_bound``.
    """

    def __init__(
        self,
        dim: int,
        swap: bool = False,
        hidden: Sequence[int] = (256, 256),
        context_dim: int = 0,
        activation: str = "relu",
        scale_bound: float = 3.0,
        split: int | None = None,
    ) -> None:
        super().__init__(dim, AffineMap(scale_bound), swap, hidden, context_dim, activation, split)


class AdditiveCoupling(Coupling):
    """Additive coupling (NICE): ``x_B = z_B + t(z_A)``; volume preserving.

    forward:  ``x_B = z_B + t``,  inverse: ``z_B = x_B - t``,  log|det| = 0 both ways.

    The shift network's last layer starts small and random, not at zero: for a shift-only map
    the zero start is a saddle point whenever the data are symmetric (the gradient is the
    conditional mean of ``z_B``, which is then zero), and training would never leave it.
    """

    def __init__(
        self,
        dim: int,
        swap: bool = False,
        hidden: Sequence[int] = (256, 256),
        context_dim: int = 0,
        activation: str = "relu",
        split: int | None = None,
    ) -> None:
        super().__init__(dim, ShiftMap(), swap, hidden, context_dim, activation, split)
        torch.nn.init.normal_(self.conditioner[-1].weight, std=1e-2)


class SplineCoupling(Coupling):
    """Rational-quadratic spline coupling (NSF, Durkan et al. 2019).

    forward:  ``x_B = RQS(z_B; theta)``,      log|det| = ``sum_j log RQS'(z_Bj)``
    inverse:  ``z_B = RQS^-1(x_B; theta)``,   log|det| = ``-sum_j log RQS'(z_Bj)``

    ``theta = NN(z_A, context)``; the spline has ``bins`` bins on ``[-B, B]`` and is the
    identity outside (``B = tail_bound``), so any input is in its domain.
    """

    def __init__(
        self,
        dim: int,
        swap: bool = False,
        hidden: Sequence[int] = (128, 128),
        context_dim: int = 0,
        activation: str = "relu",
        bins: int = 8,
        tail_bound: float = 4.0,
        split: int | None = None,
    ) -> None:
        super().__init__(dim, SplineMap(bins, tail_bound), swap, hidden, context_dim, activation, split)
