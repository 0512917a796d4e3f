"""flowfit's flow matching against Meta's flow_matching and torchcfm: one vector field, one solver.

Every library trains an identical copy of one vector field, ``flowfit.continuous.VectorField``
with the architecture of ``flowfit.CNF.defaults_for("fm")`` (read when the script runs), for the
same steps, batch size and learning rate (those defaults' too), with Adam, on the same data
sampler:

- flowfit: ``flowfit.fit(flow, sampler, objective="fm")`` with its defaults (its fused Adam,
  cosine schedule, gradient clipping, pairing, validation, and the best validation state kept);
- flow_matching 1.0.10 (Meta): ``AffineProbPath(scheduler=CondOTScheduler())`` and the mean
  squared error to the path sample's ``dx_t``, the loop of its 2-D example;
- torchcfm 1.0.7: ``ConditionalFlowMatcher(sigma=0)`` (I-CFM) and
  ``ExactOptimalTransportConditionalFlowMatcher(sigma=0)`` (OT-CFM), the loop of its README.

The peers have no training loop: theirs is the minimal one their examples show,
``torch.optim.Adam`` at a constant rate (``--peer-schedule cosine`` gives them flowfit's
schedule), on data standardized with the loc and scale flowfit's run fitted (10,000 draws), so
every field models the same standardized density. No library's solver is used: each trained
field is loaded into the same ``flowfit.CNF`` (flowfit's standardization, the defaults' dopri5
tolerances, exact trace), so the columns compare training, not solvers:

- two moons: test NLL on 100,000 points (seed 12345), in data units, against the entropy floor;
- pictures (``logo``: ``flowfit.datasets.LOGO``; ``ring``, ``text``, ``face``: those that
  ``pictures.py`` draws): KL(picture || model) = NLL on 20,000 exact samples (seed 12345)
  minus the picture's entropy, and the TV between 100,000 model samples and the pixel
  probabilities (``flowfit.datasets.PictureDensity``), beside the TV of 100,000 exact samples;
- training steps per second: the median step of the run (flowfit's steps that validate are
  the median's outliers), and the run's wall seconds. Libraries train one after another, so
  these carry the machine's drift over half an hour (10-20% here); the ratio of steps is
  measured apart, **side by side**: rounds of 100 steps of each way to train the field in
  turn, in one process (:func:`side_by_side`; ``--speed-only`` prints just that table);
- NFE and samples per second of drawing 100,000 points by the CNF's sampling solver (the
  defaults' rk4 steps; ``Flow.sample`` solves chunks of 4,096 points, so the NFE is the sum over
  25 solves); on pictures also at equal TV: the solve is repeated with
  each of ``--sample-steps`` and each library is charged its cheapest solve (fewest NFE) whose
  TV is at most the worst library's TV with the default steps (same seed, same base noise).

The peers live in ``benchmarks/.peers-venv`` (ignored by git, see ``peers.py``): on first use
the script installs torch==2.13.0 (the CPU wheel), flowfit (editable) and the two libraries
there (with ``--no-deps``, then only the modules their imported code needs), and re-runs itself
inside.

    .venv/bin/python benchmarks/fm_peers.py --seeds 0 1 2 --out benchmarks/results/fm_peers.md
    .venv/bin/python benchmarks/fm_peers.py --data moons --steps 200   # a smoke run
    .venv/bin/python benchmarks/fm_peers.py --speed-only --out benchmarks/results/fm_steps.md
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peers import ensure_environment

PEERS = ["flow-matching==1.0.10", "torchcfm==1.0.7"]
#: What the peers' modules used here import; their other requirements (plotting, data sets,
#: torchdyn) are left out, installed with ``--no-deps`` so that none pulls another torch.
DEPS = ["numpy", "scipy", "pot", "torchdiffeq", "tqdm"]
LIBRARIES = {
    "flowfit": "flowfit (its defaults)",
    "flow_matching": "flow_matching (CondOT path)",
    "torchcfm": "torchcfm I-CFM",
    "torchcfm-ot": "torchcfm OT-CFM",
}
PICTURES = ["logo", "ring", "text", "face"]
PICTURE_TEST = 20_000  # exact picture samples scored for the KL
SAMPLE_SEED = 2024  # the base noise of every sampling solve


# -- training ------------------------------------------------------------------------------
def train_flowfit(template, sample: Callable[[int], Any], training: dict[str, Any], seed: int):
    """``flowfit.fit`` with the flow-matching defaults; returns the flow, each step's seconds
    (between consecutive steps, so a step that validates includes it) and the wall seconds."""
    import flowfit
    from flowfit.train.callbacks import Callback

    class StepClock(Callback):
        def __init__(self) -> None:
            self.last, self.seconds = 0.0, []

        def on_start(self, trainer) -> None:
            self.last = time.perf_counter()

        def on_step(self, trainer) -> None:
            now = time.perf_counter()
            self.seconds.append(now - self.last)
            self.last = now

    flow, clock = copy.deepcopy(template), StepClock()
    start = time.perf_counter()
    flowfit.fit(flow, sample, objective="fm", seed=seed, progress=False, callbacks=[clock], **training)
    return flow, clock.seconds, time.perf_counter() - start


def peer_loss(library: str, field) -> Callable[[Any], Any]:
    """The loss of one batch of standardized data ``x1``, built with the peer's own API."""
    import torch

    def velocity(x, t):  # the peers' time is (batch,); flowfit's field takes (batch, 1)
        return field(x, t[:, None])

    if library == "flow_matching":
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler

        path = AffineProbPath(scheduler=CondOTScheduler())

        def loss(x1):
            x0 = torch.randn_like(x1)
            t = torch.rand(x1.shape[0], dtype=x1.dtype)
            sample = path.sample(t=t, x_0=x0, x_1=x1)
            return torch.pow(velocity(sample.x_t, sample.t) - sample.dx_t, 2).mean()

        return loss
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    matcher = (ExactOptimalTransportConditionalFlowMatcher if library == "torchcfm-ot" else ConditionalFlowMatcher)(
        sigma=0.0
    )

    def loss(x1):
        x0 = torch.randn_like(x1)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        return torch.mean((velocity(xt, t) - ut) ** 2)

    return loss


