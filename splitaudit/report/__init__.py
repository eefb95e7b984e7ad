"""Stage 5 of the pipeline: the report model (frozen, JSON-stable) and how a run's findings become one."""

from .build import build_report, decide, leak_fractions
from .model import AuditReport, Evidence, Finding, ImageRef, Severity, SplitSummary, Verdict

__all__ = ["AuditReport", "Evidence", "Finding", "ImageRef", "Severity", "SplitSummary", "Verdict", "build_report", "decide", "leak_fractions"]
