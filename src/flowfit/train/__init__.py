"""Maximum-likelihood training: :func:`fit` minimises the mean negative log-likelihood (or,
for a continuous flow, the flow-matching loss) with Adam, keeps the best validation state,
guards against divergence, checkpoints and resumes exactly, and runs under
``torch.distributed``. The parts live in :mod:`~flowfit.train.trainer` and its neighbours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from flowfit.flow import Flow
from flowfit.options import TrainOptions
from flowfit.train.callbacks import Call, Callback, CSVLog, ProgressBar, Record, TensorBoardLog
from flowfit.train.checkpoint import Checkpointer
from flowfit.train.data import Data, Rows, split_indices
from flowfit.train.result import FitResult
from flowfit.train.trainer import Trainer, adam, nll


def fit(
    flow: Flow,
    data: Data,
    options: TrainOptions | None = None,
    *,
    val_data: Data | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    log_path: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    callback: Callable[[int, Flow], Any] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    **option_values: Any,
) -> FitResult:
    """Train ``flow`` (in place) and leave it at its best validation state.

    Args:
        flow: the flow to train.
        data: the training rows (a tensor, numpy array or list of rows, shape ``(n, dim)``),
            :class:`~flowfit.tables.Rows` of a memory-mapped ``.npy`` file (read a batch at
            a time), for a conditional flow a tuple ``(x, context)``, or a function ``n -> x``
            (or ``n -> (x, context)``) that draws ``n`` fresh samples each step. Every row is
            checked first: finite, and representable in the flow's dtype.
        options: :class:`~flowfit.options.TrainOptions`; or give its fields as keywords
            (``fit(flow, data, steps=2000, lr=1e-3)``). Fields left at ``None`` take the
            family's defaults (``flow.training_defaults``).
        val_data: held-out data for model selection (rows or a pair). Default:
            ``val_fraction`` of the data rows (held out from training), or 10,000 fresh
            draws from a sampler (``val_fraction`` plays no part then, nor when ``val_data``
            is given).
        checkpoint_dir: where the run's checkpoint goes (written atomically, never with
            non-finite values): every ``checkpoint_every`` steps, and on Ctrl-C or SIGTERM.
        resume: continue from the checkpoint in ``checkpoint_dir`` (same data and options):
            the run then ends with the weights an uninterrupted run would have.
        log_path: append ``step,train_loss,val_metric,lr,skipped`` lines to this CSV file.
        tensorboard_dir: also log for TensorBoard there (when ``tensorboard`` is installed).
        callback: called as ``callback(step, flow)`` after every validation (the validated
            flow, in eval mode).
        callbacks: more :class:`~flowfit.train.callbacks.Callback` objects.
        progress: show a progress bar.

    Training runs with its own random-number stream (seeded by ``seed``; your global
    generator is left as it was). Data-dependent layers (standardization, ActNorm) are
    initialised from the training data first. Under ``torch.distributed`` the loss is wrapped
    in DistributedDataParallel, every rank takes its share of each global batch (rows) or
    draws its own samples (samplers), and only rank 0 checkpoints and logs.

    Raises:
        TrainingDivergedError: when the guard's rollbacks are used up, or when no
            validation ever beat the untrained flow (nothing is kept then).
    """
    if options is not None and option_values:
        raise TypeError("pass the training options either as TrainOptions or as keywords, not both")
    options = (options or TrainOptions()).updated(**option_values)
    reporters: list[Callback] = [ProgressBar()] if progress else []
    reporters += [CSVLog(log_path)] if log_path is not None else []
    reporters += [TensorBoardLog(tensorboard_dir)] if tensorboard_dir is not None else []
    reporters += [Call(callback)] if callback is not None else []
    checkpointer = None if checkpoint_dir is None else Checkpointer(checkpoint_dir, options.checkpoint_every)
    with torch.random.fork_rng(devices=[flow.device] if flow.device.type == "cuda" else []):
        trainer = Trainer(
            flow, data, options, val_data=val_data, checkpointer=checkpointer, callbacks=[*reporters, *callbacks]
        )
        if resume:
            trainer.resume()
        return trainer.run()


__all__ = [
    "Callback",
    "Checkpointer",
    "FitResult",
    "Record",
    "Rows",
    "TrainOptions",
    "Trainer",
    "adam",
    "fit",
    "nll",
    "split_indices",
]
