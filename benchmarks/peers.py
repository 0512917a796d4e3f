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

- ms per training step: a plain step (log_prob of a batch of 256 points, or of each
  ``--batch``, backward, Adam at 1e-3: for flowfit its trainer's fused Adam, for the peers
  ``torch.optim.Adam``, what their users call; flowfit's step with ``torch.optim.Adam`` is
  reported too, so that the step compares the models themselves, and both again with flowfit's
  log_prob through ``torch.compile``, what ``--compile`` trains with); flowfit's networks compute
  in bfloat16 where its trainer's ``--mixed-precision auto`` would (RealNVP on a CPU with
  bfloat16 products), and its float32 step is reported too; each peer's step is timed once more
  under the same ``torch.autocast``, as its users could turn it on;
- log_prob and sampling throughput on 100,000 points without gradients;
- this machine's float32 matrix-multiply rate (a 2048 x 2048 ``torch.mm``) and each library's
  achieved rate in log_prob, as a fraction of it (the RealNVP's multiply-adds per point are the
  same for every library);
- with ``--train``: test NLL on 100,000 points after 5,000 Adam steps at 1e-3, batch 256
  (mean of ``--seeds``), the protocol of the reference table, which is also each peer's
  default way to train (none of them has a training loop of its own); the wall time each
  takes to reach 0.35 nats that way; and the time flowfit takes with its own defaults (the
  ``flowfit train`` settings of the family, validation and all). ``--steps`` and ``--batch``
  change the protocol's steps and batch size (one race per batch size).

``--device cuda`` puts every model, batch and test point on the GPU (timings wait for the
GPU: ``torch.cuda.synchronize`` before each clock reading); ``benchmarks/gpu.sh`` runs this
script there at batches 256 and 4096. ``--here`` runs in the current interpreter with the
libraries installed in it, instead of ``benchmarks/.peers-venv``.

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
LIBRARIES = ["flowfit", "nflows", "normflows", "zuko"]
POINTS = 100_000


def ensure_environment(
    script: str = __file__, packages: Sequence[str] = PEERS, no_deps: Sequence[str] = (), deps: Sequence[str] = ()
) -> None:
    """Create the peers' environment if needed, install what it lacks of ``packages`` (and of
    ``no_deps``, without their requirements, then ``deps``), and re-run ``script`` inside it.

    torch goes in first, as exactly ``torch==2.13.0`` (the CPU wheel), so that nothing installed
    after it pulls another build; ``no_deps`` is for libraries whose requirements would. pip
    reads ``PIP_FIND_LINKS`` and ``PIP_NO_INDEX``: a machine without network installs from wheels."""
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


