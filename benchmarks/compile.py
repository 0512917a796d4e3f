"""Milliseconds per training step, eager against ``torch.compile`` (what ``--compile`` switches),
or float32 against bfloat16 products (``--compare precision``: what ``--mixed-precision``
switches, both eager), or, both compiled, every product through BLAS (``torch.nn.Linear``)
against the skinny ones written element-wise (``--compare skinny``: ``flowfit.nets.Linear``,
which the networks use), side by side in one process: each round times a block of steps of every
model both ways, and the table gives the median over rounds, with the time the first compiled
step took (compiling the forward and the backward).

A step is the loss of a batch of 256, its backward and a plain ``torch.optim.Adam`` step, the
same for both paths, so the ratio is the compiled model's own. Models: RealNVP 6 x MLP 2x256
and NSF 4 x 8 bins x MLP 2x128 on two moons (issue 13's race), the autoregressive NSF that
``FlowDensity()`` builds, on 10 columns, and the continuous flow of ``--objective fm`` with its
defaults (flow-matching loss, batches of 1,024 of flowfit's logo).

    .venv/bin/python benchmarks/compile.py --out benchmarks/results/compile.md
    .venv/bin/python benchmarks/compile.py --models "flow matching" --precisions float32 bfloat16 \
        --out benchmarks/results/compile_fm.md
    .venv/bin/python benchmarks/compile.py --compare precision --out benchmarks/results/mixed_precision.md
    .venv/bin/python benchmarks/compile.py --compare skinny --models RealNVP --rounds 9 \
        --out benchmarks/results/compile_skinny.md
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
from flowfit.train.trainer import TrainingLoss, native_bfloat16

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
        "RealNVP 6 x (256, 256), 4 columns": (lambda: flowfit.RealNVP(4), table[:, :4], "mle", BATCH),
        "RealNVP 6 x (256, 256), 8 columns": (lambda: flowfit.RealNVP(8), table[:, :8], "mle", BATCH),
        "RealNVP, batch 128": (lambda: flowfit.RealNVP(2), moons, "mle", 128),
        "NICE (its defaults), 2 columns": (lambda: flowfit.NICE(2), moons, "mle", BATCH),
        "Glow (its defaults), 2 columns": (lambda: flowfit.Glow(2), moons, "mle", BATCH),
        "MAF (its defaults), 2 columns": (lambda: flowfit.MAF(2), moons, "mle", BATCH),
        "CNF, flow matching (--objective fm defaults), batch 1,024": (
            lambda: flowfit.CNF(2, **architecture),
            logo,
            "fm",
            training["batch_size"],
        ),
    }


class Stepper:
    """Plain Adam steps of one model, through its loss eagerly or compiled, with its products in
    float32 or (``mixed``) in bfloat16 as the trainer's mixed precision computes them, and (``blas``)
    every product through BLAS, as ``torch.nn.Linear`` computes it."""

    def __init__(
        self,
        build: Callable[[], flowfit.Flow],
        data: torch.Tensor,
        objective: str,
        batch: int,
        compiled: bool,
        mixed: bool = False,
        blas: bool = False,
    ) -> None:
        torch.manual_seed(0)
        self.flow, self.data, self.batch, self.position = build(), data, batch, 0
        if blas:
            for module in self.flow.modules():
                if isinstance(module, flowfit.nets.Linear):
                    module.__class__ = torch.nn.Linear
        self.flow.initialize(data)
        objective_module = TrainingLoss(self.flow, objective, mixed)
        loss = lambda x: objective_module(x, None)  # noqa: E731
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


def product_rate(dtype: torch.dtype, size: int = 256, repeats: int = 500) -> float:
    """GFLOP/s of a lone ``size`` x ``size`` x ``size`` matrix product in ``dtype`` (median of 5)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        times.append((time.perf_counter() - start) / repeats)
    return 2 * size**3 / statistics.median(times[1:]) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", help="only the models whose names contain one of these words")
    parser.add_argument(
        "--compare",
        choices=("compile", "precision", "skinny"),
        default="compile",
        help="what the two columns differ in",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=("float32", "bfloat16"),
        default=["float32"],
        help="eager against compiled with the products in each of these (bfloat16: as --mixed-precision on)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision, skinny = args.compare == "precision", args.compare == "skinny"
    columns = {
        "compile": "eager ms per step | compiled ms per step | compiled / eager | first compiled step s |",
        "precision": "float32 ms per step | bfloat16 products ms per step | bfloat16 / float32 |",
        "skinny": "all through BLAS ms per step | skinny element-wise ms per step | element-wise / BLAS |",
    }[args.compare]
    rows = [
        f"| model (batch 256 unless said) | {columns}",
        "|---|---:|---:|---:|" + ("---:|" if args.compare == "compile" else ""),
    ]
    precisions = ["float32"] if precision else args.precisions  # --compare precision: both columns' own
    cases = [(name, model, p == "bfloat16") for name, model in models().items() for p in precisions]
    for name, (build, data, objective, batch), mixed in cases:
        if args.models and not any(word in name for word in args.models):
            continue
        name += ", bfloat16 products" if mixed else ""
        base = Stepper(build, data, objective, batch, skinny, mixed=mixed, blas=skinny)
        other = Stepper(build, data, objective, batch, not precision, mixed=precision or mixed)
        base.steps(10)
        compile_seconds = other.steps(1)
        other.steps(10)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            times[False].append(base.steps(args.steps))
            times[True].append(other.steps(args.steps))
        ms = {key: 1000 * statistics.median(values) for key, values in times.items()}
        rows.append(f"| {name} | {ms[False]:.2f} | {ms[True]:.2f} | {ms[True] / ms[False]:.2f}x |")
        rows[-1] += f" {compile_seconds:.1f} |" if args.compare == "compile" else ""
        print(rows[-1], flush=True)
    note = (
        f"\nMedians of {args.rounds} rounds of {args.steps} steps, eager and compiled in turn; "
        f"torch {torch.__version__}, {args.threads} threads. The first compiled step includes compiling "
        "(Inductor's cache, warm after the first run on a machine, shortens it)."
        + (
            " bfloat16 products: both paths' loss under torch.autocast, as the trainer's mixed precision computes it."
            if "bfloat16" in args.precisions
            else ""
        )
    )
    if precision:
        hardware = "has" if native_bfloat16(torch.device("cpu")) else "does not have"
        note = (
            f"\nMedians of {args.rounds} rounds of {args.steps} steps, float32 and bfloat16 products in turn, both "
            f"eager; torch {torch.__version__}, {args.threads} threads; this CPU {hardware} bfloat16 products in "
            f"hardware (a lone 256 x 256 x 256 product: {product_rate(torch.float32):.0f} GFLOP/s in float32, "
            f"{product_rate(torch.bfloat16):.0f} in bfloat16). bfloat16: the loss under torch.autocast, as the "
            "trainer's mixed precision computes it."
        )
    if skinny:
        note = (
            f"\nMedians of {args.rounds} rounds of {args.steps} steps, both compiled, in turn; torch "
            f"{torch.__version__}, {args.threads} threads. Element-wise: the products of at most "
            f"{flowfit.nets.SKINNY} inputs or outputs (a coupling's first and last layers on few columns) written "
            "as broadcast multiplies and a sum, which Inductor fuses with the bias and activation next to them "
            "(flowfit.nets.Linear); BLAS: every product a torch.nn.Linear."
        )
    table = "\n".join(rows) + "\n" + note
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
