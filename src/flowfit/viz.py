"""Pictures of a flow: samples against data, the density as a heat map, the layer-by-layer
map from N(0, I) to the data (a grid of panels and a GIF), loss curves and log-likelihood
histograms. Every function writes its file atomically and returns its path.

This module sits on top of the core (it uses matplotlib's non-interactive Agg backend, chosen
here and nowhere else: importing :mod:`flowfit` itself never touches matplotlib).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from flowfit.datasets import picture_cell
from flowfit.distributions import StandardNormal
from flowfit.files import atomic_path
from flowfit.flow import Flow
from flowfit.sources import Data, first_rows
from flowfit.train import FitResult

Bounds = tuple[float, float, float, float]


def _save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=dpi, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    plt.close(fig)
    return path


def bounds_of(*point_sets: Tensor, pad: float = 0.1, quantile: float = 0.0) -> Bounds:
    """A box ``(x_min, x_max, y_min, y_max)`` holding the points (between the given
    quantiles), padded by ``pad`` of its size on each side."""
    points = torch.cat([p.detach().cpu().double()[:, :2] for p in point_sets])
    low = torch.quantile(points, quantile, dim=0) if quantile else points.min(dim=0).values
    high = torch.quantile(points, 1 - quantile, dim=0) if quantile else points.max(dim=0).values
    span = (high - low).clamp_min(1e-6)
    low, high = low - pad * span, high + pad * span
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


@torch.inference_mode()
def density_grid(flow: Flow, bounds: Bounds, resolution: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-density of a 2-D flow at the centres of a ``resolution x resolution`` grid.

    Returns ``(xs, ys, log_p)`` with ``log_p[i, j]`` at ``(xs[j], ys[i])``; the cells have
    area ``(xs[1] - xs[0]) * (ys[1] - ys[0])``, so ``exp(log_p).sum() * area`` is the
    probability mass the box holds.
    """
    x_min, x_max, y_min, y_max = bounds
    dx, dy = (x_max - x_min) / resolution, (y_max - y_min) / resolution
    xs = x_min + dx * (np.arange(resolution) + 0.5)
    ys = y_min + dy * (np.arange(resolution) + 0.5)
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = torch.from_numpy(np.stack((grid_x.ravel(), grid_y.ravel()), axis=1))
    log_p = flow.log_prob(points)
    return xs, ys, log_p.double().cpu().numpy().reshape(resolution, resolution)


def axis_aspect(bounds: Bounds) -> str:
    """``equal`` when both axes span similar lengths (toys, pictures); ``auto`` when they
    differ by more than 5x (a table's columns in their own units), so neither is a sliver."""
    width, height = bounds[1] - bounds[0], bounds[3] - bounds[2]
    return "equal" if max(width, height) <= 5 * min(width, height) else "auto"


def _scatter(ax: plt.Axes, points: Tensor, color: str = "tab:blue", size: float = 1.0) -> None:
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=size, c=color, alpha=0.5, linewidths=0, rasterized=True)


def plot_samples(data: Tensor, samples: Tensor, path: str | Path, title: str = "") -> Path:
    """Data and model samples side by side, on the same axes."""
    bounds = bounds_of(data, samples, quantile=0.001)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    for ax, points, name, color in (
        (axes[0], data, "data", "tab:blue"),
        (axes[1], samples, "model samples", "tab:red"),
    ):
        _scatter(ax, points, color)
        ax.set_title(f"{name} (n = {len(points):,})")
        ax.set_xlim(bounds[:2])
        ax.set_ylim(bounds[2:])
        ax.set_aspect(axis_aspect(bounds))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_density(flow: Flow, data: Tensor, path: str | Path, resolution: int = 250) -> Path:
    """The model's log-density as a heat map over the data's range, the data on top."""
    bounds = bounds_of(data, pad=0.15, quantile=0.001)
    _, _, log_p = density_grid(flow, bounds, resolution)
    floor = np.quantile(log_p, 0.98) - 12  # 12 nats of dynamic range
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(np.clip(log_p, floor, None), origin="lower", extent=bounds, cmap="viridis", aspect="auto")
    shown = data[torch.randperm(len(data))[:2000]]
    ax.scatter(shown[:, 0].cpu(), shown[:, 1].cpu(), s=0.6, c="white", alpha=0.35, linewidths=0)
    fig.colorbar(image, ax=ax, label="log p(x) (nats)")
    ax.set_title("model log-density, data in white")
    return _save(fig, path)


