from __future__ import annotations

import json

import pytest
import torch

import flowfit
from flowfit.errors import CheckpointError
from flowfit.flow import Flow
from flowfit.transforms import Reverse

from .helpers import randomize


def trained_like_flow() -> Flow:
    flow = flowfit.RealNVP(3, layers=2, hidden=(8,))
    randomize(flow, scale=0.2)
    flow.initialize(torch.randn(100, 3) * 4 + 1)
    flow.metadata = {"columns": ["a", "b", "c"]}
    return flow


def test_save_load_round_trip(tmp_path) -> None:
    flow = trained_like_flow()
    flowfit.save(flow, tmp_path / "model")
    loaded = flowfit.load(tmp_path / "model")
    x = torch.randn(50, 3)
    torch.testing.assert_close(loaded.log_prob(x), flow.log_prob(x), rtol=0, atol=0)
    assert loaded.metadata == {"columns": ["a", "b", "c"]}
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["format_version"] == 2 and config["model"] == {
        "class": "RealNVP",
        "args": {
            "dim": 3,
            "layers": 2,
            "hidden": [8],
            "context_dim": 0,
            "embedding": [],
            "activation": "relu",
            "scale_bound": 3.0,
            "preprocess": [],
            "base": None,
        },
    }
    assert not list((tmp_path / "model").glob(".*")), "no temporary files left behind"


def test_save_refuses_non_finite_parameters(tmp_path) -> None:
    flow = trained_like_flow()
    with torch.no_grad():
        next(flow.parameters())[0].fill_(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite"):
        flowfit.save(flow, tmp_path / "model")
    assert not (tmp_path / "model" / "model.safetensors").exists()


def test_a_flow_with_a_module_from_outside_flowfit_cannot_be_saved(tmp_path) -> None:
    class Mine(Reverse):  # defined here, not in flowfit: a config could not name it safely
        pass

    with pytest.raises(CheckpointError, match="not a flowfit class"):
        flowfit.save(Flow([Mine(2)], dim=2), tmp_path)
    assert not (tmp_path / "config.json").exists()


@pytest.fixture
def saved(tmp_path):
    directory = tmp_path / "model"
    flowfit.save(trained_like_flow(), directory)
    return directory


def test_missing_directory_and_files(tmp_path, saved) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        flowfit.load(tmp_path / "nowhere")
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        flowfit.load(saved)


def test_truncated_and_corrupted_weights(saved) -> None:
    weights = saved / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        flowfit.load(saved)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        flowfit.load(saved)


def test_weights_that_do_not_match_the_config(saved) -> None:
    config = json.loads((saved / "config.json").read_text())
    config["model"]["args"]["hidden"] = [16]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match"):
        flowfit.load(saved)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(format_version=99), "reads format 2"),
        (lambda c: c.update(format_version=1), "earlier flowfit"),
        (lambda c: c["model"].update({"class": "nonesuch"}), "not a flowfit class"),
        (lambda c: c["model"].update({"class": "print"}), "not a flowfit class"),
        (lambda c: c["model"]["args"].update(hidden=[1_000_000, 1_000_000]), "parameters, more than"),
        (lambda c: c["model"]["args"].update(layers=1_000_000_000), "more than the 1,000"),
        (lambda c: c["model"]["args"].update(hidden=[1e6, 1e6]), "positive integer"),
        (lambda c: c.pop("format"), "not a flowfit model config"),
    ],
)
def test_incompatible_configs(saved, edit, message) -> None:
    config = json.loads((saved / "config.json").read_text())
    edit(config)
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        flowfit.load(saved)


def test_config_that_is_not_json(saved) -> None:
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        flowfit.load(saved)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["model"]["args"].update(scale_bound=float("nan")), "scale_bound must be a positive number"),
        (lambda c: c["model"]["args"].update(scale_bound="3"), "scale_bound must be a positive number"),
        (lambda c: c["model"]["args"].update(base="StudentT"), "base must be a flowfit base distribution"),
        (lambda c: c.update(dtype="float16"), "unknown dtype"),
        (lambda c: c.update(format_version="2"), "format_version must be an integer"),
        (lambda c: c["model"]["args"].update(preprocess=[{"kind": "none", "dequantize": -1}] * 3), "step >= 0"),
    ],
)
def test_hand_edited_configs_that_would_give_wrong_numbers(saved, edit, message) -> None:
    """NaN scale bounds gave NaN densities and float16 gave half-precision ones, exit 0."""
    config = json.loads((saved / "config.json").read_text())
    edit(config)
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        flowfit.load(saved)


def test_loading_a_file_says_it_is_a_file(tmp_path) -> None:
    (tmp_path / "points.csv").write_text("1,2\n")
    with pytest.raises(CheckpointError, match="is a file, not a model directory"):
        flowfit.load(tmp_path / "points.csv")
