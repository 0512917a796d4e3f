"""The ``flowfit`` command: train a flow, sample from it, score points, animate it.

Every error a user can cause ends with one line on stderr (``error: ...``) and a non-zero
exit code; outputs are checked before any work, written atomically (or streamed, for ``-``
and devices) and never overwritten without ``--force``. SIGTERM cleans up like Ctrl-C.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand

from flowfit import options as training_options
from flowfit._version import __version__
from flowfit.errors import FlowfitError, InputError
from flowfit.families import FAMILIES, GENERATED_DEFAULT, TABLE_DEFAULT
from flowfit.flow import NOT_INTEGRABLE

app = typer.Typer(
    help="Normalizing flows: learn an invertible map from N(0, I) to your data, then score, sample and animate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])


class StrictCommand(TyperCommand):
    """A command that refuses an option given twice (``--lr 1 --lr 2``), which click would
    settle silently by keeping the last."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        counts: dict[str, int] = {}
        for arg in args:
            if arg == "--":
                break
            for param in self.params:
                names = [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
                if not getattr(param, "multiple", False) and arg.split("=", 1)[0] in names:
                    counts[names[0]] = counts.get(names[0], 0) + 1
        repeated = [name for name, count in counts.items() if count > 1]
        if repeated:
            raise typer.BadParameter(f"{repeated[0]} is given more than once; give it once")
        return super().parse_args(ctx, args)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowfit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Normalizing flows: learn an invertible map from N(0, I) to your data, then score, sample and animate it."""


def _clean_errors(command: F) -> F:
    """One line on stderr and exit code 1 for flowfit's errors; SIGTERM ends like Ctrl-C."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flowfit.files import terminate_gracefully

        try:
            with terminate_gracefully(), warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except FlowfitError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except OSError as error:  # a full disk, a permission, a vanished file: the system's words
            where = f": {error.filename}" if error.filename else ""
            typer.echo(f"error: {error.strerror or error}{where}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; no output was written", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Warnings as one line on stderr, as errors are."""
    typer.echo(f"warning: {message}", err=True)


def _per_family(argument: str, objective: str = "mle") -> str:
    """``[default: realnvp 6, nsf 4, ...]``: a constructor argument's default per family."""
    values = [f"{f.name} {_text(f.defaults(objective)[argument])}" for f in FAMILIES.values() if f.accepts(argument)]
    extra = f"; cnf with fm {_text(FAMILIES['cnf'].defaults('fm')[argument])}" if argument == "hidden" else ""
    return f"[default: {', '.join(values)}{extra}]"


def _training_default(name: str) -> str:
    values = [f"{f.name} {f.cls.defaults_for('mle')[1][name]:g}" for f in FAMILIES.values()]
    return f"[default: {', '.join(values)}; cnf with fm {FAMILIES['cnf'].cls.defaults_for('fm')[1][name]:g}]"


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def _with_training_options(command: F) -> F:
    """Add one command-line option per :class:`~flowfit.options.TrainOptions` field (same
    name, same default) to ``command``, which receives them as ``training``, a dict."""
    fields = training_options.fields()
    extra = []
    for item in fields:
        kind = training_options.value_type(item)
        help_text = item.metadata["help"]
        if item.name in ("steps", "batch_size", "lr"):
            help_text += " " + _training_default(item.name)
        if item.metadata["choices"]:
            help_text += f" One of: {', '.join(item.metadata['choices'])}."
        annotation = Annotated[kind | None if item.default is None else kind, typer.Option(help=help_text)]
        extra.append(
            inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=item.default, annotation=annotation)
        )

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        return command(training={item.name: kwargs.pop(item.name) for item in fields}, **kwargs)

    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "training"]
    wrapper.__signature__ = inspect.Signature([*own, *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *extra]}
    return wrapper  # type: ignore[return-value]


