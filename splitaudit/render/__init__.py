"""Stage 6 of the pipeline: renderers turn a report into text for people (terminal) and machines (JSON)."""

from collections.abc import Callable

from ..report.model import AuditReport
from .json import render_json
from .terminal import print_report, render_terminal

#: Output formats by name: each turns a report into the text written to ``--output``.
RENDERERS: dict[str, Callable[[AuditReport], str]] = {
    "terminal": render_terminal,
    "json": render_json,
}

__all__ = ["RENDERERS", "print_report", "render_json", "render_terminal"]
