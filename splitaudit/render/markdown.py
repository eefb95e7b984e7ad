"""A compact Markdown summary for a pull-request comment (``--format markdown``): verdict, counts, top findings.

GitHub renders comments as GFM with HTML allowed, so every name and message is escaped: paths go into code spans
(which GFM never parses as HTML or links), free text has its Markdown and HTML characters backslash-escaped. The
whole comment stays far below GitHub's 65,536-character limit.
"""

from __future__ import annotations

import re
from collections import Counter

from ..checks.registry import display_of
from ..report.model import AuditReport, Evidence, Finding, ImageRef

#: Findings listed by name (most severe first, accepted ones last); the rest are counted per check.
TOP_FINDINGS = 10
_MAX_TEXT = 300
# GFM specials that can act mid-line (emphasis, code, links, tables, HTML, entities, strike-through, @mentions
# and #issue links); a backslash before ASCII punctuation always renders it literally.
_SPECIAL = re.compile(r"([\\`*_\[\]<>&|~@#])")
_FAIL, _PASS, _DASH = "\u274c FAIL", "\u2705 PASS", "\u2013"


def md_text(value: object) -> str:
    """Free text safe in GFM: one line, Markdown and HTML special characters escaped, length bounded."""
    text = " ".join(str(value).split())
    if len(text) > _MAX_TEXT:
        text = text[: _MAX_TEXT - 1] + "\u2026"
    return _SPECIAL.sub(r"\\\1", text)


def md_code(value: object, *, table: bool = False) -> str:
    """A code span holding ``value`` verbatim (a fence longer than any backtick run inside it); in a table cell,
    pipes are escaped so the cell survives (GFM unescapes them there, and only there)."""
    text = " ".join(str(value).split())[:_MAX_TEXT]
    if table:
        text = text.replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _image(ref: ImageRef) -> str:
    label = f" ({md_text(ref.label)})" if ref.label is not None else ""
    return md_code(f"{ref.split}/{ref.path}") + label


def _line(f: Finding) -> str:
    mark = " *(accepted)*" if f.accepted else ""
    if display_of(f.check) == "pair" and len(f.images) == 2:
        ev = Evidence.describe_all(f.evidence)
        what = f"{_image(f.images[1])} \u2194 {_image(f.images[0])}" + (f" \u2014 {md_text(ev)}" if ev else "")
    else:
        what = md_text(f.message)
    return f"- **{f.severity.label}** `{f.check}`{mark}: {what}"


def render_markdown(report: AuditReport, *, top: int = TOP_FINDINGS) -> str:
    """The report as a short Markdown comment."""
    v = report.verdict
    counts = dict(v.counts)
    accepted = [f for f in report.findings if f.accepted]
    lines = [f"### splitaudit: {_FAIL if v.failed else _PASS}", "", md_text(v.reason), ""]
    lines.append(f"**{counts.get('error', 0)}** errors \u00b7 **{counts.get('warning', 0)}** warnings \u00b7 "
                 f"**{counts.get('info', 0)}** info" + (f" \u00b7 **{len(accepted)}** accepted in the baseline" if accepted else ""))
    lines += ["", "| split | images | classes | copied from earlier splits |", "|---|--:|--:|--:|"]
    for k, s in enumerate(report.splits):
        lines.append(f"| {md_code(s.name, table=True)} | {s.images} | {len(s.classes)} | {f'{s.leak_fraction:.1%}' if k else _DASH} |")
    by_check = Counter(f.check for f in report.findings)
    if by_check:
        lines += ["", "| check | findings |", "|---|--:|"]
        lines += [f"| `{c}` | {n} |" for c, n in sorted(by_check.items(), key=lambda x: (-x[1], x[0]))]
        ordered = [f for f in report.findings if not f.accepted] + accepted
        lines += ["", f"**Top findings** ({min(top, len(ordered))} of {len(ordered)}):", ""]
        lines += [_line(f) for f in ordered[:top]]
        if len(ordered) > top:
            lines += ["", f"\u2026 and {len(ordered) - top} more: run `splitaudit check --format html --output report.html` for all of them."]
    return "\n".join(lines) + "\n"
