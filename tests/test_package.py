"""The shape of the package: the core imports no plotting or command-line framework."""

from __future__ import annotations

import ast
import re
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


#: The map of the code (docs/design.md), bottom layer first: each module may import only those above it.
ORDER = [
    "_version", "errors", "config", "files", "nets", "transforms", "distributions", "preprocess", "flow",
    "categories", "continuous", "families", "io", "options", "datasets", "shuffle", "tables", "train", "sources",
    "estimator",
    "viz", "explore", "runner", "cli", "__main__",
]  # fmt: skip


def test_the_map_in_the_docs_lists_the_modules_in_this_order() -> None:
    page = (Path(__file__).parents[1] / "docs" / "design.md").read_text()
    listed = re.findall(r"(?m)^      ([a-z_]+)(?:\.py|/)\s", page)
    assert listed == [m for m in ORDER if m not in ("_version", "__main__")]


def test_the_layers_import_one_way() -> None:
    """Each module imports only the modules above it in the map of the code (docs/design.md),
    and nothing below the application layer (viz, explore, runner, cli) imports matplotlib or typer."""
    source = Path(__file__).parents[1] / "src" / "flowfit"
    for path in source.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == source:
            continue  # the package's front door re-exports the core
        module = path.relative_to(source).parts[0].removesuffix(".py")
        assert module in ORDER, f"{module} is missing from the map in docs/design.md"
        for name in imports(path):
            top = name.split(".")[0]
            if top in ("matplotlib", "typer"):
                assert ORDER.index(module) >= ORDER.index("viz"), f"{module} imports {name}"
            if top == "flowfit" and "." in name:
                target = name.split(".")[1]
                if target in ORDER and target != module:
                    assert ORDER.index(target) < ORDER.index(module), f"{module} imports {name}, which is above it"
