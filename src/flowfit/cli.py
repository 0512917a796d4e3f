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


@app.command()
@_clean_errors
def train(
    data: Annotated[
        str,
        typer.Option(
            help="A toy data set (moons, circles, eight_gaussians, checkerboard, "
            "pinwheel, spirals) or a .csv/.tsv/.npy file whose rows are samples."
        ),
    ] = "moons",
    flow: Annotated[str, typer.Option(help="Flow family.")] = "realnvp",
    layers: Annotated[int, typer.Option(help="Number of transforms (couplings).")] = 6,
    hidden: Annotated[
        str, typer.Option(help="Hidden layer sizes of each conditioner network, comma separated.")
    ] = "256,256",
    steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 6000,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam, cosine decay).")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 512,
    seed: Annotated[int, typer.Option(help="Random seed (weights, batches, data split).")] = 0,
    columns: Annotated[str | None, typer.Option(help="Columns of the file to model, comma separated.")] = None,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/train"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    plots: Annotated[bool, typer.Option(help="Write the pictures (samples, density, layers, GIF, ...).")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a flow by maximum likelihood and write model, metrics and pictures to --out."""
    from flowfit import pipeline
    from flowfit.families import FLOWS
    from flowfit.io import atomic_directory
    from flowfit.train import fit

    for value, name in ((layers, "--layers"), (steps, "--steps"), (batch_size, "--batch-size")):
        _positive(value, name)
    if not lr > 0:
        raise InputError(f"--lr must be positive, got {lr}")
    if flow not in FLOWS:
        raise InputError(f"--flow {flow!r} is not a flow family; choose from {', '.join(FLOWS)}")
    try:
        hidden_sizes = tuple(_positive(int(h), "--hidden sizes") for h in hidden.split(","))
    except ValueError:
        raise InputError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
    _refuse_overwrite(out, force)
    dataset = pipeline.resolve_data(data, columns.split(",") if columns else None, seed=seed)
    torch.manual_seed(seed)
    model = FLOWS[flow](dataset.dim, layers=layers, hidden=hidden_sizes)
    model.metadata = {"data": dataset.source, "columns": dataset.columns}
    typer.echo(
        f"training {flow} ({layers} layers, {sum(p.numel() for p in model.parameters()):,} parameters) "
        f"on {dataset.source} ({dataset.dim}-D) for {steps} steps"
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


@app.command()
@_clean_errors
def sample(
    model: Annotated[Path, typer.Option(help="Run directory of a trained model.")],
    n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 1000,
    out: Annotated[Path, typer.Option(help="CSV file to write.")] = Path("samples.csv"),
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Draw samples from a trained model into a CSV file."""
    from flowfit.io import load

    _positive(n, "-n")
    _refuse_overwrite(out, force)
    flow = load(model)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode():
        values = torch.cat([flow.sample(min(65536, n - done)) for done in range(0, n, 65536)])
    _write_csv(out, values.double().numpy(), _columns(flow))
    typer.echo(f"wrote {n} samples to {out}")


@app.command()
@_clean_errors
def density(
    model: Annotated[Path, typer.Option(help="Run directory of a trained model.")],
    input: Annotated[Path, typer.Option("--input", help="CSV/TSV/.npy file of points, one per row.")],
    out: Annotated[Path, typer.Option(help="CSV file to write (one column, log_prob).")] = Path("logp.csv"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write the exact log-density (nats, in the data's units) of each input row."""
    from flowfit.datasets import load_table
    from flowfit.io import load

    _refuse_overwrite(out, force)
    flow = load(model)
    points, _ = load_table(input)
    if points.shape[1] != flow.dim:
        raise InputError(f"{input} has {points.shape[1]} columns but the model expects {flow.dim}")
    with torch.inference_mode():
        log_p = torch.cat([flow.log_prob(chunk) for chunk in points.split(65536)])
    _write_csv(out, log_p.double().numpy()[:, None], ["log_prob"])
    typer.echo(f"wrote {len(log_p)} log-densities to {out} (mean {log_p.mean().item():.4f} nats)")


@app.command()
@_clean_errors
def animate(
    model: Annotated[Path, typer.Option(help="Run directory of a trained 2-D model.")],
    out: Annotated[Path, typer.Option(help="GIF file to write.")] = Path("flow.gif"),
    n: Annotated[int, typer.Option("-n", help="Number of points to move.")] = 2000,
    frames: Annotated[int, typer.Option(help="Frames between consecutive layers.")] = 10,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Render N(0, I) turning into the data, layer by layer, as a GIF."""
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
    with torch.inference_mode():
        states = flow.trajectory(n)
    viz.animate(
        states,
        out,
        viz.layer_titles(flow),
        frames_per_layer=frames,
        note="discrete flow: frames between layers are interpolated",
    )
    typer.echo(f"wrote {out}")


def _columns(flow: Any) -> list[str]:
    names = flow.metadata.get("columns")
    return names if isinstance(names, list) and len(names) == flow.dim else [f"x{j}" for j in range(flow.dim)]


def main() -> None:
    """Entry point for ``python -m flowfit``."""
    app(prog_name="flowfit")


if __name__ == "__main__":
    sys.exit(main())
