"""Maximum-likelihood training: minimise the mean negative log-likelihood with Adam.

:func:`fit` is the entry point; :class:`Trainer` holds one run's whole state (weights,
optimizer, schedule, random-number generator, batch order, best and last-good states), so a
run checkpointed and resumed ends exactly where an uninterrupted one would. It guards
against divergence: a batch whose loss spikes far above the recent ones is not applied; a
non-finite loss or gradient, or spikes that keep coming, roll the flow back to its last good
state with half the learning rate, and after ``max_retries`` rollbacks training stops with a
clear error naming the step. It runs under
``torch.distributed`` (DistributedDataParallel) when a process group is initialised.
"""

from __future__ import annotations

import json
import math
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowfit.datasets import Rows, read_rows, select_rows
from flowfit.errors import CheckpointError, InputError, TrainingDivergedError
from flowfit.flow import Flow

#: Data for a conditional flow: samples ``x`` and their contexts ``c``, row by row.
Pairs = tuple[Tensor, Tensor]
#: A function ``n -> x`` (or ``n -> (x, c)``) that draws ``n`` fresh samples.
Sampler = Callable[[int], Tensor | Pairs]
#: Training data: in memory, on disk (:class:`~flowfit.datasets.Rows`, read a batch at a
#: time), or drawn fresh each step.
Data = Tensor | Rows | Pairs | tuple[Rows, Rows] | Sampler
#: rows of on-disk training data that data-dependent layers are initialised from (a random
#: sample when there are more)
INIT_ROWS = 100_000

CHECKPOINT_TENSORS, CHECKPOINT_STATE = "trainer.safetensors", "trainer.json"
#: consecutive spiking steps after which the divergence guard rolls back
SPIKES_BEFORE_ROLLBACK = 10


@dataclass
class FitResult:
    """What :func:`fit` measured. NLLs are mean nats per sample in the data's units."""

    steps: int
    seconds: float
    best_step: int
    best_val_nll: float
    #: ``(step, mean training loss since the previous record)``
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    #: ``(step, validation metric)``: the NLL, or the flow-matching loss for ``objective="fm"``
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    #: what ``train_curve`` and ``val_curve`` hold: ``"nll"`` or ``"fm_loss"``
    metric: str = "nll"
    #: the step training stopped at (``steps``, or earlier when early stopping triggered)
    stopped_at: int = 0
    #: ``(step, reason)`` of each rollback of the divergence guard
    rollbacks: list[tuple[int, str]] = field(default_factory=list)
    #: steps whose update the guard skipped (a finite loss spike in one batch)
    skipped: list[int] = field(default_factory=list)


def check_data(data: Tensor, dim: int | None = None, name: str = "data") -> Tensor:
    """Return ``data`` as a float tensor after checking shape ``(n, dim)`` and finiteness."""
    data = torch.as_tensor(data)
    if not data.is_floating_point():
        data = data.float()
    if data.dim() != 2:
        raise InputError(f"{name} must be a 2-D array (rows are samples), got shape {tuple(data.shape)}")
    if dim is not None and data.shape[1] != dim:
        raise InputError(f"{name} has {data.shape[1]} columns but the flow has dimension {dim}")
    if data.shape[0] == 0:
        raise InputError(f"{name} has no rows")
    finite = torch.isfinite(data).all(dim=1)
    if not finite.all():
        row = int((~finite).nonzero()[0])
        raise InputError(f"{name} row {row} contains NaN or inf")
    return data


def _check_source(data: Tensor | Rows, dim: int | None, name: str) -> Tensor | Rows:
    """:func:`check_data`, or for rows on disk the same checks in one streaming pass."""
    if not isinstance(data, Rows):
        return check_data(data, dim, name)
    if dim is not None and data.shape[1] != dim:
        raise InputError(f"{name} has {data.shape[1]} columns but the flow has dimension {dim}")
    data.ranges()
    return data


