"""flowfit against nflows, normflows and zuko on two moons, side by side in one process.

The peers are installed into their own environment, ``benchmarks/.peers-venv`` (ignored by
git; never a dependency of flowfit): this script creates it on first use (torch==2.13.0 from
pip, flowfit itself, editable, and the three libraries at the versions of
``../shared/reference/peers-two-moons.md``; ``fm_peers.py`` adds the flow-matching libraries to
the same environment) and then re-runs itself there.

Models, built with each library's own API: RealNVP with 6 affine couplings of MLP 2x256
(alternating halves) and NSF with 4 rational-quadratic coupling transforms, 8 bins, MLP 2x128,
tail bound 4. Measured, round-robin over the libraries so that machine noise hits all alike,
median of ``--rounds``:

- ms per training step: a plain step (log_prob of 256 points, backward, Adam at 1e-3: for
  flowfit its trainer's fused Adam, for the peers ``torch.optim.Adam``, what their users call;
  flowfit's step with ``torch.optim.Adam`` is reported too);
- log_prob and sampling throughput on 100,000 points without gradients;
- this machine's float32 matrix-multiply rate (a 2048 x 2048 ``torch.mm``) and each library's
  achieved rate in log_prob, as a fraction of it (the RealNVP's multiply-adds per point are the
  same for every library);
- with ``--train``: test NLL on 100,000 points after 5,000 Adam steps at 1e-3, batch 256
  (mean of ``--seeds``), the protocol of the reference table, which is also each peer's
  default way to train (none of them has a training loop of its own); the wall time each
  takes to reach 0.35 nats that way; and the time flowfit takes with its own defaults (the
  ``flowfit train`` settings of the family, validation and all).

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
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "benchmarks" / ".peers-venv"
PEERS = ["nflows==0.14", "normflows==1.7.3", "zuko==1.6.0"]
POINTS = 100_000


def ensure_environment(
    script: str = __file__, packages: Sequence[str] = PEERS, no_deps: Sequence[str] = (), deps: Sequence[str] = ()
) -> None:
    """Create the peers' environment if needed, install what it lacks of ``packages`` (and of
    ``no_deps``, without their requirements, then ``deps``), and re-run ``script`` inside it.

    torch goes in first, as exactly ``torch==2.13.0`` (the CPU wheel), so that nothing installed
    after it pulls another build; ``no_deps`` is for libraries whose requirements would."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "-e", str(ROOT)], check=True)
    if missing := absent(python, packages):
        subprocess.run([*pip, *missing], check=True)
    if missing := absent(python, no_deps):
        subprocess.run([*pip, "--no-deps", *missing], check=True)
        subprocess.run([*pip, *deps], check=True)
    os.execv(str(python), [str(python), script, *sys.argv[1:]])


def absent(python: Path, requirements: Sequence[str]) -> list[str]:
    """The ``name==version`` requirements not installed at that version in ``python``'s environment."""
    check = (
        "import importlib.metadata as m, sys\n"
        "for r in sys.argv[1:]:\n"
        "    name, version = r.split('==')\n"
        "    try:\n"
        "        ok = m.version(name) == version\n"
        "    except m.PackageNotFoundError:\n"
        "        ok = False\n"
        "    if not ok:\n"
        "        print(r)\n"
    )
    if not requirements:
        return []
    result = subprocess.run([str(python), "-c", check, *requirements], check=True, capture_output=True, text=True)
    return result.stdout.split()


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


TARGET = 0.35  # nats: the race's finish line
CHECK_POINTS = 20_000  # test points scored at each check of the race (the final NLL uses all)


class Reached(Exception):  # noqa: N818 (a signal, not an error)
    """Stops a flowfit run once it has crossed the finish line."""


def protocol_run(library: str, model: str, seed: int, test, steps: int = 5000, check_every: int = 250):
    """The reference protocol: Adam at 1e-3, fresh batches of 256, ``steps`` steps. Returns
    the test NLL at the end, the training seconds, and the training seconds at the first check
    (every ``check_every`` steps, clock paused) with a test NLL at most TARGET (None: never)."""
    import torch

    torch.manual_seed(seed)
    module, log_prob, _ = build(library, model)
    if library == "flowfit":
        module.initialize(moons(10_000, seed=2))
    adam = optimizer(library, module)
    clock, reached = 0.0, None
    for step in range(1, steps + 1):
        start = time.perf_counter()
        loss = -log_prob(moons(256)).mean()
        adam.zero_grad()
        loss.backward()
        adam.step()
        clock += time.perf_counter() - start
        if reached is None and step % check_every == 0 and test_nll(log_prob, test[:CHECK_POINTS]) <= TARGET:
            reached = clock
    return test_nll(log_prob, test), clock, reached


