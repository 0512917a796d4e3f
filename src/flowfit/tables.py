"""Reading the user's tables, distrusting every row.

A table is a file whose rows are samples: CSV/TSV (a first row that is not all numbers is
the header; a UTF-8 byte-order mark is dropped), ``.npy``, ``.npz`` (its only array, the one
named ``data``, or ``FILE.npz:NAME``) or ``.parquet`` (needs pyarrow). Only the columns asked
for are read: the others may hold anything (an ``id``, words, dates). A column is read as
numbers (float64) or as labels (text, for a categorical column); :meth:`Table.kinds` says
which each column holds. Ragged or non-numeric lines, complex arrays, and duplicate or empty
column names are errors that name the file, row and column.

A *missing* cell is an empty one, one that reads NaN, or, in a column of numbers, one of the
marks other programs write for one (``NA``, ``N/A``, ``#N/A``, ``NULL``, ``None``, ``<NA>``,
``?``; any case: :data:`MISSING_CELLS`); inf is never missing, it is an error. In a column of labels
those marks are labels (``NA`` may be a country), and the run says so. By default a missing
cell is an error that names its row and column; readers asked to keep them mark them (NaN in
numbers, ``None`` in labels) and the caller applies the user's policy (``--missing``).
:func:`check_values` then checks that the values fit the model's dtype.

:class:`Rows` leaves a ``.npy`` file on disk (memory-mapped) and reads a batch at a time;
:class:`MappedPages` releases the pages that a pass over such a file mapped into the process.
"""

from __future__ import annotations

import copy
import csv
import math
import mmap
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowfit.errors import InputError
from flowfit.shuffle import Segment

#: Rows read at a time when a table is streamed.
CHUNK_ROWS = 65536
#: What a column holds: numbers, or text (labels of a categorical column).
NUMBER, TEXT = "number", "text"
#: What a missing cell may be (``--missing``): an error, a dropped row, or (when scoring) a
#: cell summed out of the likelihood exactly.
MISSING_POLICIES = ("error", "drop", "marginal")
#: What a cell of a column of numbers reads when it is missing (lower case, stripped): empty,
#: NaN, and the marks of R (``NA``), spreadsheets (``#N/A``), SQL (``NULL``), pandas and the UCI
#: repository (``?``).
MISSING_CELLS = ("", "nan", "-nan", "na", "n/a", "#n/a", "<na>", "null", "none", "?")
#: The advice a missing-cell error ends with.
MISSING_HINT = "pass --missing drop to leave such rows out"


@dataclass
class RawBlock:
    """Some consecutive rows of a table, the asked-for columns as the file holds them: for a
    text file, strings as written; for an array file, float64; for Parquet, float64 or
    labels (``None`` for a null)."""

    #: the index of the first row (data rows counted from 0)
    start: int
    #: the file's line number of each row (text files), for error messages
    lines: list[int] | None
    columns: list[np.ndarray]
    #: the rows whose lines hold an underscore or a non-ASCII character (text files): their
    #: cells may read as numbers in Python (``1_000``, ``١``) without being plain numbers
    odd: list[int] | None = None

    def where(self, row: int) -> str:
        """Where the block's ``row`` is: ``line L`` of a text file, else ``row N`` (from 1)."""
        return f"line {self.lines[row]}" if self.lines is not None else f"row {self.start + row + 1}"


