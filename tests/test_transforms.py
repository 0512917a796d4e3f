"""The shared transform test: round trip and autograd-Jacobian log|det|, in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowfit.transforms import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    ColumnMaps,
    Compose,
    ElementwiseAffine,
    Logit,
    LULinear,
    MaskedAffineAutoregressive,
    MaskedSplineAutoregressive,
    Permutation,
    RandomPermutation,
    Reverse,
    Sigmoid,
    SplineCoupling,
    Standardize,
)

from .helpers import check_bijection, randomize

# (name, factory(dim, context_dim)) for every transform; parameters are randomised.
FACTORIES = {
    "affine_coupling": lambda d, c: AffineCoupling(d, hidden=(16, 16), context_dim=c),
    "affine_coupling_swap": lambda d, c: AffineCoupling(d, swap=True, hidden=(16,), context_dim=c),
    "affine_coupling_silu": lambda d, c: AffineCoupling(d, hidden=(8, 8), context_dim=c, activation="silu"),
    "additive_coupling": lambda d, c: AdditiveCoupling(d, swap=True, hidden=(16,), context_dim=c),
    "spline_coupling": lambda d, c: SplineCoupling(d, hidden=(16,), context_dim=c, bins=5, tail_bound=3.0),
    "spline_coupling_swap": lambda d, c: SplineCoupling(d, swap=True, hidden=(8, 8), context_dim=c, bins=8),
    "affine_coupling_uneven": lambda d, c: AffineCoupling(d, swap=True, hidden=(8,), context_dim=c, split=d - 1),
    "spline_coupling_uneven": lambda d, c: SplineCoupling(d, hidden=(8,), context_dim=c, bins=4, split=1),
    "maf_affine": lambda d, c: MaskedAffineAutoregressive(d, hidden=(16, 16), context_dim=c),
    "iaf_affine": lambda d, c: MaskedAffineAutoregressive(d, hidden=(16,), context_dim=c, fast="forward"),
    "maf_spline": lambda d, c: MaskedSplineAutoregressive(d, hidden=(16, 16), context_dim=c, bins=6),
    "iaf_spline": lambda d, c: MaskedSplineAutoregressive(d, hidden=(16,), context_dim=c, fast="forward", bins=4),
    "lu_linear": lambda d, c: LULinear(d, seed=d),
    "elementwise_affine": lambda d, c: ElementwiseAffine(d),
    "actnorm": lambda d, c: ActNorm(d),
    "sigmoid": lambda d, c: Sigmoid(),
    "logit": lambda d, c: Logit(),
    "standardize": lambda d, c: Standardize(d),
    "reverse": lambda d, c: Reverse(d),
    "random_permutation": lambda d, c: RandomPermutation(d, seed=3),
    "column_maps": lambda d, c: ColumnMaps([("none", "log", "logit")[j % 3] for j in range(d)]),
    "compose_triangular": lambda d, c: Compose(
        [
            MaskedSplineAutoregressive(d, hidden=(8,), context_dim=c, bins=4),
            MaskedAffineAutoregressive(d, hidden=(8,), context_dim=c, fast="forward"),
            ElementwiseAffine(d),
            Standardize(d),
        ]
    ),
    "compose": lambda d, c: Compose(
        [
            AffineCoupling(d, hidden=(8,), context_dim=c),
            Reverse(d),
            AffineCoupling(d, swap=True, hidden=(8,), context_dim=c),
            Standardize(d),
        ]
    ),
}
CONDITIONAL = {
    "affine_coupling",
    "affine_coupling_swap",
    "affine_coupling_silu",
    "additive_coupling",
    "spline_coupling",
    "spline_coupling_swap",
    "affine_coupling_uneven",
    "spline_coupling_uneven",
    "maf_affine",
    "iaf_affine",
    "maf_spline",
    "iaf_spline",
    "compose",
    "compose_triangular",
}
# transforms defined on part of R^d get their inputs mapped into the domain
DOMAIN = {"logit": torch.sigmoid, "column_maps": torch.sigmoid}
# output column j depends on input columns <= j only (a lower-triangular Jacobian)
TRIANGULAR = {
    "maf_affine",
    "iaf_affine",
    "maf_spline",
    "iaf_spline",
    "elementwise_affine",
    "actnorm",
    "standardize",
    "column_maps",
    "compose_triangular",
}


def make(name: str, dim: int, context_dim: int, seed: int) -> torch.nn.Module:
    transform = FACTORIES[name](dim, context_dim).double()
    randomize(transform, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    for module in transform.modules():  # fixed buffers get random values too
        if isinstance(module, Standardize):
            module.loc.copy_(torch.randn(dim, generator=generator, dtype=torch.float64))
            module.scale.copy_(torch.rand(dim, generator=generator, dtype=torch.float64) * 3 + 0.1)
    return transform


@pytest.mark.parametrize("name", sorted(FACTORIES))
@given(dim=st.integers(2, 5), n=st.integers(1, 6), seed=st.integers(0, 2**16), scale=st.floats(0.1, 5.0))
def test_round_trip_and_log_det(name: str, dim: int, n: int, seed: int, scale: float) -> None:
    transform = make(name, dim, 0, seed)
    points = scale * torch.randn(n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    check_bijection(transform, DOMAIN.get(name, lambda v: v)(points))


@pytest.mark.parametrize("name", sorted(CONDITIONAL))
@given(dim=st.integers(2, 4), context_dim=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_conditional_round_trip_and_log_det(name: str, dim: int, context_dim: int, seed: int) -> None:
    transform = make(name, dim, context_dim, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    points = torch.randn(5, dim, dtype=torch.float64, generator=generator)
    context = torch.randn(5, context_dim, dtype=torch.float64, generator=generator)
    check_bijection(transform, points, context)
    # the context changes the map
    other, _ = transform(points, context + 1.0)
    assert not torch.allclose(other, transform(points, context)[0])


@pytest.mark.parametrize("name", sorted(FACTORIES))
@given(dim=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_triangular_transforms_give_the_jacobian_diagonal(name: str, dim: int, seed: int) -> None:
    """A transform that says it is triangular has a lower-triangular inverse Jacobian whose
    diagonal is ``inverse_by_column``'s log-derivatives; the others refuse the question."""
    context_dim = 2 if name in CONDITIONAL else 0
    transform = make(name, dim, context_dim, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    points = DOMAIN.get(name, lambda v: v)(torch.randn(3, dim, dtype=torch.float64, generator=generator))
    context = torch.randn(3, context_dim, dtype=torch.float64, generator=generator) if context_dim else None
    assert transform.triangular == (name in TRIANGULAR)
    if name not in TRIANGULAR:
        with pytest.raises(NotImplementedError, match="mixes the columns"):
            transform.inverse_by_column(points, context)
        return
    z, log_derivative = transform.inverse_by_column(points, context)
    torch.testing.assert_close(z, transform.inverse(points, context)[0], atol=1e-12, rtol=0)
    for i in range(len(points)):
        row_context = None if context is None else context[i : i + 1]
        jacobian = torch.autograd.functional.jacobian(
            lambda v, c=row_context: transform.inverse(v[None], c)[0][0], points[i]
        )
        torch.testing.assert_close(torch.triu(jacobian, 1), torch.zeros_like(jacobian), atol=0, rtol=0)
        torch.testing.assert_close(log_derivative[i], torch.diagonal(jacobian).abs().log(), atol=1e-9, rtol=0)


def test_affine_coupling_log_scale_is_bounded() -> None:
    coupling = AffineCoupling(2, hidden=(4,), scale_bound=2.0).double()
    randomize(coupling, scale=50.0)
    out, log_abs_det = coupling(1e3 * torch.randn(100, 2, dtype=torch.float64))
    assert log_abs_det.abs().max() <= 2.0 and torch.isfinite(out).all()


def test_coupling_starts_as_identity() -> None:
    coupling = AffineCoupling(3, hidden=(8,))
    points = torch.randn(10, 3)
    out, log_abs_det = coupling(points)
    assert torch.equal(out, points) and torch.equal(log_abs_det, torch.zeros(10))


def test_alternating_couplings_move_both_halves() -> None:
    first, second = AffineCoupling(2, swap=False), AffineCoupling(2, swap=True)
    randomize(first)
    randomize(second)
    z = torch.randn(10, 2)
    moved_first, _ = first(z)
    moved_second, _ = second(z)
    assert torch.equal(moved_first[:, 0], z[:, 0]) and not torch.equal(moved_first[:, 1], z[:, 1])
    assert torch.equal(moved_second[:, 1], z[:, 1]) and not torch.equal(moved_second[:, 0], z[:, 0])


def test_standardize_initializes_once_and_rejects_constant_columns() -> None:
    layer = Standardize(2)
    data = torch.randn(1000, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([10.0, -2.0])
    layer.initialize_from_data(data)
    z, _ = layer.inverse(data)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2), atol=1e-5, rtol=0)
    layer.initialize_from_data(data * 100)  # already initialised: unchanged
    torch.testing.assert_close(layer.inverse(data)[0], z)
    with pytest.raises(ValueError, match="zero variance"):
        Standardize(2).initialize_from_data(torch.stack((torch.randn(50), torch.full((50,), 7.0)), dim=1))


