"""The public entry point: :func:`audit` runs scan -> features -> neighbours -> checks -> report."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .checks import AuditContext
from .options import CHECK, Options, build_options
from .progress import CHECKS, stage
from .features.engine import objects
from .memory import release_freed_memory
from .report import AuditReport, Policy, build_report
from .report.model import BestCopies
from .report.baseline import Baseline, resolve_baseline
from .run import Progress, open_run


def audit(
    *splits: Any,
    manifest: str | os.PathLike[str] | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
    **settings: Any,
) -> AuditReport:
    """Audit dataset splits for leakage and mismatches.

    Parameters
    ----------
    *splits:
        Two or more splits, the training split first. Each is a folder (``train/<class>/*.jpg`` or flat), an
        ``(x, y)`` tuple of arrays or an ``x`` array as ``keras.datasets`` returns them (uint8, or float in
        ``[0, 1]``), a ``tf.data.Dataset`` (TFDS splits included; ``(ds, info)`` names the classes), a Hugging Face
        ``datasets.Dataset`` with an ``Image`` column, or a list of PIL images (or of ``(image, label)`` pairs).
        Streamed inputs are written once to a temporary folder removed after the run (see ``docs/inputs.md``).
        Folders are named after their folder, other inputs ``train``/``val``/``test`` by position. A single
        mapping ``{name: source}`` (a ``datasets.DatasetDict`` too) names them explicitly. With
        ``validation_split`` and ``seed``, one folder is split as Keras' ``image_dataset_from_directory`` splits
        it, into ``train`` and ``val``.
    manifest:
        A CSV file with ``path,label,split`` (optional ``group``) columns instead of ``splits``.
    options:
        An :class:`splitaudit.options.Options` with every setting (default: ``Options()``).
    progress:
        Called as ``progress(stage, done, total)`` as each stage starts and advances (names in
        :data:`splitaudit.progress.STAGES`; ``total`` 0 when the size is not known yet).
    **settings:
        Any field of :class:`~splitaudit.options.Options` that applies to ``check``, applied over ``options``:
        ``group_by`` (a regex whose first group names an image's group), ``git_tracked`` (only files git tracks, in
        folders of a git repository), ``select``/``ignore`` (check names),
        ``check_options`` (``{"near-duplicates": {"max_phash": 8}}``), ``fail_on`` (``"error"``, ``"warning"`` or
        ``"info"``), ``max_leak_fraction`` (tolerated share of copied images per split), ``cache``/``cache_dir``,
        ``workers``, ``draft``/``max_pixels`` (decoding), ``backbone``/``weights``/``image_size`` (the CNN for
        embeddings: ``"efficientnet_lite0"`` by default, any name in
        :data:`splitaudit.features.embeddings.backbones.KERAS_APPLICATIONS`, or ``"none"`` for hash evidence
        only), ``baseline`` (a baseline file or finding ids reported as accepted; see :mod:`splitaudit.report.baseline`).
    Returns
    -------
    AuditReport
        Findings sorted by severity, per-split summaries and the verdict (``report.failed``).

    Raises
    ------
    SplitauditError
        For bad arguments, unreadable inputs (a missing folder, a malformed manifest) or a check that crashed.
        Unreadable *images* are never raised: they are findings.
    """
    opts = build_options(CHECK, "audit", options, settings)
    accepted = resolve_baseline(opts.baseline)
    timings: dict[str, float] = {}
    with open_run(splits, manifest=manifest, options=opts, progress=progress, timings=timings) as ctx:
        return run_checks(ctx, baseline=accepted, timings=timings)


def run_checks(ctx: AuditContext, *, baseline: Baseline | None = None, timings: dict[str, float] | None = None) -> AuditReport:
    """On an open run (:func:`splitaudit.run.open_run`): compute the evidence, run the checks ``ctx.options``
    selects and build the report with its verdict policy."""
    selected = ctx.options.selected()
    timings = dict(timings or {})
    t0 = time.perf_counter()
    _ = ctx.features
    timings["features"] = time.perf_counter() - t0
    if ctx.backbone is not None:
        t0 = time.perf_counter()
        _ = ctx.embeddings
        timings["embeddings"] = time.perf_counter() - t0
    results = []
    for k, (check, params) in enumerate(selected):
        stage(CHECKS, k, len(selected))
        t0 = time.perf_counter()
        results.append((check.name, params, check.run(ctx, params)))
        release_freed_memory()  # the check's working arrays: the next check starts from what is still held
        timings[f"check:{check.name}"] = time.perf_counter() - t0
    stage(CHECKS, len(selected), len(selected))
    o = ctx.options
    policy = Policy(o.fail_on, o.max_leak_fraction, frozenset(c.name for c, _ in selected if c.leak))
    f = ctx.features
    return build_report(ctx.dataset, f, results, policy, embeddings=embedding_summary(ctx), timings=timings,
                        cache={"hits": f.hits, "misses": f.misses, "embedded": ctx.embedded_count}, baseline=baseline,
                        copies=copy_summary(ctx))


def copy_summary(ctx: AuditContext) -> dict[str, Any]:
    """The copy verifier's calibration and counts, and every evaluation image's best copy score with its partner
    (``null`` for an image without candidates), so users can sort and review; empty when the verifier did not run."""
    found = ctx.computed_copies()
    if found is None:
        return {}
    from dataclasses import asdict

    s, records = ctx.split_index, ctx.dataset.records
    best: dict[str, BestCopies] = {}
    for k in np.unique(s[s > 0]).tolist():
        rows = np.flatnonzero(s == k)
        other = [records[j] if j >= 0 else None for j in found.best_partner[rows].tolist()]
        best[records[rows[0]].split] = BestCopies(
            paths=objects([records[i].relpath for i in rows.tolist()]), scores=found.best_score[rows],
            cuts=found.cuts(rows)[0], partner_splits=objects([r.split if r is not None else None for r in other]),
            partner_paths=objects([r.relpath if r is not None else None for r in other]))
    return {"calibration": asdict(found.calibration), "candidates": len(found), "copies": int(found.copy.sum()),
            "similar": int(found.similar.sum()), "best": best}


def embedding_summary(ctx: AuditContext) -> dict[str, Any]:
    """The backbone and the thresholds this dataset calibrated (empty when embeddings are off)."""
    if ctx.backbone is None or ctx.calibration is None:
        return {}
    from .neighbors.thresholds import DEFAULT_MIN_NCC

    rate = ctx.hash_collision_rate()
    return {
        "backbone": ctx.backbone.identity,
        "image_size": ctx.backbone.image_size,
        "similarity_threshold": ctx.similarity_threshold(),
        "ncc_threshold": ctx.ncc_threshold(DEFAULT_MIN_NCC),
        "hash_collision_rate": rate,
        "hashes_trusted": ctx.hashes_trusted(),
        "null_cosine": ctx.calibration.null_cosine(),
    }
