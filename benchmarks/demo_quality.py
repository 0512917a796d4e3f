"""Quality of the default demo against the tutorial's recipe, on two moons (noise 0.05).

For each seed it runs

- the demo, exactly as ``make demo`` does (``flowfit train --data moons --flow realnvp
  --layers 6`` with the CLI defaults), in a subprocess, timing the whole command; and
- the tutorial's recipe: the same 6 affine couplings (MLP 2x256), Adam at 1e-4 with a constant
  learning rate, 10,000 steps of 128 fresh points,

and scores both on the same 100,000 fresh test points (seed 12345), next to the entropy floor
(the true density's NLL on those points). Prints a Markdown table; ``--out FILE`` also writes it.

    .venv/bin/python benchmarks/demo_quality.py --seeds 0 1 2 --out benchmarks/results/demo_quality.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import flowfit
from flowfit import datasets
from flowfit.files import write_text
from flowfit.sources import TEST_SEED, TEST_SIZE
from flowfit.train import nll


def run_demo(seed: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [
            sys.executable,
            "-m",
            "flowfit",
            "train",
            "--data",
            "moons",
            "--flow",
            "realnvp",
            "--layers",
            "6",
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--no-progress",
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - start
        metrics = json.loads((out / "metrics.json").read_text())
    return metrics["test_nll"], metrics["test_nll_stderr"], wall


def run_tutorial(seed: int, test: torch.Tensor) -> tuple[float, float, float]:
    torch.manual_seed(seed)
    flow = flowfit.RealNVP(2, layers=6, hidden=(256, 256))
    start = time.perf_counter()
    flowfit.fit(
        flow,
        lambda n: datasets.moons(n),
        steps=10_000,
        batch_size=128,
        lr=1e-4,
        schedule="constant",
        seed=seed,
        progress=False,
    )
    wall = time.perf_counter() - start
    mean, stderr = nll(flow, test)
    return mean, stderr, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip-tutorial", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    test = datasets.moons(TEST_SIZE, seed=TEST_SEED)
    floor = -datasets.moons_log_prob(test).mean().item()
    rows, results = [], {"demo (make demo)": [], "tutorial recipe": []}
    for seed in args.seeds:
        for name, runner in (("demo (make demo)", run_demo), ("tutorial recipe", lambda s: run_tutorial(s, test))):
            if args.skip_tutorial and name == "tutorial recipe":
                continue
            mean, stderr, wall = runner(seed)
            results[name].append((mean, wall))
            rows.append(f"| {name} | {seed} | {mean:.4f} ± {stderr:.4f} | {mean - floor:+.4f} | {wall:.0f} |")
            print(rows[-1], flush=True)
    lines = [
        f"Two moons (noise 0.05), test NLL on {TEST_SIZE:,} fresh points (seed {TEST_SEED}); "
        f"entropy floor on the same points {floor:.4f} nats. torch {torch.__version__}, 2 threads.",
        "",
        "| run | seed | test NLL (nats) | gap to floor | wall s |",
        "|---|---:|---|---:|---:|",
        *rows,
        "",
        "| run | median test NLL | median wall s |",
        "|---|---:|---:|",
    ]
    for name, values in results.items():
        if values:
            lines.append(
                f"| {name} | {statistics.median(v[0] for v in values):.4f} | "
                f"{statistics.median(v[1] for v in values):.0f} |"
            )
    table = "\n".join(lines)
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
