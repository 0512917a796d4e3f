"""What a run reports while it trains, each a :class:`Callback`: the CSV log, TensorBoard,
the progress bar, and a user's function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from flowfit.flow import Flow
    from flowfit.train.trainer import Trainer


@dataclass(frozen=True)
class Record:
    """One validation: the step, the mean training loss since the previous record, the
    validation metric (NLL, or the flow-matching loss), the learning rate, and how many
    steps since the previous record the divergence guard skipped."""

    step: int
    train_loss: float
    val_metric: float
    lr: float
    skipped: int


class Callback:
    """Hooks the trainer calls (every one optional). ``on_end`` runs however the run ends."""

    def on_start(self, trainer: Trainer) -> None:
        pass

    def on_step(self, trainer: Trainer) -> None:
        pass

    def on_validation(self, trainer: Trainer, record: Record) -> None:
        pass

    def on_end(self, trainer: Trainer) -> None:
        pass


class CSVLog(Callback):
    """Appends ``step,train_loss,val_metric,lr,skipped`` lines to a CSV file; a resumed run
    first drops the lines written after its checkpoint, so no step appears twice."""

    HEADER = "step,train_loss,val_metric,lr,skipped\n"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_start(self, trainer: Trainer) -> None:
        lines = self.path.read_text().splitlines(keepends=True)[1:] if self.path.exists() else []
        kept = [line for line in lines if int(line.split(",", 1)[0]) <= trainer.step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.HEADER + "".join(kept))

    def on_validation(self, trainer: Trainer, record: Record) -> None:
        with self.path.open("a") as handle:
            handle.write(
                f"{record.step},{record.train_loss:.6f},{record.val_metric:.6f},{record.lr:.6g},{record.skipped}\n"
            )


class TensorBoardLog(Callback):
    """The same numbers for TensorBoard, in ``directory``, when the ``tensorboard`` package
    is installed (otherwise nothing); a resumed run drops the events after its checkpoint."""

    def __init__(self, directory: str | Path) -> None:
        self.directory, self.writer = Path(directory), None

    def on_start(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises this when the tensorboard package is missing
            return
        self.writer = SummaryWriter(str(self.directory), purge_step=trainer.step + 1 if trainer.step else None)

    def on_validation(self, trainer: Trainer, record: Record) -> None:
        if self.writer is not None:
            self.writer.add_scalar(f"train/{trainer.train_metric}", record.train_loss, record.step)
            self.writer.add_scalar(f"validation/{trainer.metric}", record.val_metric, record.step)
            self.writer.add_scalar("train/lr", record.lr, record.step)
            self.writer.add_scalar("train/skipped_steps", record.skipped, record.step)

    def on_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar(Callback):
    """A tqdm bar with the running training loss and the last validation metric."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_start(self, trainer: Trainer) -> None:
        total = trainer.options.steps
        self.bar = tqdm(total=total, initial=trainer.step, desc="train", mininterval=0.5, leave=False)

    def on_step(self, trainer: Trainer) -> None:
        self.bar.update(1)

    def on_validation(self, trainer: Trainer, record: Record) -> None:
        self.bar.set_postfix(loss=f"{record.train_loss:.3f}", val=f"{record.val_metric:.3f}")

    def on_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class Call(Callback):
    """Calls ``function(step, flow)`` after every validation, with the flow that was
    validated (the averaged weights when EMA is on), in eval mode."""

    def __init__(self, function: Callable[[int, Flow], Any]) -> None:
        self.function = function

    def on_validation(self, trainer: Trainer, record: Record) -> None:
        self.function(record.step, trainer.evaluated_flow)