def defaults_run(model: str, seed: int, test) -> float | None:
    """flowfit with its own defaults (``flowfit train --flow MODEL``: flowfit.fit with the
    family's training defaults, validation included): seconds of training until the test NLL,
    checked at each of its validations (clock paused), is at most TARGET."""
    import torch

    import flowfit
    from flowfit.families import FAMILIES

    torch.manual_seed(seed)
    flow = FAMILIES[model].build(2)
    paused, reached = 0.0, None
    start = time.perf_counter()

    def check(step: int, flow) -> None:
        nonlocal paused, reached
        now = time.perf_counter()
        if test_nll(flow.log_prob, test[:CHECK_POINTS]) <= TARGET:
            reached = now - start - paused
            raise Reached
        paused += time.perf_counter() - now

    try:
        flowfit.fit(flow, lambda n: moons(n), seed=seed, callback=check, progress=False, **flow.defaults_for()[1])
    except Reached:
        pass
    return reached


def test_nll(log_prob, points) -> float:
    import torch

    with torch.no_grad():
        return -torch.cat([log_prob(c) for c in points.split(10_000)]).mean().item()


def race(libraries: list[str], seeds: list[int], test) -> list[str]:
    """Test NLL after the reference protocol, and the wall time to TARGET nats, per library."""
    rows = [
        "",
        f"Training (`--train`): the reference protocol, 5,000 Adam steps at 1e-3 on fresh batches of 256, seeds "
        f"{', '.join(map(str, seeds))}; test NLL on 100,000 points; time to {TARGET} nats = training seconds until "
        f"the NLL on {CHECK_POINTS:,} test points, checked every 250 steps (clock paused), is at most {TARGET}.",
        "",
        "| library | model | test NLL after 5,000 steps (mean ± sd) | per seed | train s (median) "
        f"| s to {TARGET} nats (median; per seed) |",
        "|---|---|---|---|---:|---|",
    ]
    reached: dict[tuple[str, str], list[float]] = {}
    for model in ("realnvp", "nsf"):
        for library in libraries:
            runs = [protocol_run(library, model, seed, test) for seed in seeds]
            values = [v for v, _, _ in runs]
            times = [math.inf if r is None else r for _, _, r in runs]
            reached[library, model] = times
            spread = statistics.stdev(values) if len(values) > 1 else math.nan
            rows.append(
                f"| {library} | {model} | {statistics.mean(values):.4f} ± {spread:.4f} "
                f"| {' / '.join(f'{v:.4f}' for v in values)} | {statistics.median(c for _, c, _ in runs):.0f} "
                f"| {seconds(statistics.median(times))}; {' / '.join(seconds(t) for t in times)} |"
            )
            print(rows[-1], flush=True)
        times = [math.inf if (r := defaults_run(model, seed, test)) is None else r for seed in seeds]
        reached["flowfit defaults", model] = times
        rows.append(
            f"| flowfit, its defaults | {model} | | | | {seconds(statistics.median(times))}; "
            f"{' / '.join(seconds(t) for t in times)} |"
        )
        print(rows[-1], flush=True)
    rows.append("")
    for model in ("realnvp", "nsf"):
        ours = statistics.median(reached["flowfit defaults", model])
        ratios = ", ".join(
            f"{library} {ratio(statistics.median(reached[library, model]), ours)}" for library in libraries[1:]
        )
        rows.append(f"{model}: time to {TARGET} nats, each peer's median over flowfit's defaults' median: {ratios}.")
    return rows


def ratio(theirs: float, ours: float) -> str:
    if math.isinf(theirs):
        return "never reached (flowfit did)" if math.isfinite(ours) else "neither reached"
    return f"{theirs / ours:.1f}x"


def seconds(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:.0f}"


def optimizer(library: str, module):
    """Adam at 1e-3 as each library's user gets it: flowfit's trainer uses the fused kernel
    (:func:`flowfit.train.adam`), the peers have no trainer, so their users call
    ``torch.optim.Adam`` with its defaults."""
    import torch

    if library == "flowfit":
        from flowfit.train import adam

        return adam(module.parameters(), 1e-3, torch.device("cpu"))
    return torch.optim.Adam(module.parameters(), lr=1e-3)


