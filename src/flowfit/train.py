"""Maximum-likelihood training: minimise the mean negative log-likelihood with Adam."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flowfit.errors import InputError, TrainingDivergedError
from flowfit.flow import Flow

#: Data for a conditional flow: samples ``x`` and their contexts ``c``, row by row.
Pairs = tuple[Tensor, Tensor]
#: A function ``n -> x`` (or ``n -> (x, c)``) that draws ``n`` fresh samples.
Sampler = Callable[[int], Tensor | Pairs]
Data = Tensor | Pairs | Sampler


@dataclass
class FitResult:
    """What :func:`fit` measured. NLLs are mean nats per sample in the data's units."""

    steps: int
    seconds: float
    best_step: int
    best_val_nll: float
    #: ``(step, mean training NLL since the previous record)``
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    #: ``(step, validation metric)``: the NLL, or the flow-matching loss for ``objective="fm"``
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    #: what ``train_curve`` and ``val_curve`` hold: ``"nll"`` or ``"fm_loss"``
    metric: str = "nll"


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


def check_pairs(data: Tensor | Pairs, flow: Flow, name: str = "data") -> tuple[Tensor, Tensor | None]:
    """Split ``data`` into samples and contexts and check both against ``flow``."""
    if isinstance(data, tuple | list):
        if len(data) != 2:
            raise InputError(f"{name} must be a tensor x or a pair (x, context)")
        x, context = data
    else:
        x, context = data, None
    x = check_data(x, flow.dim, name)
    if flow.context_dim and context is None:
        raise InputError(f"the flow is conditional: {name} must be pairs (x, context)")
    if not flow.context_dim and context is not None:
        raise InputError(f"the flow is unconditional but {name} comes with a context")
    if context is not None:
        context = check_data(context, flow.context_dim, f"{name} context")
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
    callback: Callable[[int, Flow], None] | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``flow`` by maximum likelihood and leave it at its best validation state.

    Args:
        flow: the flow to train (in place).
        data: a tensor of shape ``(n, dim)`` (rows are samples); for a conditional flow a
            pair ``(x, context)``; or a callable ``n -> x`` (or ``n -> (x, context)``) that
            draws ``n`` fresh samples, called once per step (as in the tutorial).
        steps: number of optimisation steps.
        batch_size: samples per step.
        lr: peak learning rate of Adam.
        seed: seeds torch's global generator first, so data draws and batches are
            reproducible (seed it yourself before building the flow for its initial weights).
        val_data: held-out data for model selection (a tensor or a pair). Default:
            ``val_fraction`` of a data tensor (held out from training), or 10,000 fresh
            draws from a sampler.
        val_every: evaluate the validation NLL every this many steps (default: 40 times in
            a run).
        schedule: ``"cosine"`` (decay to 0 over the run) or ``"constant"``.
        warmup: steps of linear learning-rate warm-up.
        clip_grad: clip the gradient norm to this value (``None``: no clipping).
        objective: ``"mle"`` (maximum likelihood) or, for a continuous flow, ``"fm"`` (flow
            matching: no ODE solve per step; model selection then uses the validation
            flow-matching loss with fixed noise).
        callback: called as ``callback(step, flow)`` after every validation (the flow in
            eval mode), e.g. to log or to measure more.
        progress: show a progress bar with the running NLL.

    The validation NLL is recorded every ``val_every`` steps and at the end; the flow ends
    holding a copy of the parameters that scored best. Data-dependent layers
    (standardization, ActNorm) are initialised from the training data before the first step.

    Raises:
        TrainingDivergedError: naming the step, if the loss or gradient is not finite.
    """
    if steps < 1:
        raise InputError(f"steps must be positive, got {steps}")
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    if seed is not None:
        torch.manual_seed(seed)
    device, dtype = flow._anchor.device, flow._anchor.dtype

    if callable(data):
        sampler = data

        def draw(n: int) -> tuple[Tensor, Tensor | None]:
            batch = sampler(n)
            return batch if isinstance(batch, tuple | list) else (batch, None)  # type: ignore[return-value]

        init = check_pairs(sampler(10_000), flow, "sampled data")
        if val_data is None:
            val_data = sampler(10_000)
        if flow.dequantize_steps.any():
            raise InputError("dequantization needs a data tensor, not a sampler")
    else:
        x, context = check_pairs(data, flow)
        if val_data is None:
            n_val = round(val_fraction * len(x))
            if n_val < 1 or len(x) - n_val < 2:
                raise InputError(f"{len(x)} rows are too few to hold out a validation set")
            val_index, train_index = split(torch.arange(len(x)), (val_fraction, 1 - val_fraction), seed or 0)
            val_data = (x[val_index], None if context is None else context[val_index])
            x, context = x[train_index], None if context is None else context[train_index]
        init = (flow.dequantize(x), context)
        draw = _batches(x.to(device, dtype), None if context is None else context.to(device, dtype), flow)
    val_x, val_context = check_pairs(val_data, flow, "validation data")
    val_x = val_x.to(device, dtype)
    val_context = None if val_context is None else val_context.to(device, dtype)
    flow.initialize(init[0].to(device, dtype), None if init[1] is None else init[1].to(device, dtype))

    loss_of, val_metric = _objective(flow, objective)
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(schedule, steps, warmup))
    val_every = val_every or max(1, steps // 40)

    result = FitResult(
        steps=steps, seconds=0.0, best_step=0, best_val_nll=math.inf, metric="fm_loss" if objective == "fm" else "nll"
    )
    best_state = _copy_state(flow)
    running, count = 0.0, 0
    start = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc="train", disable=not progress, mininterval=0.5, leave=False)
    flow.train()
    for step in bar:
        x, context = draw(batch_size)
        context = None if context is None else context.to(device, dtype)
        loss = loss_of(x.to(device, dtype), context)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(flow.parameters(), clip_grad or math.inf)
        loss_value = loss.item()
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm.item())):
            flow.load_state_dict(best_state)
            raise TrainingDivergedError(
                f"training diverged at step {step}: loss {loss_value}, gradient norm {grad_norm.item()}; "
                f"the flow was reset to its best state (step {result.best_step}). Try a lower learning rate."
            )
        optimizer.step()
        scheduler.step()
        running, count = running + loss_value, count + 1
        if step % val_every == 0 or step == steps:
            flow.eval()
            val_nll = val_metric(val_x, val_context)
            if callback is not None:
                callback(step, flow)
            flow.train()
            result.train_curve.append((step, running / count))
            result.val_curve.append((step, val_nll))
            running, count = 0.0, 0
            if val_nll < result.best_val_nll:
                result.best_val_nll, result.best_step = val_nll, step
                best_state = _copy_state(flow)
            bar.set_postfix(nll=f"{result.train_curve[-1][1]:.3f}", val=f"{val_nll:.3f}")
    bar.close()
    flow.load_state_dict(best_state)
    flow.eval()
    result.seconds = time.perf_counter() - start
    return result


def _objective(flow: Flow, objective: str) -> tuple[Callable[..., Tensor], Callable[..., float]]:
    """The training loss ``(x, c) -> Tensor`` and the validation metric ``(x, c) -> float``."""
    if objective == "mle":
        return (lambda x, c: -flow.log_prob(x, c).mean()), (lambda x, c: nll(flow, x, c)[0])
    if objective != "fm":
        raise InputError(f"unknown objective {objective!r}; choose 'mle' or 'fm'")
    if not flow.is_continuous:
        raise InputError("flow matching (objective='fm') trains continuous flows (CNF) only")
    from flowfit.continuous import flow_matching_loss

    layer = flow.layers[0]

    def loss(x: Tensor, c: Tensor | None) -> Tensor:
        return flow_matching_loss(layer, x, flow._embed(c, len(x)))

    @torch.no_grad()
    def validation(x: Tensor, c: Tensor | None) -> float:
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.manual_seed(0)  # the same noise and times at every evaluation
            return loss(flow.dequantize(x), c).item()

    return loss, validation


def _copy_state(flow: Flow) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in flow.state_dict().items()}


def _batches(x: Tensor, context: Tensor | None, flow: Flow) -> Callable[[int], tuple[Tensor, Tensor | None]]:
    """Sampler over tensors: shuffled passes (epochs) in batches of ``n`` rows, dequantized
    afresh each time when the flow dequantizes."""
    order = torch.randperm(len(x))
    position = 0

    def draw(n: int) -> tuple[Tensor, Tensor | None]:
        nonlocal order, position
        if n >= len(x):
            return flow.dequantize(x), context
        if position + n > len(order):
            order, position = torch.randperm(len(x)), 0
        index = order[position : position + n].to(x.device)
        position += n
        return flow.dequantize(x[index]), None if context is None else context[index]

    return draw


def _lr_factor(schedule: str, steps: int, warmup: int) -> Callable[[int], float]:
    if schedule not in ("cosine", "constant"):
        raise InputError(f"unknown schedule {schedule!r}; choose 'cosine' or 'constant'")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor
