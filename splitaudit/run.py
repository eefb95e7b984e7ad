"""One run opener for ``audit``, ``explain`` and ``plan_fix``: scan -> open the cache -> build the context."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .checks import AuditContext
from .features import FeatureCache
from .options import Options
from .progress import SCAN, SEARCH, VERIFY, Progress, reporting, stage, staged
from .scan import Dataset, scan

__all__ = ["Progress", "StagedContext", "open_run"]


class StagedContext(AuditContext):
    """An :class:`AuditContext` that names its neighbour stages to the run's reporter: the hash and embedding
    searches (``searching neighbours``) and the pixel-level confirmation of candidate pairs (``verifying pairs``).
    They run inside whichever check first asks, so without this the run would sit silent on one check."""

    def hash_pairs(self, *args: Any, **kwargs: Any) -> Any:
        with staged(SEARCH, len(self.dataset.records)):
            return super().hash_pairs(*args, **kwargs)

    def dense_pairs(self, *args: Any, **kwargs: Any) -> Any:
        with staged(SEARCH, len(self.dataset.records)):
            return super().dense_pairs(*args, **kwargs)

    def _confirm(self, a: Any, b: Any) -> Any:
        with staged(VERIFY, len(a)):
            return super()._confirm(a, b)


@contextmanager
def open_run(
    sources: Sequence[Any],
    *,
    manifest: str | os.PathLike[str] | None = None,
    options: Options,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
) -> Iterator[AuditContext]:
    """Scan ``sources`` (as :func:`splitaudit.audit` takes its ``*splits``: folders, arrays, or one mapping
    ``{name: source}``) or ``manifest``, open the feature cache if ``options.cache``, and yield the run's
    :class:`AuditContext`; the cache is closed on exit. ``timings["scan"]`` gets the scan's seconds."""
    with reporting(progress):
        dataset = _scan(sources, manifest, options, timings)
        store = FeatureCache(options.cache_dir) if options.cache else None
        try:
            yield StagedContext(dataset, options, cache=store, progress=progress)
        finally:
            if store is not None:
                store.close()


def _scan(sources: Sequence[Any], manifest: Any, options: Options, timings: dict[str, float] | None) -> Dataset:
    """The scan stage: the dataset of ``sources`` or ``manifest`` (only git-tracked files if asked)."""
    stage(SCAN)
    t0 = time.perf_counter()
    source: Any = sources[0] if len(sources) == 1 and isinstance(sources[0], Mapping) else list(sources)
    dataset = scan(source if (sources or manifest is None) else None, manifest=manifest, group_by=options.group_by)
    if options.git_tracked:
        from .scan.git import keep_tracked

        dataset = keep_tracked(dataset)
    if timings is not None:
        timings["scan"] = time.perf_counter() - t0
    stage(SCAN, len(dataset.records), len(dataset.records))
    return dataset
