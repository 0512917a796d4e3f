"""What :func:`flowfit.fit` returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FitResult:
    """What a run measured. NLLs are mean nats per sample in the data's units."""

    steps: int
    seconds: float
    best_step: int
    #: the best validation NLL (nats per sample)
    best_val_nll: float
    #: the validation metric of the untrained flow, which the best state beats
    start_val: float = float("inf")
    #: ``(step, mean training loss since the previous record)``
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    #: ``(step, validation metric)``
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    #: what ``val_curve`` holds: ``"nll"``
    metric: str = "nll"
    #: what ``train_curve`` holds: ``"nll"``, or ``"fm_loss"`` for ``objective="fm"``
    train_metric: str = "nll"
    #: the step training stopped at (``steps``, or earlier when early stopping triggered)
    stopped_at: int = 0
    #: ``(step, reason)`` of each rollback of the divergence guard
    rollbacks: list[tuple[int, str]] = field(default_factory=list)
    #: steps whose update the guard skipped (a loss spike, or a rollback)
    skipped: list[int] = field(default_factory=list)
