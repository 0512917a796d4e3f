"""The training loop and the parts it is made of.

A :class:`Trainer` is a loop over parts that each own their state: the data source
(:mod:`flowfit.train.data`), the optimizer and its :class:`Schedule`, the weight average
(``torch.optim.swa_utils.AveragedModel``), the :class:`~flowfit.train.guard.DivergenceGuard`,
the :class:`Validation` (best state, early stopping, curves), the random-number generators and
the :class:`~flowfit.train.checkpoint.Checkpointer` that saves all of them. Loggers are
:mod:`callbacks <flowfit.train.callbacks>`. Under ``torch.distributed`` the loss is wrapped in
DistributedDataParallel and only rank 0 checkpoints and logs.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from flowfit.errors import CheckpointError, FlowfitError, FlowfitWarning, InputError, TrainingDivergedError
from flowfit.flow import Flow
from flowfit.options import TrainOptions
from flowfit.tables import CHUNK_ROWS, Rows, read_rows
from flowfit.train.callbacks import Callback, Record
from flowfit.train.checkpoint import Checkpointer
from flowfit.train.data import Data, Pairs, SamplerSource, make_source
from flowfit.train.guard import DivergenceGuard, _clone
from flowfit.train.result import FitResult

#: Share of skipped steps above which a run warns that it trimmed its data.
SKIPPED_WARNING = 0.01


def adam(parameters: Any, lr: float, device: torch.device) -> torch.optim.Adam:
    """The optimizer of :func:`flowfit.fit`: Adam, with its fused kernel on CPU and CUDA
    (one pass per parameter instead of a dozen small operations each; the same update)."""
    return torch.optim.Adam(parameters, lr=lr, fused=True if device.type in ("cpu", "cuda") else None)


@torch.inference_mode()
def nll(flow: Flow, x: Tensor | Rows, context: Tensor | Rows | None = None, seed: int = 0) -> tuple[float, float]:
    """Mean negative log-likelihood of the rows ``x`` (nats per sample) and its standard
    error; quantized columns are dequantized with noise from ``seed``
    (:meth:`Flow.dequantized_log_prob`). Rows on disk are read and scored a chunk at a time
    (the noise of chunk ``k`` drawn from ``seed + k``), so memory stays flat."""
    if not isinstance(x, Rows):
        values = flow.dequantized_log_prob(x, context, seed).double()
        stderr = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        return -values.mean().item(), stderr
    count, shift, total, squares = 0, 0.0, 0.0, 0.0  # sums of (value - shift): no cancellation
    for k, index in enumerate(torch.arange(len(x)).split(CHUNK_ROWS)):
        rows = read_rows(x, index).to(flow.device, flow.dtype)
        given = None if context is None else read_rows(context, index).to(flow.device, flow.dtype)
        values = flow.dequantized_log_prob(rows, given, seed + k).double()
        if not bool(torch.isfinite(values).all()):  # the mean is -inf (or NaN), as in memory
            return -values.mean().item(), float("nan")
        if k == 0:
            shift = values.mean().item()
        centred = values - shift
        count, total, squares = (
            count + len(values),
            total + centred.sum().item(),
            squares + centred.square().sum().item(),
        )
    mean = shift + total / count
    if count < 2:
        return -mean, float("nan")
    return -mean, math.sqrt((squares - total**2 / count) / (count - 1) / count)


class Schedule:
    """The learning rate: linear warm-up, then cosine decay to 0 or constant (stepped every
    training step), or halved when validation stalls for 3 evaluations (``plateau``).
    :meth:`halve` is the divergence guard's lever."""

    def __init__(self, optimizer: torch.optim.Optimizer, options: TrainOptions) -> None:
        self.optimizer, self.kind = optimizer, options.schedule
        steps, warmup = options.steps or 1, options.warmup
        if self.kind == "plateau":
            self.scheduler: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
            return

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if self.kind == "constant":
                return 1.0
            return 0.5 * (1 + math.cos(math.pi * min((step - warmup) / max(1, steps - warmup), 1.0)))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def after_step(self) -> None:
        if self.kind != "plateau":
            self.scheduler.step()

    def after_validation(self, value: float) -> None:
        if self.kind == "plateau":
            self.scheduler.step(value)

    def halve(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5
        if hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = [lr * 0.5 for lr in self.scheduler.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


#: Validation rows whose NLL picks a flow-matching run's best state: its loss is not the
#: likelihood, and each NLL is an ODE solve with the trace, so a fixed subset (a paired
#: comparison between states: the same rows every time).
FM_VALIDATION_ROWS = 1024


class Validation:
    """Held-out data, the NLL on it (for flow matching, on its first
    :data:`FM_VALIDATION_ROWS` rows), the best state so far, the curves, and early stopping."""

    def __init__(self, data: Pairs, objective: str, patience: int | None) -> None:
        self.x, self.context = data
        if objective == "fm":
            self.x = self.x[:FM_VALIDATION_ROWS]
            self.context = None if self.context is None else self.context[:FM_VALIDATION_ROWS]
        self.objective, self.patience = objective, patience
        self.metric = "nll"
        #: the metric of the untrained flow, the first candidate for the best state
        self.start = math.nan
        self.best, self.best_step, self.since_best = math.inf, 0, 0
        self.best_state: dict[str, Tensor] = {}
        self.records: list[Record] = []

    def begin(self, flow: Flow) -> None:
        """Measure the untrained flow: the state to beat (kept only if nothing beats it)."""
        self.start = self.measure(flow)
        if math.isfinite(self.start):
            self.best, self.best_state = self.start, _clone(flow.state_dict())

    def measure(self, flow: Flow) -> float:
        return nll(flow, self.x, self.context)[0]

    def update(self, record: Record, flow: Flow) -> bool:
        """Keep the record and, if it is the best so far, the flow's state; True to stop early."""
        self.records.append(record)
        if record.val_metric < self.best:
            self.best, self.best_step, self.since_best = record.val_metric, record.step, 0
            self.best_state = _clone(flow.state_dict())
        else:
            self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "context": self.context,
            "start": self.start,
            "best": self.best,
            "best_step": self.best_step,
            "since_best": self.since_best,
            "best_state": self.best_state,
            "records": [list(vars(r).values()) for r in self.records],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x = state["x"].to(self.x)
        self.context = None if state["context"] is None else state["context"].to(self.x)
        self.start, self.best, self.best_step = state["start"], state["best"], state["best_step"]
        self.since_best, self.best_state = state["since_best"], state["best_state"]
        self.records = [Record(*values) for values in state["records"]]


def warming_ema(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    """The exponential moving average's update (``torch.optim.swa_utils``) whose decay grows
    to ``decay`` as updates accumulate, ``min(decay, (1 + n) / (10 + n))`` after ``n`` of them
    (as TensorFlow's ExponentialMovingAverage with ``num_updates``): the average of a short
    run is not held back by the untrained weights (0.995 alone keeps 47% of them after 150
    steps)."""

    def update(averaged: list[Tensor], current: list[Tensor], count: Tensor) -> None:
        n = float(count)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, current, count)

    return update


class Averager:
    """An exponential moving average of the weights (:func:`warming_ema`), or none
    (``decay`` None or 0)."""

    def __init__(self, flow: Flow, decay: float | None) -> None:
        self.flow = flow
        self.model = None if not decay else AveragedModel(flow, multi_avg_fn=warming_ema(decay))

    @property
    def evaluated(self) -> Flow:
        """The flow validation scores: the average when there is one."""
        return self.flow if self.model is None else self.model.module

    def update(self) -> None:
        if self.model is not None:
            self.model.update_parameters(self.flow)

    def reset(self) -> None:
        """Start averaging afresh from the flow's weights (after a rollback)."""
        if self.model is not None:
            self.model.module.load_state_dict(self.flow.state_dict())
            self.model.n_averaged.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.model is None else self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.model is not None:
            self.model.load_state_dict(state)


class RandomState:
    """torch's global generators (CPU, and CUDA when the flow is there)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def state_dict(self) -> dict[str, Any]:
        return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if self.cuda else []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["cpu"])
        if self.cuda and state["cuda"]:
            torch.cuda.set_rng_state_all(state["cuda"])


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` is a CPU that multiplies bfloat16 matrices in hardware (AVX-512 BF16
    or AMX; elsewhere oneDNN converts, and bfloat16 is slower than float32). GPUs answer False
    until measured: ``mixed_precision="on"`` uses them."""
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def mixes_precision(flow: Flow, options: TrainOptions) -> bool:
    """Whether a run computes its networks' products in bfloat16 (``torch.autocast``):
    ``mixed_precision="on"``, or ``"auto"`` for a float32 flow whose family's step it speeds
    up under this objective (:attr:`Flow.mixed_precision_pays`) on a CPU with bfloat16
    products in hardware. The weights, the transforms' own arithmetic (the networks hand
    them float32), validation and every later evaluation stay in the flow's precision: the
    model's densities are exact whatever trained it. Measured on torch 2.13.0."""
    if options.mixed_precision == "off":
        return False
    if flow.dtype != torch.float32:
        if options.mixed_precision == "on":
            dtype = str(flow.dtype).removeprefix("torch.")
            raise InputError(f"mixed precision trains float32 flows; this one is {dtype}")
        return False
    pays = options.objective in flow.mixed_precision_pays and native_bfloat16(flow.device)
    return options.mixed_precision == "on" or pays


class TrainingLoss(nn.Module):
    """The training loss as a module's forward, so DistributedDataParallel can wrap it;
    with ``mixed`` under ``torch.autocast`` to bfloat16 (:func:`mixes_precision`)."""

    def __init__(self, flow: Flow, objective: str, mixed: bool = False) -> None:
        super().__init__()
        self.flow, self.objective, self.mixed = flow, objective, mixed

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.mixed):
            return self.flow.loss(x, context, self.objective)


#: ``compile="auto"`` compiles runs of at least this many rows (steps times batch size).
COMPILE_ROWS = 2_500_000


def compiles(flow: Flow, options: TrainOptions, world: int = 1) -> bool:
    """Whether a run compiles ``flow``'s training loss: ``compile="on"``, or ``"auto"`` for a
    family and objective whose step compiling speeds up (:attr:`Flow.compile_pays`: spline
    flows by maximum likelihood, continuous flows by flow matching) in a run of at least
    ``COMPILE_ROWS`` rows (compiling takes about 20 s on 2 cores, which shorter runs would not
    win back); never under several processes. It depends on
    the options only, never on a clock, so that a seed gives the same model on a busy machine
    and a quiet one (compiled float32 rounds differently). Measured on torch 2.13.0."""
    if world > 1 or options.compile == "off":
        return False
    long = options.steps * options.batch_size >= COMPILE_ROWS
    return options.compile == "on" or (options.objective in flow.compile_pays and long)


class CompiledLoss:
    """The training loss, through ``torch.compile`` (Inductor, which compiles the backward
    too) where :func:`compiles` says so. A loss that cannot be compiled (no C++ compiler, an
    operation Inductor does not handle) runs eagerly from then on, after a one-line notice."""

    def __init__(self, loss: nn.Module, compiled: bool) -> None:
        self.loss = loss
        self.compiled = torch.compile(loss, dynamic=False) if compiled else None

    def __call__(self, x: Tensor, context: Tensor | None) -> Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x, context)
            except FlowfitError:
                raise
            except Exception as error:  # any compiler failure falls back to eager
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                warnings.warn(f"training without torch.compile: it failed ({reason})", FlowfitWarning, stacklevel=3)
                self.compiled = None
        return self.loss(x, context)


