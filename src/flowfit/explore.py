"""``flowfit explore``: one self-contained HTML page to touch a trained flow.

The page shows the data beside the model's samples, the log-density as a heat map (hover to
read ``log p`` at the cursor), and points moving from ``N(0, I)`` to the data with a time
slider: the states ``z_0, ..., z_T`` of a discrete flow (smoothly interpolated while playing,
and labelled so), or ``z_t`` solved from the ODE at 51 times in ``[0, 1]`` for a continuous
flow. Clicking a data point draws its path and lists its change of variables,
``log N(z_0)`` and each step's ``-log|det|``, adding up to ``log p(x)``.

Everything shown is computed here, once, and embedded in the page as float32 arrays next to
the script and styles of ``data/explore.html``: the file opens from disk, offline, and makes
no request to any server. The page exposes ``window.flowfit`` (``setTime``, ``state``,
``logDensityAt``, ``explain``, ``setContext``) for automation and tests.

A model of more than two columns is shown on a chosen pair: states and samples projected on
those columns, the heat map a slice through the other columns at their median.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowfit.errors import InputError
from flowfit.files import open_output
from flowfit.flow import Flow
from flowfit.viz import axis_aspect, bounds_of, layer_titles

#: The page must stay small enough to mail.
MAX_BYTES = 5_000_000
#: Solved times of a continuous flow's path: ``t = k / 50``.
TIMES = 51
#: Positions of each context slider: these quantiles of the data's contexts.
CONTEXT_QUANTILES = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)


@dataclass(frozen=True)
class View:
    """What the page shows of a flow: the pair of columns, the data and the sizes."""

    columns: tuple[int, int] = (0, 1)
    points: int = 1000  # points moved from N(0, I), and data points drawn
    paths: int = 300  # data points whose change of variables is embedded (clickable)
    resolution: int | None = None  # heat-map cells per side (default 150; 60 for a continuous flow)
    seed: int = 0


def explore_page(
    flow: Flow,
    data: Tensor | None = None,
    context: Tensor | None = None,
    view: View = View(),
    title: str = "flowfit explorer",
) -> str:
    """The explorer's HTML for ``flow`` (see the module docstring). ``data`` (and, for a
    conditional flow, its ``context`` rows) are drawn beside the samples and are the
    clickable points; without them the page shows the model alone."""
    _check(flow, data, context, view)
    states = TIMES if flow.is_continuous else len(flow.layers) + 1
    if states * view.points * 2 * 4 * 4 / 3 > MAX_BYTES:  # float32 pairs in base64: refuse before computing
        raise InputError(_too_large(states * view.points * 32 / 3))
    with torch.random.fork_rng(), torch.inference_mode():
        torch.manual_seed(view.seed)
        payload = _payload(flow, data, context, view, title)
    text = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    template = resources.files("flowfit").joinpath("data/explore.html").read_text(encoding="utf-8")
    page = template.replace("__TITLE__", _escape(title)).replace("__PAYLOAD__", text)
    if len(page.encode()) > MAX_BYTES:
        raise InputError(_too_large(len(page.encode())))
    return page


def _too_large(size: float) -> str:
    limit = MAX_BYTES / 1e6
    return f"the page would hold {size / 1e6:.1f} MB (at most {limit:.0f}); ask for fewer points or a lower resolution"


def write_explorer(path: str | Path, page: str, force: bool = False) -> Path:
    """Write the page atomically (see :func:`flowfit.files.open_output`)."""
    with open_output(path, force) as handle:
        handle.write(page)
    return Path(path)


# -- what the page holds --------------------------------------------------------------------


def _payload(flow: Flow, data: Tensor | None, context: Tensor | None, view: View, title: str) -> dict[str, Any]:
    a, b = view.columns
    names = flow.column_names
    continuous = flow.is_continuous
    times = [k / (TIMES - 1) for k in range(TIMES)] if continuous else None
    labels = [f"t = {t:.2f}" for t in times] if times else layer_titles(flow)
    state_times = times or [i / len(flow.layers) for i in range(len(flow.layers) + 1)]
    settings, sliders = _context_settings(flow, context)
    z0 = flow.base.sample(view.points).to(flow.dtype)
    anchor = _anchor(flow, data)
    resolution = view.resolution or (60 if continuous else 150)
    scenes, all_states = [], []
    for setting in settings:
        rows = None if setting is None else setting.expand(len(z0), -1)
        states = flow.trajectory(z0, rows, t=times)
        all_states += [s[:, [a, b]] for s in states]
        scenes.append({"states": _floats(torch.stack([s[:, [a, b]] for s in states]))})
    shown = data if data is not None else all_states[-1]
    density_bounds = bounds_of(shown[:, [a, b]] if data is not None else shown, quantile=0.002)
    for scene, setting in zip(scenes, settings, strict=True):
        scene["grid"] = _floats(_grid(flow, density_bounds, resolution, anchor, view.columns, setting))
    page: dict[str, Any] = {
        "title": title,
        "names": [names[a], names[b]],
        "continuous": continuous,
        "labels": labels,
        "stateTimes": state_times,
        "points": view.points,
        "flowBounds": (flow_bounds := bounds_of(*all_states, quantile=0.002)),
        "densityBounds": density_bounds,
        # same scale on both axes (a picture keeps its shape) unless they differ by more than 5x
        "equalAspect": {"flow": axis_aspect(flow_bounds) == "equal", "density": axis_aspect(density_bounds) == "equal"},
        "resolution": resolution,
        "scenes": scenes,
        "sliders": sliders,
        "notes": _notes(flow, view, names, data is not None),
    }
    if data is not None:
        page |= _data_part(flow, data, context, view, times)
    return page


def _data_part(
    flow: Flow, data: Tensor, context: Tensor | None, view: View, times: list[float] | None
) -> dict[str, Any]:
    """The data points to draw, and the change of variables of the first ``view.paths``."""
    a, b = view.columns
    chosen = data[: view.paths]
    rows = None if context is None else context[: view.paths]
    states, log_abs_dets = flow.change_of_variables(chosen, rows, t=times)
    terms = torch.stack([flow.base.log_prob(states[0]), *(-d for d in log_abs_dets)], dim=1)
    return {
        "data": _floats(data[: view.points, [a, b]]),
        "paths": _floats(torch.stack([s[:, [a, b]] for s in states])),
        "terms": _floats(terms),
        "logProb": _floats(flow.log_prob(chosen, rows)),
        "stepLabels": _step_labels(flow, times),
    }


def _step_labels(flow: Flow, times: list[float] | None) -> list[str]:
    if times is not None:
        return [f"t {s:.2f} -> {t:.2f}" for s, t in itertools.pairwise(times)]
    return [f"z_{i} -> z_{i + 1}: {type(layer).__name__}" for i, layer in enumerate(flow.layers)]


def _grid(
    flow: Flow,
    bounds: tuple[float, float, float, float],
    resolution: int,
    anchor: Tensor,
    columns: tuple[int, int],
    setting: Tensor | None,
) -> Tensor:
    """``log p`` at the centres of a ``resolution x resolution`` grid over the pair of
    columns, the other columns at ``anchor``; row ``i`` is the ``i``-th ``y`` from the bottom."""
    x0, x1, y0, y1 = bounds
    dx, dy = (x1 - x0) / resolution, (y1 - y0) / resolution
    xs = x0 + dx * (torch.arange(resolution, dtype=torch.float64) + 0.5)
    ys = y0 + dy * (torch.arange(resolution, dtype=torch.float64) + 0.5)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = anchor.double().expand(resolution * resolution, -1).clone()
    points[:, columns[0]], points[:, columns[1]] = gx.flatten(), gy.flatten()
    rows = None if setting is None else setting.expand(len(points), -1)
    return flow.log_prob(points, rows).view(resolution, resolution)


def _anchor(flow: Flow, data: Tensor | None) -> Tensor:
    """Where the other columns sit for the heat map: the data's median (or the middle of the
    training range a trained flow remembers)."""
    if data is not None:
        return data.median(dim=0).values
    if bool(flow.initialized):
        return flow.data_range.double().mean(dim=0)
    return torch.zeros(flow.dim, dtype=torch.float64)


def _context_settings(flow: Flow, context: Tensor | None) -> tuple[list[Tensor | None], list[dict[str, Any]]]:
    """The contexts the page can show: all columns at their median, then each column moved
    through :data:`CONTEXT_QUANTILES` with the others at their median. Returns the settings
    and, per context column, its slider: name, values and the setting of each position."""
    if not flow.context_dim:
        return [None], []
    if context is not None:
        quantiles = torch.quantile(context.double(), torch.tensor(CONTEXT_QUANTILES, dtype=torch.float64), dim=0)
    elif bool(flow.initialized):
        low, high = flow.context_range.double()
        quantiles = torch.stack([low + q * (high - low) for q in CONTEXT_QUANTILES])
    else:
        raise InputError("a conditional flow that was never trained has no range of contexts to show")
    middle = CONTEXT_QUANTILES.index(0.5)
    median = quantiles[middle]
    settings: list[Tensor | None] = [median[None]]
    sliders = []
    given = list(flow.metadata.get("given") or [f"c{j}" for j in range(flow.context_dim)])
    for j, name in enumerate(given):
        scene_of = []
        for k in range(len(CONTEXT_QUANTILES)):
            if k == middle:
                scene_of.append(0)
                continue
            setting = median.clone()
            setting[j] = quantiles[k, j]
            settings.append(setting[None])
            scene_of.append(len(settings) - 1)
        sliders.append({"name": name, "values": quantiles[:, j].tolist(), "scenes": scene_of, "start": middle})
    return [s.to(flow.dtype) for s in settings], sliders


def _notes(flow: Flow, view: View, names: list[str], with_data: bool) -> list[str]:
    notes = []
    if flow.is_continuous:
        notes.append("continuous flow: the states are z_t solved from the ODE at t = 0, 0.02, ..., 1")
    else:
        notes.append("discrete flow: z_0, ..., z_T are the layers' outputs; between them the points are interpolated")
    if flow.dim > 2:
        others = ", ".join(n for j, n in enumerate(names) if j not in view.columns)
        notes.append(
            f"{flow.dim} columns shown on {names[view.columns[0]]} and {names[view.columns[1]]}: points are "
            f"projected; the heat map is a slice with {others} at their median"
        )
    if flow.context_dim:
        notes.append("one context slider moves at a time; the others sit at their median")
    if not with_data:
        notes.append("no data given: the page shows the model alone")
    return notes


# -- helpers --------------------------------------------------------------------------------


def _check(flow: Flow, data: Tensor | None, context: Tensor | None, view: View) -> None:
    a, b = view.columns
    if flow.dim < 2:
        raise InputError("the explorer draws a plane: the model needs at least 2 columns")
    if a == b or not (0 <= a < flow.dim and 0 <= b < flow.dim):
        raise InputError(f"columns {view.columns} must be two different columns of {flow.dim}")
    for value, name in ((view.points, "points"), (view.paths, "paths")):
        if value < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")
    if view.resolution is not None and not 2 <= view.resolution <= 400:
        raise InputError(f"the resolution must lie in 2..400, got {view.resolution}")
    if data is not None and (data.dim() != 2 or data.shape[1] != flow.dim):
        raise InputError(f"data must have shape (n, {flow.dim}), got {tuple(data.shape)}")
    if flow.context_dim and data is not None and context is None:
        raise InputError("this flow is conditional: the data need their context rows")


def _floats(values: Tensor) -> dict[str, Any]:
    """A tensor as little-endian float32 bytes in base64, with its shape."""
    array = values.detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4")
    return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def column_pair(names: Sequence[str], wanted: Sequence[str] | None) -> tuple[int, int]:
    """The positions of the two columns ``wanted`` (by name), or the first two."""
    if wanted is None:
        return 0, 1
    if len(wanted) != 2:
        raise InputError(f"--columns names two columns to draw, got {len(wanted)}")
    missing = [w for w in wanted if w not in names]
    if missing:
        raise InputError(f"the model has no column {missing[0]!r}; its columns are {', '.join(names)}")
    if wanted[0] == wanted[1]:
        raise InputError(f"--columns names {wanted[0]!r} twice")
    return names.index(wanted[0]), names.index(wanted[1])
