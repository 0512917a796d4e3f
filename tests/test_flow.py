"""Whole flows: the same bijection checks as single transforms, plus density bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowfit
from flowfit import datasets
from flowfit.errors import InputError
from flowfit.flow import Flow
from flowfit.transforms import AffineCoupling, Reverse
from flowfit.viz import density_grid

from .helpers import check_bijection, randomize


def random_realnvp(dim: int, context_dim: int = 0, seed: int = 0) -> Flow:
    flow = flowfit.RealNVP(dim, layers=4, hidden=(16, 16), context_dim=context_dim).double()
    randomize(flow, scale=0.3, seed=seed)
    standardize = flow.layers[-1]
    standardize.loc.copy_(torch.linspace(-1, 2, dim, dtype=torch.float64))
    standardize.scale.copy_(torch.linspace(0.5, 3, dim, dtype=torch.float64))
    return flow


@pytest.mark.parametrize("dim", [2, 3, 6])
def test_realnvp_round_trip_and_log_det(dim: int) -> None:
    flow = random_realnvp(dim, seed=dim)
    check_bijection(flow, torch.randn(8, dim, dtype=torch.float64))


def test_conditional_realnvp_round_trip_and_log_det() -> None:
    flow = random_realnvp(3, context_dim=2, seed=1)
    check_bijection(flow, torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64))


def test_log_prob_is_change_of_variables() -> None:
    flow = random_realnvp(2, seed=4)
    x = torch.randn(10, 2, dtype=torch.float64)
    z, log_abs_det = flow.inverse(x)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=1) + log_abs_det
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_sample_and_log_prob_agree_with_log_prob() -> None:
    flow = random_realnvp(3, seed=5)
    x, log_p = flow.sample_and_log_prob(500)
    assert x.shape == (500, 3) and log_p.shape == (500,)
    torch.testing.assert_close(flow.log_prob(x), log_p, atol=1e-8, rtol=0)


def test_conditional_sampling_shapes_and_log_prob() -> None:
    flow = random_realnvp(2, context_dim=1, seed=6)
    context = torch.tensor([[-1.0], [0.0], [2.0]], dtype=torch.float64)
    x, log_p = flow.sample_and_log_prob(50, context=context)
    assert x.shape == (3, 50, 2) and log_p.shape == (3, 50)
    for row in range(3):
        torch.testing.assert_close(flow.log_prob(x[row], context[row].expand(50, 1)), log_p[row])
    with pytest.raises(InputError, match="conditional"):
        flow.sample(5)


def test_trajectory_ends_at_forward() -> None:
    flow = random_realnvp(2, seed=7)
    z0 = torch.randn(20, 2, dtype=torch.float64)
    states = flow.trajectory(z0)
    assert len(states) == len(flow.layers) + 1
    assert torch.equal(states[0], z0)
    torch.testing.assert_close(states[-1], flow(z0)[0])
    assert [s.shape for s in flow.trajectory(30)] == [(30, 2)] * (len(flow.layers) + 1)


@pytest.mark.parametrize("context_dim", [0, 2])
def test_change_of_variables_adds_up_to_log_prob_layer_by_layer(context_dim: int) -> None:
    flow = random_realnvp(3, context_dim=context_dim, seed=5)
    x = torch.randn(15, 3, dtype=torch.float64) * 2
    context = torch.randn(15, context_dim, dtype=torch.float64) if context_dim else None
    states, log_abs_dets = flow.change_of_variables(x, context)
    assert len(states) == len(flow.layers) + 1 and len(log_abs_dets) == len(flow.layers)
    assert torch.equal(states[-1], x)
    log_p = flow.base.log_prob(states[0]) - sum(log_abs_dets)
    torch.testing.assert_close(log_p, flow.log_prob(x, context), atol=1e-10, rtol=0)
    embedded = flow.embed_context(context, 15)
    for i, layer in enumerate(flow.layers):  # each step is that layer's own forward map
        image, log_abs_det = layer(states[i], embedded)
        torch.testing.assert_close(image, states[i + 1], atol=1e-10, rtol=0)
        torch.testing.assert_close(log_abs_det, log_abs_dets[i], atol=1e-10, rtol=0)
    with pytest.raises(InputError, match="continuous-time"):
        flow.change_of_variables(x, context, t=[0.5])


def test_flow_from_any_list_of_transforms() -> None:
    flow = Flow([AffineCoupling(2, hidden=(8,)), Reverse(2), AffineCoupling(2, hidden=(8,))], dim=2).double()
    randomize(flow)
    check_bijection(flow, torch.randn(4, 2, dtype=torch.float64))


def test_float64_and_back_give_the_same_log_prob() -> None:
    flow = random_realnvp(2, seed=8).float()
    x = torch.randn(100, 2)
    log_p32 = flow.log_prob(x)
    log_p64 = flow.double().log_prob(x.double())
    assert log_p64.dtype == torch.float64
    torch.testing.assert_close(log_p64.float(), log_p32, atol=1e-4, rtol=0)
    torch.testing.assert_close(flow.float().log_prob(x), log_p32)


def test_bad_shapes_are_clear_errors() -> None:
    flow = flowfit.RealNVP(3, hidden=(8,))
    with pytest.raises(InputError, match=r"shape \(n, 3\)"):
        flow.log_prob(torch.randn(5, 2))
    with pytest.raises(InputError, match=r"shape \(n, 3\)"):
        flow.log_prob(torch.randn(5))
    with pytest.raises(InputError, match="positive"):
        flow.sample(0)


def test_trained_density_integrates_to_one() -> None:
    torch.manual_seed(0)  # the initial weights: the test must not depend on the tests before it
    flow = flowfit.RealNVP(2, layers=4, hidden=(32, 32))
    flowfit.fit(flow, lambda n: datasets.moons(n), steps=300, batch_size=256, lr=3e-3, seed=0, progress=False)
    samples = flow.sample(20000).detach()
    assert torch.isfinite(samples).all()
    bounds = (-2.0, 3.0, -1.5, 2.0)
    xs, ys, log_p = density_grid(flow.double(), bounds, resolution=400)
    mass = np.exp(log_p).sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(mass - 1) < 0.02
    # and the flow has learnt something: far better than its start, a Gaussian fitted to the data
    test = datasets.moons(5000, seed=1).double()
    gaussian = -torch.distributions.MultivariateNormal(test.mean(0), torch.cov(test.T)).log_prob(test).mean()
    assert -flow.log_prob(test).mean() < gaussian - 0.3


def test_in_place_activations_give_the_gradients_of_fresh_ones() -> None:
    """Conditioners apply ReLU in place (no new buffer per layer): the log-densities and
    every parameter's gradient are those of the same network with ReLU writing a new tensor."""
    import copy

    torch.manual_seed(0)
    flow = flowfit.NSF(3, layers=2).double()
    for p in flow.parameters():
        torch.nn.init.normal_(p, std=0.3)
    fresh = copy.deepcopy(flow)
    relus = [m for m in fresh.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and all(m.inplace for m in relus)
    for m in relus:
        m.inplace = False
    x = torch.randn(64, 3, dtype=torch.float64)
    gradients = []
    for model in (flow, fresh):
        loss = -model.log_prob(x).mean()
        gradients.append(torch.autograd.grad(loss, list(model.parameters())))
    for a, b in zip(*gradients, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def random_ordered_nsf(dim: int, context_dim: int = 0, seed: int = 0) -> Flow:
    """An ``nsf-ar-ordered`` flow with random weights and a non-trivial standardization."""
    flow = flowfit.FAMILIES["nsf-ar-ordered"].build(dim, layers=3, hidden=(16,), bins=5, context_dim=context_dim)
    flow = flow.double()
    randomize(flow, scale=0.15, seed=seed)
    standardize = flow.layers[-1]
    standardize.loc.copy_(torch.linspace(-1, 2, dim, dtype=torch.float64))
    standardize.scale.copy_(torch.linspace(0.5, 2, dim, dtype=torch.float64))
    return flow


def log_integral(log_density: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``log`` of the trapezoid rule's integral of ``exp(log_density)`` over ``grid`` (last axis)."""
    weights = torch.full_like(grid, float(grid[1] - grid[0]))
    weights[0] = weights[-1] = weights[0] / 2
    return torch.logsumexp(log_density + weights.log(), dim=-1)


@pytest.mark.parametrize("context_dim", [0, 2])
def test_observed_log_prob_is_the_integral_of_the_joint_over_trailing_columns(context_dim: int) -> None:
    flow = random_ordered_nsf(2, context_dim, seed=3)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(4, 2, dtype=torch.float64, generator=generator)
    context = torch.randn(4, context_dim, dtype=torch.float64, generator=generator) if context_dim else None
    grid = torch.linspace(-12, 14, 60001, dtype=torch.float64)  # the second column: loc 2, scale 2
    with torch.no_grad():
        integrals = []
        for i in range(len(x)):
            points = torch.stack((x[i, 0].expand(len(grid)), grid), dim=1)
            row_context = None if context is None else context[i].expand(len(grid), -1)
            integrals.append(log_integral(flow.log_prob(points, row_context), grid))
        observed = x.clone()
        observed[:, 1] = float("nan")
        torch.testing.assert_close(flow.observed_log_prob(observed, context), torch.stack(integrals), atol=1e-6, rtol=0)
        # nothing missing: the joint itself; everything missing: log 1
        torch.testing.assert_close(flow.observed_log_prob(x, context), flow.log_prob(x, context), atol=1e-12, rtol=0)
        nothing = torch.full_like(x, float("nan"))
        assert torch.equal(flow.observed_log_prob(nothing, context), torch.zeros(4, dtype=torch.float64))


def test_observed_log_prob_of_two_trailing_columns_integrates_one_out_of_the_other() -> None:
    """In 3-D, p(x1) is the integral over x2 of p(x1, x2), both from observed_log_prob."""
    flow = random_ordered_nsf(3, seed=5)
    grid = torch.linspace(-14, 14, 40001, dtype=torch.float64)  # the second column: loc 0.5, scale 1.25
    with torch.no_grad():
        for first in (-1.5, 0.3, 1.0):
            points = torch.stack((torch.full_like(grid, first), grid, torch.full_like(grid, float("nan"))), dim=1)
            pair = flow.observed_log_prob(points)
            single = flow.observed_log_prob(torch.tensor([[first, float("nan"), float("nan")]], dtype=torch.float64))
            torch.testing.assert_close(single, log_integral(pair, grid)[None], atol=1e-6, rtol=0)


def test_observed_log_prob_refuses_misplaced_gaps_and_flows_that_mix_columns() -> None:
    flow = random_ordered_nsf(3)
    points = torch.zeros(3, 3, dtype=torch.float64)
    points[2, 1] = float("nan")  # the third column is observed after a missing second
    with pytest.raises(InputError, match=r"row 3: 'x1' is missing but 'x2' after it is not.*order: x0, x1, x2"):
        flow.observed_log_prob(points)
    assert not flowfit.FAMILIES["nsf-ar"].build(3).marginalizes_trailing_columns
    for name in ("nsf", "realnvp", "maf"):
        mixing = flowfit.FAMILIES[name].build(3)
        assert not mixing.marginalizes_trailing_columns
        with pytest.raises(InputError, match="row 2: 'x2' is missing: this flow mixes its continuous columns"):
            mixing.observed_log_prob(torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, float("nan")]]))
    with pytest.raises(ValueError, match="keep_order applies to autoregressive"):
        flowfit.NSF(3, keep_order=True)


