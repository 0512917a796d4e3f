"""The shape of the package: the core imports no plotting or command-line framework."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def test_importing_flowfit_leaves_plotting_and_the_cli_alone() -> None:
    code = (
        "import sys, flowfit\n"
        "from flowfit import FlowDensity\n"
        "flow = flowfit.RealNVP(2)\n"
        "print(sorted(m for m in ('matplotlib', 'typer', 'flowfit.viz', 'flowfit.cli') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def imports(path) -> set[str]:
    """The modules a file imports, anywhere in it (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_the_layers_import_one_way() -> None:
    """transforms <- flow <- families/continuous <- train <- estimator; viz and the CLI sit on
    top, and nothing below them imports them (or matplotlib, or typer)."""
    source = Path(__file__).parents[1] / "src" / "flowfit"
    application = {"viz", "cli", "runner", "__main__"}
    for path in source.rglob("*.py"):
        if path.stem in application:
            continue
        for name in imports(path):
            top = name.split(".")[0]
            assert top not in ("matplotlib", "typer"), f"{path.relative_to(source)} imports {name}"
            assert not any(name.startswith(f"flowfit.{a}") for a in application), f"{path.name} imports {name}"
    upper = ("flowfit.flow", "flowfit.families", "flowfit.train", "flowfit.estimator", "flowfit.sources")
    for path in (source / "transforms").glob("*.py"):
        assert not [n for n in imports(path) if n.startswith(upper)], f"transforms/{path.name} imports upward"
    for path in (source / "train").glob("*.py"):
        assert not [n for n in imports(path) if n.startswith(("flowfit.estimator", "flowfit.sources"))], path.name
