"""Where training batches come from: rows (in memory or on disk) or a function that draws
fresh samples. A source owns its position in the data and checkpoints it.

Data are checked here, every row of them, before a step is taken: shape, NaN and inf, and
values the flow's dtype cannot hold (:func:`flowfit.tables.check_values`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from flowfit.errors import InputError
from flowfit.flow import Flow
from flowfit.shuffle import Permutation, split
from flowfit.tables import Rows, check_values, read_rows, select_rows

#: Data for a conditional flow: samples ``x`` and their contexts ``c``, row by row.
Pairs = tuple[Any, Any]
#: A function ``n -> x`` (or ``n -> (x, c)``) that draws ``n`` fresh samples (array-likes).
Sampler = Callable[[int], Any]
#: Training data: an array-like of rows (tensor, numpy array, list of rows), rows on disk
#: (:class:`~flowfit.tables.Rows`), a pair ``(x, context)`` of those, or a sampler.
Data = Any
#: Rows of on-disk training data that data-dependent layers are initialised from (a random
#: sample when there are more).
INIT_ROWS = 100_000
_INTEGERS = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
#: Fresh draws of a sampler that initialise the flow and, by default, validate it.
SAMPLER_ROWS = 10_000
#: Held-out rows that validation measures (a random sample of them when there are more):
#: the standard error of the mean log-density over 100,000 rows is 0.3% of its spread, which
#: is enough to choose the best state, and validating a 10-million-row file then costs the
#: time and memory of validating a million-row one.
VALIDATION_ROWS = 100_000


def as_rows(values: Any, name: str) -> Tensor | Rows:
    """An array-like (tensor, numpy array, nested lists) as a 2-D float64 tensor (rows on
    disk are left as they are). Shape, emptiness and numbers are checked; see
    :func:`check_rows` for the values."""
    if isinstance(values, Rows):
        return values
    try:
        array = values.detach() if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"{name} is not an array of numbers ({error})") from None
    if array.is_meta:
        raise InputError(f"{name} is on the meta device: it holds no values")
    if array.is_complex():
        raise InputError(f"{name} holds complex numbers; a density is over real values")
    if not (array.is_floating_point() or array.dtype in _INTEGERS):
        raise InputError(f"{name} must hold numbers, got {array.dtype}")
    if array.dim() != 2:
        raise InputError(f"{name} must be a 2-D array (rows are samples), got shape {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise InputError(f"{name} has no rows")
    return array if array.is_floating_point() else array.double()


def check_rows(values: Tensor | Rows, flow: Flow, columns: int, name: str) -> None:
    """Every row: ``columns`` columns, finite, and representable in the flow's dtype."""
    if values.shape[1] != columns:
        raise InputError(f"{name} has {values.shape[1]} columns but the flow expects {columns}")
    names = [f"{j}" for j in range(columns)]
    if isinstance(values, Rows):
        values.ranges()
        values.check(flow.dtype, names)
    else:
        check_values(values, flow.dtype, names, name)


def pairs(data: Data, flow: Flow, name: str) -> tuple[Tensor | Rows, Tensor | Rows | None]:
    """``data`` as checked ``(x, context)``: only a tuple is a pair (a list is rows)."""
    if isinstance(data, tuple) and len(data) != 2:
        raise InputError(f"{name} must be rows x or a pair (x, context), got a tuple of {len(data)}")
    x, context = data if isinstance(data, tuple) else (data, None)
    if flow.context_dim and context is None:
        raise InputError(f"the flow is conditional: {name} must be a pair (x, context), a tuple")
    if not flow.context_dim and context is not None:
        raise InputError(f"the flow is unconditional but {name} comes with a context")
    x = as_rows(x, name)
    check_rows(x, flow, flow.dim, name)
    if context is not None:
        context = as_rows(context, f"{name} context")
        check_rows(context, flow, flow.context_dim, f"{name} context")
        if len(context) != len(x):
            raise InputError(f"{name} has {len(x)} samples but {len(context)} contexts")
    return x, context


def in_memory(values: Tensor | Rows | None) -> Tensor | None:
    return values.take() if isinstance(values, Rows) else values


def held_out(x: Tensor | Rows, context: Tensor | Rows | None, seed: int) -> tuple[Tensor, Tensor | None]:
    """The validation rows, in memory: all of ``x`` (and its contexts), or a random sample of
    :data:`VALIDATION_ROWS` of them (seeded, read in file order)."""
    index = torch.arange(len(x))
    if len(x) > VALIDATION_ROWS:
        index = Permutation(len(x), seed)(torch.arange(VALIDATION_ROWS)).sort().values
    return read_rows(x, index), None if context is None else read_rows(context, index)


def split_indices(n: int, fractions: tuple[float, ...], seed: int = 0) -> list[Tensor]:
    """Row numbers ``0..n-1`` shuffled with ``seed`` and cut into parts of the given
    fractions (the last part takes the rest), as int64 tensors: the parts of
    :func:`flowfit.shuffle.split`, which training uses without writing them out."""
    return [part.items() for part in split(n, fractions, seed)]


