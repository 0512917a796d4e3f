"""Monotone rational-quadratic splines (Gregory & Delbourgo 1982; Durkan et al. 2019).

On ``[-B, B]`` the map is piecewise: ``K`` bins with knots ``(x_k, y_k)``, ``k = 0..K``, and
positive derivatives ``d_k`` at the knots. Inside bin ``k``, with ``w = x_(k+1) - x_k``,
``h = y_(k+1) - y_k``, ``s = h / w`` and ``xi = (x - x_k) / w`` in ``[0, 1]``,

    y = y_k + h (s xi^2 + d_k xi (1 - xi)) / (s + (d_(k+1) + d_k - 2 s) xi (1 - xi))

    dy/dx = s^2 (d_(k+1) xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2)
            / (s + (d_(k+1) + d_k - 2 s) xi (1 - xi))^2

The inverse solves a quadratic ``a xi^2 + b xi + c = 0`` for ``xi`` in closed form:

    a = h (s - d_k) + (y - y_k)(d_(k+1) + d_k - 2 s)
    b = h d_k - (y - y_k)(d_(k+1) + d_k - 2 s)
    c = -s (y - y_k),         xi = 2 c / (-b - sqrt(b^2 - 4 a c)).

Outside ``[-B, B]`` the map is the identity ("linear tails", with ``d_0 = d_K = 1`` so the
derivative is continuous), so no input is ever out of the domain.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(u + DERIVATIVE_SHIFT) + MIN_DERIVATIVE == 1 at u = 0: zero parameters are the identity
DERIVATIVE_SHIFT = math.log(math.expm1(1 - MIN_DERIVATIVE))


def spline_params_per_dim(bins: int) -> int:
    """Unnormalised parameters per dimension: widths, heights and the inner derivatives."""
    return 3 * bins - 1


def _softmax(values: Tensor) -> Tensor:
    """``softmax`` over the last dimension. Without gradients it is written out: on CPU
    ``torch.softmax`` over a few bins is slower than these four operations (NSF's log_prob
    takes 1.33x the time with it: ``benchmarks/nsf_inference.py``). With gradients
    ``torch.softmax`` stays: its single backward beats four."""
    if values.requires_grad:
        return torch.softmax(values, dim=-1)
    exponentials = torch.exp(values - values.amax(dim=-1, keepdim=True))
    return exponentials / exponentials.sum(dim=-1, keepdim=True)


def _bins(unnormalized: Tensor, minimum: float) -> tuple[Tensor, Tensor]:
    """Each bin's share of the interval (at least ``minimum``; the shares sum to 1) and the
    running sum of the shares: where each bin ends, as a fraction of the interval."""
    bins = unnormalized.shape[-1]
    shares = minimum + (1 - minimum * bins) * _softmax(unnormalized)
    return shares, torch.cumsum(shares, dim=-1)


def _bin_of(ends: Tensor, index: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """The left knot and the size of bin ``index`` (shape ``S + (1,)``) on ``[-B, B]``,
    from :func:`_bins`' ends: a bin starts exactly where the one before it ends, and the
    outer knots are exactly ``-B`` and ``B``. Only the bins asked for are computed: no
    tensor of all ``K + 1`` knots is made."""
    last = ends.shape[-1] - 1
    left = torch.where(index == 0, -bound, 2 * bound * ends.gather(-1, (index - 1).clamp_min(0)) - bound)
    right = torch.where(index == last, bound, 2 * bound * ends.gather(-1, index) - bound)
    return left[..., 0], (right - left)[..., 0]


def rational_quadratic_spline(
    inputs: Tensor, theta: Tensor, tail_bound: float, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise.

    Args:
        inputs: values of any shape ``S``.
        theta: unnormalised parameters of shape ``S + (3 K - 1,)``: ``K`` widths, ``K``
            heights, ``K - 1`` derivatives at the inner knots.
        tail_bound: ``B``; the identity outside ``[-B, B]``.
        inverse: compute the inverse map.

    Returns:
        The outputs (shape ``S``) and the log|derivative| of the map computed (shape ``S``).
    """
    bins = (theta.shape[-1] + 1) // 3
    x_ends = _bins(theta[..., :bins], MIN_BIN_WIDTH)[1]
    y_ends = _bins(theta[..., bins : 2 * bins], MIN_BIN_HEIGHT)[1]

    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    # Evaluate on clamped values everywhere (no NaN can arise and leak into gradients), then
    # keep the identity outside the interval.
    clamped = inputs.clamp(-tail_bound, tail_bound)
    # the bin of each input: how many inner knots lie at or below it
    inner_knots = 2 * tail_bound * (y_ends if inverse else x_ends)[..., :-1] - tail_bound
    index = torch.searchsorted(inner_knots.contiguous(), clamped[..., None].contiguous(), right=True)

    x_k, w = _bin_of(x_ends, index, tail_bound)
    y_k, h = _bin_of(y_ends, index, tail_bound)

    def derivative_at(knot: Tensor) -> Tensor:
        """``d`` at knot ``knot`` (0..K): 1 at the outer knots, from theta at the inner ones."""
        if bins == 1:
            return torch.ones_like(clamped)
        raw = theta[..., 2 * bins :].gather(-1, (knot - 1).clamp(0, bins - 2))[..., 0]
        inner = MIN_DERIVATIVE + F.softplus(raw + DERIVATIVE_SHIFT)
        return torch.where((knot[..., 0] == 0) | (knot[..., 0] == bins), 1.0, inner)

    d_k, d_k1 = derivative_at(index), derivative_at(index + 1)
    slope = h / w
    curvature = d_k1 + d_k - 2 * slope

    if inverse:
        dy = clamped - y_k
        a = h * (slope - d_k) + dy * curvature
        b = h * d_k - dy * curvature
        c = -slope * dy
        discriminant = (b.square() - 4 * a * c).clamp_min(0)
        xi = (2 * c / (-b - torch.sqrt(discriminant))).clamp(0, 1)
        outputs = x_k + xi * w
    else:
        xi = ((clamped - x_k) / w).clamp(0, 1)
        numerator = h * (slope * xi.square() + d_k * xi * (1 - xi))
        outputs = y_k + numerator / (slope + curvature * xi * (1 - xi))

    one_minus = 1 - xi
    denominator = slope + curvature * xi * one_minus
    derivative = slope.square() * (d_k1 * xi.square() + 2 * slope * xi * one_minus + d_k * one_minus.square())
    log_derivative = torch.log(derivative) - 2 * torch.log(denominator)
    if inverse:
        log_derivative = -log_derivative
    outputs = torch.where(inside, outputs, inputs)
    log_derivative = torch.where(inside, log_derivative, torch.zeros_like(log_derivative))
    return outputs, log_derivative
