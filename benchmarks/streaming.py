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
how memory grows with the file. Prints a Markdown table.

    .venv/bin/python benchmarks/streaming.py --rows 1000000 10000000 --out benchmarks/results/streaming.md
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


def peak_rss(command: list[str]) -> tuple[float, float]:
    """Run ``command``; return its peak resident memory (MB) and wall time (s).

    The peak is the process's own high-water mark, ``VmHWM`` in ``/proc/PID/status``, read
    every 20 ms while it runs (rusage would also count this script's memory: Linux carries a
    process's peak across fork and exec)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    status_file, peak_kb = Path(f"/proc/{process.pid}/status"), 0
    while process.poll() is None:
        try:
            for line in status_file.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):  # the process ended between the poll and the read
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()}")
    return peak_kb / 1024, seconds


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
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    header = (
        "| rows | file MB (.npy / CSV) | density CSV: peak MB, s | density .npy: peak MB, s "
        "| sample ROWS: peak MB, s | train 200 steps from .npy: peak MB, s |"
    )
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
                mb, s = peak_rss([*density, "--out", str(out)])
                cells.append(f"{mb:,.0f}, {s:.0f}")
                out.unlink()
            mb, s = peak_rss([*FLOWFIT, "sample", "--model", str(model), "-n", str(rows), "--out", str(work / "s.csv")])
            cells.append(f"{mb:,.0f}, {s:.0f}")
            (work / "s.csv").unlink()
            run = work / f"run-{rows}"
            command = [*FLOWFIT, "train", "--data", str(npy), "--layers", "2", "--hidden", "32", "--steps", "200"]
            mb, s = peak_rss([*command, "--out", str(run), "--no-plots", "--no-progress"])
            cells.append(f"{mb:,.0f}, {s:.0f}")
            lines.append(f"| {rows:,} | {sizes} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
            npy.unlink()
            csv.unlink()
    lines += ["", "Peak resident memory of each command's process (VmHWM), MB; wall seconds."]
    if args.out:
        write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
