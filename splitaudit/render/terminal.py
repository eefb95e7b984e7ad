"""Terminal output with rich: split summary, findings grouped by check, and a one-line verdict."""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..report.model import AuditReport, Evidence, Finding, Severity
from .escape import printable


def _safe(text: str) -> str:
    """Plain text for rich: control characters escaped (see :mod:`.escape`), then markup escaped."""
    return escape(printable(text))

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
MAX_ROWS_PER_CHECK = 25


def print_report(report: AuditReport, console: Console, *, max_rows: int = MAX_ROWS_PER_CHECK,
                 wrap: bool | None = None) -> None:
    """Write the report to ``console``. ``wrap`` (default: when the console is a terminal) wraps long findings at
    its width for reading; otherwise (a pipe, a file) each finding stays one line for grep."""
    if wrap is None:
        wrap = console.is_terminal
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
    # On a terminal a finding longer than the width wraps at spaces with a hanging indent; words (paths) are never
    # broken, so they stay copyable. In a pipe or a file every finding is one line.
    for check, findings in by_check.items():
        console.print()
        console.print(f"[bold]{_safe(check)}[/] ({len(findings)})")
        for f in findings[:max_rows]:
            body = Text(printable(f.message))
            ev = Evidence.describe_all(f.evidence)
            if ev:
                body.append(f"  ({printable(ev)})", style="dim")
            print_wrapped(console, Text("  ") + Text(f"{f.severity.label:7}", style=_STYLE[f.severity]) + Text(" "), body,
                          wrap=wrap)
        if len(findings) > max_rows:
            console.print(f"  ... and {len(findings) - max_rows} more (use --format json for all)")
    legend = evidence_legend(report.findings)
    if legend:
        console.print()
        print_wrapped(console, Text(""), Text(legend, style="dim"), wrap=wrap)
    v = report.verdict
    console.print()
    if v.failed:
        console.print(f"[bold red]FAIL[/] {_safe(v.reason)}", soft_wrap=True)
    else:
        console.print(f"[bold green]PASS[/] {_safe(v.reason)}", soft_wrap=True)


#: What each evidence name in a report means, in the order the legend lists them.
LEGEND = {
    "phash": "phash, dhash = differing bits of 64 in perceptual hashes (0 = same picture)",
    "embedding": "cosine = CNN embedding similarity (1 = same content)",
    "ncc": "ncc = pixel correlation after alignment (1 = same pixels)",
    "copy": "copy = registered band-passed correlation (1 = same shot)",
}


def evidence_legend(findings: Iterable[Finding]) -> str | None:
    """One line naming the evidence the findings show (``None`` when they show none that needs explaining)."""
    stages = {"phash" if e.stage == "dhash" else e.stage for f in findings for e in f.evidence}
    parts = [text for stage, text in LEGEND.items() if stage in stages]
    return "evidence: " + "; ".join(parts) if parts else None


def print_wrapped(console: Console, head: Text, body: Text, *, wrap: bool = True) -> None:
    """``head`` then ``body``, word-wrapped to the console's width (continuation lines indented under the body), or
    as one line when not ``wrap``."""
    width = max(20, console.width - head.cell_len)
    for k, line in enumerate(_word_wrap(body, width) if wrap else [body]):
        console.print((head if k == 0 else Text(" " * head.cell_len)) + line, soft_wrap=True, highlight=False)


def _word_wrap(text: Text, width: int) -> list[Text]:
    """``text`` in lines of at most ``width`` cells, broken only at spaces (a longer word stays whole, on its own)."""
    offsets: list[int] = []
    used = 0
    for m in re.finditer(r"\S+ *", text.plain):
        word = len(m.group(0).rstrip(" "))
        if used and used + word > width:
            offsets.append(m.start())
            used = 0
        used += len(m.group(0))
    lines = list(text.divide(offsets))
    for line in lines:
        line.rstrip()
    return lines


def render_terminal(report: AuditReport, *, width: int = 120) -> str:
    """The terminal report as plain text (for ``--output FILE``)."""
    buf = io.StringIO()
    print_report(report, Console(file=buf, width=width, force_terminal=False, color_system=None, highlight=False))
    return buf.getvalue()
