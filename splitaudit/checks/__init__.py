"""Stage 4 of the pipeline: checks turn evidence into findings. One check per module, all in one registry."""

from .context import AuditContext, Matches
from .registry import Check, all_checks, register, resolve_selection

__all__ = ["AuditContext", "Check", "Matches", "all_checks", "register", "resolve_selection"]
