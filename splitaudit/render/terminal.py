"""Terminal output with rich: split summary, findings grouped by check, and a one-line verdict."""

from __future__ import annotations

import io
from collections import defaultdict

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..report.model import AuditReport, Evidence, Finding, Severity
from .escape import printable


def _safe(text: str) -> str:
    """Plain text for rich: control characters escaped (see :mod:`.escape`), then markup escaped."""
    return escape(printable(text))

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
MAX_ROWS_PER_CHECK = 25


def print_report(report: AuditReport, console: Console, *, max_rows: int = MAX_ROWS_PER_CHECK) -> None:
    """Write the report to ``console``."""
    splits = Table(title="Splits", title_justify="left", show_edge=False)
    for col in ("split", "images", "unreadable", "skipped", "classes", "copied"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    splits.add_column("root", overflow="fold")
    for k, s in enumerate(report.splits):
        # "copied": share of the split's images that copy an image of an earlier split (none for the first).
        splits.add_row(_safe(s.name), str(s.images), str(s.unreadable), str(s.skipped), str(len(s.classes)),
                       f"{s.leak_fraction:.1%}" if k else "-", _safe(s.root))
    console.print(splits)

    by_check: dict[str, list[Finding]] = defaultdict(list)
    for f in report.findings:
        by_check[f.check].append(f)
    # One line per finding (soft-wrapped, never folded inside a cell), so paths stay copyable and greppable.
    for check, findings in by_check.items():
        console.print()
        console.print(f"[bold]{_safe(check)}[/] ({len(findings)})")
        for f in findings[:max_rows]:
            ev = Evidence.describe_all(f.evidence)
            console.print(f"  [{_STYLE[f.severity]}]{f.severity.label:7}[/] {_safe(f.message)}" + (f"  [dim]({_safe(ev)})[/]" if ev else ""),
                          soft_wrap=True, highlight=False)
        if len(findings) > max_rows:
            console.print(f"  ... and {len(findings) - max_rows} more (use --format json for all)")
    v = report.verdict
    console.print()
    if v.failed:
        console.print(f"[bold red]FAIL[/] {_safe(v.reason)}", soft_wrap=True)
    else:
        console.print(f"[bold green]PASS[/] {_safe(v.reason)}", soft_wrap=True)


def render_terminal(report: AuditReport, *, width: int = 120) -> str:
    """The terminal report as plain text (for ``--output FILE``)."""
    buf = io.StringIO()
    print_report(report, Console(file=buf, width=width, force_terminal=False, color_system=None, highlight=False))
    return buf.getvalue()
