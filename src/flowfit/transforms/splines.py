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


def _knots(unnormalized: Tensor, bound: float, minimum: float) -> tuple[Tensor, Tensor]:
    """Bin sizes (each at least ``minimum`` of the range) and the knot positions, from -B to B."""
    bins = unnormalized.shape[-1]
    fractions = minimum + (1 - minimum * bins) * torch.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(fractions, dim=-1), (1, 0), value=0.0)
    knots = 2 * bound * knots - bound
    knots[..., 0], knots[..., -1] = -bound, bound
    return knots[..., 1:] - knots[..., :-1], knots


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
    widths, x_knots = _knots(theta[..., :bins], tail_bound, MIN_BIN_WIDTH)
    heights, y_knots = _knots(theta[..., bins : 2 * bins], tail_bound, MIN_BIN_HEIGHT)
    inner = MIN_DERIVATIVE + F.softplus(theta[..., 2 * bins :] + DERIVATIVE_SHIFT)
    derivatives = F.pad(inner, (1, 1), value=1.0)

    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    # Evaluate on clamped values everywhere (no NaN can arise and leak into gradients), then
    # keep the identity outside the interval.
    clamped = inputs.clamp(-tail_bound, tail_bound)
    search_knots = y_knots if inverse else x_knots
    index = torch.searchsorted(search_knots[..., 1:-1].contiguous(), clamped[..., None].contiguous(), right=True)

    def pick(values: Tensor) -> Tensor:
        return values.gather(-1, index)[..., 0]

    x_k, w, y_k, h = pick(x_knots), pick(widths), pick(y_knots), pick(heights)
    d_k, d_k1 = pick(derivatives[..., :-1]), pick(derivatives[..., 1:])
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
