"""The flow families, each a :class:`~flowfit.flow.Flow` subclass, and :data:`FAMILIES`, the
one registry of the names ``flowfit train --flow`` accepts.

Every family ends (on the data side) with a fixed :class:`~flowfit.transforms.Standardize`
that carries the data's units; :meth:`Flow.initialize` (which ``fit`` calls) fits it, and
the context's own standardization, to the training data. Every family also takes

- ``context_dim`` (0: unconditional) and ``embedding``, the hidden sizes of an MLP that maps
  the (standardized) context before it reaches the conditioners (its last size is what they
  see);
- ``preprocess``: one :class:`~flowfit.preprocess.ColumnPlan` (as a dict) per column, for
  log / logit maps placed after the standardization and for dequantized columns (see
  :mod:`flowfit.preprocess`);
- ``base``: the base distribution (default ``N(0, I)``).

Coupling families mix every coordinate: in two dimensions consecutive couplings swap which
half moves; from three on, coupling ``i`` splits the columns by bit ``i mod B`` of their
number (a fixed permutation brings each part together), so that every pair of columns meets
across some coupling (``benchmarks/mixing.py`` measures this against contiguous halves, random
permutations and LU layers).

Defaults are tuned on the 2-D toys.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from flowfit.distributions import Base
from flowfit.flow import Flow
from flowfit.nets import MAX_LAYERS, MLP, check_parameters, mlp_parameters, positive_int, sizes
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
    Permutation,
    Reverse,
    SplineCoupling,
    Standardize,
    Transform,
)
from flowfit.transforms.splines import spline_params_per_dim

Preprocess = Sequence[dict[str, Any]]


class _Parts:
    """What every family shares: the checked sizes, the context the conditioners see, and
    the data-side layers, the embedding and the dequantization that finish a flow."""

    def __init__(
        self,
        name: str,
        dim: int,
        context_dim: int,
        embedding: Sequence[int],
        activation: str,
        preprocess: Preprocess,
        minimum_dim: int = 1,
    ) -> None:
        self.dim = positive_int(dim, "dim")
        if dim < minimum_dim:
            raise ValueError(f"{name} needs dim >= {minimum_dim}, got {dim}")
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim must be a non-negative integer, got {context_dim!r}")
        self.name, self.context_dim, self.activation = name, context_dim, activation
        self.embedding = sizes(embedding, "embedding")
        #: context size the conditioners see
        self.features = (self.embedding[-1] if self.embedding else context_dim) if context_dim else 0
        self.plans = [ColumnPlan(**plan) for plan in preprocess or ()]
        if self.plans and len(self.plans) != dim:
            raise ValueError(f"preprocess has {len(self.plans)} column plans for {dim} columns")

    def check_size(self, layers: int, per_layer: int) -> int:
        """``layers`` checked, and the whole model's parameter count against the limit."""
        layers = positive_int(layers, "layers", MAX_LAYERS)
        check_parameters(layers * per_layer, f"this {self.name}")
        return layers

    def flow_arguments(self, transforms: list[Transform], base: Base | None, standardize: bool = True) -> dict:
        """The :class:`Flow` arguments: the transforms with the data-side standardization and
        column maps appended, the context embedding and the dequantization steps."""
        if standardize:
            transforms = [*transforms, Standardize(self.dim)]
        if any(plan.kind != "none" for plan in self.plans):
            if not standardize:
                raise ValueError(f"{self.name} supports dequantization only, not log or logit columns")
            kinds, lower, upper = zip(*((p.kind, p.lower, p.upper) for p in self.plans), strict=True)
            transforms.append(ColumnMaps(list(kinds), list(lower), list(upper)))
        embedding = None
        if self.context_dim and self.embedding:
            embedding = MLP(self.context_dim, self.embedding[-1], self.embedding[:-1], self.activation, zero_last=False)
        steps = [plan.dequantize for plan in self.plans] if self.plans else None
        atoms = {j: (plan.atoms, plan.atom_weights) for j, plan in enumerate(self.plans) if plan.atoms}
        return {
            "transforms": transforms,
            "dim": self.dim,
            "context_dim": self.context_dim,
            "context_embedding": embedding,
            "base": base,
            "dequantize_steps": steps,
            "atoms": atoms or None,
        }


