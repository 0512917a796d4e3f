"""Choosing how each column enters the flow, so densities stay in the data's own units.

A column's preprocessing is a short spec:

- ``none``: only the standardization every flow has;
- ``log``: strictly positive data (prices, areas), modelled as ``log x``;
- ``logit[a,b]``: data known to lie in ``(a, b)``;
- ``dequantize`` (optionally ``+log`` or ``+logit[a,b]``): quantized data (counts, pixel
  values). Uniform noise of one quantization step is added before the flow sees the data, in
  training and in evaluation, so the model is a density over ``x + u``; the likelihood it
  reports is this dequantized one (a lower bound on the log-probability of the discrete
  values, in nats per the column's raw unit).

``auto`` chooses per column: quantized columns (integer-valued, or every value a multiple of
a step with few distinct values) are dequantized; strictly positive, right-skewed columns get ``log``
(``dequantize+log`` when quantized and non-negative); everything else ``none``.

A quantized column on a fine grid may also have **recurring values** (:func:`with_atoms`):
wages that are hourly rates times set hours, prices at round thousands. Each is a point mass
before dequantization and, after it, a box of one step holding many rows, far denser than
any smooth density near it. A flow that keeps the column order models column ``j`` as

    p(x_j | x_<j) = sum_a w_a U(x_j; [a, a + step)) + (1 - sum_a w_a) q(x_j | x_<j),

the boxes' weights ``w_a`` their share of the training rows and ``q`` the flow's own
conditional (:meth:`flowfit.Flow.log_prob`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flowfit.errors import FlowfitWarning, InputError

_SPEC = re.compile(r"^(?P<dequantize>dequantize)?\+?(?P<map>none|log|logit\[(?P<a>[^,\]]+),(?P<b>[^\]]+)\])?$")


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is preprocessed (see the module docstring)."""

    kind: str = "none"  # "none", "log" or "logit"
    dequantize: float = 0.0  # the quantization step to dequantize with; 0: continuous
    lower: float = 0.0  # logit bounds
    upper: float = 1.0
    atoms: tuple[float, ...] = ()  # recurring values of a dequantized column: boxes [a, a + step)
    atom_weights: tuple[float, ...] = ()  # their probabilities

    def __post_init__(self) -> None:
        if self.kind not in ("none", "log", "logit"):
            raise ValueError(f"unknown column map {self.kind!r}; choose none, log or logit")
        finite = all(isinstance(v, int | float) and math.isfinite(v) for v in (self.dequantize, self.lower, self.upper))
        if not finite or self.dequantize < 0:
            raise ValueError(f"a column plan needs finite numbers and a step >= 0, got {self}")
        if self.kind == "logit" and not self.lower < self.upper:
            raise ValueError(f"logit bounds need lower < upper, got {self.lower} and {self.upper}")
        object.__setattr__(self, "atoms", tuple(self.atoms))  # from JSON: lists
        object.__setattr__(self, "atom_weights", tuple(self.atom_weights))
        atoms = torch.tensor(self.atoms, dtype=torch.float64)
        weights = torch.tensor(self.atom_weights, dtype=torch.float64)
        if self.atoms and not self.dequantize:
            raise ValueError("recurring values (atoms) need a dequantized column")
        if len(atoms) != len(weights) or not bool(torch.isfinite(atoms).all()) or bool((torch.diff(atoms) <= 0).any()):
            raise ValueError("atoms must be increasing finite values, one weight each")
        if len(atoms) > 1 and bool(torch.diff(atoms).min() < self.dequantize * (1 - 1e-6)):
            raise ValueError("atoms must lie at least one step apart (their boxes may not overlap)")
        if not bool(((weights > 0) & (weights < 1)).all()) or weights.sum() >= 1:
            raise ValueError("atom weights must be positive and sum to less than 1")

    @property
    def spec(self) -> str:
        """The spec string that gives this plan."""
        parts = ["dequantize"] if self.dequantize else []
        if self.kind == "logit":
            parts.append(f"logit[{self.lower:g},{self.upper:g}]")
        elif self.kind == "log" or not parts:
            parts.append(self.kind)
        return "+".join(parts)


