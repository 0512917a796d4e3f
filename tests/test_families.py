"""Every flow family, unconditional and conditional: the bijection checks on the whole flow,
sampling against density, and save/load."""

from __future__ import annotations

import pytest
import torch

import flowfit
from flowfit import FAMILIES
from flowfit.families import family_for, family_of
from flowfit.nets import MLP
from flowfit.transforms import AffineCoupling, Permutation, RandomPermutation, Reverse, Standardize
from flowfit.transforms.autoregressive import MADE

from .helpers import check_bijection, randomize

SMALL = {
    "realnvp": dict(layers=3, hidden=(16,)),
    "nice": dict(layers=3, hidden=(16,)),
    "nsf": dict(layers=2, hidden=(16,), bins=5, tail_bound=3.0),
    "nsf_ar": dict(layers=2, hidden=(16,), bins=4, autoregressive=True),
    "nsf_ar_ordered": dict(layers=2, hidden=(16,), bins=4, autoregressive=True, keep_order=True),
    "maf": dict(layers=3, hidden=(16,)),
    "iaf": dict(layers=2, hidden=(16,)),
    "glow": dict(layers=2, hidden=(16,)),
}


def build(name: str, dim: int, context_dim: int = 0, **extra) -> flowfit.Flow:
    builder = FAMILIES["nsf" if name.startswith("nsf_ar") else name].cls
    flow = builder(dim, context_dim=context_dim, **SMALL[name], **extra).double()
    randomize(flow, scale=0.3, seed=dim + context_dim)
    flow.initialize(
        torch.randn(200, dim, dtype=torch.float64) * 2 + 1,
        torch.randn(200, context_dim, dtype=torch.float64) * 3 if context_dim else None,
    )
    return flow


def test_every_registered_family_is_tested() -> None:
    # the continuous flow has its own tests (tests/test_continuous.py)
    assert set(FAMILIES) - {"cnf"} == {k.replace("_", "-") for k in SMALL}


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
    assert loaded.dtype == torch.float64 and type(loaded) is type(flow)
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
        flow = FAMILIES[name].cls(3, layers=layers, hidden=(4,), **kwargs)
        assert sum(type(m).__name__ == layer_type for m in flow.modules()) == layers


def test_families_are_flow_classes_with_one_registry() -> None:
    flow = flowfit.RealNVP(2)
    assert isinstance(flow, flowfit.RealNVP) and isinstance(flow, flowfit.Flow)
    assert family_of(flowfit.NSF(2, autoregressive=True)) == "nsf-ar" and family_of(flowfit.NSF(2)) == "nsf"
    assert family_of(flowfit.NSF(2, autoregressive=True, keep_order=True)) == "nsf-ar-ordered"
    assert FAMILIES["nsf-ar"].defaults()["autoregressive"] is True
    assert FAMILIES["realnvp"].defaults()["layers"] == 6 and FAMILIES["cnf"].defaults("fm")["hidden"] == (128,) * 3
    assert family_of(flowfit.Flow([Reverse(2)], 2)) == ""


def test_one_dimensional_data_get_the_autoregressive_spline_and_say_so() -> None:
    family, notice = family_for("realnvp", 1)
    assert family.name == "nsf-ar" and "realnvp needs at least 2 columns" in notice
    assert family_for("maf", 1) == (FAMILIES["maf"], "")
    with pytest.raises(ValueError, match="not a flow family"):
        family_for("nope", 2)


def test_a_hand_composed_flow_saves_and_loads(tmp_path) -> None:
    torch.manual_seed(0)
    flow = flowfit.Flow(
        [AffineCoupling(3, hidden=(8,)), RandomPermutation(3, seed=4), AffineCoupling(3, swap=True), Standardize(3)],
        dim=3,
        base=flowfit.StudentT(3, df=4.0),
    ).double()
    randomize(flow, scale=0.3)
    flow.initialize(torch.randn(50, 3, dtype=torch.float64) * 3)
    flowfit.save(flow, tmp_path)
    loaded = flowfit.load(tmp_path)
    assert type(loaded) is flowfit.Flow and isinstance(loaded.base, flowfit.StudentT)
    x = torch.randn(20, 3, dtype=torch.float64)
    torch.testing.assert_close(loaded.log_prob(x), flow.log_prob(x), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"hidden": [1_000_000, 1_000_000]}, "parameters, more than"),
        ({"layers": 1_000_000_000}, "more than the 1,000 flowfit allows"),
        ({"hidden": [1e6, 1e6]}, "positive integer"),
        ({"layers": "many"}, "positive integer"),
    ],
)
def test_sizes_are_checked_before_anything_is_built(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        flowfit.RealNVP(2, **config)


@pytest.mark.parametrize("cls", [flowfit.RealNVP, flowfit.NICE, flowfit.NSF])
@pytest.mark.parametrize("dim", [3, 4, 6, 10, 16])
def test_couplings_in_three_or_more_dimensions_split_every_pair(cls, dim: int) -> None:
    """With the same contiguous halves in every layer, two columns in one half only ever saw
    each other through the other half: every pair of columns must be split by some coupling,
    both ways round once the layers allow."""
    flow = cls(dim, layers=4, hidden=(4,))
    order = list(range(dim))  # which base-side column each position carries
    conditioned = set()  # (transformed column, identity column)
    for layer in flow.layers:
        if isinstance(layer, Permutation):
            order = [order[int(p)] for p in layer.perm]
        elif hasattr(layer, "split"):
            first, second = order[: layer.split], order[layer.split :]
            identity, moved = (second, first) if layer.swap else (first, second)
            conditioned |= {(a, b) for a in moved for b in identity}
    assert all((a, b) in conditioned or (b, a) in conditioned for a in range(dim) for b in range(a))
    if dim <= 4:  # 2 bits, 4 layers: two rounds, both directions
        assert len(conditioned) == dim * (dim - 1)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_under_mixed_precision_only_the_networks_lose_precision(name: str) -> None:
    # the trainer's mixed precision (torch.autocast to bfloat16) may round the networks'
    # products, never the transforms' own arithmetic: replaying the networks' outputs in full
    # precision gives the same log-density to the bit
    flow = build(name, 3, context_dim=2, embedding=(8,)).float()
    x, context = torch.randn(64, 3) * 2 + 1, torch.randn(64, 2) * 3
    networks = [m for m in flow.modules() if isinstance(m, MLP | MADE)]
    outputs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda m, args, out: outputs.append(out)) for m in networks]
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        mixed = flow.log_prob(x, context)
    exact_outputs: list[torch.Tensor] = []
    for h in handles:
        h.remove()
    replayed = iter(outputs)

    def replay(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        exact_outputs.append(out)
        return next(replayed)

    handles = [m.register_forward_hook(replay) for m in networks]
    with torch.no_grad():
        exact = flow.log_prob(x, context)
    for h in handles:
        h.remove()
    assert mixed.dtype == torch.float32 and all(out.dtype == torch.float32 for out in outputs)
    assert torch.equal(mixed, exact)
    assert any(not torch.equal(a, b) for a, b in zip(outputs, exact_outputs, strict=True))  # bfloat16 was used
