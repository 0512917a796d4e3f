"""The ``flowfit`` command: train a flow, sample from it, score points, animate it.

Every error a user can cause ends with one line on stderr (``error: ...``) and exit code 1;
outputs are written atomically and never overwritten without ``--force``.
"""

from __future__ import annotations

import functools
import sys
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
            typer.echo("interrupted; no output was written", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise InputError(f"{name} must be a positive integer, got {value}")
    return value


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise InputError(f"{path} already exists; pass --force to replace it")


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
            "saratoga or digits (tables that ship inside packages), or a .csv/.tsv/.npy/.npz/.parquet file "
            "whose rows are samples."
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
    lr: Annotated[float | None, typer.Option(help="Peak learning rate of Adam [default: the family's].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per step, over all processes [default: 512].")] = None,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule: cosine, plateau or constant.")] = "cosine",
    ema: Annotated[float | None, typer.Option(help="Average the weights with this EMA decay (e.g. 0.999).")] = None,
    patience: Annotated[int | None, typer.Option(help="Stop after this many validations without improvement.")] = None,
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
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    checkpoint_every: Annotated[
        int, typer.Option(help="Checkpoint every this many steps (and on Ctrl-C), in OUT.partial/; 0: only on Ctrl-C.")
    ] = 1000,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/train"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the interrupted run of this --out directory, with its own settings."),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Write the pictures (samples, density, layers, GIF, ...).")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a flow by maximum likelihood and write model, metrics and pictures to --out."""
    from flowfit.runner import RunSettings, run_training

    if resume is not None:
        run_training(RunSettings.load(resume), resume=True, progress=progress, echo=typer.echo)
        return
    settings = RunSettings(
        data=data,
        flow=flow,
        objective=objective,
        layers=layers,
        hidden=_int_list(hidden, "--hidden"),
        bins=bins,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        schedule=schedule,
        ema=ema,
        patience=patience,
        seed=seed,
        columns=_names(columns),
        given=_names(given),
        preprocess=preprocess,
        device=device,
        dtype=dtype,
        checkpoint_every=checkpoint_every,
        out=str(out),
        force=force,
        plots=plots,
    )
    run_training(settings, resume=False, progress=progress, echo=typer.echo)


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
    from flowfit.io import atomic_path, load

    _positive(n, "-n")
    _refuse_overwrite(out, force)
    flow = load(model)
    context = _parse_given(given, flow)
    if seed is not None:
        torch.manual_seed(seed)
    chunk = 65536  # drawn and written a chunk at a time: memory stays flat for any n
    with atomic_path(out) as temporary, temporary.open("w") as handle, torch.inference_mode():
        handle.write(",".join(_columns(flow)) + "\n")
        for done in range(0, n, chunk):
            values = flow.quantize(flow.sample(min(chunk, n - done), context).reshape(-1, flow.dim))
            np.savetxt(handle, values.double().numpy(), delimiter=",", fmt="%.8g")
    typer.echo(f"wrote {n} samples to {out}")


@app.command()
@_clean_errors
def density(
    model: Annotated[Path, typer.Option(help="Run directory of a trained model.")],
    input_path: Annotated[Path, typer.Option("--input", help="CSV/TSV/.npy file of points, one per row.")],
    out: Annotated[Path, typer.Option(help="CSV file to write (one column, log_prob).")] = Path("logp.csv"),
    chunk_rows: Annotated[int, typer.Option(help="Rows read and scored at a time (memory stays flat).")] = 65536,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write the exact log-density (nats, in the data's units) of each input row.

    A file with a header row may hold more columns than the model's: the model's columns
    (and, for a conditional model, its given columns) are picked by name. Columns the model
    dequantizes get their uniform noise first (fixed seed), as in training. The file is read,
    scored and written in chunks, so its length is not limited by memory.
    """
    from flowfit.datasets import iter_table
    from flowfit.io import atomic_path, load

    _positive(chunk_rows, "--chunk-rows")
    _refuse_overwrite(out, force)
    flow = load(model)
    noise = torch.Generator().manual_seed(0)
    count, total = 0, 0.0
    with atomic_path(out) as temporary, temporary.open("w") as handle, torch.inference_mode():
        handle.write("log_prob\n")
        for values, names in iter_table(input_path, chunk_rows):
            points, context = _model_inputs(flow, torch.as_tensor(values, dtype=torch.float32), names, input_path)
            log_p = flow.log_prob(flow.dequantize(points, noise), context).double()
            np.savetxt(handle, log_p.numpy()[:, None], fmt="%.8g")
            count, total = count + len(log_p), total + log_p.sum().item()
        if count == 0:  # inside the block: nothing is written
            raise InputError(f"{input_path}: the file has no data rows")
    typer.echo(f"wrote {count} log-densities to {out} (mean {total / count:.4f} nats)")


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
