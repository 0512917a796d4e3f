from __future__ import annotations

import math

import pytest
import torch

import flowfit
from flowfit import datasets
from flowfit.errors import InputError, TrainingDivergedError
from flowfit.train import nll


def small_flow() -> flowfit.Flow:
    return flowfit.RealNVP(2, layers=2, hidden=(16,))


def test_fit_lowers_the_nll_and_keeps_the_best_state() -> None:
    flow = small_flow()
    data = datasets.moons(2000, seed=0)
    val = datasets.moons(1000, seed=1)
    flow.initialize(data)
    before = nll(flow, val)[0]
    result = flowfit.fit(flow, data, steps=150, lr=5e-3, val_data=val, val_every=10, seed=0, progress=False)
    after = nll(flow, val)[0]
    assert after < before - 0.2
    # the flow holds the best state, not the last one
    assert math.isclose(after, result.best_val_nll, abs_tol=1e-5)
    assert result.best_val_nll == min(v for _, v in result.val_curve)
    assert len(result.val_curve) == 15 and result.val_curve[-1][0] == 150


def test_fit_is_reproducible_with_a_seed() -> None:
    def run() -> torch.Tensor:
        torch.manual_seed(3)  # initial weights
        flow = small_flow()
        flowfit.fit(flow, lambda n: datasets.moons(n), steps=20, seed=3, progress=False)
        return torch.cat([p.flatten() for p in flow.parameters()])

    assert torch.equal(run(), run())


def test_fit_standardizes_from_the_data() -> None:
    flow = small_flow()
    data = datasets.moons(3000, seed=0) * 100 + 7
    flowfit.fit(flow, data, steps=2, progress=False)
    standardize = flow.layers[-1]
    torch.testing.assert_close(standardize.loc, data.mean(0), rtol=1e-2, atol=1.0)
    torch.testing.assert_close(standardize.scale, data.std(0), rtol=0.05, atol=0)


def test_raw_units_nll_shifts_by_the_log_scale() -> None:
    """A density in units 10x larger is 10^-dim times smaller: NLL + dim * log 10."""
    data = datasets.moons(2000, seed=0)
    torch.manual_seed(0)
    flow = small_flow()
    flowfit.fit(flow, data, steps=30, seed=0, progress=False)
    torch.manual_seed(0)
    scaled = small_flow()
    flowfit.fit(scaled, data * 10, steps=30, seed=0, progress=False)
    test = datasets.moons(1000, seed=5)
    assert math.isclose(nll(scaled, test * 10)[0], nll(flow, test)[0] + 2 * math.log(10), abs_tol=1e-3)


def test_divergence_names_the_step() -> None:
    calls = 0

    def sampler(n: int) -> torch.Tensor:
        nonlocal calls
        calls += 1
        batch = datasets.moons(n)
        if calls > 2 + 7:  # two draws for initialisation and validation, then 7 good steps
            batch[0, 0] = float("inf")
        return batch

    flow = small_flow()
    with pytest.raises(TrainingDivergedError, match="step 8"):
        flowfit.fit(flow, sampler, steps=50, progress=False)
    assert all(torch.isfinite(p).all() for p in flow.parameters())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.randn(100, 3), "3 columns"),
        (torch.randn(100), "2-D"),
        (torch.tensor([[0.0, float("nan")]] * 50), "NaN or inf"),
        (torch.randn(3, 2), "too few"),
    ],
)
def test_bad_data(data, message) -> None:
    with pytest.raises(InputError, match=message):
        flowfit.fit(small_flow(), data, steps=1, progress=False)
