"""Pictures: what they show must be the numbers flowfit reports."""

from __future__ import annotations

import warnings
from dataclasses import asdict

import torch

import flowfit
from flowfit import viz
from flowfit.preprocess import ColumnPlan


def test_the_loglik_histogram_scores_dequantized_pixels(tmp_path) -> None:
    """Digits: the histogram scored raw pixels on the logit bound, "mean -inf" and a numpy
    RuntimeWarning."""
    plans = [asdict(ColumnPlan("logit", 1.0, 0.0, 17.0))] * 4
    flow = flowfit.MAF(4, layers=1, hidden=(8,), preprocess=plans)
    pixels = torch.randint(0, 17, (300, 4)).double()
    pixels[:, 0] = 0  # blank border pixels sit on the lower bound
    flow.initialize(flow.dequantize(pixels))
    assert torch.isinf(flow.log_prob(pixels)).any()  # the raw density there is -inf: not what data score
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        viz.plot_loglik(flow, pixels, None, tmp_path / "loglik.png")
    assert torch.isfinite(flow.dequantized_log_prob(pixels)).all()


def test_tables_with_different_column_scales_get_their_own_axis_scales() -> None:
    assert viz.axis_aspect((-2.0, 2.0, -1.5, 1.5)) == "equal"  # toys and pictures keep their shape
    assert viz.axis_aspect((500.0, 5000.0, 5e4, 8e5)) == "auto"  # livingArea against price