def check_pairs(
    data: Tensor | Rows | Pairs | tuple[Rows, Rows], flow: Flow, name: str = "data"
) -> tuple[Tensor | Rows, Tensor | Rows | None]:
    """Split ``data`` into samples and contexts and check both against ``flow``."""
    if isinstance(data, tuple | list):
        if len(data) != 2:
            raise InputError(f"{name} must be a tensor x or a pair (x, context)")
        x, context = data
    else:
        x, context = data, None
    x = _check_source(x, flow.dim, name)
    if flow.context_dim and context is None:
        raise InputError(f"the flow is conditional: {name} must be pairs (x, context)")
    if not flow.context_dim and context is not None:
        raise InputError(f"the flow is unconditional but {name} comes with a context")
    if context is not None:
        context = _check_source(context, flow.context_dim, f"{name} context")
        if len(context) != len(x):
            raise InputError(f"{name} has {len(x)} samples but {len(context)} contexts")
    return x, context


@torch.inference_mode()
def nll(
    flow: Flow, data: Tensor, context: Tensor | None = None, batch_size: int = 8192, seed: int = 0
) -> tuple[float, float]:
    """Mean negative log-likelihood of ``data`` (nats per sample) and its standard error.

    Quantized columns of a flow that dequantizes are dequantized first, with noise drawn from
    ``seed`` (so the same data always get the same number).
    """
    data = flow.dequantize(data, torch.Generator().manual_seed(seed))
    chunks = data.split(batch_size)
    contexts = context.split(batch_size) if context is not None else [None] * len(chunks)
    values = torch.cat([flow.log_prob(x, c) for x, c in zip(chunks, contexts, strict=True)]).double()
    mean = -values.mean().item()
    stderr = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, stderr


def split(data: Tensor, fractions: tuple[float, ...], seed: int = 0) -> list[Tensor]:
    """Shuffle rows with ``seed`` and cut them into parts of the given fractions (the last
    part takes the rest)."""
    order = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))
    sizes = [int(f * data.shape[0]) for f in fractions[:-1]]
    sizes.append(data.shape[0] - sum(sizes))
    return [data[idx] for idx in order.split(sizes)]


def adam(parameters: Any, lr: float, device: torch.device) -> torch.optim.Adam:
    """The optimizer of :func:`fit`: Adam, with its fused kernel on CPU and CUDA (one pass per
    parameter instead of a dozen small operations each; the same update)."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(parameters, lr=lr, fused=fused or None)


@dataclass
class TrainConfig:
    """The settings of a run (see :func:`fit` for each)."""

    steps: int
    batch_size: int = 256
    lr: float = 1e-3
    seed: int | None = None
    val_fraction: float = 0.1
    val_every: int | None = None
    schedule: str = "cosine"
    warmup: int = 0
    clip_grad: float | None = 10.0
    objective: str = "mle"
    ema: float | None = None
    patience: int | None = None
    max_retries: int = 3
    checkpoint_every: int | None = None

    def check(self) -> None:
        if self.steps < 1:
            raise InputError(f"steps must be positive, got {self.steps}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        if self.schedule not in ("cosine", "constant", "plateau"):
            raise InputError(f"unknown schedule {self.schedule!r}; choose cosine, plateau or constant")
        if self.objective not in ("mle", "fm"):
            raise InputError(f"unknown objective {self.objective!r}; choose 'mle' or 'fm'")
        if self.ema is not None and not 0 < self.ema < 1:
            raise InputError(f"ema must be a decay in (0, 1), got {self.ema}")


class _Loss(nn.Module):
    """The training loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, flow: Flow, objective: str) -> None:
        super().__init__()
        self.flow = flow
        self.objective = objective

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        if self.objective == "mle":
            return -self.flow.log_prob(x, context).mean()
        from flowfit.continuous import flow_matching_loss

        return flow_matching_loss(self.flow.layers[0], x, self.flow._embed(context, len(x)))


class _Batches:
    """Shuffled passes over training rows (tensors, or :class:`~flowfit.datasets.Rows` on
    disk, read a batch at a time); its state (order, position) is checkpointed.

    Under ``torch.distributed`` every rank walks the same global order and takes its own
    share of each global batch, so the ranks together see exactly the batches a single
    process would.
    """

    def __init__(
        self, x: Tensor | Rows, context: Tensor | Rows | None, flow: Flow, rank: int = 0, world: int = 1
    ) -> None:
        self.x, self.context, self.flow, self.rank, self.world = x, context, flow, rank, world
        self.order = torch.randperm(len(x))
        self.position = 0

    def __call__(self, n: int) -> tuple[Tensor, Tensor | None]:
        if n >= len(self.x):
            index = torch.arange(len(self.x))
        else:
            if self.position + n > len(self.order):
                self.order, self.position = torch.randperm(len(self.x)), 0
            index = self.order[self.position : self.position + n]
            self.position += n
        index = index.tensor_split(self.world)[self.rank]
        x = self.flow.dequantize(read_rows(self.x, index))
        return x, None if self.context is None else read_rows(self.context, index)