class Trainer:
    """One training run of ``flow`` on ``data`` (see :func:`flowfit.fit` for the arguments)."""

    def __init__(
        self,
        flow: Flow,
        data: Data,
        options: TrainOptions,
        *,
        val_data: Data | None = None,
        checkpointer: Checkpointer | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.flow = flow
        self.options = options = options.with_defaults(flow.defaults_for(options.objective)[1])
        if options.objective == "fm" and not flow.is_continuous:
            raise InputError("flow matching (objective 'fm') trains continuous flows (CNF) only")
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if options.batch_size % self.world:
            raise InputError(f"batch size {options.batch_size} does not split evenly over {self.world} processes")
        torch.manual_seed(options.seed)
        self.source, val, init = make_source(
            data, flow, val_data, options.val_fraction, options.seed, self.rank, self.world
        )
        if self.world > 1:  # ranks drew the same validation data; each now draws its own batches
            torch.manual_seed(options.seed + 1_000_003 * self.rank)
        flow.initialize(*init)
        # the average copies the flow before DistributedDataParallel hooks into its parameters
        self.average = Averager(flow, options.ema)
        objective: nn.Module = TrainingLoss(flow, options.objective, mixes_precision(flow, options))
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            objective = DistributedDataParallel(objective)
        self.loss = CompiledLoss(objective, compiles(flow, options, self.world))
        self.optimizer = adam(flow.parameters(), options.lr, flow.device)
        self.schedule = Schedule(self.optimizer, options)
        self.guard = DivergenceGuard(flow, self.optimizer, self.schedule, options.max_retries)
        self.validation = Validation(val, options.objective, options.patience)
        self.checkpointer = checkpointer  # every rank loads it; rank 0 writes it
        self.callbacks = list(callbacks) if self.rank == 0 else []
        self.step, self.seconds, self.loss_sum, self.loss_count = 0, 0.0, 0.0, 0

    @property
    def metric(self) -> str:
        return self.validation.metric

    @property
    def train_metric(self) -> str:
        """What the training loss is: ``nll``, or ``fm_loss`` for flow matching."""
        return "fm_loss" if self.options.objective == "fm" else "nll"

    @property
    def evaluated_flow(self) -> Flow:
        return self.average.evaluated

    def parts(self) -> dict[str, Any]:
        """Everything a checkpoint holds, by name; each has ``state_dict``/``load_state_dict``."""
        return {
            "model": self.flow,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "average": self.average,
            "guard": self.guard,
            "validation": self.validation,
            "data": self.source,
            "random": RandomState(self.flow.device),
            "progress": self,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "loss_sum": self.loss_sum, "loss_count": self.loss_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.seconds = state["step"], state["seconds"]
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]

    def resume(self) -> None:
        """Continue from the checkpoint: the run then ends as an uninterrupted one would."""
        if self.checkpointer is None or not self.checkpointer.exists():
            where = "no checkpoint directory" if self.checkpointer is None else self.checkpointer.directory
            raise CheckpointError(f"nothing to resume: no checkpoint in {where}")
        self.checkpointer.load(self.parts())
        if self.world > 1 and isinstance(self.source, SamplerSource):
            # the checkpoint holds rank 0's generator; ranks that draw their own samples go on
            # from seeds of their own (the same distribution, not the same draws)
            torch.manual_seed(self.options.seed + 1_000_003 * self.rank + 7919 * self.step)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> FitResult:
        """Train to the end (or early stop) and leave the flow at its best validation state."""
        every = self.options.val_every or max(1, self.options.steps // 40)
        started = time.perf_counter() - self.seconds
        with ExitStack() as stack:
            stop = stack.enter_context(_StopRequests())
            for callback in self.callbacks:
                callback.on_start(self)
                stack.callback(callback.on_end, self)
            if self.step == 0:
                self._measure(self.validation.begin)
            while self.step < self.options.steps:
                self.step += 1
                self._train_step()
                for callback in self.callbacks:
                    callback.on_step(self)
                last = self.step == self.options.steps
                if (self.step % every == 0 or last) and self._validate():
                    break
                self.seconds = time.perf_counter() - started
                if self.rank == 0 and self.checkpointer and (self.checkpointer.due(self.step) or stop.requested):
                    self.checkpointer.save(self.parts())
                if stop.requested:
                    raise KeyboardInterrupt(f"interrupted at step {self.step}")
        self.seconds = time.perf_counter() - started
        return self._finish()

    def _train_step(self) -> None:
        x, context = self.source.batch(self.options.batch_size)
        loss = self.loss(x, context)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.flow.parameters(), self.options.clip_grad or math.inf)
        value = self._global_mean(loss.item())
        if not self.guard.allows(self.step, value, grad_norm.item()):
            if self.guard.rolled_back_at == self.step:
                self.average.reset()
            return
        self.optimizer.step()
        self.schedule.after_step()
        self.average.update()
        self.loss_sum, self.loss_count = self.loss_sum + value, self.loss_count + 1

    def _validate(self) -> bool:
        """Measure, record, keep the best state and tell the callbacks; True to stop early."""
        value = self._measure()
        previous = self.validation.records[-1].step if self.validation.records else 0
        skipped = sum(1 for step in self.guard.skipped if step > previous)
        train_loss = self.loss_sum / self.loss_count if self.loss_count else math.nan
        record = Record(self.step, train_loss, value, self.schedule.lr, skipped)
        self.loss_sum, self.loss_count = 0.0, 0
        if math.isfinite(value):
            self.guard.remember()
        self.schedule.after_validation(value)
        stop = self.validation.update(record, self.evaluated_flow)
        self.evaluated_flow.eval()
        for callback in self.callbacks:
            callback.on_validation(self, record)
        self.evaluated_flow.train()
        return stop

    def _measure(self, measure: Callable[[Flow], Any] | None = None) -> Any:
        """``measure`` (default: the validation metric) of the evaluated flow, in eval mode."""
        flow = self.evaluated_flow
        flow.eval()
        try:
            return (measure or self.validation.measure)(flow)
        finally:
            flow.train()

    def _global_mean(self, value: float) -> float:
        """The loss averaged over processes (every rank then decides the same)."""
        if not self.distributed:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.flow.device)
        dist.all_reduce(total)
        return total.item() / self.world

    def _finish(self) -> FitResult:
        validation, guard = self.validation, self.guard
        if not math.isfinite(validation.best):
            raise TrainingDivergedError(
                f"the validation {validation.metric} was never finite, neither for the untrained flow "
                f"({validation.start}) nor in training; nothing was kept. Check the validation rows."
            )
        if validation.best_step == 0:
            warnings.warn(
                f"training never beat the untrained flow's validation {validation.metric} ({validation.start:.4g}): "
                "the flow kept is the untrained one, the base distribution fitted to the data's mean and spread",
                FlowfitWarning,
                stacklevel=4,
            )
        self.flow.load_state_dict(validation.best_state)
        self.flow.eval()
        if len(guard.skipped) > SKIPPED_WARNING * self.step:
            warnings.warn(
                f"{len(guard.skipped)} of {self.step} steps ({len(guard.skipped) / self.step:.1%}) were skipped as "
                "loss spikes: those batches did not train the flow. Heavy-tailed data may need a log "
                "preprocessing or a Student-t base (flowfit.distributions.StudentT).",
                FlowfitWarning,
                stacklevel=4,
            )
        records = validation.records
        return FitResult(
            steps=self.options.steps,
            seconds=self.seconds,
            best_step=validation.best_step,
            best_val_nll=validation.best,
            start_val=validation.start,
            train_curve=[(r.step, r.train_loss) for r in records],
            val_curve=[(r.step, r.val_metric) for r in records],
            metric=validation.metric,
            train_metric=self.train_metric,
            stopped_at=self.step,
            rollbacks=list(guard.rollbacks),
            skipped=list(guard.skipped),
        )


class _StopRequests:
    """While active (in the main thread), the first Ctrl-C or SIGTERM only sets
    ``requested``: the loop then checkpoints at the end of the step and stops. A second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            signal.default_int_handler(signum, frame)
        self.requested = True

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
