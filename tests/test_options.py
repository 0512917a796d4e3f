"""The one list of training options, and everything that must come from it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import typer

import flowfit
from flowfit import FlowDensity, options
from flowfit.cli import app
from flowfit.errors import InputError
from flowfit.options import TrainOptions


def test_the_command_line_exposes_every_field_with_the_same_default() -> None:
    command = typer.main.get_command(app).commands["train"]
    params = {p.name: p for p in command.params}
    for field in options.fields():
        assert field.name in params, f"flowfit train has no --{field.name.replace('_', '-')}"
        assert params[field.name].default == field.default, field.name
        assert params[field.name].opts == [f"--{field.name.replace('_', '-')}"]


def test_flow_density_exposes_every_field_but_seed_and_checkpoints() -> None:
    parameters = FlowDensity().get_params()
    for field in options.fields():
        if field.name in ("seed", "checkpoint_every"):
            assert field.name not in parameters
        else:
            expected = options.TABLE_DEFAULTS.get(field.name, field.default)  # a table's: patience 10, ema 0.99
            assert parameters[field.name] == expected, field.name
    assert options.TABLE_DEFAULTS == {"patience": 10, "ema": 0.99}
    assert "random_state" in parameters
    with pytest.raises(TypeError, match="unknown parameters: speed"):
        FlowDensity(speed=1)


def test_the_docs_hold_the_generated_table() -> None:
    page = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    assert options.markdown_table() in page


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"steps": 0}, "steps (--steps) must be a positive integer"),
        ({"steps": 2.5}, "must be an integer or null"),
        ({"batch_size": True}, "must be an integer or null"),
        ({"lr": float("inf")}, "positive number"),
        ({"schedule": "linear"}, "must be one of cosine, plateau, constant"),
        ({"objective": "vae"}, "must be one of mle, fm"),
        ({"ema": 1.0}, "decay in [0, 1)"),
        ({"ema": -0.1}, "decay in [0, 1)"),
        ({"val_fraction": 0.0}, "in (0, 1)"),
        ({"clip_grad": -1}, ">= 0"),
        ({"steps": 10, "warmup": 10}, "shorter than the run"),
        ({"warmup": 10, "schedule": "plateau"}, "not to plateau"),
        ({"seed": "zero"}, "must be an integer"),
    ],
)
def test_every_value_is_checked_in_one_place(values: dict, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        TrainOptions(**values)


def test_options_fill_family_defaults_and_refuse_unknown_names() -> None:
    filled = TrainOptions(lr=0.5).with_defaults({"steps": 7, "batch_size": 3, "lr": 9.0})
    assert (filled.steps, filled.batch_size, filled.lr) == (7, 3, 0.5)
    with pytest.raises(TypeError, match="unknown training option"):
        TrainOptions().updated(stpes=3)
    with pytest.raises(InputError, match="unknown training option"):
        TrainOptions.from_dict({"stpes": 3})
    assert TrainOptions.from_dict(dataclasses.asdict(filled)) == filled


def test_a_family_default_average_is_filled_and_zero_turns_it_off() -> None:
    """RealNVP trains with an average of its weights unless asked not to (``--ema 0``)."""
    from flowfit.train.trainer import Averager

    defaults = flowfit.RealNVP.defaults_for("mle")[1]
    assert TrainOptions().with_defaults(defaults).ema == 0.995
    assert TrainOptions(ema=0.0).with_defaults(defaults).ema == 0.0
    assert TrainOptions().with_defaults(flowfit.NSF.defaults_for("mle")[1]).ema is None
    flow = flowfit.RealNVP(2, layers=2, hidden=(8,))
    assert Averager(flow, 0.0).evaluated is flow and Averager(flow, None).evaluated is flow
    assert Averager(flow, 0.995).evaluated is not flow