class Trainer:
    """One training run of ``flow`` on ``data`` (see :func:`fit` for the arguments)."""

    def __init__(
        self,
        flow: Flow,
        data: Data,
        config: TrainConfig,
        val_data: Tensor | Pairs | None = None,
        callback: Callable[[int, Flow], None] | None = None,
        checkpoint_dir: str | Path | None = None,
        log_path: str | Path | None = None,
        progress: bool = True,
        tensorboard_dir: str | Path | None = None,
    ) -> None:
        config.check()
        self.flow, self.config, self.callback, self.progress = flow, config, callback, progress
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.log_path = Path(log_path) if log_path is not None else None
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir is not None else None
        self.writer: Any = None  # a TensorBoard SummaryWriter, opened when the run starts
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if config.batch_size % self.world:
            raise InputError(f"batch size {config.batch_size} does not split evenly over {self.world} processes")
        if config.objective == "fm" and not flow.is_continuous:
            raise InputError("flow matching (objective='fm') trains continuous flows (CNF) only")
        if config.seed is not None:
            torch.manual_seed(config.seed)
        self.device, self.dtype = flow._anchor.device, flow._anchor.dtype
        self._prepare_data(data, val_data)
        self.loss_module: nn.Module = _Loss(flow, config.objective)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.loss_module = DistributedDataParallel(self.loss_module)
        self.optimizer = adam(flow.parameters(), config.lr, self.device)
        self.scheduler: Any = self._make_scheduler()
        self.ema = {k: v.detach().clone() for k, v in flow.named_parameters()} if config.ema else None
        self.step = 0
        metric = "fm_loss" if config.objective == "fm" else "nll"
        self.result = FitResult(steps=config.steps, seconds=0.0, best_step=0, best_val_nll=math.inf, metric=metric)
        self.best_state = self._model_state()
        self.good = self._snapshot()
        self.window: deque[float] = deque(maxlen=200)
        self.running, self.count, self.since_best, self.lr_scale = 0.0, 0, 0, 1.0
        self.spikes_in_a_row = 0

    # -- data -----------------------------------------------------------------------------
    def _prepare_data(self, data: Data, val_data: Tensor | Pairs | None) -> None:
        flow, config = self.flow, self.config
        if callable(data):
            sampler = data
            init = check_pairs(sampler(10_000), flow, "sampled data")
            if val_data is None:
                val_data = sampler(10_000)
            if flow.dequantize_steps.any():
                raise InputError("dequantization needs a data tensor, not a sampler")
            if self.world > 1 and config.seed is not None:
                torch.manual_seed(config.seed + 1_000_003 * self.rank)  # each rank draws its own samples

            def draw(n: int) -> tuple[Tensor, Tensor | None]:
                batch = sampler(n // self.world)
                return batch if isinstance(batch, tuple | list) else (batch, None)  # type: ignore[return-value]

            self.draw: Callable[[int], tuple[Tensor, Tensor | None]] = draw
            self.batches: _Batches | None = None
        else:
            x, context = check_pairs(data, flow)
            if val_data is None:
                n_val = round(config.val_fraction * len(x))
                if n_val < 1 or len(x) - n_val < 2:
                    raise InputError(f"{len(x)} rows are too few to hold out a validation set")
                fractions = (config.val_fraction, 1 - config.val_fraction)
                val_index, train_index = split(torch.arange(len(x)), fractions, config.seed or 0)
                val_data = (read_rows(x, val_index), None if context is None else read_rows(context, val_index))
                x, context = select_rows(x, train_index), None if context is None else select_rows(context, train_index)
            if isinstance(x, Rows) or isinstance(context, Rows):  # on disk: initialise from a sample
                sample = torch.arange(len(x))
                if len(x) > INIT_ROWS:
                    sample = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:INIT_ROWS]
                init = (flow.dequantize(read_rows(x, sample)), None if context is None else read_rows(context, sample))
            else:
                init = (flow.dequantize(x), context)
                x, context = self._to(x), self._to(context)
            self.batches = _Batches(x, context, flow, self.rank, self.world)
            self.draw = self.batches
        val_x, val_context = check_pairs(val_data, flow, "validation data")
        val_x, val_context = (v.take() if isinstance(v, Rows) else v for v in (val_x, val_context))
        self.val_x, self.val_context = self._to(val_x), self._to(val_context)
        flow.initialize(self._to(init[0]), self._to(init[1]))

    def _to(self, tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else tensor.to(self.device, self.dtype)

    # -- schedule -------------------------------------------------------------------------
    def _make_scheduler(self) -> Any:
        config = self.config
        if config.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.5, patience=3)

        def factor(step: int) -> float:
            if step < config.warmup:
                return (step + 1) / config.warmup
            if config.schedule == "constant":
                return 1.0
            progress = (step - config.warmup) / max(1, config.steps - config.warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    # -- states ---------------------------------------------------------------------------
    def _model_state(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.flow.state_dict().items()}

    def _snapshot(self) -> dict[str, Any]:
        """The last good state the divergence guard rolls back to."""
        return {"model": self._model_state(), "optimizer": _clone(self.optimizer.state_dict())}

    def _evaluated_state(self) -> dict[str, Tensor]:
        """The weights validation scores: the EMA ones when EMA is on."""
        state = self._model_state()
        if self.ema is not None:
            state.update({k: v.clone() for k, v in self.ema.items()})
        return state

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> FitResult:
        """Train to the end (or early stop) and leave the flow at its best validation state."""
        config, flow = self.config, self.flow
        val_every = config.val_every or max(1, config.steps // 40)
        start = time.perf_counter() - self.result.seconds
        show = self.progress and self.rank == 0
        bar = tqdm(total=config.steps, initial=self.step, desc="train", disable=not show, mininterval=0.5, leave=False)
        flow.train()
        self.writer = self._open_tensorboard()
        interrupted = _Interrupt()
        try:
            with interrupted:
                while self.step < config.steps:
                    self.step += 1
                    if self._train_step():
                        bar.update(1)
                        if self.step % val_every == 0 or self.step == config.steps:
                            if self._validate():
                                break
                            bar.set_postfix(
                                nll=f"{self.result.train_curve[-1][1]:.3f}", val=f"{self.result.val_curve[-1][1]:.3f}"
                            )
                        if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                            self.save_checkpoint()
                    if interrupted.requested:  # Ctrl-C: stop at this step boundary, checkpointed
                        self.result.seconds = time.perf_counter() - start
                        self.save_checkpoint()
                        raise KeyboardInterrupt(f"interrupted at step {self.step}")
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        self.result.seconds = time.perf_counter() - start
        self.result.stopped_at = self.step
        flow.load_state_dict(self.best_state)
        flow.eval()
        return self.result

    def _train_step(self) -> bool:
        """One optimisation step; False when the guard rolled back instead."""
        config = self.config
        x, context = self.draw(config.batch_size)
        loss = self.loss_module(self._to(x), self._to(context))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.flow.parameters(), config.clip_grad or math.inf).item()
        value = loss.item()
        if self.distributed:  # decide on the global batch's loss, the same on every rank
            total = torch.tensor([value], dtype=torch.float64, device=self.device)
            dist.all_reduce(total)
            value = total.item() / self.world
        problem = self._problem(value, grad_norm)
        if problem:
            # one spiking batch: skip its update; non-finite numbers, or spikes that keep
            # coming (the weights are wrecked): roll back
            self.result.skipped.append(self.step)
            self.spikes_in_a_row += 1
            if (
                not math.isfinite(value)
                or not math.isfinite(grad_norm)
                or self.spikes_in_a_row >= SPIKES_BEFORE_ROLLBACK
            ):
                self._roll_back(problem)
                self.spikes_in_a_row = 0
            return False
        self.spikes_in_a_row = 0
        self.optimizer.step()
        if config.schedule != "plateau":
            self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                for name, parameter in self.flow.named_parameters():
                    self.ema[name].lerp_(parameter.detach(), 1 - config.ema)
        self.window.append(value)
        self.running, self.count = self.running + value, self.count + 1
        return True

    def _problem(self, value: float, grad_norm: float) -> str:
        """Why this step must not be taken ('' when it may): a non-finite loss or gradient, or
        a spike far above the recent losses (a finite blow-up a NaN check would miss)."""
        if not math.isfinite(value) or not math.isfinite(grad_norm):
            return f"loss {value}, gradient norm {grad_norm}"
        if len(self.window) >= 50:
            median = statistics.median(self.window)
            spread = statistics.median(abs(v - median) for v in self.window)
            if value > median + max(10 * spread, 5.0):
                return f"loss spiked to {value:.4g} (recent median {median:.4g})"
        return ""

    def _roll_back(self, problem: str) -> None:
        self.result.rollbacks.append((self.step, problem))
        if len(self.result.rollbacks) > self.config.max_retries:
            self.flow.load_state_dict(self.good["model"])
            raise TrainingDivergedError(
                f"training diverged at step {self.step}: {problem}; rolled back and halved the learning rate "
                f"{self.config.max_retries} times already. The flow holds its last good state. "
                "Try a lower learning rate or a smaller scale bound."
            )
        self.flow.load_state_dict(self.good["model"])
        self.optimizer.load_state_dict(_clone(self.good["optimizer"]))
        self.lr_scale *= 0.5
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5
        if hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = [lr * 0.5 for lr in self.scheduler.base_lrs]
        if self.ema is not None:
            self.ema = {k: v.detach().clone() for k, v in self.flow.named_parameters()}

    def _validate(self) -> bool:
        """Record the validation metric, keep the best state; True to stop early."""
        flow, config = self.flow, self.config
        trained = self._model_state() if self.ema is not None else None
        if trained is not None:
            flow.load_state_dict(self._evaluated_state())
        flow.eval()
        value = self._val_metric()
        if self.callback is not None:
            self.callback(self.step, flow)
        if trained is not None:
            flow.load_state_dict(trained)
        if math.isfinite(value):
            self.good = self._snapshot()
        flow.train()
        self.result.train_curve.append((self.step, self.running / max(self.count, 1)))
        self.result.val_curve.append((self.step, value))
        self.running, self.count = 0.0, 0
        if config.schedule == "plateau":
            self.scheduler.step(value)
        if value < self.result.best_val_nll:
            self.result.best_val_nll, self.result.best_step = value, self.step
            self.best_state = self._evaluated_state()
            self.since_best = 0
        else:
            self.since_best += 1
        self._log()
        return config.patience is not None and self.since_best >= config.patience

    def _val_metric(self) -> float:
        if self.config.objective == "mle":
            return nll(self.flow, self.val_x, self.val_context)[0]
        loss = _Loss(self.flow, "fm")
        with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(0)  # the same noise and times at every evaluation
            return loss(self.flow.dequantize(self.val_x), self.val_context).item()

    def _open_tensorboard(self) -> Any:
        """A SummaryWriter on ``tensorboard_dir`` (rank 0), or None when TensorBoard is not
        installed; a resumed run first drops the events logged after its checkpoint."""
        if self.tensorboard_dir is None or self.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises this when the tensorboard package is missing
            return None
        return SummaryWriter(str(self.tensorboard_dir), purge_step=self.step + 1 if self.step else None)

    def _log(self) -> None:
        if self.rank != 0:
            return
        step, train = self.result.train_curve[-1]
        value, lr = self.result.val_curve[-1][1], self.optimizer.param_groups[0]["lr"]
        if self.writer is not None:
            self.writer.add_scalar(f"train/{self.result.metric}", train, step)
            self.writer.add_scalar(f"validation/{self.result.metric}", value, step)
            self.writer.add_scalar("train/lr", lr, step)
        if self.log_path is None:
            return
        new = not self.log_path.exists()
        with self.log_path.open("a") as handle:
            header = "step,train_loss,val_metric,lr\n" if new else ""
            handle.write(header + f"{step},{train:.6f},{value:.6f},{lr:.6g}\n")

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything needed to continue exactly: tensors and JSON-able values."""
        tensors = {f"model.{k}": v for k, v in self._model_state().items()}
        tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        tensors.update({f"good.{k}": v for k, v in self.good["model"].items()})
        if self.ema is not None:
            tensors.update({f"ema.{k}": v.clone() for k, v in self.ema.items()})
        optimizer_tensors, optimizer_rest = _split_state(self.optimizer.state_dict(), "optimizer")
        good_tensors, good_rest = _split_state(self.good["optimizer"], "good_optimizer")
        tensors.update(optimizer_tensors | good_tensors)
        tensors["rng"] = torch.get_rng_state()
        tensors["val_x"] = self.val_x
        if self.val_context is not None:
            tensors["val_context"] = self.val_context
        if self.batches is not None:
            tensors["batch_order"] = self.batches.order
        state = {
            "step": self.step,
            "config": asdict(self.config),
            "result": asdict(self.result),
            "optimizer": optimizer_rest,
            "good_optimizer": good_rest,
            "scheduler": self.scheduler.state_dict(),
            "window": list(self.window),
            "running": self.running,
            "count": self.count,
            "since_best": self.since_best,
            "lr_scale": self.lr_scale,
            "spikes_in_a_row": self.spikes_in_a_row,
            "batch_position": None if self.batches is None else self.batches.position,
        }
        return tensors, state

    def save_checkpoint(self) -> None:
        """Write the run's state to ``checkpoint_dir`` atomically (rank 0 only); refuses
        non-finite weights."""
        if self.checkpoint_dir is None or self.rank != 0:
            return
        from safetensors.torch import save_file

        from flowfit.io import atomic_path, write_json

        tensors, state = self.state_dict()
        broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if broken:
            raise CheckpointError(f"refusing to write a checkpoint with non-finite values in {', '.join(broken[:3])}")
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.checkpoint_dir / CHECKPOINT_TENSORS) as temporary:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(temporary))
        write_json(self.checkpoint_dir / CHECKPOINT_STATE, state)

    def load_checkpoint(self, directory: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint`."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            tensors = load_file(str(directory / CHECKPOINT_TENSORS))
            state = json.loads((directory / CHECKPOINT_STATE).read_text())
        except (OSError, SafetensorError, json.JSONDecodeError) as error:
            raise CheckpointError(f"cannot read the checkpoint in {directory} ({error})") from None

        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

        self.flow.load_state_dict(part("model"))
        self.best_state = {k: v.to(self.device) for k, v in part("best").items()}
        self.optimizer.load_state_dict(_join_state(part("optimizer"), state["optimizer"]))
        self.good = {"model": part("good"), "optimizer": _join_state(part("good_optimizer"), state["good_optimizer"])}
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema = {k: v.to(self.device) for k, v in part("ema").items()}
        torch.set_rng_state(tensors["rng"])
        if self.batches is None and self.rank > 0:
            # the checkpoint holds rank 0's generator; the other ranks, which draw their own
            # samples, go on from seeds of their own (not bit-exact, but never duplicates)
            torch.manual_seed((self.config.seed or 0) + 1_000_003 * self.rank + 7919 * state["step"])
        self.val_x = self._to(tensors["val_x"])
        self.val_context = self._to(tensors.get("val_context"))
        if self.batches is not None:
            self.batches.order, self.batches.position = tensors["batch_order"], state["batch_position"]
        result = state["result"]
        result["train_curve"] = [tuple(p) for p in result["train_curve"]]
        result["val_curve"] = [tuple(p) for p in result["val_curve"]]
        result["rollbacks"] = [tuple(p) for p in result["rollbacks"]]
        result["skipped"] = list(result["skipped"])
        self.result = FitResult(**result)
        self.step, self.window = state["step"], deque(state["window"], maxlen=200)
        self.running, self.count, self.since_best = state["running"], state["count"], state["since_best"]
        self.lr_scale, self.spikes_in_a_row = state["lr_scale"], state["spikes_in_a_row"]


class _Interrupt:
    """While active, the first Ctrl-C only sets ``requested`` (the loop then checkpoints at
    the end of the step and stops); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            signal.default_int_handler(signum, frame)
        self.requested = True

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _clone(value: Any) -> Any:
    """A deep copy of a (nested) state dict's tensors."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _split_state(state: dict[str, Any], prefix: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer state dict as flat tensors (``prefix.param.name``) and the JSON rest."""
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        rest["state"][str(index)] = []
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{index}.{name}"] = value
                rest["state"][str(index)].append(name)
    return tensors, rest


def _join_state(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state = {int(index): {name: tensors[f"{index}.{name}"] for name in names} for index, names in rest["state"].items()}
    return {"param_groups": rest["param_groups"], "state": state}


def fit(
    flow: Flow,
    data: Data,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int | None = None,
    val_data: Tensor | Pairs | None = None,
    val_fraction: float = 0.1,
    val_every: int | None = None,
    schedule: str = "cosine",
    warmup: int = 0,
    clip_grad: float | None = 10.0,
    objective: str = "mle",
    ema: float | None = None,
    patience: int | None = None,
    max_retries: int = 3,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    log_path: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    callback: Callable[[int, Flow], None] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``flow`` by maximum likelihood and leave it at its best validation state.

    Args:
        flow: the flow to train (in place).
        data: a tensor of shape ``(n, dim)`` (rows are samples), or
            :class:`~flowfit.datasets.Rows` of a memory-mapped ``.npy`` file (read a batch
            at a time; data-dependent layers are initialised from ``INIT_ROWS`` random rows);
            for a conditional flow a pair ``(x, context)``; or a callable ``n -> x`` (or
            ``n -> (x, context)``) that draws ``n`` fresh samples, called once per step (as
            in the tutorial).
        steps: number of optimisation steps.
        batch_size: samples per step (the global batch, under torch.distributed).
        lr: peak learning rate of Adam.
        seed: seeds torch's global generator first, so data draws and batches are
            reproducible (seed it yourself before building the flow for its initial weights).
        val_data: held-out data for model selection (a tensor or a pair). Default:
            ``val_fraction`` of a data tensor (held out from training), or 10,000 fresh
            draws from a sampler.
        val_every: evaluate the validation NLL every this many steps (default: 40 times in
            a run).
        schedule: ``"cosine"`` (decay to 0 over the run), ``"plateau"`` (halve when the
            validation metric stalls for 3 evaluations) or ``"constant"``.
        warmup: steps of linear learning-rate warm-up (cosine and constant schedules).
        clip_grad: clip the gradient norm to this value (``None``: no clipping).
        objective: ``"mle"`` (maximum likelihood) or, for a continuous flow, ``"fm"`` (flow
            matching: no ODE solve per step; model selection then uses the validation
            flow-matching loss with fixed noise).
        ema: keep an exponential moving average of the weights with this decay (e.g.
            0.999); validation, the best state and the result use the averaged weights.
        patience: stop early after this many validations without improvement.
        max_retries: how many times the divergence guard may roll back (to the last good
            state, with half the learning rate) before giving up with
            :class:`~flowfit.errors.TrainingDivergedError`.
        checkpoint_dir: where checkpoints go (written atomically, never with NaN weights):
            every ``checkpoint_every`` steps and on Ctrl-C.
        resume: continue from the checkpoint in ``checkpoint_dir`` (same data and
            arguments): the run then ends with the weights an uninterrupted run would have.
        log_path: append ``step,train_loss,val_metric,lr`` lines to this CSV file.
        tensorboard_dir: also log those numbers for TensorBoard in this directory (when the
            ``tensorboard`` package is installed; otherwise nothing is written there).
        callback: called as ``callback(step, flow)`` after every validation (the flow in
            eval mode, holding the evaluated weights), e.g. to log or to measure more.
        progress: show a progress bar with the running NLL.

    Data-dependent layers (standardization, ActNorm) are initialised from the training data
    before the first step. Under ``torch.distributed`` (a process group initialised, e.g.
    by ``torchrun``) the loss is wrapped in DistributedDataParallel, every rank takes its
    share of each global batch (file data) or draws its own samples (samplers), and only
    rank 0 writes checkpoints and logs.

    Raises:
        TrainingDivergedError: naming the step, when the guard's retries are used up.
    """
    config = TrainConfig(
        steps,
        batch_size,
        lr,
        seed,
        val_fraction,
        val_every,
        schedule,
        warmup,
        clip_grad,
        objective,
        ema,
        patience,
        max_retries,
        checkpoint_every,
    )
    trainer = Trainer(flow, data, config, val_data, callback, checkpoint_dir, log_path, progress, tensorboard_dir)
    if resume:
        if checkpoint_dir is None or not (Path(checkpoint_dir) / CHECKPOINT_STATE).exists():
            raise CheckpointError(f"nothing to resume: no checkpoint in {checkpoint_dir}")
        trainer.load_checkpoint(checkpoint_dir)
    return trainer.run()
