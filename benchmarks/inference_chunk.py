"""Inference throughput against how the networks' activations are handled, side by side in one
process (alternating, medians of ``--rounds``): chunks of 4,096 rows with a new tensor for every
hidden activation (flowfit before ``flowfit.nets.reusing_activations``), 4,096 rows with the
activations written into buffers reused at every chunk, and the chunk each family takes from
its widest layer (``Flow.rows_per_chunk``) with reused buffers (what flowfit does). glibc's
thresholds adapt to the blocks a process has freed, so in one process the baseline pays fewer
page faults than in a fresh one (``benchmarks/allocator.py`` compares fresh processes). Each
family with its defaults and random weights; log_prob of 100,000 points and 100,000 samples
(20,000 for the autoregressive ones, whose sampling is a pass per column). Prints a Markdown
table.

    .venv/bin/python benchmarks/inference_chunk.py --out benchmarks/results/inference_chunk.md
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

import flowfit
import flowfit.flow  # whose Flow._chunked enters reusing_activations: swapped for the baseline
from flowfit import datasets, nets
from flowfit.files import write_text


def flows() -> dict[str, tuple[flowfit.Flow, torch.Tensor, int]]:
    """name: (flow, points to score, samples to draw)."""
    torch.manual_seed(0)
    moons = datasets.moons(100_000, seed=1)
    table = torch.randn(100_000, 10)
    return {
        "RealNVP, 2 columns": (flowfit.RealNVP(2), moons, 100_000),
        "NSF, 2 columns": (flowfit.NSF(2), moons, 100_000),
        "NSF, 10 columns": (flowfit.NSF(10), table, 100_000),
        "NSF autoregressive, 10 columns": (flowfit.NSF(10, autoregressive=True), table, 20_000),
        "MAF, 2 columns": (flowfit.MAF(2), moons, 20_000),
        "NICE, 2 columns": (flowfit.NICE(2), moons, 100_000),
        "Glow, 2 columns": (flowfit.Glow(2), moons, 100_000),
    }


def rate(method, argument, rows: int) -> float:
    """Rows per second of ``method(argument)``."""
    start = time.perf_counter()
    method(argument)
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        "| flow | widest layer | chunk | log_prob points/s: 4,096 rows, new tensors | 4,096, reused | the chunk, "
        "reused | sampling points/s: 4,096, new | 4,096, reused | the chunk, reused | time of flowfit's choice "
        "against 4,096 new (log_prob, sampling) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reusing = nets.reusing_activations
    for name, (flow, points, draws) in flows().items():
        chunk = flow.rows_per_chunk()
        widest = max(m.out_features for m in flow.modules() if isinstance(m, torch.nn.Linear))
        variants = {"new": (4096, contextlib.nullcontext), "reused": (4096, reusing), "chunk": (chunk, reusing)}
        rates: dict[tuple[str, str], list[float]] = {}
        with torch.inference_mode():
            for round_ in range(args.rounds + 1):  # the first round warms up
                for variant, (rows_per_chunk, workspace) in variants.items():
                    flow.inference_chunk = rows_per_chunk  # this flow's own, over its class's
                    flowfit.flow.reusing_activations = workspace  # what Flow._chunked enters
                    log_prob = rate(flow.log_prob, points, len(points))
                    sampling = rate(flow.sample, draws, draws)
                    if round_:
                        rates.setdefault(("log_prob", variant), []).append(log_prob)
                        rates.setdefault(("sample", variant), []).append(sampling)
        flowfit.flow.reusing_activations = reusing
        m = {key: statistics.median(values) for key, values in rates.items()}
        cells = " | ".join(f"{m[what, variant]:,.0f}" for what in ("log_prob", "sample") for variant in variants)
        ratios = [m[what, "new"] / m[what, "chunk"] for what in ("log_prob", "sample")]
        rows.append(f"| {name} | {widest} | {chunk:,} | {cells} | {ratios[0]:.2f}x, {ratios[1]:.2f}x |")
        print(rows[-1], flush=True)
    table = "\n".join(rows) + (
        f"\n\nMedians of {args.rounds} rounds, the three in turn; torch {torch.__version__}, {args.threads} "
        "threads; random weights (the defaults' architectures). The chunk: the rows whose widest layer's "
        "activations are about 2**21 floats, a power of two from 1,024 to 16,384; glibc's allocator defaults."
    )
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
