"""FlowDensity against scikit-learn's own checks and tools."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from flowfit import FlowDensity, InputError, datasets
from flowfit.errors import FlowfitWarning

FAST = dict(steps=15, hidden=(8,), layers=2, batch_size=64, random_state=0)


@parametrize_with_checks([FlowDensity(**FAST)])
def test_scikit_learn_checks(estimator, check) -> None:
    check(estimator)


def blobs(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack((rng.normal(0, 1, n), rng.normal(3, 0.5, n) + rng.normal(0, 1, n) ** 2))


def test_fit_score_sample() -> None:
    x = blobs()
    model = FlowDensity(steps=300, random_state=0).fit(x)
    log_p = model.score_samples(x[:10])
    assert log_p.shape == (10,) and np.isfinite(log_p).all()
    assert model.score(x) == pytest.approx(model.score_samples(x).mean())
    samples = model.sample(50, random_state=1)
    assert samples.shape == (50, 2)
    np.testing.assert_array_equal(samples, model.sample(50, random_state=1))
    # far-away points are unlikely
    assert model.score_samples(np.array([[30.0, -30.0]]))[0] < log_p.min()


def test_works_in_grid_search_and_pipeline_and_pickles() -> None:
    x = blobs()
    search = GridSearchCV(FlowDensity(**{**FAST, "steps": 40}), {"layers": [1, 2]}, cv=2).fit(x)
    assert search.best_params_["layers"] in (1, 2)
    pipe = make_pipeline(StandardScaler(), FlowDensity(**FAST)).fit(x)
    assert np.isfinite(pipe.score_samples(x[:5])).all()
    model = FlowDensity(**FAST).fit(x)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.score_samples(x[:20]), model.score_samples(x[:20]))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        FlowDensity(**FAST).fit(np.array([[1.0, np.nan]] * 10))
    with pytest.raises(InputError, match=r"zero variance|constant"):
        FlowDensity(**FAST).fit(np.column_stack((np.arange(10.0), np.ones(10))))
    model = FlowDensity(**FAST).fit(blobs())
    with pytest.raises(ValueError, match="features"):
        model.score_samples(np.ones((3, 3)))


def test_data_frames_are_preprocessed_by_column_name() -> None:
    import pandas as pd

    x = blobs()
    frame = pd.DataFrame({"width": x[:, 0], "height": x[:, 1] - x[:, 1].min() + 1})
    model = FlowDensity(**FAST, preprocess="height=log").fit(frame)
    assert model.preprocess_ == ["none", "log"]
    with pytest.raises(ValueError, match="feature names"):
        model.score_samples(frame[["height", "width"]])  # by name, never by position


def houses(n: int = 800, seed: int = 0):
    """A frame with a categorical column (cut: 0.2, 0.3, 0.5), an integer one and a continuous
    one that depends on the cut."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cut = rng.choice(["Fair", "Good", "Ideal"], n, p=[0.2, 0.3, 0.5])
    carat = np.select([cut == "Fair", cut == "Good"], [-2.0, 0.0], 3.0) + rng.normal(0, 0.5, n)
    return pd.DataFrame({"carat": carat, "cut": pd.Categorical(cut), "rooms": rng.integers(1, 4, n)})


def test_categorical_columns_of_a_data_frame_round_trip() -> None:
    frame = houses()
    model = FlowDensity(**{**FAST, "steps": 60}, categorical=["rooms"]).fit(frame)
    categories = model.categories_
    assert categories.columns == ["cut", "rooms"] and categories.levels[0] == ["Fair", "Good", "Ideal"]
    assert model.flow_.dim == 1 and model.flow_.context_dim == 6
    every = np.array([[c, r] for c in range(3) for r in range(3)])
    import torch

    p_cut = categories.log_prob(torch.as_tensor(every)).exp().view(3, 3).sum(1)
    np.testing.assert_allclose(p_cut.numpy(), [0.2, 0.3, 0.5], atol=0.04)
    log_p = model.score_samples(frame)
    assert log_p.shape == (800,) and np.isfinite(log_p).all()
    samples = model.sample(300, random_state=0)
    assert list(samples.columns) == ["carat", "cut", "rooms"]
    assert set(samples["cut"]) <= {"Fair", "Good", "Ideal"} and set(samples["rooms"]) <= {1, 2, 3}
    assert np.isfinite(model.score_samples(samples)).all()
    strange = frame.head(2).astype({"cut": object})
    strange.loc[1, "cut"] = "Premium"
    with pytest.raises(InputError, match="row 2, column 'cut': 'Premium' is not a category the model knows"):
        model.score_samples(strange)
    with pytest.raises(InputError, match="must hold integers"):
        FlowDensity(**FAST, categorical="carat").fit(frame)


