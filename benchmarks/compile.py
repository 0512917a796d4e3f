"""Milliseconds per training step, eager against ``torch.compile`` (what ``--compile`` switches),
side by side in one process: each round times a block of steps of every model both ways, and
the table gives the median over rounds, with the time the first compiled step took (compiling
the forward and the backward).

A step is the loss of a batch of 256, its backward and a plain ``torch.optim.Adam`` step, the
same for both paths, so the ratio is the compiled model's own. Models: RealNVP 6 x MLP 2x256
and NSF 4 x 8 bins x MLP 2x128 on two moons (issue 13's race), the autoregressive NSF that
``FlowDensity()`` builds, on 10 columns, and the continuous flow of ``--objective fm`` with its
defaults (flow-matching loss, batches of 1,024 of flowfit's logo).

    .venv/bin/python benchmarks/compile.py --out benchmarks/results/compile.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import flowfit
from flowfit import datasets
from flowfit.files import write_text

BATCH = 256


def models() -> dict[str, tuple[Callable[[], flowfit.Flow], torch.Tensor, str, int]]:
    """name: (build, data, objective, batch size)."""
    moons = datasets.moons(BATCH * 20, seed=0)
    table = torch.randn(BATCH * 20, 10, generator=torch.Generator().manual_seed(0))
    table[:, 1] += table[:, 0] ** 2
    architecture, training = flowfit.CNF.defaults_for("fm")
    logo = datasets.image(datasets.LOGO, training["batch_size"] * 20, seed=0)
    return {
        "RealNVP 6 x (256, 256), 2 columns": (
            lambda: flowfit.RealNVP(2, layers=6, hidden=(256, 256)),
            moons,
            "mle",
            BATCH,
        ),
        "NSF 4 x 8 bins x (128, 128), 2 columns": (
            lambda: flowfit.NSF(2, layers=4, bins=8, hidden=(128, 128)),
            moons,
            "mle",
            BATCH,
        ),
        "NSF autoregressive (FlowDensity's), 10 columns": (
            lambda: flowfit.NSF(10, autoregressive=True),
            table,
            "mle",
            BATCH,
        ),
        "CNF, flow matching (--objective fm defaults), batch 1,024": (
            lambda: flowfit.CNF(2, **architecture),
            logo,
            "fm",
            training["batch_size"],
        ),
    }


class Stepper:
    """Plain Adam steps of one model, through its loss eagerly or compiled."""

    def __init__(
        self, build: Callable[[], flowfit.Flow], data: torch.Tensor, objective: str, batch: int, compiled: bool
    ) -> None:
        torch.manual_seed(0)
        self.flow, self.data, self.batch, self.position = build(), data, batch, 0
        self.flow.initialize(data)
        loss = lambda x: self.flow.loss(x, None, objective)  # noqa: E731
        self.loss = torch.compile(loss, dynamic=False) if compiled else loss
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=1e-4)

    def steps(self, n: int) -> float:
        """Run ``n`` steps; seconds per step."""
        start = time.perf_counter()
        for _ in range(n):
            batch = self.data[self.position : self.position + self.batch]
            self.position = (self.position + self.batch) % len(self.data)
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(batch).backward()
            self.optimizer.step()
        return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", help="only the models whose names contain one of these words")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        "| model (batch 256 unless said) | eager ms per step | compiled ms per step | compiled / eager "
        "| first compiled step s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (build, data, objective, batch) in models().items():
        if args.models and not any(word in name for word in args.models):
            continue
        eager, compiled = Stepper(build, data, objective, batch, False), Stepper(build, data, objective, batch, True)
        eager.steps(10)
        compile_seconds = compiled.steps(1)
        compiled.steps(10)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            times[False].append(eager.steps(args.steps))
            times[True].append(compiled.steps(args.steps))
        ms = {key: 1000 * statistics.median(values) for key, values in times.items()}
        rows.append(
            f"| {name} | {ms[False]:.2f} | {ms[True]:.2f} | {ms[True] / ms[False]:.2f}x | {compile_seconds:.1f} |"
        )
        print(rows[-1], flush=True)
    note = (
        f"\nMedians of {args.rounds} rounds of {args.steps} steps, eager and compiled in turn; "
        f"torch {torch.__version__}, {args.threads} threads. The first compiled step includes compiling "
        "(Inductor's cache, warm after the first run on a machine, shortens it)."
    )
    table = "\n".join(rows) + "\n" + note
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
