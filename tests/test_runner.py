"""A whole ``flowfit train`` run: every row checked before training, one writer per output,
nothing left behind that a user must clean up, and strict outputs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from flowfit import shuffle, sources
from flowfit.cli import app
from flowfit.errors import InputError, TrainingDivergedError
from flowfit.runner import RunSettings

from .helpers import interrupt_training_at

SMALL = ("--layers", "2", "--hidden", "8", "--no-progress", "--no-plots")


@pytest.fixture(autouse=True)
def small_test_sets(monkeypatch):
    monkeypatch.setattr(sources, "TEST_SIZE", 2000)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def failed_cleanly(result, message: str) -> bool:
    lines = result.stderr.strip().splitlines()
    return result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def houses(tmp_path, bad_row: int | None = None, value: float = 0.0):
    rng = np.random.default_rng(0)
    price = np.exp(rng.normal(12, 0.4, 500))
    if bad_row is not None:
        price[bad_row] = value
    path = tmp_path / "houses.csv"
    np.savetxt(path, np.column_stack((rng.gamma(4, 300, 500) + 500, price)), delimiter=",", header="area,price",
               comments="", fmt="%.9g")  # fmt: skip
    return path


@pytest.mark.parametrize("split", ["validation", "test"])
def test_every_row_is_checked_against_the_preprocessing(tmp_path, split: str) -> None:
    """A price of 0 in a ``log`` column, in a row of the validation or test split: training
    rows passed the check, validation NLL was inf, the untrained weights were saved."""
    parts = shuffle.split(500, (0.8, 0.1, 0.1), seed=0)
    bad = int(parts[1 if split == "validation" else 2].items()[0])
    data = houses(tmp_path, bad_row=bad)
    out = tmp_path / "run"
    result = run("train", "--data", data, "--preprocess", "price=log", "--steps", "5", "--out", out, *SMALL)
    assert failed_cleanly(result, f"row {bad + 1}, column 'price' is 0: log needs values > 0")
    assert not out.exists() and not (tmp_path / "run.partial").exists()
    # auto does not choose log for it (the 0 is among the rows the model will see), and says so
    result = run("train", "--data", data, "--steps", "5", "--out", out, *SMALL)
    assert result.exit_code == 0 and "price: none" in result.output
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


def test_values_that_do_not_fit_the_dtype_are_refused(tmp_path) -> None:
    data = houses(tmp_path, bad_row=17, value=1e300)
    out = tmp_path / "run"
    result = run("train", "--data", data, "--steps", "5", "--out", out, *SMALL)
    assert failed_cleanly(result, "row 18, column 'price' is 1e+300, beyond the largest float32")
    tiny = houses(tmp_path, bad_row=3, value=1e-300)
    assert failed_cleanly(run("train", "--data", tiny, "--steps", "5", "--out", out, *SMALL), "below the smallest")
    assert not out.exists()


def test_force_replaces_only_a_flowfit_run(tmp_path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    result = run("train", "--steps", "3", "--out", precious, "--force", *SMALL)
    assert failed_cleanly(result, "is not a flowfit run and will not be replaced")
    assert (precious / "thesis.tex").read_text() == "years of work"
    out = tmp_path / "run"
    assert run("train", "--steps", "3", "--out", out, *SMALL).exit_code == 0
    assert run("train", "--steps", "4", "--out", out, "--force", *SMALL).exit_code == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


def long_run(out, until) -> tuple[subprocess.Popen, list[str]]:
    """A ``flowfit train`` process that would run for hours, once ``until`` exists."""
    command = [sys.executable, "-m", "flowfit", "train", "--steps", "100000", "--out", str(out), *SMALL]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not until.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return process, command


def test_two_runs_on_one_output_cannot_both_write(tmp_path) -> None:
    """Both exited 0 and printed "wrote"; one silently replaced the other."""
    out = tmp_path / "cc"
    first, command = long_run(out, until=tmp_path / "cc.partial" / "run.json")
    try:
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"another flowfit process (pid {first.pid}) is writing" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)  # a stop request: checkpoint, then exit
        first.wait(timeout=120)
    assert first.returncode != 0 and (tmp_path / "cc.partial" / "checkpoint" / "checkpoint.safetensors").exists()
    assert not out.exists()


def test_a_diverged_run_leaves_no_partial_directory(tmp_path, monkeypatch) -> None:
    from flowfit import runner

    def diverging_fit(*args, **kwargs):
        raise TrainingDivergedError("training diverged at step 7: loss nan")

    monkeypatch.setattr(runner, "fit", diverging_fit)
    out = tmp_path / "run"
    assert failed_cleanly(run("train", "--steps", "10", "--out", out, *SMALL), "diverged at step 7")
    assert not out.exists() and not (tmp_path / "run.partial").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"training": {"steps": "many"}}, "steps (--steps) must be an integer or null"),
        ({"training": {"lr": -1}}, "lr (--lr) must be a positive number"),
        ({"hidden": [1e6, 1e6]}, "hidden (--hidden) must be a list of integers"),
        ({"layers": True}, "layers (--layers) must be an integer"),
        ({"flow": "nonesuch"}, "not a flow family"),
        ({"speed": "fast"}, "unknown settings: speed"),
        ({"training": {"speed": 1}}, "unknown training option(s): speed"),
    ],
)
def test_run_json_is_checked_like_the_command_line(tmp_path, settings: dict, message: str) -> None:
    partial = tmp_path / "r.partial"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps(settings))
    result = run("train", "--resume", tmp_path / "r")
    assert failed_cleanly(result, message)
    with pytest.raises(InputError, match="must be"):
        RunSettings(layers=0)


def test_one_column_gets_the_spline_and_the_run_says_which(tmp_path) -> None:
    data = tmp_path / "one.csv"
    np.savetxt(data, np.random.default_rng(0).normal(size=(200, 1)), header="v", comments="")
    result = run("train", "--data", data, "--flow", "realnvp", "--steps", "5", "--out", tmp_path / "r", *SMALL[2:])
    assert result.exit_code == 0
    assert "realnvp needs at least 2 columns; training nsf-ar" in result.output
    assert "training nsf-ar" in result.output and "training realnvp" not in result.output
    assert json.loads((tmp_path / "r" / "config.json").read_text())["metadata"]["flow"] == "nsf-ar"


def test_val_fraction_splits_a_table(tmp_path) -> None:
    out = tmp_path / "run"
    assert (
        run(
            "train", "--data", houses(tmp_path), "--val-fraction", "0.3", "--steps", "3", "--out", out, *SMALL
        ).exit_code
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["val_size"], metrics["test_size"]) == (150, 50)


def test_metrics_count_skipped_steps_and_are_strict_json(tmp_path) -> None:
    out = tmp_path / "run"
    assert run("train", "--steps", "20", "--out", out, *SMALL).exit_code == 0
    text = (out / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert metrics["skipped_steps"] == 0 and metrics["rollbacks"] == 0 and metrics["flow"] == "realnvp"


def test_sigterm_keeps_a_resumable_checkpoint(tmp_path) -> None:
    out = tmp_path / "run"
    process, _ = long_run(out, until=tmp_path / "run.partial" / "log.csv")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr
    settings = RunSettings.load(out)
    assert settings.training.steps == 100000
    assert (tmp_path / "run.partial" / "checkpoint" / "checkpoint.safetensors").exists()
    assert not [p for p in os.listdir(tmp_path) if "flowfit-tmp" in p]


def test_resume_refuses_data_that_changed_and_keeps_the_columns_it_started_with(tmp_path, monkeypatch) -> None:
    """Rows added to the file, or its columns reordered, and --resume carried on silently."""

    from flowfit import runner

    data = houses(tmp_path)
    out = tmp_path / "run"
    real_fit = interrupt_training_at(monkeypatch, 4)
    assert run("train", "--data", data, "--steps", "40", "--val-every", "2", "--out", out, *SMALL).exit_code == 130
    monkeypatch.setattr(runner, "fit", real_fit)
    assert RunSettings.load(out).columns == ["area", "price"]  # resolved when the run started
    original = data.read_text()
    data.write_text(original + original.splitlines()[1] + "\n")
    assert failed_cleanly(run("train", "--resume", out), "changed since the run started")
    data.write_text(original)
    os.utime(data, ns=(0, 0))  # the same bytes, but not the same file as far as the run can tell
    assert failed_cleanly(run("train", "--resume", out), "changed since the run started")


def test_a_resumed_run_that_diverges_keeps_its_checkpoint(tmp_path, monkeypatch) -> None:
    from flowfit import runner

    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps(RunSettings(out=str(out)).to_json()))
    (partial / "precious").write_text("checkpoint")

    def diverging_fit(*args, **kwargs):
        raise TrainingDivergedError("training diverged at step 7: loss nan")

    monkeypatch.setattr(runner, "fit", diverging_fit)
    assert failed_cleanly(run("train", "--resume", out), "diverged at step 7")
    assert (partial / "precious").read_text() == "checkpoint"


def test_a_file_without_a_header_is_announced(tmp_path) -> None:
    data = tmp_path / "years.csv"
    rng = np.random.default_rng(0)
    np.savetxt(data, np.vstack(([2020, 2021], rng.normal(size=(200, 2)))), delimiter=",")  # a header of years?
    result = run("train", "--data", data, "--steps", "3", "--out", tmp_path / "r", *SMALL)
    assert result.exit_code == 0 and "has no header row: its columns are x0, x1, by position" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--out", "."), "does not name a directory"),
        (("--out", "r", "--seed", "99999999999999999999"), "seed (--seed) must lie in"),
        (("--out", "r", "--device", "meta"), "not a device flowfit trains on"),
        (("--out", "r", "--batch-size", "0"), "batch_size (--batch-size) must be a positive integer"),
        (("--out", "r", "--columns", "a,"), "empty name"),
        (("--out", "r", "--given", ""), "empty name"),
    ],
)
def test_odd_arguments_get_one_line(tmp_path, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    assert failed_cleanly(run("train", "--steps", "3", *SMALL, *args), message)
    assert os.listdir(tmp_path) == []


def test_a_full_disk_is_one_line(tmp_path) -> None:
    out = tmp_path / "run"
    assert run("train", "--steps", "3", "--out", out, *SMALL).exit_code == 0
    if not os.path.exists("/dev/full"):
        pytest.fail("/dev/full is missing on this machine")
    result = run("sample", "--model", out, "-n", "100000", "--out", "/dev/full")
    assert failed_cleanly(result, "No space left on device")


def test_outputs_say_what_they_are_and_keep_every_digit(tmp_path) -> None:
    """A float64 model's samples were written with 8 digits: timestamps lost their spread."""
    data = tmp_path / "stamps.csv"
    rng = np.random.default_rng(0)
    np.savetxt(data, np.column_stack((1.7e9 + rng.uniform(0, 100, 300), rng.normal(size=300))), delimiter=",",
               header="t,v", comments="", fmt="%.17g")  # fmt: skip
    out = tmp_path / "run"
    assert failed_cleanly(run("train", "--data", data, "--steps", "3", "--out", out, *SMALL), "rounds in steps of 128")
    assert run("train", "--data", data, "--steps", "3", "--dtype", "float64", "--out", out, *SMALL).exit_code == 0
    samples = tmp_path / "s.csv"
    assert run("sample", "--model", out, "-n", "200", "--out", samples).exit_code == 0
    t = np.loadtxt(samples, delimiter=",", skiprows=1)[:, 0]
    assert len(np.unique(t)) == 200 and t.std() > 1  # 8 digits made them a handful of values
    assert failed_cleanly(run("sample", "--model", out, "--out", tmp_path / "s.npy"), "writes CSV")
    tsv = tmp_path / "s.tsv"
    assert run("sample", "--model", out, "-n", "3", "--out", tsv).exit_code == 0
    assert tsv.read_text().splitlines()[0] == "t\tv"


