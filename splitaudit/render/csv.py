"""CSV output (``--format csv``): one row per cross-split pair, with every stage's evidence, for labelling tools and
spreadsheets. Findings that are not pairs (groups, unreadable files, tables) are left to the other formats."""

from __future__ import annotations

import csv
import io

from ..checks.registry import display_of
from ..report.model import AuditReport, Finding

STAGES = ("bytes", "pixels", "phash", "dhash", "embedding", "ncc")
COLUMNS = ("id", "check", "severity", "category", "accepted", "split_a", "path_a", "label_a", "split_b", "path_b",
           "label_b", *(f"{s}_distance" for s in STAGES), *(f"{s}_similarity" for s in ("embedding", "ncc")),
           "mirrored", "message")
#: A cell starting with one of these is a formula to a spreadsheet: file names are data, so they are quoted.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA) else value


def _row(f: Finding) -> list[object]:
    a, b = f.images[0], f.images[1]
    ev = {e.stage: e for e in f.evidence}
    distances = [ev[s].distance if s in ev else "" for s in STAGES]
    similarities = [ev[s].similarity if s in ev and ev[s].similarity is not None else "" for s in ("embedding", "ncc")]
    mirrored = any(e.flipped for e in f.evidence)
    return [f.id, f.check, f.severity.label, f.category or "", int(f.accepted), _text(a.split), _text(a.path),
            _text(a.label), _text(b.split), _text(b.path), _text(b.label), *distances, *similarities, int(mirrored),
            _text(f.message)]


def render_csv(report: AuditReport) -> str:
    """The pair findings as CSV (header row first, findings in report order; RFC 4180 quoting)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for f in report.findings:
        if display_of(f.check) == "pair" and len(f.images) == 2:
            w.writerow(_row(f))
    return out.getvalue()
