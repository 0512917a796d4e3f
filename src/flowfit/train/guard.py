"""The divergence guard: it watches every step's loss and gradient before the update is
applied.

- A finite loss that spikes far above the recent ones (more than ``max(10 MAD, 5 nats)``
  above the median of the last 200) is one wild batch: its update is skipped and counted.
- A non-finite loss or gradient, or ``SPIKES_BEFORE_ROLLBACK`` spikes in a row (the weights
  are wrecked), rolls the flow and the optimizer back to the last good state (the last
  finite validation) with half the learning rate.
- After ``max_retries`` rollbacks training stops with
  :class:`~flowfit.errors.TrainingDivergedError` naming the step.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

from torch import Tensor, nn

from flowfit.errors import TrainingDivergedError

#: Consecutive spiking steps after which the guard rolls back.
SPIKES_BEFORE_ROLLBACK = 10
#: Recent losses the spike test compares against.
WINDOW = 200


class DivergenceGuard:
    """Decides whether a step's update may be applied; owns the last good state."""

    def __init__(self, model: nn.Module, optimizer: Any, schedule: Any, max_retries: int) -> None:
        self.model, self.optimizer, self.schedule, self.max_retries = model, optimizer, schedule, max_retries
        self.window: deque[float] = deque(maxlen=WINDOW)
        self.spikes_in_a_row = 0
        #: ``(step, reason)`` of each rollback
        self.rollbacks: list[tuple[int, str]] = []
        #: steps whose update was skipped (spikes, and the steps that rolled back)
        self.skipped: list[int] = []
        self.good = self._snapshot()

    def allows(self, step: int, loss: float, grad_norm: float) -> bool:
        """Whether the update of this step may be applied (False: skipped, maybe rolled back)."""
        problem = self._problem(loss, grad_norm)
        if not problem:
            self.spikes_in_a_row = 0
            self.window.append(loss)
            return True
        self.skipped.append(step)
        self.spikes_in_a_row += 1
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if not finite or self.spikes_in_a_row >= SPIKES_BEFORE_ROLLBACK:
            self._roll_back(step, problem)
        return False

    def remember(self) -> None:
        """The current weights and optimizer are good (a finite validation): keep them."""
        self.good = self._snapshot()

    @property
    def rolled_back_at(self) -> int | None:
        """The step of the last rollback, if any."""
        return self.rollbacks[-1][0] if self.rollbacks else None

    def _problem(self, loss: float, grad_norm: float) -> str:
        """Why this step must not be taken ('' when it may)."""
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            return f"loss {loss}, gradient norm {grad_norm}"
        if len(self.window) >= 50:
            median = statistics.median(self.window)
            spread = statistics.median(abs(v - median) for v in self.window)
            if loss > median + max(10 * spread, 5.0):
                return f"loss spiked to {loss:.4g} (recent median {median:.4g})"
        return ""

    def _roll_back(self, step: int, problem: str) -> None:
        self.rollbacks.append((step, problem))
        self.spikes_in_a_row = 0
        self.model.load_state_dict(self.good["model"])
        if len(self.rollbacks) > self.max_retries:
            raise TrainingDivergedError(
                f"training diverged at step {step}: {problem}; rolled back and halved the learning rate "
                f"{self.max_retries} times already. The flow holds its last good state. "
                "Try a lower learning rate (--lr) or a smaller scale bound."
            )
        self.optimizer.load_state_dict(_clone(self.good["optimizer"]))
        self.schedule.halve()

    def _snapshot(self) -> dict[str, Any]:
        return {"model": _clone(self.model.state_dict()), "optimizer": _clone(self.optimizer.state_dict())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": list(self.window),
            "spikes_in_a_row": self.spikes_in_a_row,
            "rollbacks": [list(r) for r in self.rollbacks],
            "skipped": list(self.skipped),
            "good": self.good,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window = deque(state["window"], maxlen=WINDOW)
        self.spikes_in_a_row = state["spikes_in_a_row"]
        self.rollbacks = [(int(step), str(reason)) for step, reason in state["rollbacks"]]
        self.skipped = list(state["skipped"])
        self.good = state["good"]


def _clone(value: Any) -> Any:
    """A deep copy of a (nested) state dict's tensors."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clone(v) for v in value)
    return value
