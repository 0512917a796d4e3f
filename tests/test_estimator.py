"""FlowDensity against scikit-learn's own checks and tools."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from flowfit import FlowDensity, InputError

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
