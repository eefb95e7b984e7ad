"""One run opener for ``audit``, ``explain`` and ``plan_fix``: scan -> open the cache -> build the context."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .checks import AuditContext
from .features import FeatureCache
from .features.engine import Engine
from .options import Options
from .progress import SCAN, Progress, reporting, stage
from .scan import Dataset, SpillStore, scan

__all__ = ["Progress", "open_run"]


@contextmanager
def open_run(
    sources: Sequence[Any],
    *,
    manifest: str | os.PathLike[str] | None = None,
    options: Options,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
) -> Iterator[AuditContext]:
    """Scan ``sources`` (as :func:`splitaudit.audit` takes its ``*splits``: folders, arrays, streamed datasets, or
    one mapping ``{name: source}``) or ``manifest``, open the feature cache if ``options.cache``, and yield the run's
    :class:`AuditContext`; the cache is closed on exit, and the temporary copies of streamed images are removed.
    ``timings["scan"]`` gets the scan's seconds."""
    Engine.of(options)  # fails fast, before the scan, when the engine is 'ray' and Ray is missing
    with reporting(progress), SpillStore() as spill:
        dataset = _scan(sources, manifest, options, timings, spill, progress)
        store = FeatureCache(options.cache_dir) if options.cache else None
        try:
            yield AuditContext(dataset, options, cache=store, progress=progress)
        finally:
            if store is not None:
                store.close()


def _scan(sources: Sequence[Any], manifest: Any, options: Options, timings: dict[str, float] | None,
          spill: SpillStore, progress: Progress | None) -> Dataset:
    """The scan stage: the dataset of ``sources`` or ``manifest`` (only git-tracked files if asked); streamed
    inputs are written once into ``spill``."""
    stage(SCAN)
    t0 = time.perf_counter()
    source: Any = sources[0] if len(sources) == 1 and isinstance(sources[0], Mapping) else list(sources)
    dataset = scan(source if (sources or manifest is None) else None, manifest=manifest, group_by=options.group_by,
                   spill=spill, validation_split=options.validation_split, seed=options.seed, progress=progress)
    if options.git_tracked:
        from .scan.git import keep_tracked

        dataset = keep_tracked(dataset)
    if timings is not None:
        timings["scan"] = time.perf_counter() - t0
    stage(SCAN, len(dataset.records), len(dataset.records))
    return dataset
