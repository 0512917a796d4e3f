"""A whole ``flowfit train`` run: settings, checks, devices, processes, checkpoints, outputs.

Everything is checked before anything is written: the settings, the output directory, every
row of the data, the model's size. While it trains, a run holds a lock on its output and
keeps ``OUT.partial/`` with its settings (``run.json``), its checkpoint and its log;
``flowfit train --resume OUT`` continues from there with no other argument. When training
ends, the outputs are written into a temporary directory that replaces ``OUT`` in one
rename, and ``OUT.partial/`` is removed. A run that diverges removes ``OUT.partial/`` too
(there is nothing to resume); one that is interrupted (Ctrl-C, SIGTERM) keeps it.

Under ``torchrun --nproc_per_node=N -m flowfit train ...`` every process trains (DDP, gloo on
CPU, nccl on GPU) and only rank 0 writes anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from flowfit import sources
from flowfit._version import __version__
from flowfit.categories import Categories, categories_of, joint_log_prob
from flowfit.datasets import PictureDensity
from flowfit.errors import CheckpointError, InputError, TrainingDivergedError
from flowfit.families import FAMILIES, GENERATED_DEFAULT, TABLE_DEFAULT, family_for
from flowfit.files import check_directory, lock, replace_directory, write_json, write_text
from flowfit.flow import Flow
from flowfit.io import save
from flowfit.options import TABLE_DEFAULTS, TrainOptions, check_types, table_batch_size
from flowfit.preprocess import bits_per_dim, describe
from flowfit.sources import Data
from flowfit.train import FitResult, fit, nll
from flowfit.train.trainer import compiles, mixes_precision

DTYPES = ("float32", "float64")


@dataclass(kw_only=True)
class RunSettings:
    """Everything ``flowfit train`` was asked for; saved as ``run.json`` for ``--resume``."""

    data: str = "moons"
    columns: list[str] | None = None
    given: list[str] | None = None
    categorical: list[str] | None = None
    missing: str = "error"
    preprocess: str = "auto"
    flow: str = "auto"
    layers: int | None = None
    hidden: list[int] | None = None
    bins: int | None = None
    training: TrainOptions = field(default_factory=TrainOptions)
    device: str = "auto"
    dtype: str = "float32"
    out: str = "runs/train"
    force: bool = False
    plots: bool = True
    #: the data file's size and modification time when the run started (``--resume`` checks it)
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        check_types(self, skip=("training",))
        if Path(self.out).name in ("", ".", ".."):
            raise InputError(f"--out {self.out!r} does not name a directory flowfit can write; give a name")
        if not isinstance(self.training, TrainOptions):
            raise InputError("training must be TrainOptions")
        if self.flow == "auto":  # saved resolved in run.json: a resume trains the same family
            self.flow = GENERATED_DEFAULT if sources.generated_name(self.data) else TABLE_DEFAULT
        if self.flow not in FAMILIES:
            raise InputError(f"--flow {self.flow!r} is not a flow family; choose auto or one of {', '.join(FAMILIES)}")
        family = FAMILIES[self.flow]
        for name in ("layers", "bins"):
            if getattr(self, name) is not None and not family.accepts(name):
                raise InputError(f"--{name} does not apply to --flow {self.flow}")
        if self.missing == "marginal":
            raise InputError(
                "--missing marginal scores rows with missing cells (flowfit density); training needs complete rows: "
                "use --missing drop"
            )
        if self.missing not in ("error", "drop"):
            raise InputError(f"--missing must be error or drop when training, got {self.missing!r}")
        if self.training.objective == "fm" and self.flow != "cnf":
            raise InputError("--objective fm (flow matching) trains continuous flows: use it with --flow cnf")
        if self.dtype not in DTYPES:
            raise InputError(f"--dtype must be float32 or float64, got {self.dtype!r}")
        for name in ("layers", "bins"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name} must be a positive integer, got {value}")
        if self.hidden is not None and (not self.hidden or min(self.hidden) < 1):
            raise InputError(f"--hidden must be positive integers, got {self.hidden}")

    @property
    def partial(self) -> Path:
        """Where the run keeps its settings, checkpoint and log while it trains."""
        out = Path(self.out)
        return out.with_name(out.name + ".partial")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: Any) -> RunSettings:
        if not isinstance(values, dict):
            raise InputError("run.json must hold a JSON object")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(f"run.json has unknown settings: {', '.join(unknown)}")
        return cls(**{**values, "training": TrainOptions.from_dict(values.get("training", {}))})

    @classmethod
    def load(cls, out: str | Path) -> RunSettings:
        """The settings of the interrupted run whose ``--out`` was ``out``."""
        path = Path(out).with_name(Path(out).name + ".partial") / "run.json"
        try:
            return cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise CheckpointError(f"nothing to resume: {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError, InputError) as error:
            raise CheckpointError(f"{path} is not a flowfit run ({error}); start afresh with --force") from None


def run_training(
    settings: RunSettings, resume: bool = False, progress: bool = True, echo: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Train, evaluate and write the run directory; returns the metrics."""
    if resume and sources.fingerprint(settings.data) != settings.fingerprint:
        raise CheckpointError(
            f"{settings.data} changed since the run started (size or modification time): the checkpoint would "
            f"continue on other data; start afresh with --force"
        )
    rank, world, local_rank = _start_processes()
    say = echo if rank == 0 else (lambda _text: None)
    device, dtype = _device(settings.device, local_rank), getattr(torch, settings.dtype)
    out, partial = Path(settings.out), settings.partial
    with _lock_on_rank_zero(out, rank, world):
        if not resume:
            _check_fresh(out, partial, settings.force)
        training = settings.training
        data = sources.resolve(
            settings.data,
            settings.columns,
            settings.given,
            training.seed,
            settings.preprocess,
            dtype,
            training.val_fraction,
            settings.categorical,
            settings.missing,
            atoms=FAMILIES[settings.flow].keeps_order,
        )
        model, notice = _build(settings, data)
        model = model.to(device=device, dtype=dtype)
        options = _training_options(settings, data, model)
        mixed = mixes_precision(model, options)  # refuses mixed precision of a float64 model, before any file
        for note in [notice, *data.notes, _batch_note(options.batch_size, data)]:
            if note:
                say(f"note: {note}")
        if data.plans:
            say(f"preprocessing: {describe(data.plans, data.columns)}")
        if data.categories is not None:
            say(f"categorical: {describe_categories(data.categories)}")
        if world > 1:
            dist.barrier()  # every process has checked the directories before rank 0 touches them
        if rank == 0 and not resume:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            # the columns as resolved and the file as it is now: a resume continues on the same data
            fixed = dataclasses.replace(settings, fingerprint=sources.fingerprint(settings.data))
            if not data.generated:
                fixed = dataclasses.replace(fixed, columns=_modelled(data), given=data.given)
            write_json(partial / "run.json", fixed.to_json())
        what = f"p({', '.join(data.columns)} | {', '.join(data.given)})" if data.given else f"{data.dim}-D"
        if data.categories is not None:
            what = f"p({', '.join(data.categories.columns)}) p({', '.join(data.columns)} | those)"
        compiled = compiles(model, options, world)
        say(
            f"{'resuming' if resume else 'training'} {model.metadata['flow']} "
            f"({sum(p.numel() for p in model.parameters()):,} parameters) on {data.source} ({what}) "
            f"for {options.steps} steps on {device}"
            + (f" in {world} processes" if world > 1 else "")
            + (", its step compiled first (torch.compile: up to 20 s on a first run)" if compiled else "")
            + (", its networks' products in bfloat16 (--mixed-precision)" if mixed else "")
        )
        start = time.perf_counter()
        try:
            result = fit(
                model,
                data.train,
                options,
                val_data=data.val,
                checkpoint_dir=partial / "checkpoint",
                resume=resume,
                log_path=partial / "log.csv",
                tensorboard_dir=partial / "tensorboard",
                progress=progress,
            )
        except KeyboardInterrupt:
            say(f"the run is checkpointed in {partial}; continue it with: flowfit train --resume {out}")
            raise
        except TrainingDivergedError:
            if rank == 0 and not resume:  # nothing to resume; a resumed run keeps the checkpoint it had
                shutil.rmtree(partial, ignore_errors=True)
            raise
        metrics: dict[str, Any] = {}
        if rank == 0:
            metrics = evaluate(model, data, result)
            metrics.update(world_size=world, device=str(device), options=dataclasses.asdict(options))
            with replace_directory(out, force=True) as temporary:
                written = write_run(temporary, model, data, result, metrics, plots=settings.plots)
                if (partial / "tensorboard").is_dir():  # TensorBoard's events, when it is installed
                    shutil.copytree(partial / "tensorboard", temporary / "tensorboard")
                    written.append(temporary / "tensorboard")
            shutil.rmtree(partial, ignore_errors=True)
            metrics["wall_seconds"] = round(time.perf_counter() - start, 2)
            _print_summary(metrics, [out / p.name for p in written], say)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


