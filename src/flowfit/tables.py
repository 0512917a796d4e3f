"""Reading the user's tables, distrusting every row.

A table is a file whose rows are samples: CSV/TSV (a first row that is not all numbers is
the header; a UTF-8 byte-order mark is dropped), ``.npy``, ``.npz`` (its only array, the one
named ``data``, or ``FILE.npz:NAME``) or ``.parquet`` (numeric columns; needs pyarrow). Every
value is read as float64 and checked: NaN and inf, ragged or non-numeric lines, complex
arrays, and duplicate or empty column names are errors that name the file, row and column.
:func:`check_values` then checks that the values fit the model's dtype.

:class:`Rows` leaves a ``.npy`` file on disk (memory-mapped) and reads a batch at a time.
"""

from __future__ import annotations

import copy
import csv
import math
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowfit.errors import InputError
from flowfit.shuffle import Segment

#: Rows read at a time when a table is streamed.
CHUNK_ROWS = 65536


@dataclass
class Table:
    """A table file opened for reading: its column names, and its rows read lazily."""

    #: the file, as the user named it (``FILE.npz:NAME`` included)
    source: str
    names: list[str]
    #: whether the names came from a header row (``False``: ``x0, x1, ...`` by position)
    has_header: bool
    _blocks: Callable[[int], Iterator[tuple[int, np.ndarray]]]

    def __post_init__(self) -> None:
        for j, name in enumerate(self.names):
            if not name:
                raise InputError(f"{self.source}: column {j + 1} of the header has no name; name it or drop it")
        seen = set()
        for name in self.names:
            if name in seen:
                raise InputError(f"{self.source}: the header names column {name!r} twice; column names must be unique")
            seen.add(name)

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(index of the first row, float64 values)`` blocks of at most ``rows`` rows, each
        checked for NaN and inf (the error names the row, counting data rows from 1)."""
        for start, block in self._blocks(rows):
            block = np.array(block, dtype=np.float64)  # a copy: memory-mapped rows are read-only
            bad = ~np.isfinite(block)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise InputError(
                    f"{self.source}: row {start + row + 1}, column {self.names[col]!r} is {block[row, col]} "
                    "(NaN and inf are not data)"
                )
            yield start, block

    def read(self) -> np.ndarray:
        """Every row, float64, shape ``(rows, len(names))``."""
        blocks = [block for _, block in self.chunks()]
        if not blocks:
            raise InputError(f"{self.source}: the file has no data rows")
        return np.concatenate(blocks)


def open_table(spec: str | Path) -> Table:
    """Open the table ``spec`` (a path, or ``FILE.npz:NAME``) for reading."""
    path, key = split_spec(str(spec))
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix in (".npy", ".npz", ".parquet"):
        values, names = _read_parquet(path) if path.suffix == ".parquet" else _read_array(path, key)
        has_header = path.suffix == ".parquet"

        def blocks(rows: int) -> Iterator[tuple[int, np.ndarray]]:
            return ((start, values[start : start + rows]) for start in range(0, len(values), rows))

        return Table(str(spec), names, has_header, blocks)
    if key is not None:
        raise InputError(f"{spec}: only .npz files hold named arrays")
    return _open_delimited(path)


def load_table(spec: str | Path, columns: Sequence[str] | None = None) -> tuple[Tensor, list[str]]:
    """Read a whole table (see :func:`open_table`): a float64 tensor ``(n, d)`` and the
    column names; ``columns`` picks columns by name."""
    table = open_table(spec)
    values, names = table.read(), table.names
    if columns is not None:
        values, names = values[:, pick(names, columns, table.source)], list(columns)
    return torch.from_numpy(np.ascontiguousarray(values)), names


def pick(names: Sequence[str], wanted: Sequence[str], source: str) -> list[int]:
    """Positions of the ``wanted`` columns among ``names``; unknown or repeated names are
    :class:`~flowfit.errors.InputError`."""
    repeated = sorted({name for name in wanted if list(wanted).count(name) > 1})
    if repeated:
        raise InputError(f"column(s) {', '.join(map(repr, repeated))} asked for twice")
    missing = [name for name in wanted if name not in names]
    if missing:
        raise InputError(f"{source}: no column named {', '.join(map(repr, missing))}; it has {', '.join(names)}")
    return [list(names).index(name) for name in wanted]


def split_spec(spec: str) -> tuple[Path, str | None]:
    """``FILE.npz:NAME`` into the path and the array's name."""
    head, sep, key = spec.partition(".npz:")
    if sep and head and key:  # the name may hold colons; the file's name up to ".npz" not
        return Path(head + ".npz"), key
    return Path(spec), None