def test_warnings_are_one_line_like_errors(tmp_path, monkeypatch) -> None:
    import warnings

    from flowfit import runner
    from flowfit.errors import FlowfitWarning

    real_fit = runner.fit

    def warning_fit(*args, **kwargs):
        warnings.warn("training never beat the untrained flow", FlowfitWarning, stacklevel=2)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", warning_fit)
    result = run("train", "--steps", "3", "--out", tmp_path / "r", *SMALL)
    assert result.exit_code == 0
    assert result.stderr.strip().splitlines() == ["warning: training never beat the untrained flow"]


def test_a_run_with_categories_and_dropped_rows_resumes_with_them(tmp_path, monkeypatch) -> None:

    from flowfit import runner
    from flowfit.categories import categories_of
    from flowfit.io import load

    rng = np.random.default_rng(0)
    lines = ["id,colour,x,y"] + [
        f"{i},{rng.choice(['red', 'blue'])},{rng.normal():.5f},{'' if i == 7 else f'{rng.normal():.5f}'}"
        for i in range(200)
    ]
    data = tmp_path / "t.csv"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    real_fit = interrupt_training_at(monkeypatch, 4)
    arguments = ("--data", data, "--columns", "x,colour,y", "--missing", "drop", "--steps", "20", "--val-every", "2")
    assert run("train", *arguments, "--out", out, *SMALL).exit_code == 130
    monkeypatch.setattr(runner, "fit", real_fit)
    settings = RunSettings.load(out)
    assert (settings.columns, settings.missing) == (["x", "y", "colour"], "drop")
    result = run("train", "--resume", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "dropped 1 of 200 rows" in result.output
    assert categories_of(load(out)).levels == [["blue", "red"]]
    with pytest.raises(InputError, match="--missing marginal scores rows"):
        RunSettings(missing="marginal")
