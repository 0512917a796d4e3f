"""examples/tutorial.ipynb runs from the first cell to the last in a real Jupyter kernel, on tiny
budgets (``FLOWFIT_TUTORIAL_QUICK=1``), and is committed without outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "examples" / "tutorial.ipynb"


def test_the_notebook_is_committed_without_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert len(notebook["cells"]) >= 20
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


def test_the_notebook_runs_end_to_end(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FLOWFIT_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("FLOWFIT_TEST_THREADS", "2"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    where = {"metadata": {"path": str(tmp_path)}}  # the kernel's working directory
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources=where).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "test NLL before training" in text and "log p(x) = " in text
    # the layer-by-layer change of variables printed by the notebook adds up
    line = next(line for line in text.splitlines() if line.startswith("log p(x) = "))
    total, direct = (float(part.split("= ")[1]) for part in line.split("; "))
    assert abs(total - direct) < 1e-3
    pictures = [o for o in outputs if o.output_type == "display_data" and {"image/png", "image/gif"} & set(o.data)]
    assert len(pictures) >= 6
    written = {p.name for p in (tmp_path / "tutorial_out").iterdir()}
    assert {"samples.png", "density.png", "layers.png", "flow.gif", "cnf_states.png", "morph.gif"} <= written
