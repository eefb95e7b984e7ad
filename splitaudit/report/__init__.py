"""Stage 5 of the pipeline: the report model (frozen, JSON-stable), the verdict policy and how a run's check
results become a report; baselines of accepted findings."""

from .build import build_report
from .model import AuditReport, CheckResult, Evidence, Finding, ImageRef, Policy, Severity, SplitSummary, Verdict
from .verdict import decide, leak_fractions

__all__ = ["AuditReport", "CheckResult", "Evidence", "Finding", "ImageRef", "Policy", "Severity", "SplitSummary", "Verdict",
           "build_report", "decide", "leak_fractions"]
