"""Explain a train/validation gap: probes, per-epoch measurements in every mode, and an exact decomposition.

Keras (TensorFlow) is imported only when :func:`explain` runs, never when this package is imported.
"""

from .api import explain
from .decompose import Decomposition, Term
from .history import History, parse_history
from .report import DataSummary, Diagnosis, ExplainReport, Subject

__all__ = ["DataSummary", "Decomposition", "Diagnosis", "ExplainReport", "History", "Subject", "Term", "explain", "parse_history"]