def speed_table(libraries: list[str], rounds: int, threads: int, test) -> list[str]:
    """ms per training step, log_prob and sampling throughput: median of ``rounds`` rounds."""
    import torch

    models = {(lib, m): build(lib, m) for m in ("realnvp", "nsf") for lib in libraries}
    batch = moons(256, seed=1)
    optimizers = {key: optimizer(key[0], module) for key, (module, _, _) in models.items()}
    # flowfit's step once more with torch.optim.Adam's default implementation, to show what
    # the fused Adam of its trainer buys
    plain = {key: torch.optim.Adam(models[key][0].parameters(), lr=1e-3) for key in models if key[0] == "flowfit"}
    for (lib, _), (module, _, _) in models.items():  # fit flowfit's standardization as fit() would
        if lib == "flowfit":
            module.initialize(moons(10_000, seed=2))
    timings: dict[tuple[str, str], dict[str, list[float]]] = {
        k: {"step": [], "log_prob": [], "sample": [], "plain_step": []} for k in models
    }
    for _ in range(rounds):
        for key, (_, log_prob, sample) in models.items():

            def step(log_prob=log_prob, optimizer=optimizers[key]) -> None:
                loss = -log_prob(batch).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            step()
            timings[key]["step"].append(median_time(step, 25) * 1000)
            if key in plain:
                step(optimizer=plain[key])
                timings[key]["plain_step"].append(median_time(lambda k=key: step(optimizer=plain[k]), 25) * 1000)
            with torch.inference_mode() if key[0] == "flowfit" else torch.no_grad():
                timings[key]["log_prob"].append(POINTS / median_time(lambda lp=log_prob: lp(test)))
                timings[key]["sample"].append(POINTS / median_time(lambda s=sample: s(POINTS)))
    peak = matmul_rate()
    rows = [
        f"Two moons (noise 0.05); torch {torch.__version__}, {threads} threads; median of {rounds} rounds, "
        f"round-robin. This machine's float32 matrix product: {peak:.0f} GFLOP/s.",
        "",
        "| library | model | params | ms/step (batch 256) | log_prob pts/s | sample pts/s "
        "| log_prob GFLOP/s (share of peak) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (lib, model), (module, _, _) in models.items():
        t = {k: statistics.median(v) for k, v in timings[lib, model].items() if v}
        params = sum(p.numel() for p in module.parameters())
        rate = ""
        if model == "realnvp":
            gflops = t["log_prob"] * realnvp_flops_per_point() / 1e9
            rate = f"{gflops:.1f} ({gflops / peak:.0%})"
        rows.append(
            f"| {lib} | {model} | {params:,} | {t['step']:.2f} | {t['log_prob']:,.0f} | {t['sample']:,.0f} | {rate} |"
        )
    for model in ("realnvp", "nsf"):
        ours = {k: statistics.median(v) for k, v in timings["flowfit", model].items() if v}
        peers = [{k: statistics.median(v) for k, v in timings[lib, model].items() if v} for lib in libraries[1:]]
        rows.append("")
        rows.append(
            f"{model}: flowfit's step with torch.optim.Adam's default (for-loop) implementation instead of its "
            f"trainer's fused Adam: {ours['plain_step']:.2f} ms "
            f"({ours['plain_step'] / min(p['step'] for p in peers):.2f}x the fastest peer's)."
        )
        rows.append(
            f"{model}: flowfit's step takes {ours['step'] / min(p['step'] for p in peers):.2f}x the fastest peer's; "
            f"log_prob {ours['log_prob'] / max(p['log_prob'] for p in peers):.2f}x and sampling "
            f"{ours['sample'] / max(p['sample'] for p in peers):.2f}x the fastest peer's throughput."
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (0: race only, with --train)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="also race: 5,000 steps per seed and library")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ensure_environment()
    import torch

    from flowfit.files import write_text

    torch.set_num_threads(args.threads)
    libraries = ["flowfit", "nflows", "normflows", "zuko"]
    test = moons(POINTS, seed=12345)
    rows = speed_table(libraries, args.rounds, args.threads, test) if args.rounds else []
    if args.train:
        rows += race(libraries, args.seeds, test)
    table = "\n".join(rows)
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
