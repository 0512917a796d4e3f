"""Where NSF's inference time goes, and what two of its choices buy, measured side by side in
one process (alternating, medians of ``--rounds``):

- the conditioners' ReLU in place (as flowfit builds them) against ReLU writing a new tensor;
- the spline's softmax over the bins written out (what flowfit does without gradients)
  against ``torch.softmax``;
- the spline alone and the conditioner alone on one inference chunk (``Flow.rows_per_chunk``
  rows, the activations in reused buffers as ``Flow.log_prob`` has them).

NSF(2) with default sizes and random weights; log_prob of 100,000 points. Prints a Markdown
table.

    .venv/bin/python benchmarks/nsf_inference.py --out benchmarks/results/nsf_inference.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import flowfit
from flowfit import datasets, nets
from flowfit.files import write_text
from flowfit.transforms import splines
from flowfit.transforms.coupling import SplineCoupling


def seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def compare(variants: dict[str, Callable[[], None]], work: Callable[[], object], rounds: int) -> dict[str, float]:
    """Median seconds of ``work`` under each variant (a function that sets it up), alternating."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for setup in variants.values():  # warm up each
        setup()
        work()
    for _ in range(rounds):
        for name, setup in variants.items():
            setup()
            times[name].append(seconds(work))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    flow = flowfit.NSF(2)
    for parameter in flow.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    flow.eval()
    points = datasets.moons(100_000, seed=1)
    relus = [m for m in flow.modules() if isinstance(m, torch.nn.ReLU)]
    written_out = splines._softmax

    def log_prob() -> None:
        with torch.inference_mode():
            flow.log_prob(points)

    def relu_in_place(value: bool) -> Callable[[], None]:
        def setup() -> None:
            for module in relus:
                module.inplace = value

        return setup

    def softmax(function: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        return lambda: setattr(splines, "_softmax", function)

    relu = compare({"in place": relu_in_place(True), "new tensor": relu_in_place(False)}, log_prob, args.rounds)
    relu_in_place(True)()
    soft = compare(
        {"written out": softmax(written_out), "torch.softmax": softmax(lambda v: torch.softmax(v, dim=-1))},
        log_prob,
        args.rounds,
    )
    softmax(written_out)()
    coupling = next(layer for layer in flow.layers if isinstance(layer, SplineCoupling))
    rows = flow.rows_per_chunk()
    chunk = torch.randn(rows, 2)
    with torch.inference_mode(), nets.reusing_activations():
        identity, transformed = coupling._parts(chunk)
        theta = coupling._theta(identity, None)
        parts = compare(
            {"": lambda: None},
            lambda: splines.rational_quadratic_spline(transformed, theta, 4.0, inverse=True),
            args.rounds * 20,
        )[""]
        conditioner = compare({"": lambda: None}, lambda: coupling._theta(identity, None), args.rounds * 20)[""]
    lines = [
        f"NSF(2), default sizes; log_prob of 100,000 points; medians of {args.rounds} alternating rounds, one process.",
        "",
        "| variant | log_prob points/s | time against flowfit's choice |",
        "|---|---:|---:|",
    ]
    for name, table, chosen in (("ReLU", relu, "in place"), ("softmax", soft, "written out")):
        for variant, value in table.items():
            lines.append(f"| {name} {variant} | {100_000 / value:,.0f} | {value / table[chosen]:.2f}x |")
    lines += [
        "",
        f"One inference chunk of {rows:,} rows through one coupling: conditioner {conditioner * 1e6:,.0f} "
        f"microseconds, spline (inverse) {parts * 1e6:,.0f} microseconds.",
    ]
    print("\n".join(lines))
    if args.out:
        write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
