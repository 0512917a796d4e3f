"""Categorical columns: p(c) from smoothed counts, the joint log p(x, c), exact marginals."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from flowfit import MAF, RealNVP
from flowfit.categories import (
    INTEGER,
    TEXT,
    Categories,
    integer_labels,
    joint_context,
    joint_log_prob,
    marginal_log_prob,
    sorted_levels,
)
from flowfit.errors import CheckpointError, InputError
from tests.helpers import randomize


def two_columns() -> tuple[Categories, torch.Tensor]:
    levels = [["blue", "green", "red"], ["1", "2"]]
    codes = torch.tensor([[0, 0], [0, 0], [2, 1], [1, 0], [0, 0]])
    return Categories.fit(["colour", "doors"], [TEXT, INTEGER], levels, codes), codes


def test_the_smoothed_table_sums_to_one_over_every_combination() -> None:
    categories, _ = two_columns()
    assert categories.rows == 5 and categories.size == 6 and categories.width == 5
    every = torch.tensor(list(itertools.product(range(3), range(2))))
    p = categories.log_prob(every).exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
    # (count + 1/2) / (N + K/2): (3 + 0.5) / (5 + 3) for blue/1, 0.5 / 8 for a tuple never seen
    assert p[0].item() == pytest.approx(3.5 / 8) and p[1].item() == pytest.approx(0.5 / 8)


def test_the_normalisation_does_not_enumerate_the_product_of_levels() -> None:
    levels = [[str(i) for i in range(1000)]] * 4  # 10^12 combinations
    codes = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 7, 8]])
    categories = Categories.fit(["a", "b", "c", "d"], [TEXT] * 4, levels, codes)
    expected = math.log(2.5) - math.log(3 + 0.5 * 1000**4)
    assert categories.log_prob(codes[:1]).item() == pytest.approx(expected, rel=1e-12)


def test_a_known_categorical_distribution_is_recovered_and_sampled() -> None:
    truth = torch.tensor([0.2, 0.3, 0.5])
    generator = torch.Generator().manual_seed(0)
    codes = torch.multinomial(truth, 20_000, replacement=True, generator=generator)[:, None]
    categories = Categories.fit(["cut"], [TEXT], [["Fair", "Good", "Ideal"]], codes)
    estimate = categories.log_prob(torch.arange(3)[:, None]).exp()
    torch.testing.assert_close(estimate, truth.double(), atol=0.01, rtol=0)
    draws = categories.sample(20_000, torch.Generator().manual_seed(1))
    frequencies = torch.bincount(draws[:, 0], minlength=3).double() / len(draws)
    torch.testing.assert_close(frequencies, truth.double(), atol=0.015, rtol=0)
    labels = categories.decode(draws[:5])
    assert set(labels[:, 0]) <= {"Fair", "Good", "Ideal"}
    torch.testing.assert_close(categories.encode(labels), draws[:5])


def test_sampling_draws_unseen_combinations_as_often_as_the_smoothing_says() -> None:
    categories, _ = two_columns()
    draws = categories.sample(60_000, torch.Generator().manual_seed(0))
    every = list(itertools.product(range(3), range(2)))
    frequencies = torch.tensor([float(((draws == torch.tensor(c)).all(1)).double().mean()) for c in every])
    expected = categories.log_prob(torch.tensor(every)).exp()
    torch.testing.assert_close(frequencies.double(), expected, atol=0.01, rtol=0)


def test_one_hot_codes_round_trip_and_unknown_labels_are_named() -> None:
    categories, codes = two_columns()
    one_hot = categories.one_hot(codes)
    assert one_hot.shape == (5, 5) and one_hot.sum(1).tolist() == [2.0] * 5
    torch.testing.assert_close(categories.from_one_hot(one_hot), codes)
    labels = np.array([["red", "2"], ["purple", "1"]], dtype=object)
    with pytest.raises(InputError, match=r"t.csv: row 12, column 'colour': 'purple' is not a category the model"):
        categories.encode(labels, "t.csv", first_row=10)
    missing = categories.encode(np.array([[None, "1"]], dtype=object))
    assert missing.tolist() == [[-1, 0]]


def test_integer_labels_and_levels() -> None:
    labels = integer_labels(np.array([3.0, 10.0, np.nan, 3.0]), "rooms", "t")
    assert labels.tolist() == ["3", "10", None, "3"]
    assert sorted_levels(labels, INTEGER) == ["3", "10"]  # by value, not as text
    with pytest.raises(InputError, match=r"row 2, column 'rooms' is 2.5: a categorical column of numbers"):
        integer_labels(np.array([1.0, 2.5]), "rooms", "t")


@pytest.mark.parametrize(
    "change",
    [
        {"kinds": ["text", "words"]},
        {"levels": [["a", "a"], ["1"]]},
        {"counts": [[0, 0, 0]]},
        {"counts": [[5, 0, 1]]},
        {"counts": [[0, 0, 1], [0, 0, 2]]},
        {"smoothing": -1},
        {"columns": "colour"},
    ],
)
def test_a_malformed_saved_table_is_refused(change: dict) -> None:
    categories, _ = two_columns()
    values = categories.to_json() | change
    with pytest.raises(CheckpointError, match="categorical columns are malformed"):
        Categories.from_json(values)


def test_saved_tables_round_trip() -> None:
    categories, codes = two_columns()
    again = Categories.from_json(categories.to_json())
    torch.testing.assert_close(again.log_prob(codes), categories.log_prob(codes))


def mixed_flow() -> tuple[RealNVP, Categories]:
    """A random conditional flow over 2 continuous columns and a table over 3 x 2 categories."""
    categories, _ = two_columns()
    torch.manual_seed(0)
    flow = randomize(RealNVP(2, context_dim=categories.width, layers=2, hidden=(8,)), scale=0.3).double()
    flow.metadata = {"columns": ["x", "y"], "categorical": categories.to_json()}
    return flow, categories


def test_the_joint_is_log_p_c_plus_the_flow_given_c() -> None:
    flow, categories = mixed_flow()
    x = torch.randn(6, 2, dtype=torch.float64)
    codes = torch.tensor(list(itertools.product(range(3), range(2))))
    context = joint_context(None, codes, categories)
    expected = flow.log_prob(x, context) + categories.log_prob(codes)
    torch.testing.assert_close(joint_log_prob(flow, x, context), expected)


def test_a_marginal_is_the_sum_of_the_joint_over_the_missing_cells() -> None:
    flow, categories = mixed_flow()
    x = torch.randn(4, 2, dtype=torch.float64)
    observed = torch.tensor([[1, 0], [0, 1], [2, 0], [0, 0]])
    known = torch.tensor([[True, False], [False, True], [False, False], [True, True]])
    marginal = marginal_log_prob(flow, x, None, torch.where(known, observed, -1))
    for i in range(4):
        free = [j for j in range(2) if not known[i, j]]
        terms = []
        for values in itertools.product(*[range(len(categories.levels[j])) for j in free]):
            codes = observed[i].clone()
            codes[free] = torch.tensor(values, dtype=torch.long)
            context = joint_context(None, codes[None], categories)
            terms.append(joint_log_prob(flow, x[i : i + 1], context))
        assert marginal[i].item() == pytest.approx(torch.logsumexp(torch.cat(terms), 0).item(), abs=1e-10)
    # the marginal over every category of one continuous point is a density in x: it integrates to 1
    flow1 = randomize(MAF(1, context_dim=categories.width, layers=2, hidden=(8,)), scale=0.3).double()
    flow1.metadata = {"categorical": categories.to_json()}
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)[:, None]
    density = marginal_log_prob(flow1, grid, None, torch.full((len(grid), 2), -1)).exp()
    assert torch.trapezoid(density, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-4)