@dataclass
class Block:
    """Some consecutive rows of a table read for a model: numbers and labels."""

    #: the index of the first row (data rows counted from 0)
    start: int
    #: float64, shape ``(n, number columns)``; NaN marks a missing cell (when kept)
    values: np.ndarray
    #: object array of ``str``, shape ``(n, label columns)``; ``None`` marks a missing cell
    labels: np.ndarray
    #: the file's line number of each row (text files), for error messages
    lines: list[int] | None = None

    def where(self, row: int) -> str:
        """Where the block's ``row`` is: ``line L`` of a text file, else ``row N`` (from 1)."""
        return f"line {self.lines[row]}" if self.lines is not None else f"row {self.start + row + 1}"

    @property
    def missing(self) -> np.ndarray:
        """Which rows have a missing cell, shape ``(n,)``, bool."""
        return np.isnan(self.values).any(axis=1) | (self.labels == None).any(axis=1)  # noqa: E711

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Table:
    """A table file opened for reading: its column names, and its rows read lazily (each
    call of :meth:`chunks` or :meth:`blocks` reads the file again, front to back)."""

    #: the file, as the user named it (``FILE.npz:NAME`` included)
    source: str
    names: list[str]
    #: whether the names came from a header row (``False``: ``x0, x1, ...`` by position)
    has_header: bool
    #: ``(rows, column positions) -> blocks`` of the file's raw cells
    _raw: Callable[[int, list[int]], Iterator[RawBlock]]
    #: what each column holds, when the file's format says (arrays, Parquet); a text file's
    #: columns are told by reading them (:meth:`kinds`). Parquet types that are neither
    #: numbers nor text are named here ("timestamp[ns]") and refused when asked for.
    _known_kinds: list[str] | None = None

    def __post_init__(self) -> None:
        for j, name in enumerate(self.names):
            if not name:
                raise InputError(f"{self.source}: column {j + 1} of the header has no name; name it or drop it")
        seen = set()
        for name in self.names:
            if name in seen:
                raise InputError(f"{self.source}: the header names column {name!r} twice; column names must be unique")
            seen.add(name)

    def kinds(self, columns: Sequence[str] | None = None) -> dict[str, str]:
        """What each of ``columns`` (default: all) holds: :data:`NUMBER` when every cell that
        is not missing reads as a plain number, else :data:`TEXT` (a text file is read
        through once to tell; an array file holds numbers). A Parquet column of another type
        (dates, lists) is an error once asked for."""
        columns = list(self.names if columns is None else columns)
        positions = pick(self.names, columns, self.source)
        if self._known_kinds is not None:
            kinds = {name: self._known_kinds[j] for name, j in zip(columns, positions, strict=True)}
            for name, kind in kinds.items():
                if kind not in (NUMBER, TEXT):
                    raise InputError(
                        f"{self.source}: column {name!r} holds {kind}, neither numbers nor text; "
                        "drop it, convert it, or leave it out of --columns"
                    )
            return kinds
        text = [False] * len(columns)
        for raw in self._raw(CHUNK_ROWS, positions):
            for k, cells in enumerate(raw.columns):
                if not text[k]:
                    text[k] = _first_not_a_number(cells, raw.odd, _all_numbers(cells)) is not None
        return {name: TEXT if is_text else NUMBER for name, is_text in zip(columns, text, strict=True)}

    def blocks(
        self,
        numbers: Sequence[str],
        labels: Sequence[str] = (),
        rows: int = CHUNK_ROWS,
        keep_missing: bool = False,
    ) -> Iterator[Block]:
        """Blocks of at most ``rows`` rows: the ``numbers`` columns as float64 and the
        ``labels`` columns as text. A cell of a ``numbers`` column that is not a number, an
        inf, or (unless ``keep_missing``) a missing cell is an error naming the row and the
        column; kept missing cells are NaN or ``None`` (see :attr:`Block.missing`)."""
        numbers, labels = list(numbers), list(labels)
        positions = pick(self.names, numbers + labels, self.source)
        for raw in self._raw(rows, positions):
            values = [
                self._numbers(raw, cells, name)
                for name, cells in zip(numbers, raw.columns[: len(numbers)], strict=True)
            ]
            texts = [self._labels(cells) for cells in raw.columns[len(numbers) :]]
            size = len(raw.columns[0]) if raw.columns else 0
            block = Block(
                raw.start,
                np.column_stack(values) if values else np.zeros((size, 0)),
                np.column_stack(texts) if texts else np.empty((size, 0), dtype=object),
                raw.lines,
            )
            if not keep_missing and block.missing.any():
                row = int(np.argmax(block.missing))
                holes = [*np.isnan(block.values[row]), *(block.labels[row] == None)]  # noqa: E711
                column = holes.index(True)
                what = ""
                if column < len(numbers):
                    cell = raw.columns[column][row]
                    text = cell.strip() if isinstance(cell, str) else "nan"
                    what = " (empty)" if not text else " (NaN)" if text.lower() in ("nan", "-nan") else f" ({text!r})"
                raise InputError(
                    f"{self.source}: {raw.where(row)}, column {[*numbers, *labels][column]!r} is missing{what}; "
                    f"{MISSING_HINT}"
                )
            yield block

    def chunks(self, rows: int = CHUNK_ROWS, columns: Sequence[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(index of the first row, float64 values)`` blocks of at most ``rows`` rows of
        ``columns`` (default: all), each checked: a missing cell, NaN or inf is an error that
        names the row (counting data rows from 1) and the column."""
        for block in self.blocks(self.names if columns is None else columns, rows=rows):
            yield block.start, block.values

    def read(self, columns: Sequence[str] | None = None) -> np.ndarray:
        """Every row of ``columns`` (default: all), float64, shape ``(rows, columns)``."""
        blocks = [block for _, block in self.chunks(columns=columns)]
        if not blocks:
            raise InputError(f"{self.source}: the file has no data rows")
        return np.concatenate(blocks)

    def read_all(self, numbers: Sequence[str], labels: Sequence[str] = (), keep_missing: bool = False) -> Block:
        """Every row, as one :class:`Block` (see :meth:`blocks`)."""
        blocks = list(self.blocks(numbers, labels, keep_missing=keep_missing))
        if not blocks:
            raise InputError(f"{self.source}: the file has no data rows")
        return Block(0, np.concatenate([b.values for b in blocks]), np.concatenate([b.labels for b in blocks]))

    def _numbers(self, raw: RawBlock, cells: np.ndarray, name: str) -> np.ndarray:
        """A column of a raw block as float64: checked, NaN for a missing cell."""
        if cells.dtype == object:  # Parquet text
            raise InputError(
                f"{self.source}: column {name!r} holds string, not numbers; "
                "leave it out of --columns, or model it as a categorical column"
            )
        if cells.dtype.kind in "US":
            try:  # the common case: every cell a number, read in one pass
                values = cells.astype(np.float64)
            except ValueError:
                values = None
            bad = _first_not_a_number(cells, raw.odd, values is not None)
            if bad is not None:
                cell = str(cells[bad]).strip()
                what = "is not a plain number" if reads_as_number(cell) else "is not a number"
                raise InputError(f"{self.source}: {raw.where(bad)}, column {name!r}: {cell!r} {what}")
            if values is None:  # missing cells (empty, NA, ...)
                stripped = np.char.strip(cells)
                values = np.where(_missing(stripped), "nan", stripped).astype(np.float64)
            _check_no_underflow(self.source, raw, cells, values, name)
        else:
            values = np.asarray(cells, dtype=np.float64)
        infinite = np.isinf(values)
        if infinite.any():
            row = int(np.argmax(infinite))
            raise InputError(
                f"{self.source}: {raw.where(row)}, column {name!r} is {values[row]} (NaN and inf are not data)"
            )
        return values

    @staticmethod
    def _labels(cells: np.ndarray) -> np.ndarray:
        """A column of a raw block as labels (``str``; ``None`` for a missing cell); numbers
        (an array file's) are written as integers when they are whole."""
        if cells.dtype.kind == "f":
            return np.array([_number_label(v) for v in cells.tolist()], dtype=object)
        text = np.array([None if v is None else str(v).strip() for v in cells.tolist()], dtype=object)
        text[[v is not None and (not v or v.lower() == "nan") for v in text]] = None
        return text


def _number_label(value: float) -> str | None:
    """A number as a label: whole numbers as integers (``3``), others as written by repr."""
    if math.isnan(value):
        return None
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)


def open_table(spec: str | Path) -> Table:
    """Open the table ``spec`` (a path, or ``FILE.npz:NAME``) for reading."""
    path, key = split_spec(str(spec))
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return _open_parquet(path)
    if path.suffix in (".npy", ".npz"):
        values, names = _read_array(path, key)

        pages = MappedPages(values)

        def raw(rows: int, positions: list[int]) -> Iterator[RawBlock]:
            for start in range(0, len(values), rows):
                part = values[start : start + rows]
                block = RawBlock(start, None, [np.array(part[:, j], dtype=np.float64) for j in positions])
                pages.release()
                yield block

        return Table(str(spec), names, False, raw, [NUMBER] * len(names))
    if key is not None:
        raise InputError(f"{spec}: only .npz files hold named arrays")
    return _open_delimited(path)


def load_table(spec: str | Path, columns: Sequence[str] | None = None) -> tuple[Tensor, list[str]]:
    """Read a whole table of numbers (see :func:`open_table`): a float64 tensor ``(n, d)``
    and the column names; ``columns`` picks columns by name (the others are not read, and
    may hold text)."""
    table = open_table(spec)
    names = list(table.names if columns is None else columns)
    return torch.from_numpy(np.ascontiguousarray(table.read(names))), names


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


def _open_parquet(path: Path) -> Table:
    """A Parquet file: numeric columns as float64 (a null is missing), text and dictionary
    (categorical) columns as labels, other types named (and refused when asked for)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as parquet
        import pyarrow.types as types
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'flowfit[data]'") from None
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    numeric = (types.is_integer, types.is_floating, types.is_boolean, types.is_decimal)
    textual = (types.is_string, types.is_large_string)

    def kind(field_type: Any) -> str:
        if any(test(field_type) for test in numeric):
            return NUMBER
        if any(test(field_type) for test in textual) or (
            types.is_dictionary(field_type) and any(test(field_type.value_type) for test in textual)
        ):
            return TEXT
        return str(field_type)

    kinds = [kind(field.type) for field in table.schema]
    names = [field.name for field in table.schema]
    if table.num_rows == 0:
        raise InputError(f"{path}: the file has no data rows")
    cache: dict[int, np.ndarray] = {}

    def column(j: int) -> np.ndarray:
        if j not in cache:
            if kinds[j] == NUMBER:
                cache[j] = table.column(j).cast("float64").to_numpy(zero_copy_only=False).astype(np.float64)
            elif kinds[j] == TEXT:
                cache[j] = np.array(table.column(j).cast(pa.string()).to_pylist(), dtype=object)
            else:
                raise InputError(
                    f"{path}: column {names[j]!r} holds {kinds[j]}, neither numbers nor text; "
                    "drop it, convert it, or leave it out of --columns"
                )
        return cache[j]

    def raw(rows: int, positions: list[int]) -> Iterator[RawBlock]:
        for start in range(0, table.num_rows, rows):
            yield RawBlock(start, None, [column(j)[start : start + rows] for j in positions])

    return Table(str(path), names, True, raw, kinds)


def _open_delimited(path: Path) -> Table:
    """A CSV/TSV file: the header (if any) now, the rows lazily (the file is opened again
    for each pass over them)."""

    def numbered_lines(handle: Any) -> Iterator[tuple[int, str]]:
        return ((number, line) for number, line in enumerate(handle, start=1) if line.strip())

    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            first = next(numbered_lines(handle), None)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    if first is None:
        raise InputError(f"{path}: the file is empty")
    delimiter = "\t" if path.suffix == ".tsv" or ("\t" in first[1] and "," not in first[1]) else ","
    cells = next(csv.reader([first[1]], delimiter=delimiter))
    has_header = not all(reads_as_number(cell) or not cell.strip() for cell in cells)
    names = [c.strip() for c in cells] if has_header else [f"x{j}" for j in range(len(cells))]

    def raw(rows: int, positions: list[int]) -> Iterator[RawBlock]:
        rows_read, block = 0, []
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = numbered_lines(handle)
            if has_header:
                next(lines)
            try:
                for item in lines:
                    block.append(item)
                    if len(block) == rows:
                        yield _split(path, rows_read, block, len(names), delimiter, positions)
                        rows_read, block = rows_read + len(block), []
            except UnicodeDecodeError:
                raise InputError(f"{path}: not a text file") from None
        if block:
            yield _split(path, rows_read, block, len(names), delimiter, positions)

    return Table(str(path), names, has_header, raw)


def _split(
    path: Path, start: int, block: list[tuple[int, str]], width: int, delimiter: str, positions: list[int]
) -> RawBlock:
    """Numbered lines into the cells of the columns at ``positions`` (strings as written);
    a line with the wrong number of fields is an error that names it."""
    rows = list(csv.reader((line for _, line in block), delimiter=delimiter))
    if any(len(row) != width for row in rows):
        number, row = next((number, row) for (number, _), row in zip(block, rows, strict=True) if len(row) != width)
        raise InputError(f"{path}: line {number} has {len(row)} fields, expected {width}")
    cells = np.array(rows, dtype=str).reshape(len(rows), width)
    odd = [i for i, (_, line) in enumerate(block) if "_" in line or not line.isascii()]
    return RawBlock(start, [number for number, _ in block], [cells[:, j] for j in positions], odd)


def _missing(stripped: np.ndarray) -> np.ndarray:
    """Which cells (stripped strings) of a column of numbers are missing (:data:`MISSING_CELLS`)."""
    return np.isin(np.char.lower(stripped), MISSING_CELLS)


def _first_not_a_number(cells: np.ndarray, odd: list[int] | None = None, all_numbers: bool = False) -> int | None:
    """The position of the first cell of a text column that is neither missing
    (:data:`MISSING_CELLS`) nor a plain number (``1_000`` and non-ASCII digits, which Python
    reads, are not), or None. ``odd``: the only rows that can hold an underscore or a non-ASCII character (default:
    any); ``all_numbers``: every cell is known to read as a number."""
    if not all_numbers:
        stripped = np.char.strip(cells)
        missing = _missing(stripped)
        try:
            np.where(missing, "nan", stripped).astype(np.float64)
        except ValueError:
            return next(i for i, cell in enumerate(stripped) if not missing[i] and not reads_as_number(cell))
    rows = range(len(cells)) if odd is None else odd
    return next((i for i in rows if "_" in cells[i] or not str(cells[i]).isascii()), None)


def _all_numbers(cells: np.ndarray) -> bool:
    """Whether every cell of a text column reads as a number (the fast test)."""
    try:
        cells.astype(np.float64)
    except ValueError:
        return False
    return True


def _check_no_underflow(source: str, raw: RawBlock, cells: np.ndarray, values: np.ndarray, name: str) -> None:
    """Refuse a nonzero number that float64 reads as 0 (``1e-400``); ``1e400`` becomes inf and is
    refused with the other non-finite values."""
    for i in np.flatnonzero(values == 0):
        cell = str(cells[i]).strip()
        if any(digit in "123456789" for digit in cell.lower().partition("e")[0]):
            raise InputError(
                f"{source}: {raw.where(int(i))}, column {name!r}: {cell!r} is too small for float64 (it reads as 0)"
            )


def reads_as_number(cell: str) -> bool:
    """Whether Python reads ``cell`` as a float."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def refuse_numbers_as_labels(labels: np.ndarray, name: str, source: str, advice: str) -> None:
    """A text column most of whose cells are numbers is a column of numbers with a bad cell
    (a typo, a unit, a placeholder), not labels: an :class:`~flowfit.errors.InputError` naming
    the first cell that is neither a number nor a missing mark, ending with ``advice`` (what
    else the user can do). A text column of numbers only (a Parquet or pandas column of
    strings) is refused too: read as labels, each distinct number would be a category. Missing
    cells (``None``, :data:`MISSING_CELLS`) are left out."""
    cells = (str(label).strip() for label in labels.tolist())
    present = [(row, cell) for row, cell in enumerate(cells) if cell.lower() not in MISSING_CELLS]
    numbers = [reads_as_number(cell) and "_" not in cell and cell.isascii() for _, cell in present]  # plain ones
    odd = next((item for item, number in zip(present, numbers, strict=True) if not number), None)
    if present and odd is None:
        raise InputError(f"{source}: column {name!r} holds numbers stored as text; convert it to numbers, or {advice}")
    if odd is not None and 2 * sum(numbers) > len(present):
        row, cell = odd
        raise InputError(
            f"{source}: column {name!r} holds numbers but row {row + 1} holds {cell!r}; fix that cell, or {advice}"
        )


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
#: Rows read at once from a memory-mapped file from which on the pages they mapped are
#: released: a chunk of a pass or a large sample, never a training batch (even one of
#: thousands of rows, whose pages the next batches would fault in again).
RELEASE_ROWS = CHUNK_ROWS


class MappedPages:
    """Releases the pages that a large read from a memory-mapped array
    (``np.load(path, mmap_mode="r")``) mapped into this process.

    Reading a row of a mapped file maps its page (and, on Linux, up to 64 KiB around it),
    and a mapped page counts in the process's resident memory until the mapping ends: one
    pass over the file would leave all of it there. ``madvise(MADV_DONTNEED)`` unmaps them
    (the file is read-only, so nothing is lost; the pages stay in the system's file cache, and
    the next read maps them again cheaply). Small reads (training batches) are left mapped:
    unmapping after each one makes the next batches fault their pages in again, which costs
    more than reading them (measured by hand, not in a benchmark: over ten times as much for 256
    rows of a 10-million-row file), and the kernel reclaims clean file pages whenever memory
    runs short. Arrays that are not file-mapped are left alone."""

    def __init__(self, array: np.ndarray) -> None:
        base: Any = array
        while base is not None and not isinstance(base, mmap.mmap):
            base = getattr(base, "base", None)
        self.mapping: mmap.mmap | None = base if hasattr(mmap, "MADV_DONTNEED") else None

    def read(self, rows: int) -> None:
        """``rows`` rows were just read (and copied out): release their pages if they are many."""
        if rows >= RELEASE_ROWS:
            self.release()

    def release(self) -> None:
        """Unmap every page of the file from this process (a pass's block was read)."""
        if self.mapping is not None:
            self.mapping.madvise(mmap.MADV_DONTNEED)


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
        self._pages = MappedPages(array)  # shared by selections of it
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
        self._pages.read(len(rows))
        return torch.from_numpy(values)

    def blocks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[Tensor, Tensor]]:
        """``(row numbers in the file, values)`` blocks, read front to back (at most
        ``chunk_rows`` rows each)."""
        for _, rows in self._index.in_file_order(chunk_rows):
            block = np.asarray(self.array[rows.numpy()][:, self.columns], dtype=np.float64)
            self._pages.release()
            yield rows, torch.from_numpy(block)

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
                where = f"{self.name}: row {int(rows[row]) + 1}, column {self.columns[col]}"
                if torch.isnan(block[row, col]):
                    raise InputError(f"{where} is missing (NaN); {MISSING_HINT}")
                raise InputError(f"{where} is {block[row, col].item()} (NaN and inf are not data)")
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