def peer_step(
    library: str, field, sample, loc, scale, batch: int, optimizer, mixed: bool = False
) -> Callable[[], None]:
    """One step of the peers' minimal loop: a fresh standardized batch, the loss (with ``mixed``
    under ``torch.autocast`` to bfloat16, as flowfit's mixed precision computes it), Adam."""
    import torch

    loss_of = peer_loss(library, field)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=mixed):
            loss = loss_of((sample(batch) - loc) / scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def train_peer(library: str, template_field, sample, loc, scale, training: dict[str, Any], schedule: str, seed: int):
    """The peers' minimal loop (:func:`peer_step`); returns the field, each step's seconds and
    the wall seconds."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)  # torchcfm's OT plan sampler draws its pairs from numpy's global generator
    field = copy.deepcopy(template_field).train()
    steps, batch = training["steps"], training["batch_size"]
    optimizer = torch.optim.Adam(field.parameters(), lr=training["lr"])
    step = peer_step(library, field, sample, loc, scale, batch, optimizer)
    scheduler = None
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    seconds = []
    start = time.perf_counter()
    for _ in range(steps):
        begin = time.perf_counter()
        step()
        if scheduler is not None:
            scheduler.step()
        seconds.append(time.perf_counter() - begin)
    return field.eval(), seconds, time.perf_counter() - start


# -- evaluation: one solver for every field -------------------------------------------------
def continuous_layer(flow):
    from flowfit.continuous import ContinuousFlow

    return next(m for m in flow.modules() if isinstance(m, ContinuousFlow))


def evaluation_flow(architecture: dict[str, Any], state: dict[str, Any], field=None, **changes: Any):
    """A ``flowfit.CNF`` of the defaults' architecture (with ``changes``) holding ``state``
    (flowfit's trained flow: its standardization), with ``field``'s weights if given."""
    import flowfit

    flow = flowfit.CNF(2, **(architecture | changes))
    flow.load_state_dict(state)
    if field is not None:
        continuous_layer(flow).field.load_state_dict(field.state_dict())
    return flow.eval()


def sampling_solve(flow, n: int) -> tuple[Any, float, int]:
    """``n`` samples from one solve (base noise from SAMPLE_SEED): samples, seconds, NFE."""
    import torch

    layer = continuous_layer(flow)
    with torch.inference_mode():
        torch.manual_seed(SAMPLE_SEED)
        before, start = layer.evaluations, time.perf_counter()
        x = flow.sample(n)
        return x, time.perf_counter() - start, layer.evaluations - before


def evaluate(flow, architecture: dict[str, Any], test, density, args: argparse.Namespace) -> dict[str, Any]:
    """Test NLL (and for a picture KL and TV), NFE and samples/s of one sampling solve; for a
    picture also ``sweep``: ``(steps, NFE, samples/s, TV)`` for each number of sampling steps
    (None: the CNF's own)."""
    from flowfit.train import nll

    mean, stderr = nll(flow, test)
    samples, seconds, nfe = sampling_solve(flow, args.samples)
    result = {"nll": mean, "stderr": stderr, "nfe": nfe, "samples_per_s": args.samples / seconds}
    if density is not None:
        result["kl"] = mean - density.entropy()
        result["tv"] = density.total_variation(samples)
        result["sweep"] = [(None, nfe, result["samples_per_s"], result["tv"])]
        for steps in args.sample_steps:
            other = evaluation_flow(architecture, flow.state_dict(), sample_steps=steps)
            samples, seconds, nfe = sampling_solve(other, args.samples)
            result["sweep"].append((steps, nfe, args.samples / seconds, density.total_variation(samples)))
    return result


def at_equal_tv(results: dict[str, dict[str, Any]]) -> None:
    """For each library, the cheapest sampling solve whose TV is at most the worst library's
    TV with the default steps (``results[lib]["equal_tv"] = (steps, NFE, samples/s, TV)``)."""
    target = max(r["tv"] for r in results.values())
    for r in results.values():
        r["tv_target"] = target
        r["equal_tv"] = min((s for s in r["sweep"] if s[3] <= target), key=lambda s: (s[1], -s[2]))


# -- one data set -----------------------------------------------------------------------------
def sampler_for(name: str, directory: Path):
    """``(sample(n), PictureDensity or None)`` for a data set's name."""
    from flowfit import datasets

    if name == "moons":
        return (lambda n: datasets.moons(n)), None
    if name == "logo":
        path = datasets.LOGO
    else:
        from pictures import draw_pictures

        path = draw_pictures(directory)[name]
    density = datasets.PictureDensity(path)
    return (lambda n: density.sample(n)), density


def run(name: str, args: argparse.Namespace, directory: Path) -> tuple[dict[str, list[dict[str, Any]]], Any]:
    """Train every library on data set ``name``, seed after seed: ``{library: per-seed results}``
    and the picture's density (None for moons)."""
    import torch

    import flowfit
    from flowfit import datasets
    from flowfit.sources import TEST_SEED, TEST_SIZE

    architecture, training = flowfit.CNF.defaults_for("fm")
    if args.steps:
        training["steps"] = args.steps
    sample, density = sampler_for(name, directory)
    if density is None:
        test = datasets.moons(TEST_SIZE, seed=TEST_SEED)
    else:
        test = density.sample(PICTURE_TEST, seed=TEST_SEED)
    results: dict[str, list[dict[str, Any]]] = {library: [] for library in args.libraries}
    for seed in args.seeds:
        torch.manual_seed(seed)
        template = flowfit.CNF(2, **architecture)  # the one initial field every library copies
        field = continuous_layer(template).field
        trained: dict[str, Any] = {}
        if "flowfit" in args.libraries:
            flow, seconds, wall = train_flowfit(template, sample, training, seed)
            trained["flowfit"] = (flow, seconds, wall)
            reference = flow.state_dict()
        else:  # the standardization fit() would fit
            reference_flow = copy.deepcopy(template)
            reference_flow.initialize(sample(10_000))
            reference = reference_flow.state_dict()
        standardize = continuous_layer(evaluation_flow(architecture, reference)).standardize
        loc, scale = standardize.loc.clone(), standardize.scale.clone()
        for library in args.libraries:
            if library != "flowfit":
                peer_field, seconds, wall = train_peer(
                    library, field, sample, loc, scale, training, args.peer_schedule, seed
                )
                trained[library] = (evaluation_flow(architecture, reference, peer_field), seconds, wall)
            print(f"  {name} seed {seed}: {library} trained in {trained[library][2]:.0f} s", flush=True)
        per_seed: dict[str, dict[str, Any]] = {}
        for library in args.libraries:
            flow, seconds, wall = trained[library]
            r = evaluate(flow, architecture, test, density, args)
            r |= {"steps_per_s": 1 / statistics.median(seconds), "train_s": wall, "steps": len(seconds)}
            per_seed[library] = r
            print(f"  {name} seed {seed}: {library} {summary(r)}", flush=True)
        if density is not None:
            at_equal_tv(per_seed)
        for library, r in per_seed.items():
            results[library].append(r)
    return results, density


def summary(r: dict[str, Any]) -> str:
    quality = f"KL {r['kl']:.3f}, TV {r['tv']:.3f}" if "kl" in r else f"NLL {r['nll']:.4f}"
    return (
        f"{quality}, {r['steps_per_s']:.0f} steps/s, train {r['train_s']:.0f} s, NFE {r['nfe']}, "
        f"{r['samples_per_s']:,.0f} samples/s"
    )


def matmul_floor(architecture: dict[str, Any], batch: int, repeats: int = 200) -> float:
    """Seconds of the matrix products alone in one training step of the field (median of
    ``repeats``): each linear layer's forward product, its weight gradient's and its input
    gradient's (not the first layer's, whose input needs none), at the step's shapes. No loop
    that trains this field can take less on this machine."""
    import torch

    from flowfit.continuous import VectorField

    field = VectorField(
        2, architecture["hidden"], fourier=architecture["fourier"], fourier_scale=architecture["fourier_scale"]
    )
    layers = [*field.layers, field.output]
    inputs = [torch.randn(batch, layer.in_features) for layer in layers]
    gradients = [torch.randn(batch, layer.out_features) for layer in layers]

    def products() -> None:
        for i, (layer, x, g) in enumerate(zip(layers, inputs, gradients, strict=True)):
            torch.addmm(layer.bias, x, layer.weight.t())
            g.t().mm(x)
            if i:
                g.mm(layer.weight)

    with torch.no_grad():
        for _ in range(20):
            products()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            products()
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def side_by_side(architecture: dict[str, Any], training: dict[str, Any], rounds: int, steps: int = 100) -> list[str]:
    """A table of ms per training step of one field (the defaults' architecture, batches of the
    logo), timed in turns: each round runs ``steps`` steps of every way to train it, so that all
    see the same machine; medians over ``rounds``. flowfit's step as its trainer takes it
    (``Trainer._train_step``: the defaults' compiled loss with bfloat16 products on this CPU,
    gradient clipping, fused Adam, the batch drawn), flowfit's loss in float32, eager, with
    plain ``torch.optim.Adam`` (the peers' conditions), and each peer in float32 (as its
    examples train) and under ``torch.autocast`` to bfloat16 (as its user could)."""
    import torch

    import flowfit
    from flowfit import datasets
    from flowfit.options import TrainOptions
    from flowfit.train.trainer import Trainer, TrainingLoss, compiles, mixes_precision

    density = datasets.PictureDensity(datasets.LOGO)
    batch = training["batch_size"]
    options = TrainOptions(objective="fm", **training)
    torch.manual_seed(0)
    template = flowfit.CNF(2, **architecture)
    trainer = Trainer(copy.deepcopy(template), density.sample, options)
    standardize = continuous_layer(trainer.flow).standardize
    loc, scale = standardize.loc.clone(), standardize.scale.clone()  # the peers' data, as in run()
    plain_flow = copy.deepcopy(trainer.flow)  # standardized as the trainer's
    plain_loss = TrainingLoss(plain_flow, "fm")
    plain_adam = torch.optim.Adam(plain_flow.parameters(), lr=training["lr"])

    def plain_step() -> None:
        loss = plain_loss(density.sample(batch), None)
        plain_adam.zero_grad()
        loss.backward()
        plain_adam.step()

    def a_peer(library: str, mixed: bool) -> Callable[[], None]:
        field = copy.deepcopy(continuous_layer(template).field)
        adam = torch.optim.Adam(field.parameters(), lr=training["lr"])
        return peer_step(library, field, density.sample, loc, scale, batch, adam, mixed)

    how = ", ".join(
        word
        for word, used in (
            ("compiled", compiles(trainer.flow, trainer.options)),
            ("bfloat16 products", mixes_precision(trainer.flow, trainer.options)),
        )
        if used
    )

    def flowfit_step() -> None:  # the body of Trainer.run's loop, less callbacks and validation
        trainer.step += 1
        trainer._train_step()

    ways: dict[str, Callable[[], None]] = {
        f"flowfit, as its trainer runs it ({how or 'eager, float32'}; clipping, fused Adam)": flowfit_step,
        "flowfit, float32, eager, plain Adam": plain_step,
    }
    for library in ("flow_matching", "torchcfm"):
        ways[f"{LIBRARIES[library]}, float32 (its examples)"] = a_peer(library, False)
        ways[f"{LIBRARIES[library]}, under torch.autocast to bfloat16"] = a_peer(library, True)
    for step in ways.values():  # warm up (flowfit's trainer compiles here)
        for _ in range(20):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, step in ways.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            seconds[name].append((time.perf_counter() - start) / steps)
    ms = {name: 1000 * statistics.median(values) for name, values in seconds.items()}
    fastest_peer = min(value for name, value in ms.items() if not name.startswith("flowfit") and "float32" in name)
    rows = [
        "| one training step of the field, batch of 1,024 | ms (median) | fastest peer in float32 / this |",
        "|---|---:|---:|",
        *(f"| {name} | {value:.2f} | {fastest_peer / value:.2f}x |" for name, value in ms.items()),
    ]
    return [
        *rows,
        "",
        f"Rounds of {steps} steps of each row in turn, medians of {rounds}, one process; the field of the defaults "
        f"({architecture}), batches of the logo drawn in every step. The last column is how many times faster "
        "than the fastest peer as its examples train (float32) each row is.",
    ]


# -- the tables -------------------------------------------------------------------------------
def spread(values: list[float], digits: int) -> str:
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(name: str, results: dict[str, list[dict[str, Any]]], density, floor: float | None, samples: int) -> list[str]:
    med = statistics.median
    picture = density is not None
    lines = [f"**{name}**", ""]
    if picture:
        lines += [
            "| library | KL (nats) | per seed | TV | steps/s | train s | NFE sample | samples/s "
            "| at equal TV: NFE | samples/s | sampling steps |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
    else:
        lines += [
            "| library | test NLL (nats) | per seed | gap to floor | steps/s | train s | NFE sample | samples/s |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
    for library, runs in results.items():
        metric = [r["kl"] if picture else r["nll"] for r in runs]
        cells = [
            LIBRARIES[library],
            spread(metric, 3 if picture else 4),
            " / ".join(f"{v:.{3 if picture else 4}f}" for v in metric),
        ]
        cells += [spread([r["tv"] for r in runs], 3)] if picture else [f"{statistics.mean(metric) - floor:+.4f}"]
        cells += [
            f"{med(r['steps_per_s'] for r in runs):.0f}",
            f"{med(r['train_s'] for r in runs):.0f}",
            f"{med(r['nfe'] for r in runs):.0f}",
            f"{med(r['samples_per_s'] for r in runs):,.0f}",
        ]
        if picture:
            steps = sorted({"default" if r["equal_tv"][0] is None else str(r["equal_tv"][0]) for r in runs})
            cells += [
                f"{med(r['equal_tv'][1] for r in runs):.0f}",
                f"{med(r['equal_tv'][2] for r in runs):,.0f}",
                ", ".join(steps),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if floor is not None:
        lines.append(f"Entropy floor on the test points: {floor:.4f} nats.")
    if picture:
        targets = ", ".join(f"{runs[0]['tv_target']:.3f}" for runs in zip(*results.values(), strict=True))
        floor_tv = density.total_variation(density.sample(samples, seed=7))
        lines.append(
            f"TV of {samples:,} exact samples (the noise floor): {floor_tv:.3f}; equal TV = at most the worst "
            f"library's TV with the default sampling steps (per seed: {targets})."
        )
    peers = [lib for lib in results if lib != "flowfit"]
    if "flowfit" in results and peers:
        ours = results["flowfit"]
        rate = med(r["steps_per_s"] for r in ours)
        fastest = max(peers, key=lambda lib: med(r["steps_per_s"] for r in results[lib]))
        key = "kl" if picture else "nll"
        best = min(peers, key=lambda lib: statistics.mean(r[key] for r in results[lib]))
        gap = statistics.mean(r[key] for r in ours) - statistics.mean(r[key] for r in results[best])
        line = (
            f"flowfit: {rate / med(r['steps_per_s'] for r in results[fastest]):.2f}x the steps/s of the fastest "
            f"peer ({LIBRARIES[fastest]}); its {'KL' if picture else 'NLL'} minus the best peer's "
            f"({LIBRARIES[best]}): {gap:+.4f} nats"
        )
        if picture:
            best_tv = min(peers, key=lambda lib: statistics.mean(r["tv"] for r in results[lib]))
            tv_gap = statistics.mean(r["tv"] for r in ours) - statistics.mean(r["tv"] for r in results[best_tv])
            line += f"; its TV minus the best peer's ({LIBRARIES[best_tv]}): {tv_gap:+.3f}"
        lines.append(line + ".")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["moons", "logo"], choices=["moons", *PICTURES])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=list(LIBRARIES))
    parser.add_argument("--steps", type=int, help="override the defaults' number of steps (all libraries)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--peer-schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="the peers' learning rate: constant as in their examples, or flowfit's cosine decay",
    )
    parser.add_argument(
        "--sample-steps",
        type=int,
        nargs="*",
        default=[4, 8, 32],
        help="sampling solver steps tried for the equal-TV columns of pictures",
    )
    parser.add_argument("--samples", type=int, default=100_000, help="points of each sampling solve")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the side-by-side step table")
    parser.add_argument("--speed-only", action="store_true", help="only the side-by-side step table (a minute)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ensure_environment(__file__, no_deps=PEERS, deps=DEPS)
    import importlib.metadata

    import torch

    import flowfit
    from flowfit import datasets
    from flowfit.files import write_text
    from flowfit.sources import TEST_SEED, TEST_SIZE

    torch.set_num_threads(args.threads)
    architecture, training = flowfit.CNF.defaults_for("fm")
    if args.steps:
        training["steps"] = args.steps
    lines = []
    with tempfile.TemporaryDirectory() as directory:
        for name in [] if args.speed_only else args.data:
            results, density = run(name, args, Path(directory))
            floor = None
            if name == "moons":
                floor = -datasets.moons_log_prob(datasets.moons(TEST_SIZE, seed=TEST_SEED)).mean().item()
            lines += [*table(name, results, density, floor, args.samples), ""]
            print("\n".join(lines), flush=True)
    versions = ", ".join(
        f"{package} {importlib.metadata.version(package)}" for package in ("flow-matching", "torchcfm", "torch")
    )
    floor = matmul_floor(architecture, training["batch_size"])
    lines += [
        "**Side by side** (the ratio of steps):",
        "",
        *side_by_side(architecture, training, args.rounds),
        "",
        f"The limit: the field's matrix products alone in float32 (each layer's forward product, weight gradient "
        f"and, but for the first layer, input gradient, at the step's shapes, timed apart from everything else) "
        f"take {1000 * floor:.2f} ms a step on this machine.",
        "",
    ]
    if args.speed_only:
        lines.append(f"{versions}; {args.threads} threads.")
    else:
        lines.append(
            f"One `flowfit.continuous.VectorField` ({architecture}), initialized once per seed and copied to every "
            f"library; {training['steps']:,} steps of {training['batch_size']} at lr {training['lr']:g} "
            f"(flowfit: `fit` with `{training}`; peers: torch.optim.Adam, {args.peer_schedule} rate). Seeds "
            f"{', '.join(map(str, args.seeds))}; every field evaluated by the same `flowfit.CNF` (dopri5, exact "
            f"trace); NFE and samples/s of one sampling solve of {args.samples:,} points. {versions}; "
            f"{args.threads} threads."
        )
    table_text = "\n".join(lines)
    print(table_text)
    if args.out:
        write_text(args.out, table_text + "\n")


if __name__ == "__main__":
    main()
