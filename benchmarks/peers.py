"""flowfit against nflows, normflows and zuko on two moons, side by side in one process.

The peers are installed into their own environment, ``benchmarks/.peers-venv`` (ignored by
git; never a dependency of flowfit): this script creates it on first use (torch==2.13.0 from
pip, the three libraries at the versions of ``../shared/reference/peers-two-moons.md``, and
flowfit itself, editable) and then re-runs itself there.

Models, built with each library's own API: RealNVP with 6 affine couplings of MLP 2x256
(alternating halves) and NSF with 4 rational-quadratic coupling transforms, 8 bins, MLP 2x128,
tail bound 4. Measured, round-robin over the libraries so that machine noise hits all alike,
median of ``--rounds``:

- ms per training step: a plain step (log_prob of 256 fresh points, backward, Adam);
- log_prob and sampling throughput on 100,000 points without gradients;
- this machine's float32 matrix-multiply rate (a 2048 x 2048 ``torch.mm``) and each library's
  achieved rate in log_prob, as a fraction of it (the RealNVP's multiply-adds per point are the
  same for every library);
- with ``--train``: test NLL on 100,000 points after 5,000 Adam steps at 1e-3, batch 256
  (mean of ``--seeds``), the protocol of the reference table.

    .venv/bin/python benchmarks/peers.py --rounds 7 --out benchmarks/results/peers.md
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "benchmarks" / ".peers-venv"
PEERS = ["nflows==0.14", "normflows==1.7.3", "zuko==1.6.0"]
POINTS = 100_000


def ensure_environment() -> None:
    """Create the peers' environment if needed and re-run this script inside it."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, *PEERS], check=True)
        subprocess.run([*pip, "-e", str(ROOT)], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


# -- the models, each with its library's own API ------------------------------------------
def build(library: str, model: str):
    """Return ``(module, log_prob(x), sample(n))`` for one library and model."""
    import torch
    from torch import nn

    if library == "flowfit":
        import flowfit

        flow = flowfit.RealNVP(2) if model == "realnvp" else flowfit.NSF(2)
        return flow, flow.log_prob, flow.sample
    if library == "nflows":
        from nflows.distributions import StandardNormal
        from nflows.flows import Flow
        from nflows.transforms import (
            AffineCouplingTransform,
            CompositeTransform,
            PiecewiseRationalQuadraticCouplingTransform,
        )

        width = 256 if model == "realnvp" else 128

        class Net(nn.Sequential):  # nflows passes (inputs, context) to its conditioners
            def forward(self, inputs, context=None):
                return super().forward(inputs)

        def net(features_in: int, features_out: int) -> nn.Module:
            return Net(
                nn.Linear(features_in, width),
                nn.ReLU(),
                nn.Linear(width, width),
                nn.ReLU(),
                nn.Linear(width, features_out),
            )

        layers = []
        for i in range(6 if model == "realnvp" else 4):
            mask = torch.tensor([1, 0] if i % 2 else [0, 1])
            if model == "realnvp":
                layers.append(AffineCouplingTransform(mask, net))
            else:
                layers.append(
                    PiecewiseRationalQuadraticCouplingTransform(mask, net, num_bins=8, tails="linear", tail_bound=4.0)
                )
        flow = Flow(CompositeTransform(layers), StandardNormal([2]))
        return flow, flow.log_prob, flow.sample
    if library == "normflows":
        import normflows as nf

        flows = []
        for i in range(6 if model == "realnvp" else 4):
            if model == "realnvp":
                flows += [
                    nf.flows.AffineCouplingBlock(nf.nets.MLP([1, 256, 256, 2], init_zeros=True)),
                    nf.flows.Permute(2, mode="swap"),
                ]
            else:
                flows.append(
                    nf.flows.CoupledRationalQuadraticSpline(
                        2, 1, 128, num_bins=8, tail_bound=4.0, reverse_mask=bool(i % 2)
                    )
                )
        flow = nf.NormalizingFlow(nf.distributions.base.DiagGaussian(2, trainable=False), flows)
        return flow, flow.log_prob, lambda n: flow.sample(n)[0]
    import zuko

    if model == "realnvp":
        flow = zuko.flows.RealNVP(2, transforms=6, hidden_features=(256, 256))
    else:
        flow = zuko.flows.NSF(2, transforms=4, bins=8, hidden_features=(128, 128))
    return flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,))


