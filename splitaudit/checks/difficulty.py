"""difficulty: is an evaluation split easier (or harder) than train for a model trained on train?

Every labelled image gets a difficulty from the shared class probe on the embeddings (``_probe.label_probe``): its
loss (cross-entropy of the true class) and margin (true-class probability minus the best other one). Training
images are predicted out-of-fold; evaluation images by the fold model of a randomly assigned fold, so both sides are
predicted by equally trained models that never saw them. The losses of the two sides are compared with a
Mann-Whitney test; the effect size is ``P(easier)``, the probability that a random evaluation image has a lower
loss than a random training image (0.5 = equally difficult). Reported overall and per class when the
Bonferroni-corrected p-value is below ``alpha`` and ``|P(easier) - 0.5|`` reaches ``min_effect``.

An easier validation split (drawn from the clean, typical, well-lit images; or holding copies of training images)
makes validation accuracy overstate what the model does on new data; a harder one makes the gap look like
overfitting when it is a shift. Needs embeddings and labels.
"""

from __future__ import annotations

import numpy as np

from ..report.model import CheckResult, Finding, Severity
from ._probe import label_probe, wilson
from ._twosample import mann_whitney
from .context import AuditContext
from .registry import register


@register("difficulty", summary="Per-image difficulty from a probe on the embeddings: is an evaluation split easier or harder than train, overall and per class?", display="table")
def difficulty(ctx: AuditContext, *, alpha: float = 0.001, min_effect: float = 0.1, min_images: int = 20,
               min_class_images: int = 10) -> CheckResult:
    probe = label_probe(ctx)
    if probe is None:
        return CheckResult()
    names = ctx.dataset.split_names
    loss, margin, correct = probe.loss, probe.margin, probe.correct
    tr = probe.split == 0
    n_eval_splits = max(1, len(names) - 1)
    findings: list[Finding] = []
    summary: dict = {}
    for k, other in enumerate(names[1:], start=1):
        ev = probe.split == k
        if ev.sum() < min_images or tr.sum() < min_images:
            continue
        overall = _compare(loss, margin, correct, tr, ev, n_eval_splits)
        by_class: dict[str, dict] = {}
        mc = n_eval_splits * len(probe.classes)
        for c, name in enumerate(probe.classes):
            ia, ib = tr & (probe.y == c), ev & (probe.y == c)
            if ia.sum() >= min_class_images and ib.sum() >= min_class_images:
                by_class[name] = _compare(loss, margin, correct, ia, ib, mc)
        summary[other] = {**overall, "by_class": {c: {key: r[key] for key in ("p_easier", "p_value", "accuracy_train", "accuracy_eval")}
                                                  for c, r in by_class.items()}}
        train = names[0]
        if overall["p_value"] < alpha and abs(overall["p_easier"] - 0.5) >= min_effect:
            easier = overall["p_easier"] > 0.5
            why = (f"{other} accuracy overstates how a model trained on {train} does on new images of {train}'s kind"
                   if easier else f"part of the {train}/{other} gap is this difficulty shift, not overfitting")
            worst = _worst_examples(ctx, probe, ev, easier)
            findings.append(Finding(
                "difficulty", Severity.WARNING,
                f"{other} is {'easier' if easier else 'harder'} than {train} for a probe trained on {train}'s embeddings: "
                f"P(a {other} image has lower loss than a {train} image) = {overall['p_easier']:.2f} (0.5 = equal; "
                f"Mann-Whitney p={overall['p_value']:.1e}); probe accuracy {overall['accuracy_eval']:.1%} "
                f"(95% CI {overall['ci_eval'][0]:.1%}-{overall['ci_eval'][1]:.1%}) on {other} vs "
                f"{overall['accuracy_train']:.1%} ({overall['ci_train'][0]:.1%}-{overall['ci_train'][1]:.1%}) out-of-fold on "
                f"{train}; mean loss {overall['mean_loss_eval']:.3f} vs {overall['mean_loss_train']:.3f}. So {why}",
                images=worst, category=f"{other}/{'easier' if easier else 'harder'}",
                data={"split": other, "scope": "overall", "direction": "easier" if easier else "harder", **overall}))
        for direction in ("easier", "harder"):
            flagged = {c: r for c, r in by_class.items() if r["p_value"] < alpha and abs(r["p_easier"] - 0.5) >= min_effect
                       and (r["p_easier"] > 0.5) == (direction == "easier")}
            if not flagged:
                continue
            ordered = sorted(flagged, key=lambda c: (-abs(flagged[c]["p_easier"] - 0.5), c))
            parts = [_class_words(c, flagged[c], other, train) for c in ordered]
            findings.append(Finding(
                "difficulty", Severity.WARNING,
                f"{other} is {direction} than {train} for {len(flagged)} class(es): {'; '.join(parts)}. "
                f"Per-class {other} accuracy for them {'overstates' if direction == 'easier' else 'understates'} what a "
                f"model trained on {train} does on new images of those classes",
                category=f"{other}/classes-{direction}",
                data={"split": other, "scope": "classes", "direction": direction, "classes": ordered,
                      "by_class": {c: flagged[c] for c in ordered}}))
    return CheckResult(tuple(findings), {"difficulty": summary} if summary else {})


def _class_words(name: str, r: dict, other: str, train: str) -> str:
    """One flagged class in words: how often its evaluation images have the lower probe loss, and its accuracy on
    both sides (said once when equal: a shift in confidence, not in correctness)."""
    acc_eval, acc_train = f"{r['accuracy_eval']:.0%}", f"{r['accuracy_train']:.0%}"
    accuracy = f"accuracy {acc_eval} on both" if acc_eval == acc_train else f"accuracy {acc_eval} on {other}, {acc_train} on {train}"
    return (f"{name!r}: a {other} image has the lower loss in {r['p_easier']:.0%} of pairs with a {train} image "
            f"(50% = equal, p={r['p_value']:.1e}), {accuracy}")


def _compare(loss: np.ndarray, margin: np.ndarray, correct: np.ndarray, a: np.ndarray, b: np.ndarray, tests: int) -> dict:
    """Difficulty of rows ``b`` (evaluation) against rows ``a`` (train): effect, p-value (Bonferroni over
    ``tests``), accuracies with Wilson intervals, mean loss and median margin."""
    la, lb = loss[a], loss[b]
    u, p_value = mann_whitney(lb, la)
    # U counts pairs where the evaluation image has the *higher* loss: P(easier) is the complement.
    p_easier = 1.0 - u / (len(la) * len(lb))
    ka, kb = int(correct[a].sum()), int(correct[b].sum())
    return {"p_easier": p_easier, "p_value": min(1.0, p_value * tests),
            "accuracy_train": ka / len(la), "ci_train": list(wilson(ka, len(la))),
            "accuracy_eval": kb / len(lb), "ci_eval": list(wilson(kb, len(lb))),
            "mean_loss_train": float(la.mean()), "mean_loss_eval": float(lb.mean()),
            "median_margin_train": float(np.median(margin[a])), "median_margin_eval": float(np.median(margin[b])),
            "n_train": int(len(la)), "n_eval": int(len(lb))}


def _worst_examples(ctx: AuditContext, probe, ev: np.ndarray, easier: bool, n: int = 3) -> tuple:  # noqa: ANN001
    """Harder: the evaluation images with the highest loss (what the probe gets most wrong). Easier: none (an
    easy image is not a problem in itself)."""
    if easier:
        return ()
    idx = np.flatnonzero(ev)
    order = idx[np.lexsort((probe.rows[idx], -probe.loss[idx]))][:n]
    return tuple(ctx.ref(probe.rows[j]) for j in order)
