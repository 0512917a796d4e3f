"""Base distributions: exact log-densities that integrate to 1, samples that follow them."""

from __future__ import annotations

import math

import pytest
import torch

import flowfit
from flowfit.distributions import DiagonalNormal, StandardNormal, StudentT
from flowfit.transforms import AffineCoupling, Standardize


def with_random_parameters(base):
    with torch.no_grad():
        for parameter in base.parameters():
            parameter.copy_(0.4 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    return base.double()


@pytest.mark.parametrize("cls", [StandardNormal, DiagonalNormal, StudentT])
def test_log_prob_matches_torch_distributions(cls) -> None:
    base = with_random_parameters(cls(3))
    z = 2 * torch.randn(50, 3, dtype=torch.float64)
    if cls is StandardNormal:
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    elif cls is DiagonalNormal:
        expected = torch.distributions.Normal(base.loc, base.log_scale.exp()).log_prob(z).sum(1)
    else:
        expected = torch.distributions.StudentT(base.df).log_prob(z).sum(1)
    torch.testing.assert_close(base.log_prob(z), expected)


@pytest.mark.parametrize("cls", [DiagonalNormal, StudentT])
def test_one_dimensional_density_integrates_to_one_and_samples_follow_it(cls) -> None:
    base = with_random_parameters(cls(1))
    grid = torch.linspace(-60, 60, 200_001, dtype=torch.float64)[:, None]
    mass = base.log_prob(grid).exp().sum().item() * (grid[1, 0] - grid[0, 0]).item()
    assert math.isclose(mass, 1.0, abs_tol=2e-3)  # Student-t tails beyond 60 hold the rest
    torch.manual_seed(0)
    samples = base.sample(200_000).detach()
    cdf = base.log_prob(grid).detach().exp().cumsum(0) * (grid[1, 0] - grid[0, 0])
    for q in (0.1, 0.5, 0.9):
        quantile = grid[int(torch.searchsorted(cdf, torch.tensor(q, dtype=torch.float64))), 0]
        assert abs(torch.quantile(samples[:, 0], q).item() - quantile.item()) < 0.03


def test_a_flow_trains_with_a_learnt_base() -> None:
    torch.manual_seed(0)
    flow = flowfit.Flow([AffineCoupling(2, hidden=(16,)), AffineCoupling(2, swap=True, hidden=(16,)), Standardize(2)],
                        dim=2, base=StudentT(2))  # fmt: skip
    data = torch.distributions.StudentT(2.0).sample((4000, 2))
    before = flow.base.df.detach().clone()
    flowfit.fit(flow, data, steps=300, lr=1e-2, progress=False)
    assert (flow.base.df.detach() != before).all()  # the degrees of freedom are parameters
    x, log_p = flow.sample_and_log_prob(100)
    torch.testing.assert_close(flow.log_prob(x), log_p, atol=1e-4, rtol=0)


def test_a_base_of_the_wrong_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="dimension 3"):
        flowfit.Flow([Standardize(2)], dim=2, base=StandardNormal(3))


@pytest.mark.parametrize("cls", [StandardNormal, DiagonalNormal, StudentT])
def test_log_prob_by_column_is_each_coordinates_density(cls) -> None:
    base = with_random_parameters(cls(3))
    z = 2 * torch.randn(50, 3, dtype=torch.float64)
    if cls is StandardNormal:
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(z)
    elif cls is DiagonalNormal:
        expected = torch.distributions.Normal(base.loc, base.log_scale.exp()).log_prob(z)
    else:
        expected = torch.distributions.StudentT(base.df).log_prob(z)
    torch.testing.assert_close(base.log_prob_by_column(z), expected)
    torch.testing.assert_close(base.log_prob_by_column(z).sum(dim=1), base.log_prob(z))