def _read_array(path: Path, key: str | None = None) -> tuple[np.ndarray, list[str]]:
    """The array of a ``.npy`` (memory-mapped, read lazily) or ``.npz`` file, as rows."""
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False, mmap_mode="r")
        else:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if key is None:
                    if len(keys) != 1 and "data" not in keys:
                        raise InputError(
                            f"{path}: holds arrays {', '.join(keys)}; choose one as {path}:NAME (e.g. {path}:{keys[0]})"
                        )
                    key = keys[0] if len(keys) == 1 else "data"
                if key not in keys:
                    raise InputError(f"{path}: has no array named {key!r}; it holds {', '.join(keys)}")
                values = archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable {path.suffix} array ({error})") from None
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise InputError(f"{path}: expected a 2-D array (rows are samples), got shape {values.shape}")
    if np.issubdtype(values.dtype, np.timedelta64) or np.issubdtype(values.dtype, np.datetime64):
        raise InputError(f"{path}: holds times ({values.dtype}), not numbers; convert them first")
    if np.issubdtype(values.dtype, np.complexfloating):
        raise InputError(f"{path}: holds complex numbers ({values.dtype}); a density is over real values")
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise InputError(f"{path}: expected numbers, got dtype {values.dtype}")
    if len(values) == 0:
        raise InputError(f"{path}: the file has no data rows")
    return values, [f"x{j}" for j in range(values.shape[1])]


