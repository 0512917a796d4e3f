"""Categorical columns: exact likelihoods of mixed tables.

A table's categorical columns ``c`` (a colour, a cut grade; text, or integers named as
categorical) are modelled with their continuous columns ``x`` as

    log p(x, c) = log p(c) + log p(x | c),

``p(x | c)`` a flow conditioned on the one-hot code of ``c`` (appended to any ``given``
columns of its context) and ``p(c)`` the joint table of the category tuples, learnt from the
training rows' counts with additive smoothing over the full product of levels:

    p(c) = (n_c + alpha) / (N + alpha * K),   K = prod_j (levels of column j),

with ``alpha = 1/2`` (:data:`SMOOTHING`). Tuples never seen get ``alpha / (N + alpha K)``; the
normalisation is exact without enumerating the ``K`` tuples, and only the observed tuples are
stored. Training maximises both factors separately, which maximises the joint likelihood.
The sum is a log-density in mixed units: nats per row, a log-probability for the
categorical part plus a log-density (per unit of each continuous column) for the rest.

The model lives in the flow's ``metadata["categorical"]`` (:meth:`Categories.to_json`), so
a saved model scores and samples (labels written back) on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowfit.errors import CheckpointError, InputError
from flowfit.flow import Flow

#: The additive smoothing of the category counts (Jeffreys' / Krichevsky-Trofimov's 1/2).
SMOOTHING = 0.5
#: What a categorical column holds: labels as text, or integers (``--categorical``).
TEXT, INTEGER = "text", "integer"
#: The most category tuples that :func:`marginal_log_prob` sums over for one row.
MARGINAL_LIMIT = 4096
#: Integers larger than this are not exact in float64, so not categories flowfit can read.
LARGEST_INTEGER = 2**53


@dataclass
class Categories:
    """The categorical columns of a mixed model and their distribution ``p(c)`` (see the
    module docstring). ``codes`` are level indices, one column per categorical column."""

    columns: list[str]
    #: per column, :data:`TEXT` or :data:`INTEGER` (how the file writes its labels)
    kinds: list[str]
    #: per column, its labels (sorted; integers by value)
    levels: list[list[str]]
    #: the count of each category tuple (of level indices) seen in training
    counts: dict[tuple[int, ...], int] = field(default_factory=dict)
    smoothing: float = SMOOTHING

    def __post_init__(self) -> None:
        if not (len(self.columns) == len(self.kinds) == len(self.levels)) or not self.columns:
            raise ValueError("categories need one kind and one list of levels per column")
        self._index = [{label: i for i, label in enumerate(levels)} for levels in self.levels]

    # -- sizes ----------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Training rows counted (``N``)."""
        return sum(self.counts.values())

    @property
    def size(self) -> int:
        """The number of category tuples ``K`` (the product of the level counts, exact)."""
        return math.prod(len(levels) for levels in self.levels)

    @property
    def width(self) -> int:
        """Columns of the one-hot code (the sum of the level counts)."""
        return sum(len(levels) for levels in self.levels)

    # -- labels <-> codes <-> one-hot -----------------------------------------------------
    def encode(self, labels: np.ndarray, source: str = "data", first_row: int = 0) -> Tensor:
        """Labels (shape ``(n, columns)``, ``str``) to codes (``long``); a missing label
        (``None``) is -1; a label the model never saw is an
        :class:`~flowfit.errors.InputError` naming the row and column."""
        codes = np.empty(labels.shape, dtype=np.int64)
        for j, (name, index) in enumerate(zip(self.columns, self._index, strict=True)):
            for i, label in enumerate(labels[:, j]):
                code = -1 if label is None else index.get(label)
                if code is None:
                    known = ", ".join(self.levels[j][:10]) + (", ..." if len(self.levels[j]) > 10 else "")
                    raise InputError(
                        f"{source}: row {first_row + i + 1}, column {name!r}: {label!r} is not a category "
                        f"the model knows ({known})"
                    )
                codes[i, j] = code
        return torch.from_numpy(codes)

    def decode(self, codes: Tensor) -> np.ndarray:
        """Codes to labels, an object array of ``str`` shaped like ``codes``."""
        codes = codes.cpu().numpy()
        labels = np.empty(codes.shape, dtype=object)
        for j, levels in enumerate(self.levels):
            labels[:, j] = np.asarray(levels, dtype=object)[codes[:, j]]
        return labels

    def one_hot(self, codes: Tensor) -> Tensor:
        """The one-hot code of each row, float64, shape ``(n, width)``."""
        parts = [
            torch.nn.functional.one_hot(codes[:, j].long(), len(levels)).double()
            for j, levels in enumerate(self.levels)
        ]
        return torch.cat(parts, dim=1)

    def from_one_hot(self, one_hot: Tensor) -> Tensor:
        """Codes back from :meth:`one_hot` (the largest entry of each column's block)."""
        sizes = [len(levels) for levels in self.levels]
        return torch.stack([block.argmax(dim=1) for block in one_hot.split(sizes, dim=1)], dim=1)

    # -- the distribution -----------------------------------------------------------------
    @classmethod
    def fit(
        cls, columns: Sequence[str], kinds: Sequence[str], levels: Sequence[Sequence[str]], codes: Tensor
    ) -> Categories:
        """Count the category tuples of the training rows ``codes``."""
        tuples, counts = torch.unique(codes.long(), dim=0, return_counts=True)
        table = {tuple(int(v) for v in row): int(n) for row, n in zip(tuples.tolist(), counts.tolist(), strict=True)}
        return cls(list(columns), list(kinds), [list(level) for level in levels], table)

    def log_prob(self, codes: Tensor) -> Tensor:
        """``log p(c)`` of each row (nats), float64, shape ``(n,)``."""
        seen = torch.tensor(
            [self.counts.get(tuple(row), 0) for row in codes.long().tolist()], dtype=torch.float64
        ).reshape(len(codes))
        return torch.log(seen + self.smoothing) - math.log(self.rows + self.smoothing * self.size)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws of ``c`` (codes): the smoothed table is a mixture of the counts (weight
        ``N / (N + alpha K)``) and the uniform distribution over all tuples, drawn as such."""
        seen = torch.tensor(list(self.counts), dtype=torch.long).reshape(-1, len(self.columns))
        weights = torch.tensor(list(self.counts.values()), dtype=torch.float64)
        uniform = torch.rand(n, generator=generator, dtype=torch.float64) < (
            self.smoothing * self.size / (self.rows + self.smoothing * self.size)
        )
        draws = seen[torch.multinomial(weights, n, replacement=True, generator=generator)]
        anywhere = torch.stack([torch.randint(len(levels), (n,), generator=generator) for levels in self.levels], dim=1)
        return torch.where(uniform[:, None], anywhere, draws)

    # -- saved with the model -------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "kinds": self.kinds,
            "levels": self.levels,
            "counts": [[*key, n] for key, n in self.counts.items()],
            "smoothing": self.smoothing,
        }

    @classmethod
    def from_json(cls, values: Any) -> Categories:
        """Rebuild from :meth:`to_json`, checking every value (a config is data): raises
        :class:`~flowfit.errors.CheckpointError`."""
        problem = _json_problem(values)
        if problem:
            raise CheckpointError(f"the model's categorical columns are malformed: {problem}")
        counts = {tuple(row[:-1]): row[-1] for row in values["counts"]}
        return cls(values["columns"], values["kinds"], values["levels"], counts, float(values["smoothing"]))


def _json_problem(values: Any) -> str:
    """What is wrong with a :meth:`Categories.to_json` object, or ``""``."""
    if not isinstance(values, dict) or set(values) != {"columns", "kinds", "levels", "counts", "smoothing"}:
        return "expected an object with columns, kinds, levels, counts and smoothing"
    columns, kinds, levels, counts = values["columns"], values["kinds"], values["levels"], values["counts"]
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        return "columns must be a non-empty list of names"
    if not isinstance(kinds, list) or len(kinds) != len(columns) or not all(k in (TEXT, INTEGER) for k in kinds):
        return "kinds must say text or integer for each column"
    if not isinstance(levels, list) or len(levels) != len(columns):
        return "levels must list each column's labels"
    for labels in levels:
        if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
            return "each column's levels must be a non-empty list of labels"
        if len(set(labels)) != len(labels):
            return "a column names a level twice"
    smoothing = values["smoothing"]
    if isinstance(smoothing, bool) or not isinstance(smoothing, int | float) or not 0 < smoothing < math.inf:
        return "smoothing must be a positive number"
    if not isinstance(counts, list) or not counts:
        return "counts must be a non-empty list"
    seen = set()
    for row in counts:
        if not isinstance(row, list) or len(row) != len(columns) + 1:
            return "each count must be the level of each column and the count"
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in row):
            return "counts must be integers"
        if row[-1] < 1 or any(not 0 <= v < len(labels) for v, labels in zip(row[:-1], levels, strict=True)):
            return "a count is not positive or names a level that does not exist"
        if tuple(row[:-1]) in seen:
            return "a category tuple is counted twice"
        seen.add(tuple(row[:-1]))
    return ""


# -- labels as a file writes them -----------------------------------------------------------
def integer_labels(values: np.ndarray, name: str, source: str, first_row: int = 0) -> np.ndarray:
    """The labels of an integer categorical column (``--categorical``): each value's decimal
    form (``3.0`` and ``3`` are one label); a value that is not an integer is an
    :class:`~flowfit.errors.InputError` naming the row. NaN (missing) becomes ``None``."""
    labels = np.empty(len(values), dtype=object)
    missing = np.isnan(values)
    whole = ~missing & (values == np.round(values)) & (np.abs(values) < LARGEST_INTEGER)
    bad = ~missing & ~whole
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(
            f"{source}: row {first_row + row + 1}, column {name!r} is {values[row]:g}: a categorical column of "
            "numbers must hold integers"
        )
    labels[whole] = [str(int(v)) for v in values[whole]]
    return labels


def sorted_levels(labels: np.ndarray, kind: str) -> list[str]:
    """The distinct labels of a column (``None``, missing, left out), sorted: integers by
    value, text as text."""
    distinct = {label for label in labels.tolist() if label is not None}
    return sorted(distinct, key=int) if kind == INTEGER else sorted(distinct)


# -- a flow and its categories ----------------------------------------------------------------
def categories_of(flow: Flow) -> Categories | None:
    """The categorical part of a model (``flow.metadata["categorical"]``), or None."""
    values = flow.metadata.get("categorical")
    if values is None:
        return None
    categories = Categories.from_json(values)
    given = list(flow.metadata.get("given") or [])
    if flow.context_dim != len(given) + categories.width:
        raise CheckpointError(
            f"the model's context has {flow.context_dim} columns, but its given columns and categories "
            f"need {len(given) + categories.width}"
        )
    return categories


def joint_context(given: Tensor | None, codes: Tensor | None, categories: Categories | None) -> Tensor | None:
    """The flow's context: the given columns, then the one-hot code of the categories."""
    parts = [part for part in (given, None if codes is None else categories.one_hot(codes)) if part is not None]
    return torch.cat([p.double() for p in parts], dim=1) if parts else None


