"""Whole flows: the same bijection checks as single transforms, plus density bookkeeping."""

from __future__ import annotations

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
