"""The exact decomposition of a train/validation gap into measured terms.

Every term is the difference of two measurements on a chain that starts at the training metric as reported and
ends at the validation metric as reported, so the terms add up to the reported gap by construction (telescoping):

    reported train -> train at epoch end, training mode                      timing
                   -> (loss only, when val excludes it) without the penalty  penalty
                   -> dropout layers switched to inference mode              dropout
                   -> noise/augmentation layers switched too                 noise
                   -> BatchNorm layers switched too                          batchnorm
                   -> any other training-mode layer switched = inference     other
                   -> + difficulty (held-out probe: val - train)             difficulty
                   -> val without copies of training images (inference)     generalization
                   -> all of val (inference)                                 leakage
                   -> val as reported                                        reproduction
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .modes import GROUPS

TERMS = ("timing", "penalty", *GROUPS, "difficulty", "generalization", "leakage", "reproduction")
DATA_TERMS = ("difficulty", "generalization", "leakage")
#: The causes a dominant one is chosen from: the data terms count as one cause ("data"), split in a second step.
CAUSES = ("timing", "penalty", *GROUPS, "data", "reproduction")

DEFINITIONS = {
    "timing": "train at the epoch's end in training mode - the running average Keras reports over the epoch",
    "penalty": "train loss without - with the L1/L2 penalty (only when the validation loss excludes it)",
    "dropout": "train with dropout layers in inference mode - in training mode",
    "noise": "train with noise/augmentation layers (GaussianNoise, Random*) also in inference mode",
    "batchnorm": "train with BatchNorm also in inference mode (moving averages instead of batch statistics)",
    "other": "train with every remaining training-mode layer in inference mode too (= plain inference)",
    "difficulty": "held-out probe (cross-fitted on both splits): val without copies - train",
    "generalization": "val without copies - train, both in inference mode, minus difficulty (the fit to train itself)",
    "leakage": "all of val - val without the images that copy a training image",
    "reproduction": "val as logged - val measured here at the final weights (preprocessing or weights differ)",
}

CAUSE_WORDS = {
    "timing": "timing (the training metric is a running average over an epoch of improving weights)",
    "penalty": "the L1/L2 penalty in the training loss",
    "dropout": "dropout (active while training, off at evaluation)",
    "noise": "input noise/augmentation (active while training, off at evaluation)",
    "batchnorm": "BatchNorm (batch statistics while training, lagging moving averages at evaluation)",
    "other": "other layers that behave differently in training mode",
    "data": "the data (validation differs from training at the same weights)",
    "reproduction": "a logged validation metric that these images at these weights do not reproduce",
    "difficulty": "validation images that are easier than the training images",
    "generalization": "the model fitting its own training images better than new ones",
    "leakage": "validation images that copy training images",
}

ADVICE = {
    "timing": "Shift the training curve half an epoch to the left (or evaluate train with model.evaluate at the "
              "epoch's end) before comparing it with validation.",
    "penalty": "Compare data losses: the training loss includes the L1/L2 penalty; or compare accuracies.",
    "dropout": "Evaluate train with model.evaluate (inference mode) to compare like with like; the gap is dropout's, "
               "not a property of the data.",
    "noise": "Evaluate train with model.evaluate (inference mode): noise and augmentation only run while training.",
    "batchnorm": "BatchNorm's moving averages lag: normalise inputs (Rescaling(1/255)), lower the momentum (e.g. 0.9) "
                 "or train more steps per epoch, and evaluate train with model.evaluate.",
    "other": "Check the custom layers that take a `training` argument; evaluate train with model.evaluate.",
    "reproduction": "Evaluate with exactly the training pipeline's preprocessing: the logged validation metric is not "
                    "what these images give at these weights.",
    "leakage": "Remove the validation images that copy training images (splitaudit check lists them).",
    "difficulty": "Validation is easier than training: draw the split at random (stratified, grouped) instead.",
    "generalization": "Ordinary overfitting: more data, augmentation or regularisation narrow it.",
}


@dataclass(frozen=True)
class Term:
    """One link of the chain: ``value = end - start``."""

    name: str
    value: float
    start: float
    end: float

    @property
    def group(self) -> str:
        return "data" if self.name in DATA_TERMS else self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "from": self.start, "to": self.end}


@dataclass(frozen=True)
class Decomposition:
    """``reported_val - reported_train`` for one metric, split into :data:`TERMS` (all present, zeros included)."""

    metric: str  # "accuracy" or "loss"
    reported_train: float
    reported_val: float
    terms: tuple[Term, ...]
    train_source: str = "reported"  # or "epoch end, training mode" when no running average was available

    @property
    def gap(self) -> float:
        return self.reported_val - self.reported_train

    @property
    def total(self) -> float:
        return float(sum(t.value for t in self.terms))

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "loss"

    def term(self, name: str) -> float:
        return next(t.value for t in self.terms if t.name == name)

    def causes(self) -> dict[str, float]:
        """Term values with the data terms summed into ``data``."""
        out = {c: 0.0 for c in CAUSES}
        for t in self.terms:
            out[t.group] += t.value
        return out

    @property
    def dominant(self) -> str:
        """The cause with the largest absolute share (first in :data:`CAUSES` on ties)."""
        c = self.causes()
        return max(CAUSES, key=lambda k: (abs(c[k]), -CAUSES.index(k)))

    @property
    def dominant_data_term(self) -> str:
        return max(DATA_TERMS, key=lambda k: (abs(self.term(k)), -DATA_TERMS.index(k)))

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "reported_train": self.reported_train, "reported_val": self.reported_val,
                "train_source": self.train_source, "gap": self.gap, "terms": [t.to_dict() for t in self.terms],
                "causes": self.causes(), "dominant": self.dominant, "dominant_data_term": self.dominant_data_term}


def decompose(
    metric: str,
    *,
    modes: Sequence[tuple[str, float]],
    val: float,
    val_clean: float | None,
    difficulty: float | None,
    reported_train: float | None = None,
    reported_val: float | None = None,
    penalty: float = 0.0,
    val_includes_penalty: bool = True,
) -> Decomposition:
    """Build the chain for one metric.

    ``modes`` are the training set's values at the epoch's end, ``[("training", v0), ("dropout", v1), ...,
    ("other", v4)]`` (:func:`splitaudit.explain.modes.mode_passes`; losses without the penalty). ``val`` is the
    validation value in inference mode, ``val_clean`` the same without images that copy training images (``None``
    when every validation image is a copy), ``difficulty`` the held-out probe's val - train difference (``None``:
    unknown, counted as 0). For the loss, ``penalty`` is the L1/L2 amount Keras adds; it is part of both reported
    losses when ``val_includes_penalty`` (Keras 3 adds ``model.losses`` to the validation loss too).
    """
    is_loss = metric == "loss"
    shift = penalty if is_loss and val_includes_penalty else 0.0  # added to every data-loss measurement on the chain
    steps = dict(modes)
    chain: list[tuple[str, float]] = []
    first = steps["training"] + (penalty if is_loss else 0.0)
    start = reported_train if reported_train is not None else first
    chain.append(("timing", first))
    chain.append(("penalty", steps["training"] + shift))
    for g in GROUPS:
        chain.append((g, steps[g] + shift))
    train_inf = steps[GROUPS[-1]] + shift
    v = val + shift
    vc = (val_clean + shift) if val_clean is not None else train_inf  # all copies: leakage takes the whole data term
    d = difficulty if (difficulty is not None and val_clean is not None) else 0.0
    chain.append(("difficulty", train_inf + d))
    chain.append(("generalization", vc))
    chain.append(("leakage", v))
    end = reported_val if reported_val is not None else v
    chain.append(("reproduction", end))
    terms = []
    prev = start
    for name, value in chain:
        terms.append(Term(name, float(value - prev), float(prev), float(value)))
        prev = value
    return Decomposition(metric, float(start), float(end), tuple(terms),
                         "reported" if reported_train is not None else "epoch end, training mode")
