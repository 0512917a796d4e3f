"""Preprocessing bijections and the per-column choices: raw units must come out exact."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict

import pytest
import torch

import flowfit
from flowfit.errors import FlowfitWarning, InputError
from flowfit.preprocess import (
    ColumnPlan,
    auto_plan,
    check_plans,
    make_plan,
    parse_spec,
    quantization_step,
    with_atoms,
)
from flowfit.train import nll
from flowfit.transforms import ColumnMaps

from .helpers import check_bijection


def test_column_maps_round_trip_and_log_det() -> None:
    maps = ColumnMaps(["log", "logit", "none", "logit"], [0.0, -2.0, 0.0, 0.0], [1.0, 3.0, 1.0, 17.0]).double()
    generator = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(8, 4, dtype=torch.float64, generator=generator)
    check_bijection(maps, z)  # forward from R^4, then back
    x, _ = maps(z)
    assert (x[:, 0] > 0).all() and ((x[:, 1] > -2) & (x[:, 1] < 3)).all()


def test_points_outside_the_support_have_zero_density() -> None:
    maps = ColumnMaps(["log", "logit"], [0.0, 0.0], [1.0, 2.0])
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, 2.5], [0.0, 1.0]])
    _, log_abs_det = maps.inverse(x)
    assert torch.isfinite(log_abs_det[0])
    assert torch.isinf(log_abs_det[1:]).all() and (log_abs_det[1:] < 0).all()


def test_log_normal_data_match_the_closed_form() -> None:
    """An untrained flow (identity couplings) with log preprocessing is a log-normal fitted by
    moments: its density must equal the textbook formula, Jacobian 1/x included."""
    generator = torch.Generator().manual_seed(0)
    logs = torch.randn(5000, 2, generator=generator, dtype=torch.float64) * torch.tensor([0.5, 1.2]) + torch.tensor(
        [11.0, 7.0]
    )
    data = logs.exp()
    plans = [asdict(ColumnPlan("log")), asdict(ColumnPlan("log"))]
    flow = flowfit.RealNVP(2, layers=2, hidden=(8,), preprocess=plans).double()
    flow.initialize(data)
    mean, std = logs.mean(0), logs.std(0)
    expected = (torch.distributions.Normal(mean, std).log_prob(logs) - logs).sum(dim=1)
    torch.testing.assert_close(flow.log_prob(data), expected)


def test_auto_plan_per_column() -> None:
    generator = torch.Generator().manual_seed(0)
    normal = torch.randn(2000, generator=generator)
    prices = torch.exp(torch.randn(2000, generator=generator) + 12)  # skewed, positive
    counts = torch.poisson(torch.full((2000,), 3.0), generator=generator)
    halves = torch.randint(2, 9, (2000,), generator=generator) / 2  # 1.0, 1.5, ...
    assert auto_plan(normal) == ColumnPlan("none")
    assert auto_plan(prices) == ColumnPlan("log")
    assert auto_plan(counts).dequantize == 1.0
    assert auto_plan(halves).dequantize == 0.5
    assert quantization_step(normal) == 0.0


def test_a_column_of_cents_is_quantized_whatever_its_magnitude() -> None:
    # regression: the smallest gap of these prices is 0.00999999999999 in floating point, and
    # 18777.20 / 0.00999999999999 is 1.7e-6 away from an integer: the column was called continuous
    cents = torch.tensor([50.05, 354.94, 712.25, 18777.20, 18777.21, 949.67] * 3, dtype=torch.float64)
    assert quantization_step(cents) == 0.01
    assert auto_plan(cents).dequantize == 0.01


def test_recurring_values_of_a_finely_quantized_column_are_atoms() -> None:
    generator = torch.Generator().manual_seed(0)
    smooth = torch.round(20 * (400 + 20 * torch.randn(6000, generator=generator, dtype=torch.float64))) / 20
    wages = smooth.clone()
    wages[:600], wages[600:660], wages[660:669] = 410.25, 380.85, 395.05  # heaped: 10%, 1%; 9 rows too few
    values = torch.stack((wages, smooth, torch.round(5 + 2 * torch.randn(6000, generator=generator))), dim=1)
    plans = with_atoms(make_plan(values, ["wage", "smooth", "count"]), values)
    assert plans[0].dequantize == 0.05 and plans[0].atoms == (380.85, 410.25)
    shares = [(wages == value).double().mean().item() for value in (380.85, 410.25)]  # with the smooth rows there
    assert plans[0].atom_weights == pytest.approx(shares) and 0.01 <= shares[0] < 0.011
    assert plans[1].dequantize == 0.05 and plans[1].atoms == ()  # no heaping: values hold as many as neighbours
    assert plans[2].dequantize == 1 and plans[2].atoms == ()  # a coarse grid: the flow resolves each step
    # plans carry them through JSON, and refuse nonsense
    as_json = {**asdict(plans[0]), "atoms": list(plans[0].atoms), "atom_weights": list(plans[0].atom_weights)}
    assert ColumnPlan(**as_json) == plans[0]
    for bad in (
        dict(atoms=(1.0,), atom_weights=(0.5,)),  # not dequantized
        dict(dequantize=1.0, atoms=(2.0, 1.0), atom_weights=(0.1, 0.1)),  # not increasing
        dict(dequantize=1.0, atoms=(1.0, 1.5), atom_weights=(0.1, 0.1)),  # boxes overlap
        dict(dequantize=1.0, atoms=(1.0, 2.0), atom_weights=(0.6, 0.4)),  # no weight left for the flow
    ):
        with pytest.raises(ValueError):
            ColumnPlan(**bad)


def test_explicit_specs() -> None:
    assert parse_spec("logit[0,17]") == ColumnPlan("logit", 0.0, 0.0, 17.0)
    assert parse_spec("dequantize+logit[0, 17]", step=1.0) == ColumnPlan("logit", 1.0, 0.0, 17.0)
    assert parse_spec("dequantize+log") == ColumnPlan("log", 1.0)
    assert parse_spec("none").spec == "none" and parse_spec("dequantize+log").spec == "dequantize+log"
    values = torch.tensor([[1.0, 2.0], [3.0, 5.0], [4.0, 7.0]])
    plans = make_plan(values, ["a", "b"], "a=log,b=logit[0,10]")
    assert [p.kind for p in plans] == ["log", "logit"]
    for spec, message in [
        ("nonesuch", "unknown preprocessing"),
        ("logit[5,1]", "a < b"),
        ("c=log", "not a modelled column"),
        ("a=log,a=none", "sets column 'a' twice"),
    ]:
        with pytest.raises(InputError, match=message):
            make_plan(values, ["a", "b"], spec)
    with pytest.raises(InputError, match=r"row 3, column 'b' is 7: logit\[0,6\] needs values inside \(0, 6\)"):
        check_plans(make_plan(values, ["a", "b"], "b=logit[0,6]"), values, ["a", "b"])
    zero = torch.tensor([[1.0], [0.0], [2.5]])
    with pytest.raises(InputError, match="row 12, column 'a' is 0: log needs values > 0"):
        check_plans(make_plan(zero, ["a"], "log"), zero, ["a"], first_row=10)


def test_auto_does_not_choose_log_for_a_column_positive_only_in_the_training_rows() -> None:
    prices = torch.exp(torch.randn(2000, 1, generator=torch.Generator().manual_seed(0)) + 12)
    assert make_plan(prices, ["price"])[0].kind == "log"
    assert make_plan(prices, ["price"], lowest=[0.0])[0].kind == "none"  # a 0 among the other rows


def test_dequantized_training_and_scoring() -> None:
    generator = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((3000, 2), 4.0), generator=generator)
    plans = make_plan(counts, ["a", "b"], "auto")
    assert all(p.dequantize == 1.0 for p in plans)
    torch.manual_seed(0)
    flow = flowfit.MAF(2, layers=2, hidden=(16,), preprocess=[asdict(p) for p in plans])
    flowfit.fit(flow, counts, steps=300, lr=5e-3, progress=False)
    # reproducible, and a proper density of x + u: its mean log-density bounds log P(x) from below
    assert nll(flow, counts)[0] == nll(flow, counts)[0]
    poisson = torch.distributions.Poisson(4.0).log_prob(counts).sum(dim=1).mean().item()
    assert nll(flow, counts)[0] > -poisson - 0.05  # cannot beat the true discrete entropy (up to noise)
    assert nll(flow, counts)[0] < -poisson + 0.5
    samples = flow.quantize(flow.sample(500).detach())
    assert torch.equal(samples, samples.round()) and (samples < 0).float().mean() < 0.05
    assert math.isclose(samples.mean().item(), 4.0, abs_tol=0.5)


def test_dequantize_is_for_values_on_a_grid() -> None:
    """``--preprocess b=dequantize`` on a continuous column was taken as a grid of step 1: the
    density reported was of x + u, not of x."""
    values = torch.tensor([[1.0, 0.31], [2.0, 1.77], [3.0, 2.05]])
    assert make_plan(values, ["a", "b"], "a=dequantize")[0].dequantize == 1.0
    with pytest.raises(InputError, match="'b' is not on a grid"):
        make_plan(values, ["a", "b"], "b=dequantize")
    with pytest.raises(InputError, match="finite numbers"):
        parse_spec("logit[0,inf]")
    with pytest.raises(ValueError, match="step >= 0"):
        ColumnPlan("none", dequantize=-1.0)


def test_a_continuous_column_with_an_atom_is_warned_about() -> None:
    generator = torch.Generator().manual_seed(0)
    wages = torch.exp(torch.randn(2000, generator=generator) + 6).double()
    wages[:60] = 712.25  # 3% of the rows on one exact value: a point mass
    heights = torch.randn(2000, generator=generator).double()
    with pytest.warns(FlowfitWarning, match=r"column 'wage': 60 of 2000 training rows hold exactly 712.25"):
        make_plan(torch.stack((heights, wages), dim=1), ["height", "wage"])
    counts = torch.poisson(torch.full((2000,), 3.0), generator=generator)  # on a grid: dequantized, no atom
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowfitWarning)
        make_plan(torch.stack((heights, counts.double()), dim=1), ["height", "count"])