def _modelled(data: Data) -> list[str]:
    """The modelled columns: the continuous ones, then the categorical ones."""
    return data.columns + (data.categories.columns if data.categories is not None else [])


def describe_categories(categories: Categories) -> str:
    """``cut (5 levels), colour (7 levels); p(c) from counts, ...``: one line for the log."""
    columns = ", ".join(f"{c} ({len(v)} levels)" for c, v in zip(categories.columns, categories.levels, strict=True))
    return (
        f"{columns}; p(c) from the training counts with {categories.smoothing:g} added to each of the "
        f"{categories.size:,} combinations, and the flow conditioned on them"
    )


def _batch_note(batch: int, data: Data) -> str:
    rows = None if data.generated else len(data.train[0])
    if rows is not None and batch > rows:
        return f"the batch size {batch} is more than the {rows} training rows: every step uses all of them"
    return ""


def _training_options(settings: RunSettings, data: Data, model: Flow) -> TrainOptions:
    """The run's options with the defaults filled in: a table's (``TABLE_DEFAULTS``, the batch
    capped by its rows) before the family's."""
    family = model.defaults_for(settings.training.objective)[1]
    if data.generated:
        return settings.training.with_defaults(family)
    options = settings.training.with_defaults(TABLE_DEFAULTS)
    return table_batch_size(options, family["batch_size"], len(data.train[0])).with_defaults(family)


