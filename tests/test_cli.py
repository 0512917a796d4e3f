"""The ``flowfit`` command end to end on a tiny budget, and its answers to bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from flowfit import datasets, sources
from flowfit.cli import app
from flowfit.train import split_indices

from .helpers import interrupt_training_at

runner = CliRunner()
SMALL_TEST_SET = 5000


@pytest.fixture(autouse=True, scope="module")
def small_test_sets():
    """Score runs on 5,000 test points instead of 100,000: these tests check plumbing."""
    original, sources.TEST_SIZE = sources.TEST_SIZE, SMALL_TEST_SET
    yield
    sources.TEST_SIZE = original


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    result = run(
        "train",
        "--data",
        "moons",
        "--layers",
        "2",
        "--hidden",
        "16",
        "--steps",
        "40",
        "--batch-size",
        "128",
        "--out",
        out,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_the_run_directory(model_dir) -> None:
    names = {p.name for p in model_dir.iterdir()}
    expected = {
        "model.safetensors",
        "config.json",
        "metrics.json",
        "history.csv",
        "samples.png",
        "density.png",
        "layers.png",
        "flow.gif",
        "loss.png",
        "loglik.png",
        "tensorboard",  # the dev environment has TensorBoard
    }
    assert expected <= names
    assert not [n for n in names if n.startswith(".")], "no temporary files left"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    for key in (
        "train_nll",
        "val_nll",
        "test_nll",
        "test_nll_stderr",
        "steps",
        "seconds",
        "params",
        "flowfit_version",
        "torch_version",
        "entropy_floor",
    ):
        assert key in metrics
    assert metrics["steps"] == 40 and metrics["test_size"] == SMALL_TEST_SET
    assert metrics["entropy_floor"] < metrics["test_nll"] < 2.5
    gif = Image.open(model_dir / "flow.gif")
    assert gif.n_frames > 3 * 10  # 3 states held, 2 transitions interpolated


def test_sample_density_animate(model_dir, tmp_path) -> None:
    samples = tmp_path / "samples.csv"
    result = run("sample", "--model", model_dir, "-n", "300", "--out", samples, "--seed", "1")
    assert result.exit_code == 0, result.output
    values = np.loadtxt(samples, delimiter=",", skiprows=1)
    assert values.shape == (300, 2) and np.isfinite(values).all()

    logp = tmp_path / "logp.csv"
    result = run("density", "--model", model_dir, "--input", samples, "--out", logp)
    assert result.exit_code == 0, result.output
    log_p = np.loadtxt(logp, skiprows=1)
    assert log_p.shape == (300,) and np.isfinite(log_p).all()

    gif = tmp_path / "flow.gif"
    result = run("animate", "--model", model_dir, "--out", gif, "-n", "200", "--frames", "3")
    assert result.exit_code == 0, result.output
    assert Image.open(gif).n_frames > 3


def test_train_on_a_csv_file(tmp_path) -> None:
    data = tmp_path / "data.csv"
    rng = np.random.default_rng(0)
    table = np.column_stack((rng.normal(1000, 200, 400), rng.normal(5, 1, 400), rng.normal(0, 1, 400)))
    np.savetxt(data, table, delimiter=",", header="area,price,noise", comments="")
    out = tmp_path / "run"
    result = run(
        "train",
        "--data",
        data,
        "--layers",
        "2",
        "--hidden",
        "8",
        "--steps",
        "5",
        "--out",
        out,
        "--no-progress",
        "--no-plots",
        "--columns",
        "area,price",
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["metadata"]["columns"] == ["area", "price"]
    result = run("sample", "--model", out, "-n", "5", "--out", tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == "area,price"


def assert_clean_failure(result, message: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("x0,x1\n1,y\n", "is not a number"),
        ("", "empty"),
        ("x0,x1\n1,nan\n", "NaN"),
        ("1,2\n3,inf\n", "inf"),
        ("1,2,3\n4,5,6\n", "3 columns and no header, but the model expects 2"),
        ("1\n2\n", "1 columns and no header, but the model expects 2"),
        ("a,b,c\n1,2,3\n", "no column named 'x0', 'x1' (the model's columns have no names"),
    ],
)
def test_density_rejects_bad_input(model_dir, tmp_path, content: str, message: str) -> None:
    points = tmp_path / "points.csv"
    points.write_text(content)
    out = tmp_path / "logp.csv"
    assert_clean_failure(run("density", "--model", model_dir, "--input", points, "--out", out), message)
    assert not out.exists()


def test_missing_and_corrupt_models(model_dir, tmp_path) -> None:
    out = tmp_path / "s.csv"
    assert_clean_failure(run("sample", "--model", tmp_path / "nowhere", "--out", out), "does not exist")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    assert_clean_failure(run("sample", "--model", broken, "--out", out), "corrupt or truncated")
    assert not out.exists()


@pytest.mark.parametrize("n", ["0", "-5"])
def test_sample_count_must_be_positive(model_dir, tmp_path, n: str) -> None:
    assert_clean_failure(run("sample", "--model", model_dir, "-n", n, "--out", tmp_path / "s.csv"), "positive")


def test_existing_outputs_are_not_overwritten(model_dir, tmp_path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
    result = run("train", "--steps", "1", "--out", model_dir, "--no-progress")
    assert_clean_failure(result, "already exists")
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == before
    existing = tmp_path / "s.csv"
    existing.write_text("keep me")
    assert_clean_failure(run("sample", "--model", model_dir, "--out", existing), "already exists")
    assert existing.read_text() == "keep me"


def test_bad_train_arguments(tmp_path) -> None:
    out = tmp_path / "run"
    assert_clean_failure(run("train", "--data", "nonesuch", "--out", out), "neither a file nor")
    assert_clean_failure(run("train", "--flow", "nonesuch", "--out", out), "not a flow family")
    assert_clean_failure(run("train", "--steps", "0", "--out", out), "steps (--steps) must be a positive integer")
    constant = tmp_path / "constant.csv"
    constant.write_text("a,b\n" + "".join(f"{i},1\n" for i in range(50)))
    assert_clean_failure(run("train", "--data", constant, "--out", out, "--no-progress"), "constant")
    few = tmp_path / "few.csv"
    few.write_text("a,b\n1,2\n3,5\n")
    assert_clean_failure(run("train", "--data", few, "--out", out), "too few")
    assert not out.exists()


def test_help_and_module_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "flowfit", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "sample", "density", "animate"):
        assert command in result.stdout


def test_conditional_train_sample_density(tmp_path) -> None:
    rng = np.random.default_rng(0)
    area = rng.uniform(500, 3000, 600)
    price = 100 * area + rng.normal(0, 20000, 600)
    data = tmp_path / "houses.csv"
    np.savetxt(
        data,
        np.column_stack((price, area, rng.normal(size=600))),
        delimiter=",",
        comments="",
        header="price,livingArea,other",
    )
    out = tmp_path / "run"
    result = run(
        "train",
        "--data",
        data,
        "--columns",
        "price",
        "--given",
        "livingArea",
        "--flow",
        "maf",
        "--layers",
        "2",
        "--hidden",
        "8",
        "--steps",
        "5",
        "--out",
        out,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "p(price | livingArea)" in result.output
    samples = tmp_path / "s.csv"
    result = run("sample", "--model", out, "-n", "50", "--given", "livingArea=2000", "--out", samples)
    assert result.exit_code == 0, result.output
    values = np.loadtxt(samples, delimiter=",", skiprows=1)
    assert values.shape == (50,) and np.isfinite(values).all()
    logp = tmp_path / "logp.csv"
    result = run("density", "--model", out, "--input", data, "--out", logp)  # picks price and livingArea by name
    assert result.exit_code == 0, result.output
    assert np.loadtxt(logp, skiprows=1).shape == (600,)
    assert_clean_failure(run("sample", "--model", out, "--out", tmp_path / "x.csv"), "conditional")
    assert_clean_failure(
        run("sample", "--model", out, "--given", "area=3", "--out", tmp_path / "x.csv"), "exactly livingArea=VALUE"
    )
    no_header = tmp_path / "plain.csv"
    no_header.write_text("1,2\n")
    assert_clean_failure(
        run("density", "--model", out, "--input", no_header, "--out", logp.with_name("logp2.csv")), "needs a header"
    )
    assert_clean_failure(run("train", "--data", data, "--given", "nope", "--out", tmp_path / "r2"), "no column")


@pytest.mark.parametrize("flow", ["nsf", "nsf-ar", "maf", "iaf", "nice", "glow"])
def test_every_family_trains_from_the_cli(tmp_path, flow: str) -> None:
    out = tmp_path / flow
    result = run(
        "train",
        "--flow",
        flow,
        "--layers",
        "2",
        "--hidden",
        "8",
        "--steps",
        "3",
        "--out",
        out,
        "--no-progress",
        "--no-plots",
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["metadata"]["flow"] == flow


def test_continuous_flow_from_the_cli(tmp_path) -> None:
    out = tmp_path / "cnf"
    result = run(
        "train",
        "--data",
        "logo",
        "--flow",
        "cnf",
        "--objective",
        "fm",
        "--hidden",
        "16,16",
        "--steps",
        "20",
        "--out",
        out,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert {"flow.gif", "layers.png", "density.png"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nfe_sample"] > 0 and metrics["nfe_log_prob"] > 0 and metrics["nfe_rows"] == 4096
    # the picture's exact density: KL = test NLL - entropy; TV against the pixel probabilities
    assert metrics["gap_to_floor"] == pytest.approx(metrics["test_nll"] - metrics["entropy_floor"])
    assert metrics["gap_to_floor"] > 0 and 0 < metrics["sample_tv_floor"] < 0.1 < metrics["sample_tv"] <= 1
    gif = tmp_path / "cnf.gif"
    result = run("animate", "--model", out, "--out", gif, "-n", "100", "--frames", "5")
    assert result.exit_code == 0, result.output
    assert Image.open(gif).n_frames >= 5
    assert_clean_failure(run("train", "--flow", "realnvp", "--objective", "fm", "--out", tmp_path / "x"), "cnf")
    assert_clean_failure(run("train", "--data", "image:/nonexistent.png", "--out", tmp_path / "x"), "readable")


def test_interrupted_run_resumes_from_the_cli(tmp_path, monkeypatch) -> None:
    from flowfit import runner as training_runner
    from flowfit.io import load

    arguments = [
        "train",
        "--layers",
        "2",
        "--hidden",
        "8",
        "--steps",
        "40",
        "--batch-size",
        "64",
        "--no-progress",
        "--no-plots",
        "--checkpoint-every",
        "0",
    ]
    assert run(*arguments, "--out", tmp_path / "straight").exit_code == 0
    real_fit = interrupt_training_at(monkeypatch, 20)
    result = run(*arguments, "--out", tmp_path / "run")
    assert result.exit_code == 130 and "--resume" in result.output
    assert not (tmp_path / "run").exists() and (tmp_path / "run.partial" / "run.json").exists()
    monkeypatch.setattr(training_runner, "fit", real_fit)
    assert_clean_failure(run(*arguments, "--out", tmp_path / "run"), "interrupted run")
    result = run("train", "--resume", tmp_path / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run.partial").exists()
    x = torch.randn(50, 2)
    assert torch.equal(load(tmp_path / "run").log_prob(x), load(tmp_path / "straight").log_prob(x))
    assert_clean_failure(run("train", "--resume", tmp_path / "nowhere"), "nothing to resume")


def test_density_streams_in_chunks_with_the_same_numbers(model_dir, tmp_path) -> None:
    points = tmp_path / "points.csv"
    np.savetxt(points, np.random.default_rng(0).normal(size=(1000, 2)), delimiter=",", header="x0,x1", comments="")
    whole, chunked = tmp_path / "whole.csv", tmp_path / "chunked.csv"
    assert run("density", "--model", model_dir, "--input", points, "--out", whole).exit_code == 0
    assert run("density", "--model", model_dir, "--input", points, "--out", chunked, "--chunk-rows", "7").exit_code == 0
    # the same rows and the same numbers up to float32 rounding: a matrix product of 7 rows may
    # take another kernel than one of 1,000, and round differently (on some CPUs it does)
    assert whole.read_text().splitlines()[0] == chunked.read_text().splitlines()[0] == "log_prob"
    np.testing.assert_allclose(np.loadtxt(chunked, skiprows=1), np.loadtxt(whole, skiprows=1), rtol=1e-6)
    assert len(np.loadtxt(chunked, skiprows=1)) == 1000
    npy = tmp_path / "points.npy"
    np.save(npy, np.loadtxt(points, delimiter=",", skiprows=1))
    from_npy = tmp_path / "npy.csv"
    assert run("density", "--model", model_dir, "--input", npy, "--out", from_npy, "--chunk-rows", "100").exit_code == 0
    np.testing.assert_allclose(np.loadtxt(from_npy, skiprows=1), np.loadtxt(whole, skiprows=1), rtol=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("x0,x1\n" + "1,2\n" * 50 + "1,oops\n")
    out = tmp_path / "never.csv"
    assert_clean_failure(
        run("density", "--model", model_dir, "--input", bad, "--out", out, "--chunk-rows", "10"), "line 52"
    )
    assert not out.exists()


def test_bundled_tables_train_from_the_cli(tmp_path) -> None:
    result = run(
        "train",
        "--data",
        "digits",
        "--flow",
        "nsf",
        "--layers",
        "1",
        "--hidden",
        "8",
        "--steps",
        "3",
        "--out",
        tmp_path / "digits",
        "--no-progress",
        "--no-plots",
    )
    assert result.exit_code == 0, result.output
    assert "dequantize+logit[0,17]" in result.output and "bits/dim" in result.output
    result = run(
        "train",
        "--data",
        "saratoga",
        "--columns",
        "price",
        "--given",
        "livingArea",
        "--steps",
        "3",
        "--hidden",
        "8",
        "--out",
        tmp_path / "price",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "p(price | livingArea)" in result.output


def test_a_npy_file_trains_from_disk_as_its_csv_does(tmp_path, monkeypatch) -> None:
    """``--data file.npy`` stays memory-mapped (read a batch at a time; its validation and
    test rows scored a chunk at a time, here of 16 rows) and gives the run the same file as CSV
    would, number for number."""
    from flowfit.train import trainer

    monkeypatch.setattr(trainer, "CHUNK_ROWS", 16)
    rng = np.random.default_rng(0)
    table = np.column_stack((rng.gamma(2.0, 3.0, 600), rng.normal(5, 1, 600))).astype(np.float32)
    np.save(tmp_path / "data.npy", table)
    np.savetxt(tmp_path / "data.csv", table, delimiter=",", fmt="%.9g")
    metrics = []
    for name in ("data.npy", "data.csv"):
        out = tmp_path / name.replace(".", "-")
        args = ("--layers", "2", "--hidden", "8", "--steps", "20", "--out", out, "--no-progress", "--no-plots")
        result = run("train", "--data", tmp_path / name, *args)
        assert result.exit_code == 0, result.output
        metrics.append(json.loads((out / "metrics.json").read_text()))
    for key in ("test_nll", "test_nll_stderr", "val_nll"):
        assert metrics[0][key] == pytest.approx(metrics[1][key], rel=1e-6)
    assert metrics[0]["test_size"] == metrics[1]["test_size"] == 60
    broken = table.copy()
    broken[100, 1] = np.inf
    np.save(tmp_path / "broken.npy", broken)
    result = run("train", "--data", tmp_path / "broken.npy", "--steps", "2", "--out", tmp_path / "b", "--no-progress")
    assert_clean_failure(result, "inf")
    assert not (tmp_path / "b").exists()


def test_sample_writes_more_rows_than_a_chunk(model_dir, tmp_path) -> None:
    out = tmp_path / "many.csv"
    result = run("sample", "--model", model_dir, "-n", "70000", "--out", out, "--seed", "0")
    assert result.exit_code == 0, result.output
    values = np.loadtxt(out, delimiter=",", skiprows=1)
    assert out.read_text().splitlines()[0] == "x0,x1"
    assert values.shape == (70000, 2) and np.isfinite(values).all()
    # the second chunk is fresh draws, not a copy of the first
    assert not np.allclose(values[:4464], values[65536:])


# -- regression tests: answers that were silently wrong, and dead ends -------------------------
def area_price_model(tmp_path):
    """A model trained on a CSV with header ``area,price``, and that CSV."""
    rng = np.random.default_rng(0)
    area = rng.gamma(4.0, 300.0, 400) + 500
    table = np.column_stack((area, 100 * area + rng.normal(0, 2e4, 400)))
    data = tmp_path / "ap.csv"
    np.savetxt(data, table, delimiter=",", header="area,price", comments="", fmt="%.6f")
    out = tmp_path / "model"
    args = ("--layers", "2", "--hidden", "8", "--steps", "30", "--no-progress", "--no-plots")
    assert run("train", "--data", data, "--out", out, *args).exit_code == 0
    return out, table


def test_density_matches_columns_by_name_whatever_their_order(tmp_path) -> None:
    """A file headed ``price,area`` against an ``area,price`` model was scored by position
    (log p around -1.5e12, exit 0)."""
    model, table = area_price_model(tmp_path)
    in_order, swapped = tmp_path / "ap2.csv", tmp_path / "pa.csv"
    np.savetxt(in_order, table, delimiter=",", header="area,price", comments="", fmt="%.6f")
    np.savetxt(swapped, table[:, ::-1], delimiter=",", header="price,area", comments="", fmt="%.6f")
    with_id = tmp_path / "id.csv"
    np.savetxt(with_id, np.column_stack((np.arange(400), table[:, ::-1])), delimiter=",", header="id,price,area",
               comments="", fmt="%.6f")  # fmt: skip
    results = []
    for points in (in_order, swapped, with_id):
        out = tmp_path / f"{points.stem}-logp.csv"
        assert run("density", "--model", model, "--input", points, "--out", out).exit_code == 0
        results.append(np.loadtxt(out, skiprows=1))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    assert results[0].mean() > -25  # nats in dollars and square feet, not -1e12


def test_density_refuses_a_headerless_file_of_another_width(tmp_path) -> None:
    """Three columns without a header against a two-column model were scored as the first two."""
    model, table = area_price_model(tmp_path)
    three = tmp_path / "three.csv"
    np.savetxt(three, np.column_stack((table, table[:, :1])), delimiter=",", fmt="%.6f")
    out = tmp_path / "o.csv"
    assert_clean_failure(run("density", "--model", model, "--input", three, "--out", out), "3 columns and no header")
    assert not out.exists()
    wrong_names = tmp_path / "wrong.csv"
    np.savetxt(wrong_names, table, delimiter=",", header="a,b", comments="", fmt="%.6f")
    assert_clean_failure(run("density", "--model", model, "--input", wrong_names, "--out", out), "no column named")


def test_density_refuses_values_the_model_dtype_cannot_hold(tmp_path) -> None:
    model, table = area_price_model(tmp_path)
    huge = tmp_path / "huge.csv"
    table[3, 1] = 1e300  # was scored nan, exit 0
    np.savetxt(huge, table, delimiter=",", header="area,price", comments="", fmt="%.6g")
    out = tmp_path / "o.csv"
    result = run("density", "--model", model, "--input", huge, "--out", out)
    assert_clean_failure(result, "row 4, column 'price' is 1e+300, beyond the largest float32")
    assert not out.exists()


def test_far_away_points_and_contexts_get_a_warning(tmp_path, model_dir) -> None:
    points = tmp_path / "p.csv"
    points.write_text("x0,x1\n0.5,0.2\n1e6,-1e6\n")
    result = run("density", "--model", model_dir, "--input", points, "--out", tmp_path / "o.csv")
    assert result.exit_code == 0
    assert "warning: 1 of 2 rows lie far outside the training data" in result.stderr
    rng = np.random.default_rng(0)
    data = tmp_path / "c.csv"
    np.savetxt(data, np.column_stack((rng.normal(size=300), rng.uniform(0, 1, 300))), delimiter=",",
               header="y,c", comments="")  # fmt: skip
    conditional = tmp_path / "conditional"
    args = ("--columns", "y", "--given", "c", "--steps", "5", "--hidden", "8", "--no-progress", "--no-plots")
    assert run("train", "--data", data, "--out", conditional, *args).exit_code == 0
    result = run("sample", "--model", conditional, "--given", "c=1e9", "-n", "5", "--out", tmp_path / "s.csv")
    assert result.exit_code == 0 and "1 of 1 --given rows lie far outside" in result.stderr
    result = run("sample", "--model", conditional, "--given", "c=0.5", "-n", "5", "--out", tmp_path / "t.csv")
    assert result.exit_code == 0 and "warning" not in result.stderr


@pytest.mark.parametrize(
    "given",
    [["c=1,c=2"], ["c=1", "c=2"], ["c=1", "d=2"], ["c"], ["c=inf"]],
    ids=["comma", "twice", "extra", "bare", "inf"],
)
def test_sample_refuses_ambiguous_contexts(tmp_path, given) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "c.csv"
    np.savetxt(data, rng.normal(size=(100, 2)), delimiter=",", header="y,c", comments="")
    out = tmp_path / "m"
    args = ("--columns", "y", "--given", "c", "--steps", "3", "--hidden", "8", "--no-progress", "--no-plots")
    assert run("train", "--data", data, "--out", out, *args).exit_code == 0
    options = [part for value in given for part in ("--given", value)]
    assert_clean_failure(run("sample", "--model", out, *options, "--out", tmp_path / "s.csv"), "--given")


def test_outputs_that_are_not_regular_files(model_dir, tmp_path) -> None:
    """/dev/null was replaced by a regular file; a directory or a path through a file crashed."""
    result = run("sample", "--model", model_dir, "-n", "3", "--out", "/dev/null", "--force")
    assert result.exit_code == 0
    import stat

    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)
    result = run("sample", "--model", model_dir, "-n", "4", "--out", "-", "--seed", "0")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "x0,x1" and len(result.stdout.splitlines()) == 5
    assert_clean_failure(run("sample", "--model", model_dir, "--out", model_dir), "is a directory")
    afile = tmp_path / "afile"
    afile.write_text("")
    assert_clean_failure(run("sample", "--model", model_dir, "--out", afile / "x.csv"), "is not a directory")
    assert_clean_failure(run("density", "--model", model_dir, "--input", afile, "--out", tmp_path), "is a directory")


def test_animate_writes_only_gifs_and_takes_a_context(tmp_path, model_dir) -> None:
    assert_clean_failure(run("animate", "--model", model_dir, "--out", tmp_path / "x.png"), "ending in .gif")
    assert not (tmp_path / "x.png").exists()
    data = tmp_path / "c.csv"
    x, label = datasets.labelled_moons(400, seed=0)
    np.savetxt(data, torch.cat([x, label], 1).numpy(), delimiter=",", header="a,b,label", comments="")
    out = tmp_path / "m"
    args = ("--columns", "a,b", "--given", "label", "--steps", "3", "--hidden", "8", "--no-progress", "--no-plots")
    assert run("train", "--data", data, "--out", out, *args).exit_code == 0
    assert_clean_failure(run("animate", "--model", out, "--out", tmp_path / "a.gif"), "conditional")
    result = run("animate", "--model", out, "--given", "label=1", "--out", tmp_path / "a.gif", "-n", "50")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "a.gif").n_frames > 3


def test_duplicates_are_errors(tmp_path) -> None:
    data = tmp_path / "d.csv"
    np.savetxt(data, np.random.default_rng(0).normal(size=(100, 3)), delimiter=",", header="a,b,c", comments="")
    out = tmp_path / "r"
    assert_clean_failure(run("train", "--data", data, "--columns", "a,a", "--out", out), "'a' more than once")
    assert_clean_failure(run("train", "--data", data, "--given", "b", "--given", "b", "--out", out), "'b' more than")
    preprocess = "a=log,a=none"
    assert_clean_failure(run("train", "--data", data, "--preprocess", preprocess, "--out", out), "column 'a' twice")
    doubled = tmp_path / "doubled.csv"
    doubled.write_text("a,a\n1,2\n3,4\n")
    assert_clean_failure(run("train", "--data", doubled, "--out", out), "names column 'a' twice")
    assert not out.exists()


def test_an_option_given_twice_is_refused() -> None:
    from flowfit.cli import main

    for args in (["train", "--lr", "1e-3", "--lr", "2e-3"], ["sample", "--model", "m", "-n", "2", "-n", "3"]):
        with pytest.raises(Exception, match="given more than once"):
            typer_command().main(args=args, prog_name="flowfit", standalone_mode=False)
    assert main(["train", "--steps", "abc"]) == 2  # a usage error: one line, no traceback


def typer_command():
    import typer

    return typer.main.get_command(app)


def test_help_shows_each_family_default_and_version() -> None:
    result = run("train", "--help")
    assert "[default: realnvp 6, nsf 4, nsf-ar 4, nsf-ar-ordered 4, maf 5, iaf 5, nice 6, glow 6]" in " ".join(
        result.output.split()
    )
    assert "[default: realnvp 10000, nsf 10000" in " ".join(result.output.split())
    from flowfit import __version__

    assert run("--version").output.strip() == f"flowfit {__version__}"


def test_generated_data_refuse_table_options_and_resume_refuses_other_options(tmp_path) -> None:
    out = tmp_path / "r"
    assert_clean_failure(run("train", "--preprocess", "log", "--out", out), "generated data")
    assert_clean_failure(run("train", "--columns", "x0", "--out", out), "generated data")
    assert_clean_failure(run("train", "--val-fraction", "0.3", "--out", out), "validated on 10,000 fresh draws")
    assert_clean_failure(run("train", "--resume", out, "--lr", "0.1"), "do not pass --lr")
    assert_clean_failure(run("train", "--schedule", "nope", "--out", out), "schedule (--schedule) must be one of")
    assert not out.exists() and not (tmp_path / "r.partial").exists()


def test_an_npz_array_is_chosen_by_name(tmp_path) -> None:
    archive = tmp_path / "t.npz"
    np.savez(archive, train=np.random.default_rng(0).normal(size=(100, 2)), other=np.zeros(3))
    out = tmp_path / "r"
    assert_clean_failure(run("train", "--data", archive, "--out", out), "choose one as")
    args = ("--steps", "3", "--hidden", "8", "--no-progress", "--no-plots")
    result = run("train", "--data", f"{archive}:train", "--out", out, *args)
    assert result.exit_code == 0, result.output
    points = tmp_path / "p.npz"
    np.savez(points, a=np.zeros((5, 2)), b=np.ones((2, 2)))
    result = run("density", "--model", out, "--input", f"{points}:b", "--out", tmp_path / "o.csv")
    assert result.exit_code == 0 and len((tmp_path / "o.csv").read_text().splitlines()) == 3


def test_sigterm_during_sample_leaves_nothing_behind(model_dir, tmp_path) -> None:
    import signal
    import time

    out = tmp_path / "huge.csv"
    command = [
        sys.executable,
        "-m",
        "flowfit",
        "sample",
        "--model",
        str(model_dir),
        "-n",
        "50000000",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".huge.csv.flowfit-tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".huge.csv.flowfit-tmp-*")), "the temporary never appeared"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert "Traceback" not in process.stderr.read()
    assert list(tmp_path.iterdir()) == []


def test_animate_draws_a_picture_model_as_densities_in_the_picture_aspect(tmp_path) -> None:
    wide = tmp_path / "wide.png"
    picture = Image.new("L", (60, 20), 255)  # twice ... three times as wide as tall
    picture.paste(0, (5, 5, 55, 15))
    picture.save(wide)
    out = tmp_path / "m"
    args = ("--flow", "cnf", "--objective", "fm", "--steps", "3", "--hidden", "8", "--no-progress", "--no-plots")
    assert run("train", "--data", f"image:{wide}", "--out", out, *args).exit_code == 0
    assert json.loads((out / "config.json").read_text())["metadata"]["picture"] == [20, 60]
    gif = tmp_path / "a.gif"
    result = run("animate", "--model", out, "--out", gif, "-n", "3000", "--frames", "3")
    assert result.exit_code == 0, result.output
    frame = Image.open(gif)
    assert frame.width > 2 * frame.height  # the picture's aspect, not a square of dots
    dots = tmp_path / "dots.gif"
    assert run("animate", "--model", out, "--out", dots, "-n", "300", "--frames", "3", "--style", "dots").exit_code == 0
    assert Image.open(dots).width < 1.5 * Image.open(dots).height
    assert_clean_failure(run("animate", "--model", out, "--out", tmp_path / "b.gif", "--style", "blur"), "--style")


def test_a_picture_is_read_once_and_its_metrics_are_of_what_was_trained_on(tmp_path, monkeypatch) -> None:
    """Regression: every training step read the file again, and the closing metrics (the
    entropy floor, KL, TV) read it once more: a picture replaced during the run changed the
    draws midway and the KL was measured against the new one."""
    from flowfit import datasets

    path, reads = tmp_path / "p.png", []
    picture = Image.new("L", (40, 20), 255)
    picture.paste(0, (2, 2, 12, 18))  # a dark block on the left
    picture.save(path)
    original = datasets.PictureDensity(path)
    read = datasets.image_darkness

    def read_then_replace(where):
        reads.append(where)
        darkness = read(where)
        other = Image.new("L", (40, 20), 255)
        other.paste(0, (28, 2, 38, 18))  # the block moved to the right
        other.save(path)
        return darkness

    monkeypatch.setattr(datasets, "image_darkness", read_then_replace)
    out = tmp_path / "m"
    args = ("--flow", "cnf", "--objective", "fm", "--steps", "5", "--hidden", "8", "--no-progress", "--no-plots")
    result = run("train", "--data", f"image:{path}", "--out", out, *args)
    assert result.exit_code == 0, result.output
    assert len(reads) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["entropy_floor"] == pytest.approx(original.entropy(), abs=1e-6)  # finite: the left block


# -- tables as a data person brings them: ids, text, categories, missing cells ----------------
def mixed_table(path: Path, n: int = 600, holes: tuple[int, ...] = ()) -> Path:
    """``id,name,cut,carat,price,rooms``: an id, free text, a categorical text column (cut, with
    probabilities 0.2, 0.3, 0.5), two continuous columns that depend on it, and integer rooms;
    the ``price`` cells of the rows ``holes`` (counted from 0) left empty."""
    rng = np.random.default_rng(0)
    cut = rng.choice(["Fair", "Good", "Ideal"], n, p=[0.2, 0.3, 0.5])
    carat = np.select([cut == "Fair", cut == "Good"], [-2.0, 0.0], 3.0) + rng.normal(0, 0.5, n)
    price = 2 * carat + rng.normal(0, 1, n)
    rooms = rng.integers(1, 4, n)
    lines = ["id,name,cut,carat,price,rooms"]
    for i in range(n):
        cell = "" if i in holes else f"{price[i]:.6f}"
        lines.append(f'{1000 + i},"house {i}, Zürich",{cut[i]},{carat[i]:.6f},{cell},{rooms[i]}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TINY = ("--layers", "2", "--hidden", "8", "--steps", "5", "--no-progress", "--no-plots")


def test_text_and_id_columns_that_are_not_modelled_are_skipped(tmp_path) -> None:
    data = mixed_table(tmp_path / "houses.csv")
    out = tmp_path / "run"
    result = run("train", "--data", data, "--columns", "carat,price", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert "skipped" not in result.output  # --columns chose: nothing to say
    # without --columns every numeric column is modelled, and the text columns are skipped by name
    result = run("train", "--data", data, "--out", tmp_path / "all", *TINY)
    assert result.exit_code == 0, result.output
    assert "note: skipped the text column(s) name, cut; name them in --columns" in result.output
    config = json.loads((tmp_path / "all" / "config.json").read_text())
    assert config["metadata"]["columns"] == ["id", "carat", "price", "rooms"]
    # density reads the model's columns by name, whatever else the file holds
    logp = tmp_path / "logp.csv"
    result = run("density", "--model", out, "--input", data, "--out", logp)
    assert result.exit_code == 0, result.output
    (tmp_path / "just.csv").write_text(
        "price,carat\n" + "".join(f"{p},{c}\n" for c, p in (line.split(",") for line in _just(data)))
    )
    result = run("density", "--model", out, "--input", tmp_path / "just.csv", "--out", tmp_path / "just_logp.csv")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.loadtxt(logp, skiprows=1), np.loadtxt(tmp_path / "just_logp.csv", skiprows=1))


def _just(data: Path) -> list[str]:
    """The carat and price cells of the mixed table, as written."""
    import csv

    rows = list(csv.reader(data.read_text(encoding="utf-8").splitlines()))[1:]
    return [f"{row[3]},{row[4]}" for row in rows]


def test_missing_cells_when_training(tmp_path) -> None:
    data = mixed_table(tmp_path / "holes.csv", holes=(4, 9, 300))
    out = tmp_path / "run"
    result = run("train", "--data", data, "--columns", "carat,price", "--out", out, *TINY)
    assert_clean_failure(result, "line 6, column 'price' is missing (empty); pass --missing drop")
    result = run("train", "--data", data, "--columns", "carat,price", "--out", out, "--missing", "marginal", *TINY)
    assert_clean_failure(result, "--missing marginal scores rows with missing cells (flowfit density)")
    assert_clean_failure(
        run("train", "--data", data, "--out", out, "--missing", "skip", *TINY), "--missing must be error or drop"
    )
    assert not out.exists()
    result = run("train", "--data", data, "--columns", "carat,price", "--out", out, "--missing", "drop", *TINY)
    assert result.exit_code == 0, result.output
    assert "note: dropped 3 of 600 rows with missing cells (--missing drop)" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    _, val, test = (len(i) for i in split_indices(597, (0.8, 0.1, 0.1)))  # the 597 complete rows, split
    assert (metrics["val_size"], metrics["test_size"]) == (val, test)


def test_a_column_of_numbers_with_a_stray_cell_is_refused_not_skipped(tmp_path) -> None:
    """Regression: without --columns, a price column with one text cell was taken for a text
    column and skipped with a note, and the run trained on the other columns with exit 0."""
    data = mixed_table(tmp_path / "houses.csv")
    lines = data.read_text(encoding="utf-8").splitlines()
    cells = lines[396].split(",")
    cells[-2] = "12 kg"  # the price of data row 396 (in the test split)
    (tmp_path / "typo.csv").write_text("\n".join([*lines[:396], ",".join(cells), *lines[397:]]) + "\n")
    out = tmp_path / "run"
    result = run("train", "--data", tmp_path / "typo.csv", "--out", out, *TINY)
    assert_clean_failure(
        result, "column 'price' holds numbers but row 396 holds '12 kg'; fix that cell, or leave the column out"
    )
    assert not out.exists()
    result = run("train", "--data", tmp_path / "typo.csv", "--columns", "carat,rooms", "--out", out, *TINY)
    assert result.exit_code == 0, result.output  # left out by name: the column may hold anything
    # R's NA for a missing price: a missing cell (an error by default), not a text column
    cells[-2] = "NA"
    (tmp_path / "r.csv").write_text("\n".join([*lines[:396], ",".join(cells), *lines[397:]]) + "\n")
    out = tmp_path / "r"
    assert_clean_failure(
        run("train", "--data", tmp_path / "r.csv", "--out", out, *TINY),
        "line 397, column 'price' is missing ('NA'); pass --missing drop",
    )
    result = run("train", "--data", tmp_path / "r.csv", "--out", out, "--missing", "drop", *TINY)
    assert result.exit_code == 0, result.output
    assert "note: dropped 1 of 600 rows with missing cells" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["metadata"]["columns"] == ["id", "carat", "price", "rooms"]


def test_a_parquet_column_of_numbers_stored_as_text_is_refused_not_skipped(tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "y": rng.normal(size=200)})
    frame["price"] = [f"{v:.2f}" for v in rng.normal(size=200)]  # strings, as a careless export writes them
    frame.to_parquet(tmp_path / "t.parquet")
    out = tmp_path / "run"
    assert_clean_failure(
        run("train", "--data", tmp_path / "t.parquet", "--out", out, *TINY),
        "column 'price' holds numbers stored as text; convert it to numbers, or leave the column out with --columns",
    )
    assert not out.exists()
    result = run("train", "--data", tmp_path / "t.parquet", "--columns", "x,y", "--out", out, *TINY)
    assert result.exit_code == 0, result.output


def test_a_categorical_level_that_reads_like_a_missing_mark_is_named(tmp_path) -> None:
    data = mixed_table(tmp_path / "houses.csv")
    text = data.read_text(encoding="utf-8").replace(",Fair,", ",NA,")
    (tmp_path / "na.csv").write_text(text, encoding="utf-8")
    result = run("train", "--data", tmp_path / "na.csv", "--columns", "cut,carat", "--out", tmp_path / "run", *TINY)
    assert result.exit_code == 0, result.output
    assert "the categorical column cut has the level(s) 'NA', which other programs write for a missing cell" in (
        result.output
    )


def test_missing_cells_when_scoring_keep_output_rows_aligned(tmp_path) -> None:
    out = tmp_path / "run"
    complete = mixed_table(tmp_path / "complete.csv", n=200)
    assert run("train", "--data", complete, "--columns", "carat,price", "--out", out, *TINY).exit_code == 0
    holes = mixed_table(tmp_path / "holes.csv", n=200, holes=(3, 150))
    logp = tmp_path / "logp.csv"
    result = run("density", "--model", out, "--input", holes, "--out", logp)
    assert_clean_failure(result, "holes.csv: line 5, column 'price' is missing (empty)")
    assert not logp.exists()
    result = run("density", "--model", out, "--input", holes, "--out", logp, "--missing", "drop")
    assert result.exit_code == 0, result.output
    assert "2 rows with missing cells were not scored: their log_prob is empty" in result.output
    lines = logp.read_text().splitlines()
    assert lines[0] == "log_prob" and len(lines) == 201 and lines[4] == "" and lines[151] == ""
    result = run("density", "--model", out, "--input", complete, "--out", tmp_path / "all.csv")
    expected = (tmp_path / "all.csv").read_text().splitlines()
    kept = [i for i in range(1, 201) if i not in (4, 151)]
    # the same numbers to float32's rounding (a float32 model's products round with the batch's rows)
    np.testing.assert_allclose([float(lines[i]) for i in kept], [float(expected[i]) for i in kept], rtol=1e-6)
    # a table's default flow keeps the column order: a missing last cell (price) is integrated out
    result = run("density", "--model", out, "--input", holes, "--out", tmp_path / "m.csv", "--missing", "marginal")
    assert result.exit_code == 0, result.output
    assert "2 rows with missing cells were scored by the exact density of their observed cells" in result.output
    marginal = (tmp_path / "m.csv").read_text().splitlines()
    assert np.isfinite(float(marginal[4])) and np.isfinite(float(marginal[151]))
    assert [marginal[i] for i in kept] == [lines[i] for i in kept]
    realnvp = tmp_path / "realnvp"
    assert run("train", "--data", complete, "--columns", "carat,price", "--flow", "realnvp", "--out", realnvp,
               *TINY).exit_code == 0  # fmt: skip
    result = run("density", "--model", realnvp, "--input", holes, "--out", tmp_path / "r.csv", "--missing", "marginal")
    assert_clean_failure(result, "--missing marginal: this model has no categorical columns, and this flow mixes")


def test_a_table_with_an_id_and_categorical_columns_trains_scores_and_samples(tmp_path) -> None:
    from flowfit.categories import categories_of
    from flowfit.io import load

    data = mixed_table(tmp_path / "houses.csv")
    out = tmp_path / "run"
    columns = ("--columns", "carat,cut,price,rooms", "--categorical", "rooms")
    result = run("train", "--data", data, *columns, "--out", out, *TINY[:-2], "--no-plots")
    assert result.exit_code == 0, result.output
    assert "categorical: cut (3 levels), rooms (3 levels)" in result.output
    flow = load(out)
    categories = categories_of(flow)
    assert flow.column_names == ["carat", "price"] and flow.context_dim == 6
    assert categories.columns == ["cut", "rooms"] and categories.levels == [["Fair", "Good", "Ideal"], ["1", "2", "3"]]
    # p(cut) recovered from the counts of the training rows
    cut = torch.tensor([[c, r] for c in range(3) for r in range(3)])
    p_cut = categories.log_prob(cut).exp().view(3, 3).sum(1)
    torch.testing.assert_close(p_cut, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), atol=0.05, rtol=0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["test_nll_categorical"] < metrics["test_nll"]
    # samples carry labels, and score back by name
    samples = tmp_path / "samples.csv"
    result = run("sample", "--model", out, "-n", "200", "--out", samples, "--seed", "0")
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in samples.read_text().splitlines()]
    assert rows[0] == ["carat", "price", "cut", "rooms"] and len(rows) == 201
    assert {row[2] for row in rows[1:]} <= {"Fair", "Good", "Ideal"} and {row[3] for row in rows[1:]} <= {"1", "2", "3"}
    result = run("density", "--model", out, "--input", samples, "--out", tmp_path / "s_logp.csv")
    assert result.exit_code == 0, result.output
    # the original file, with its id and text columns, scores by name; the number is log p(c) + log p(x | c)
    logp = tmp_path / "logp.csv"
    result = run("density", "--model", out, "--input", data, "--out", logp)
    assert result.exit_code == 0, result.output
    scores = np.loadtxt(logp, skiprows=1)
    assert scores.shape == (600,) and np.isfinite(scores).all()
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("cut,carat,price,rooms\nIdeal,1,2,3\nPremium,1,2,3\n")
    assert_clean_failure(
        run("density", "--model", out, "--input", unknown, "--out", tmp_path / "u.csv"),
        "row 2, column 'cut': 'Premium' is not a category the model knows (Fair, Good, Ideal)",
    )
    assert_clean_failure(run("animate", "--model", out, "--out", tmp_path / "a.gif"), "without categorical columns")


def test_a_marginal_over_a_missing_category_is_the_sum_of_the_joint(tmp_path) -> None:
    data = mixed_table(tmp_path / "houses.csv", n=300)
    out = tmp_path / "run"
    result = run("train", "--data", data, "--columns", "carat,cut", "--out", out, "--flow", "maf", *TINY)
    assert result.exit_code == 0, result.output
    points = "carat,cut\n0.5,\n-2.1,Fair\n3,nan\n"
    (tmp_path / "holes.csv").write_text(points)
    marginal = tmp_path / "marginal.csv"
    result = run(
        "density", "--model", out, "--input", tmp_path / "holes.csv", "--out", marginal, "--missing", "marginal"
    )
    assert result.exit_code == 0, result.output
    assert "2 rows with missing cells were scored by the exact density of their observed cells" in result.output
    filled = "carat,cut\n" + "".join(f"{x},{c}\n" for x in (0.5, 3) for c in ("Fair", "Good", "Ideal"))
    (tmp_path / "filled.csv").write_text(filled)
    joint = tmp_path / "joint.csv"
    assert run("density", "--model", out, "--input", tmp_path / "filled.csv", "--out", joint).exit_code == 0
    terms = np.loadtxt(joint, skiprows=1).reshape(2, 3)
    got = np.loadtxt(marginal, skiprows=1)
    np.testing.assert_allclose(got[[0, 2]], np.logaddexp.reduce(terms, axis=1), rtol=0, atol=1e-6)
    assert_clean_failure(
        run("density", "--model", out, "--input", tmp_path / "holes.csv", "--out", tmp_path / "e.csv"),
        "line 2, column 'cut' is missing",
    )
    (tmp_path / "no_carat.csv").write_text("carat,cut\n,Fair\n")
    result = run("density", "--model", out, "--input", tmp_path / "no_carat.csv", "--out", tmp_path / "c.csv",
                 "--missing", "marginal")  # fmt: skip
    assert result.exit_code == 0, result.output  # one continuous column integrated out: log p(c) is left
    from flowfit.categories import categories_of
    from flowfit.io import load

    log_p_fair = categories_of(load(out)).log_prob(torch.tensor([[0]])).item()
    assert np.loadtxt(tmp_path / "c.csv", skiprows=1) == pytest.approx(log_p_fair, rel=1e-8)  # 9 digits written


def test_an_ordered_flow_scores_rows_missing_their_last_cells(tmp_path) -> None:
    from flowfit.categories import categories_of, joint_context
    from flowfit.io import load

    data = mixed_table(tmp_path / "houses.csv", n=300)
    out = tmp_path / "run"
    columns = ("--columns", "carat,price,cut", "--preprocess", "none", "--flow", "nsf-ar-ordered")
    assert run("train", "--data", data, *columns, "--out", out, *TINY).exit_code == 0
    (tmp_path / "holes.csv").write_text("id,price,cut,carat\n1,,Fair,0.5\n2,,,1.5\n3,3,Good,0.7\n")
    marginal = tmp_path / "marginal.csv"
    args = ("density", "--model", out, "--input", tmp_path / "holes.csv", "--missing", "marginal")
    result = run(*args, "--out", marginal)
    assert result.exit_code == 0, result.output
    assert "2 rows with missing cells were scored by the exact density of their observed cells" in result.output
    got = np.loadtxt(marginal, skiprows=1)
    # log p(carat, c) with the price integrated out: the flow's leading column, then p(c) (summed for row 2)
    flow = load(out)
    categories = categories_of(flow)
    codes = torch.arange(3)[:, None]
    with torch.no_grad():
        row_1 = flow.observed_log_prob(torch.tensor([[0.5, float("nan")]]), joint_context(None, codes[:1], categories))
        row_2 = flow.observed_log_prob(torch.tensor([[1.5, float("nan")]] * 3), joint_context(None, codes, categories))
    expected_1 = row_1.double() + categories.log_prob(codes[:1])
    expected_2 = torch.logsumexp(row_2.double() + categories.log_prob(codes), dim=0)
    np.testing.assert_allclose(got[:2], [expected_1.item(), expected_2.item()], rtol=0, atol=1e-5)
    assert np.isfinite(got[2])
    (tmp_path / "gap.csv").write_text("carat,price,cut\n0.5,1,Fair\n,2,Good\n")
    assert_clean_failure(
        run(*args[:4], tmp_path / "gap.csv", *args[5:], "--out", tmp_path / "e.csv"),
        "gap.csv: line 3: 'carat' is missing but 'price' after it is not; the flow integrates out missing cells only "
        "after every observed one (in its order: carat, price)",
    )
    assert not (tmp_path / "e.csv").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--columns", "carat,price", "--categorical", "rooms"), "--categorical names 'rooms', which --columns does"),
        (("--columns", "carat,price,price2", "--categorical", "price2"), "no column named 'price2'"),
        (("--columns", "carat,rooms", "--categorical", "carat"), "must hold integers"),
        (("--columns", "cut,rooms", "--categorical", "rooms"), "no columns left to model but categorical ones"),
        (("--columns", "carat", "--given", "name"), "the --given column(s) name hold text"),
        (("--columns", "carat,cut", "--given", "price"), "categorical columns (cut) and --given cannot be combined"),
    ],
)
def test_categorical_columns_are_checked(tmp_path, arguments: tuple[str, ...], message: str) -> None:
    data = mixed_table(tmp_path / "houses.csv", n=50)
    result = run("train", "--data", data, *arguments, "--out", tmp_path / "run", *TINY)
    assert_clean_failure(result, message)


def test_npy_files_take_categories_and_drop_missing_rows(tmp_path) -> None:
    from flowfit.categories import categories_of
    from flowfit.io import load

    rng = np.random.default_rng(0)
    table = np.column_stack((rng.normal(size=200), rng.integers(0, 3, 200).astype(float), rng.normal(size=200)))
    table[17, 1] = np.nan
    table[40, 2] = np.nan
    np.save(tmp_path / "t.npy", table)
    out = tmp_path / "run"
    arguments = ("train", "--data", tmp_path / "t.npy", "--out", out, *TINY)
    assert_clean_failure(run(*arguments, "--categorical", "x1"), "row 18, column 'x1' is missing (NaN)")
    assert_clean_failure(run(*arguments), "row 18, column 'x1' is missing (NaN)")  # read from disk
    result = run(*arguments, "--missing", "drop")  # rows on disk: the two rows are left out there
    assert result.exit_code == 0, result.output
    assert "note: dropped 2 of 200 rows with missing cells" in result.output
    result = run(*arguments, "--categorical", "x1", "--missing", "drop", "--force")
    assert result.exit_code == 0, result.output
    assert "note: dropped 2 of 200 rows with missing cells" in result.output
    assert categories_of(load(out)).levels == [["0", "1", "2"]]


def test_rows_named_after_dropped_rows_keep_their_place_in_the_file(tmp_path) -> None:
    data = tmp_path / "t.csv"
    rows = [f"{i},{10 + i}" for i in range(40)]
    rows[2] = "2,"  # row 3: dropped
    rows[5] = "5,-1"  # row 6: outside a log column's support
    data.write_text("a,price\n" + "\n".join(rows) + "\n")
    result = run(
        "train", "--data", data, "--preprocess", "price=log", "--missing", "drop", "--out", tmp_path / "r", *TINY
    )
    assert_clean_failure(result, "row 6")
    assert "row 5" not in result.stderr


def test_recurring_values_are_atoms_of_an_ordered_flow(tmp_path) -> None:
    from flowfit.io import load

    rng = np.random.default_rng(0)
    wage = np.round(20 * (400 + 20 * rng.normal(size=6000))) / 20  # to 5 cents
    wage[rng.random(6000) < 0.2] = 412.25  # a fifth of the rows heap on one weekly wage
    hours = 30 + wage / 40 + rng.normal(size=6000)
    data = tmp_path / "wages.csv"
    data.write_text("wage,hours\n" + "".join(f"{w:.2f},{h:.6f}\n" for w, h in zip(wage, hours, strict=True)))
    out = tmp_path / "run"
    result = run("train", "--data", data, "--flow", "nsf-ar-ordered", "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    assert "preprocessing: wage: dequantize (step 0.05, 1 recurring values), hours: none" in result.output
    flow = load(out)
    assert flow.has_atoms
    (tmp_path / "points.csv").write_text("wage,hours\n412.25,40.3\n412.30,40.3\n")
    logp = tmp_path / "logp.csv"
    assert run("density", "--model", out, "--input", tmp_path / "points.csv", "--out", logp).exit_code == 0
    on_atom, beside = np.loadtxt(logp, skiprows=1)
    assert on_atom > beside + 2  # the atom's box holds a fifth of the mass in 5 cents
    samples = tmp_path / "samples.csv"
    assert run("sample", "--model", out, "-n", "2000", "--out", samples, "--seed", "0").exit_code == 0
    drawn = np.loadtxt(samples, delimiter=",", skiprows=1)
    assert 0.15 < np.mean(drawn[:, 0] == 412.25) < 0.3  # sampled back as the recurring value itself
    # the other families mix the columns: no atoms for them
    result = run("train", "--data", data, "--flow", "nsf-ar", "--out", tmp_path / "plain", *TINY)
    assert "recurring values" not in result.output and not load(tmp_path / "plain").has_atoms


def test_a_missing_given_cell_is_never_integrated_out(tmp_path) -> None:
    data = mixed_table(tmp_path / "houses.csv", n=300)
    out = tmp_path / "run"
    given = ("--columns", "carat", "--given", "price", "--flow", "nsf-ar-ordered")
    assert run("train", "--data", data, *given, "--out", out, *TINY).exit_code == 0
    (tmp_path / "holes.csv").write_text("carat,price\n0.5,1\n0.7,\n")
    assert_clean_failure(
        run("density", "--model", out, "--input", tmp_path / "holes.csv", "--out", tmp_path / "e.csv",
            "--missing", "marginal"),
        "line 3, given column 'price' is missing: a condition cannot be integrated out; use --missing drop",
    )  # fmt: skip


def test_tables_train_the_table_family_with_a_tables_defaults(tmp_path) -> None:
    data = mixed_table(tmp_path / "houses.csv", n=400)
    out = tmp_path / "table"
    result = run("train", "--data", data, "--columns", "carat,price", "--out", out, "--steps", "5", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "training nsf-ar-ordered" in result.output
    used = json.loads((out / "metrics.json").read_text())["options"]
    assert (used["ema"], used["patience"], used["batch_size"]) == (0.99, 10, 40)  # 320 training rows / 8
    result = run("train", "--data", data, "--columns", "carat,price", "--out", tmp_path / "own", "--steps", "5",
                 "--ema", "0", "--batch-size", "64", "--flow", "maf", "--no-plots")  # fmt: skip
    used = json.loads((tmp_path / "own" / "metrics.json").read_text())["options"]
    assert (used["ema"], used["patience"], used["batch_size"]) == (0.0, 10, 64)  # what is given wins
    result = run("train", "--data", "moons", "--out", tmp_path / "moons", "--steps", "5", "--no-plots")
    assert "training realnvp" in result.output
    used = json.loads((tmp_path / "moons" / "metrics.json").read_text())["options"]
    assert (used["ema"], used["patience"], used["batch_size"]) == (0.995, None, 256)  # the family's own


def test_a_numeric_column_with_a_stray_text_cell_is_not_taken_for_labels(tmp_path) -> None:
    """A column of numbers with one text cell (a typo) named in --columns became a categorical
    column with a level per distinct number, and trained with exit 0."""
    rng = np.random.default_rng(0)
    lines = [f"{a:.4f},{b:.4f}" for a, b in rng.normal(size=(60, 2))] + ["n/a_typo,0.5"]
    data = tmp_path / "t.csv"
    data.write_text("a,b\n" + "\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert_clean_failure(
        run("train", "--data", data, "--columns", "a,b", "--out", out, *TINY), "row 61 holds 'n/a_typo'"
    )
    assert not out.exists()
    result = run("train", "--data", data, "--columns", "a,b", "--categorical", "a", "--out", out, *TINY)
    assert result.exit_code == 0, result.output  # asked for labels: labels


def test_mixed_precision_of_a_float64_model_is_refused_before_anything_is_written(tmp_path) -> None:
    out = tmp_path / "r"
    args = ("--dtype", "float64", "--mixed-precision", "on", "--steps", "3", "--out", out, "--no-progress")
    assert_clean_failure(run("train", *args), "mixed precision trains float32 flows; this one is float64")
    assert not out.exists() and not (tmp_path / "r.partial").exists()
    assert_clean_failure(run("train", "--mixed-precision", "half", "--out", out), "must be one of auto, on, off")
