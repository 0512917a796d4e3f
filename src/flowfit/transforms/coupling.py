"""Coupling transforms (Dinh et al. 2015, 2017): one part of the vector is transformed
elementwise with parameters predicted from the other part, which passes unchanged.

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


class Coupling(Transform):
    """Base class of coupling transforms; subclasses define the elementwise map ``tau``.

    The vector is cut into its first ``dim // 2`` coordinates and the rest. With
    ``swap=False`` the first part is the identity part and the rest is transformed; with
    ``swap=True`` the roles are exchanged (alternate ``swap`` between layers so that every
    coordinate gets transformed; for ``dim = 2`` these are the tutorial's flips).
    """

    #: Number of parameters ``tau`` needs per transformed coordinate.
    params_per_dim: int = 0

    def __init__(
        self,
        dim: int,
        swap: bool = False,
        hidden: Sequence[int] = (256, 256),
        context_dim: int = 0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling transform needs dim >= 2, got {dim}")
        self.dim = dim
        self.swap = swap
        self.split = dim // 2
        self.identity_dim = dim - self.split if swap else self.split
        self.transformed_dim = dim - self.identity_dim
        self.context_dim = context_dim
        self.conditioner = MLP(
            self.identity_dim + context_dim,
            self.transformed_dim * self.params_per_dim,
            hidden,
            activation,
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
        theta = self.conditioner(identity)
        return theta.view(-1, self.transformed_dim, self.params_per_dim)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        identity, transformed = self._parts(z)
        out, log_abs_det = self._elementwise(transformed, self._theta(identity, context), inverse=False)
        return self._join(identity, out), log_abs_det

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        identity, transformed = self._parts(x)
        out, log_abs_det = self._elementwise(transformed, self._theta(identity, context), inverse=True)
        return self._join(identity, out), log_abs_det

    def _elementwise(self, values: Tensor, theta: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """Apply ``tau`` (or its inverse) with parameters ``theta`` of shape ``(n, d_B, p)``.

        Returns the output and the summed log|derivative| of the map applied, shape ``(n,)``.
        """
        raise NotImplementedError


class AffineCoupling(Coupling):
    """Affine coupling (RealNVP): ``tau(z) = z * exp(s) + t`` with a bounded log-scale.

    forward:  ``x_B = z_B * exp(s) + t``,     log|det| = ``sum_j s_j``
    inverse:  ``z_B = (x_B - t) * exp(-s)``,  log|det| = ``-sum_j s_j``

    where ``(s_raw, t) = NN(z_A, context)`` and ``s = B * tanh(s_raw / B)`` keeps every
    log-scale inside ``(-B, B)`` (``B = scale_bound``). The soft bound is the identity near
    zero and prevents the exploding ``exp`` that makes unbounded RealNVP diverge.
    """

    params_per_dim = 2

    def __init__(
        self,
        dim: int,
        swap: bool = False,
        hidden: Sequence[int] = (256, 256),
        context_dim: int = 0,
        activation: str = "relu",
        scale_bound: float = 3.0,
    ) -> None:
        super().__init__(dim, swap, hidden, context_dim, activation)
        self.scale_bound = scale_bound

    def _elementwise(self, values: Tensor, theta: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        bound = self.scale_bound
        log_scale = bound * torch.tanh(theta[..., 0] / bound)
        shift = theta[..., 1]
        if inverse:
            return (values - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)
        return values * torch.exp(log_scale) + shift, log_scale.sum(dim=1)


class AdditiveCoupling(Coupling):
    """Additive coupling (NICE): ``tau(z) = z + t``; volume preserving.

    forward:  ``x_B = z_B + t``,  inverse: ``z_B = x_B - t``,  log|det| = 0 both ways.
    """

    params_per_dim = 1

    def _elementwise(self, values: Tensor, theta: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shift = theta[..., 0]
        out = values - shift if inverse else values + shift
        return out, values.new_zeros(values.shape[0])
