"""splitaudit: audit image dataset splits for leakage and explain surprising train/validation metrics.

The pipeline, one package per stage: :mod:`~splitaudit.scan` -> :mod:`~splitaudit.features` ->
:mod:`~splitaudit.neighbors` -> :mod:`~splitaudit.checks` -> :mod:`~splitaudit.report` -> :mod:`~splitaudit.render`.
Start with :func:`audit`.
"""

from .api import audit
from .errors import CheckError, ConfigError, InvalidParameterError, SplitauditError
from .explain import ExplainReport, explain  # noqa: E402  (the name `explain` is the function, as `audit` is)
from .report import AuditReport, Evidence, Finding, ImageRef, Severity, SplitSummary, Verdict
from .fix import FixPlan, apply_plan, plan_fix
from .options import Options

__version__ = "0.2.0"

__all__ = [
    "AuditReport", "CheckError", "ConfigError", "Evidence", "Finding", "ImageRef", "InvalidParameterError",
    "Options", "Severity", "SplitSummary", "SplitauditError", "Verdict", "__version__", "audit",
    "ExplainReport", "FixPlan", "apply_plan", "explain", "plan_fix",
]