def parse_spec(spec: str, step: float = 1.0) -> ColumnPlan:
    """Parse ``none``, ``log``, ``logit[a,b]``, ``dequantize``, ``dequantize+log``, ..."""
    match = _SPEC.match(spec.strip().replace(" ", ""))
    if not match or not (match["dequantize"] or match["map"]):
        raise InputError(f"unknown preprocessing {spec!r}; use none, log, logit[a,b], dequantize, dequantize+log, ...")
    name = (match["map"] or "none").split("[")[0]
    lower, upper = 0.0, 1.0
    if name == "logit":
        try:
            lower, upper = float(match["a"]), float(match["b"])
        except ValueError:
            raise InputError(f"logit bounds must be numbers, got {spec!r}") from None
        if not lower < upper or not math.isfinite(lower) or not math.isfinite(upper):
            raise InputError(f"logit bounds must be finite numbers with a < b, got {spec!r}")
    return ColumnPlan(name, step if match["dequantize"] else 0.0, lower, upper)


def quantization_step(values: Tensor) -> float:
    """The quantization step of a column: 1 for integer-valued data; otherwise the smallest gap
    between distinct values when every value is a multiple of it and the column has few
    distinct values (at most half as many as rows); 0 for a continuous column, and for a
    constant one (which ``auto`` leaves alone, so that it is reported as an error unless
    dequantization is asked for explicitly)."""
    values = values.double()
    if len(values) < 2 or bool((values == values[0]).all()):
        return 0.0

    def multiples_of(step: float) -> bool:
        multiples = values / step
        return bool((multiples - multiples.round()).abs().max().item() < 1e-6)

    if multiples_of(1.0):
        return 1.0
    unique = torch.unique(values)
    if len(unique) < 2 or len(unique) > len(values) // 2:
        return 0.0
    # the gap between 18777.20 and 18777.21 is 0.00999999999999 in binary floating point:
    # snap it to the decimal it stands for, or large multiples of it fail the test
    step = float(f"{torch.diff(unique).min().item():.6g}")
    return step if multiples_of(step) else 0.0


#: A continuous column has an atom when one exact value holds at least this share of its rows
#: (and at least ``ATOM_ROWS`` of them).
ATOM_SHARE = 0.01
ATOM_ROWS = 10


def atom_of(values: Tensor) -> tuple[float, int] | None:
    """The most frequent value of a continuous column and its count, when it is an atom."""
    if len(values) < ATOM_ROWS:
        return None
    unique, counts = torch.unique(values, return_counts=True)
    if len(unique) < 2:  # a constant column is an error of its own
        return None
    top = int(counts.argmax())
    rows = int(counts[top])
    return (float(unique[top]), rows) if rows >= max(ATOM_ROWS, ATOM_SHARE * len(values)) else None


#: A recurring value of a dequantized column becomes an atom when at least this many training
#: rows hold it ...
ATOM_ROWS_MIN = 10
#: ... and it holds this many times the average count of the grid values within
#: ``ATOM_NEIGHBOURHOOD`` steps of it (a smooth density puts about as many rows on a value as
#: on its neighbours) ...
ATOM_SPIKE = 10.0
ATOM_NEIGHBOURHOOD = 50
#: ... on a grid this fine against the column's spread (step / standard deviation). On a
#: coarse grid (counts, ratings) the flow's own dequantized density resolves each step.
FINE_GRID = 0.01


