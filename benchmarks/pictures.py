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
- training seconds.

    .venv/bin/python benchmarks/pictures.py --out benchmarks/results/pictures.md
    .venv/bin/python benchmarks/pictures.py --variants default fourier --pictures ring --steps 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

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
}


def draw_pictures(directory: Path) -> dict[str, Path]:
    """The benchmark's pictures, drawn black on white (darkness is the density)."""
    pictures = {}
    text = directory / "text.png"
    datasets.render_text("Hello,\nflows!", text, size=40, weight=1)  # strokes of a pixel or two
    pictures["text"] = text
    ring = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(ring).ellipse((15, 15, 105, 105), outline=0, width=3)
    ring.save(directory / "ring.png")
    pictures["ring"] = directory / "ring.png"
    face = Image.new("L", (120, 140), 255)
    pen = ImageDraw.Draw(face)
    pen.ellipse((10, 10, 110, 130), outline=0, width=3)  # the head
    pen.ellipse((35, 45, 50, 60), fill=0)  # the eyes
    pen.ellipse((70, 45, 85, 60), fill=0)
    pen.line((60, 62, 55, 85, 63, 85), fill=0, width=2)  # the nose
    pen.arc((35, 75, 85, 110), start=20, end=160, fill=0, width=3)  # the smile
    face.save(directory / "face.png")
    pictures["face"] = directory / "face.png"
    return pictures


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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", nargs="+", default=["text", "ring", "face"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, help="override the default number of steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--figures", type=Path, help="write DIR/picture_NAME.png: each picture beside its model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        "| picture | variant | steps | KL (nats) | TV | TV, dopri5 samples | TV floor | NFE sample / log p "
        "| 100k samples s "
        "| 20k log p s | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
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
                    f"| {r['train_s']:.0f} |"
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