def flow_with_atoms(seed: int = 0) -> Flow:
    """A random 2-D ``nsf-ar-ordered`` flow whose columns have atoms: two boxes of 0.05 in the
    first (weights 0.2, 0.1), one of 0.1 in the second (0.3)."""
    plans = [
        dict(dequantize=0.05, atoms=(0.0, 0.5), atom_weights=(0.2, 0.1)),
        dict(dequantize=0.1, atoms=(1.0,), atom_weights=(0.3,)),
    ]
    flow = flowfit.FAMILIES["nsf-ar-ordered"].build(2, layers=2, hidden=(16,), bins=5, preprocess=plans).double()
    return randomize(flow, scale=0.15, seed=seed)


def test_atoms_are_boxes_mixed_into_each_columns_conditional_density() -> None:
    flow = flow_with_atoms()
    plain = flowfit.FAMILIES["nsf-ar-ordered"].build(2, layers=2, hidden=(16,), bins=5).double()
    plain.load_state_dict(flow.state_dict())  # the same flow without its atoms
    points = torch.tensor([[0.01, 1.05], [0.3, 1.05], [0.52, -0.4], [-1.0, 2.0]], dtype=torch.float64)
    with torch.no_grad():
        z, log_derivative = plain.transform.inverse_by_column(points)
        q = (plain.base.log_prob_by_column(z) + log_derivative).exp()
    step = flow.dequantize_steps  # 0.05 and 0.1, as the flow holds them
    first = torch.tensor([0.2, 0.0, 0.1, 0.0], dtype=torch.float64) / step[0] + 0.7 * q[:, 0]
    second = torch.tensor([0.3, 0.3, 0.0, 0.0], dtype=torch.float64) / step[1] + 0.7 * q[:, 1]
    with torch.no_grad():
        torch.testing.assert_close(flow.log_prob(points), first.log() + second.log(), atol=1e-12, rtol=0)


