"""The ``flowfit`` command: train a flow, sample from it, score points, animate it.

Every error a user can cause ends with one line on stderr (``error: ...``) and exit code 1;
outputs are written atomically and never overwritten without ``--force``.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import torch
import typer

from flowfit.errors import FlowfitError, InputError

app = typer.Typer(
    help="Normalizing flows: learn an invertible map from N(0, I) to your data, then score, sample and animate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _clean_errors(command: F) -> F:
    """Turn flowfit's errors into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FlowfitError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing was written", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise InputError(f"{name} must be a positive integer, got {value}")
    return value


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise InputError(f"{path} already exists; pass --force to replace it")


def _write_csv(path: Path, values: np.ndarray, header: list[str]) -> None:
    from flowfit.io import atomic_path

    with atomic_path(path) as temporary:
        np.savetxt(temporary, values, delimiter=",", header=",".join(header), comments="", fmt="%.8g")


def _int_list(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(_positive(int(part), name) for part in text.split(","))
    except ValueError:
        raise InputError(f"{name} must be comma-separated integers, got {text!r}") from None


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.command()
@_clean_errors
def train(
    data: Annotated[
        str,
        typer.Option(
            help="A toy data set (moons, circles, eight_gaussians, checkerboard, pinwheel, spirals), "
            "image:PATH (points drawn from a picture's dark pixels), logo (flowfit's own picture), "
            "or a .csv/.tsv/.npy file whose rows are samples."
        ),
    ] = "moons",
    flow: Annotated[
        str, typer.Option(help="Flow family: realnvp, nsf, nsf-ar, maf, iaf, nice, glow, cnf.")
    ] = "realnvp",
    objective: Annotated[
        str, typer.Option(help="mle (maximum likelihood) or, for --flow cnf, fm (flow matching).")
    ] = "mle",
    layers: Annotated[int | None, typer.Option(help="Number of transforms [default: the family's].")] = None,
    hidden: Annotated[
        str | None,
        typer.Option(help="Hidden sizes of each conditioner network, comma separated [default: the family's]."),
    ] = None,
    bins: Annotated[int | None, typer.Option(help="Spline bins (nsf, nsf-ar) [default: 8].")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimisation steps [default: the family's].")] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate, Adam with cosine decay [default: the family's].")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per step [default: 512].")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (weights, batches, data split).")] = 0,
    columns: Annotated[
        str | None, typer.Option(help="File columns to model, comma separated [default: all others].")
    ] = None,
    given: Annotated[
        str | None, typer.Option(help="File columns to condition on, comma separated: trains p(columns | given).")
    ] = None,
    preprocess: Annotated[
        str,
        typer.Option(
            help="Per-column preprocessing of file data: auto, none, log, logit[a,b], dequantize, dequantize+log, "
            "or name=spec,name=spec (others auto)."
        ),
    ] = "auto",
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/train"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    plots: Annotated[bool, typer.Option(help="Write the pictures (samples, density, layers, GIF, ...).")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a flow by maximum likelihood and write model, metrics and pictures to --out."""
    from flowfit import pipeline
    from flowfit.io import atomic_directory
    from flowfit.preprocess import describe
    from flowfit.train import fit

    if flow not in pipeline.FLOW_CHOICES:
        raise InputError(f"--flow {flow!r} is not a flow family; choose from {', '.join(pipeline.FLOW_CHOICES)}")
    if objective not in ("mle", "fm"):
        raise InputError(f"--objective must be mle or fm, got {objective!r}")
    if objective == "fm" and flow != "cnf":
        raise InputError("--objective fm (flow matching) trains continuous flows: use it with --flow cnf")
    defaults = pipeline.training_defaults(flow, objective)
    steps = _positive(steps if steps is not None else defaults["steps"], "--steps")
    batch_size = _positive(batch_size if batch_size is not None else defaults["batch_size"], "--batch-size")
    lr = lr if lr is not None else defaults["lr"]
    if not lr > 0:
        raise InputError(f"--lr must be positive, got {lr}")
    options = {
        "layers": None if layers is None else _positive(layers, "--layers"),
        "hidden": _int_list(hidden, "--hidden") or defaults.get("hidden"),
        "bins": None if bins is None else _positive(bins, "--bins"),
    }
    if flow == "cnf" and (options.pop("layers") is not None or options.pop("bins") is not None):
        raise InputError("--layers and --bins do not apply to --flow cnf (one continuous-time layer)")
    _refuse_overwrite(out, force)
    dataset = pipeline.resolve_data(data, _names(columns), _names(given), seed=seed, preprocess=preprocess)
    if dataset.plans:
        typer.echo(f"preprocessing: {describe(dataset.plans, dataset.columns)}")
    torch.manual_seed(seed)
    model = pipeline.build_flow(flow, dataset.dim, len(dataset.given), dataset.plans, **options)
    model.metadata = {
        "data": dataset.source,
        "columns": dataset.columns,
        "given": dataset.given,
        "flow": flow,
        "objective": objective,
    }
    what = f"p({', '.join(dataset.columns)} | {', '.join(dataset.given)})" if dataset.given else f"{dataset.dim}-D"
    typer.echo(
        f"training {flow} ({sum(p.numel() for p in model.parameters()):,} parameters) "
        f"on {dataset.source} ({what}) for {steps} steps"
    )
    start = time.perf_counter()
    result = fit(
        model,
        dataset.train,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        val_data=dataset.val,
        progress=progress,
    )
    metrics = pipeline.evaluate(model, dataset, result)
    with atomic_directory(out, force=force) as temporary:
        written = pipeline.write_run(temporary, model, dataset, result, metrics, plots=plots)
    metrics["wall_seconds"] = round(time.perf_counter() - start, 2)
    _print_summary(metrics, [out / p.name for p in written])


def _print_summary(metrics: dict[str, Any], written: list[Path]) -> None:
    line = (
        f"test NLL {metrics['test_nll']:.4f} ± {metrics['test_nll_stderr']:.4f} nats on {metrics['test_size']:,} points"
    )
    typer.echo(line)
    if "entropy_floor" in metrics:
        typer.echo(
            f"entropy floor {metrics['entropy_floor']:.4f} nats (the true density's NLL on the same points); "
            f"gap {metrics['gap_to_floor']:.4f} nats"
        )
    typer.echo(
        f"train NLL {metrics['train_nll']:.4f}, validation NLL {metrics['val_nll']:.4f}; "
        f"{metrics['steps']} steps (best at {metrics['best_step']}) in {metrics['seconds']:.1f} s, "
        f"{metrics['wall_seconds']:.1f} s with evaluation and pictures"
    )
    typer.echo("wrote " + ", ".join(str(p) for p in written))


def _parse_given(text: str | None, flow: Any) -> torch.Tensor | None:
    """``"a=1.5,b=2"`` -> a ``(1, context_dim)`` tensor in the model's order of given columns."""
    names: list[str] = list(flow.metadata.get("given") or [])
    if not flow.context_dim:
        if text:
            raise InputError("--given: this model is unconditional")
        return None
    if not text:
        raise InputError(f"this model is conditional: pass --given with {', '.join(f'{n}=VALUE' for n in names)}")
    values: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            values[name.strip()] = float(value) if sep else float("nan")
        except ValueError:
            raise InputError(f"--given: {value.strip()!r} is not a number") from None
    if sorted(values) != sorted(names) or not all(np.isfinite(list(values.values()))):
        raise InputError(f"--given must set exactly {', '.join(f'{n}=VALUE' for n in names)}, got {text!r}")
    return torch.tensor([[values[n] for n in names]])


@app.command()
@_clean_errors
def sample(
    model: Annotated[Path, typer.Option(help="Run directory of a trained model.")],
    n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 1000,
    out: Annotated[Path, typer.Option(help="CSV file to write.")] = Path("samples.csv"),
    given: Annotated[
        str | None, typer.Option(help='Context of a conditional model, e.g. "livingArea=2000" (comma separated).')
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Draw samples from a trained model into a CSV file (dequantized columns rounded back down)."""
    from flowfit.io import load

    _positive(n, "-n")
    _refuse_overwrite(out, force)
    flow = load(model)
    context = _parse_given(given, flow)
    if seed is not None:
        torch.manual_seed(seed)
    chunk = 65536
    with torch.inference_mode():
        parts = [flow.sample(min(chunk, n - done), context) for done in range(0, n, chunk)]
    values = flow.quantize(torch.cat([p.reshape(-1, flow.dim) for p in parts]))
    _write_csv(out, values.double().numpy(), _columns(flow))
    typer.echo(f"wrote {n} samples to {out}")


@app.command()
@_clean_errors
def density(
    model: Annotated[Path, typer.Option(help="Run directory of a trained model.")],
    input_path: Annotated[Path, typer.Option("--input", help="CSV/TSV/.npy file of points, one per row.")],
    out: Annotated[Path, typer.Option(help="CSV file to write (one column, log_prob).")] = Path("logp.csv"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write the exact log-density (nats, in the data's units) of each input row.

    A file with a header row may hold more columns than the model's: the model's columns
    (and, for a conditional model, its given columns) are picked by name. Columns the model
    dequantizes get their uniform noise first (fixed seed), as in training.
    """
    from flowfit.datasets import load_table
    from flowfit.io import load

    _refuse_overwrite(out, force)
    flow = load(model)
    table, names = load_table(input_path)
    points, context = _model_inputs(flow, table, names, input_path)
    points = flow.dequantize(points, torch.Generator().manual_seed(0))  # a no-op unless the model dequantizes
    with torch.inference_mode():
        chunks = points.split(65536)
        contexts = context.split(65536) if context is not None else [None] * len(chunks)
        log_p = torch.cat([flow.log_prob(x, c) for x, c in zip(chunks, contexts, strict=True)])
    _write_csv(out, log_p.double().numpy()[:, None], ["log_prob"])
    typer.echo(f"wrote {len(log_p)} log-densities to {out} (mean {log_p.mean().item():.4f} nats)")


def _model_inputs(flow: Any, table: torch.Tensor, names: list[str], path: Path) -> tuple[torch.Tensor, Any]:
    """The model's columns (and given columns) of a loaded table, by name where possible."""
    columns, given = _columns(flow), list(flow.metadata.get("given") or [])
    if all(c in names for c in columns + given) and (given or table.shape[1] != flow.dim):
        points = table[:, [names.index(c) for c in columns]]
        context = table[:, [names.index(c) for c in given]] if given else None
        return points, context
    if given:
        raise InputError(f"{path} needs a header with the columns {', '.join(columns + given)}")
    if table.shape[1] != flow.dim:
        raise InputError(f"{path} has {table.shape[1]} columns but the model expects {flow.dim}")
    return table, None


@app.command()
@_clean_errors
def animate(
    model: Annotated[Path, typer.Option(help="Run directory of a trained 2-D model.")],
    out: Annotated[Path, typer.Option(help="GIF file to write.")] = Path("flow.gif"),
    n: Annotated[int, typer.Option("-n", help="Number of points to move.")] = 2000,
    frames: Annotated[
        int, typer.Option(help="Frames between consecutive layers; for a continuous flow, frames in all.")
    ] = 10,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Render N(0, I) turning into the data as a GIF: layer by layer, or along the ODE's path."""
    from flowfit import viz
    from flowfit.io import load

    _positive(n, "-n")
    _positive(frames, "--frames")
    _refuse_overwrite(out, force)
    flow = load(model)
    if flow.dim != 2:
        raise InputError(f"animate draws 2-D flows; this model is {flow.dim}-D")
    if seed is not None:
        torch.manual_seed(seed)
    states, titles, note, per_layer = viz.trajectory_frames(flow, n, frames)
    viz.animate(states, out, titles, per_layer, note=note)
    typer.echo(f"wrote {out}")


def _columns(flow: Any) -> list[str]:
    names = flow.metadata.get("columns")
    return names if isinstance(names, list) and len(names) == flow.dim else [f"x{j}" for j in range(flow.dim)]


def main() -> None:
    """Entry point for ``python -m flowfit``."""
    app(prog_name="flowfit")


if __name__ == "__main__":
    sys.exit(main())
