"""split-distinguishability: can a classifier tell an evaluation split from train? ("adversarial validation")

For each evaluation split, a logistic regression predicts "train or this split" from the CNN embeddings (projected
on their principal components) and, separately, from the image properties; 5-fold cross-validated decision values
give a ROC AUC with DeLong's 95% confidence interval. AUC 0.5 means the splits are drawn from one distribution;
the higher it is, the more an evaluation image looks unlike anything in train. Reported when the interval's lower
bound reaches ``min_auc`` (default 0.6; measured on clean random splits in docs/distribution.md), with the
evaluation images most unlike train as examples. The embedding probe needs embeddings (nothing with
``--backbone none``); the property probe always runs.
"""

from __future__ import annotations

import numpy as np

from ..report.model import CheckResult, Finding, Severity
from ._probe import split_probe
from .context import AuditContext
from .registry import register

KINDS = {"embeddings": "CNN embeddings", "properties": "image properties (size, file size, brightness, contrast, saturation, sharpness, entropy)"}


@register("split-distinguishability", summary="Adversarial validation: a cross-validated classifier telling each evaluation split from train (ROC AUC with a confidence interval; 0.5 = same distribution).", display="table")
def split_distinguishability(ctx: AuditContext, *, min_auc: float = 0.6, examples: int = 5, min_images: int = 20) -> CheckResult:
    names = ctx.dataset.split_names
    findings: list[Finding] = []
    summary: dict = {}
    for k, other in enumerate(names[1:], start=1):
        for kind, words in KINDS.items():
            if kind == "embeddings" and ctx.backbone is None:
                continue
            probe = split_probe(ctx, kind, k)
            if probe is None or probe.is_eval.sum() < min_images or (~probe.is_eval).sum() < min_images:
                continue
            summary.setdefault(other, {})[kind] = {"auc": probe.auc, "ci": [probe.low, probe.high],
                                                   "n_train": int((~probe.is_eval).sum()), "n_eval": int(probe.is_eval.sum())}
            if probe.low < min_auc:
                continue
            ev = np.flatnonzero(probe.is_eval)
            top = ev[np.lexsort((probe.rows[ev], -probe.scores[ev]))][:examples]
            refs = tuple(ctx.ref(probe.rows[j]) for j in top)
            shown = ", ".join(f"{r.path}" for r in refs[:3])
            findings.append(Finding(
                "split-distinguishability", Severity.WARNING,
                f"{other} can be told apart from {names[0]} by its {words}: a cross-validated classifier separates them "
                f"with ROC AUC {probe.auc:.2f} (95% CI {probe.low:.2f}-{probe.high:.2f}; 0.5 = same distribution). "
                f"{other} images are not drawn from the distribution the model learns, so the {names[0]}/{other} gap "
                f"measures this shift as well as generalisation. Most unlike {names[0]}: {shown}",
                images=refs, category=f"{other}/{kind}",
                data={"split": other, "features": kind, "auc": probe.auc, "ci": [probe.low, probe.high],
                      "n_train": int((~probe.is_eval).sum()), "n_eval": int(probe.is_eval.sum()),
                      "examples": [{"path": r.path, "score": float(probe.scores[j])} for r, j in zip(refs, top)]}))
    return CheckResult(tuple(findings), {"distinguishability": summary} if summary else {})
