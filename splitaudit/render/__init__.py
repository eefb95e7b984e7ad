"""Stage 6 of the pipeline: renderers turn a report into text for people (terminal, concise lines, HTML, Markdown) and machines
(JSON, SARIF, GitHub workflow annotations, CSV)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..report.model import AuditReport
from .concise import render_concise
from .csv import render_csv
from .github import render_github
from .html import render_html
from .json import render_json
from .markdown import render_markdown
from .sarif import render_sarif
from .terminal import print_report, render_terminal

if TYPE_CHECKING:
    from ..options import Options

#: Output formats by name: each turns a report into the text written to ``--output``.
RENDERERS: dict[str, Callable[[AuditReport], str]] = {
    "terminal": render_terminal,
    "concise": render_concise,
    "csv": render_csv,
    "json": render_json,
    "html": render_html,
    "markdown": render_markdown,
    "sarif": render_sarif,
    "github": render_github,
}



def render(fmt: str, report: AuditReport, *, options: Options | None = None, output: str | os.PathLike[str] | None = None) -> str:
    """``report`` in format ``fmt``; the HTML page also takes the run's options (its originals) and where it is
    written (originals linked relative to it)."""
    if fmt == "html":
        return render_html(report, options=options, output=output)
    return RENDERERS[fmt](report)


__all__ = ["RENDERERS", "print_report", "render", "render_concise", "render_csv", "render_github", "render_html", "render_json", "render_markdown",
           "render_sarif", "render_terminal"]