def _names(values: list[str] | None, option: str) -> list[str] | None:
    """Comma-separated names from a (repeatable) option; a name given twice is an error."""
    if not values:
        return None
    names = [part.strip() for value in values for part in value.split(",")]
    if "" in names:
        raise InputError(f"{option} has an empty name in {','.join(values)!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"{option} names {', '.join(map(repr, repeated))} more than once")
    return names


def _int_list(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"{option} must be comma-separated integers, got {text!r}") from None


@app.command(cls=StrictCommand)
@_clean_errors
@_with_training_options
def train(
    ctx: typer.Context,
    data: Annotated[
        str,
        typer.Option(
            help="A toy data set (moons, circles, eight_gaussians, checkerboard, pinwheel, spirals), "
            "image:PATH (points drawn from a picture's dark pixels), logo (flowfit's own picture), "
            "saratoga or digits (tables that ship inside packages), or a .csv/.tsv/.npy/.npz/.parquet file "
            "whose rows are samples (FILE.npz:NAME picks an array)."
        ),
    ] = "moons",
    flow: Annotated[
        str,
        typer.Option(
            help=f"Flow family: auto ({GENERATED_DEFAULT} for toys and pictures, {TABLE_DEFAULT} for tables), "
            f"{', '.join(FAMILIES)}."
        ),
    ] = "auto",
    layers: Annotated[int | None, typer.Option(help="Number of transforms " + _per_family("layers"))] = None,
    hidden: Annotated[
        str | None, typer.Option(help="Hidden sizes of each network, comma separated " + _per_family("hidden"))
    ] = None,
    bins: Annotated[int | None, typer.Option(help="Spline bins " + _per_family("bins"))] = None,
    columns: Annotated[
        list[str] | None,
        typer.Option(metavar="NAMES", help="File columns to model, comma separated [default: all others]."),
    ] = None,
    given: Annotated[
        list[str] | None,
        typer.Option(metavar="NAMES", help="File columns to condition on, comma separated: trains p(columns | given)."),
    ] = None,
    categorical: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAMES",
            help="Columns of integers to model as categories, comma separated (a text column in --columns is "
            "categorical anyway): the model is p(c) p(x | c).",
        ),
    ] = None,
    missing: Annotated[
        str,
        typer.Option(
            help="A missing cell (empty or NaN): error (naming its row and column) or drop (drop its row, "
            "and say how many were dropped)."
        ),
    ] = "error",
    preprocess: Annotated[
        str,
        typer.Option(
            help="Per-column preprocessing of tables: auto, none, log, logit[a,b], dequantize, dequantize+log, "
            "or name=spec,name=spec (others auto)."
        ),
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/train"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it is a flowfit run.")] = False,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the interrupted run of this --out directory, with its own settings (alone)."),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Write the pictures (samples, density, layers, GIF, ...).")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    training: dict[str, Any] | None = None,
) -> None:
    """Train a flow (maximum likelihood, or flow matching for cnf) and write model, metrics and pictures to --out."""
    from flowfit.options import TrainOptions
    from flowfit.runner import RunSettings, run_training

    if resume is not None:
        others = [
            f"--{name.replace('_', '-')}"
            for name in ctx.params
            if name not in ("resume", "progress")
            and ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")
        ]
        if others:
            raise InputError(f"--resume continues with the run's own settings; do not pass {', '.join(others)}")
        run_training(RunSettings.load(resume), resume=True, progress=progress, echo=typer.echo)
        return
    settings = RunSettings(
        data=data,
        columns=_names(columns, "--columns"),
        given=_names(given, "--given"),
        categorical=_names(categorical, "--categorical"),
        missing=missing,
        preprocess=preprocess,
        flow=flow,
        layers=layers,
        hidden=_int_list(hidden, "--hidden"),
        bins=bins,
        training=TrainOptions(**(training or {})),
        device=device,
        dtype=dtype,
        out=str(out),
        force=force,
        plots=plots,
    )
    run_training(settings, resume=False, progress=progress, echo=typer.echo)


def _parse_given(values: list[str] | None, flow: Any) -> Any:
    """``["a=1.5,b=2"]`` -> a ``(1, context_dim)`` tensor in the model's order of given columns."""
    import math

    import torch

    names: list[str] = list(flow.metadata.get("given") or [])
    if not names:
        if values:
            raise InputError("--given: this model has no given columns")
        return None
    expected = ", ".join(f"{n}=VALUE" for n in names)
    if not values:
        raise InputError(f"this model is conditional: pass --given {expected}")
    given: dict[str, float] = {}
    for part in (p for value in values for p in value.split(",") if p.strip()):
        name, sep, value = (piece.strip() for piece in part.partition("="))
        if not sep:
            raise InputError(f"--given takes NAME=VALUE, got {part.strip()!r}")
        if name in given:
            raise InputError(f"--given sets {name!r} more than once")
        try:
            given[name] = float(value)
        except ValueError:
            raise InputError(f"--given: {value!r} is not a number") from None
        if not math.isfinite(given[name]):
            raise InputError(f"--given {name}={value}: the value must be finite")
    if sorted(given) != sorted(names):
        raise InputError(f"--given must set exactly {expected}")
    return torch.tensor([[given[n] for n in names]], dtype=torch.float64)


