"""The rational-quadratic spline on its own: knots, tails, edges, monotonicity, identity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowfit.transforms.splines import _bins, rational_quadratic_spline, spline_params_per_dim

BOUND = 3.0


def random_theta(shape: tuple[int, ...], bins: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, spline_params_per_dim(bins), generator=generator, dtype=torch.float64)


def elementwise_log_derivative(inputs: torch.Tensor, theta: torch.Tensor, inverse: bool) -> torch.Tensor:
    inputs = inputs.clone().requires_grad_(True)
    outputs, _ = rational_quadratic_spline(inputs, theta, BOUND, inverse)
    (gradient,) = torch.autograd.grad(outputs.sum(), inputs)
    return gradient.abs().log()


@given(bins=st.integers(1, 12), seed=st.integers(0, 2**16), scale=st.floats(0.0, 5.0))
def test_round_trip_and_derivative_everywhere(bins: int, seed: int, scale: float) -> None:
    theta = random_theta((200,), bins, seed, scale)
    inputs = torch.linspace(-2 * BOUND, 2 * BOUND, 200, dtype=torch.float64)  # tails included
    outputs, log_derivative = rational_quadratic_spline(inputs, theta, BOUND)
    back, inverse_log_derivative = rational_quadratic_spline(outputs, theta, BOUND, inverse=True)
    torch.testing.assert_close(back, inputs, atol=1e-8, rtol=0)
    torch.testing.assert_close(inverse_log_derivative, -log_derivative, atol=1e-8, rtol=0)
    torch.testing.assert_close(log_derivative, elementwise_log_derivative(inputs, theta, False), atol=1e-8, rtol=0)
    torch.testing.assert_close(
        inverse_log_derivative, elementwise_log_derivative(outputs, theta, True), atol=1e-8, rtol=0
    )


def knots(unnormalized: torch.Tensor) -> torch.Tensor:
    """The ``K + 1`` knots on ``[-B, B]`` of the bins that ``unnormalized`` gives."""
    ends = _bins(unnormalized, 1e-3)[1]
    return torch.cat((torch.tensor([-BOUND]), 2 * BOUND * ends[:-1] - BOUND, torch.tensor([BOUND]))).double()


@pytest.mark.parametrize("bins", [1, 4, 8])
def test_knots_map_to_knots_and_edges_are_exact(bins: int) -> None:
    theta = random_theta((1,), bins, seed=bins).expand(bins + 1, -1)
    x_knots, y_knots = knots(theta[0, :bins]), knots(theta[0, bins : 2 * bins])
    outputs, log_derivative = rational_quadratic_spline(x_knots, theta, BOUND)
    torch.testing.assert_close(outputs, y_knots, atol=1e-12, rtol=0)
    assert outputs[0] == -BOUND and outputs[-1] == BOUND
    back, _ = rational_quadratic_spline(y_knots, theta, BOUND, inverse=True)
    torch.testing.assert_close(back, x_knots, atol=1e-12, rtol=0)
    # the derivative at the outer knots is 1, matching the identity tails
    torch.testing.assert_close(log_derivative[[0, -1]], torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)


def test_tails_are_the_identity_and_monotone_inside() -> None:
    theta = random_theta((1000,), 8, seed=0, scale=3.0)
    inputs = torch.linspace(-10, 10, 1000, dtype=torch.float64)
    outputs, log_derivative = rational_quadratic_spline(inputs, theta, BOUND)
    outside = inputs.abs() > BOUND
    assert torch.equal(outputs[outside], inputs[outside])
    assert torch.equal(log_derivative[outside], torch.zeros(int(outside.sum()), dtype=torch.float64))
    same = random_theta((1,), 8, seed=0, scale=3.0).expand(1000, -1)
    curve, _ = rational_quadratic_spline(inputs, same, BOUND)
    assert (curve.diff() > 0).all()


def test_zero_parameters_are_the_identity() -> None:
    inputs = torch.linspace(-5, 5, 101, dtype=torch.float64)
    outputs, log_derivative = rational_quadratic_spline(inputs, torch.zeros(101, spline_params_per_dim(8)), BOUND)
    torch.testing.assert_close(outputs, inputs.to(outputs.dtype), atol=1e-6, rtol=0)
    torch.testing.assert_close(log_derivative, torch.zeros_like(log_derivative), atol=1e-6, rtol=0)


def test_gradients_are_finite_for_inputs_in_the_tails() -> None:
    theta = random_theta((50,), 8, seed=3).requires_grad_(True)
    inputs = torch.cat((torch.full((25,), 100.0), torch.full((25,), -1e6))).double().requires_grad_(True)
    outputs, log_derivative = rational_quadratic_spline(inputs, theta, BOUND)
    (outputs.sum() + log_derivative.sum()).backward()
    assert torch.isfinite(theta.grad).all() and torch.isfinite(inputs.grad).all()


@pytest.mark.parametrize("inverse", [False, True])
def test_the_spline_without_gradients_is_the_spline_with_them(inverse: bool) -> None:
    """Without gradients the bin sizes' softmax is written out (faster); with them it is
    ``torch.softmax``: the same map and log-derivative, float64."""
    theta = random_theta((300, 2), 8, seed=7)
    inputs = torch.randn(300, 2, dtype=torch.float64) * BOUND
    with torch.no_grad():
        fast = rational_quadratic_spline(inputs, theta, BOUND, inverse)
    differentiable = rational_quadratic_spline(inputs, theta.clone().requires_grad_(True), BOUND, inverse)
    for a, b in zip(fast, differentiable, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)
