"""A run's data: what ``flowfit train --data`` names, resolved into training, validation and
test sets, with every row checked before any training starts.

``--data`` is a toy name (fresh draws every step; fixed validation, test and reference
draws), ``image:PATH`` or ``logo`` (points drawn from a picture, read once at the start), a
table that ships inside a package (``saratoga``, ``digits``) or a file (see
:mod:`flowfit.tables`). A table is
shuffled with the seed and split 80/10/10; a ``.npy`` file stays on disk.

Every row of a table (training, validation and test) is checked against the model's dtype
and against each column's preprocessing, and the error names the row and the column:
a value that only the test split holds must not become ``inf`` in a metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowfit.categories import INTEGER as INTEGER_LABELS
from flowfit.categories import TEXT as TEXT_LABELS
from flowfit.categories import Categories, integer_labels, sorted_levels
from flowfit.datasets import LOGO, TABLES, TOYS, PictureDensity
from flowfit.errors import InputError
from flowfit.preprocess import ColumnPlan, check_plans, make_plan
from flowfit.shuffle import Permutation, split
from flowfit.tables import (
    MISSING_CELLS,
    MISSING_HINT,
    MISSING_POLICIES,
    NUMBER,
    TEXT,
    Rows,
    Table,
    check_resolution,
    check_values,
    open_rows,
    open_table,
    pick,
    read_rows,
    refuse_numbers_as_labels,
    select_rows,
    split_spec,
)

#: Seeds of the fixed validation and test draws from a toy generator (the test seed is the
#: one of the shared reference protocol).
VAL_SEED, TEST_SEED = 987_654_321, 12345
TEST_SIZE = 100_000
#: Training rows (at most) that ``--preprocess auto`` looks at when the data stay on disk.
PLAN_ROWS = 1_000_000
#: What ``--preprocess auto`` means for bundled tables whose nature is known: digits are
#: pixel intensities 0..16, blank border pixels included.
TABLE_PREPROCESS = {"digits": "dequantize+logit[0,17]"}

Pair = tuple[Tensor, Tensor | None]


@dataclass
class Data:
    """Where a run's data come from and how they are split; contexts are ``None`` for an
    unconditional model."""

    source: str
    columns: list[str]
    given: list[str]
    #: in memory, on disk (a ``.npy`` file, read a batch at a time), or a sampler
    train: Pair | tuple[Rows, Rows | None] | Callable[[int], Tensor]
    #: in memory, or on disk (a ``.npy`` file: scored a chunk at a time, see :func:`first_rows`)
    val: Pair | tuple[Rows, Rows | None]
    test: Pair | tuple[Rows, Rows | None]
    #: a fixed sample of the training distribution (pictures, and the train NLL)
    reference: Pair
    #: how each column enters the flow (empty: standardization only)
    plans: list[ColumnPlan] = field(default_factory=list)
    #: whether the data are drawn from a generator (a toy or a picture)
    generated: bool = False
    #: facts the user should hear (a file read without a header, rows dropped)
    notes: list[str] = field(default_factory=list)
    #: the categorical columns and ``p(c)`` (learnt from the training rows); their one-hot
    #: code is the context of the flow, which models ``p(x | c)``
    categories: Categories | None = None
    #: the picture the data are drawn from (``logo``, ``image:PATH``), as read at the start
    picture: PictureDensity | None = None

    @property
    def dim(self) -> int:
        return self.val[0].shape[1]


def generated(spec: str) -> Callable[..., Tensor] | None:
    """The generator ``(n, seed=None) -> Tensor`` that ``spec`` names, or None for a table."""
    if spec in TOYS:
        return TOYS[spec]
    picture = read_picture(spec)
    return None if picture is None else picture.sample


def read_picture(spec: str) -> PictureDensity | None:
    """The picture that ``logo`` or ``image:PATH`` names, read now (None for other data); an
    unreadable or blank file is an :class:`~flowfit.errors.InputError`."""
    path = picture_of(spec)
    return None if path is None else PictureDensity(path)


def resolve(
    spec: str,
    columns: list[str] | None = None,
    given: list[str] | None = None,
    seed: int = 0,
    preprocess: str = "auto",
    dtype: torch.dtype = torch.float32,
    val_fraction: float = 0.1,
    categorical: list[str] | None = None,
    missing: str = "error",
    atoms: bool = False,
) -> Data:
    """Resolve ``--data spec`` (see the module docstring). ``given`` names columns to condition
    on (the model is then ``p(columns | given)``); ``columns`` defaults to every other
    column that holds numbers (text columns are skipped, with a note; a column of numbers with
    a stray text cell is an error that names the cell). A text column named in
    ``columns``, and a column of integers named in ``categorical``, is categorical
    (:mod:`flowfit.categories`): the model is then ``p(c) p(x | c)``. ``missing`` says what a
    missing cell (empty, NaN, ``NA``...: :data:`flowfit.tables.MISSING_CELLS`) is: ``error``
    (naming its row and column) or ``drop`` (the row is dropped, and a note says how many were).
    ``preprocess`` chooses each continuous column's preprocessing
    (:func:`flowfit.preprocess.make_plan`, with recurring values as ``atoms`` for a flow that
    keeps the column order), decided on the training rows (at most ``PLAN_ROWS`` of them),
    checked on every row. A table's rows are split into training, ``val_fraction`` for
    validation and 10% for testing."""
    if missing not in MISSING_POLICIES:
        raise InputError(f"--missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    # a picture is read once: a file changed during the run changes neither the draws nor the metrics
    picture = read_picture(spec)
    if picture is not None or spec in TOYS:
        if columns or given or categorical:
            raise InputError(f"--columns, --given and --categorical pick table columns; {spec!r} is generated data")
        if preprocess != "auto":
            raise InputError(f"--preprocess applies to tables; {spec!r} is generated data, which it would not change")
        if val_fraction != 0.1:
            raise InputError(f"--val-fraction splits tables; {spec!r} is validated on 10,000 fresh draws")
        return _sampled(spec, picture)
    if missing == "marginal":
        raise InputError(
            "--missing marginal scores rows with missing cells (flowfit density); training needs complete rows: "
            "use --missing drop"
        )
    table, names, path, has_header = _open(spec)
    if columns is not None and not columns:
        raise InputError("--columns names no column")
    given = list(given or [])
    categorical = list(categorical or [])
    pick(names, given, path)
    pick(names, categorical, path)
    kinds = table.kinds() if isinstance(table, Table) else dict.fromkeys(names, NUMBER)
    notes = [] if has_header else [f"{path} has no header row: its columns are {', '.join(names)}, by position"]
    if columns is None:
        columns = [c for c in names if c not in given and (kinds[c] == NUMBER or c in categorical)]
        skipped = [c for c in names if c not in given and c not in columns]
        if skipped:
            # a column of numbers with a stray text cell ("12 kg") is no text column to skip
            labels = table.read_all([], skipped, keep_missing=True).labels
            for k, name in enumerate(skipped):
                refuse_numbers_as_labels(labels[:, k], name, path, "leave the column out with --columns")
            notes.append(
                f"skipped the text column(s) {', '.join(skipped)}; name them in --columns to model them as categorical"
            )
    else:
        columns = list(columns)
    pick(names, columns, path)
    overlap = sorted(set(columns) & set(given))
    if overlap:
        raise InputError(f"column(s) {', '.join(overlap)} cannot be both modelled and given")
    stray = [c for c in categorical if c not in columns]
    if stray:
        raise InputError(f"--categorical names {', '.join(map(repr, stray))}, which --columns does not model")
    text_given = [c for c in given if kinds[c] == TEXT]
    if text_given:
        raise InputError(f"{path}: the --given column(s) {', '.join(text_given)} hold text; a given column is numbers")
    discrete = [c for c in columns if kinds[c] == TEXT or c in categorical]
    if discrete and given:
        raise InputError(
            f"categorical columns ({', '.join(discrete)}) and --given cannot be combined yet: p(c) would ignore "
            "the given columns"
        )
    continuous = [c for c in columns if c not in discrete]
    if not continuous:
        raise InputError(f"{path}: no columns left to model" + (" but categorical ones" if discrete else ""))
    if isinstance(table, Table):
        integers = [c for c in discrete if kinds[c] == NUMBER]
        texts = [c for c in discrete if kinds[c] == TEXT]
        block = table.read_all([*continuous, *given, *integers], texts, keep_missing=missing == "drop")
        values = torch.from_numpy(block.values)
        labels = np.empty((len(block), len(discrete)), dtype=object)
        for k, name in enumerate(discrete):
            if name in texts:
                labels[:, k] = block.labels[:, texts.index(name)]
                if name not in categorical:
                    refuse_numbers_as_labels(
                        labels[:, k], name, path, "name it in --categorical to model the column as labels"
                    )
            else:
                column = block.values[:, len(continuous) + len(given) + integers.index(name)]
                labels[:, k] = integer_labels(column, name, path)
        keep = ~block.missing
        file_rows = torch.arange(len(keep))
        if missing == "drop" and not keep.all():
            notes.append(f"dropped {int((~keep).sum())} of {len(keep)} rows with missing cells (--missing drop)")
            values, labels = values[torch.from_numpy(keep)], labels[keep]
            file_rows = file_rows[torch.from_numpy(keep)]
        table = values[:, : len(continuous) + len(given)]
        names = [*continuous, *given]
    else:
        if discrete:
            table = _columns(table, pick(names, [*continuous, *given, *discrete], path))
            table = table.take() if isinstance(table, Rows) else table
            names = [*continuous, *given, *discrete]
        labels = np.empty((len(table), len(discrete)), dtype=object)
        for k, name in enumerate(discrete):
            labels[:, k] = integer_labels(table[:, names.index(name)].numpy(), name, path)
        if missing == "error" and (labels == None).any():  # noqa: E711 (continuous NaN: the row checks)
            row, k = np.argwhere(labels == None)[0]  # noqa: E711
            raise InputError(f"{path}: row {row + 1}, column {discrete[k]!r} is missing (NaN); {MISSING_HINT}")
        file_rows = None if isinstance(table, Rows) else torch.arange(len(table))  # rows on disk know theirs
        if missing == "drop":
            keep = _complete(table)
            dropped = int((~keep).sum())
            if dropped:
                notes.append(f"dropped {dropped} of {len(keep)} rows with missing cells (--missing drop)")
                table, labels = select_rows(table, keep.nonzero()[:, 0]), labels[keep.numpy()]
                file_rows = None if file_rows is None else file_rows[keep]
    if len(table) < 10:
        raise InputError(f"{path}: {len(table)} rows are too few to split into training, validation and test sets")
    values = _columns(table, pick(names, continuous, path))
    context = _columns(table, pick(names, given, path)) if given else None
    _check_every_row(values, continuous, dtype, path, file_rows)
    if context is not None:
        _check_every_row(context, given, dtype, path, file_rows)
    if not 0 < val_fraction < 0.9:
        raise InputError(f"--val-fraction {val_fraction} leaves no rows to train on (10% are for testing)")
    order = split(len(table), (1 - val_fraction - 0.1, val_fraction, 0.1), seed=seed)
    categories = None
    if discrete:
        kinds_of = [TEXT_LABELS if kinds[c] == TEXT else INTEGER_LABELS for c in discrete]
        levels = [sorted_levels(labels[:, k], kind) for k, kind in enumerate(kinds_of)]
        for name, level in zip(discrete, levels, strict=True):
            if len(level) > max(50, len(table) // 2):
                notes.append(
                    f"the categorical column {name} has {len(level)} levels in {len(table)} rows: nearly an id, "
                    "which p(c) can say little about"
                )
            marks = [label for label in level if str(label).lower() in MISSING_CELLS]
            if marks:
                notes.append(
                    f"the categorical column {name} has the level(s) {', '.join(map(repr, marks))}, which other "
                    "programs write for a missing cell; each is modelled as a level of its own"
                )
        categories = Categories(discrete, kinds_of, levels)
        codes = categories.encode(labels, path)
        categories = Categories.fit(discrete, kinds_of, levels, codes[order[0].items().numpy()])
        context = categories.one_hot(codes)
    train, val, test = ((select_rows(values, i), None if context is None else select_rows(context, i)) for i in order)
    if preprocess == "auto" and spec in TABLE_PREPROCESS:
        preprocess = TABLE_PREPROCESS[spec]
    lowest = _ranges(values)[0].tolist()
    plans = make_plan(first_rows(train, PLAN_ROWS)[0], continuous, preprocess, lowest, atoms)
    for first_row, block in _blocks(values, file_rows):
        check_plans(plans, block, continuous, first_row)
    train_low, train_high = _ranges(train[0])
    # a constant column has no density, unless it is dequantized (then it is uniform noise)
    flat = (train_low == train_high).tolist()
    constant = [c for c, same, plan in zip(continuous, flat, plans, strict=True) if same and not plan.dequantize]
    if constant:
        raise InputError(f"{path}: column(s) {', '.join(constant)} are constant; a density over them does not exist")
    reference = first_rows(train, 10_000)
    return Data(
        path,
        continuous,
        given,
        train,
        val,
        test,
        reference,
        plans,
        notes=notes,
        categories=categories,
    )


def _complete(table: Tensor | Rows) -> Tensor:
    """Which rows of ``table`` hold no NaN (rows on disk are read a block at a time)."""
    if isinstance(table, Rows):
        dropped = [rows[torch.isnan(block).any(dim=1)] for rows, block in table.blocks()]
        return ~torch.isin(table.row_numbers(), torch.cat(dropped))
    return ~torch.isnan(table).any(dim=1)


def _sampled(spec: str, picture: PictureDensity | None) -> Data:
    """A generator (a toy, or ``picture``): fresh draws each step, fixed validation, test and
    reference draws."""
    draw = picture.sample if picture is not None else TOYS[spec]
    return Data(
        source=spec,
        columns=["x0", "x1"],
        given=[],
        train=lambda n: draw(n),
        val=(draw(10_000, seed=VAL_SEED), None),
        test=(draw(TEST_SIZE, seed=TEST_SEED), None),
        reference=(draw(10_000, seed=VAL_SEED + 1), None),
        generated=True,
        picture=picture,
    )


def some_rows(spec: str, columns: list[str], given: list[str], n: int, seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """Up to ``n`` rows of a trained model's data, for pictures: the named ``columns`` and
    ``given`` columns of a table (rows chosen at random with ``seed``, kept in file order), or
    ``n`` fresh draws of generated data. Values are float64 and checked to be finite."""
    draw = generated(spec)
    if draw is not None:
        return draw(n, seed=seed).double(), None
    table, names, path, _ = _open(spec)
    wanted = [*columns, *given]
    if isinstance(table, Table):  # only these columns are read: the others may hold text
        table, names = torch.from_numpy(table.read(wanted)), wanted
    index = Permutation(len(table), seed)(torch.arange(min(n, len(table)))).sort().values
    values = read_rows(_columns(table, pick(names, wanted, path)), index).double()
    if not bool(torch.isfinite(values).all()):
        raise InputError(f"{path}: the columns {', '.join([*columns, *given])} hold NaN or inf")
    return values[:, : len(columns)], values[:, len(columns) :] if given else None


def _open(spec: str) -> tuple[Tensor | Rows | Table, list[str], str, bool]:
    """A bundled table, a ``.npy`` file on disk, or any other table file opened (its columns
    are read when asked for); the last value says whether the column names came from the
    file (bundled tables have names)."""
    if spec in TABLES:
        table, names = TABLES[spec]()
        return table, names, spec, True
    if spec.endswith(".npy"):
        rows, names = open_rows(spec)
        return rows, names, spec, False
    if not split_spec(spec)[0].exists():
        known = ", ".join([*TOYS, *TABLES, "logo", "image:PATH"])
        raise InputError(f"--data {spec!r} is neither a file nor a data set flowfit knows ({known})")
    table = open_table(spec)
    return table, table.names, spec, table.has_header


def fingerprint(spec: str) -> str | None:
    """The data file's size and modification time (None for generated and bundled data)."""
    path = split_spec(spec)[0]
    if generated_name(spec) or spec in TABLES or not path.is_file():
        return None
    status = path.stat()
    return f"{status.st_size}:{status.st_mtime_ns}"


