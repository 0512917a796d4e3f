"""Where a training step's time goes: flowfit's RealNVP 6 x (2x256) on two moons, batch 256.

Profiles ``--steps`` steps (log_prob, backward, the trainer's fused Adam) with
``torch.profiler`` and splits the time into the 256-wide matrix products (the arithmetic a
faster library could not avoid), the skinny ones (the 1-wide first and 2-wide last layers),
Adam, and everything else (element-wise operations, autograd bookkeeping, Python). Also times
a lone 256 x 256 x 256 product, the rate those big products can reach. Prints a Markdown table.

    .venv/bin/python benchmarks/profile_step.py --out benchmarks/results/profile_step.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import flowfit
from flowfit import datasets
from flowfit.files import write_text
from flowfit.train import adam


def lone_product_rate() -> float:
    """GFLOP/s of one 256 x 256 x 256 float32 product (median of 5 blocks of 500)."""
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(500):
            torch.mm(a, b)
        times.append((time.perf_counter() - start) / 500)
    return 2 * 256**3 / sorted(times)[2] / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    flow = flowfit.RealNVP(2)
    flow.initialize(datasets.moons(10_000, seed=2))
    optimizer = adam(flow.parameters(), 1e-3, torch.device("cpu"))
    batch = datasets.moons(256, seed=1)

    def step() -> None:
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = (time.perf_counter() - start) / args.steps * 1000
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        profiled = (time.perf_counter() - start) / args.steps * 1000
    parts = {"256-wide matrix products": 0.0, "skinny matrix products": 0.0, "Adam (fused)": 0.0}
    counts = dict.fromkeys(parts, 0)
    for event in prof.events():
        if event.name in ("aten::mm", "aten::addmm"):
            shapes = [s for s in event.input_shapes if len(s) == 2]
            key = "256-wide matrix products" if all(min(s) >= 64 for s in shapes) else "skinny matrix products"
            parts[key] += event.self_cpu_time_total
            counts[key] += 1
        elif event.name.startswith("Optimizer.step"):
            parts["Adam (fused)"] += event.cpu_time_total
            counts["Adam (fused)"] += 1
    per_step = {k: v / args.steps / 1000 for k, v in parts.items()}
    rows = [
        f"flowfit RealNVP 6 x (2x256), batch 256, {args.threads} threads, torch {torch.__version__}: "
        f"{wall:.2f} ms per step ({profiled:.2f} ms under the profiler); a lone 256 x 256 x 256 product runs at "
        f"{lone_product_rate():.0f} GFLOP/s. Shares are of the unprofiled step; the profiler's own overhead "
        "is left out of 'everything else'.",
        "",
        "| part of a step | calls per step | ms per step | share |",
        "|---|---:|---:|---:|",
    ]
    for key, ms in per_step.items():
        rows.append(f"| {key} | {counts[key] // args.steps} | {ms:.2f} | {ms / wall:.0%} |")
    rest = max(wall - sum(per_step.values()), 0.0)
    rows.append(f"| everything else (element-wise, autograd, Python) | | {rest:.2f} | {rest / wall:.0%} |")
    print("\n".join(rows))
    if args.out:
        write_text(args.out, "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
