"""Stage 6 of the pipeline: renderers turn a report into text for people (terminal, concise lines, HTML, Markdown) and machines
(JSON, SARIF, GitHub workflow annotations, CSV)."""

from collections.abc import Callable

from ..report.model import AuditReport
from .concise import render_concise
from .csv import render_csv
from .github import render_github
from .html import render_html
from .json import render_json
from .markdown import render_markdown
from .sarif import render_sarif
from .terminal import print_report, render_terminal

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

__all__ = ["RENDERERS", "print_report", "render_concise", "render_csv", "render_github", "render_html", "render_json", "render_markdown",
           "render_sarif", "render_terminal"]
