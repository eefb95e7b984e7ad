"""Frozen results of :func:`splitaudit.explain`: subjects with their decompositions, evidence and diagnoses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..report.model import _clean
from .data import ClassPair
from .decompose import Decomposition
from .history import CurveFinding, History
from .leak import LeakEffect
from .model_diag import ModelDiagnosis
from .probes import EpochRecord

EXPLAIN_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class EpochGap:
    """One epoch's gap, decomposed like the final one (probes only: the user's model has only its final weights)."""

    epoch: int
    accuracy: Decomposition
    loss: Decomposition

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **{d.metric: {"gap": d.gap, "terms": {t.name: t.value for t in d.terms},
                                                   "dominant": d.dominant} for d in (self.accuracy, self.loss)}}


@dataclass(frozen=True)
class Subject:
    """One model whose gap is explained: a probe (with per-epoch records) or the user's model at its final weights."""

    name: str  # "plain-probe", "regularized-probe" or "model"
    accuracy: Decomposition
    loss: Decomposition
    penalty: float
    epochs: tuple[EpochRecord, ...] = ()
    per_epoch: tuple[EpochGap, ...] = ()

    @property
    def train_accuracy(self) -> float:
        """Training accuracy at the final weights in inference mode."""
        return next(t.end for t in self.accuracy.terms if t.name == "other")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "accuracy": self.accuracy.to_dict(), "loss": self.loss.to_dict(),
                "penalty": self.penalty, "epochs": [e.to_dict() for e in self.epochs],
                "per_epoch": [e.to_dict() for e in self.per_epoch]}


@dataclass(frozen=True)
class Diagnosis:
    """A named cause or problem with its evidence: ``code`` is stable (e.g. ``over-regularization``)."""

    code: str
    message: str
    data: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": dict(self.data)}


@dataclass(frozen=True)
class DataSummary:
    train: str
    val: str
    train_images: int
    val_images: int
    classes: tuple[str, ...]
    leaked_val: tuple[str, ...]
    difficulty_accuracy: float | None
    difficulty_loss: float | None
    held_out_train_accuracy: float | None
    held_out_val_accuracy: float | None
    inseparable: tuple[ClassPair, ...]
    features: str  # what the probes saw: the backbone identity or "pixels"

    @property
    def leaked_share(self) -> float:
        return len(self.leaked_val) / self.val_images if self.val_images else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val, "train_images": self.train_images, "val_images": self.val_images,
                "classes": list(self.classes), "leaked_val": sorted(self.leaked_val), "leaked_share": self.leaked_share,
                "difficulty_accuracy": self.difficulty_accuracy, "difficulty_loss": self.difficulty_loss,
                "held_out_train_accuracy": self.held_out_train_accuracy,
                "held_out_val_accuracy": self.held_out_val_accuracy,
                "inseparable_pairs": [p.to_dict() for p in self.inseparable], "features": self.features}


@dataclass(frozen=True)
class ExplainReport:
    """The result of :func:`splitaudit.explain`.

    ``primary`` names the subject the headline is about (the user's model when given, else the regularized probe);
    ``summary`` is the headline (causes that lead, then the decomposition of the gap ``metric`` asks about),
    ``advice`` what follows, each line with the measured number that triggers it; ``headline`` is the cause the
    headline leads with (a diagnosis code such as ``not-separable``, else the dominant decomposition cause).
    """

    data: DataSummary
    subjects: tuple[Subject, ...]
    primary: str
    summary: str
    advice: tuple[str, ...]
    diagnoses: tuple[Diagnosis, ...]
    history: History | None = None
    curves: tuple[CurveFinding, ...] = ()
    model: ModelDiagnosis | None = None
    seed: int = 0
    metric: str = "both"
    leak: LeakEffect | None = None
    headline: str = ""

    def subject(self, name: str) -> Subject:
        for s in self.subjects:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def main(self) -> Subject:
        return self.subject(self.primary)

    @property
    def dominant(self) -> str:
        """The primary subject's dominant cause of the accuracy gap."""
        return self.main.accuracy.dominant

    def diagnosis(self, code: str) -> Diagnosis | None:
        return next((d for d in self.diagnoses if d.code == code), None)

    def to_dict(self) -> dict[str, Any]:
        return _clean({
            "schema_version": EXPLAIN_SCHEMA_VERSION,
            "data": self.data.to_dict(),
            "primary": self.primary,
            "dominant": self.dominant,
            "dominant_loss": self.main.loss.dominant,
            "headline_cause": self.headline,
            "seed": self.seed,
            "metric": self.metric,
            "leak_effect": self.leak.to_dict() if self.leak else None,
            "summary": self.summary,
            "advice": list(self.advice),
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "subjects": [s.to_dict() for s in self.subjects],
            "history": self.history.to_dict() if self.history else None,
            "curves": [c.to_dict() for c in self.curves],
            "model": self.model.to_dict() if self.model else None,
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    def plot(self, path: str) -> None:
        """Write learning curves (``.svg`` or ``.png``)."""
        from .plots import write_plot

        write_plot(self, path)
