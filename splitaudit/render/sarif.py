"""SARIF 2.1.0 for code-scanning integrations (``--format sarif``; GitHub's upload-sarif action reads it).

One rule per check that ran, one result per finding: the level follows the severity, the location is the finding's
last image (for a pair: the later split's copy, the one to act on) as a path relative to the working directory
when it lies below it, the other images are related locations, ``partialFingerprints`` carries the stable finding
id, and findings accepted in a baseline carry an external suppression so code scanning shows them as dismissed.
The document is deterministic (sorted keys, report order).
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from ..report.model import AuditReport, Finding, ImageRef, Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def artifact_uri(report: AuditReport, ref: ImageRef, *, cwd: str | None = None) -> str:
    """:func:`artifact_path` as a URI reference (percent-encoded: file names may hold spaces, ``<``, newlines)."""
    return quote(artifact_path(report, ref, cwd=cwd), safe="/")


def artifact_path(report: AuditReport, ref: ImageRef, *, cwd: str | None = None) -> str:
    """The image's file as a POSIX path relative to ``cwd`` when below it, else absolute (arrays: ``split/x[i]``)."""
    root = next((s.root for s in report.splits if s.name == ref.split), None)
    if root is None or root.startswith("<array"):
        return f"{ref.split}/{ref.path}"
    path = os.path.abspath(os.path.join(root, ref.path))
    base = os.path.abspath(cwd or os.getcwd())
    rel = os.path.relpath(path, base)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return path.replace(os.sep, "/")
    return rel.replace(os.sep, "/")


def _location(report: AuditReport, ref: ImageRef, cwd: str | None, k: int | None = None) -> dict[str, Any]:
    loc: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": artifact_uri(report, ref, cwd=cwd)}}}
    if k is not None:
        loc["id"] = k
        loc["message"] = {"text": f"{ref.split}/{ref.path}" + (f" (label {ref.label})" if ref.label is not None else "")}
    return loc


def _result(report: AuditReport, f: Finding, rule_index: int, cwd: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": f.check,
        "ruleIndex": rule_index,
        "level": _LEVEL[f.severity],
        "message": {"text": f.message},
        "partialFingerprints": {"splitauditFindingId/v1": f.id},
        "properties": {"category": f.category, "evidence": [e.to_dict() for e in sorted(f.evidence)], "id": f.id},
    }
    if f.images:
        result["locations"] = [_location(report, f.images[-1], cwd)]
        if len(f.images) > 1:
            result["relatedLocations"] = [_location(report, r, cwd, k) for k, r in enumerate(f.images[:-1])]
    if f.accepted:
        result["suppressions"] = [{"kind": "external", "status": "accepted",
                                   "justification": "accepted in the splitaudit baseline"}]
    return result


def sarif_document(report: AuditReport, *, cwd: str | None = None) -> dict[str, Any]:
    """The SARIF log as a dict."""
    from .. import __version__
    from ..checks import all_checks

    known = all_checks()
    names = [name for name, _ in report.checks]
    names += sorted({f.check for f in report.findings} - set(names))
    rules = []
    for name in names:
        check = known.get(name)
        summary = check.summary if check is not None else name
        rules.append({"id": name, "name": name, "shortDescription": {"text": summary},
                      "helpUri": "https://example.invalid/splitaudit#what-it-checks"})
    index = {n: k for k, n in enumerate(names)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "splitaudit", "version": __version__, "informationUri": "https://example.invalid/splitaudit",
                                "rules": rules}},
            "results": [_result(report, f, index[f.check], cwd) for f in report.findings],
            "properties": {"verdict": report.verdict.to_dict()},
        }],
    }


def render_sarif(report: AuditReport) -> str:
    return json.dumps(sarif_document(report), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
