"""The explorer page, in a real browser: headless Chromium (Debian's ``chromium``, installed by
``.ci/run``) driven by Playwright at ``/usr/bin/chromium``, so that nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import flowfit
from flowfit import datasets
from flowfit.cli import app
from flowfit.errors import InputError
from flowfit.explore import View, explore_page, write_explorer

from .helpers import randomize

CHROMIUM = Path("/usr/bin/chromium")
# Chromium as root on a machine without a display or network (see .ci/run).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "the browser tests need Debian's chromium: apt-get install chromium (.ci/run does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


class Page:
    """An explorer page open in the browser, with what it logged and asked for."""

    def __init__(self, browser, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1250, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)

    def js(self, expression: str, *args):
        return self.page.evaluate(expression, *args)

    def canvas(self, name: str) -> str:
        return self.js(f"document.querySelector('[data-testid={name}]').toDataURL()")

    def points(self, t: float) -> np.ndarray:
        self.js(f"window.flowfit.setTime({t})")
        state = self.js("window.flowfit.state()")
        assert state["t"] == pytest.approx(t)
        return np.array(state["points"], dtype=np.float64)


def moons_flow(seed: int = 0) -> flowfit.Flow:
    flow = flowfit.RealNVP(2, layers=4, hidden=(16, 16)).double()
    randomize(flow, scale=0.2, seed=seed)
    flow.initialize(datasets.moons(2000, seed=1).double())
    return flow


SMALL = View(points=300, paths=50)


def open_page(browser, tmp_path: Path, flow, data=None, context=None, view: View = SMALL):
    path = write_explorer(tmp_path / "explore.html", explore_page(flow, data, context, view))
    return Page(browser, path)


def test_a_discrete_flow_page_works_offline_and_matches_the_model(browser, tmp_path) -> None:
    flow = moons_flow()
    data = datasets.moons(400, seed=2).double()
    page = open_page(browser, tmp_path, flow, data)
    assert page.errors == [] and page.requests == [page.url]  # nothing asked of any server
    for testid in ("time-slider", "play", "density", "logp"):
        assert page.page.locator(f"[data-testid={testid}]").count() == 1

    # the slider moves the points and the drawing
    before = page.canvas("flow")
    page.page.locator("[data-testid=time-slider]").fill("0")
    assert page.js("window.flowfit.state().t") == 0 and page.canvas("flow") != before

    # t = 0 is z_0, t = 1 is the model's own samples of those base points, t = i/T is z_i
    z0 = page.points(0.0)
    states = [s.detach().numpy() for s in flow.trajectory(torch.from_numpy(z0))]
    layers = len(flow.layers)
    np.testing.assert_allclose(page.points(1.0), flow(torch.from_numpy(z0))[0].detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(page.points(2 / layers), states[2], rtol=1e-4, atol=1e-4)
    assert "interpolated" not in page.page.locator("#state-label").inner_text()
    halfway = page.points(2.5 / layers)  # between states: linear interpolation, labelled so
    np.testing.assert_allclose(halfway, 0.5 * (states[2] + states[3]), rtol=1e-4, atol=1e-4)
    assert "interpolated" in page.page.locator("#state-label").inner_text()

    # the heat map reads the model's log-density where the density is high
    grid = torch.cartesian_prod(torch.linspace(-1, 2, 40), torch.linspace(-0.5, 1, 40)).double()
    exact = flow.log_prob(grid).detach().numpy()
    shown = np.array(page.js("ps => ps.map(([x, y]) => window.flowfit.logDensityAt(x, y))", grid.tolist()))
    high = exact > exact.max() - 4
    assert high.sum() > 100
    assert np.abs(shown[high] - exact[high]).max() < 0.05

    # hovering shows the same number
    box = page.page.locator("[data-testid=density]").bounding_box()
    page.page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.6 * box["height"])
    readout = page.page.locator("[data-testid=logp]")
    x, y = float(readout.get_attribute("data-x")), float(readout.get_attribute("data-y"))
    assert readout.inner_text().endswith(f"= {page.js(f'window.flowfit.logDensityAt({x}, {y})'):.3f}")

    # a data point's change of variables adds up to its log-density
    explained = page.js("window.flowfit.explain(7)")
    assert len(explained["terms"]) == len(flow.layers) + 1
    assert explained["sum"] == pytest.approx(flow.log_prob(data[7:8]).item(), abs=1e-4)
    page.js("window.flowfit.select(7)")
    assert "sum = log p(x)" in page.page.locator("[data-testid=explain]").inner_text()
    assert page.errors == []


def test_clicking_a_data_point_explains_it(browser, tmp_path) -> None:
    flow = moons_flow()
    data = datasets.moons(100, seed=3).double()
    page = open_page(browser, tmp_path, flow, data)
    point = page.js("window.flowfit.explain(0)")["point"]
    pixel = page.js(
        """([x, y]) => { const c = document.querySelector('[data-testid=density]');
        const b = window.flowfit.payload.densityBounds;
        return [(x - b[0]) / (b[1] - b[0]) * c.width, (1 - (y - b[2]) / (b[3] - b[2])) * c.height]; }""",
        point,
    )
    page.page.locator("[data-testid=density]").click(position={"x": pixel[0], "y": pixel[1]})
    text = page.page.locator("[data-testid=explain]").inner_text()
    assert "log N(z_0; 0, I)" in text and "flow.log_prob(x)" in text
    assert f"{flow.log_prob(data[:1]).item():.4f}" in text


def test_a_continuous_flow_shows_solved_states(browser, tmp_path) -> None:
    flow = flowfit.CNF(2, hidden=(16, 16), rtol=1e-6, atol=1e-6).double()
    randomize(flow, scale=0.3, seed=0)
    flow.initialize(datasets.moons(1000, seed=1).double())
    page = open_page(browser, tmp_path, flow, datasets.moons(50, seed=2).double(), view=View(points=200, paths=20))
    assert page.errors == [] and page.requests == [page.url]
    z0 = torch.from_numpy(page.points(0.0))
    for t in (0.5, 0.74, 1.0):  # solved times t = k / 50: real ODE states, not interpolations
        expected = flow.trajectory(z0, t=[t])[0].numpy()
        np.testing.assert_allclose(page.points(t), expected, rtol=1e-4, atol=1e-4)
    page.points(0.37)
    assert "solved" in page.page.locator("#state-label").inner_text()
    page.points(0.371)
    assert "interpolated" in page.page.locator("#state-label").inner_text()
    explained = page.js("window.flowfit.explain(3)")
    assert len(explained["terms"]) == 51  # log N(z_0) and 50 steps of the ODE
    assert explained["sum"] == pytest.approx(explained["logProb"], abs=1e-3)


def test_a_conditional_flow_gets_a_slider_per_context_column(browser, tmp_path) -> None:
    flow = flowfit.RealNVP(2, layers=2, hidden=(16,), context_dim=2).double()
    randomize(flow, scale=0.5, seed=4)
    context = torch.randn(300, 2, dtype=torch.float64) * torch.tensor([1.0, 5.0])
    data = datasets.moons(300, seed=5).double()
    flow.initialize(data, context)
    flow.metadata = {"columns": ["a", "b"], "given": ["size", "age"]}
    page = open_page(browser, tmp_path, flow, data, context, View(points=100, paths=10))
    assert page.errors == []
    z0 = torch.from_numpy(page.points(0.0))
    slider = page.page.locator("[data-testid=context-age]")
    slider.fill("6")  # the 95% quantile of age, size at its median
    setting = torch.quantile(context, torch.tensor([0.5, 0.95], dtype=torch.float64), dim=0)
    chosen = torch.tensor([[setting[0, 0], setting[1, 1]]], dtype=torch.float64)
    expected = flow(z0, chosen.expand(len(z0), -1))[0].detach().numpy()
    np.testing.assert_allclose(page.points(1.0), expected, rtol=1e-4, atol=1e-4)
    assert page.page.locator("[data-testid=context-size]").input_value() == "3"


def test_the_cli_writes_a_page_for_a_pair_of_columns(browser, tmp_path) -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(300, 3)) * [1.0, 2.0, 3.0] + [0.0, 5.0, -1.0]
    data = tmp_path / "t.csv"
    np.savetxt(data, table, delimiter=",", header="u,v,w", comments="")
    model, out = tmp_path / "model", tmp_path / "page.html"
    runner = CliRunner()
    args = ["--layers", "2", "--hidden", "8", "--steps", "20", "--no-progress", "--no-plots"]
    assert runner.invoke(app, ["train", "--data", str(data), "--out", str(model), *args]).exit_code == 0
    result = runner.invoke(app, ["explore", "--model", str(model), "--out", str(out), "--columns", "w,u", "-n", "50"])
    assert result.exit_code == 0, result.output
    page = Page(browser, out)
    assert page.errors == []
    assert page.js("window.flowfit.payload.names") == ["w", "u"]
    notes = page.page.locator("#notes").inner_text()
    assert "slice with v at their median" in notes
    flow = flowfit.load(model)
    z0 = page.points(0.0)
    assert z0.shape == (50, 2)
    # the data points are rows of the file, drawn on (w, u), and their change of variables adds up
    explained = page.js("window.flowfit.explain(0)")
    assert np.abs(table[:, [2, 0]] - explained["point"]).sum(axis=1).min() < 1e-3
    assert explained["sum"] == pytest.approx(explained["logProb"], abs=1e-3)
    assert len(explained["terms"]) == len(flow.layers) + 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--out", "x.txt"], "ending in .html"),
        (["--columns", "x0,nope"], "no column 'nope'"),
        (["--columns", "x0"], "two columns"),
        (["--columns", "x0,x0"], "more than once"),
        (["-n", "0"], "positive"),
        (["--resolution", "1"], "2..400"),
        (["--data", "/nonexistent.csv"], "neither a file"),
    ],
)
def test_cli_refuses_bad_requests_in_one_line(tmp_path, arguments, message) -> None:
    model = tmp_path / "m"
    flowfit.save(moons_flow().float(), model)
    arguments = [a if a != "x.txt" else str(tmp_path / "x.txt") for a in arguments]
    out = ["--out", str(tmp_path / "e.html")] if "--out" not in arguments else []
    result = CliRunner().invoke(app, ["explore", "--model", str(model), *out, *arguments])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "e.html").exists() and not (tmp_path / "x.txt").exists()


def test_a_page_too_large_to_mail_is_refused() -> None:
    with pytest.raises(InputError, match="at most 5"):
        explore_page(moons_flow(), view=View(points=200_000, paths=1))