def test_permutation_rejects_non_permutation() -> None:
    with pytest.raises(ValueError, match="not a permutation"):
        Permutation(torch.tensor([0, 0, 1]))


@pytest.mark.parametrize("fast", ["inverse", "forward"])
def test_autoregressive_jacobian_is_triangular(fast: str) -> None:
    transform = MaskedAffineAutoregressive(4, hidden=(16, 16), fast=fast).double()
    randomize(transform)
    point = torch.randn(4, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: transform(v[None])[0][0], point)
    assert torch.equal(torch.triu(jacobian, 1), torch.zeros(4, 4, dtype=torch.float64))
    assert (torch.diagonal(jacobian) != 0).all()


def test_actnorm_initializes_from_data() -> None:
    layer = ActNorm(3)
    data = torch.randn(500, 3) * torch.tensor([2.0, 0.1, 5.0]) + 4
    layer.initialize_from_data(data)
    z, _ = layer.inverse(data)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3), atol=1e-4, rtol=0)
    assert all(p.requires_grad for p in layer.parameters())


def test_lu_linear_is_its_matrix() -> None:
    layer = LULinear(4, seed=1).double()
    randomize(layer, scale=0.3)
    z = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(z)[0], z @ layer.matrix().T + layer.bias)
    torch.testing.assert_close(layer(z)[1][0], torch.linalg.slogdet(layer.matrix()).logabsdet)
