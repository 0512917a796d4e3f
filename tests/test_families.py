"""Every flow family, unconditional and conditional: the bijection checks on the whole flow,
sampling against density, and save/load."""

from __future__ import annotations

import pytest
import torch

import flowfit
from flowfit import FLOWS

from .helpers import check_bijection, randomize

SMALL = {
    "realnvp": dict(layers=3, hidden=(16,)),
    "nice": dict(layers=3, hidden=(16,)),
    "nsf": dict(layers=2, hidden=(16,), bins=5, tail_bound=3.0),
    "nsf_ar": dict(layers=2, hidden=(16,), bins=4, autoregressive=True),
    "maf": dict(layers=3, hidden=(16,)),
    "iaf": dict(layers=2, hidden=(16,)),
    "glow": dict(layers=2, hidden=(16,)),
}


def build(name: str, dim: int, context_dim: int = 0, **extra) -> flowfit.Flow:
    builder = FLOWS["nsf" if name == "nsf_ar" else name]
    flow = builder(dim, context_dim=context_dim, **SMALL[name], **extra).double()
    randomize(flow, scale=0.3, seed=dim + context_dim)
    flow.initialize(
        torch.randn(200, dim, dtype=torch.float64) * 2 + 1,
        torch.randn(200, context_dim, dtype=torch.float64) * 3 if context_dim else None,
    )
    return flow


def test_every_registered_family_is_tested() -> None:
    # the continuous flow has its own tests (tests/test_continuous.py)
    assert set(FLOWS) - {"cnf"} == {"nsf" if k == "nsf_ar" else k for k in SMALL}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("dim", [2, 3])
def test_family_round_trip_and_log_det(name: str, dim: int) -> None:
    flow = build(name, dim)
    check_bijection(flow, 1.5 * torch.randn(6, dim, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_conditional_family_round_trip_and_log_det(name: str) -> None:
    flow = build(name, 3, context_dim=2)
    check_bijection(flow, torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_conditional_family_with_embedding(name: str) -> None:
    flow = build(name, 2, context_dim=3, embedding=(8, 4))
    assert flow.context_embedding is not None
    check_bijection(flow, torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sample_and_log_prob_agree(name: str) -> None:
    flow = build(name, 2)
    x, log_p = flow.sample_and_log_prob(300)
    torch.testing.assert_close(flow.log_prob(x), log_p, atol=1e-7, rtol=0)
    conditional = build(name, 2, context_dim=1)
    context = torch.tensor([[-2.0], [0.5]], dtype=torch.float64)
    x, log_p = conditional.sample_and_log_prob(100, context)
    assert x.shape == (2, 100, 2)
    for row in range(2):
        torch.testing.assert_close(
            conditional.log_prob(x[row], context[row].expand(100, 1)), log_p[row], atol=1e-7, rtol=0
        )


@pytest.mark.parametrize("name", sorted(SMALL))
def test_save_and_load(name: str, tmp_path) -> None:
    flow = build(name, 3, context_dim=1)
    flowfit.save(flow, tmp_path)
    loaded = flowfit.load(tmp_path)
    assert loaded._anchor.dtype == torch.float64
    x, c = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    torch.testing.assert_close(loaded.log_prob(x, c), flow.log_prob(x, c), atol=0, rtol=0)


def test_maf_and_iaf_fast_directions() -> None:
    """MAF: log_prob is one MADE pass per layer; IAF: sampling is. Count the passes."""
    for name, fast_call in (("maf", "log_prob"), ("iaf", "sample")):
        flow = build(name, 4)
        calls = 0

        def count(*_):
            nonlocal calls
            calls += 1

        handles = [m.register_forward_hook(count) for m in flow.modules() if type(m).__name__ == "MADE"]
        with torch.no_grad():
            flow.log_prob(torch.randn(3, 4, dtype=torch.float64)) if fast_call == "log_prob" else flow.sample(3)
        fast_calls, calls = calls, 0
        with torch.no_grad():
            flow.sample(3) if fast_call == "log_prob" else flow.log_prob(torch.randn(3, 4, dtype=torch.float64))
        for handle in handles:
            handle.remove()
        layers = len(handles)
        assert fast_calls == layers and calls == 4 * layers, name


@pytest.mark.parametrize(
    ("name", "kwargs", "layer_type"),
    [
        ("realnvp", {}, "AffineCoupling"),
        ("nice", {}, "AdditiveCoupling"),
        ("nsf", {}, "SplineCoupling"),
        ("nsf", {"autoregressive": True}, "MaskedSplineAutoregressive"),
        ("maf", {}, "MaskedAffineAutoregressive"),
        ("iaf", {}, "MaskedAffineAutoregressive"),
        ("glow", {}, "LULinear"),
    ],
)
def test_layers_argument_is_honoured(name: str, kwargs: dict, layer_type: str) -> None:
    for layers in (1, 3):
        flow = FLOWS[name](3, layers=layers, hidden=(4,), **kwargs)
        assert sum(type(m).__name__ == layer_type for m in flow.modules()) == layers