def picture_of(spec: str) -> Path | None:
    """The picture that ``logo`` or ``image:PATH`` draws from (None for other data)."""
    if spec == "logo":
        return LOGO
    return Path(spec[len("image:") :]) if spec.startswith("image:") else None


def generated_name(spec: str) -> bool:
    return spec in TOYS or picture_of(spec) is not None


def _columns(table: Tensor | Rows, columns: list[int]) -> Tensor | Rows:
    return table.select(columns) if isinstance(table, Rows) else table[:, columns]


def _blocks(values: Tensor | Rows, file_rows: Tensor | None = None) -> Iterator[tuple[int, Tensor]]:
    """``(index in the file of the first row, rows)`` blocks of a whole table, in file order,
    each a run of consecutive file rows (rows dropped for missing cells break runs), so that
    an error names the row's place in the file. ``file_rows``: the file row of each row of an
    in-memory table (default: 0, 1, 2, ...)."""
    if isinstance(values, Rows):
        for rows, block in values.blocks():
            yield from _runs(rows, block)
    elif file_rows is None:
        yield 0, values
    else:
        yield from _runs(file_rows, values)


def _runs(rows: Tensor, block: Tensor) -> Iterator[tuple[int, Tensor]]:
    """Split ``block`` where its (increasing) file rows ``rows`` skip a number."""
    breaks = (torch.diff(rows) != 1).nonzero()[:, 0] + 1
    for part in torch.tensor_split(torch.arange(len(rows)), breaks):
        if len(part):
            yield int(rows[part[0]]), block[part]


