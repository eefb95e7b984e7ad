"""Terminal output with rich: split summary, findings grouped by check, and a one-line verdict."""

from __future__ import annotations

import io
from collections import defaultdict

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..report.model import AuditReport, Finding, Severity

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
MAX_ROWS_PER_CHECK = 25


def _evidence_text(f: Finding) -> str:
    parts = []
    for e in f.evidence:
        if e.stage in ("bytes", "pixels"):
            parts.append(f"same {e.stage}")
        else:
            parts.append(f"{e.stage} {e.distance:g}" + (" mirrored" if e.flipped else ""))
    return ", ".join(parts)


def print_report(report: AuditReport, console: Console, *, max_rows: int = MAX_ROWS_PER_CHECK) -> None:
    """Write the report to ``console``."""
    splits = Table(title="Splits", title_justify="left", show_edge=False)
    for col in ("split", "root", "images", "unreadable", "skipped", "classes", "copies of earlier splits"):
        splits.add_column(col, justify="right" if col not in ("split", "root") else "left")
    for s in report.splits:
        splits.add_row(escape(s.name), escape(s.root), str(s.images), str(s.unreadable), str(s.skipped),
                       str(len(s.classes)), f"{s.leak_fraction:.1%}" if s is not report.splits[0] else "-")
    console.print(splits)

    by_check: dict[str, list[Finding]] = defaultdict(list)
    for f in report.findings:
        by_check[f.check].append(f)
    for check, findings in by_check.items():
        table = Table(title=f"{check} ({len(findings)})", title_justify="left", show_edge=False, expand=False)
        table.add_column("severity")
        table.add_column("finding", overflow="fold")
        table.add_column("evidence", overflow="fold")
        for f in findings[:max_rows]:
            table.add_row(f"[{_STYLE[f.severity]}]{f.severity.label}[/]", escape(f.message), escape(_evidence_text(f)))
        if len(findings) > max_rows:
            table.add_row("", f"... and {len(findings) - max_rows} more (use --format json for all)", "")
        console.print()
        console.print(table)
    v = report.verdict
    console.print()
    if v.failed:
        console.print(f"[bold red]FAIL[/] {escape(v.reason)}")
    else:
        console.print(f"[bold green]PASS[/] {escape(v.reason)}")


def render_terminal(report: AuditReport, *, width: int = 120) -> str:
    """The terminal report as plain text (for ``--output FILE``)."""
    buf = io.StringIO()
    print_report(report, Console(file=buf, width=width, force_terminal=False, color_system=None, highlight=False))
    return buf.getvalue()