def _build(settings: RunSettings, data: Data) -> tuple[Flow, str]:
    """The model of the run (sizes checked before anything is allocated) and a notice when
    its family had to change for one-dimensional data."""
    family, notice = family_for(settings.flow, data.dim)
    architecture = FAMILIES[settings.flow].cls.defaults_for(settings.training.objective)[0]
    options = architecture | {"layers": settings.layers, "hidden": settings.hidden, "bins": settings.bins}
    options = {k: v for k, v in options.items() if v is not None and family.accepts(k)}
    plans = [dataclasses.asdict(plan) for plan in data.plans]
    torch.manual_seed(settings.training.seed)
    try:
        width = data.categories.width if data.categories is not None else 0
        model = family.build(data.dim, context_dim=len(data.given) + width, preprocess=plans, **options)
    except ValueError as error:
        raise InputError(f"--flow {family.name}: {error}") from None
    model.metadata = {
        "data": data.source,
        "columns": data.columns,
        "given": data.given,
        "flow": family.name,
        "objective": settings.training.objective,
    }
    if data.picture is not None:  # its layout, for pictures of the flow drawn without the file
        model.metadata["picture"] = list(data.picture.darkness.shape)
    if data.categories is not None:
        model.metadata["categorical"] = data.categories.to_json()
    return model, notice