def with_atoms(plans: Sequence[ColumnPlan], values: Tensor) -> list[ColumnPlan]:
    """The plans with each dequantized, finely gridded column's recurring values as atoms:
    values held by at least :data:`ATOM_ROWS_MIN` training rows (``values``) and by
    :data:`ATOM_SPIKE` times as many as the average grid value near them. Each atom's weight
    is its share of the rows."""
    out = []
    for j, plan in enumerate(plans):
        column = values[:, j].double()
        step = plan.dequantize
        if not step or step > FINE_GRID * column.std().item():
            out.append(plan)
            continue
        unique, counts = torch.unique(column, return_counts=True)
        total = torch.cat((torch.zeros(1, dtype=torch.long), counts.cumsum(0)))
        reach = ATOM_NEIGHBOURHOOD * step
        low = torch.searchsorted(unique, unique - reach * (1 + 1e-9))
        high = torch.searchsorted(unique, unique + reach * (1 + 1e-9), right=True)
        neighbours = (total[high] - total[low] - counts).double() / (2 * ATOM_NEIGHBOURHOOD)
        spikes = (counts >= ATOM_ROWS_MIN) & (counts >= ATOM_SPIKE * neighbours)
        atoms = unique[spikes].tolist()
        weights = (counts[spikes].double() / len(column)).tolist()
        out.append(dataclasses.replace(plan, atoms=tuple(atoms), atom_weights=tuple(weights)))
    return out


def _skewness(values: Tensor) -> float:
    centred = values - values.mean()
    std = centred.square().mean().sqrt()
    return (centred.pow(3).mean() / std.pow(3)).item() if std > 0 else 0.0


def auto_plan(values: Tensor, lowest: float | None = None) -> ColumnPlan:
    """The ``auto`` choice for one column (see the module docstring): decided on ``values``
    (the training rows), with ``lowest``, the smallest value of every row the model will see
    (validation and test included), deciding whether the column is positive."""
    values = values.double()
    step = quantization_step(values)
    low = min(values.min().item(), values.min().item() if lowest is None else lowest)
    positive = low > 0 or (step > 0 and low >= 0)
    skewed = False
    if positive:
        shifted = values + step / 2  # the middle of each dequantization cell, > 0
        skewed = _skewness(values) > 1 and abs(_skewness(torch.log(shifted))) < abs(_skewness(values))
    return ColumnPlan("log" if skewed else "none", step)


def make_plan(
    values: Tensor,
    names: list[str],
    spec: str = "auto",
    lowest: Sequence[float] | None = None,
    atoms: bool = False,
) -> list[ColumnPlan]:
    """One :class:`ColumnPlan` per column from ``spec``: ``auto``, one spec for every column,
    or ``name=spec,name=spec`` (columns not named get ``auto``; a column named twice is an
    error). ``values`` are the training rows, which decide; ``lowest`` (each column's
    minimum over every row, training or not) keeps ``auto`` from choosing ``log`` for a
    column that is positive only in the training rows; ``atoms`` (for a flow that keeps the
    column order) gives ``auto`` the recurring values too (:func:`with_atoms`). The caller
    checks every row's support (:func:`outside_support`)."""
    spec = spec.strip()
    per_column: dict[str, str] = {}
    default = spec
    if "=" in spec:
        default = "auto"
        for part in re.split(r",(?![^\[]*\])", spec):  # commas outside logit[a,b]
            name, _, column_spec = (piece.strip() for piece in part.partition("="))
            if name not in names:
                raise InputError(f"preprocess names {name!r}, which is not a modelled column ({', '.join(names)})")
            if name in per_column:
                raise InputError(f"--preprocess sets column {name!r} twice ({per_column[name]} and {column_spec})")
            per_column[name] = column_spec
    plans = []
    for j, name in enumerate(names):
        column_spec = per_column.get(name, default)
        column = values[:, j]
        if column_spec == "auto":
            plans.append(auto_plan(column, None if lowest is None else lowest[j]))
            continue
        step = quantization_step(column)
        plan = parse_spec(column_spec, step=step or 1.0)
        if plan.dequantize and not step and len(torch.unique(column)) > 1:
            raise InputError(
                f"column {name!r} is not on a grid of steps (its values are not all multiples of one step): "
                "dequantize is for counts and other quantized values"
            )
        plans.append(plan)
    for j, (name, plan) in enumerate(zip(names, plans, strict=True)):
        atom = None if plan.dequantize else atom_of(values[:, j])
        if atom is not None:
            value, rows = atom
            warnings.warn(
                f"column {name!r}: {rows} of {len(values)} training rows hold exactly {value:g}, a point mass that "
                "no density has: the log-density there grows without bound as the flow trains; if the column is "
                "recorded on a grid, say so (--preprocess NAME=dequantize), or make it categorical",
                FlowfitWarning,
                stacklevel=2,
            )
    return with_atoms(plans, values) if atoms and spec == "auto" else plans