def _check_every_row(
    values: Tensor | Rows, names: list[str], dtype: torch.dtype, source: str, file_rows: Tensor | None = None
) -> None:
    """Finite (a NaN is a missing cell), representable in ``dtype``, and resolved by it (rows
    named by their place in the file, counted from 1)."""
    for first_row, block in _blocks(values, file_rows):
        holes = torch.isnan(block)
        if bool(holes.any()):
            row, col = (int(i) for i in holes.nonzero()[0])
            where = f"{source}: row {first_row + row + 1}, column {names[col]!r}"
            raise InputError(f"{where} is missing (NaN); {MISSING_HINT}")
        check_values(block, dtype, names, source, first_row)
    check_resolution(*_ranges(values), dtype, names, source)


def _ranges(values: Tensor | Rows) -> tuple[Tensor, Tensor]:
    if isinstance(values, Rows):
        return values.ranges()
    return values.min(dim=0).values, values.max(dim=0).values


def first_rows(pair: tuple[Any, Any], rows: int | None = None) -> Pair:
    """The first ``rows`` (default: all) of a pair of tensors or :class:`Rows`, in memory
    (the parts of a split are shuffled: its first rows are a random sample)."""

    def read(part: Tensor | Rows | None) -> Tensor | None:
        if part is None:
            return None
        if isinstance(part, Rows):
            return part.take(torch.arange(min(len(part), rows or len(part))))
        return part[:rows]

    return read(pair[0]), read(pair[1])