class TableSource(Dataset):
    """Shuffled passes over training rows, in memory or on disk (read a batch at a time).

    Each pass (epoch) visits the rows in the order of a permutation of ``range(n)`` seeded
    with ``(seed, epoch)`` and computed a batch at a time (:class:`flowfit.shuffle.Permutation`):
    batch ``j`` of an epoch is the rows ``p(j*b), ..., p(j*b + b - 1)``; the rows left over
    at an epoch's end (fewer than a batch) are skipped. Nothing is held per row, and the
    source's whole state is two integers, ``(epoch, position)``. Under ``torch.distributed``
    every rank walks the same order and takes its share of each global batch: the ranks
    together see exactly the batches one process would. (``DistributedSampler`` gives the
    same partition but builds a Python list of every row number each epoch, 28+ bytes a row.)
    """

    def __init__(self, x: Tensor | Rows, context: Tensor | Rows | None, flow: Flow, seed: int, rank: int, world: int):
        self.x, self.context, self.flow = x, context, flow
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        """The rows ``index``, dequantized as the flow asks, on its device and dtype."""
        x = self.flow.dequantize(read_rows(self.x, index))
        context = None if self.context is None else read_rows(self.context, index)
        return x, None if context is None else context.to(self.flow.device, self.flow.dtype)

    def batch(self, n: int) -> tuple[Tensor, Tensor | None]:
        """This rank's share of the next global batch of ``n`` rows (all rows when ``n`` is
        at least the data's size)."""
        if n >= len(self.x):
            index = torch.arange(len(self.x))
        else:
            if self.position + n > len(self.x):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            index = self._order(torch.arange(self.position, self.position + n))
            self.position += n
        return self.__getitems__(index.tensor_split(self.world)[self.rank])

    def _permutation(self) -> Permutation:
        return Permutation(len(self.x), self.seed * 1_000_003 + self.epoch)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()


class SamplerSource:
    """Fresh draws from a sampler ``n -> x`` (or ``n -> (x, c)``), checked like rows. Under
    ``torch.distributed`` each rank draws its share from its own random stream. Its state is
    the random-number generator's, which the trainer checkpoints."""

    def __init__(self, sampler: Sampler, flow: Flow, world: int):
        self.sampler, self.flow, self.world = sampler, flow, world

    def draw(self, n: int, name: str = "sampled data") -> tuple[Tensor, Tensor | None]:
        x, context = pairs(self.sampler(n), self.flow, name)
        if len(x) != n:
            raise InputError(f"the sampler was asked for {n} samples and returned {len(x)}")
        return in_memory(x), in_memory(context)

    def batch(self, n: int) -> tuple[Tensor, Tensor | None]:
        x, context = self.draw(n // self.world)
        x = x.to(self.flow.device, self.flow.dtype)
        return x, None if context is None else context.to(self.flow.device, self.flow.dtype)

    def state_dict(self) -> dict[str, int]:
        return {}

    def load_state_dict(self, state: dict[str, int]) -> None:
        pass


def make_source(
    data: Data, flow: Flow, val_data: Data | None, val_fraction: float, seed: int, rank: int, world: int
) -> tuple[TableSource | SamplerSource, Pairs, Pairs]:
    """The training source, the validation pair and the pair the flow is initialised from
    (all tensors, checked). Data rows lose ``val_fraction`` of themselves to validation when
    no ``val_data`` is given; a sampler's validation set is ``SAMPLER_ROWS`` fresh draws; of
    more than :data:`VALIDATION_ROWS` held-out rows, validation measures a random sample."""
    if callable(data) and not isinstance(data, Tensor | Rows | np.ndarray):
        if bool(flow.dequantize_steps.any()):
            raise InputError("dequantization needs data rows, not a sampler")
        source = SamplerSource(data, flow, world)
        init = source.draw(SAMPLER_ROWS)
        val = source.draw(SAMPLER_ROWS, "validation data") if val_data is None else None
    else:
        x, context = pairs(data, flow, "data")
        if val_data is None:
            n_val = round(val_fraction * len(x))
            if n_val < 1 or len(x) - n_val < 2:
                raise InputError(f"{len(x)} rows are too few to hold out a validation set")
            val_part, train_part = split(len(x), (val_fraction, 1 - val_fraction), seed)
            val = held_out(select_rows(x, val_part), None if context is None else select_rows(context, val_part), seed)
            x, context = select_rows(x, train_part), None if context is None else select_rows(context, train_part)
        source = TableSource(x, context, flow, seed, rank, world)
        init_index = torch.arange(len(x))
        if isinstance(x, Rows) and len(x) > INIT_ROWS:  # on disk: initialise from a sample
            init_index = Permutation(len(x), seed=0)(torch.arange(INIT_ROWS))
        init = source.__getitems__(init_index)
    if val_data is not None:
        val = held_out(*pairs(val_data, flow, "validation data"), seed)
    cast = lambda v: None if v is None else v.to(flow.device, flow.dtype)  # noqa: E731
    return source, (cast(val[0]), cast(val[1])), (cast(init[0]), cast(init[1]))
