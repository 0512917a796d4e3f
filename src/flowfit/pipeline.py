"""What ``flowfit train`` does between parsing arguments and printing: resolve the data,
train, evaluate, and write the run directory (model, metrics, pictures)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowfit import viz
from flowfit._version import __version__
from flowfit.datasets import TOYS, load_table, moons_log_prob
from flowfit.errors import InputError
from flowfit.flow import Flow
from flowfit.io import save, write_json, write_text
from flowfit.train import FitResult, nll, split

#: Seeds of the fixed validation and test draws from a toy generator (the test seed is the
#: one of the shared reference protocol).
VAL_SEED, TEST_SEED = 987_654_321, 12345
TEST_SIZE = 100_000


@dataclass
class Data:
    """Where a run's data come from and how they are split."""

    source: str
    columns: list[str]
    train: Tensor | Callable[[int], Tensor]
    val: Tensor
    test: Tensor
    #: a fixed sample of the training distribution (for pictures and the train NLL)
    reference: Tensor

    @property
    def dim(self) -> int:
        return self.val.shape[1]


def resolve_data(spec: str, columns: list[str] | None = None, seed: int = 0) -> Data:
    """``spec`` is a toy name (fresh draws each step, fixed validation and test draws) or a
    file path (rows shuffled with ``seed`` and split 80/10/10 into train/val/test)."""
    if spec in TOYS:
        toy = TOYS[spec]
        return Data(
            source=spec,
            columns=["x0", "x1"],
            train=lambda n: toy(n),
            val=toy(10_000, seed=VAL_SEED),
            test=toy(TEST_SIZE, seed=TEST_SEED),
            reference=toy(10_000, seed=VAL_SEED + 1),
        )
    path = Path(spec)
    if not path.exists():
        raise InputError(f"--data {spec!r} is neither a file nor one of the toy data sets ({', '.join(TOYS)})")
    values, names = load_table(path, columns)
    if len(values) < 10:
        raise InputError(
            f"{path}: {len(values)} rows are too few to split into training, validation and test sets (need 10)"
        )
    constant = [name for name, std in zip(names, values.double().std(dim=0).tolist(), strict=True) if std == 0]
    if constant:
        raise InputError(f"{path}: column(s) {', '.join(constant)} are constant; a density over them does not exist")
    train, val, test = split(values, (0.8, 0.1, 0.1), seed=seed)
    return Data(source=str(path), columns=names, train=train, val=val, test=test, reference=train[:10_000])


def evaluate(flow: Flow, data: Data, result: FitResult) -> dict[str, Any]:
    """The numbers of ``metrics.json`` (NLLs in nats per sample, in the data's units)."""
    test_nll, test_stderr = nll(flow, data.test)
    metrics: dict[str, Any] = {
        "data": data.source,
        "dim": data.dim,
        "train_nll": nll(flow, data.reference)[0],
        "val_nll": nll(flow, data.val)[0],
        "test_nll": test_nll,
        "test_nll_stderr": test_stderr,
        "test_size": len(data.test),
        "steps": result.steps,
        "best_step": result.best_step,
        "seconds": round(result.seconds, 2),
        "params": sum(p.numel() for p in flow.parameters()),
        "flowfit_version": __version__,
        "torch_version": torch.__version__,
    }
    if data.source == "moons":
        # the test set's NLL under the true density: the floor no model can beat (in expectation)
        floor = -moons_log_prob(data.test).mean().item()
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
    written.append(viz.plot_loglik(flow, data.test, directory / "loglik.png"))
    if data.dim == 2:
        with torch.inference_mode():
            samples = flow.sample(10_000)
            states = flow.trajectory(2_000)
        written.append(viz.plot_samples(data.reference, samples, directory / "samples.png"))
        written.append(viz.plot_density(flow, data.reference, directory / "density.png"))
        titles = viz.layer_titles(flow)
        written.append(viz.plot_layers(states, directory / "layers.png", titles))
        written.append(
            viz.animate(
                states, directory / "flow.gif", titles, note="discrete flow: frames between layers are interpolated"
            )
        )
    return written