def outside_support(plan: ColumnPlan, values: Tensor) -> Tensor:
    """Which values lie where the plan's map is undefined (after dequantization, ``x + u *
    step`` with ``u`` in ``(0, 1)``): ``<= 0`` for ``log``, outside ``(a, b)`` for
    ``logit``. Shape of ``values``, bool."""
    values = values.double()
    if plan.kind == "log":
        return values < 0 if plan.dequantize else values <= 0
    if plan.kind == "logit":
        if plan.dequantize:
            return (values < plan.lower) | (values + plan.dequantize > plan.upper)
        return (values <= plan.lower) | (values >= plan.upper)
    return torch.zeros_like(values, dtype=torch.bool)


def support_message(plan: ColumnPlan) -> str:
    """What the plan's map needs, for error messages."""
    if plan.kind == "log":
        return "log preprocessing needs values >= 0 (dequantized)" if plan.dequantize else "log needs values > 0"
    return f"{plan.spec} needs values inside ({plan.lower:g}, {plan.upper:g})"


def check_support(plan: ColumnPlan, values: Tensor, name: str, first_row: int = 0) -> None:
    """Raise :class:`~flowfit.errors.InputError` naming the first row of ``values`` (one
    column) outside the plan's support (rows numbered from ``first_row + 1``)."""
    outside = outside_support(plan, values)
    if bool(outside.any()):
        row = int(outside.nonzero()[0])
        raise InputError(
            f"row {first_row + row + 1}, column {name!r} is {values[row].item():g}: {support_message(plan)}; "
            f"choose another --preprocess for {name}"
        )


def check_plans(plans: Sequence[ColumnPlan], values: Tensor, names: Sequence[str], first_row: int = 0) -> None:
    """:func:`check_support` for every column of a block of rows."""
    for j, (plan, name) in enumerate(zip(plans, names, strict=True)):
        check_support(plan, values[:, j], name, first_row)


def describe(plans: list[ColumnPlan], names: list[str]) -> str:
    """One line: what each column gets."""
    described = [
        f"{name}: {plan.spec}"
        + (f" (step {plan.dequantize:g}" if plan.dequantize else "")
        + (f", {len(plan.atoms)} recurring values)" if plan.atoms else ")" if plan.dequantize else "")
        for name, plan in zip(names, plans, strict=True)
    ]
    return ", ".join(described)


#: Dequantization noise lies in ``[EDGE, 1 - EDGE]`` of a step, never on the cell's edges: an
#: edge value could sit exactly on a logit bound (log-density -inf); the density lost is nil.
EDGE = 1e-5


def dequantize(x: Tensor, steps: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``x + u * step`` with ``u`` uniform in ``[EDGE, 1 - EDGE]`` per entry (columns with step
    0 unchanged). ``u`` is drawn in float64 whatever the dtype of ``x``, so that a seed gives
    the same noise to a float32 and a float64 model."""
    if not bool((steps > 0).any()):
        return x
    noise = torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device, x.dtype)
    return x + (EDGE + (1 - 2 * EDGE) * noise) * steps


def bits_per_dim(nll_nats: float, dim: int) -> float:
    """Convert a mean NLL in nats per sample to bits per dimension."""
    return nll_nats / (dim * math.log(2))
