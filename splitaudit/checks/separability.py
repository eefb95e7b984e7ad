"""separability: can a network learn these classes at all? Probe accuracy against chance, and class pairs at chance.

The shared class probe (``_probe.label_probe``: logistic regression on the CNN embeddings, out-of-fold on train)
measures how well the labels follow from the images. Two findings:

* the probe is not above chance (the Wilson 95% interval of its accuracy reaches the majority-class share):
  the labels do not follow from the images (shuffled labels, classes of the same images), so train and val
  metrics of any model move at random;
* a pair of classes at chance: among training images of the two classes that the probe assigns to one of them,
  the share assigned to the right one has a 95% upper bound below ``max_pair_accuracy`` (0.5 = a coin toss). Two
  folders of the same kind of images under two names do this; a network cannot learn them, and their accuracy
  differences between train and val are noise.

The most confused pairs go to the report's ``distribution["separability"]`` table either way. Needs embeddings and
labels.
"""

from __future__ import annotations

import numpy as np

from ..report.model import CheckResult, Finding, Severity
from ._probe import label_probe, wilson
from .context import AuditContext
from .registry import register


@register("separability", summary="Probe accuracy on the embeddings against chance, the most confused class pairs, and pairs of classes a model cannot tell apart.", display="table")
def separability(ctx: AuditContext, *, max_pair_accuracy: float = 0.75, min_pair_images: int = 20, min_images: int = 20,
                 top_pairs: int = 5) -> CheckResult:
    probe = label_probe(ctx)
    tr = probe.split == 0 if probe is not None else None
    if probe is None or tr.sum() < min_images:
        return CheckResult()
    y, pred = probe.y[tr], probe.predicted[tr]
    k = len(probe.classes)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    n = int(tr.sum())
    correct = int(np.trace(conf))
    acc = correct / n
    lo, hi = wilson(correct, n)
    chance = float(np.bincount(y, minlength=k).max() / n)
    train = ctx.dataset.split_names[0]
    pairs = []
    for i in range(k):
        for j in range(i + 1, k):
            inside = int(conf[i, i] + conf[i, j] + conf[j, i] + conf[j, j])
            if inside == 0:
                continue
            confused = int(conf[i, j] + conf[j, i])
            members = int(conf[i].sum() + conf[j].sum())
            pl, ph = wilson(inside - confused, inside)
            pairs.append({"classes": [probe.classes[i], probe.classes[j]], "confusion": confused / members,
                          "pair_accuracy": (inside - confused) / inside, "ci": [pl, ph], "n": inside})
    pairs.sort(key=lambda p: (-p["confusion"], p["classes"]))
    recall = {c: float(conf[i, i] / max(1, conf[i].sum())) for i, c in enumerate(probe.classes)}
    table = {"accuracy": acc, "ci": [lo, hi], "chance": chance, "n": n, "classes": k, "confused_pairs": pairs[:top_pairs],
             "recall": recall}
    findings: list[Finding] = []
    if lo <= chance:
        findings.append(Finding(
            "separability", Severity.WARNING,
            f"the labels of {train} do not follow from its images: a probe on the embeddings reaches {acc:.1%} "
            f"(95% CI {lo:.1%}-{hi:.1%}) out-of-fold, no better than always guessing the largest class ({chance:.1%}). "
            f"A network cannot learn such labels; its {train} and validation numbers will move at random",
            category="chance", data={"scope": "overall", "accuracy": acc, "ci": [lo, hi], "chance": chance, "n": n}))
    for p in pairs:
        a, b = p["classes"]
        if p["n"] >= min_pair_images and p["ci"][1] < max_pair_accuracy:
            findings.append(Finding(
                "separability", Severity.WARNING,
                f"classes {a!r} and {b!r} cannot be told apart: of the {p['n']} {train} images of the two that a probe on "
                f"the embeddings assigns to one of them, {p['pair_accuracy']:.0%} get the right one (95% CI "
                f"{p['ci'][0]:.0%}-{p['ci'][1]:.0%}; 50% is a coin toss). If they hold the same kind of images, no network "
                f"can learn them, and their accuracy moves at random between train and validation",
                category=f"pair/{a}/{b}", data={"scope": "pair", **p}))
    return CheckResult(tuple(findings), {"separability": table})
