"""The public entry point: :func:`audit` runs scan -> features -> neighbours -> checks -> report."""

from __future__ import annotations

import os
import time
from typing import Any

from .baseline import Baseline, resolve_baseline
from .checks import AuditContext
from .options import CHECK, Options, build_options
from .report import AuditReport, build_report
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
        ``[0, 1]``). Folders are named after their folder, arrays ``train``/``val``/``test`` by position. A single
        mapping ``{name: source}`` names them explicitly.
    manifest:
        A CSV file with ``path,label,split`` (optional ``group``) columns instead of ``splits``.
    options:
        An :class:`splitaudit.options.Options` with every setting (default: ``Options()``).
    progress:
        Called as ``progress(stage, done, total)`` during long work.
    **settings:
        Any field of :class:`~splitaudit.options.Options` that applies to ``check``, applied over ``options``:
        ``group_by`` (a regex whose first group names an image's group), ``select``/``ignore`` (check names),
        ``check_options`` (``{"near-duplicates": {"max_phash": 8}}``), ``fail_on`` (``"error"``, ``"warning"`` or
        ``"info"``), ``max_leak_fraction`` (tolerated share of copied images per split), ``cache``/``cache_dir``,
        ``workers``, ``draft``/``max_pixels`` (decoding), ``backbone``/``weights``/``image_size`` (the CNN for
        embeddings: ``"efficientnet_lite0"`` by default, any name in
        :data:`splitaudit.features.embeddings.backbones.KERAS_APPLICATIONS`, or ``"none"`` for hash evidence
        only), ``baseline`` (a baseline file or finding ids reported as accepted; see :mod:`splitaudit.baseline`).

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
    f = ctx.features
    timings["features"] = time.perf_counter() - t0
    if ctx.backbone is not None:
        t0 = time.perf_counter()
        _ = ctx.embeddings
        timings["embeddings"] = time.perf_counter() - t0
    findings = []
    for check, params in selected:
        t0 = time.perf_counter()
        findings.extend(check.run(ctx, params))
        timings[f"check:{check.name}"] = time.perf_counter() - t0
    # After the checks: they may have filled in pixel digests that the next run should not recompute.
    f.save_snapshots()
    return build_report(
        ctx, findings,
        checks=[(c.name, p) for c, p in selected],
        leak_checks={c.name for c, _ in selected if c.leak},
        fail_on=ctx.options.fail_on, max_leak_fraction=ctx.options.max_leak_fraction, timings=timings, baseline=baseline,
    )
