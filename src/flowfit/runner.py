"""A whole ``flowfit train`` run: settings, devices, processes, checkpoints and outputs.

While it trains, a run keeps ``OUT.partial/`` with its settings (``run.json``), its latest
checkpoint and its log (``log.csv``); ``flowfit train --resume OUT`` continues from there with
no other argument. When training ends, the outputs are written into a temporary directory
that then replaces ``OUT`` in one rename, and ``OUT.partial/`` is removed.

Under ``torchrun --nproc_per_node=N -m flowfit train ...`` every process trains (DDP, gloo on
CPU, nccl on GPU) and only rank 0 writes anything.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from flowfit import pipeline
from flowfit.errors import CheckpointError, InputError
from flowfit.io import atomic_directory, write_json
from flowfit.preprocess import describe
from flowfit.train import fit


@dataclass
class RunSettings:
    """Everything ``flowfit train`` was asked for; saved as ``run.json`` for ``--resume``."""

    data: str = "moons"
    flow: str = "realnvp"
    objective: str = "mle"
    layers: int | None = None
    hidden: tuple[int, ...] | None = None
    bins: int | None = None
    steps: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    schedule: str = "cosine"
    ema: float | None = None
    patience: int | None = None
    seed: int = 0
    columns: list[str] | None = None
    given: list[str] | None = None
    preprocess: str = "auto"
    device: str = "auto"
    dtype: str = "float32"
    checkpoint_every: int = 1000
    out: str = "runs/train"
    force: bool = False
    plots: bool = True

    def resolved(self) -> RunSettings:
        """Check every value and fill the family's defaults in; raises InputError."""
        if self.flow not in pipeline.FLOW_CHOICES:
            raise InputError(
                f"--flow {self.flow!r} is not a flow family; choose from {', '.join(pipeline.FLOW_CHOICES)}"
            )
        if self.objective not in ("mle", "fm"):
            raise InputError(f"--objective must be mle or fm, got {self.objective!r}")
        if self.objective == "fm" and self.flow != "cnf":
            raise InputError("--objective fm (flow matching) trains continuous flows: use it with --flow cnf")
        if self.flow == "cnf" and (self.layers is not None or self.bins is not None):
            raise InputError("--layers and --bins do not apply to --flow cnf (one continuous-time layer)")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"--dtype must be float32 or float64, got {self.dtype!r}")
        defaults = pipeline.training_defaults(self.flow, self.objective)
        settings = RunSettings(**asdict(self))
        settings.steps = self.steps if self.steps is not None else defaults["steps"]
        settings.batch_size = self.batch_size if self.batch_size is not None else defaults["batch_size"]
        settings.lr = self.lr if self.lr is not None else defaults["lr"]
        settings.hidden = tuple(self.hidden) if self.hidden else defaults.get("hidden")
        for name in ("steps", "batch_size", "layers", "bins", "patience"):
            value = getattr(settings, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if not settings.lr > 0:
            raise InputError(f"--lr must be positive, got {settings.lr}")
        if settings.checkpoint_every < 0:
            raise InputError(f"--checkpoint-every must be >= 0, got {settings.checkpoint_every}")
        return settings

    @property
    def partial(self) -> Path:
        """Where the run keeps its settings, checkpoint and log while it trains."""
        out = Path(self.out)
        return out.with_name(out.name + ".partial")

    @classmethod
    def load(cls, out: str | Path) -> RunSettings:
        """The settings of the interrupted run whose ``--out`` was ``out``."""
        partial = Path(out).with_name(Path(out).name + ".partial")
        try:
            values = json.loads((partial / "run.json").read_text())
            return cls(**values)
        except FileNotFoundError:
            raise CheckpointError(f"nothing to resume: {partial / 'run.json'} does not exist") from None
        except (json.JSONDecodeError, TypeError) as error:
            raise CheckpointError(f"{partial / 'run.json'} is not a flowfit run ({error})") from None


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
        raise InputError(f"--device {name!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from None
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


def run_training(
    settings: RunSettings, resume: bool = False, progress: bool = True, echo: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Train, evaluate and write the run directory; returns the metrics."""
    settings = settings.resolved()
    rank, world, local_rank = _start_processes()
    say = echo if rank == 0 else (lambda _text: None)
    out, partial = Path(settings.out), settings.partial
    if not resume:
        if out.exists() and not settings.force:
            raise InputError(f"{out} already exists; pass --force to replace it")
        if partial.exists():
            if not settings.force:
                raise InputError(
                    f"{partial} holds an interrupted run: continue it with --resume {out}, or pass --force"
                )
    if world > 1:
        dist.barrier()  # every process has checked the directories before rank 0 touches them
    if not resume and partial.exists() and rank == 0:
        shutil.rmtree(partial)
    device = _device(settings.device, local_rank)
    dataset = pipeline.resolve_data(settings.data, settings.columns, settings.given, settings.seed, settings.preprocess)
    if dataset.plans:
        say(f"preprocessing: {describe(dataset.plans, dataset.columns)}")
    torch.manual_seed(settings.seed)
    options = {"layers": settings.layers, "hidden": settings.hidden, "bins": settings.bins}
    model = pipeline.build_flow(settings.flow, dataset.dim, len(dataset.given), dataset.plans, **options)
    model = model.to(device=device, dtype=getattr(torch, settings.dtype))
    model.metadata = {
        "data": dataset.source,
        "columns": dataset.columns,
        "given": dataset.given,
        "flow": settings.flow,
        "objective": settings.objective,
    }
    if rank == 0:
        partial.mkdir(parents=True, exist_ok=True)
        write_json(partial / "run.json", asdict(settings))
    what = f"p({', '.join(dataset.columns)} | {', '.join(dataset.given)})" if dataset.given else f"{dataset.dim}-D"
    processes = f" in {world} processes" if world > 1 else ""
    say(
        f"{'resuming' if resume else 'training'} {settings.flow} ({sum(p.numel() for p in model.parameters()):,} "
        f"parameters) on {dataset.source} ({what}) for {settings.steps} steps on {device}{processes}"
    )
    start = time.perf_counter()
    try:
        result = fit(
            model,
            dataset.train,
            steps=settings.steps,
            batch_size=settings.batch_size,
            lr=settings.lr,
            seed=settings.seed,
            val_data=dataset.val,
            schedule=settings.schedule,
            ema=settings.ema,
            patience=settings.patience,
            objective=settings.objective,
            checkpoint_dir=partial / "checkpoint",
            checkpoint_every=settings.checkpoint_every or None,
            resume=resume,
            log_path=partial / "log.csv",
            tensorboard_dir=partial / "tensorboard",
            progress=progress,
        )
    except KeyboardInterrupt:
        say(f"the run is checkpointed in {partial}; continue it with: flowfit train --resume {out}")
        raise
    metrics: dict[str, Any] = {}
    if rank == 0:
        metrics = pipeline.evaluate(model, dataset, result)
        metrics.update(
            world_size=world, device=str(device), rollbacks=len(result.rollbacks), stopped_at=result.stopped_at
        )
        with atomic_directory(out, force=True) as temporary:
            written = pipeline.write_run(temporary, model, dataset, result, metrics, plots=settings.plots)
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


def _print_summary(metrics: dict[str, Any], written: list[Path], say: Callable[[str], Any]) -> None:
    say(
        f"test NLL {metrics['test_nll']:.4f} ± {metrics['test_nll_stderr']:.4f} nats on {metrics['test_size']:,} points"
    )
    if "entropy_floor" in metrics:
        say(
            f"entropy floor {metrics['entropy_floor']:.4f} nats (the true density's NLL on the same points); "
            f"gap {metrics['gap_to_floor']:.4f} nats"
        )
    if "test_bits_per_dim" in metrics:
        say(f"test {metrics['test_bits_per_dim']:.4f} bits/dim (dequantized)")
    say(
        f"train NLL {metrics['train_nll']:.4f}, validation NLL {metrics['val_nll']:.4f}; "
        f"{metrics['stopped_at']} steps (best at {metrics['best_step']}) in {metrics['seconds']:.1f} s, "
        f"{metrics['wall_seconds']:.1f} s with evaluation and pictures"
    )
    say("wrote " + ", ".join(str(p) for p in written))
