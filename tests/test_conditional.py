"""Conditional density estimation against a conditional Gaussian with a known density."""

from __future__ import annotations

import math

import pytest
import torch

import flowfit


def mean_and_std(context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = context[:, 0]
    mean = torch.stack((torch.sin(1.5 * c), 0.5 * c), dim=1)
    std = torch.stack((0.2 + 0.1 * (c + 2), 0.4 * torch.exp(0.3 * c)), dim=1)
    return mean, std


def draw(n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    context = 4 * torch.rand(n, 1, generator=generator) - 2
    mean, std = mean_and_std(context)
    return mean + std * torch.randn(n, 2, generator=generator), context


def true_log_prob(x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    mean, std = mean_and_std(context)
    return torch.distributions.Normal(mean, std).log_prob(x).sum(dim=1)


@pytest.mark.parametrize("name", ["maf", "realnvp"])
def test_learned_conditional_density_matches_the_truth(name: str) -> None:
    torch.manual_seed(0)
    flow = flowfit.FAMILIES[name].build(2, layers=3, hidden=(64, 64), context_dim=1)
    flowfit.fit(flow, draw, steps=2000, batch_size=512, lr=3e-3, seed=0, progress=False)
    x, context = draw(5000, torch.Generator().manual_seed(1))
    gap = (flow.log_prob(x, context) - true_log_prob(x, context)).detach()
    assert gap.abs().mean() < 0.05, f"mean |log p_model - log p_true| = {gap.abs().mean():.4f}"
    assert abs(gap.mean()) < 0.03  # the KL estimate: near zero
    # samples at a fixed context have the right moments
    at = torch.tensor([[1.0]])
    samples = flow.sample(20000, at)[0].detach()
    mean, std = mean_and_std(at)
    torch.testing.assert_close(samples.mean(0), mean[0], atol=0.02, rtol=0)
    torch.testing.assert_close(samples.std(0), std[0], atol=0.02, rtol=0)
    assert math.isfinite(flow.sample_and_log_prob(10, at)[1].sum().item())


def test_fit_rejects_mismatched_pairs() -> None:
    flow = flowfit.MAF(2, context_dim=1, hidden=(8,))
    with pytest.raises(flowfit.InputError, match="conditional"):
        flowfit.fit(flow, torch.randn(100, 2), steps=1, progress=False)
    with pytest.raises(flowfit.InputError, match="100 samples but 99 contexts"):
        flowfit.fit(flow, (torch.randn(100, 2), torch.randn(99, 1)), steps=1, progress=False)
    with pytest.raises(flowfit.InputError, match="unconditional"):
        flowfit.fit(flowfit.MAF(2, hidden=(8,)), (torch.randn(100, 2), torch.randn(100, 1)), steps=1, progress=False)
