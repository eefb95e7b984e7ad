"""JSON output: ``AuditReport.to_json()`` (sorted keys, sorted findings; see docs/json-schema.md)."""

from __future__ import annotations

from ..report.model import AuditReport


def render_json(report: AuditReport) -> str:
    return report.to_json()
