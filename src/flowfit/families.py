"""Builders for the flow families. Each returns a :class:`~flowfit.flow.Flow` whose
``config`` records the builder's name and arguments, so :func:`flowfit.load` can rebuild it.

Every flow ends (on the data side) with a fixed :class:`~flowfit.transforms.Standardize`
that carries the data's units; :meth:`Flow.initialize` (which ``fit`` calls) fits it, and
the context's own standardization, to the training data. Every builder also takes

- ``context_dim`` (0: unconditional) and ``embedding``, the hidden sizes of an MLP that maps
  the (standardized) context before it reaches the conditioners (its last size is what they
  see);
- ``preprocess``: one :class:`~flowfit.preprocess.ColumnPlan` (as a dict) per column, for
  log / logit maps placed after the standardization and for dequantized columns (see
  :mod:`flowfit.preprocess`).

Defaults are tuned on the 2-D toys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flowfit.flow import Flow
from flowfit.nets import MLP
from flowfit.preprocess import ColumnPlan
from flowfit.transforms import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    ColumnMaps,
    ElementwiseAffine,
    LULinear,
    MaskedAffineAutoregressive,
    MaskedSplineAutoregressive,
    Reverse,
    SplineCoupling,
    Standardize,
    Transform,
)

#: Builders by the name used in ``config.json`` and on the command line.
FLOWS: dict[str, Callable[..., Flow]] = {}

Preprocess = Sequence[dict[str, Any]]


def _register(name: str) -> Callable[[Callable[..., Flow]], Callable[..., Flow]]:
    def decorate(builder: Callable[..., Flow]) -> Callable[..., Flow]:
        FLOWS[name] = builder
        return builder

    return decorate


def _flow(name: str, transforms: list[Transform], config: dict[str, Any], standardize: bool = True) -> Flow:
    """Finish a flow: the data-side standardization and column maps, the context embedding,
    the dequantization steps, and the config that rebuilds it."""
    dim, context_dim = config["dim"], config.get("context_dim", 0)
    plans = [ColumnPlan(**plan) for plan in config.get("preprocess") or ()]
    if plans and len(plans) != dim:
        raise ValueError(f"preprocess has {len(plans)} column plans for {dim} columns")
    if standardize:
        transforms = [*transforms, Standardize(dim)]
    if any(plan.kind != "none" for plan in plans):
        if not standardize:
            raise ValueError(f"{name} supports dequantization only, not log or logit columns")
        transforms.append(ColumnMaps([p.kind for p in plans], [p.lower for p in plans], [p.upper for p in plans]))
    embedding = tuple(config.get("embedding") or ())
    context_embedding = None
    if context_dim and embedding:
        context_embedding = MLP(context_dim, embedding[-1], embedding[:-1], config["activation"], zero_last=False)
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    kwargs["preprocess"] = [dict(plan) for plan in config.get("preprocess") or ()]
    steps = [plan.dequantize for plan in plans] if plans else None
    return Flow(transforms, dim, context_dim, context_embedding, {"builder": name, "kwargs": kwargs}, steps)


def _features(context_dim: int, embedding: Sequence[int]) -> int:
    """Context size the conditioners see."""
    return (embedding[-1] if embedding else context_dim) if context_dim else 0


def _check_dim(name: str, dim: int, minimum: int) -> None:
    if dim < minimum:
        raise ValueError(f"{name} needs dim >= {minimum}, got {dim}")


@_register("realnvp")
def RealNVP(  # noqa: N802 (a builder named after the model, as users expect)
    dim: int,
    layers: int = 6,
    hidden: Sequence[int] = (256, 256),
    context_dim: int = 0,
    embedding: Sequence[int] = (),
    activation: str = "relu",
    scale_bound: float = 3.0,
    preprocess: Preprocess = (),
) -> Flow:
    """RealNVP (Dinh et al. 2017): ``layers`` affine couplings with bounded log-scales,
    alternating which half moves (for ``dim = 2``, the tutorial's flips)."""
    config = dict(locals())  # the builder's arguments: what rebuilds this flow
    _check_dim("RealNVP", dim, 2)
    features = _features(context_dim, embedding)
    transforms: list[Transform] = [
        AffineCoupling(dim, bool(i % 2), hidden, features, activation, scale_bound) for i in range(layers)
    ]
    return _flow("realnvp", transforms, config)


@_register("nice")
def NICE(  # noqa: N802
    dim: int,
    layers: int = 6,
    hidden: Sequence[int] = (256, 256),
    context_dim: int = 0,
    embedding: Sequence[int] = (),
    activation: str = "relu",
    preprocess: Preprocess = (),
) -> Flow:
    """NICE (Dinh et al. 2015): additive (volume-preserving) couplings, then a learnt
    elementwise scaling, the only layer that changes volume."""
    config = dict(locals())  # the builder's arguments: what rebuilds this flow
    _check_dim("NICE", dim, 2)
    features = _features(context_dim, embedding)
    transforms: list[Transform] = [
        AdditiveCoupling(dim, bool(i % 2), hidden, features, activation) for i in range(layers)
    ]
    transforms.append(ElementwiseAffine(dim))
    return _flow("nice", transforms, config)


@_register("nsf")
def NSF(  # noqa: N802
    dim: int,
    layers: int = 4,
    bins: int = 8,
    hidden: Sequence[int] = (128, 128),
    tail_bound: float = 4.0,
    autoregressive: bool = False,
    context_dim: int = 0,
    embedding: Sequence[int] = (),
    activation: str = "relu",
    preprocess: Preprocess = (),
) -> Flow:
    """Neural spline flow (Durkan et al. 2019): rational-quadratic spline couplings
    (``autoregressive=False``) or masked autoregressive splines (``True``, MAF direction:
    one pass for ``log_prob``, ``dim`` passes for sampling). Splines have ``bins`` bins on
    ``[-tail_bound, tail_bound]`` (in standardized units) and identity tails outside."""
    config = dict(locals())  # the builder's arguments: what rebuilds this flow
    _check_dim("NSF", dim, 1 if autoregressive else 2)
    features = _features(context_dim, embedding)
    transforms: list[Transform] = []
    for i in range(layers):
        if autoregressive:
            transforms.append(
                MaskedSplineAutoregressive(dim, hidden, features, activation, "inverse", bins, tail_bound)
            )
            transforms += [Reverse(dim)] if i < layers - 1 and dim > 1 else []
        else:
            transforms.append(SplineCoupling(dim, bool(i % 2), hidden, features, activation, bins, tail_bound))
    return _flow("nsf", transforms, config)


def _masked_affine(name: str, fast: str, config: dict[str, Any]) -> Flow:
    dim = config["dim"]
    features = _features(config["context_dim"], config["embedding"])
    transforms: list[Transform] = []
    for i in range(config["layers"]):
        transforms.append(
            MaskedAffineAutoregressive(
                dim, config["hidden"], features, config["activation"], fast, config["scale_bound"]
            )
        )
        transforms += [Reverse(dim)] if i < config["layers"] - 1 and dim > 1 else []
    return _flow(name, transforms, config)


@_register("maf")
def MAF(  # noqa: N802
    dim: int,
    layers: int = 5,
    hidden: Sequence[int] = (128, 128),
    context_dim: int = 0,
    embedding: Sequence[int] = (),
    activation: str = "relu",
    scale_bound: float = 3.0,
    preprocess: Preprocess = (),
) -> Flow:
    """Masked autoregressive flow (Papamakarios et al. 2017): affine MADE layers, order
    reversed between layers. ``log_prob`` is one pass per layer; sampling ``dim`` passes."""
    config = dict(locals())  # the builder's arguments: what rebuilds this flow
    return _masked_affine("maf", "inverse", config)


@_register("iaf")
def IAF(  # noqa: N802
    dim: int,
    layers: int = 5,
    hidden: Sequence[int] = (128, 128),
    context_dim: int = 0,
    embedding: Sequence[int] = (),
    activation: str = "relu",
    scale_bound: float = 3.0,
    preprocess: Preprocess = (),
) -> Flow:
    """Inverse autoregressive flow (Kingma et al. 2016): MAF's layers the other way round.
    Sampling (and ``sample_and_log_prob``) is one pass per layer; ``log_prob`` of given
    data takes ``dim`` passes, so training by maximum likelihood is ``dim`` times slower."""
    config = dict(locals())  # the builder's arguments: what rebuilds this flow
    return _masked_affine("iaf", "forward", config)


@_register("glow")
def Glow(  # noqa: N802
    dim: int,
    layers: int = 6,
    hidden: Sequence[int] = (256, 256),
    context_dim: int = 0,
    embedding: Sequence[int] = (),
    activation: str = "relu",
    scale_bound: float = 3.0,
    preprocess: Preprocess = (),
) -> Flow:
    """Glow (Kingma & Dhariwal 2018) for vectors: each step is, from the data side, ActNorm
    (initialised from the first batch), an LU-decomposed invertible linear map, and an
    affine coupling."""
    config = dict(locals())  # the builder's arguments: what rebuilds this flow
    _check_dim("Glow", dim, 2)
    features = _features(context_dim, embedding)
    transforms: list[Transform] = []
    for i in range(layers):
        transforms += [
            AffineCoupling(dim, bool(i % 2), hidden, features, activation, scale_bound),
            LULinear(dim, seed=i),
            ActNorm(dim),
        ]
    return _flow("glow", transforms, config)


@_register("cnf")
def CNF(  # noqa: N802
    dim: int,
    hidden: Sequence[int] = (64, 64, 64),
    context_dim: int = 0,
    embedding: Sequence[int] = (),
    activation: str = "softplus",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    trace: str = "auto",
    adjoint: bool = False,
    preprocess: Preprocess = (),
) -> Flow:
    """Continuous normalizing flow (FFJORD): one :class:`~flowfit.continuous.ContinuousFlow`,
    the neural ODE ``dz/dt = f(z, t, c)`` on ``[0, 1]`` with its data standardization. Train
    it by maximum likelihood or by flow matching (``fit(..., objective="fm")``); ``log_prob``
    is exact either way, and ``flow.trajectory(z0, t=[...])`` gives ``z_t`` at any times.
    Of the preprocessing, only dequantization applies (no log or logit columns)."""
    config = dict(locals())  # the builder's arguments: what rebuilds this flow
    from flowfit.continuous import ContinuousFlow

    features = _features(context_dim, embedding)
    layer = ContinuousFlow(dim, hidden, features, activation, method, rtol, atol, trace, adjoint)
    return _flow("cnf", [layer], config, standardize=False)


def build(config: dict[str, Any]) -> Flow:
    """Rebuild an (untrained) flow from its ``config``."""
    return FLOWS[config["builder"]](**config["kwargs"])