def test_a_density_with_atoms_integrates_to_one_and_its_samples_follow_it() -> None:
    flow = flow_with_atoms(seed=1)
    grid = torch.linspace(-10, 12, 220001, dtype=torch.float64)  # 1e-4 apart: 500 points a box
    with torch.no_grad():
        for first in (0.01, 0.3):  # the second column's conditional density, integrated
            points = torch.stack((torch.full_like(grid, first), grid), dim=1)
            single = flow.observed_log_prob(torch.tensor([[first, float("nan")]], dtype=torch.float64))
            torch.testing.assert_close(log_integral(flow.log_prob(points), grid)[None], single, atol=2e-3, rtol=0)
        marginal = flow.observed_log_prob(torch.stack((grid, torch.full_like(grid, float("nan"))), dim=1))
        assert log_integral(marginal, grid).item() == pytest.approx(0.0, abs=2e-3)
        in_box = (grid >= 0) & (grid < 0.05)
        box_mass = marginal[in_box].exp().sum().item() * float(grid[1] - grid[0])
        torch.manual_seed(0)
        samples = flow.sample(40000)
    share = ((samples[:, 0] >= 0) & (samples[:, 0] < 0.05)).double().mean().item()
    assert share == pytest.approx(box_mass, abs=4 * math.sqrt(box_mass * (1 - box_mass) / 40000))
    second = ((samples[:, 1] >= 1) & (samples[:, 1] < 1.1)).double().mean().item()
    assert second > 0.3  # the atom's weight, and what the flow's own part puts in its box
    with torch.no_grad():
        drawn, log_p = flow.sample_and_log_prob(50)
        torch.testing.assert_close(log_p, flow.log_prob(drawn))