def _colors(z0: Tensor) -> np.ndarray:
    """A colour per point from the angle of its base sample, so points can be followed."""
    angle = torch.atan2(z0[:, 1], z0[:, 0]).cpu().numpy()
    return plt.get_cmap("hsv")((angle + math.pi) / (2 * math.pi))


def layer_titles(flow: Flow) -> list[str]:
    """Panel titles for ``flow.trajectory``: ``z_0 ~ N(0, I)``, then each layer's output."""
    titles = ["z_0 ~ N(0, I)"]
    for i, layer in enumerate(flow.layers, start=1):
        titles.append(f"z_{i}: {type(layer).__name__}")
    return titles


@torch.inference_mode()
def trajectory_frames(
    flow: Flow, n: int = 2000, frames: int = 10, context: Tensor | None = None
) -> tuple[list[Tensor], list[str], str, int]:
    """What to animate: ``(states, titles, note, frames_per_layer)``.

    A continuous flow gives ``frames`` states ``z_t`` solved from its ODE at evenly spaced
    ``t`` in ``[0, 1]`` (nothing is interpolated); a discrete flow gives ``z_0, ..., z_T``
    with ``frames`` interpolated frames between consecutive layers. A conditional flow needs
    one ``context`` row, used for every point.
    """
    if context is not None:
        context = torch.as_tensor(context).reshape(1, -1).expand(n, -1)
    if flow.is_continuous:
        times = torch.linspace(0, 1, max(frames, 2)).tolist()
        states = flow.trajectory(n, context, t=times)
        return states, [f"z_t at t = {t:.2f}" for t in times], "continuous flow: every frame is z_t from the ODE", 1
    note = "discrete flow: frames between layers are interpolated"
    return flow.trajectory(n, context), layer_titles(flow), note, frames


def plot_layers(states: Sequence[Tensor], path: str | Path, titles: Sequence[str] | None = None) -> Path:
    """One panel per state ``z_0, ..., z_T`` of a trajectory, fixed common axes."""
    titles = titles or [f"z_{i}" for i in range(len(states))]
    columns = min(len(states), 4)
    rows = math.ceil(len(states) / columns)
    bounds = bounds_of(*states, quantile=0.002)
    colors = _colors(states[0])
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(states) :]:
        ax.axis("off")
    for ax, state, title in zip(axes.flat, states, titles, strict=False):
        p = state.detach().cpu().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=1.5, c=colors, linewidths=0, rasterized=True)
        ax.set_xlim(bounds[:2])
        ax.set_ylim(bounds[2:])
        ax.set_aspect(axis_aspect(bounds))
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    return _save(fig, path)


def picture_bounds(height: int, width: int, pad: float = 0.15) -> Bounds:
    """The box of a ``height x width`` picture's points (:func:`flowfit.datasets.image`),
    padded by ``pad`` of its size on each side: the picture's own aspect ratio."""
    cell = picture_cell(height, width)
    half_x, half_y = (0.5 + pad) * width * cell, (0.5 + pad) * height * cell
    return -half_x, half_x, -half_y, half_y


def density_frame(states: Sequence[Tensor], picture: tuple[int, int] | None = None) -> tuple[Bounds, float]:
    """Where density frames are drawn, ``(bounds, cell)``: the ``(height, width)`` picture's
    pixel grid with a margin (its aspect ratio) when the flow learnt a picture, otherwise the
    points' box in 160 cells across its longer side."""
    if picture is not None:
        return picture_bounds(*picture), picture_cell(*picture)
    bounds = bounds_of(*states, quantile=0.002)
    return bounds, max(bounds[1] - bounds[0], bounds[3] - bounds[2]) / 160