def synchronize(device) -> None:
    """Wait for the work queued on ``device`` (a GPU runs asynchronously; a CPU does not)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(function: Callable[[], object], repeats: int = 1, device=None) -> float:
    """Mean seconds of ``repeats`` calls of ``function`` (queued GPU work included)."""
    if device is not None:
        synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    if device is not None:
        synchronize(device)
    return (time.perf_counter() - start) / repeats


def matmul_rate(device) -> float:
    """float32 GFLOP/s of a square matrix product on ``device`` (2048 wide on a CPU, 8192 on
    a GPU, which 2048 would not fill; best of 5)."""
    import torch

    size = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    torch.mm(a, b)
    best = min(median_time(lambda: torch.mm(a, b), 3, device) for _ in range(5))
    return 2 * size**3 / best / 1e9


def realnvp_flops_per_point() -> float:
    """Floating-point operations of one RealNVP 6 x (1 -> 256 -> 256 -> 2) log_prob per point."""
    return 2 * 6 * (1 * 256 + 256 * 256 + 256 * 2)


TARGET = 0.35  # nats: the race's finish line
CHECK_POINTS = 20_000  # test points scored at each check of the race (the final NLL uses all)


class Reached(Exception):  # noqa: N818 (a signal, not an error)
    """Stops a flowfit run once it has crossed the finish line."""


def protocol_run(
    library: str, model: str, seed: int, test, device, batch: int = 256, steps: int = 5000, check_every: int = 250
):
    """The reference protocol: Adam at 1e-3, fresh batches of ``batch`` (256 in the reference),
    ``steps`` steps. Returns the test NLL at the end, the training seconds, and the training
    seconds at the first check (every ``check_every`` steps, clock paused) with a test NLL at
    most TARGET (None: never)."""
    import torch

    torch.manual_seed(seed)
    module, log_prob, _ = build(library, model)
    module.to(device)
    if library == "flowfit":
        module.initialize(moons(10_000, seed=2).to(device))
    adam = optimizer(library, module, device)
    clock, reached = 0.0, None
    for step in range(1, steps + 1):
        start = time.perf_counter()
        loss = -log_prob(moons(batch).to(device)).mean()
        adam.zero_grad()
        loss.backward()
        adam.step()
        synchronize(device)
        clock += time.perf_counter() - start
        if reached is None and step % check_every == 0 and test_nll(log_prob, test[:CHECK_POINTS]) <= TARGET:
            reached = clock
    return test_nll(log_prob, test), clock, reached


def defaults_run(model: str, seed: int, test, device, max_steps: int | None = None) -> float | None:
    """flowfit with its own defaults (``flowfit train --flow MODEL``: flowfit.fit with the
    family's training defaults, validation included): seconds of training until the test NLL,
    checked at each of its validations (clock paused), is at most TARGET."""
    import torch

    import flowfit
    from flowfit.families import FAMILIES

    torch.manual_seed(seed)
    flow = FAMILIES[model].build(2).to(device)
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
        training = flow.defaults_for()[1]
        if max_steps is not None:  # a smoke test, not a measurement
            training["steps"] = min(training["steps"], max_steps)
        flowfit.fit(flow, lambda n: moons(n), seed=seed, callback=check, progress=False, **training)
    except Reached:
        pass
    return reached


def test_nll(log_prob, points) -> float:
    import torch

    with torch.no_grad():
        return -torch.cat([log_prob(c) for c in points.split(10_000)]).mean().item()


def defaults_times(seeds: list[int], test, device, max_steps: int | None = None) -> dict[str, list[float]]:
    """Seconds to TARGET nats of flowfit with its own defaults, per model and seed (inf: never)."""
    return {
        model: [math.inf if (r := defaults_run(model, seed, test, device, max_steps)) is None else r for seed in seeds]
        for model in ("realnvp", "nsf")
    }


def race(
    libraries: list[str], seeds: list[int], test, device, batch: int, steps: int, defaults: dict[str, list[float]]
) -> list[str]:
    """Test NLL after the protocol (``steps`` steps of ``batch``), and the wall time to TARGET
    nats, per library; flowfit with its defaults (``defaults``: seconds per model and seed)
    is the yardstick."""
    rows = [
        "",
        f"Training (`--train`): the reference protocol{'' if (batch, steps) == (256, 5000) else ', changed'}, "
        f"{steps:,} Adam steps at 1e-3 on fresh batches of {batch}, seeds "
        f"{', '.join(map(str, seeds))}; test NLL on 100,000 points; time to {TARGET} nats = training seconds until "
        f"the NLL on {CHECK_POINTS:,} test points, checked every 250 steps (clock paused), is at most {TARGET}.",
        "",
        f"| library | model | test NLL after {steps:,} steps (mean ± sd) | per seed | train s (median) "
        f"| s to {TARGET} nats (median; per seed) |",
        "|---|---|---|---|---:|---|",
    ]
    reached: dict[tuple[str, str], list[float]] = {}
    for model in ("realnvp", "nsf"):
        for library in libraries:
            runs = [protocol_run(library, model, seed, test, device, batch, steps) for seed in seeds]
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
        times = defaults[model]
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


def optimizer(library: str, module, device):
    """Adam at 1e-3 as each library's user gets it: flowfit's trainer uses the fused kernel
    (:func:`flowfit.train.adam`), the peers have no trainer, so their users call
    ``torch.optim.Adam`` with its defaults."""
    import torch

    if library == "flowfit":
        from flowfit.train import adam

        return adam(module.parameters(), 1e-3, device)
    return torch.optim.Adam(module.parameters(), lr=1e-3)


def speed_table(libraries: list[str], rounds: int, threads: int, test, device, batches: list[int]) -> list[str]:
    """ms per training step at each batch size, log_prob and sampling throughput: median of
    ``rounds`` rounds."""
    import torch

    from flowfit.options import TrainOptions
    from flowfit.train.trainer import mixes_precision

    models = {(lib, m): build(lib, m) for m in ("realnvp", "nsf") for lib in libraries}
    for module, _, _ in models.values():
        module.to(device)
    data = {size: moons(size, seed=1).to(device) for size in batches}
    optimizers = {key: optimizer(key[0], module, device) for key, (module, _, _) in models.items()}
    # flowfit's step once more with torch.optim.Adam's default implementation, to show what
    # the fused Adam of its trainer buys
    plain = {key: torch.optim.Adam(models[key][0].parameters(), lr=1e-3) for key in models if key[0] == "flowfit"}
    for (lib, _), (module, _, _) in models.items():  # fit flowfit's standardization as fit() would
        if lib == "flowfit":
            module.initialize(moons(10_000, seed=2).to(device))
    # and its log_prob through torch.compile, as `--compile` trains (compiled once, before timing)
    compiled = {key: torch.compile(models[key][1], dynamic=False) for key in plain}
    # flowfit's steps with the products in bfloat16 where its trainer's mixed precision would
    # (TrainOptions' default, on this device), once more in float32 for what that buys; the peers'
    # steps once more under the same torch.autocast, as their users could turn it on
    mixed = {key: mixes_precision(models[key][0], TrainOptions()) for key in plain}
    timings: dict[tuple[str, str], dict[str, list[float]]] = {k: {} for k in models}

    def step(log_prob, optimizer, batch, bf16: bool) -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = -log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def timed(log_prob, optimizer, batch, bf16: bool, may_fail: bool) -> float:
        """ms per step (median of 25); NaN for a peer whose transforms refuse bfloat16."""
        try:
            step(log_prob, optimizer, batch, bf16)
            return median_time(lambda: step(log_prob, optimizer, batch, bf16), 25, device) * 1000
        except Exception:
            if not may_fail:
                raise
            return math.nan

    for _ in range(rounds):
        for key, (_, log_prob, sample) in models.items():
            for size, batch in data.items():
                bf16 = mixed.get(key, False)
                runs = {"step": (log_prob, optimizers[key], bf16)}
                if key not in plain:
                    runs["autocast"] = (log_prob, optimizers[key], True)
                else:
                    runs["plain"] = (log_prob, plain[key], bf16)
                    runs["compiled plain"] = (compiled[key], plain[key], bf16)
                    runs["compiled"] = (compiled[key], optimizers[key], bf16)
                    if bf16:
                        runs["float32 plain"] = (log_prob, plain[key], False)
                        runs["float32 compiled plain"] = (compiled[key], plain[key], False)
                for name, (function, adam, autocast) in runs.items():
                    ms = timed(function, adam, batch, autocast, may_fail=name == "autocast")
                    timings[key].setdefault(f"{name} {size}", []).append(ms)
            with torch.inference_mode() if key[0] == "flowfit" else torch.no_grad():
                log_prob_seconds = median_time(lambda lp=log_prob: lp(test), 1, device)
                sample_seconds = median_time(lambda s=sample: s(POINTS), 1, device)
            timings[key].setdefault("log_prob", []).append(POINTS / log_prob_seconds)
            timings[key].setdefault("sample", []).append(POINTS / sample_seconds)
    peak = matmul_rate(device)
    where = f"{torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"CPU, {threads} threads"
    steps = " | ".join(f"ms/step (batch {size})" for size in batches)
    rows = [
        f"Two moons (noise 0.05); torch {torch.__version__}, {where}; median of {rounds} rounds, "
        f"round-robin. This machine's float32 matrix product: {peak:.0f} GFLOP/s.",
        "",
        f"| library | model | params | {steps} | log_prob pts/s | sample pts/s | log_prob GFLOP/s (share of peak) |",
        "|---|---|---:|" + "---:|" * len(batches) + "---:|---:|---:|",
    ]
    for (lib, model), (module, _, _) in models.items():
        t = {k: statistics.median(v) for k, v in timings[lib, model].items()}
        params = sum(p.numel() for p in module.parameters())
        rate = ""
        if model == "realnvp":
            gflops = t["log_prob"] * realnvp_flops_per_point() / 1e9
            rate = f"{gflops:.1f} ({gflops / peak:.0%})"
        steps = " | ".join(f"{t[f'step {size}']:.2f}" for size in batches)
        rows.append(f"| {lib} | {model} | {params:,} | {steps} | {t['log_prob']:,.0f} | {t['sample']:,.0f} | {rate} |")
    for model in ("realnvp", "nsf"):
        ours = {k: statistics.median(v) for k, v in timings["flowfit", model].items()}
        peers = {lib: {k: statistics.median(v) for k, v in timings[lib, model].items()} for lib in libraries[1:]}
        if not peers:
            continue
        rows.append("")
        for size in batches:
            fastest = min(p[f"step {size}"] for p in peers.values())
            precision = "bfloat16 products (its mixed precision)" if mixed["flowfit", model] else "float32"
            rows.append(
                f"{model}, batch {size}, flowfit in {precision}: its step with torch.optim.Adam's default "
                f"implementation instead of its trainer's fused Adam: {ours[f'plain {size}']:.2f} ms "
                f"({ours[f'plain {size}'] / fastest:.2f}x the fastest peer's); with its fused Adam "
                f"{ours[f'step {size}'] / fastest:.2f}x the fastest peer's. Compiled (torch.compile, what --compile "
                f"does) with torch.optim.Adam: {ours[f'compiled plain {size}']:.2f} ms "
                f"({ours[f'compiled plain {size}'] / fastest:.2f}x the fastest peer's); compiled with its fused Adam: "
                f"{ours[f'compiled {size}']:.2f} ms ({ours[f'compiled {size}'] / fastest:.2f}x)."
            )
            if mixed["flowfit", model]:
                rows.append(
                    f"The same in float32 (--mixed-precision off), torch.optim.Adam: "
                    f"{ours[f'float32 plain {size}']:.2f} ms eager ({ours[f'float32 plain {size}'] / fastest:.2f}x), "
                    f"{ours[f'float32 compiled plain {size}']:.2f} ms compiled "
                    f"({ours[f'float32 compiled plain {size}'] / fastest:.2f}x)."
                )
            under = ", ".join(
                f"{lib} {p[f'autocast {size}']:.2f} ms" if math.isfinite(p[f"autocast {size}"]) else f"{lib} fails"
                for lib, p in peers.items()
            )
            rows.append(f"The peers' steps under the same torch.autocast to bfloat16 (torch.optim.Adam): {under}.")
        rows.append(
            f"{model}: flowfit's log_prob {ours['log_prob'] / max(p['log_prob'] for p in peers.values()):.2f}x and "
            f"sampling {ours['sample'] / max(p['sample'] for p in peers.values()):.2f}x the fastest peer's throughput."
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (0: race only, with --train)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="also race: --steps steps per seed, library and batch")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch", type=int, nargs="+", default=[256], help="batch sizes of the steps and races")
    parser.add_argument("--steps", type=int, default=5000, help="steps of each race run (the reference: 5,000)")
    parser.add_argument("--defaults-steps", type=int, help="cap on the steps of flowfit's own defaults (smoke tests)")
    parser.add_argument("--libraries", nargs="+", default=LIBRARIES, choices=LIBRARIES, help="flowfit first")
    parser.add_argument("--here", action="store_true", help="use this interpreter's libraries, not .peers-venv")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.here:
        ensure_environment()
    import torch

    from flowfit.files import write_text

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    torch.set_num_threads(args.threads)
    libraries = ["flowfit", *(lib for lib in args.libraries if lib != "flowfit")]
    test = moons(POINTS, seed=12345).to(device)
    rows = speed_table(libraries, args.rounds, args.threads, test, device, args.batch) if args.rounds else []
    if args.train:
        defaults = defaults_times(args.seeds, test, device, args.defaults_steps)
        for i, batch in enumerate(args.batch):
            table = race(libraries, args.seeds, test, device, batch, args.steps, defaults)
            rows += table if i == 0 else [r for r in table if not r.startswith("| flowfit, its defaults")]
    table = "\n".join(rows)
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
