"""Milliseconds per training step of `flowfit.fit`, for one or more source trees side by side
(say the tree of an older commit, checked out with ``git worktree add``, against this one), so
that a change to the trainer is timed against what it replaced on the same machine, in one run.

Each round runs every tree once, in its own process, in turn: RealNVP 6 x (2x256) on two moons,
batches of 512, 400 steps after 20 of warm-up, one validation. The table gives each tree's
median over the rounds.

    git worktree add /tmp/before HEAD~5
    .venv/bin/python benchmarks/step_time.py --src /tmp/before/src src --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = """
import sys, time, torch
sys.path.insert(0, sys.argv[1])
import flowfit
from flowfit import datasets
torch.set_num_threads(int(sys.argv[2]))
data = lambda n: datasets.moons(n)
torch.manual_seed(0)
flowfit.fit(flowfit.RealNVP(2), data, steps=20, batch_size=512, lr=1e-3, seed=0, progress=False)
torch.manual_seed(0)
flow = flowfit.RealNVP(2)
start = time.perf_counter()
flowfit.fit(flow, data, steps=400, batch_size=512, lr=1e-3, seed=0, progress=False, val_every=400)
print((time.perf_counter() - start) / 400 * 1000)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", nargs="+", default=["src"], help="source trees (folders holding flowfit/)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {src: [] for src in args.src}
    for _ in range(args.rounds):
        for src in args.src:
            output = subprocess.run(
                [sys.executable, "-c", CHILD, src, str(args.threads)], capture_output=True, text=True, check=True
            )
            times[src].append(float(output.stdout.strip().splitlines()[-1]))
    print("| source tree | ms per step (median) | rounds |")
    print("|---|---:|---|")
    for src, values in times.items():
        print(f"| {src} | {statistics.median(values):.2f} | {' / '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