def _refuse_categorical(flow: Any, command: str) -> None:
    if flow.metadata.get("categorical") is not None:
        raise InputError(f"{command} draws models without categorical columns; this one has some")


def _warn_far(flow: Any, far: int, total: int, what: str) -> None:
    if far:
        typer.echo(
            f"warning: {far} of {total} {what} far outside the training data (beyond its range by more than "
            "the range's width): the numbers there are extrapolation",
            err=True,
        )


def _say(out: Path, text: str) -> None:
    """Status lines go to stderr when the output itself goes to stdout."""
    typer.echo(text, err=str(out) == "-")


@app.command(cls=StrictCommand)
@_clean_errors
def sample(
    model: Annotated[Path, typer.Option(help="Run directory of a trained model.")],
    n: Annotated[int, typer.Option("-n", help="Number of samples (per --given row).")] = 1000,
    out: Annotated[Path, typer.Option(help="CSV file to write; - for standard output.")] = Path("samples.csv"),
    given: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=VALUE", help='Context of a conditional model, e.g. "livingArea=2000".'),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Draw samples from a trained model into a CSV file (dequantized columns rounded back down;
    categorical columns as their labels, after the continuous ones)."""
    import csv

    import numpy as np
    import torch

    from flowfit.categories import categories_of
    from flowfit.files import check_output, open_output
    from flowfit.io import load

    if n < 1:
        raise InputError(f"-n must be a positive integer, got {n}")
    check_output(out, force)
    delimiter = _csv_delimiter(out)
    _seed(seed)
    flow = load(model)
    context = _parse_given(given, flow)
    if context is not None:
        _warn_far(flow, int(flow.far_outside(None, context).sum()), 1, "--given rows lie")
    categories = categories_of(flow)
    chunk = 65536  # drawn and written a chunk at a time: memory stays flat for any n
    with open_output(out, force) as handle, torch.inference_mode():
        if categories is None:
            handle.write(delimiter.join(flow.column_names) + "\n")
            for done in range(0, n, chunk):
                values = flow.quantize(flow.sample(min(chunk, n - done), context).reshape(-1, flow.dim))
                np.savetxt(handle, values.double().numpy(), delimiter=delimiter, fmt=_digits(flow))
        else:  # c ~ p(c), then x ~ p(x | c); labels quoted as CSV needs
            writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
            writer.writerow([*flow.column_names, *categories.columns])
            for done in range(0, n, chunk):
                codes = categories.sample(min(chunk, n - done))
                values = flow.quantize(flow.sample(1, categories.one_hot(codes)).reshape(-1, flow.dim))
                numbers = np.char.mod(_digits(flow), values.double().numpy())
                writer.writerows(np.concatenate((numbers.astype(object), categories.decode(codes)), axis=1).tolist())
    _say(out, f"wrote {n} samples to {out}")


@app.command(cls=StrictCommand)
@_clean_errors
def density(
    model: Annotated[Path, typer.Option(help="Run directory of a trained model.")],
    input_path: Annotated[str, typer.Option("--input", help="CSV/TSV/.npy/.npz/.parquet file of points, one per row.")],
    out: Annotated[Path, typer.Option(help="CSV file to write (one column, log_prob); - for stdout.")] = Path(
        "logp.csv"
    ),
    missing: Annotated[
        str,
        typer.Option(
            help="A row with a missing cell (empty or NaN): error (naming its row and column), drop (its "
            "log_prob is left empty: output rows stay aligned with input rows) or marginal (the exact density "
            "of its observed cells: missing categorical cells are summed out, and with --flow nsf-ar-ordered "
            "missing trailing columns integrated out)."
        ),
    ] = "error",
    chunk_rows: Annotated[int, typer.Option(help="Rows read and scored at a time (memory stays flat).")] = 65536,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write the exact log-density (nats, in the data's units) of each input row.

    A file with a header is matched by column name: it must hold the model's columns (and,
    for a conditional model, its given columns), in any order, and may hold others (an id,
    text). A file without a header must have exactly the model's columns, in the model's
    order. For a model with categorical columns the number is log p(x, c) = log p(c) +
    log p(x | c) (nats per row; a label the model never saw is an error). Columns the model
    dequantizes get their uniform noise first (fixed seed), as in training. The file is read,
    scored and written in chunks, so its length is not limited by memory; output row k is
    always input row k.
    """
    import numpy as np
    import torch

    from flowfit.categories import INTEGER, categories_of, integer_labels, joint_context, marginal_log_prob
    from flowfit.files import check_output, open_output
    from flowfit.io import load
    from flowfit.tables import MISSING_POLICIES, check_values, open_table

    if chunk_rows < 1:
        raise InputError(f"--chunk-rows must be a positive integer, got {chunk_rows}")
    if missing not in MISSING_POLICIES:
        raise InputError(f"--missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    check_output(out, force)
    _csv_delimiter(out)
    flow = load(model)
    categories = categories_of(flow)
    if missing == "marginal" and categories is None and not flow.marginalizes_trailing_columns:
        raise InputError(f"--missing marginal: this model has no categorical columns, and {NOT_INTEGRABLE}")
    table = open_table(input_path)
    points, given = _match_columns(flow, table.names, table.has_header, input_path)
    discrete = categories.columns if categories is not None else []
    integers = [c for c, kind in zip(discrete, categories.kinds, strict=True) if kind == INTEGER] if discrete else []
    texts = [c for c in discrete if c not in integers]
    continuous = len(points) + len(given)
    names = [*flow.column_names, *(flow.metadata.get("given") or [])]
    noise = torch.Generator().manual_seed(0)
    count, total, far, unscored, summed = 0, 0.0, 0, 0, 0

    def scored() -> Iterator[Any]:
        """Each block's log-densities (NaN: not scored), after the block's values are checked."""
        nonlocal count, total, far, unscored, summed
        for block in table.blocks([*points, *given, *integers], texts, chunk_rows, keep_missing=missing != "error"):
            start, values = block.start, block.values
            holes = block.missing
            check_values(np.nan_to_num(values[:, :continuous], nan=0.0), flow.dtype, names, input_path, start)
            x = torch.from_numpy(values[:, : len(points)])
            context = torch.from_numpy(values[:, len(points) : continuous]) if given else None
            codes = None
            if categories is not None:
                labels = np.empty((len(block), len(discrete)), dtype=object)
                for k, name in enumerate(discrete):
                    if name in texts:
                        labels[:, k] = block.labels[:, texts.index(name)]
                    else:
                        column = values[:, continuous + integers.index(name)]
                        labels[:, k] = integer_labels(column, name, input_path, start)
                codes = categories.encode(labels, input_path, start)
                context = joint_context(context, codes.clamp(min=0), categories)
            noisy = flow.dequantize(x, noise)  # one draw per row, as for a complete file; NaN stays NaN
            log_p = torch.full((len(block),), float("nan"), dtype=torch.float64)
            whole = torch.from_numpy(~holes)
            if bool(whole.any()):
                rows = whole.nonzero()[:, 0]
                part = None if context is None else context[rows]
                far += int(flow.far_outside(x[rows], part).sum())
                log_p[rows] = flow.log_prob(noisy[rows], part).double().cpu()
                if categories is not None:
                    log_p[rows] += categories.log_prob(codes[rows])
            if missing == "marginal" and bool(holes.any()):
                _check_integrable(flow, np.isnan(values[:, :continuous]), names, len(points), f"{input_path}: ", block)
                rows = torch.from_numpy(holes).nonzero()[:, 0]
                given_rows = None if not given else torch.from_numpy(values[:, len(points) : continuous])[rows]
                far += int(flow.far_outside(x[rows]).sum())
                some_codes = None if codes is None else codes[rows]
                log_p[rows] = marginal_log_prob(flow, noisy[rows], given_rows, some_codes, input_path)
                summed += len(rows)
            scored_rows = ~torch.isnan(log_p)
            unscored += int((~scored_rows).sum())
            count, total = count + int(scored_rows.sum()), total + log_p[scored_rows].sum().item()
            yield log_p.numpy()

    with torch.inference_mode():
        blocks = scored()
        first = next(blocks, None)  # read and checked before anything is written (stdout included)
        if first is None:
            raise InputError(f"{input_path}: the file has no data rows")
        with open_output(out, force) as handle:
            handle.write("log_prob\n")
            for values in itertools.chain([first], blocks):
                text = np.char.mod(_digits(flow), values)
                handle.write("".join(f"{cell}\n" for cell in np.where(np.isnan(values), "", text)))
    _warn_far(flow, far, count, "rows lie")
    mean = f" (mean {total / count:.4f} nats)" if count else ""
    _say(out, f"wrote {count} log-densities to {out}{mean}")
    if summed:
        _say(out, f"{summed} rows with missing cells were scored by the exact density of their observed cells")
    if unscored:
        _say(out, f"{unscored} rows with missing cells were not scored: their log_prob is empty (--missing drop)")


def _check_integrable(flow: Any, absent: Any, names: list[str], points: int, source: str, block: Any) -> None:
    """Raise an :class:`InputError` naming the first missing continuous cell (``absent``: a
    mask over the model's columns, then its given ones) that cannot be integrated out: a given
    cell (a condition), or one :meth:`Flow.observed_log_prob` cannot do exactly."""
    import numpy as np
    import torch

    conditions = np.argwhere(absent[:, points:])
    if len(conditions):
        row, column = (int(v) for v in conditions[0])
        raise InputError(
            f"{source}{block.where(row)}, given column {names[points + column]!r} is missing: a condition cannot "
            "be integrated out; use --missing drop"
        )
    problem = flow.integration_problem(torch.from_numpy(absent[:, :points]))
    if problem is not None:
        raise InputError(f"{source}{block.where(problem[0])}: {problem[1]}; or use --missing drop")


def _csv_delimiter(out: Path) -> str:
    """The delimiter of a CSV output by its name (``.csv``/``.txt``: comma, ``.tsv``: tab);
    standard output and devices get commas; any other name is refused (the bytes would be CSV
    under a name that says otherwise)."""
    if str(out) == "-" or (out.exists() and not out.is_file() and not out.is_dir()):
        return ","
    delimiters = {".csv": ",", ".txt": ",", ".tsv": "\t"}
    if out.suffix.lower() not in delimiters:
        raise InputError(f"--out {out}: writes CSV; give a name ending in .csv, .tsv or .txt, or - for stdout")
    return delimiters[out.suffix.lower()]


def _digits(flow: Any) -> str:
    """Enough significant digits for the model's numbers to read back exactly."""
    return "%.17g" if str(flow.dtype) == "torch.float64" else "%.9g"


def _seed(seed: int | None) -> None:
    import torch

    if seed is not None:
        if not 0 <= seed < 2**63:
            raise InputError(f"--seed must lie in [0, 2**63), got {seed}")
        torch.manual_seed(seed)


def _match_columns(flow: Any, names: list[str], has_header: bool, path: str) -> tuple[list[str], list[str]]:
    """The file's names of the model's columns and given columns: by name when it has a
    header (a model's categorical columns must be there too), by position (and exact width)
    when it has none."""
    columns, given = flow.column_names, list(flow.metadata.get("given") or [])
    discrete = list((flow.metadata.get("categorical") or {}).get("columns") or [])
    if has_header:
        missing = [c for c in columns + given + discrete if c not in names]
        if missing:
            unnamed = " (the model's columns have no names: it was trained on a file without a header)"
            hint = unnamed if columns == [f"x{j}" for j in range(flow.dim)] else ""
            raise InputError(
                f"{path} has no column named {', '.join(map(repr, missing))}{hint}; it has {', '.join(names)}"
            )
        return columns, given
    if given or discrete:
        raise InputError(f"{path} needs a header naming the columns {', '.join(columns + given + discrete)}")
    if len(names) != flow.dim:
        raise InputError(
            f"{path} has {len(names)} columns and no header, but the model expects {flow.dim} "
            f"({', '.join(columns)}); add a header to pick columns by name"
        )
    return names, []


@app.command(cls=StrictCommand)
@_clean_errors
def animate(
    model: Annotated[Path, typer.Option(help="Run directory of a trained 2-D model.")],
    out: Annotated[Path, typer.Option(help="GIF file to write.")] = Path("flow.gif"),
    n: Annotated[
        int | None,
        typer.Option("-n", help="Number of points to move [default: 100,000 for density frames, 2,000 for dots]."),
    ] = None,
    frames: Annotated[
        int, typer.Option(help="Frames between consecutive layers; for a continuous flow, frames in all.")
    ] = 10,
    style: Annotated[
        str,
        typer.Option(
            help="Frames of colored dots, or of the points' density (a 2-D histogram; a model trained on a "
            "picture keeps its pixel grid and aspect ratio). auto: density for a picture's model, else dots."
        ),
    ] = "auto",
    given: Annotated[
        list[str] | None, typer.Option(metavar="NAME=VALUE", help='Context of a conditional model, e.g. "label=1".')
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Render N(0, I) turning into the data as a GIF: layer by layer, or along the ODE's path."""

    from flowfit import viz
    from flowfit.files import check_output
    from flowfit.io import load

    for value, name in ((n, "-n"), (frames, "--frames")):
        if value is not None and value < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")
    if style not in ("auto", "dots", "density"):
        raise InputError(f"--style must be auto, dots or density, got {style!r}")
    if out.suffix.lower() != ".gif":
        raise InputError(f"--out {out}: animate writes a GIF; give a file name ending in .gif")
    check_output(out, force)
    flow = load(model)
    _refuse_categorical(flow, "animate")
    if flow.dim != 2:
        raise InputError(f"animate draws 2-D flows; this model is {flow.dim}-D")
    context = _parse_given(given, flow)
    _seed(seed)
    picture = viz.picture_shape(flow)
    dense = style == "density" or (style == "auto" and picture is not None)
    n = n or (viz.DENSITY_POINTS if dense else 2000)
    states, titles, note, per_layer = viz.trajectory_frames(flow, n, frames, context)
    density = viz.density_frame(states, picture) if dense else None
    viz.animate(states, out, titles, per_layer, note=note, density=density)
    _say(out, f"wrote {out}")


@app.command(cls=StrictCommand)
@_clean_errors
def explore(
    model: Annotated[Path, typer.Option(help="Run directory of a trained model.")],
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("explore.html"),
    data: Annotated[
        str | None, typer.Option(help="Data to draw and click on [default: the data the model was trained on].")
    ] = None,
    columns: Annotated[
        str | None, typer.Option(metavar="A,B", help="The two columns to draw [default: the first two].")
    ] = None,
    n: Annotated[int, typer.Option("-n", help="Points moved from N(0, I), and data points drawn.")] = 1000,
    paths: Annotated[int, typer.Option(help="Data points whose change of variables the page holds.")] = 300,
    resolution: Annotated[
        int | None, typer.Option(help="Heat-map cells per side [default: 150; 60 for a continuous flow].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Write one self-contained HTML page to touch the flow: the density (hover for log p),
    z_t with a time slider, each data point's change of variables (click it)."""
    from flowfit import explore as explorer
    from flowfit import sources
    from flowfit.files import check_output
    from flowfit.io import load

    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--out {out}: explore writes an HTML page; give a file name ending in .html")
    check_output(out, force)
    flow = load(model)
    _refuse_categorical(flow, "explore")
    names, given = flow.column_names, list(flow.metadata.get("given") or [])
    pair = explorer.column_pair(names, _names([columns], "--columns") if columns else None)
    view = explorer.View(columns=pair, points=n, paths=paths, resolution=resolution, seed=seed)
    spec = data or flow.metadata.get("data")
    values, context = (None, None)
    if spec:
        values, context = sources.some_rows(spec, names, given, max(n, paths), seed)
    else:
        typer.echo("note: the model does not say what data it was trained on; pass --data to draw them", err=True)
    if values is not None and flow.context_dim and context is None:
        raise InputError(f"--data {spec}: a conditional model needs the columns {', '.join(given)} too")
    page = explorer.explore_page(flow, values, context, view, title=f"flowfit explorer: {model}")
    explorer.write_explorer(out, page, force)
    _say(out, f"wrote {out} ({len(page.encode()) / 1e6:.1f} MB)")


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``flowfit`` script and ``python -m flowfit``: usage errors, like
    every other error, are one line on stderr."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="flowfit", standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except Exception as error:  # click's usage errors carry exit_code and format_message
        if not hasattr(error, "format_message"):
            raise
        typer.echo(f"error: {error.format_message()}", err=True)
        return int(getattr(error, "exit_code", 2))
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