def joint_log_prob(flow: Flow, x: Tensor, context: Tensor | None = None, seed: int = 0) -> Tensor:
    """``log p(x, c | given)`` of each row (nats): :meth:`Flow.dequantized_log_prob` of
    ``x`` given ``context`` (given columns, then one-hot categories), plus ``log p(c)`` for a
    model with categorical columns. Float64, shape ``(n,)``."""
    log_p = flow.dequantized_log_prob(x, context, seed).double()
    categories = categories_of(flow)
    if categories is None:
        return log_p
    codes = categories.from_one_hot(context[:, context.shape[1] - categories.width :].cpu())
    return log_p + categories.log_prob(codes).to(log_p.device)


def marginal_log_prob(
    flow: Flow, x: Tensor, given: Tensor | None = None, codes: Tensor | None = None, source: str = "data"
) -> Tensor:
    """``log p(x_observed, c_observed | given)`` of each row: the density of its observed
    cells. NaN cells of ``x`` are integrated out by :meth:`Flow.observed_log_prob` (a flow
    that keeps the column order, the missing cells last); categorical cells whose code is -1
    (``codes``, shape ``(n, columns)``) are summed out: the log of the sum, over every value
    of the missing cells, of the joint density (exact: the sum is enumerated; at most
    :data:`MARGINAL_LIMIT` terms per row). ``x`` are points as the flow scores them (already
    dequantized: one noise draw per row, shared by every term). A model without categorical
    columns takes no ``codes``. Float64, shape ``(n,)``."""
    categories = categories_of(flow)
    if categories is None:
        return flow.observed_log_prob(x, given).double().cpu()
    known = codes >= 0
    out = torch.empty(len(x), dtype=torch.float64)
    patterns, which = torch.unique(known.bool(), dim=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        rows = (which == p).nonzero()[:, 0]
        free = [j for j in range(len(categories.columns)) if not bool(pattern[j])]
        terms = math.prod(len(categories.levels[j]) for j in free)
        if terms > MARGINAL_LIMIT:
            names = ", ".join(repr(categories.columns[j]) for j in free)
            raise InputError(
                f"{source}: rows with missing cells in {names} would sum over {terms} combinations of their "
                f"values, more than the {MARGINAL_LIMIT} flowfit sums over exactly; use --missing drop"
            )
        grid = torch.zeros((1, 0), dtype=torch.long)  # nothing missing: the joint itself
        if free:
            grid = torch.cartesian_prod(*[torch.arange(len(categories.levels[j])) for j in free]).reshape(terms, -1)
        for part in rows.split(max(1, MARGINAL_LIMIT * 4 // terms)):
            filled = codes[part].long().repeat_interleave(terms, dim=0)
            filled[:, free] = grid.repeat(len(part), 1)
            repeated_given = None if given is None else given[part].repeat_interleave(terms, dim=0)
            context = joint_context(repeated_given, filled, categories)
            points = x[part].repeat_interleave(terms, dim=0)
            density = flow.observed_log_prob if bool(points.isnan().any()) else flow.log_prob
            joint = density(points, context).double().cpu() + categories.log_prob(filled)
            out[part] = torch.logsumexp(joint.view(len(part), terms), dim=1)
    return out