def test_atoms_need_a_flow_that_keeps_the_column_order_and_survive_saving(tmp_path) -> None:
    plan = dict(dequantize=0.1, atoms=(1.0,), atom_weights=(0.3,))
    with pytest.raises(ValueError, match="need a flow that keeps the column order"):
        flowfit.FAMILIES["nsf-ar"].build(2, preprocess=[plan, plan])
    flow = flow_with_atoms()
    flowfit.save(flow, tmp_path / "model")
    points = torch.tensor([[0.01, 1.05], [0.3, 0.2]], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(flowfit.load(tmp_path / "model").double().log_prob(points), flow.log_prob(points))


def test_an_inference_chunk_follows_the_widest_layer() -> None:
    assert flowfit.RealNVP(2, hidden=(256, 256)).rows_per_chunk() == 8192  # 2**21 floats / 256
    assert flowfit.NSF(2, hidden=(128, 128)).rows_per_chunk() == 16384
    assert flowfit.RealNVP(2, hidden=(300,)).rows_per_chunk() == 4096  # rounded down to a power of two
    assert flowfit.RealNVP(2, hidden=(8192,)).rows_per_chunk() == 1024  # no fewer
    assert flowfit.RealNVP(2, hidden=(4,)).rows_per_chunk() == 16384  # no more


@pytest.mark.parametrize("family", ["nsf", "realnvp"])
def test_log_densities_and_samples_in_chunks_are_the_one_pass_ones(family: str) -> None:
    torch.manual_seed(0)
    flow = (
        flowfit.NSF(2, layers=2, bins=4, hidden=(8,)) if family == "nsf" else flowfit.RealNVP(2, layers=2, hidden=(8,))
    ).double()
    randomize(flow, scale=0.3, seed=1)
    x = datasets.moons(40_000, seed=0).double()  # three chunks of 16,384 rows, the last a short one
    z = torch.randn(40_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        chunked, (pushed, _) = flow.log_prob(x), flow.forward(z)
    one_pass = flow.log_prob(x)  # with gradients: the whole batch at once
    torch.testing.assert_close(chunked, one_pass.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(pushed, flow.forward(z)[0].detach(), rtol=0, atol=1e-12)