def moons(n: int, seed: int | None = None):
    from flowfit import datasets

    return datasets.moons(n, seed=seed)


def median_time(function: Callable[[], object], repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def matmul_rate() -> float:
    """float32 GFLOP/s of a 2048 x 2048 matrix product on this machine (best of 5)."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = min(median_time(lambda: torch.mm(a, b), 3) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def realnvp_flops_per_point() -> float:
    """Floating-point operations of one RealNVP 6 x (1 -> 256 -> 256 -> 2) log_prob per point."""
    return 2 * 6 * (1 * 256 + 256 * 256 + 256 * 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="also train 5,000 steps per seed for the test NLL")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ensure_environment()
    import torch

    from flowfit.io import write_text

    torch.set_num_threads(args.threads)
    libraries = ["flowfit", "nflows", "normflows", "zuko"]
    models = {(lib, m): build(lib, m) for m in ("realnvp", "nsf") for lib in libraries}
    batch = moons(256, seed=1)
    test = moons(POINTS, seed=12345)
    optimizers = {key: torch.optim.Adam(module.parameters(), lr=1e-3) for key, (module, _, _) in models.items()}
    for (lib, _), (module, _, _) in models.items():  # fit flowfit's standardization as fit() would
        if lib == "flowfit":
            module.initialize(moons(10_000, seed=2))
    timings: dict[tuple[str, str], dict[str, list[float]]] = {
        k: {"step": [], "log_prob": [], "sample": []} for k in models
    }
    for _ in range(args.rounds):
        for key, (module, log_prob, sample) in models.items():

            def step(module=module, log_prob=log_prob, optimizer=optimizers[key]) -> None:
                loss = -log_prob(batch).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            step()
            timings[key]["step"].append(median_time(step, 25) * 1000)
            with torch.inference_mode() if key[0] == "flowfit" else torch.no_grad():
                timings[key]["log_prob"].append(POINTS / median_time(lambda lp=log_prob: lp(test)))
                timings[key]["sample"].append(POINTS / median_time(lambda s=sample: s(POINTS)))
    peak = matmul_rate()
    rows = [
        f"Two moons (noise 0.05); torch {torch.__version__}, {args.threads} threads; median of {args.rounds} rounds, "
        f"round-robin. This machine's float32 matrix product: {peak:.0f} GFLOP/s.",
        "",
        "| library | model | params | ms/step (batch 256) | log_prob pts/s | sample pts/s "
        "| log_prob GFLOP/s (share of peak) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (lib, model), (module, _, _) in models.items():
        t = {k: statistics.median(v) for k, v in timings[lib, model].items()}
        params = sum(p.numel() for p in module.parameters())
        rate = ""
        if model == "realnvp":
            gflops = t["log_prob"] * realnvp_flops_per_point() / 1e9
            rate = f"{gflops:.1f} ({gflops / peak:.0%})"
        rows.append(
            f"| {lib} | {model} | {params:,} | {t['step']:.2f} | {t['log_prob']:,.0f} | {t['sample']:,.0f} | {rate} |"
        )
    for model in ("realnvp", "nsf"):
        ours = {k: statistics.median(v) for k, v in timings["flowfit", model].items()}
        peers = [{k: statistics.median(v) for k, v in timings[lib, model].items()} for lib in libraries[1:]]
        rows.append("")
        rows.append(
            f"{model}: flowfit's step takes {ours['step'] / min(p['step'] for p in peers):.2f}x the fastest peer's; "
            f"log_prob {ours['log_prob'] / max(p['log_prob'] for p in peers):.2f}x and sampling "
            f"{ours['sample'] / max(p['sample'] for p in peers):.2f}x the fastest peer's throughput."
        )
    if args.train:
        rows += ["", "| library | model | test NLL after 5,000 steps (mean ± sd over seeds) |", "|---|---|---|"]
        for lib, model in models:
            values = []
            for seed in args.seeds:
                torch.manual_seed(seed)
                module, log_prob, _ = build(lib, model)
                if lib == "flowfit":
                    module.initialize(moons(10_000, seed=2))
                optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
                for _ in range(5000):
                    loss = -log_prob(moons(256)).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                with torch.no_grad():
                    values.append(-torch.cat([log_prob(c) for c in test.split(10_000)]).mean().item())
            spread = statistics.stdev(values) if len(values) > 1 else math.nan
            rows.append(f"| {lib} | {model} | {statistics.mean(values):.4f} ± {spread:.4f} ({len(values)}) |")
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
