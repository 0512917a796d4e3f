"""Continuous flows on pictures with thin strokes: how close does flow matching get, and what
does each lever buy?

Three pictures the script draws itself with Pillow (nothing is downloaded, none was seen
while choosing defaults): text in thin strokes, a thin ring, and a face-like drawing. Each
picture is a density (a pixel's probability is its darkness, uniform inside the pixel), whose
differential entropy ``H`` is exact (``flowfit.datasets.PictureDensity``). For each variant of
``flowfit.CNF`` trained by flow matching it reports:

- KL(picture || model) = test NLL on 20,000 exact samples - ``H`` (nats; the NLL is the exact
  log-density through the ODE);
- TV: total variation between 100,000 model samples binned on the pixel grid and the pixel
  probabilities; the same for samples of the accurate solve (dopri5 at the likelihood's
  tolerances, where the model's sampling solver is cheaper) and for 100,000 exact samples (the
  noise floor);
- NFE of one sampling solve and one log-density solve of 4,096 points, and the wall seconds
  for 100,000 samples and for 20,000 log-densities;
- training seconds;
- the blur of equal KL: the width ``s`` (in pixels) of the Gaussian blur whose blurred picture
  is as far from the picture as the model, ``KL(picture || picture * N(0, s^2 I)) = KL``: a
  smooth density cannot follow a pixel's hard edge, and on thin strokes drawn without
  anti-aliasing a blur of a quarter pixel already costs about 0.1 nats, so this says how sharp
  the model is whatever the picture.

``--blur`` prints, without training anything, the KL of each picture (and of flowfit's logo)
blurred by Gaussians of a few widths.

    .venv/bin/python benchmarks/pictures.py --out benchmarks/results/pictures.md
    .venv/bin/python benchmarks/pictures.py --variants default fourier --pictures ring --steps 2000
    .venv/bin/python benchmarks/pictures.py --blur --out benchmarks/results/picture_blur.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

import flowfit
from flowfit import datasets
from flowfit.files import write_text

#: What each variant changes in ``flowfit.CNF(2, ...)`` (architecture) and in ``fit`` (training),
#: on top of ``flowfit train --flow cnf --objective fm``'s defaults.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "fourier": ({"fourier": 64, "fourier_scale": 2.0}, {}),
    "fourier-scale4": ({"fourier": 64, "fourier_scale": 4.0}, {}),
    "fourier128": ({"fourier": 128, "fourier_scale": 2.0}, {}),
    "ot": ({"pairing": "ot"}, {}),
    "fourier+ot": ({"fourier": 64, "fourier_scale": 2.0, "pairing": "ot"}, {}),
    "wide": ({"hidden": (256, 256, 256)}, {}),
    "fourier+ot+ema": ({"fourier": 64, "fourier_scale": 2.0, "pairing": "ot"}, {"ema": 0.999}),
    "ema-0.999": ({}, {"ema": 0.999}),
    "ema-0.9999": ({}, {"ema": 0.9999}),
    "scale3": ({"fourier_scale": 3.0}, {}),
    "features256": ({"fourier": 256}, {}),
}


def draw_pictures(directory: Path) -> dict[str, Path]:
    """The benchmark's pictures, drawn black on white (darkness is the density): thin text, and
    a thin ring and a face drawn twice, with hard pixel edges and anti-aliased (drawn at 4x and
    averaged down, so that a pixel's darkness is the share of it the stroke covers)."""
    pictures = {}
    text = directory / "text.png"
    datasets.render_text("Hello,\nflows!", text, size=40, weight=1)  # strokes of a pixel or two
    pictures["text"] = text
    for smooth, suffix in ((1, ""), (4, "-aa")):
        ring = Image.new("L", (120 * smooth, 120 * smooth), 255)
        ImageDraw.Draw(ring).ellipse(_scaled(smooth, 15, 15, 105, 105), outline=0, width=3 * smooth)
        face = Image.new("L", (120 * smooth, 140 * smooth), 255)
        pen = ImageDraw.Draw(face)
        pen.ellipse(_scaled(smooth, 10, 10, 110, 130), outline=0, width=3 * smooth)  # the head
        pen.ellipse(_scaled(smooth, 35, 45, 50, 60), fill=0)  # the eyes
        pen.ellipse(_scaled(smooth, 70, 45, 85, 60), fill=0)
        pen.line(_scaled(smooth, 60, 62, 55, 85, 63, 85), fill=0, width=2 * smooth)  # the nose
        pen.arc(_scaled(smooth, 35, 75, 85, 110), start=20, end=160, fill=0, width=3 * smooth)  # the smile
        for name, picture in (("ring", ring), ("face", face)):
            path = directory / f"{name}{suffix}.png"
            picture.resize((picture.width // smooth, picture.height // smooth), Image.Resampling.BOX).save(path)
            pictures[name + suffix] = path
    return pictures


def _scaled(factor: int, *coordinates: int) -> tuple[int, ...]:
    return tuple(factor * c for c in coordinates)


#: Sub-cells per pixel side of the grid on which a picture is blurred (the blurs are finer than a pixel).
SUPERSAMPLE = 8
BLURS = (0.1, 0.25, 0.5, 0.75, 1.0)  # pixels: the widths of the --blur table


def blurred_kl(density: datasets.PictureDensity, blur: float) -> float:
    """KL(picture || picture blurred by a Gaussian of ``blur`` pixels), in nats: the score of a
    model that matched the picture but for edges smoothed by ``blur``. Both densities are
    averaged over cells of 1/SUPERSAMPLE pixel (averaging can only lower a KL, so this is
    a slight underestimate); mass the blur carries past the picture's border stays a density's."""
    from scipy.ndimage import gaussian_filter

    cells = np.ones((SUPERSAMPLE, SUPERSAMPLE)) / SUPERSAMPLE**2
    fine = np.kron(density.probabilities.numpy(), cells)
    blurred = gaussian_filter(fine, blur * SUPERSAMPLE, mode="constant", truncate=6.0)
    inside = fine > 0
    return float((fine[inside] * np.log(fine[inside] / blurred[inside])).sum())


def equal_kl_blur(density: datasets.PictureDensity, kl: float) -> float:
    """The blur (pixels) whose :func:`blurred_kl` is ``kl``, by bisection (the KL grows with the blur)."""
    low, high = 0.0, 4.0
    if kl >= blurred_kl(density, high):
        return high
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if blurred_kl(density, middle) < kl else (low, middle)
    return (low + high) / 2


def blur_table(pictures: dict[str, Path], scores: dict[str, float]) -> list[str]:
    """The KL of each picture blurred by each of BLURS; with ``scores`` (picture: a model's KL)
    also the blur of equal KL of each score."""
    lines = [
        "| picture | " + " | ".join(f"blur {b:g} px" for b in BLURS) + " |",
        "|---|" + "---:|" * len(BLURS),
    ]
    for name, path in pictures.items():
        density = datasets.PictureDensity(path)
        lines.append(f"| {name} | " + " | ".join(f"{blurred_kl(density, b):.3f}" for b in BLURS) + " |")
    lines += [
        "",
        f"KL(picture || picture blurred by a Gaussian of the width given), nats, on a grid of 1/{SUPERSAMPLE} "
        "pixel (`benchmarks/pictures.py --blur`): ring and face are drawn with hard pixel edges, ring-aa and "
        "face-aa are the same drawings anti-aliased, as the text and the logo are.",
    ]
    if scores:
        lines += ["", "| picture | model's KL (nats) | blur of equal KL (px) |", "|---|---:|---:|"]
        for name, kl in scores.items():
            lines.append(f"| {name} | {kl:.3f} | {equal_kl_blur(datasets.PictureDensity(pictures[name]), kl):.2f} |")
    return lines


def side_by_side(flow: flowfit.Flow, density: datasets.PictureDensity, path: Path, title: str) -> None:
    """The picture's density beside the model's exact density at every pixel's centre."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell, height, width = density.cell, density.height, density.width
    xs = (torch.arange(width, dtype=torch.float64) + 0.5 - width / 2) * cell
    ys = (height / 2 - torch.arange(height, dtype=torch.float64) - 0.5) * cell
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    with torch.inference_mode():
        model = flow.log_prob(grid).exp().reshape(height, width).numpy()
    target = (density.probabilities / cell**2).numpy()
    figure, axes = plt.subplots(1, 2, figsize=(8, 4.4 * height / width + 0.6))
    for ax, values, name in zip(axes, (target, model), ("picture (exact density)", title), strict=True):
        ax.imshow(values, cmap="magma", vmin=0, vmax=float(target.max()))
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)


def run(picture: Path, variant: str, steps: int | None, seed: int, figure: Path | None = None) -> dict[str, float]:
    architecture, training = flowfit.CNF.defaults_for("fm")
    extra_architecture, extra_training = VARIANTS[variant]
    density = datasets.PictureDensity(picture)
    torch.manual_seed(seed)
    flow = flowfit.CNF(2, **(architecture | extra_architecture))
    options = training | extra_training | ({"steps": steps} if steps else {})
    result = flowfit.fit(
        flow, lambda n: datasets.image(picture, n), objective="fm", seed=seed, progress=False, **options
    )
    test = datasets.image(picture, 20_000, seed=12345)
    layer = flow.layers[0]
    with torch.inference_mode():
        start = time.perf_counter()
        log_p = flow.log_prob(test)
        density_seconds = time.perf_counter() - start
        start = time.perf_counter()
        samples = flow.sample(100_000)
        sample_seconds = time.perf_counter() - start
        before = layer.evaluations
        flow.sample(4096)
        nfe_sample = layer.evaluations - before
        cheap, layer.sample_method = layer.sample_method, None  # the accurate solve: dopri5 at rtol, atol
        accurate = flow.sample(100_000)
        layer.sample_method = cheap
        before = layer.evaluations
        flow.log_prob(test[:4096])
        nfe_log_prob = layer.evaluations - before
    kl = -log_p.mean().item() - density.entropy()
    if figure is not None:
        side_by_side(flow, density, figure, f"flow matching, {variant} (KL {kl:.3f} nats)")
    return {
        "kl": kl,
        "tv": density.total_variation(samples),
        "tv_accurate": density.total_variation(accurate),
        "tv_floor": density.total_variation(datasets.image(picture, 100_000, seed=7)),
        "nfe_sample": nfe_sample,
        "nfe_log_prob": nfe_log_prob,
        "sample_s": sample_seconds,
        "density_s": density_seconds,
        "train_s": result.seconds,
        "steps": result.steps,
        "blur": equal_kl_blur(density, kl),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", nargs="+", default=["text", "ring", "face", "ring-aa", "face-aa"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, help="override the default number of steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--figures", type=Path, help="write DIR/picture_NAME.png: each picture beside its model")
    parser.add_argument("--blur", action="store_true", help="only the KL of each picture blurred (no training)")
    parser.add_argument(
        "--kl", nargs="*", default=[], metavar="PICTURE=KL", help="with --blur: the blur of equal KL of these scores"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.blur:
        with tempfile.TemporaryDirectory() as directory:
            pictures = {**draw_pictures(Path(directory)), "logo": datasets.LOGO}
            scores = {name: float(kl) for name, kl in (item.split("=") for item in args.kl)}
            lines = blur_table({name: pictures[name] for name in [*args.pictures, "logo"]}, scores)
        print("\n".join(lines))
        if args.out:
            write_text(args.out, "\n".join(lines) + "\n")
        return
    lines = [
        "| picture | variant | steps | KL (nats) | TV | TV, dopri5 samples | TV floor | NFE sample / log p "
        "| 100k samples s "
        "| 20k log p s | train s | blur of equal KL (px) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as directory:
        pictures = draw_pictures(Path(directory))
        for name in args.pictures:
            for variant in args.variants:
                figure = args.figures / f"picture_{name}.png" if args.figures else None
                r = run(pictures[name], variant, args.steps, args.seed, figure)
                line = (
                    f"| {name} | {variant} | {r['steps']} | {r['kl']:.3f} | {r['tv']:.3f} | {r['tv_accurate']:.3f} "
                    f"| {r['tv_floor']:.3f} "
                    f"| {r['nfe_sample']} / {r['nfe_log_prob']} | {r['sample_s']:.1f} | {r['density_s']:.1f} "
                    f"| {r['train_s']:.0f} | {r['blur']:.2f} |"
                )
                lines.append(line)
                print(line, flush=True)
    lines += [
        "",
        f"Flow matching, `flowfit.CNF(2)` with the `--objective fm` defaults changed as each variant says "
        f"({', '.join(f'{k}: {v}' for k, v in VARIANTS.items())}); seed {args.seed}; "
        f"torch {torch.__version__}, {args.threads} threads.",
    ]
    if args.out:
        write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
