"""Do coupling flows let every pair of columns meet? Three layouts of the same couplings,
measured on tables whose exact density is known.

With contiguous halves and nothing between couplings (flowfit before issue 10), two columns
in the same half only ever see each other through the other half. The tables here put a
nonlinear dependence exactly there: independent two-moons pairs side by side, columns
``(m1x, m1y, m2x, m2y, ...)``, so each pair sits in one half. Their entropy is exact (twice,
three times, ... the moons entropy, from ``datasets.moons_log_prob`` on the same test points),
and a model's test NLL minus it is its KL divergence from the truth.

Layouts (each a hand-composed ``flowfit.Flow`` of the family's own couplings):

- ``contiguous``: the same two halves every layer, alternating which one moves (before);
- ``random``: a fixed random permutation between couplings (as in the NSF paper);
- ``lu``: a learnt LU-decomposed linear map between couplings (Glow's, also in the NSF paper);
- ``bits``: coupling ``i`` splits the columns by bit ``i mod B`` of their number (``B`` bits
  number them), a fixed permutation before it bringing each part together: any two columns
  differ in some bit, so every pair is split by some coupling. This is the family itself,
  flowfit's default from 3-D on.

And the real-data table (SaratogaHouses, ten numeric columns, the split and preprocessing of
``flowfit train --data saratoga``): held-out NLL, no floor known.

    .venv/bin/python benchmarks/mixing.py --out benchmarks/results/mixing.md
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import torch

import flowfit
from flowfit import datasets, sources
from flowfit.families import FAMILIES
from flowfit.files import write_text
from flowfit.train import nll
from flowfit.transforms import (
    AffineCoupling,
    ColumnMaps,
    LULinear,
    RandomPermutation,
    SplineCoupling,
    Standardize,
    Transform,
)

LAYOUTS = ("contiguous", "random", "lu", "bits")


def moons_pairs(pairs: int) -> callable:
    """``n -> (n, 2 * pairs)`` rows of independent two-moons pairs side by side."""

    def draw(n: int, seed: int | None = None) -> torch.Tensor:
        generator_seeds = [None if seed is None else seed + 1000 * k for k in range(pairs)]
        return torch.cat([datasets.moons(n, seed=s) for s in generator_seeds], dim=1)

    return draw


def build(family: str, layout: str, dim: int, preprocess: list | None = None) -> flowfit.Flow:
    """The family's default couplings (and data-side layers) in one of the layouts; ``bits``
    is the family as flowfit builds it."""
    defaults = FAMILIES[family].defaults()
    family_flow = FAMILIES[family].build(dim, preprocess=preprocess or ())
    if layout == "bits":
        return family_flow
    count = sum(isinstance(layer, AffineCoupling | SplineCoupling) for layer in family_flow.layers)
    coupling = SplineCoupling if family == "nsf" else AffineCoupling
    layers: list[Transform] = []
    for i in range(count):
        if layout == "random" and i:
            layers.append(RandomPermutation(dim, seed=i))
        if layout == "lu" and i:
            layers.append(LULinear(dim, seed=i))
        layers.append(coupling(dim, bool(i % 2), **_coupling_arguments(family, defaults)))
    data_side = [layer for layer in family_flow.layers if isinstance(layer, Standardize | ColumnMaps)]
    return flowfit.Flow([*layers, *data_side], dim, dequantize_steps=family_flow.dequantize_steps)


def _coupling_arguments(family: str, defaults: dict) -> dict:
    if family == "nsf":
        return {"hidden": defaults["hidden"], "bins": defaults["bins"], "tail_bound": defaults["tail_bound"]}
    return {"hidden": defaults["hidden"], "scale_bound": defaults["scale_bound"]}


def train(flow: flowfit.Flow, family: str, data, val, steps: int) -> float:
    """Seconds to train ``flow`` with the family's default batch and learning rate."""
    defaults = FAMILIES[family].cls.defaults_for()[1]
    start = time.perf_counter()
    flowfit.fit(
        flow, data, steps=steps, batch_size=defaults["batch_size"], lr=defaults["lr"], val_data=val, progress=False
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[2, 4], help="moons pairs per table (2: 4 columns)")
    parser.add_argument("--families", nargs="+", default=["nsf", "realnvp"])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS))
    parser.add_argument("--saratoga", nargs="*", default=["nsf"], help="families to run on SaratogaHouses")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--test-size", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = ["| table | family | layout | test NLL (nats) | KL from the truth (nats) | train s |"]
    rows.append("|---|---|---|---:|---:|---:|")
    print("\n".join(rows), flush=True)
    for pairs in args.pairs:
        draw = moons_pairs(pairs)
        test = draw(args.test_size, seed=sources.TEST_SEED)
        entropy = -sum(datasets.moons_log_prob(test[:, 2 * k : 2 * k + 2]) for k in range(pairs)).mean().item()
        val = draw(10_000, seed=sources.VAL_SEED)
        for family in args.families:
            for layout in args.layouts:
                results = []
                for seed in args.seeds:
                    torch.manual_seed(seed)
                    flow = build(family, layout, 2 * pairs)
                    seconds = train(flow, family, lambda n, draw=draw: draw(n), val, args.steps)
                    results.append((nll(flow, test)[0], seconds))
                mean = sum(r[0] for r in results) / len(results)
                seconds = sum(r[1] for r in results) / len(results)
                rows.append(
                    f"| moons x{pairs} ({2 * pairs} columns, entropy {entropy:.3f}) | {family} | {layout} "
                    f"| {mean:.4f} | {mean - entropy:.4f} | {seconds:.0f} |"
                )
                print(rows[-1], flush=True)
    data = sources.resolve("saratoga", seed=0)
    plans = [asdict(plan) for plan in data.plans]
    for family in args.saratoga:
        for layout in args.layouts:
            results = []
            for seed in args.seeds:
                torch.manual_seed(seed)
                flow = build(family, layout, data.dim, plans)
                seconds = train(flow, family, data.train[0], data.val[0], args.steps)
                results.append((nll(flow, data.test[0])[0], seconds))
            mean = sum(r[0] for r in results) / len(results)
            seconds = sum(r[1] for r in results) / len(results)
            rows.append(f"| saratoga (10 columns, held-out) | {family} | {layout} | {mean:.4f} | | {seconds:.0f} |")
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    note = (
        f"\n\n{args.steps} steps at each family's default batch and learning rate; seeds {args.seeds} (mean); "
        f"test NLL on {args.test_size:,} fresh points (moons) or the 10% test split (saratoga, "
        f"{len(data.test[0])} rows); torch {torch.__version__}, {args.threads} threads."
    )
    if args.out:
        write_text(args.out, table + note + "\n")


if __name__ == "__main__":
    main()
