"""Inference throughput against the rows pushed through the networks at a time
(``Flow.inference_chunk``): 4,096 rows, and the chunk each family takes from its widest layer
where the process keeps freed memory (``Flow.rows_per_chunk``), side by side in one process
(alternating, medians of ``--rounds``), with glibc's defaults or (``--keep-freed-memory``) as
the ``flowfit`` command sets them. Each family with its defaults and random weights;
log_prob of 100,000 points and 100,000 samples (20,000 for the autoregressive ones, whose
sampling is a pass per column). Prints a Markdown table.

    .venv/bin/python benchmarks/inference_chunk.py --keep-freed-memory --out benchmarks/results/inference_chunk.md
    .venv/bin/python benchmarks/inference_chunk.py --out benchmarks/results/inference_chunk_glibc.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import flowfit
from flowfit import datasets
from flowfit.allocator import keep_freed_memory
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
    parser.add_argument(
        "--keep-freed-memory", action="store_true", help="glibc keeps freed memory, as the flowfit command sets it"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()
    rows = [
        "| flow | widest layer | chunk | log_prob points/s at 4,096 | at the chunk | sampling points/s at 4,096 "
        "| at the chunk | time at the chunk / at 4,096 (log_prob, sampling) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (flow, points, draws) in flows().items():
        chunk = flow.rows_per_chunk(keeping_freed_memory=True)
        widest = max(m.out_features for m in flow.modules() if isinstance(m, torch.nn.Linear))
        rates: dict[tuple[str, int], list[float]] = {}
        with torch.inference_mode():
            for round_ in range(args.rounds + 1):  # the first round warms up
                for rows_per_chunk in (4096, chunk):
                    flow.inference_chunk = rows_per_chunk  # this flow's own, over its class's
                    log_prob = rate(flow.log_prob, points, len(points))
                    sampling = rate(flow.sample, draws, draws)
                    if round_:
                        rates.setdefault(("log_prob", rows_per_chunk), []).append(log_prob)
                        rates.setdefault(("sample", rows_per_chunk), []).append(sampling)
        m = {key: statistics.median(values) for key, values in rates.items()}
        rows.append(
            f"| {name} | {widest} | {chunk:,} | {m['log_prob', 4096]:,.0f} | {m['log_prob', chunk]:,.0f} "
            f"| {m['sample', 4096]:,.0f} | {m['sample', chunk]:,.0f} "
            f"| {m['log_prob', 4096] / m['log_prob', chunk]:.2f}x, {m['sample', 4096] / m['sample', chunk]:.2f}x |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(rows) + (
        f"\n\nMedians of {args.rounds} rounds, both chunks in turn; torch {torch.__version__}, {args.threads} "
        "threads; random weights (the defaults' architectures). The chunk: the rows whose widest layer's "
        "activations are about 2**21 floats, a power of two from 1,024 to 16,384. Allocator: "
        + ("freed memory kept, as the flowfit command sets it." if args.keep_freed_memory else "glibc's defaults.")
    )
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
