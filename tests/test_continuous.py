"""Continuous normalizing flows: divergence, round trips, trajectories, flow matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowfit
from flowfit import datasets
from flowfit.continuous import ContinuousFlow, VectorField, exact_divergence, hutchinson_divergence, ot_pairing
from flowfit.errors import InputError
from flowfit.viz import density_grid

from .helpers import check_bijection, randomize


def random_cnf(dim: int = 2, context_dim: int = 0, tolerance: float = 1e-9, seed: int = 0, **options) -> flowfit.Flow:
    flow = flowfit.CNF(dim, hidden=(16, 16), context_dim=context_dim, rtol=tolerance, atol=tolerance, **options)
    flow = flow.double()
    randomize(flow, scale=0.3, seed=seed)
    context = torch.randn(100, context_dim, dtype=torch.float64) if context_dim else None
    flow.initialize(torch.randn(100, dim, dtype=torch.float64) * 2 + 1, context)
    return flow


@pytest.mark.parametrize("fourier", [0, 8])
def test_exact_divergence_is_the_jacobian_trace(fourier: int) -> None:
    field = VectorField(3, hidden=(16, 16), fourier=fourier, fourier_scale=2.0).double()
    randomize(field)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64)
    divergence = exact_divergence(field(z, t), z, create_graph=False)
    for i in range(5):
        jacobian = torch.autograd.functional.jacobian(lambda v: field(v[None], t)[0], z[i].detach())
        torch.testing.assert_close(divergence[i], torch.trace(jacobian))


def test_hutchinson_estimate_is_unbiased() -> None:
    field = VectorField(6, hidden=(32,)).double()
    randomize(field)
    t = torch.tensor(0.5, dtype=torch.float64)
    z = torch.randn(1, 6, dtype=torch.float64).expand(4000, 6).clone().requires_grad_(True)  # one point, 4000 probes
    exact = exact_divergence(field(z, t), z, create_graph=False)[0].item()
    probes = torch.randint(0, 2, (4000, 6), generator=torch.Generator().manual_seed(0)).double() * 2 - 1
    estimates = hutchinson_divergence(field(z, t), z, probes, create_graph=False)
    mean, stderr = estimates.mean().item(), estimates.std().item() / math.sqrt(len(estimates))
    assert abs(mean - exact) < 3 * stderr


@pytest.mark.parametrize(("context_dim", "fourier"), [(0, 0), (2, 0), (0, 6), (1, 6)])
def test_round_trip_and_log_det_match_autograd(context_dim: int, fourier: int) -> None:
    flow = random_cnf(2, context_dim, fourier=fourier, fourier_scale=0.3)
    context = torch.randn(3, context_dim, dtype=torch.float64) if context_dim else None
    check_bijection(flow, torch.randn(3, 2, dtype=torch.float64), context)


def test_forward_then_backward_returns_the_start_within_tolerance() -> None:
    flow = random_cnf(3, tolerance=1e-5)
    z = torch.randn(20, 3, dtype=torch.float64)
    x, _ = flow(z)
    back, _ = flow.inverse(x)
    assert (back - z).abs().max() < 1e-3


def test_trajectory_endpoints_and_any_time() -> None:
    flow = random_cnf(tolerance=1e-9)
    z0 = torch.randn(20, 2, dtype=torch.float64)
    states = flow.trajectory(z0, t=[0.0, 0.25, 1.5 / 2, 1.0])
    assert len(states) == 4
    torch.testing.assert_close(states[0], z0)
    torch.testing.assert_close(states[-1], flow(z0)[0], atol=1e-6, rtol=0)
    # the same noise gives sample()'s points
    torch.manual_seed(3)
    samples = flow.sample(20)
    torch.manual_seed(3)
    torch.testing.assert_close(flow.trajectory(20, t=[0.0, 1.0])[-1], samples, atol=1e-6, rtol=0)
    # requested times come back in the requested order
    middle = flow.trajectory(z0, t=[0.5])[0]
    torch.testing.assert_close(flow.trajectory(z0, t=[1.0, 0.5])[1], middle)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        flow.trajectory(z0, t=[1.2])
    with pytest.raises(InputError, match="continuous-time"):
        flowfit.RealNVP(2).trajectory(3, t=[0.5])


def test_change_of_variables_steps_add_up_and_follow_the_path() -> None:
    flow = random_cnf(tolerance=1e-9)
    x = torch.randn(12, 2, dtype=torch.float64) * 2 + 1
    states, steps = flow.change_of_variables(x, t=[0.5, 0.25])
    assert len(states) == 4 and len(steps) == 3  # t = 0, 0.25, 0.5, 1
    torch.testing.assert_close(states[-1], x, atol=1e-12, rtol=0)
    log_p = flow.base.log_prob(states[0]) - sum(steps)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-6, rtol=0)
    # the states are the forward path z_t of z_0
    forward = flow.trajectory(states[0], t=[0.0, 0.25, 0.5, 1.0])
    for state, again in zip(states, forward, strict=True):
        torch.testing.assert_close(state, again, atol=1e-6, rtol=0)
    # the first step's log|det| is that of the map z_0 -> z_0.25 (central differences, one point)
    h, eye = 1e-5, torch.eye(2, dtype=torch.float64)
    moved = flow.trajectory(torch.cat([states[0][0] + h * eye, states[0][0] - h * eye]), t=[0.25])[0]
    jacobian = ((moved[:2] - moved[2:]) / (2 * h)).T
    torch.testing.assert_close(steps[0][0], torch.linalg.slogdet(jacobian)[1], atol=1e-5, rtol=0)


def test_log_prob_works_in_inference_mode() -> None:
    flow = random_cnf(tolerance=1e-7)
    x = torch.randn(10, 2, dtype=torch.float64)
    with torch.inference_mode():
        inference = flow.log_prob(x)
    torch.testing.assert_close(inference, flow.log_prob(x).detach())


@pytest.mark.parametrize("objective", ["mle", "fm"])
def test_trained_cnf_density_integrates_to_one(objective: str) -> None:
    torch.manual_seed(0)
    flow = flowfit.CNF(2, hidden=(32, 32), rtol=1e-5, atol=1e-5)
    steps = 250 if objective == "mle" else 600
    result = flowfit.fit(
        flow,
        lambda n: datasets.moons(n),
        steps=steps,
        batch_size=256,
        lr=5e-3,
        seed=0,
        val_data=datasets.moons(500, seed=1),
        val_every=steps,
        objective=objective,
        progress=False,
    )
    assert result.metric == "nll" and result.train_metric == ("fm_loss" if objective == "fm" else "nll")
    assert result.best_val_nll == pytest.approx(flowfit.train.nll(flow, datasets.moons(500, seed=1))[0], abs=1e-6)
    xs, ys, log_p = density_grid(flow, (-2.0, 3.0, -1.5, 2.0), resolution=100)
    mass = np.exp(log_p).sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(mass - 1) < 0.02
    test = datasets.moons(2000, seed=2)
    gaussian = -torch.distributions.MultivariateNormal(test.mean(0), torch.cov(test.T)).log_prob(test).mean()
    assert flowfit.train.nll(flow, test)[0] < gaussian - 0.05


def test_flow_matching_needs_a_continuous_flow() -> None:
    with pytest.raises(InputError, match="continuous"):
        flowfit.fit(flowfit.RealNVP(2, hidden=(4,)), datasets.moons(100), steps=1, objective="fm", progress=False)


def test_counts_function_evaluations() -> None:
    flow = random_cnf(tolerance=1e-5)
    layer = flow.layers[0]
    assert isinstance(layer, ContinuousFlow)
    before = layer.evaluations
    flow.sample(10)
    assert layer.evaluations > before + 5


def test_ot_pairing_is_the_optimal_permutation() -> None:
    import itertools

    generator = torch.Generator().manual_seed(0)
    y0, y1 = torch.randn(6, 2, generator=generator), torch.randn(6, 2, generator=generator) + 1

    def cost(order) -> float:
        return float((y0[list(order)] - y1).square().sum())

    pairing = ot_pairing(y0, y1)
    assert sorted(pairing.tolist()) == list(range(6))  # a permutation of the noise
    best = min(cost(p) for p in itertools.permutations(range(6)))
    assert cost(pairing.tolist()) == pytest.approx(best) and best <= cost(range(6))
    big0, big1 = torch.randn(300, 3), torch.randn(300, 3) * 2
    assert (big0[ot_pairing(big0, big1)] - big1).square().sum() <= (big0 - big1).square().sum()


def test_ot_pairing_trains_and_refuses_contexts() -> None:
    flow = flowfit.CNF(2, hidden=(16,), pairing="ot")
    result = flowfit.fit(flow, lambda n: datasets.moons(n), steps=30, batch_size=64, objective="fm", progress=False)
    assert math.isfinite(result.best_val_nll) and result.best_val_nll < result.start_val
    with pytest.raises(ValueError, match="other contexts"):
        flowfit.CNF(2, context_dim=1, pairing="ot")
    with pytest.raises(ValueError, match="pairing must be one of"):
        flowfit.CNF(2, pairing="sinkhorn")


def test_the_sampling_solver_is_separate_from_the_likelihood_one() -> None:
    cheap = random_cnf(tolerance=1e-10, sample_method="rk4", sample_steps=16)
    accurate = random_cnf(tolerance=1e-10)
    accurate.load_state_dict(cheap.state_dict())
    z0 = torch.randn(300, 2, dtype=torch.float64)
    layer = cheap.layers[0]
    before = layer.evaluations
    with torch.no_grad():
        quick = cheap.layers[0].push_forward(z0)
    assert layer.evaluations - before == 4 * 16  # rk4: four stages per step, no trace
    exact, _ = accurate.forward(z0)
    assert (quick - exact).abs().max() < 1e-3  # a smooth field: 16 steps of rk4 are close ...
    assert (quick - exact).abs().max() > 1e-12  # ... but not the same solve
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(cheap.log_prob(x), accurate.log_prob(x), rtol=0, atol=1e-10)  # likelihood: dopri5
    with torch.no_grad():  # z_t at requested times are solver nodes: t = 0.3 then t = 1 match one solve to 1
        states = cheap.trajectory(z0, t=[0.3, 1.0])
    torch.testing.assert_close(states[1], quick, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="sample_method must be"):
        flowfit.CNF(2, sample_method="dopri5")


def test_samples_skip_the_trace_and_agree_with_the_exact_map() -> None:
    flow = random_cnf(tolerance=1e-10)
    layer = flow.layers[0]
    torch.manual_seed(3)
    before = layer.evaluations
    x = flow.sample(50)
    nfe_sample = layer.evaluations - before
    torch.manual_seed(3)
    x_again, _ = flow.sample_and_log_prob(50)
    torch.testing.assert_close(x, x_again, rtol=0, atol=1e-7)  # the same points, with or without the trace
    assert nfe_sample > 0


def test_fourier_features_survive_save_and_load(tmp_path) -> None:
    flow = random_cnf(tolerance=1e-7, fourier=4, fourier_scale=3.0, pairing="ot").float()
    flowfit.save(flow, tmp_path / "m")
    again = flowfit.load(tmp_path / "m")
    x = torch.randn(7, 2)
    torch.testing.assert_close(again.log_prob(x), flow.log_prob(x))
    assert again.layers[0].pairing == "ot" and again.layers[0].field.fourier == 4


def test_path_penalties_are_the_integrals_they_name() -> None:
    flow = random_cnf(tolerance=1e-10, kinetic_penalty=0.3, jacobian_penalty=0.7)
    layer = flow.layers[0]
    x = torch.randn(20, 2, dtype=torch.float64) * 2 + 1
    z, log_abs_det, penalty = layer.regularized_inverse(x)
    z_plain, log_abs_det_plain = layer.inverse(x)
    torch.testing.assert_close(z, z_plain)
    torch.testing.assert_close(log_abs_det, log_abs_det_plain)
    # the same integrals by the trapezoid rule on a fine grid of the path
    times = torch.linspace(1, 0, 801, dtype=torch.float64)
    with torch.no_grad():
        ys = layer._integrate(layer.standardize.inverse(x)[0], times, None)[0]
    kinetic, frobenius = [], []
    for t, y in zip(times, ys, strict=True):
        field = lambda point, t=t: layer.field(point[None], t)[0]  # noqa: E731
        kinetic.append(torch.stack([field(point).square().sum() for point in y]))
        frobenius.append(torch.stack([torch.autograd.functional.jacobian(field, point).square().sum() for point in y]))
    step = 1 / 800
    integral = lambda values: step * (sum(values) - (values[0] + values[-1]) / 2)  # noqa: E731
    expected = 0.3 * integral(kinetic).mean() + 0.7 * integral(frobenius).mean()
    torch.testing.assert_close(penalty, expected, rtol=1e-5, atol=0)
    loss = flow.loss(x)  # maximum likelihood with the penalty added
    torch.testing.assert_close(loss, -flow.log_prob(x).mean() + penalty)
    loss.backward()  # and differentiable
    assert all(p.grad is not None for p in layer.field.parameters())


def test_the_training_tolerance_applies_only_while_training() -> None:
    loose = random_cnf(tolerance=1e-10, train_tolerance=1e-2)
    exact = random_cnf(tolerance=1e-10)
    exact.load_state_dict(loose.state_dict())
    x = torch.randn(50, 2, dtype=torch.float64)
    layer = loose.layers[0]
    loose.train()
    before = layer.evaluations
    cheap_loss = loose.loss(x)
    cheap = layer.evaluations - before
    exact.train()
    before = exact.layers[0].evaluations
    accurate_loss = exact.loss(x)
    assert cheap < exact.layers[0].evaluations - before  # fewer steps while training ...
    assert abs((cheap_loss - accurate_loss).item()) < 1e-2  # ... to about the tolerance asked for
    loose.eval()
    torch.testing.assert_close(loose.log_prob(x), exact.log_prob(x))  # evaluation keeps rtol, atol
    with pytest.raises(ValueError, match="train_tolerance"):
        flowfit.CNF(2, train_tolerance=0.0)


@pytest.mark.parametrize("fourier", [0, 8])
def test_under_mixed_precision_the_field_keeps_its_features_exact(fourier: int) -> None:
    # the trainer's bfloat16 autocast rounds the layers' products, not the Fourier angles
    # (tens of radians) nor the velocity handed back to the flow-matching loss
    torch.manual_seed(0)
    field = VectorField(2, hidden=(32, 32), context_dim=1, fourier=fourier, fourier_scale=2.0)
    torch.nn.init.normal_(field.output.weight, std=0.1)
    z, t, context = torch.randn(64, 2) * 3, torch.rand(64, 1), torch.randn(64, 1)
    with torch.autocast("cpu", torch.bfloat16):
        features = field.features(z, t, context)
        velocity = field(z, t, context)
    exact = field.features(z, t, context)
    assert all(torch.equal(a, b) for a, b in zip(features, exact, strict=True))
    assert velocity.dtype == torch.float32
    difference = (velocity - field(z, t, context)).abs().max().item()
    assert 0 < difference < 0.05  # bfloat16 products: close, not equal