def animate(
    states: Sequence[Tensor],
    path: str | Path,
    titles: Sequence[str] | None = None,
    frames_per_layer: int = 10,
    hold: int = 4,
    note: str = "",
    size: float = 4.0,
    dpi: int = 100,
    density: tuple[Bounds, float] | None = None,
) -> Path:
    """A GIF of points moving through ``states``: ``hold`` still frames on each ``z_i`` and
    ``frames_per_layer`` frames of smooth (eased linear) interpolation to ``z_(i+1)``; fixed
    axes. ``note`` is printed under the title (e.g. that frames between layers are
    interpolated).

    Points are drawn as dots coloured by their base sample, or, given ``density = (bounds,
    cell)`` (:func:`density_frame`), each frame is the density of the points: their 2-D
    histogram in square cells of side ``cell`` over ``bounds``. Many points (100,000 and more)
    make such frames sharp."""
    titles = titles or [f"z_{i}" for i in range(len(states))]
    arrays = [s.detach().cpu().double().numpy() for s in states]
    if density is None:
        bounds = bounds_of(*states, quantile=0.002)
        fig, ax = plt.subplots(figsize=(size, size), dpi=dpi)
        ax.set_xlim(bounds[:2])
        ax.set_ylim(bounds[2:])
        ax.set_aspect(axis_aspect(bounds))
        scatter = ax.scatter(arrays[0][:, 0], arrays[0][:, 1], s=2, c=_colors(states[0]), linewidths=0)

        def show(points: np.ndarray) -> None:
            scatter.set_offsets(points[:, :2])

    else:
        bounds, cell = density
        edges = [np.arange(low, high + cell / 2, cell) for low, high in (bounds[:2], bounds[2:])]
        width, height = bounds[1] - bounds[0], bounds[3] - bounds[2]
        inches = (1.6 * size if max(width, height) > 1.5 * min(width, height) else size) / max(width, height)
        fig, ax = plt.subplots(figsize=(inches * width, inches * height + 0.8), dpi=dpi)  # + the title and note
        image = ax.imshow(
            np.zeros((len(edges[1]) - 1, len(edges[0]) - 1)),
            extent=bounds,
            origin="lower",
            cmap="magma",
            interpolation="nearest",
        )
        ax.set_aspect("equal")

        def show(points: np.ndarray) -> None:
            counts, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=(edges[1], edges[0]))
            image.set_data(counts)
            image.set_clim(0, max(1.0, float(np.quantile(counts[counts > 0], 0.995))))

    ax.set_xticks([])
    ax.set_yticks([])
    if note:
        fig.text(0.5, 0.02, note, ha="center", fontsize=7, color="0.4")
    frames: list[Image.Image] = []

    def grab(points: np.ndarray, title: str) -> None:
        show(points)
        ax.set_title(title, fontsize=9)
        fig.canvas.draw()
        rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
        frames.append(rgb.quantize(colors=128 if density is None else 48, method=Image.Quantize.MEDIANCUT))

    for i in range(len(arrays)):
        for _ in range(hold if i in (0, len(arrays) - 1) or frames_per_layer > 1 else 1):
            grab(arrays[i], titles[i])
        if i + 1 < len(arrays):
            for k in range(1, frames_per_layer):
                u = k / frames_per_layer
                u = u * u * (3 - 2 * u)  # smoothstep easing
                grab((1 - u) * arrays[i] + u * arrays[i + 1], f"{titles[i].split(':')[0]} -> {titles[i + 1]}")
    plt.close(fig)
    path = Path(path)
    with atomic_path(path) as temporary:
        frames[0].save(
            temporary, format="GIF", save_all=True, append_images=frames[1:], duration=70, loop=0, optimize=True
        )
    return path


