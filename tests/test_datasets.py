from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowfit import datasets
from flowfit.errors import InputError


@pytest.mark.parametrize("name", sorted(datasets.TOYS))
def test_toys_shape_dtype_and_seed(name: str) -> None:
    toy = datasets.TOYS[name]
    points = toy(1001, seed=7)
    assert points.shape == (1001, 2) and points.dtype == torch.float32
    assert torch.isfinite(points).all()
    assert torch.equal(points, toy(1001, seed=7))
    assert not torch.equal(points, toy(1001, seed=8))


def test_moons_geometry() -> None:
    """Noise-free moons lie on the two arcs, half the points on each."""
    points = datasets.moons(1000, noise=0.0, seed=0)
    upper = (points - torch.tensor([0.0, 0.0])).norm(dim=1)
    lower = (points - torch.tensor([1.0, 0.5])).norm(dim=1)
    on_upper = (upper - 1).abs() < 1e-5
    on_lower = (lower - 1).abs() < 1e-5
    assert bool((on_upper | on_lower).all())
    assert on_upper.sum() == 500 and on_lower.sum() == 500
    assert bool((points[on_upper, 1] >= -1e-6).all()) and bool((points[on_lower, 1] <= 0.5 + 1e-6).all())


def test_moons_noise_is_isotropic_gaussian() -> None:
    clean = datasets.moons(20000, noise=0.0, seed=3)
    noisy = datasets.moons(20000, noise=0.05, seed=3)
    # same generator stream: the difference is the noise (shuffling uses the same permutation)
    noise = noisy - clean
    assert abs(noise.std().item() - 0.05) < 0.002
    assert abs(noise.mean().item()) < 0.002


def test_moons_log_prob_integrates_to_one_and_gives_the_entropy() -> None:
    x = np.linspace(-1.5, 2.5, 400)
    y = np.linspace(-1.0, 1.5, 250)
    grid = torch.from_numpy(np.stack(np.meshgrid(x, y), axis=-1).reshape(-1, 2))
    mass = datasets.moons_log_prob(grid).exp().sum().item() * (x[1] - x[0]) * (y[1] - y[0])
    assert abs(mass - 1) < 0.01
    # the reference figure: 0.288 nats (standard error 0.002)
    entropy = -datasets.moons_log_prob(datasets.moons(20000, seed=0)).mean().item()
    assert abs(entropy - 0.288) < 0.015


def test_moons_log_prob_matches_a_fine_quadrature() -> None:
    x = datasets.moons(500, seed=2)
    coarse, fine = datasets.moons_log_prob(x), datasets.moons_log_prob(x, nodes=16384)
    assert (coarse - fine).abs().max() < 2e-3
    assert abs((coarse - fine).mean()) < 1e-5


def test_eight_gaussians_centres() -> None:
    points = datasets.eight_gaussians(8000, noise=0.01, seed=0)
    radius = points.norm(dim=1)
    assert (radius - 2 * math.sqrt(2)).abs().max() < 0.1
    angles = torch.remainder(torch.atan2(points[:, 1], points[:, 0]), 2 * math.pi)
    sectors = torch.round(angles / (math.pi / 4)).remainder(8).long()
    assert torch.bincount(sectors, minlength=8).min() > 800


def test_checkerboard_lies_on_dark_squares() -> None:
    points = datasets.checkerboard(5000, seed=0)
    assert points.abs().max() <= 4
    parity = (torch.floor(points[:, 0] / 2) + torch.floor(points[:, 1] / 2)).remainder(2)
    assert bool((parity == parity[0]).all())


def test_image_density_follows_darkness(tmp_path) -> None:
    from PIL import Image

    picture = np.full((20, 40), 255, dtype=np.uint8)
    picture[:, 30:] = 0  # the right quarter is black
    picture[:10, :10] = 128  # a grey square, top left
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)
    points = datasets.image(path, 20000, seed=0)
    assert points.shape == (20000, 2)
    # larger side spans [-2, 2], centred; y axis up
    assert points[:, 0].min() >= -2 and points[:, 0].max() <= 2
    assert points[:, 1].min() >= -1 and points[:, 1].max() <= 1
    black = points[:, 0] > 1.0  # columns 30..39
    grey = (points[:, 0] < -1.0) & (points[:, 1] > 0)  # columns 0..9, rows 0..9 = top
    # mass: black 200 px * 1.0, grey 100 px * (1 - 128/255)
    expected_black = 200 / (200 + 100 * (1 - 128 / 255))
    assert abs(black.float().mean().item() - expected_black) < 0.01
    assert abs((black | grey).float().mean().item() - 1) < 1e-6
    assert torch.equal(points, datasets.image(path, 20000, seed=0))


def test_the_picture_density_is_exact(tmp_path) -> None:
    from PIL import Image

    picture = np.full((20, 40), 255, dtype=np.uint8)
    picture[:, 30:] = 0
    picture[:10, :10] = 128
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)
    density = datasets.PictureDensity(path)
    # it integrates to 1 over the picture (a fine grid of cell centres), and is -inf outside
    xs = torch.linspace(-2, 2, 801)[:-1] + 0.0025
    ys = torch.linspace(-1, 1, 401)[:-1] + 0.0025
    grid = torch.cartesian_prod(xs, ys).double()
    assert abs(density.log_prob(grid).exp().sum().item() * 0.005**2 - 1) < 1e-9
    assert density.log_prob(torch.tensor([[2.5, 0.0], [0.0, -1.2]])).eq(-math.inf).all()
    # the entropy is minus the mean log-density of its own samples
    samples = datasets.image(path, 200_000, seed=1)
    assert abs(-density.log_prob(samples).mean().item() - density.entropy()) < 1e-9 + 0.01
    # exact samples are close in total variation; samples from a uniform box are not
    assert density.total_variation(samples) < 0.02
    box = torch.rand(200_000, 2) * torch.tensor([4.0, 2.0]) - torch.tensor([2.0, 1.0])
    expected = 0.5 * (
        200 * abs(1 / 800 - 1 / (200 + 100 * (127 / 255)))
        + 100 * abs(1 / 800 - (127 / 255) / (200 + 100 * (127 / 255)))
        + 500 / 800
    )
    assert abs(density.total_variation(box) - expected) < 0.01