def test_missing_cells_follow_the_missing_parameter() -> None:
    x = blobs(200)
    holes = x.copy()
    holes[[3, 50], 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FlowDensity(**FAST).fit(holes)
    with pytest.warns(FlowfitWarning, match="left 2 of 200 rows with missing cells out of fitting"):
        model = FlowDensity(**FAST, missing="drop").fit(holes)
    log_p = model.score_samples(holes)
    assert np.isnan(log_p[[3, 50]]).all() and np.isfinite(np.delete(log_p, [3, 50])).all()
    np.testing.assert_array_equal(np.delete(log_p, [3, 50]), model.score_samples(np.delete(holes, [3, 50], axis=0)))
    model.set_params(missing="marginal", flow="maf")  # a flow that reverses the order between layers
    model.fit(x)
    with pytest.raises(InputError, match="row 4: 'x1' is missing: this flow mixes its continuous columns"):
        model.score_samples(holes)


def test_a_flow_that_keeps_the_column_order_scores_rows_missing_their_last_cells() -> None:
    x = blobs(200)
    holes = x.copy()
    holes[[3, 50], 1] = np.nan
    model = FlowDensity(**FAST, missing="marginal").fit(x)  # the default flow keeps the column order
    log_p = model.score_samples(holes)
    with torch.no_grad():
        observed = model.flow_.observed_log_prob(torch.from_numpy(holes[[3, 50]])).double().numpy()
    np.testing.assert_array_equal(log_p[[3, 50]], observed)
    np.testing.assert_array_equal(np.delete(log_p, [3, 50]), model.score_samples(np.delete(holes, [3, 50], axis=0)))
    holes[7, 0] = np.nan  # a missing first cell before an observed second one
    with pytest.raises(InputError, match="row 8: 'x0' is missing but 'x1' after it is not"):
        model.score_samples(holes)


def test_a_missing_category_is_summed_out_exactly() -> None:
    frame = houses(300)[["carat", "cut"]]  # no dequantized column: its noise would depend on row positions
    model = FlowDensity(**FAST, missing="marginal").fit(frame)
    points = frame.head(3).astype({"cut": object})
    points.loc[[0, 2], "cut"] = None
    marginal = model.score_samples(points)
    filled = points.loc[[0, 0, 0, 2, 2, 2]].copy()
    filled["cut"] = ["Fair", "Good", "Ideal"] * 2
    joint = model.score_samples(filled).reshape(2, 3)
    np.testing.assert_allclose(marginal[[0, 2]], np.logaddexp.reduce(joint, axis=1), atol=1e-9, rtol=0)
    model.set_params(missing="error")
    with pytest.raises(InputError, match="row 1, column 'cut' is missing"):
        model.score_samples(points)


def test_a_read_only_array_fits_and_scores_without_torch_warnings() -> None:
    # regression: pandas' copy-on-write hands out read-only arrays, and torch warned about them
    x = datasets.moons(300, seed=0).double().numpy()
    x.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        FlowDensity(**FAST).fit(x).score_samples(x)


def test_an_object_column_of_numbers_with_a_stray_text_cell_is_refused() -> None:
    """pandas reads a numeric column with one text cell as object: it became 61 categories."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    a = [f"{v:.3f}" for v in rng.normal(size=60)] + ["typo"]
    frame = pd.DataFrame({"a": a, "b": rng.normal(size=61)})
    with pytest.raises(InputError, match="column 'a' holds numbers but row 61 holds 'typo'"):
        FlowDensity(steps=2).fit(frame)
    frame["a"] = frame["a"].astype("category")  # labels on purpose: accepted
    FlowDensity(steps=2, random_state=0).fit(frame)


def test_an_object_column_of_numbers_only_is_refused_not_made_categories() -> None:
    """Regression: a column of numbers stored as strings (``dtype=str`` when reading) became one
    category per distinct number, silently."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": [f"{v:.3f}" for v in rng.normal(size=60)], "b": rng.normal(size=60)})
    with pytest.raises(InputError, match="column 'a' holds numbers stored as text; convert it to numbers, or name"):
        FlowDensity(steps=2).fit(frame)
    FlowDensity(steps=2, random_state=0, categorical=["a"]).fit(frame)  # labels on purpose: accepted
