"""``FlowDensity``: a normalizing flow as a scikit-learn density estimator.

    from flowfit import FlowDensity
    model = FlowDensity().fit(X_train)          # preprocessing chosen per column ("auto")
    model.score_samples(X_test)                 # log-density of each row, in X's units
    model.score(X_test)                         # their mean (higher is better)
    model.sample(100, random_state=0)

It follows scikit-learn's conventions (``get_params``/``set_params``, ``fit`` returns ``self``,
fitted attributes end in ``_``, ``random_state``), so it works in ``Pipeline``,
``GridSearchCV`` (which maximises ``score``, the mean held-out log-likelihood) and with
``pickle``/``joblib``. Its training parameters are the fields of
:class:`~flowfit.options.TrainOptions` (the one list of training options), with ``seed``
replaced by ``random_state``.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from flowfit import options
from flowfit.errors import FlowfitWarning, InputError
from flowfit.families import family_for
from flowfit.flow import Flow
from flowfit.options import TrainOptions
from flowfit.preprocess import check_plans, make_plan
from flowfit.train import fit as fit_flow

#: The estimator's own parameters and their defaults (the model, and scikit-learn's).
MODEL_PARAMETERS: dict[str, Any] = {
    "flow": "nsf-ar",
    "preprocess": "auto",
    "layers": None,
    "hidden": None,
    "bins": None,
    "random_state": None,
    "progress": False,
}
#: Training options it exposes (``seed`` is ``random_state``; it writes no checkpoints) and
#: the defaults that differ from :func:`flowfit.fit`'s: small tables stop early.
TRAINING_PARAMETERS = [f.name for f in options.fields() if f.name not in ("seed", "checkpoint_every")]
TRAINING_DEFAULTS = {"patience": 10}


class FlowDensity(DensityMixin, BaseEstimator):
    """Density estimation with a normalizing flow, scikit-learn style.

    Args:
        flow: the family (``flowfit train --flow`` names). The default, the autoregressive
            neural spline flow, lets every column depend on every earlier one; on tables it
            beat the coupling version clearly (``benchmarks/real_data.py``).
        preprocess: per-column preprocessing spec (see :mod:`flowfit.preprocess`); ``auto``
            dequantizes quantized columns and log-transforms skewed positive ones.
        layers, hidden, bins: architecture; ``None`` keeps the family's default.
        random_state: seed for weights, batches and the validation split.
        progress: show a progress bar while fitting.
        steps, batch_size, lr, ...: every :class:`~flowfit.options.TrainOptions` field but
            ``seed`` and ``checkpoint_every``; ``None`` keeps the family's default (the
            batch is then capped at an eighth of the rows, for small tables), ``patience``
            defaults to 10 validations.

    Attributes:
        flow_: the trained :class:`~flowfit.Flow`.
        n_features_in_: the number of columns seen by ``fit``.
        preprocess_: the per-column preprocessing chosen (spec strings).
    """

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(_defaults()))
        if unknown:
            raise TypeError(f"FlowDensity got unknown parameters: {', '.join(unknown)}")
        for name, default in _defaults().items():
            setattr(self, name, params.get(name, default))

    def fit(self, X: Any, y: Any = None) -> FlowDensity:  # noqa: N803 (scikit-learn's name)
        """Fit the flow to the rows of ``X`` by maximum likelihood; ``y`` is ignored."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)  # noqa: N806
        data = torch.as_tensor(np.asarray(X, dtype=np.float64))
        if len(data) < 3:
            raise InputError(f"n_samples = {len(data)}: fitting needs at least 3 rows (2 to train, 1 to validate)")
        seed = check_random_state(self.random_state).randint(2**31 - 1)
        names = [str(c) for c in getattr(self, "feature_names_in_", [f"x{j}" for j in range(data.shape[1])])]
        plans = make_plan(data, names, self.preprocess)
        check_plans(plans, data, names)
        family, notice = family_for(self.flow, data.shape[1])
        if notice:
            warnings.warn(notice, FlowfitWarning, stacklevel=2)
        training = TrainOptions(seed=seed, **{name: getattr(self, name) for name in TRAINING_PARAMETERS})
        defaults = family.cls.defaults_for(training.objective)[1]
        if training.batch_size is None:
            training = training.updated(batch_size=min(defaults["batch_size"], max(32, len(data) // 8)))
        architecture = {"layers": self.layers, "hidden": self.hidden, "bins": self.bins}
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            try:
                flow = family.build(
                    data.shape[1],
                    preprocess=[asdict(plan) for plan in plans],
                    **{k: v for k, v in architecture.items() if v is not None and family.accepts(k)},
                )
            except ValueError as error:
                raise InputError(f"FlowDensity(flow={self.flow!r}): {error}") from None
        fit_flow(flow, data, training, progress=self.progress)
        # scored in float64: results then do not depend on how rows are batched (float32
        # matrix products round differently for different batch sizes)
        self.flow_: Flow = flow.double()
        self.preprocess_ = [plan.spec for plan in plans]
        return self

    def score_samples(self, X: Any) -> np.ndarray:  # noqa: N803
        """Log-density of each row of ``X`` (nats, in ``X``'s units; dequantized columns get
        their uniform noise from a fixed seed, as in training). Warns
        (:class:`~flowfit.errors.FlowfitWarning`) about rows far outside the training data."""
        check_is_fitted(self, "flow_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)  # noqa: N806
        x = torch.as_tensor(np.asarray(X, dtype=np.float64))
        if not len(x):
            return np.zeros(0)
        with torch.inference_mode():
            far = int(self.flow_.far_outside(x).sum())
            log_p = self.flow_.dequantized_log_prob(x)
        if far:
            warnings.warn(
                f"{far} of {len(x)} rows lie far outside the training data: their log-densities are extrapolation",
                FlowfitWarning,
                stacklevel=2,
            )
        return log_p.double().numpy()

    def score(self, X: Any, y: Any = None) -> float:  # noqa: N803
        """Mean log-density of the rows of ``X`` (higher is better, as scikit-learn expects)."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> np.ndarray:
        """``n_samples`` new rows, shape ``(n_samples, n_features_in_)`` (quantized columns
        rounded back to their step)."""
        check_is_fitted(self, "flow_")
        if n_samples < 1:
            raise InputError(f"n_samples must be positive, got {n_samples}")
        seed = check_random_state(random_state).randint(2**31 - 1)
        with torch.random.fork_rng(), torch.inference_mode():
            torch.manual_seed(seed)
            samples = self.flow_.quantize(self.flow_.sample(n_samples))
        return samples.double().numpy()


def _defaults() -> dict[str, Any]:
    """Every parameter of :class:`FlowDensity` with its default, in signature order."""
    training = {
        f.name: TRAINING_DEFAULTS.get(f.name, f.default) for f in options.fields() if f.name in TRAINING_PARAMETERS
    }
    return MODEL_PARAMETERS | training


# scikit-learn reads an estimator's parameters from its constructor's signature: give it the
# one generated from the lists above (keyword arguments with their defaults)
FlowDensity.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in _defaults().items()]
)
