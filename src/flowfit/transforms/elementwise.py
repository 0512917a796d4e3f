"""Elementwise monotone maps ``tau(v; theta)`` whose parameters ``theta`` a conditioner
network predicts: the inner part of coupling and autoregressive transforms.

Each map takes values of shape ``(n, d)`` and parameters of shape ``(n, d, params_per_dim)``
and returns the mapped values with log|tau'| of each value, shape ``(n, d)``, of the
direction it computed (``inverse=True`` computes ``tau^-1`` and its own log-derivative); a
coupling or autoregressive layer sums them into its log-determinant.
They hold no trainable parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowfit.config import Configurable
from flowfit.nets import positive_int, positive_number
from flowfit.transforms.splines import rational_quadratic_spline, spline_params_per_dim


class ElementwiseMap(Configurable, nn.Module):
    """Interface of the elementwise maps (no trainable parameters of their own)."""

    params_per_dim: int = 0

    def forward(self, values: Tensor, theta: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class AffineMap(ElementwiseMap):
    """``tau(v) = v * exp(s) + t`` with ``s = B tanh(s_raw / B)`` bounded in ``(-B, B)``.

    forward:  ``v * exp(s) + t``,   log|tau'| = ``s``
    inverse:  ``(v - t) * exp(-s)``, log|tau^-1'| = ``-s``

    ``theta = (s_raw, t)``; zeros give the identity. The soft bound is the identity near zero
    and keeps ``exp(s)`` from exploding, the usual cause of diverging RealNVP training.
    """

    params_per_dim = 2

    def __init__(self, scale_bound: float = 3.0) -> None:
        super().__init__()
        self.scale_bound = positive_number(scale_bound, "scale_bound")

    def forward(self, values: Tensor, theta: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        raw_log_scale, shift = theta.unbind(dim=-1)
        log_scale = self.scale_bound * torch.tanh(raw_log_scale / self.scale_bound)
        if inverse:
            return (values - shift) * torch.exp(-log_scale), -log_scale
        return values * torch.exp(log_scale) + shift, log_scale

    def extra_repr(self) -> str:
        return f"scale_bound={self.scale_bound}"


class ShiftMap(ElementwiseMap):
    """``tau(v) = v + t`` (volume preserving): log|tau'| = 0 both ways; ``theta = (t,)``."""

    params_per_dim = 1

    def forward(self, values: Tensor, theta: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        shift = theta[..., 0]
        return (values - shift if inverse else values + shift), torch.zeros_like(values)


class SplineMap(ElementwiseMap):
    """Monotone rational-quadratic spline on ``[-B, B]`` with ``bins`` bins, identity
    outside (linear tails); see :func:`~flowfit.transforms.splines.rational_quadratic_spline`.
    ``theta`` holds ``bins`` widths, ``bins`` heights and ``bins - 1`` inner derivatives,
    unnormalised; zeros give the identity."""

    def __init__(self, bins: int = 8, tail_bound: float = 4.0) -> None:
        super().__init__()
        self.bins = positive_int(bins, "bins", 1000)
        self.tail_bound = positive_number(tail_bound, "tail_bound")
        self.params_per_dim = spline_params_per_dim(bins)

    def forward(self, values: Tensor, theta: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        return rational_quadratic_spline(values, theta, self.tail_bound, inverse)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, tail_bound={self.tail_bound}"
