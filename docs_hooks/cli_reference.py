"""MkDocs hook: the command-line reference, generated from flowfit's Typer app at build time,
so it cannot drift from ``flowfit COMMAND --help``."""

from __future__ import annotations

from typing import Any

import typer
from typer.cli import get_docs_for_click

from flowfit.cli import app

MARKER = "<!-- the flowfit command's reference -->"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    command = typer.main.get_command(app)
    reference = get_docs_for_click(obj=command, ctx=typer.Context(command), name="flowfit", indent=1)
    return markdown.replace(MARKER, reference)
