"""``FlowDensity``: a normalizing flow as a scikit-learn density estimator.

    from flowfit import FlowDensity
    model = FlowDensity().fit(X_train)          # preprocessing chosen per column ("auto")
    model.score_samples(X_test)                 # log-density of each row, in X's units
    model.score(X_test)                         # their mean (higher is better)
    model.sample(100, random_state=0)

A pandas DataFrame may hold categorical columns (dtype ``category``, ``object`` or
``string``, and integer columns named in ``categorical``): the model is then
``log p(x, c) = log p(c) + log p(x | c)`` (:mod:`flowfit.categories`), scored in nats per row
and sampled as a DataFrame with the labels. ``missing`` says what an empty or NaN cell is
(see :class:`FlowDensity`).

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
from flowfit.categories import INTEGER, TEXT, Categories, integer_labels, marginal_log_prob, sorted_levels
from flowfit.errors import FlowfitWarning, InputError
from flowfit.families import TABLE_DEFAULT, family_for
from flowfit.flow import Flow
from flowfit.options import TrainOptions
from flowfit.preprocess import check_plans, make_plan
from flowfit.tables import MISSING_POLICIES, refuse_numbers_as_labels
from flowfit.train import fit as fit_flow

#: The estimator's own parameters and their defaults (the model, and scikit-learn's).
MODEL_PARAMETERS: dict[str, Any] = {
    "flow": TABLE_DEFAULT,
    "preprocess": "auto",
    "layers": None,
    "hidden": None,
    "bins": None,
    "categorical": None,
    "missing": "error",
    "random_state": None,
    "progress": False,
}
#: Training options it exposes (``seed`` is ``random_state``; it writes no checkpoints); their
#: defaults are a table's (:data:`flowfit.options.TABLE_DEFAULTS`), as for ``flowfit train``.
TRAINING_PARAMETERS = [f.name for f in options.fields() if f.name not in ("seed", "checkpoint_every")]


class FlowDensity(DensityMixin, BaseEstimator):
    """Density estimation with a normalizing flow, scikit-learn style.

    Args:
        flow: the family (``flowfit train --flow`` names). The default, the autoregressive
            neural spline flow that keeps the column order in every layer, lets every column
            depend on every earlier one; on tables it beat the coupling version clearly, and
            the one that reverses the order between layers on four tables of six (a tie on
            one, worse on one: ``benchmarks/real_data.py --flows``); and it integrates missing
            trailing cells out exactly (``missing="marginal"``).
        preprocess: per-column preprocessing spec (see :mod:`flowfit.preprocess`); ``auto``
            dequantizes quantized columns and log-transforms skewed positive ones, and with a
            flow that keeps the column order models the recurring values of finely quantized
            columns (wages in cents, prices at round thousands) as atoms
            (:func:`~flowfit.preprocess.with_atoms`).
        layers, hidden, bins: architecture; ``None`` keeps the family's default.
        categorical: names of integer columns of a DataFrame to model as categories (columns
            of dtype ``category``, ``object`` or ``string`` are categorical anyway).
        missing: what a missing cell (NaN, None) is: ``"error"`` (scikit-learn's ValueError,
            or an :class:`~flowfit.errors.InputError` naming the row and column);
            ``"drop"``: rows with one are left out of ``fit`` (a warning says how many) and
            get NaN from ``score_samples`` (rows stay aligned); ``"marginal"``: as ``drop``
            in ``fit``, and ``score_samples`` gives the exact density of the observed cells:
            missing categorical cells are summed out, and missing continuous cells integrated
            out when the flow keeps the column order (the default ``flow``) and they are the
            last columns of their row (:meth:`flowfit.Flow.observed_log_prob`); other rows
            with missing continuous cells are an error then.
        random_state: seed for weights, batches and the validation split.
        progress: show a progress bar while fitting.
        steps, batch_size, lr, ...: every :class:`~flowfit.options.TrainOptions` field but
            ``seed`` and ``checkpoint_every``; ``None`` keeps the family's default (the
            batch is then capped at an eighth of the rows, for small tables); ``patience``
            defaults to 10 validations and ``ema`` to 0.99, a table's defaults
            (:data:`flowfit.options.TABLE_DEFAULTS`).

    Attributes:
        flow_: the trained :class:`~flowfit.Flow`.
        n_features_in_: the number of columns seen by ``fit``.
        preprocess_: the per-column preprocessing chosen (spec strings).
        categories_: the categorical columns and ``p(c)``
            (:class:`~flowfit.categories.Categories`), or None.
    """

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(_defaults()))
        if unknown:
            raise TypeError(f"FlowDensity got unknown parameters: {', '.join(unknown)}")
        for name, default in _defaults().items():
            setattr(self, name, params.get(name, default))

    def fit(self, X: Any, y: Any = None) -> FlowDensity:  # noqa: N803 (scikit-learn's name)
        """Fit the flow to the rows of ``X`` by maximum likelihood; ``y`` is ignored. A
        DataFrame's categorical columns are modelled by ``p(c)``, the flow by ``p(x | c)``."""
        if self.missing not in MISSING_POLICIES:
            raise InputError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {self.missing!r}")
        discrete = _discrete_columns(X, self.categorical)
        if discrete:
            validate_data(self, X, skip_check_array=True)
            data, labels, names = _split_frame(X, discrete)
            for k, name in enumerate(discrete):  # a text column of numbers with a stray text cell
                plain_text = X[name].dtype.kind in "OUS" and str(X[name].dtype) != "category"
                if plain_text and name not in _named(self.categorical):
                    refuse_numbers_as_labels(
                        labels[:, k], name, "X", "name it in categorical= to model the column as labels"
                    )
        else:
            finite = True if self.missing == "error" else "allow-nan"
            X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2, ensure_all_finite=finite)  # noqa: N806
            data, labels = torch.from_numpy(np.array(X, dtype=np.float64)), None  # a copy: X may be read-only
            names = [str(c) for c in getattr(self, "feature_names_in_", [f"x{j}" for j in range(data.shape[1])])]
        holes = torch.isnan(data).any(dim=1)
        if labels is not None:
            holes |= torch.from_numpy((labels == None).any(axis=1))  # noqa: E711
        if bool(holes.any()):
            if self.missing == "error":
                row, column = _first_missing(data, labels)
                raise InputError(
                    f"row {row + 1}, column {([*names, *discrete])[column]!r} is missing; {MISSING_ADVICE}"
                )
            warnings.warn(
                f"left {int(holes.sum())} of {len(data)} rows with missing cells out of fitting "
                f"(missing={self.missing!r})",
                FlowfitWarning,
                stacklevel=2,
            )
            data = data[~holes]
            labels = None if labels is None else labels[~holes.numpy()]
        if len(data) < 3:
            raise InputError(f"n_samples = {len(data)}: fitting needs at least 3 rows (2 to train, 1 to validate)")
        categories, context = None, None
        if labels is not None:
            kinds = [INTEGER if _is_integer_column(X[c]) else TEXT for c in discrete]
            levels = [
                _levels(X[c], labels[:, k], kind) for k, (c, kind) in enumerate(zip(discrete, kinds, strict=True))
            ]
            codes = Categories(discrete, kinds, levels).encode(labels)
            categories = Categories.fit(discrete, kinds, levels, codes)
            context = categories.one_hot(codes)
        seed = check_random_state(self.random_state).randint(2**31 - 1)
        family, notice = family_for(self.flow, data.shape[1])
        plans = make_plan(data, names, self.preprocess, atoms=family.keeps_order)
        check_plans(plans, data, names)
        if notice:
            warnings.warn(notice, FlowfitWarning, stacklevel=2)
        training = TrainOptions(seed=seed, **{name: getattr(self, name) for name in TRAINING_PARAMETERS})
        defaults = family.cls.defaults_for(training.objective)[1]
        training = options.table_batch_size(training, defaults["batch_size"], len(data))
        architecture = {"layers": self.layers, "hidden": self.hidden, "bins": self.bins}
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            try:
                flow = family.build(
                    data.shape[1],
                    context_dim=0 if categories is None else categories.width,
                    preprocess=[asdict(plan) for plan in plans],
                    **{k: v for k, v in architecture.items() if v is not None and family.accepts(k)},
                )
            except ValueError as error:
                raise InputError(f"FlowDensity(flow={self.flow!r}): {error}") from None
        fit_flow(flow, data if context is None else (data, context), training, progress=self.progress)
        # scored in float64: results then do not depend on how rows are batched (float32
        # matrix products round differently for different batch sizes)
        self.flow_: Flow = flow.double()
        self.flow_.metadata = {"columns": names}
        if categories is not None:
            self.flow_.metadata["categorical"] = categories.to_json()
        self.preprocess_ = [plan.spec for plan in plans]
        self.categories_ = categories
        return self

    def score_samples(self, X: Any) -> np.ndarray:  # noqa: N803
        """Log-density of each row of ``X`` (nats, in ``X``'s units; dequantized columns get
        their uniform noise from a fixed seed, as in training); with categorical columns,
        ``log p(x, c)`` in nats per row. Rows with missing cells follow ``missing``: NaN for
        ``"drop"``, the exact marginal of the observed cells for ``"marginal"`` (see
        ``missing``). Warns (:class:`~flowfit.errors.FlowfitWarning`) about rows
        far outside the training data."""
        check_is_fitted(self, "flow_")
        categories = getattr(self, "categories_", None)
        if categories is not None:
            validate_data(self, X, skip_check_array=True, reset=False)
            x, labels, _ = _split_frame(X, categories.columns)
            codes = categories.encode(labels)
        else:
            finite = True if self.missing == "error" else "allow-nan"
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False, ensure_all_finite=finite)  # noqa: N806
            x, labels, codes = torch.from_numpy(np.array(X, dtype=np.float64)), None, None
        if not len(x):
            return np.zeros(0)
        holes = torch.isnan(x).any(dim=1) | (
            torch.zeros(len(x), dtype=torch.bool) if codes is None else (codes < 0).any(1)
        )
        if bool(holes.any()) and self.missing == "error":
            row, column = _first_missing(x, labels)
            columns = [*self.flow_.column_names, *(categories.columns if categories is not None else [])]
            raise InputError(f"row {row + 1}, column {columns[column]!r} is missing; {MISSING_ADVICE}")
        log_p = torch.full((len(x),), float("nan"), dtype=torch.float64)
        whole = (~holes).nonzero()[:, 0]
        with torch.inference_mode():
            noisy = self.flow_.dequantize(x, torch.Generator().manual_seed(0))  # NaN stays NaN
            context = None if categories is None else categories.one_hot(codes.clamp(min=0))
            far = int(self.flow_.far_outside(x[whole]).sum())
            if len(whole):
                log_p[whole] = self.flow_.log_prob(noisy[whole], None if context is None else context[whole]).double()
                if categories is not None:
                    log_p[whole] += categories.log_prob(codes[whole])
            if self.missing == "marginal" and bool(holes.any()):
                problem = self.flow_.integration_problem(torch.isnan(x))
                if problem is not None:
                    raise InputError(f"row {problem[0] + 1}: {problem[1]}; or use missing='drop'")
                rows = holes.nonzero()[:, 0]
                far += int(self.flow_.far_outside(x[rows]).sum())
                log_p[rows] = marginal_log_prob(self.flow_, noisy[rows], codes=None if codes is None else codes[rows])
        if far:
            warnings.warn(
                f"{far} of {len(x)} rows lie far outside the training data: their log-densities are extrapolation",
                FlowfitWarning,
                stacklevel=2,
            )
        return log_p.numpy()

    def score(self, X: Any, y: Any = None) -> float:  # noqa: N803
        """Mean log-density of the rows of ``X`` (higher is better, as scikit-learn expects)."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> Any:
        """``n_samples`` new rows, shape ``(n_samples, n_features_in_)`` (quantized columns
        rounded back to their step); for a model with categorical columns, a DataFrame with
        the columns in the order of ``fit``, categorical ones holding labels (``c ~ p(c)``,
        then ``x ~ p(x | c)``)."""
        check_is_fitted(self, "flow_")
        if n_samples < 1:
            raise InputError(f"n_samples must be positive, got {n_samples}")
        seed = check_random_state(random_state).randint(2**31 - 1)
        categories = getattr(self, "categories_", None)
        with torch.random.fork_rng(), torch.inference_mode():
            torch.manual_seed(seed)
            if categories is None:
                return self.flow_.quantize(self.flow_.sample(n_samples)).double().numpy()
            codes = categories.sample(n_samples)
            x = self.flow_.sample(1, categories.one_hot(codes)).reshape(n_samples, self.flow_.dim)
            samples = self.flow_.quantize(x).double().numpy()
        import pandas as pd

        labels = categories.decode(codes)
        columns: dict[str, Any] = dict(zip(self.flow_.column_names, samples.T, strict=True))
        for k, (name, kind) in enumerate(zip(categories.columns, categories.kinds, strict=True)):
            columns[name] = labels[:, k].astype(np.int64) if kind == INTEGER else labels[:, k]
        return pd.DataFrame({name: columns[str(name)] for name in self.feature_names_in_})


#: How a missing-cell error ends.
MISSING_ADVICE = "choose missing='drop' or 'marginal' to allow missing cells"


def _discrete_columns(X: Any, categorical: Any) -> list[str]:  # noqa: N803
    """A DataFrame's categorical columns: text and category dtypes, and the integer columns
    that ``categorical`` names (checked: they exist, and hold integers)."""
    named = _named(categorical)
    if not hasattr(X, "dtypes") or not hasattr(X, "columns"):
        if named:
            raise InputError("categorical names columns of a pandas DataFrame; X is not one")
        return []
    columns = [str(c) for c in X.columns]
    unknown = [c for c in named if c not in columns]
    if unknown:
        raise InputError(f"categorical names {', '.join(map(repr, unknown))}, which X does not have")
    found = [str(c) for c, dtype in X.dtypes.items() if dtype.kind in "OUS" or _is_labels(dtype)]
    for name in named:
        if name not in found and not _is_integer_column(X[name]):
            raise InputError(f"categorical column {name!r} must hold integers or labels, got dtype {X[name].dtype}")
    return [c for c in columns if c in found or c in named]


def _named(categorical: Any) -> list[str]:
    """The column names of the ``categorical`` parameter (None, one name, or several)."""
    return [] if categorical is None else [categorical] if isinstance(categorical, str) else list(categorical)


def _is_labels(dtype: Any) -> bool:
    return str(dtype) in ("category", "string", "str") or str(dtype).startswith("string")


def _is_integer_column(column: Any) -> bool:
    values = np.asarray(column)
    if values.dtype.kind in "iu":
        return True
    if values.dtype.kind == "f":
        finite = values[~np.isnan(values)]
        return bool(np.all(finite == np.round(finite)))
    return False


def _split_frame(X: Any, discrete: list[str]) -> tuple[torch.Tensor, np.ndarray, list[str]]:  # noqa: N803
    """A DataFrame's continuous columns (float64; NaN where missing), its categorical ones
    as labels (``None`` where missing) and the continuous columns' names."""
    names = [str(c) for c in X.columns if str(c) not in discrete]
    try:
        values = np.array(X[names], dtype=np.float64) if names else np.zeros((len(X), 0))
    except (TypeError, ValueError) as error:
        raise InputError(f"the continuous columns must hold numbers ({error})") from None
    if np.isinf(values).any():
        row, column = np.argwhere(np.isinf(values))[0]
        raise InputError(f"row {row + 1}, column {names[column]!r} is {values[row, column]} (inf is not data)")
    if not names:
        raise InputError("X has no continuous column to model; flowfit models categorical columns alongside one")
    labels = np.empty((len(X), len(discrete)), dtype=object)
    for k, name in enumerate(discrete):
        column = X[name]
        if _is_integer_column(column):
            labels[:, k] = integer_labels(np.asarray(column, dtype=np.float64), name, "X")
        else:
            labels[:, k] = [None if _is_missing(v) else str(v) for v in column.tolist()]
    return torch.from_numpy(values), labels, names


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value) in ("nan", "<NA>", "NaT")


