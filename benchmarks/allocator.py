"""What memory handling costs: log_prob, sampling and a training step, each in a fresh process,
and the page faults each process took, for four kinds of process, alternating:

- glibc's defaults (a plain Python process) or freed memory kept for reuse (glibc's
  ``mallopt``: blocks up to 32 MB from the heap, which gives memory back only when 64 MB lie
  free at its top; what the ``flowfit`` command set before flowfit reused its buffers);
- flowfit as it is ("now": the networks write each inference chunk's activations into reused
  buffers, :func:`flowfit.nets.reusing_activations`, in chunks of ``Flow.rows_per_chunk``) or
  as it was before that ("before": a new tensor for every activation; 4,096-row chunks in a
  plain process, 8,192 and 16,384 (``rows_per_chunk``) where freed memory was kept).

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
import contextlib, ctypes, json, resource, statistics, sys, time
import torch, flowfit, flowfit.flow
from flowfit import datasets
torch.set_num_threads(2)
allocator, version, name = sys.argv[1:]
if allocator == "kept":  # M_MMAP_THRESHOLD (-3) 32 MB, M_TRIM_THRESHOLD (-1) 64 MB
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(-3, 32 * 2**20) and libc.mallopt(-1, 64 * 2**20)
if version == "before":
    flowfit.flow.reusing_activations = contextlib.nullcontext
x, batch = datasets.moons(POINTS, seed=1), datasets.moons(BATCH, seed=2)
results = {}
for flow in [flowfit.RealNVP(2) if name == "realnvp" else flowfit.NSF(2)]:
    if version == "before" and allocator == "default":
        flow.inference_chunk = 4096
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


KINDS = {
    ("default", "before"): "glibc defaults, before",
    ("default", "now"): "glibc defaults, now",
    ("kept", "before"): "freed memory kept, before",
    ("kept", "now"): "freed memory kept, now",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs: dict[tuple[str, str], list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for _ in range(args.rounds):
        measured: dict[tuple[str, str], dict[str, float]] = {kind: {} for kind in KINDS}
        for model in ("realnvp", "nsf"):
            for kind in KINDS:
                command = [sys.executable, "-c", CHILD, *kind, model]
                output = subprocess.run(command, check=True, capture_output=True, text=True)
                measured[kind] |= json.loads(output.stdout.splitlines()[-1])
        for kind in KINDS:
            runs[kind].append(measured[kind])
    keys = list(runs["default", "now"][0])
    lines = [
        f"A fresh process per model and kind, {args.rounds} of each alternating; medians. Throughput in points/s "
        f"on {POINTS:,} points; a step is log_prob of {BATCH} points, backward and Adam.",
        "",
        "| | " + " | ".join(KINDS.values()) + " | now / before, glibc defaults | now / before, kept |",
        "|---|" + "---:|" * (len(KINDS) + 2),
    ]
    for key in keys:
        median = {kind: statistics.median(run[key] for run in runs[kind]) for kind in KINDS}
        digits = 2 if "ms" in key else 0
        cells = " | ".join(f"{median[kind]:,.{digits}f}" for kind in KINDS)
        ratios = [median[allocator, "now"] / median[allocator, "before"] for allocator in ("default", "kept")]
        lines.append(f"| {key} | {cells} | {ratios[0]:.2f} | {ratios[1]:.2f} |")
    print("\n".join(lines))
    if args.out:
        write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
