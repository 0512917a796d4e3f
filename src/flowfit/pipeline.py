"""What ``flowfit train`` does between parsing arguments and printing: resolve the data,
train, evaluate, and write the run directory (model, metrics, pictures)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowfit import viz
from flowfit._version import __version__
from flowfit.datasets import LOGO, TABLES, TOYS, Rows, image, load_table, moons_log_prob, open_rows, select_rows
from flowfit.errors import InputError
from flowfit.families import FLOWS
from flowfit.flow import Flow
from flowfit.io import save, write_json, write_text
from flowfit.preprocess import ColumnPlan, bits_per_dim, check_support, make_plan
from flowfit.train import FitResult, nll, split

#: Seeds of the fixed validation and test draws from a toy generator (the test seed is the
#: one of the shared reference protocol).
VAL_SEED, TEST_SEED = 987_654_321, 12345
TEST_SIZE = 100_000

#: ``--flow`` names: a builder and the arguments that select a variant of it.
FLOW_CHOICES: dict[str, tuple[str, dict[str, Any]]] = {
    "realnvp": ("realnvp", {}),
    "nsf": ("nsf", {}),
    "nsf-ar": ("nsf", {"autoregressive": True}),
    "maf": ("maf", {}),
    "iaf": ("iaf", {}),
    "nice": ("nice", {}),
    "glow": ("glow", {}),
    "cnf": ("cnf", {}),
}

#: Training defaults of ``flowfit train`` per ``--flow`` (tuned on two moons; see README); the
#: CNF has one set per objective, and flow matching a wider default network (its steps are
#: cheap, and the regression needs the capacity).
TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "cnf": {"steps": 1000, "batch_size": 512, "lr": 3e-3},
    "cnf-fm": {"steps": 40000, "batch_size": 512, "lr": 2e-3, "hidden": (128, 128, 128)},
    "realnvp": {"steps": 6000, "batch_size": 512, "lr": 1e-3},
    "nsf": {"steps": 10000, "batch_size": 512, "lr": 2e-3},
    "nsf-ar": {"steps": 10000, "batch_size": 512, "lr": 2e-3},
    "maf": {"steps": 8000, "batch_size": 512, "lr": 2e-3},
    "iaf": {"steps": 5000, "batch_size": 512, "lr": 2e-3},
    "nice": {"steps": 6000, "batch_size": 512, "lr": 1e-3},
    "glow": {"steps": 6000, "batch_size": 512, "lr": 1e-3},
}

Pair = tuple[Tensor, Tensor | None]

#: training rows (at most) that ``--preprocess auto`` looks at when the data stay on disk
PLAN_ROWS = 1_000_000

#: What ``--preprocess auto`` means for bundled tables whose nature is known: digits are
#: pixel intensities 0..16, blank border pixels included.
TABLE_PREPROCESS = {"digits": "dequantize+logit[0,17]"}


@dataclass
class Data:
    """Where a run's data come from and how they are split; contexts are ``None`` for an
    unconditional model."""

    source: str
    columns: list[str]
    given: list[str]
    #: in memory, on disk (a ``.npy`` file, read a batch at a time), or a sampler
    train: Pair | tuple[Rows, Rows | None] | Callable[[int], Tensor]
    val: Pair
    test: Pair
    #: a fixed sample of the training distribution (pictures, and the train NLL)
    reference: Pair
    #: how each column enters the flow (empty: standardization only)
    plans: list[ColumnPlan] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return self.val[0].shape[1]


def training_defaults(flow: str, objective: str = "mle") -> dict[str, Any]:
    """``steps``, ``batch_size`` and ``lr`` of ``flowfit train --flow flow --objective objective``."""
    return TRAINING_DEFAULTS["cnf-fm" if (flow, objective) == ("cnf", "fm") else flow]


def _sampled(source: str, draw: Callable[..., Tensor]) -> Data:
    """A generator: fresh draws each step, fixed validation, test and reference draws."""
    return Data(
        source=source,
        columns=["x0", "x1"],
        given=[],
        train=lambda n: draw(n),
        val=(draw(10_000, seed=VAL_SEED), None),
        test=(draw(TEST_SIZE, seed=TEST_SEED), None),
        reference=(draw(10_000, seed=VAL_SEED + 1), None),
    )


def resolve_data(
    spec: str,
    columns: list[str] | None = None,
    given: list[str] | None = None,
    seed: int = 0,
    preprocess: str = "auto",
) -> Data:
    """``spec`` is a toy name (fresh draws each step, fixed validation and test draws),
    ``image:PATH`` (points drawn from a picture's dark pixels), ``logo`` (the picture that
    ships with flowfit), a table that ships inside a package (``saratoga``, ``digits``) or a
    file path; tables are shuffled with ``seed`` and split 80/10/10 into train/val/test.

    ``given`` names file columns to condition on (the model is then ``p(columns | given)``);
    ``columns`` defaults to every other column. ``preprocess`` chooses each file column's
    preprocessing (:func:`flowfit.preprocess.make_plan`, decided on the training rows, or on
    ``PLAN_ROWS`` of them and checked on all). A ``.npy`` file stays on disk (memory-mapped):
    training reads it a batch at a time; only the validation and test rows are read in.
    """
    picture = LOGO if spec == "logo" else Path(spec[len("image:") :]) if spec.startswith("image:") else None
    if (spec in TOYS or picture is not None) and given:
        raise InputError("--given needs a file with the context columns, not a generated data set")
    if spec in TOYS:
        return _sampled(spec, TOYS[spec])
    if picture is not None:
        image(picture, 1)  # fail now, with a clear message, if the picture is unusable
        return _sampled(spec, lambda n, seed=None: image(picture, n, seed))
    if spec in TABLES:
        path, (table, names) = Path(spec), TABLES[spec]()
    else:
        path = Path(spec)
        if not path.exists():
            known = ", ".join([*TOYS, *TABLES, "logo", "image:PATH"])
            raise InputError(f"--data {spec!r} is neither a file nor a data set flowfit knows ({known})")
        table, names = open_rows(path) if path.suffix == ".npy" else load_table(path)
    given = given or []
    missing = [c for c in [*(columns or []), *given] if c not in names]
    if missing:
        raise InputError(f"{path}: no column named {', '.join(map(repr, missing))}; it has {', '.join(names)}")
    columns = columns or [c for c in names if c not in given]
    overlap = set(columns) & set(given)
    if overlap:
        raise InputError(f"column(s) {', '.join(sorted(overlap))} cannot be both modelled and given")
    if not columns:
        raise InputError(f"{path}: no columns left to model")
    if len(table) < 10:
        raise InputError(f"{path}: {len(table)} rows are too few to split into training, validation and test sets")
    values = _columns(table, [names.index(c) for c in columns])
    context = _columns(table, [names.index(c) for c in given]) if given else None
    order = split(torch.arange(len(table)), (0.8, 0.1, 0.1), seed=seed)
    train, val, test = ((select_rows(values, i), None if context is None else select_rows(context, i)) for i in order)
    val, test = _in_memory(val), _in_memory(test)
    reference = _in_memory(train, 10_000)
    if preprocess == "auto" and spec in TABLE_PREPROCESS:
        preprocess = TABLE_PREPROCESS[spec]
    if isinstance(train[0], Rows):  # decide on a sample, check the support on every row
        plans = make_plan(_in_memory(train, PLAN_ROWS)[0], columns, preprocess)
        low, high = train[0].ranges()
        for plan, column, lowest, highest in zip(plans, columns, low.tolist(), high.tolist(), strict=True):
            check_support(plan, lowest, highest, column)
        if context is not None:
            train[1].ranges()
    else:
        plans = make_plan(train[0], columns, preprocess)
        low, high = train[0].min(dim=0).values, train[0].max(dim=0).values
    # a constant column has no density, unless it is dequantized (then it is uniform noise)
    flat = (low == high).tolist()
    constant = [c for c, same, plan in zip(columns, flat, plans, strict=True) if same and not plan.dequantize]
    if constant:
        raise InputError(f"{path}: column(s) {', '.join(constant)} are constant; a density over them does not exist")
    return Data(str(path), columns, list(given), train, val, test, reference, plans)


def _columns(table: Tensor | Rows, columns: list[int]) -> Tensor | Rows:
    return table.select(columns) if isinstance(table, Rows) else table[:, columns]


def _in_memory(pair: tuple[Any, Any], rows: int | None = None) -> Pair:
    """The first ``rows`` (default: all) of a pair of tensors or :class:`Rows`, in memory."""

    def read(part: Tensor | Rows | None) -> Tensor | None:
        if part is None:
            return None
        if isinstance(part, Rows):
            return part.take(torch.arange(min(len(part), rows or len(part))))
        return part[:rows]

    return read(pair[0]), read(pair[1])


def build_flow(
    name: str, dim: int, context_dim: int = 0, plans: list[ColumnPlan] | None = None, **options: Any
) -> Flow:
    """Build the ``--flow`` ``name``; ``options`` left at ``None`` keep the builder's defaults.

    One-dimensional data get the autoregressive spline flow when a coupling family is asked
    for (a coupling needs at least two coordinates).
    """
    if name not in FLOW_CHOICES:
        raise InputError(f"--flow {name!r} is not a flow family; choose from {', '.join(FLOW_CHOICES)}")
    if dim == 1 and name in ("realnvp", "nice", "nsf", "glow"):
        name = "nsf-ar"  # a coupling needs two parts; in 1-D the autoregressive spline is the spline itself
    builder, variant = FLOW_CHOICES[name]
    kwargs = {k: v for k, v in options.items() if v is not None}
    if plans:
        kwargs["preprocess"] = [asdict(plan) for plan in plans]
    try:
        return FLOWS[builder](dim, context_dim=context_dim, **variant, **kwargs)
    except (TypeError, ValueError) as error:
        raise InputError(f"--flow {name}: {error}") from None


def evaluate(flow: Flow, data: Data, result: FitResult) -> dict[str, Any]:
    """The numbers of ``metrics.json`` (NLLs in nats per sample, in the data's units)."""
    test_nll, test_stderr = nll(flow, *data.test)
    metrics: dict[str, Any] = {
        "data": data.source,
        "dim": data.dim,
        "train_nll": nll(flow, *data.reference)[0],
        "val_nll": nll(flow, *data.val)[0],
        "test_nll": test_nll,
        "test_nll_stderr": test_stderr,
        "test_size": len(data.test[0]),
        "steps": result.steps,
        "best_step": result.best_step,
        "seconds": round(result.seconds, 2),
        "params": sum(p.numel() for p in flow.parameters()),
        "flowfit_version": __version__,
        "torch_version": torch.__version__,
    }
    if bool(flow.dequantize_steps.any()):
        metrics["test_bits_per_dim"] = bits_per_dim(test_nll, data.dim)
    if data.source == "moons":
        # the test set's NLL under the true density: the floor no model can beat (in expectation)
        floor = -moons_log_prob(data.test[0]).mean().item()
        metrics["entropy_floor"] = floor
        metrics["gap_to_floor"] = test_nll - floor
    return metrics


def write_run(
    directory: Path, flow: Flow, data: Data, result: FitResult, metrics: dict[str, Any], plots: bool = True
) -> list[Path]:
    """Write the model, ``metrics.json``, ``history.csv`` and (``plots``) the pictures."""
    save(flow, directory)
    write_json(directory / "metrics.json", metrics)
    lines = ["step,train_nll,val_nll"]
    lines += [f"{s},{t:.6f},{v:.6f}" for (s, t), (_, v) in zip(result.train_curve, result.val_curve, strict=True)]
    write_text(directory / "history.csv", "\n".join(lines) + "\n")
    written = [directory / name for name in ("model.safetensors", "config.json", "metrics.json", "history.csv")]
    if not plots:
        return written
    written.append(viz.plot_loss(result, directory / "loss.png", metrics.get("entropy_floor")))
    written.append(viz.plot_loglik(flow, *data.test, directory / "loglik.png"))
    if data.dim == 2 and not flow.context_dim:
        reference = data.reference[0]
        with torch.inference_mode():
            samples = flow.sample(10_000)
        written.append(viz.plot_samples(reference, samples, directory / "samples.png"))
        written.append(viz.plot_density(flow, reference, directory / "density.png"))
        states, titles, _, _ = viz.trajectory_frames(flow, 2_000, frames=8)
        written.append(viz.plot_layers(states, directory / "layers.png", titles))
        states, titles, note, per_layer = viz.trajectory_frames(flow, 2_000, frames=60 if flow.is_continuous else 10)
        written.append(viz.animate(states, directory / "flow.gif", titles, per_layer, note=note))
    return written
