"""Leak-free split suggestions (``splitaudit fix``): plan which evaluation images to drop or move, then copy."""

from .apply import AppliedPlan, apply_plan
from .plan import DEFAULT_TOLERANCE, ClassShift, FixPlan, PlannedFile, build_plan, deviation, plan_fix

__all__ = ["AppliedPlan", "ClassShift", "DEFAULT_TOLERANCE", "FixPlan", "PlannedFile", "apply_plan", "build_plan",
           "deviation", "plan_fix"]