def _read_parquet(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        import pyarrow.parquet as parquet
        import pyarrow.types as types
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'flowfit[data]'") from None
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    kinds = (types.is_integer, types.is_floating, types.is_boolean, types.is_decimal)
    for field in table.schema:
        if not any(kind(field.type) for kind in kinds):
            raise InputError(
                f"{path}: column {field.name!r} holds {field.type}, not numbers; "
                "flowfit reads tables of numbers: drop or convert it"
            )
    names = [field.name for field in table.schema]
    columns = [table.column(n).cast("float64").to_numpy(zero_copy_only=False) for n in names]
    return np.column_stack(columns).astype(np.float64), names


def _open_delimited(path: Path) -> Table:
    """A CSV/TSV file: the header (if any) now, the rows lazily."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
        numbered = ((number, line) for number, line in enumerate(handle, start=1) if line.strip())
        first = next(numbered, None)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    if first is None:
        handle.close()
        raise InputError(f"{path}: the file is empty")
    delimiter = "\t" if path.suffix == ".tsv" or ("\t" in first[1] and "," not in first[1]) else ","
    cells = next(csv.reader([first[1]], delimiter=delimiter))
    has_header = not all(_is_number(cell) for cell in cells)
    names = [c.strip() for c in cells] if has_header else [f"x{j}" for j in range(len(cells))]
    pending = [] if has_header else [first]
    started = False

    def blocks(rows: int) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal started
        if started:
            raise RuntimeError("the rows of a text table can be read once")
        started = True
        rows_read, block = 0, list(pending)
        with handle:
            try:
                for item in numbered:
                    block.append(item)
                    if len(block) == rows:
                        yield rows_read, _parse(path, block, names, delimiter)
                        rows_read, block = rows_read + len(block), []
            except UnicodeDecodeError:
                raise InputError(f"{path}: not a text file") from None
            if block:
                yield rows_read, _parse(path, block, names, delimiter)

    try:
        return Table(str(path), names, has_header, blocks)
    except InputError:
        handle.close()
        raise


def _parse(path: Path, block: list[tuple[int, str]], names: list[str], delimiter: str) -> np.ndarray:
    """Parse numbered lines into a float array; on failure, name the first bad line and cell."""
    for number, line in block:  # float() also reads "1_000" and non-ASCII digits: a typo, not a number
        if "_" in line or not line.isascii():
            cells = next(csv.reader([line], delimiter=delimiter))
            cell = next(c for c in cells if "_" in c or not c.isascii())
            raise InputError(f"{path}: line {number}: {cell.strip()!r} is not a plain number")
    rows = list(csv.reader((line for _, line in block), delimiter=delimiter))
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError:
        values = None
    if values is not None and values.ndim == 2 and values.shape[1] == len(names):
        _check_no_underflow(path, block, rows, names, values)
        return values
    for (number, _), row in zip(block, rows, strict=True):
        if len(row) != len(names):
            raise InputError(f"{path}: line {number} has {len(row)} fields, expected {len(names)}")
        for name, cell in zip(names, row, strict=True):
            if not _is_number(cell):
                raise InputError(f"{path}: line {number}, column {name!r}: {cell.strip()!r} is not a number")
    raise InputError(f"{path}: could not read the lines {block[0][0]}..{block[-1][0]}")


def _check_no_underflow(
    path: Path, block: list[tuple[int, str]], rows: list[list[str]], names: list[str], values: np.ndarray
) -> None:
    """Refuse a nonzero number that float64 reads as 0 (``1e-400``); ``1e400`` becomes inf and is
    refused with the other non-finite values."""
    for i, j in np.argwhere(values == 0):
        cell = rows[i][j].strip()
        if any(digit in "123456789" for digit in cell.lower().partition("e")[0]):
            line, name = block[i][0], names[j]
            raise InputError(f"{path}: line {line}, column {name!r}: {cell!r} is too small for float64 (it reads as 0)")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# -- values against the model's dtype ------------------------------------------------------------
def check_values(
    values: Tensor | np.ndarray, dtype: torch.dtype, names: Sequence[str], source: str, first_row: int = 0
) -> None:
    """Refuse values the model's ``dtype`` cannot hold: NaN or inf, magnitudes above its
    largest number (they would become inf) and nonzero magnitudes below its smallest normal
    number (they would become 0 or lose their digits). The error names the row (the block's
    rows are numbered from ``first_row + 1``) and the column."""
    problem = first_unfit(values, dtype)
    if problem is not None:
        row, col, what = problem
        raise InputError(f"{source}: row {first_row + row + 1}, column {names[col]!r} {what}")


def first_unfit(values: Tensor | np.ndarray, dtype: torch.dtype) -> tuple[int, int, str] | None:
    """``(row, column, what is wrong)`` of the first value ``dtype`` cannot hold, or None."""
    values = torch.as_tensor(values)
    info, name = torch.finfo(dtype), _dtype(dtype)
    if values.is_floating_point() and torch.finfo(values.dtype).max <= info.max:  # the common case:
        magnitude = values.abs()  # no conversion, and no value can be too large for ``dtype``
        if bool(torch.isfinite(magnitude).all()) and not bool(((magnitude > 0) & (magnitude < info.tiny)).any()):
            return None
    values = values.to(torch.float64)
    hint = "" if dtype == torch.float64 else "; rescale the column or use --dtype float64"
    magnitude = values.abs()
    problems = (
        (~torch.isfinite(values), "is {} (NaN and inf are not data)"),
        (magnitude > info.max, f"is {{:g}}, beyond the largest {name} ({info.max:.3g})"),
        ((magnitude > 0) & (magnitude < info.tiny), f"is {{:g}}, below the smallest normal {name} ({info.tiny:.3g})"),
    )
    for mask, message in problems:
        if bool(mask.any()):
            row, col = (int(i) for i in mask.nonzero()[0])
            return row, col, message.format(values[row, col].item()) + ("" if "NaN" in message else hint)
    return None


def check_resolution(low: Tensor, high: Tensor, dtype: torch.dtype, names: Sequence[str], source: str) -> None:
    """Refuse columns whose values ``dtype`` rounds by more than 1% of their spread (say
    timestamps near 1.7e9 that vary by seconds, in float32): their density would be of the
    rounding, not of the data."""
    low, high = low.double(), high.double()
    largest = torch.maximum(low.abs(), high.abs()).to(dtype)
    step = (torch.nextafter(largest, torch.full_like(largest, math.inf)) - largest).double()  # the spacing there
    spread = high - low
    coarse = (spread > 0) & (step > 0.01 * spread)
    if bool(coarse.any()):
        j = int(coarse.nonzero()[0])
        raise InputError(
            f"{source}: column {names[j]!r} spans {low[j].item():.12g} .. {high[j].item():.12g}, which "
            f"{_dtype(dtype)} rounds in steps of {step[j].item():.3g}; subtract an offset or use --dtype float64"
        )


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# -- rows on disk ------------------------------------------------------------------------------
class _AllRows:
    """Every row of the file, in file order (position ``i`` is row ``i``)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def at(self, positions: Tensor) -> Tensor:
        return positions.long()

    def in_file_order(self, chunk_rows: int) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, self.n, chunk_rows):
            rows = torch.arange(start, min(self.n, start + chunk_rows))
            yield rows, rows


