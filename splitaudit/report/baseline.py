"""Baseline files: findings a curator reviewed and accepted (like detect-secrets' ``.secrets.baseline``).

``splitaudit check ... --write-baseline FILE`` records every current finding by its stable ``Finding.id`` (a hash
of check, category and images: see ``docs/json-schema.md``); ``--baseline FILE`` (or ``baseline = "FILE"`` in
``[tool.splitaudit]``) then reports those findings as *accepted* (``Finding.accepted``; ``data["baseline"] =
"accepted"`` in JSON): still listed, but not counted towards the verdict. Any finding whose id is not in the file is
new and fails as usual. The file is JSON, sorted and deterministic, with each finding's message for humans
reviewing the diff. See ``docs/report.md``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

from ..errors import SplitauditError, invalid_parameter
from .model import AuditReport, Finding
from .verdict import decide

BASELINE_VERSION = 1
_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Baseline:
    """The accepted finding ids of one baseline file (``path`` is ``None`` for an in-memory baseline)."""

    ids: frozenset[str]
    path: str | None = None

    def __contains__(self, finding_id: object) -> bool:
        return finding_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)


BaselineInput = Union[str, "os.PathLike[str]", Baseline, Iterable[str], None]


def load_baseline(path: str | os.PathLike[str]) -> Baseline:
    """Read a baseline file written by :func:`write_baseline`; any problem is a one-line :class:`SplitauditError`."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise SplitauditError(f"cannot read baseline {name!r}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SplitauditError(f"baseline {name!r} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("accepted"), list):
        raise SplitauditError(f"baseline {name!r} must be a JSON object with an 'accepted' list (write one with --write-baseline)")
    if doc.get("version") != BASELINE_VERSION:
        raise SplitauditError(f"baseline {name!r} has version {doc.get('version')!r}; this splitaudit reads version {BASELINE_VERSION}")
    ids = set()
    for k, entry in enumerate(doc["accepted"]):
        fid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(fid, str) or not _ID.fullmatch(fid):
            raise SplitauditError(f"baseline {name!r}: entry {k} has no valid 'id' (16 hex digits). Got {fid!r} instead.")
        ids.add(fid)
    return Baseline(frozenset(ids), name)


def resolve_baseline(baseline: BaselineInput) -> Baseline | None:
    """A :class:`Baseline` from a file path, a Baseline, or an iterable of finding ids (``None`` stays ``None``)."""
    if baseline is None or isinstance(baseline, Baseline):
        return baseline
    if isinstance(baseline, (str, os.PathLike)):
        return load_baseline(baseline)
    if isinstance(baseline, Iterable):
        ids = list(baseline)
        bad = [i for i in ids if not isinstance(i, str) or not _ID.fullmatch(i)]
        if bad:
            raise invalid_parameter("baseline", "a baseline file path or finding ids (16 hex digits)", bad[0])
        return Baseline(frozenset(ids))
    raise invalid_parameter("baseline", "None, a baseline file path or an iterable of finding ids", baseline)


def accept(findings: Sequence[Finding], baseline: Baseline | None) -> list[Finding]:
    """The findings, each marked accepted exactly when ``baseline`` lists its id (a new baseline replaces any
    earlier marks)."""
    ids = baseline.ids if baseline else frozenset()
    return [f if f.accepted == (f.id in ids) else replace(f, accepted=f.id in ids) for f in findings]


def baseline_document(report: AuditReport) -> dict[str, Any]:
    """Every finding of ``report`` as an accepted entry, sorted by id (the content :func:`write_baseline` writes)."""
    entries = {}
    for f in report.findings:
        entries[f.id] = {
            "id": f.id,
            "check": f.check,
            "severity": f.severity.label,
            "images": [f"{i.split}/{i.path}" for i in f.images],
            "message": f.message,
        }
    return {"version": BASELINE_VERSION, "generated_by": "splitaudit", "accepted": [entries[k] for k in sorted(entries)]}


def render_baseline(report: AuditReport) -> str:
    return json.dumps(baseline_document(report), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_baseline(report: AuditReport, path: str | os.PathLike[str]) -> int:
    """Write a baseline accepting every finding of ``report``; returns how many it lists."""
    text = render_baseline(report)
    name = os.fspath(path)
    try:
        with open(name, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise SplitauditError(f"cannot write baseline {name!r}: {exc.strerror or exc}") from exc
    return len(baseline_document(report)["accepted"])


def apply_baseline(report: AuditReport, baseline: BaselineInput) -> AuditReport:
    """``report`` with exactly ``baseline``'s findings marked accepted and the verdict decided again under the
    report's own policy."""
    findings = tuple(accept(report.findings, resolve_baseline(baseline)))
    fractions = {s.name: s.leak_fraction for s in report.splits}
    return replace(report, findings=findings, verdict=decide(findings, report.policy, fractions))
