"""What glibc's allocator settings cost: log_prob, sampling and a training step, each in a
fresh process with glibc's defaults and with :func:`flowfit.allocator.keep_freed_memory`
(what the ``flowfit`` command sets), alternating, and the page faults each process took.

Each process builds one model (RealNVP or NSF, default sizes, random weights), as a
``flowfit density`` or ``sample`` process does, scores and samples 100,000 points (5 times
each; the median) and takes 5 x 20 training steps of 256 points with Adam. (A process that
has already run a larger model behaves differently: glibc's thresholds adapt to the blocks it
has freed, so each model gets a fresh process.) Prints a Markdown table of the medians over
``--rounds`` processes of each kind.

    .venv/bin/python benchmarks/allocator.py --rounds 5 --out benchmarks/results/allocator.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from flowfit.files import write_text

POINTS, STEPS, BATCH = 100_000, 20, 256

CHILD = (
    """
import json, resource, statistics, sys, time
import torch, flowfit
from flowfit import datasets
from flowfit.allocator import keep_freed_memory
torch.set_num_threads(2)
if sys.argv[1] == "kept":
    keep_freed_memory()
x, batch = datasets.moons(POINTS, seed=1), datasets.moons(BATCH, seed=2)
results = {}
name = sys.argv[2]
for flow in [flowfit.RealNVP(2) if name == "realnvp" else flowfit.NSF(2)]:
    torch.manual_seed(0)
    for p in flow.parameters():
        torch.nn.init.normal_(p, std=0.05)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-6)
    def median_seconds(work, repeats=5):
        work()
        times = []
        for _ in range(repeats):
            start = time.perf_counter(); work(); times.append(time.perf_counter() - start)
        return statistics.median(times)
    def steps():
        for _ in range(STEPS):
            optimizer.zero_grad(); (-flow.log_prob(batch).mean()).backward(); optimizer.step()
    with torch.inference_mode():
        results[name + " log_prob"] = POINTS / median_seconds(lambda: flow.log_prob(x))
        results[name + " sample"] = POINTS / median_seconds(lambda: flow.sample(POINTS))
    results[name + " step ms"] = median_seconds(steps) / STEPS * 1e3
results[name + " page faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps(results))
""".replace("POINTS", str(POINTS))
    .replace("STEPS", str(STEPS))
    .replace("BATCH", str(BATCH))
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"default": [], "kept": []}
    for _ in range(args.rounds):
        measured: dict[str, dict[str, float]] = {"default": {}, "kept": {}}
        for model in ("realnvp", "nsf"):
            for kind in runs:
                command = [sys.executable, "-c", CHILD, kind, model]
                output = subprocess.run(command, check=True, capture_output=True, text=True)
                measured[kind] |= json.loads(output.stdout.splitlines()[-1])
        for kind in runs:
            runs[kind].append(measured[kind])
    keys = list(runs["default"][0])
    lines = [
        f"A fresh process per model and setting, {args.rounds} of each alternating; medians. Throughput in points/s "
        f"on {POINTS:,} points; a step is log_prob of {BATCH} points, backward and Adam.",
        "",
        "| | glibc defaults | keep_freed_memory() | ratio |",
        "|---|---:|---:|---:|",
    ]
    for key in keys:
        default, kept = (statistics.median(run[key] for run in runs[kind]) for kind in ("default", "kept"))
        digits = 2 if "ms" in key else 0
        lines.append(f"| {key} | {default:,.{digits}f} | {kept:,.{digits}f} | {kept / default:.2f} |")
    print("\n".join(lines))
    if args.out:
        write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