def _levels(column: Any, labels: np.ndarray, kind: str) -> list[str]:
    """A column's levels: a pandas categorical's own categories (used or not), else the
    labels seen."""
    dtype_categories = getattr(getattr(column, "cat", None), "categories", None)
    if dtype_categories is not None and kind == TEXT:
        return sorted({str(v) for v in dtype_categories.tolist()} | set(sorted_levels(labels, kind)))
    return sorted_levels(labels, kind)


def _first_missing(values: torch.Tensor, labels: np.ndarray | None) -> tuple[int, int]:
    """``(row, column)`` of the first missing cell (continuous columns first, then labels)."""
    holes = torch.isnan(values).numpy()
    if labels is not None:
        holes = np.concatenate((holes, labels == None), axis=1)  # noqa: E711
    row, column = np.argwhere(holes)[0]
    return int(row), int(column)


def _defaults() -> dict[str, Any]:
    """Every parameter of :class:`FlowDensity` with its default, in signature order."""
    training = {
        f.name: options.TABLE_DEFAULTS.get(f.name, f.default) for f in options.fields() if f.name in TRAINING_PARAMETERS
    }
    return MODEL_PARAMETERS | training


# scikit-learn reads an estimator's parameters from its constructor's signature: give it the
# one generated from the lists above (keyword arguments with their defaults)
FlowDensity.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in _defaults().items()]
)
