"""Every flow family on the six 2-D toys: parameters, test NLL, training time, throughput.

For each ``--flow`` name and toy it trains with the ``flowfit train`` defaults of that family
(``--steps`` overrides the number of steps for a quicker grid), on fresh batches, seed 0, then
measures the test NLL on 100,000 fresh points (seed 12345), and the log_prob and sampling
throughput on 100,000 points (inference mode, median of 3). Prints a Markdown table and, with
``--figure``, draws the family x data grid of density heat maps.

    .venv/bin/python benchmarks/families.py --threads 1 --steps 2000 \\
        --out benchmarks/results/families.md --figure docs/families.png
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import flowfit
from flowfit import datasets
from flowfit.families import FAMILIES
from flowfit.files import atomic_path, write_text
from flowfit.sources import TEST_SEED, TEST_SIZE, VAL_SEED
from flowfit.train import nll
from flowfit.viz import bounds_of, density_grid


def throughput(function, repeats: int = 3) -> float:
    """Points per second of ``function()`` on TEST_SIZE points, median of ``repeats``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return TEST_SIZE / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", nargs="+", default=[f for f in FAMILIES if f != "cnf"])  # cnf: continuous.py
    parser.add_argument("--data", nargs="+", default=list(datasets.TOYS))
    parser.add_argument("--steps", type=int, help="override every family's default number of steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    header = "| flow | data | params | steps | test NLL (nats) | train s | log_prob pts/s | sample pts/s |"
    rows = [header, "|---|---|---:|---:|---|---:|---:|---:|"]
    print("\n".join(rows), flush=True)
    maps: dict[tuple[str, str], tuple] = {}
    floors = {}
    for data in args.data:
        toy = datasets.TOYS[data]
        test = toy(TEST_SIZE, seed=TEST_SEED)
        val = toy(10_000, seed=VAL_SEED)
        bounds = bounds_of(test, pad=0.1, quantile=0.002)
        if data == "moons":
            floors[data] = -datasets.moons_log_prob(test).mean().item()
        for name in args.flows:
            defaults = FAMILIES[name].cls.defaults_for("mle")[1]
            steps = args.steps or defaults["steps"]
            torch.manual_seed(0)
            flow = FAMILIES[name].build(2)
            result = flowfit.fit(
                flow,
                lambda n, toy=toy: toy(n),
                steps=steps,
                batch_size=defaults["batch_size"],
                lr=defaults["lr"],
                seed=0,
                val_data=val,
                progress=False,
            )
            mean, stderr = nll(flow, test)
            with torch.inference_mode():
                log_prob_rate = throughput(lambda flow=flow, test=test: flow.log_prob(test))
                sample_rate = throughput(lambda flow=flow: flow.sample(TEST_SIZE))
            params = sum(p.numel() for p in flow.parameters())
            rows.append(
                f"| {name} | {data} | {params:,} | {steps} | {mean:.4f} ± {stderr:.4f} | "
                f"{result.seconds:.0f} | {log_prob_rate:,.0f} | {sample_rate:,.0f} |"
            )
            print(rows[-1], flush=True)
            maps[name, data] = (density_grid(flow, bounds, 150), bounds)

    notes = [
        "",
        f"Fresh batches each step, seed 0, flowfit train defaults per family"
        f"{f' except {args.steps} steps' if args.steps else ''}; test NLL on {TEST_SIZE:,} fresh points "
        f"(seed {TEST_SEED}); throughput on {TEST_SIZE:,} points, median of 3; torch {torch.__version__}, "
        f"{args.threads} thread(s).",
    ]
    if floors:
        notes.append(f"Two-moons entropy floor on the same test points: {floors['moons']:.4f} nats.")
    table = "\n".join(rows + notes)
    print("\n".join(notes))
    if args.out:
        write_text(args.out, table + "\n")
    if args.figure:
        draw_grid(maps, args.flows, args.data, args.figure)


def draw_grid(maps: dict, flows: list[str], data: list[str], path: Path) -> None:
    fig, axes = plt.subplots(len(flows), len(data), figsize=(2.0 * len(data), 2.0 * len(flows)), squeeze=False)
    for i, name in enumerate(flows):
        for j, toy in enumerate(data):
            ax = axes[i, j]
            (_, _, log_p), bounds = maps[name, toy]
            ax.imshow(np.exp(log_p), origin="lower", extent=bounds, cmap="magma", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(toy, fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=70, format="png")


if __name__ == "__main__":
    main()