def test_shipped_logo_and_bad_images(tmp_path) -> None:
    points = datasets.image(datasets.LOGO, 1000, seed=0)
    assert points.shape == (1000, 2) and torch.isfinite(points).all()
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (10, 10), 255).save(blank)
    with pytest.raises(InputError, match="blank"):
        datasets.image(blank, 10)
    text = tmp_path / "not.png"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a readable image"):
        datasets.image(text, 10)


def test_a_transparent_picture_is_seen_over_white(tmp_path) -> None:
    """Regression: a PNG with a transparent background stores its blank pixels as transparent
    black, (0, 0, 0, 0), and was read as black everywhere: a uniform rectangle, exit 0."""
    from PIL import Image, ImageDraw

    rgba = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    pen = ImageDraw.Draw(rgba)
    pen.rectangle((2, 2, 6, 17), fill=(0, 0, 0, 255))  # an opaque black bar
    pen.point((20, 10), fill=(0, 0, 0, 128))  # a half-transparent black pixel
    rgba.save(tmp_path / "rgba.png")
    expected = torch.zeros(20, 30, dtype=torch.float64)
    expected[2:18, 2:7], expected[10, 20] = 1.0, 128 / 255
    assert torch.allclose(datasets.image_darkness(tmp_path / "rgba.png"), expected)
    grey = Image.new("L", (30, 20), 255)  # the same bar drawn opaque: the same darkness
    ImageDraw.Draw(grey).rectangle((2, 2, 6, 17), fill=0)
    grey.save(tmp_path / "grey.png")
    assert torch.equal(datasets.image_darkness(tmp_path / "grey.png"), torch.where(expected == 1, 1.0, 0.0).double())
    palette = Image.new("P", (30, 20), 0)  # colour 0 (black) is transparent: only white is drawn
    palette.putpalette([0, 0, 0, 255, 255, 255])
    ImageDraw.Draw(palette).rectangle((2, 2, 6, 17), fill=1)
    palette.save(tmp_path / "p.png", transparency=0)
    with pytest.raises(InputError, match="blank"):
        datasets.image_darkness(tmp_path / "p.png")


def test_a_16_bit_picture_is_scaled_and_a_float_one_refused(tmp_path) -> None:
    """Regression: Pillow's conversion to 8-bit grey clips a 16-bit picture's values at 255, so
    every grey above 255 of 65,535 read as white; a float picture read as black."""
    from PIL import Image

    values = np.full((20, 30), 65535, dtype=np.uint16)
    values[2:18, 2:7], values[10, 20] = 0, 32768
    Image.fromarray(values).save(tmp_path / "deep.png")
    darkness = datasets.image_darkness(tmp_path / "deep.png")
    assert darkness[3, 3] == 1 and darkness[0, 0] == 0 and darkness[10, 20] == pytest.approx(1 - 32768 / 65535)
    Image.fromarray(np.ones((20, 30), dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(InputError, match=r"float\.tiff: its pixels are floating-point numbers, which have no fixed"):
        datasets.image_darkness(tmp_path / "float.tiff")


def test_a_picture_is_read_upright_as_its_exif_orientation_says(tmp_path) -> None:
    """Regression: a photo stored turned, with an EXIF orientation (as phones save them), was
    learnt on its side."""
    from PIL import Image

    stored = Image.new("L", (30, 20), 255)
    stored.paste(0, (0, 0, 5, 20))  # a bar along the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the bar along the top
    stored.save(tmp_path / "turned.png", exif=exif)
    darkness = datasets.image_darkness(tmp_path / "turned.png")
    assert darkness.shape == (30, 20) and (darkness[:5] == 1).all() and (darkness[5:] == 0).all()


def test_pictures_too_large_are_refused_before_decoding(tmp_path, monkeypatch) -> None:
    """Regression: Pillow's decompression-bomb error (a 20,000 x 20,000 PNG of 0.4 MB) escaped
    as a traceback; a picture under Pillow's limit but of hundreds of millions of pixels would
    have been decoded into gigabytes of float64."""
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("L", (5000, 4000), 255).save(path)
    with pytest.raises(InputError, match=r"big.png: 5000 x 4000 pixels is more than the 16,777,216 .*resize it"):
        datasets.image_darkness(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses twice its limit when opening
    small = tmp_path / "small.png"
    Image.new("L", (100, 100), 0).save(small)
    with pytest.raises(InputError, match=r"small.png: too large to read \(Image size \(10000 pixels\)"):
        datasets.PictureDensity(small)


def test_render_text_makes_a_dark_word(tmp_path) -> None:
    path = datasets.render_text("ab", tmp_path / "ab.png", size=20)
    darkness = datasets.image_darkness(path)
    assert 0.05 < darkness.mean().item() < 0.8


def test_tables_that_ship_inside_packages() -> None:
    values, names = datasets.digits()
    assert values.shape == (1797, 64) and values.max() == 16 and names[0] == "px0"
    values, names = datasets.saratoga()
    assert values.shape == (1728, 10) and "price" in names and "livingArea" in names
    assert torch.isfinite(values).all()