class _ListedRows:
    """Row numbers listed one by one (int64: 8 bytes a row), for a selection made by hand."""

    def __init__(self, rows: Tensor) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def at(self, positions: Tensor) -> Tensor:
        return self.rows[positions]

    def in_file_order(self, chunk_rows: int) -> Iterator[tuple[Tensor, Tensor]]:
        for positions in torch.argsort(self.rows, stable=True).split(chunk_rows):
            yield positions, self.rows[positions]


class _ShuffledRows:
    """Positions ``segment.items()`` of a parent selection: a part of a shuffled split, held
    as a seeded permutation and two bounds (no per-row array)."""

    def __init__(self, parent: _AllRows | _ListedRows | _ShuffledRows, segment: Segment) -> None:
        self.parent, self.segment = parent, segment

    def __len__(self) -> int:
        return len(self.segment)

    def at(self, positions: Tensor) -> Tensor:
        return self.parent.at(self.segment.items(positions))

    def in_file_order(self, chunk_rows: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The parent's rows in file order, keeping those in this part (by the permutation's
        inverse: a chunk at a time)."""
        for parent_positions, rows in self.parent.in_file_order(chunk_rows):
            positions = self.segment.positions_of(parent_positions)
            kept = positions >= 0
            if bool(kept.any()):
                yield positions[kept], rows[kept]


class Rows:
    """Rows of a table on disk, read a batch at a time: train on a memory-mapped ``.npy``
    larger than memory.

    ``Rows(array)`` wraps a 2-D array (typically ``np.load(path, mmap_mode="r")``);
    ``rows`` (row numbers) and ``columns`` (column numbers) select a part of it without
    reading anything. :meth:`take` reads the rows at some positions as a float64 tensor (in
    increasing row order on disk, then put back in the order asked for); :meth:`subset`
    selects rows: a :class:`~flowfit.shuffle.Segment` (a part of a shuffled split) costs no
    memory per row, a tensor of positions 8 bytes a row; :meth:`ranges` is one streaming
    pass that checks every value is finite and returns each column's minimum and maximum;
    :meth:`check` checks every value against a dtype.
    """

    def __init__(
        self, array: np.ndarray, rows: Tensor | None = None, columns: Sequence[int] | None = None, name: str = "data"
    ) -> None:
        if array.ndim != 2:
            raise InputError(f"{name}: expected a 2-D array (rows are samples), got shape {array.shape}")
        self.array, self.name = array, name
        self._index: _AllRows | _ListedRows | _ShuffledRows = (
            _AllRows(len(array)) if rows is None else _ListedRows(torch.as_tensor(rows, dtype=torch.long))
        )
        self.columns = list(range(array.shape[1])) if columns is None else list(columns)
        self._ranges: tuple[Tensor, Tensor] | None = None  # computed once: a selection never changes

    @property
    def shape(self) -> tuple[int, int]:
        return len(self._index), len(self.columns)

    def __len__(self) -> int:
        return len(self._index)

    def _like(self, index: _AllRows | _ListedRows | _ShuffledRows, columns: list[int]) -> Rows:
        rows = copy.copy(self)
        rows._index, rows.columns, rows._ranges = index, columns, None
        return rows

    def subset(self, positions: Tensor | Segment) -> Rows:
        """The rows at ``positions`` (of this selection), still on disk: a tensor of
        positions, or a part of a permutation of ``range(len(self))``."""
        if isinstance(positions, Segment):
            if len(positions.permutation) != len(self):
                raise ValueError(f"a part of a shuffle of {len(positions.permutation)} rows selects from {len(self)}")
            return self._like(_ShuffledRows(self._index, positions), self.columns)
        return self._like(_ListedRows(self._index.at(self._checked(positions))), self.columns)

    def select(self, columns: Sequence[int]) -> Rows:
        """Columns ``columns`` (of this selection), still on disk."""
        return self._like(self._index, [self.columns[j] for j in columns])

    def row_numbers(self, positions: Tensor | None = None) -> Tensor:
        """The file's row numbers (from 0) at ``positions`` of this selection (default: all)."""
        return self._index.at(self._checked(torch.arange(len(self)) if positions is None else positions))

    def take(self, positions: Tensor | None = None) -> Tensor:
        """Read the rows at ``positions`` (default: all) as a float64 tensor ``(len, d)``."""
        rows = self.row_numbers(positions).numpy()
        order = np.argsort(rows, kind="stable")
        values = np.empty((len(rows), len(self.columns)), dtype=np.float64)
        values[order] = self.array[rows[order]][:, self.columns]
        return torch.from_numpy(values)

    def blocks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[Tensor, Tensor]]:
        """``(row numbers in the file, values)`` blocks, read front to back (at most
        ``chunk_rows`` rows each)."""
        for _, rows in self._index.in_file_order(chunk_rows):
            yield rows, torch.from_numpy(np.asarray(self.array[rows.numpy()][:, self.columns], dtype=np.float64))

    def _checked(self, positions: Tensor) -> Tensor:
        if positions.dtype.is_floating_point or positions.dtype == torch.bool:
            raise TypeError(f"positions must be integers, got {positions.dtype}")
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= len(self)):
            raise IndexError(f"{self.name}: positions must lie in 0..{len(self) - 1}")
        return positions

    def ranges(self, chunk_rows: int = CHUNK_ROWS) -> tuple[Tensor, Tensor]:
        """Each column's ``(minimum, maximum)`` over the selected rows, in one streaming pass;
        raises :class:`~flowfit.errors.InputError` at the first NaN or inf."""
        if self._ranges is not None:
            return self._ranges
        if len(self) == 0:
            raise InputError(f"{self.name} has no rows")
        low = torch.full((len(self.columns),), math.inf, dtype=torch.float64)
        high = -low
        for rows, block in self.blocks(chunk_rows):
            bad = ~torch.isfinite(block)
            if bad.any():
                row, col = (int(i) for i in bad.nonzero()[0])
                raise InputError(
                    f"{self.name}: row {int(rows[row]) + 1}, column {self.columns[col]} is "
                    f"{block[row, col].item()} (NaN and inf are not data)"
                )
            low, high = torch.minimum(low, block.min(dim=0).values), torch.maximum(high, block.max(dim=0).values)
        self._ranges = (low, high)
        return low, high

    def check(self, dtype: torch.dtype, names: Sequence[str]) -> None:
        """:func:`check_values` on every selected row, streaming (the error names the row's
        number in the file)."""
        for rows, block in self.blocks():
            problem = first_unfit(block, dtype)
            if problem is not None:
                row, col, what = problem
                raise InputError(f"{self.name}: row {int(rows[row]) + 1}, column {names[col]!r} {what}")


def read_rows(source: Tensor | Rows, index: Tensor) -> Tensor:
    """The rows ``index`` of a tensor or of :class:`Rows` (read from disk), as a tensor."""
    return source.take(index) if isinstance(source, Rows) else source[index.to(source.device)]


def select_rows(source: Tensor | Rows, index: Tensor | Segment) -> Tensor | Rows:
    """The rows ``index`` (positions, or a part of a shuffled split) of a tensor, or of
    :class:`Rows` (left on disk, and for a part, with no per-row array)."""
    if isinstance(source, Rows):
        return source.subset(index)
    return source[index.items() if isinstance(index, Segment) else index]


def open_rows(path: str | Path) -> tuple[Rows, list[str]]:
    """A ``.npy`` file as :class:`Rows` (memory-mapped: nothing is read until asked) and its
    column names ``x0, x1, ...``; the checks of :func:`open_table` except finiteness, which
    :meth:`Rows.ranges` checks in its pass."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix != ".npy":
        raise InputError(f"{path}: only .npy files are read from disk batch by batch")
    array, names = _read_array(path)
    return Rows(array, name=str(path)), names