def _check_fresh(out: Path, partial: Path, force: bool) -> None:
    """A new run may write ``out`` (absent, or a flowfit run and ``--force``) and its partial
    directory (absent, or an interrupted flowfit run and ``--force``)."""
    check_directory(out, force)
    if partial.exists():
        if not force:
            raise InputError(f"{partial} holds an interrupted run: continue it with --resume {out}, or pass --force")
        if not (partial / "run.json").is_file():
            raise InputError(f"{partial} is not a flowfit run and will not be replaced; remove it yourself")


@contextlib.contextmanager
def _lock_on_rank_zero(out: Path, rank: int, world: int) -> Iterator[None]:
    """Rank 0 locks the run's output for the whole run; every rank learns whether it could."""
    with contextlib.ExitStack() as stack:
        problem: InputError | None = None
        if rank == 0:
            try:
                stack.enter_context(lock(out))
            except InputError as error:
                problem = error
        if world > 1:
            failed = torch.tensor([problem is not None], dtype=torch.int32)
            dist.all_reduce(failed)
            if failed.item() and problem is None:
                raise InputError(f"rank 0 could not take the lock on {out}")
        if problem is not None:
            raise problem
        yield


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {name!r} is not a device flowfit trains on (auto, cpu, cuda, cuda:N, mps)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps: MPS is not available here")
    return device