def plot_loss(result: FitResult, path: str | Path, floor: float | None = None) -> Path:
    """Training and validation NLL against the step; ``floor``, when known, is the true
    density's NLL (the entropy), drawn as a line no model can cross in expectation."""
    fig, ax = plt.subplots(figsize=(6, 4))
    twin = None
    if result.train_curve and result.train_metric == "nll":
        steps, values = zip(*result.train_curve, strict=True)
        ax.plot(steps, values, label="training (running mean)")
    elif result.train_curve:  # flow matching: its loss is not a likelihood, so an axis of its own
        steps, values = zip(*result.train_curve, strict=True)
        twin = ax.twinx()
        twin.plot(steps, values, color="tab:orange", alpha=0.6, label="training flow-matching loss")
        twin.set_ylabel("flow-matching loss")
    if result.val_curve:
        steps, values = zip(*result.val_curve, strict=True)
        ax.plot(steps, values, label="validation")
    ax.axvline(result.best_step, color="0.6", ls=":", label=f"best (step {result.best_step})")
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label=f"entropy floor ({floor:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("NLL (nats per sample)")
    curves = (result.train_curve, result.val_curve) if result.train_metric == "nll" else (result.val_curve,)
    every = [v for curve in curves for _, v in curve]
    if every:
        low, high = min([*every, floor if floor is not None else math.inf]), float(np.quantile(every, 0.9))
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    handles, labels = ax.get_legend_handles_labels()
    if twin is not None:  # one legend for both axes
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels)
    ax.grid(alpha=0.3)
    return _save(fig, path)


@torch.inference_mode()
def plot_loglik(flow: Flow, data: Tensor, context: Tensor | None, path: str | Path) -> Path:
    """Histograms of the log-likelihood of ``data`` under the trained flow and under ``N(0,
    I)`` (the untrained starting point in raw units): the tutorial's before/after picture.
    Quantized columns are dequantized first, for both, as in training."""
    points = flow.dequantize(data, torch.Generator().manual_seed(0))
    trained = flow.log_prob(points, context).double().cpu().numpy()
    before = StandardNormal(data.shape[1]).double().log_prob(points.double().cpu()).numpy()
    finite = np.isfinite(trained)
    fig, ax = plt.subplots(figsize=(6, 4))
    shown = np.concatenate((trained[finite], before))
    low, high = float(np.quantile(shown, 0.005)), float(shown.max())
    bins = np.linspace(low, high, 80)
    ax.hist(before, bins=bins, alpha=0.6, label=f"N(0, I): mean {before.mean():.3f}")
    outside = f" ({(~finite).sum()} rows outside its support)" if not finite.all() else ""
    ax.hist(trained[finite], bins=bins, alpha=0.6, label=f"trained flow: mean {trained[finite].mean():.3f}{outside}")
    ax.set_xlabel("log p(x) on test data (nats)")
    ax.set_ylabel("count")
    ax.legend()
    return _save(fig, path)


#: Test rows whose log-likelihoods the histogram of ``loglik.png`` shows (a random sample
#: when the test split is larger).
LOGLIK_ROWS = 100_000

#: Points of an animation drawn as densities (a flow trained on a picture).
DENSITY_POINTS = 100_000


def picture_shape(flow: Flow) -> tuple[int, int] | None:
    """``(height, width)`` of the picture a flow was trained on (``flowfit train --data
    image:PATH`` records it), or None."""
    shape = flow.metadata.get("picture")
    return (int(shape[0]), int(shape[1])) if isinstance(shape, list) and len(shape) == 2 else None


def run_pictures(directory: Path, flow: Flow, data: Data, result: FitResult, floor: float | None) -> list[Path]:
    """The pictures of a ``flowfit train`` run: the loss and log-likelihood for every model;
    samples, density, layers and the GIF for an unconditional 2-D one."""
    written = [
        plot_loss(result, directory / "loss.png", floor),
        plot_loglik(flow, *first_rows(data.test, LOGLIK_ROWS), directory / "loglik.png"),
    ]
    if data.dim == 2 and not flow.context_dim:
        reference = data.reference[0]
        with torch.inference_mode():
            samples = flow.sample(10_000)
        written.append(plot_samples(reference, samples, directory / "samples.png"))
        written.append(plot_density(flow, reference, directory / "density.png"))
        states, titles, _, _ = trajectory_frames(flow, 2_000, frames=8)
        written.append(plot_layers(states, directory / "layers.png", titles))
        picture = picture_shape(flow)
        n = DENSITY_POINTS if picture else 2_000
        states, titles, note, per_layer = trajectory_frames(flow, n, frames=60 if flow.is_continuous else 10)
        density = density_frame(states, picture) if picture else None
        written.append(animate(states, directory / "flow.gif", titles, per_layer, note=note, density=density))
    return written