def _couplings(dim: int, layers: int, coupling: Callable[[bool, int], Transform]) -> list[Transform]:
    """``layers`` couplings (``coupling(swap, split)``) that together move every coordinate
    and split every pair of columns. In 2-D they alternate halves. From 3-D on, number the
    columns in binary: coupling ``i`` conditions the columns whose bit ``i mod B`` is 1 on
    those whose bit is 0 (the other way round in the next round of ``B`` layers), brought
    together by a fixed permutation before it. Any two columns differ in some bit, so every
    pair meets across some coupling once there are ``B = ceil(log2 dim)`` layers."""
    if dim == 2:
        return [coupling(bool(i % 2), 1) for i in range(layers)]
    bits = math.ceil(math.log2(dim))
    transforms: list[Transform] = []
    order = list(range(dim))  # the column each position carries, base side first
    for i in range(layers):
        bit = i % bits
        wanted = sorted(range(dim), key=lambda column: (column >> bit) & 1)
        if wanted != order:
            transforms.append(Permutation(torch.tensor([order.index(column) for column in wanted])))
        order = wanted
        zeros = sum(1 for column in range(dim) if not (column >> bit) & 1)
        transforms.append(coupling(bool((i // bits) % 2), zeros))
    return transforms


def _coupling_parameters(dim: int, features: int, hidden: Sequence[int], per_dim: int) -> int:
    """At most the parameters of one coupling's conditioner (its parts are uneven when the
    column count is not a power of two)."""
    return mlp_parameters(dim - 1 + features, (dim - 1) * per_dim, hidden)


class RealNVP(Flow):
    """RealNVP (Dinh et al. 2017, https://arxiv.org/abs/1605.08803): ``layers`` affine
    couplings with bounded log-scales (for ``dim = 2``, the tutorial's flips)."""

    # an average of the weights (EMA up to 0.995, which validation scores and the flow keeps)
    # reaches 0.35 nats on two moons several times sooner than the last step's weights, and
    # 10,000 steps of 256 (the same points as 5,000 of 512, in cheaper steps) get there sooner
    # than 6,000 of 512 and end as low (benchmarks/results/race.md, demo_quality.md); Adam at
    # 2e-3 was faster on some seeds and spiked and stalled on others
    training_defaults: ClassVar[dict[str, Any]] = {"steps": 10000, "batch_size": 256, "lr": 1e-3, "ema": 0.995}
    # most of a step is the 256-wide products, which bfloat16 makes 3.6x faster on a CPU that
    # has them in hardware (a step 0.77x: benchmarks/results/mixed_precision.md)
    mixed_precision_pays = ("mle",)

    def __init__(
        self,
        dim: int,
        layers: int = 6,
        hidden: Sequence[int] = (256, 256),
        context_dim: int = 0,
        embedding: Sequence[int] = (),
        activation: str = "relu",
        scale_bound: float = 3.0,
        preprocess: Preprocess = (),
        base: Base | None = None,
    ) -> None:
        parts = _Parts("RealNVP", dim, context_dim, embedding, activation, preprocess, minimum_dim=2)
        hidden = sizes(hidden, "hidden")
        layers = parts.check_size(layers, _coupling_parameters(dim, parts.features, hidden, 2))
        transforms = _couplings(
            dim,
            layers,
            lambda swap, split: AffineCoupling(dim, swap, hidden, parts.features, activation, scale_bound, split),
        )
        super().__init__(**parts.flow_arguments(transforms, base))


class NICE(Flow):
    """NICE (Dinh et al. 2015, https://arxiv.org/abs/1410.8516): additive (volume-preserving)
    couplings, then a learnt elementwise scaling, the only layer that changes volume."""

    training_defaults: ClassVar[dict[str, Any]] = {"steps": 6000, "batch_size": 512, "lr": 1e-3}

    def __init__(
        self,
        dim: int,
        layers: int = 6,
        hidden: Sequence[int] = (256, 256),
        context_dim: int = 0,
        embedding: Sequence[int] = (),
        activation: str = "relu",
        preprocess: Preprocess = (),
        base: Base | None = None,
    ) -> None:
        parts = _Parts("NICE", dim, context_dim, embedding, activation, preprocess, minimum_dim=2)
        hidden = sizes(hidden, "hidden")
        layers = parts.check_size(layers, _coupling_parameters(dim, parts.features, hidden, 1))
        transforms = _couplings(
            dim, layers, lambda swap, split: AdditiveCoupling(dim, swap, hidden, parts.features, activation, split)
        )
        super().__init__(**parts.flow_arguments([*transforms, ElementwiseAffine(dim)], base))


class NSF(Flow):
    """Neural spline flow (Durkan et al. 2019, https://arxiv.org/abs/1906.04032):
    rational-quadratic spline couplings (``autoregressive=False``) or masked autoregressive
    splines (``True``, MAF direction: one pass for ``log_prob``, ``dim`` passes for
    sampling). Splines have ``bins`` bins on ``[-tail_bound, tail_bound]`` (in standardized
    units) and identity tails outside. The autoregressive layers reverse the column order
    between them, or with ``keep_order=True`` keep the data's order in every layer: then the
    flow is triangular and gives exact densities of leading columns, its trailing ones
    integrated out (:meth:`~flowfit.Flow.observed_log_prob`)."""

    training_defaults: ClassVar[dict[str, Any]] = {"steps": 10000, "batch_size": 512, "lr": 2e-3}
    # the spline's bin search and arithmetic are dozens of small element-wise operations that
    # Inductor fuses: a step 2.8x faster (benchmarks/compile.py)
    compile_pays = ("mle",)

    def __init__(
        self,
        dim: int,
        layers: int = 4,
        bins: int = 8,
        hidden: Sequence[int] = (128, 128),
        tail_bound: float = 4.0,
        autoregressive: bool = False,
        keep_order: bool = False,
        context_dim: int = 0,
        embedding: Sequence[int] = (),
        activation: str = "relu",
        preprocess: Preprocess = (),
        base: Base | None = None,
    ) -> None:
        parts = _Parts("NSF", dim, context_dim, embedding, activation, preprocess, 1 if autoregressive else 2)
        hidden, bins = sizes(hidden, "hidden"), positive_int(bins, "bins", 1000)
        if keep_order and not autoregressive:
            raise ValueError("keep_order applies to autoregressive layers (autoregressive=True)")
        per_dim = spline_params_per_dim(bins)
        if autoregressive:
            per_layer = mlp_parameters(dim + parts.features, dim * per_dim, hidden)
        else:
            per_layer = _coupling_parameters(dim, parts.features, hidden, per_dim)
        layers = parts.check_size(layers, per_layer)
        transforms: list[Transform] = []
        if autoregressive:
            for i in range(layers):
                transforms.append(
                    MaskedSplineAutoregressive(dim, hidden, parts.features, activation, "inverse", bins, tail_bound)
                )
                transforms += [Reverse(dim)] if i < layers - 1 and dim > 1 and not keep_order else []
        else:
            transforms = _couplings(
                dim,
                layers,
                lambda swap, split: SplineCoupling(
                    dim, swap, hidden, parts.features, activation, bins, tail_bound, split
                ),
            )
        super().__init__(**parts.flow_arguments(transforms, base))


class _MaskedAffine(Flow):
    """MAF and IAF: affine MADE layers, order reversed between layers."""

    fast = "inverse"

    def __init__(
        self,
        dim: int,
        layers: int = 5,
        hidden: Sequence[int] = (128, 128),
        context_dim: int = 0,
        embedding: Sequence[int] = (),
        activation: str = "relu",
        scale_bound: float = 3.0,
        preprocess: Preprocess = (),
        base: Base | None = None,
    ) -> None:
        parts = _Parts(type(self).__name__, dim, context_dim, embedding, activation, preprocess)
        hidden = sizes(hidden, "hidden")
        layers = parts.check_size(layers, mlp_parameters(dim + parts.features, 2 * dim, hidden))
        transforms: list[Transform] = []
        for i in range(layers):
            transforms.append(
                MaskedAffineAutoregressive(dim, hidden, parts.features, activation, self.fast, scale_bound)
            )
            transforms += [Reverse(dim)] if i < layers - 1 and dim > 1 else []
        super().__init__(**parts.flow_arguments(transforms, base))


class MAF(_MaskedAffine):
    """Masked autoregressive flow (Papamakarios et al. 2017, https://arxiv.org/abs/1705.07057):
    affine MADE layers, order reversed between layers. ``log_prob`` is one pass per layer;
    sampling ``dim`` passes."""

    training_defaults: ClassVar[dict[str, Any]] = {"steps": 8000, "batch_size": 512, "lr": 2e-3}
    fast = "inverse"


class IAF(_MaskedAffine):
    """Inverse autoregressive flow (Kingma et al. 2016, https://arxiv.org/abs/1606.04934):
    MAF's layers the other way round. Sampling (and ``sample_and_log_prob``) is one pass per
    layer; ``log_prob`` of given data takes ``dim`` passes, so training by maximum
    likelihood is ``dim`` times slower."""

    training_defaults: ClassVar[dict[str, Any]] = {"steps": 5000, "batch_size": 512, "lr": 2e-3}
    fast = "forward"


class Glow(Flow):
    """Glow (Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039) for vectors: each step
    is, from the data side, ActNorm (initialised from the first batch), an LU-decomposed
    invertible linear map, and an affine coupling."""

    training_defaults: ClassVar[dict[str, Any]] = {"steps": 6000, "batch_size": 512, "lr": 1e-3}

    def __init__(
        self,
        dim: int,
        layers: int = 6,
        hidden: Sequence[int] = (256, 256),
        context_dim: int = 0,
        embedding: Sequence[int] = (),
        activation: str = "relu",
        scale_bound: float = 3.0,
        preprocess: Preprocess = (),
        base: Base | None = None,
    ) -> None:
        parts = _Parts("Glow", dim, context_dim, embedding, activation, preprocess, minimum_dim=2)
        hidden = sizes(hidden, "hidden")
        layers = parts.check_size(layers, _coupling_parameters(dim, parts.features, hidden, 2) + dim * dim + 3 * dim)
        transforms: list[Transform] = []
        for i in range(layers):
            transforms += [
                AffineCoupling(dim, bool(i % 2), hidden, parts.features, activation, scale_bound),
                LULinear(dim, seed=i),
                ActNorm(dim),
            ]
        super().__init__(**parts.flow_arguments(transforms, base))


class CNF(Flow):
    """Continuous normalizing flow (FFJORD, Grathwohl et al. 2019,
    https://arxiv.org/abs/1810.01367): one :class:`~flowfit.continuous.ContinuousFlow`, the
    neural ODE ``dz/dt = f(z, t, c)`` on ``[0, 1]`` with its data standardization. Train it
    by maximum likelihood or by flow matching (``fit(..., objective="fm")``); ``log_prob``
    is exact either way, and ``flow.trajectory(z0, t=[...])`` gives ``z_t`` at any times.
    Of the preprocessing, only dequantization applies (no log or logit columns).

    ``fourier`` and ``fourier_scale`` give the vector field random Fourier features,
    ``pairing="ot"`` pairs noise with data by minibatch optimal transport while flow matching,
    and ``sample_method``/``sample_steps`` give samples (and ``z_t`` paths, which need no
    trace) a fixed-step solver apart from the likelihood's; ``train_tolerance`` loosens the
    solve of maximum-likelihood training, and ``kinetic_penalty`` and ``jacobian_penalty``
    regularize it (Finlay et al. 2020): see
    :class:`~flowfit.continuous.ContinuousFlow`."""

    training_defaults: ClassVar[dict[str, Any]] = {"steps": 6000, "batch_size": 256, "lr": 3e-3}
    #: maximum likelihood: the paths regularized as in Finlay et al. (2020) and a looser solve
    #: while training, so that a step costs a third (benchmarks/continuous.py)
    likelihood_defaults: ClassVar[dict[str, Any]] = {
        "kinetic_penalty": 0.01,
        "jacobian_penalty": 0.01,
        "train_tolerance": 1e-3,
    }
    #: flow matching: cheap steps, many of them, a wider field with Fourier features (thin
    #: strokes are not smooth), and samples by 16 steps of rk4 (benchmarks/pictures.py)
    flow_matching_defaults: ClassVar[tuple[dict[str, Any], dict[str, Any]]] = (
        {"hidden": (128, 128, 128), "fourier": 128, "fourier_scale": 2.0, "sample_method": "rk4"},
        {"steps": 120000, "batch_size": 1024, "lr": 2e-3},
    )
    # a flow-matching step is the field's products and little else (no ODE solve): 0.61x in
    # bfloat16; under maximum likelihood the trace and the solver's error control want float32
    mixed_precision_pays = ("fm",)
    # and the softplus, sinusoids and concatenations around them fuse: 0.88x in bfloat16, 0.92x
    # in float32 (benchmarks/compile.py); an ODE solve is not compiled
    compile_pays = ("fm",)
    # an ODE solve per chunk, whose adaptive steps the chunk's hardest row sets: the 4,096 rows
    # measured before inference chunks followed the layers' width
    inference_chunk = 4096

    def __init__(
        self,
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
        fourier: int = 0,
        fourier_scale: float = 1.0,
        pairing: str = "independent",
        sample_method: str | None = None,
        sample_steps: int = 16,
        train_tolerance: float | None = None,
        kinetic_penalty: float = 0.0,
        jacobian_penalty: float = 0.0,
        preprocess: Preprocess = (),
        base: Base | None = None,
    ) -> None:
        from flowfit.continuous import ContinuousFlow

        parts = _Parts("CNF", dim, context_dim, embedding, activation, preprocess)
        hidden = sizes(hidden, "hidden")
        fourier = int(fourier)
        if fourier < 0 or fourier > 4096:
            raise ValueError(f"fourier must be a number of features in 0..4096, got {fourier}")
        check_parameters(mlp_parameters(dim + 2 * fourier + 9 + parts.features, dim, hidden), "this CNF")
        layer = ContinuousFlow(
            dim, hidden, parts.features, activation, method, rtol, atol, trace, adjoint,
            fourier, fourier_scale, pairing, sample_method, sample_steps, train_tolerance,
            kinetic_penalty, jacobian_penalty,
        )  # fmt: skip
        super().__init__(**parts.flow_arguments([layer], base, standardize=False))

    @classmethod
    def defaults_for(cls, objective: str = "mle") -> tuple[dict[str, Any], dict[str, Any]]:
        if objective == "fm":
            architecture, training = cls.flow_matching_defaults
            return dict(architecture), dict(training)
        return dict(cls.likelihood_defaults), dict(cls.training_defaults)


# -- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A ``--flow`` name: a flow class, and the constructor arguments that select a variant."""

    name: str
    cls: type[Flow]
    variant: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    #: built from couplings, which need at least two coordinates
    couplings: bool = False

    def build(self, dim: int, **kwargs: Any) -> Flow:
        """A new (untrained) flow; ``kwargs`` left at ``None`` keep the family's defaults."""
        return self.cls(dim, **self.variant, **{k: v for k, v in kwargs.items() if v is not None})

    def defaults(self, objective: str = "mle") -> dict[str, Any]:
        """The constructor's defaults (``layers``, ``hidden``, ``bins``, ...) for ``objective``."""
        signature = inspect.signature(self.cls.__init__)
        values = {name: p.default for name, p in signature.parameters.items() if p.default is not p.empty}
        return values | self.variant | self.cls.defaults_for(objective)[0]

    @property
    def keeps_order(self) -> bool:
        """Whether its flows keep the column order in every layer (and so can have atoms and
        exact densities of leading columns)."""
        return bool(self.variant.get("keep_order"))

    def accepts(self, argument: str) -> bool:
        return argument in inspect.signature(self.cls.__init__).parameters and argument not in self.variant


#: Every ``--flow`` name, in the order the CLI lists them.
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("realnvp", RealNVP, summary="affine couplings, bounded log-scales", couplings=True),
        Family("nsf", NSF, summary="rational-quadratic spline couplings, identity tails", couplings=True),
        Family("nsf-ar", NSF, {"autoregressive": True}, "autoregressive splines on MADE"),
        Family(
            "nsf-ar-ordered",
            NSF,
            {"autoregressive": True, "keep_order": True},
            "nsf-ar keeping the columns' order: exact densities with trailing cells missing",
        ),
        Family("maf", MAF, summary="affine MADE layers, order reversed between them"),
        Family("iaf", IAF, summary="MAF the other way round"),
        Family("nice", NICE, summary="additive couplings + a learnt scaling", couplings=True),
        Family("glow", Glow, summary="ActNorm + LU-decomposed linear + affine coupling per step", couplings=True),
        Family("cnf", CNF, summary="continuous normalizing flow (neural ODE)"),
    )
}
#: What a family that needs two coordinates becomes for one-dimensional data.
ONE_DIMENSIONAL = "nsf-ar"
#: The family of ``flowfit train --flow auto`` (the default) for generated 2-D data, toys and
#: pictures: tuned on two moons (the demo) ...
GENERATED_DEFAULT = "realnvp"
#: ... and for tables, files and bundled, as for ``FlowDensity()``: it beats a Gaussian
#: mixture and kernel density on every table of ``benchmarks/real_data.py``, integrates missing
#: trailing cells out exactly, and models recurring values as atoms.
TABLE_DEFAULT = "nsf-ar-ordered"


def family_for(name: str, dim: int) -> tuple[Family, str]:
    """The family ``name`` for ``dim``-dimensional data, and a notice when it had to be
    replaced: couplings need two coordinates, so 1-D data get ``nsf-ar`` (the autoregressive
    spline, which in 1-D is the spline itself)."""
    if name not in FAMILIES:
        raise ValueError(f"{name!r} is not a flow family; choose from {', '.join(FAMILIES)}")
    if dim == 1 and FAMILIES[name].couplings:
        return FAMILIES[ONE_DIMENSIONAL], f"{name} needs at least 2 columns; training {ONE_DIMENSIONAL} on 1 column"
    return FAMILIES[name], ""


def family_of(flow: Flow) -> str:
    """The ``--flow`` name of a flow a family built ('' for a hand-composed flow)."""
    for family in sorted(FAMILIES.values(), key=lambda f: -len(f.variant)):  # variants first
        if type(flow) is family.cls and all(flow.init_arguments.get(k) == v for k, v in family.variant.items()):
            return family.name
    return ""
