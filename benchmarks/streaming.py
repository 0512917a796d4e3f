"""Memory stays flat: peak resident memory of ``flowfit density`` and ``flowfit train`` on
files of growing length.

For each row count it writes two-moons points (noise 0.05, float32) to a ``.npy`` file and a
CSV file, then runs, each in its own process (its peak resident memory, ``VmHWM``):

- ``flowfit density`` over the CSV and over the ``.npy`` (read and scored in chunks of
  65,536 rows; the output CSV is written as it goes);
- ``flowfit sample -n ROWS`` (drawn and written in chunks);
- ``flowfit train --data FILE.npy`` for a few steps (the training rows stay memory-mapped and
  are read a batch at a time; the validation and test rows, 10% each, are read in).

The model scored is a small RealNVP trained here for 200 steps: model size does not change
how memory grows with the file. Each command's peak resident memory is given with its
anonymous part (the process's own memory; the rest is pages of mapped files: libraries, and
the ``.npy`` being read, which the system reclaims when memory runs short). Prints a
Markdown table.

    .venv/bin/python benchmarks/streaming.py --rows 1000000 3000000 10000000 --out benchmarks/results/streaming.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flowfit import datasets
from flowfit.files import write_text

FLOWFIT = [sys.executable, "-m", "flowfit"]


def peak_rss(command: list[str]) -> tuple[float, float, float]:
    """Run ``command``; return its peak resident memory and peak anonymous memory (MB) and
    its wall time (s).

    The peak is the process's own high-water mark, ``VmHWM`` in ``/proc/PID/status`` (rusage
    would also count this script's memory: Linux carries a process's peak across fork and
    exec); the anonymous part (``RssAnon``: the process's own memory, which only it can free)
    is read every 20 ms while it runs. The rest is pages of mapped files (the libraries, and a
    ``.npy`` being read), which the system reclaims when memory runs short."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status_file, peak = Path(f"/proc/{process.pid}/status"), {"VmHWM": 0, "RssAnon": 0}
    while process.poll() is None:
        try:
            for line in status_file.read_text().splitlines():
                key = line.split(":")[0]
                if key in peak:
                    peak[key] = max(peak[key], int(line.split()[1]))
        except (OSError, ValueError):  # the process ended between the poll and the read
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()}")
    return peak["VmHWM"] / 1024, peak["RssAnon"] / 1024, seconds


def cell(measured: tuple[float, float, float]) -> str:
    peak, anonymous, seconds = measured
    return f"{peak:,.0f} ({anonymous:,.0f}), {seconds:.0f} s"


def write_points(directory: Path, rows: int) -> tuple[Path, Path]:
    """Two-moons points as ``.npy`` and CSV, written in blocks (never all in memory at once)."""
    npy, csv = directory / f"moons-{rows}.npy", directory / f"moons-{rows}.csv"
    array = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, 2))
    with csv.open("w") as handle:
        handle.write("x0,x1\n")
        for seed, start in enumerate(range(0, rows, 1_000_000)):
            block = datasets.moons(min(1_000_000, rows - start), seed=seed).numpy()
            array[start : start + len(block)] = block
            np.savetxt(handle, block, delimiter=",", fmt="%.6f")
    array.flush()
    del array
    return npy, csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    header = "| rows | file MB (.npy / CSV) | density CSV | density .npy | sample ROWS | train 200 steps from .npy |"
    lines = [header, "|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model = work / "model"
        train = [*FLOWFIT, "train", "--data", "moons", "--layers", "2", "--hidden", "32", "--steps", "200"]
        peak_rss([*train, "--out", str(model), "--no-plots", "--no-progress"])
        for rows in args.rows:
            npy, csv = write_points(work, rows)
            sizes = f"{npy.stat().st_size / 1e6:,.0f} / {csv.stat().st_size / 1e6:,.0f}"
            cells = []
            for source in (csv, npy):
                out = work / f"logp-{source.suffix[1:]}.csv"
                density = [*FLOWFIT, "density", "--model", str(model), "--input", str(source)]
                cells.append(cell(peak_rss([*density, "--out", str(out)])))
                out.unlink()
            cells.append(
                cell(
                    peak_rss([*FLOWFIT, "sample", "--model", str(model), "-n", str(rows), "--out", str(work / "s.csv")])
                )
            )
            (work / "s.csv").unlink()
            run = work / f"run-{rows}"
            # a small RealNVP for all 200 steps, as measured before tables got their own family and patience
            command = [*FLOWFIT, "train", "--data", str(npy), "--flow", "realnvp", "--layers", "2", "--hidden", "32",
                       "--steps", "200", "--patience", "1000"]  # fmt: skip
            cells.append(cell(peak_rss([*command, "--out", str(run), "--no-plots", "--no-progress"])))
            lines.append(f"| {rows:,} | {sizes} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
            npy.unlink()
            csv.unlink()
    lines += [
        "",
        "Each cell: peak resident memory of the command's process (VmHWM), MB (its peak anonymous memory, RssAnon, "
        "MB); wall seconds.",
    ]
    if args.out:
        write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