def _start_processes() -> tuple[int, int, int]:
    """Join the torchrun process group if there is one: ``(rank, world size, local rank)``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def evaluate(flow: Flow, data: Data, result: FitResult) -> dict[str, Any]:
    """The numbers of ``metrics.json`` (NLLs in nats per sample, in the data's units)."""
    from flowfit.datasets import moons_log_prob

    test_nll, test_stderr = _nll(flow, *data.test)
    metrics: dict[str, Any] = {
        "data": data.source,
        "dim": data.dim,
        "flow": flow.metadata.get("flow"),
        "train_nll": _nll(flow, *data.reference)[0],
        "val_nll": _nll(flow, *data.val)[0],
        "test_nll": test_nll,
        "test_nll_stderr": test_stderr,
        "test_size": len(data.test[0]),
        "val_size": len(data.val[0]),
        "steps": result.steps,
        "stopped_at": result.stopped_at,
        "best_step": result.best_step,
        "skipped_steps": len(result.skipped),
        "rollbacks": len(result.rollbacks),
        "seconds": round(result.seconds, 2),
        "params": sum(p.numel() for p in flow.parameters()),
        "flowfit_version": __version__,
        "torch_version": torch.__version__,
    }
    if data.categories is not None:  # the test NLL's categorical part, -mean log p(c)
        codes = data.categories.from_one_hot(data.test[1].cpu())
        metrics["test_nll_categorical"] = -data.categories.log_prob(codes).mean().item()
    if bool(flow.dequantize_steps.any()) and data.categories is None:
        metrics["test_bits_per_dim"] = bits_per_dim(test_nll, data.dim)
    if data.source == "moons":
        # the test set's NLL under the true density: the floor no model can beat (in expectation)
        floor = -moons_log_prob(data.test[0]).mean().item()
        metrics["entropy_floor"] = floor
        metrics["gap_to_floor"] = test_nll - floor
    if data.picture is not None:  # as read at the start, whatever the file holds now
        metrics |= picture_metrics(flow, data.picture, data.test[0], test_nll)
    if flow.is_continuous:
        metrics |= solver_costs(flow, sources.first_rows(data.test, SOLVE_ROWS)[0])
    return metrics


@torch.inference_mode()
def _nll(flow: Flow, x: Tensor, context: Tensor | None) -> tuple[float, float]:
    """Mean negative log-likelihood of rows (nats per row; for a model with categorical
    columns, of ``p(x, c)``) and its standard error."""
    if categories_of(flow) is None:
        return nll(flow, x, context)
    values = joint_log_prob(flow, x, context)
    stderr = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return -values.mean().item(), stderr


#: Rows of the solves whose function evaluations ``metrics.json`` reports, and samples whose
#: pixel frequencies a picture's total variation compares.
SOLVE_ROWS, PICTURE_SAMPLES = 4096, 100_000


@torch.inference_mode()
def picture_metrics(flow: Flow, density: PictureDensity, test: Tensor, test_nll: float) -> dict[str, float]:
    """A picture's exact density gives the floor (its entropy, estimated on the test points)
    and the model's distance to it: KL(picture || model) = test NLL - floor, and the total
    variation between samples binned on the pixel grid and the pixel probabilities (with the
    same statistic for as many exact samples: the floor that sampling noise sets)."""
    floor = -density.log_prob(test).mean().item()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        samples = flow.sample(PICTURE_SAMPLES)
    exact = density.sample(PICTURE_SAMPLES, seed=1)
    return {
        "entropy_floor": floor,
        "gap_to_floor": test_nll - floor,
        "sample_tv": density.total_variation(samples),
        "sample_tv_floor": density.total_variation(exact),
    }


@torch.inference_mode()
def solver_costs(flow: Flow, rows: Tensor) -> dict[str, int]:
    """Vector-field evaluations (NFE) of one sampling solve and one log-density solve of
    ``rows``-many points: the machine-independent cost of a continuous flow."""
    layer = flow.layers[0]
    start = layer.evaluations
    with torch.random.fork_rng():
        flow.sample(len(rows))
    middle = layer.evaluations
    flow.log_prob(rows)
    return {"nfe_sample": middle - start, "nfe_log_prob": layer.evaluations - middle, "nfe_rows": len(rows)}


def write_run(
    directory: Path, flow: Flow, data: Data, result: FitResult, metrics: dict[str, Any], plots: bool = True
) -> list[Path]:
    """Write the model, ``metrics.json``, ``history.csv`` and (``plots``) the pictures."""
    save(flow, directory)
    write_json(directory / "metrics.json", metrics)
    lines = ["step,train_loss,val_metric"]
    lines += [f"{s},{t:.6f},{v:.6f}" for (s, t), (_, v) in zip(result.train_curve, result.val_curve, strict=True)]
    write_text(directory / "history.csv", "\n".join(lines) + "\n")
    written = [directory / name for name in ("model.safetensors", "config.json", "metrics.json", "history.csv")]
    if plots:
        from flowfit import viz

        written += viz.run_pictures(directory, flow, data, result, metrics.get("entropy_floor"))
    return written


def _print_summary(metrics: dict[str, Any], written: list[Path], say: Callable[[str], Any]) -> None:
    if not math.isfinite(metrics["test_nll"]):
        say("warning: the test NLL is not finite: some test rows have zero density under the model")
    say(
        f"test NLL {metrics['test_nll']:.4f} ± {metrics['test_nll_stderr']:.4f} nats on {metrics['test_size']:,} points"
    )
    if "entropy_floor" in metrics:
        say(
            f"entropy floor {metrics['entropy_floor']:.4f} nats (the true density's NLL on the same points); "
            f"gap {metrics['gap_to_floor']:.4f} nats"
        )
    if "test_nll_categorical" in metrics:
        discrete = metrics["test_nll_categorical"]
        say(
            f"of which {discrete:.4f} nats are -log p(c), the categorical columns, and "
            f"{metrics['test_nll'] - discrete:.4f} -log p(x | c), the continuous ones"
        )
    if "test_bits_per_dim" in metrics:
        say(f"test {metrics['test_bits_per_dim']:.4f} bits/dim (dequantized)")
    say(
        f"train NLL {metrics['train_nll']:.4f}, validation NLL {metrics['val_nll']:.4f}; "
        f"{metrics['stopped_at']} steps (best at {metrics['best_step']}) in {metrics['seconds']:.1f} s, "
        f"{metrics['wall_seconds']:.1f} s with evaluation and pictures"
    )
    if metrics["skipped_steps"]:
        skipped, rollbacks = metrics["skipped_steps"], metrics["rollbacks"]
        say(f"the divergence guard skipped {skipped} steps and rolled back {rollbacks} times")
    say("wrote " + ", ".join(str(p) for p in written))
