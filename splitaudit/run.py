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
from .scan import scan

Progress = Callable[[str, int, int], None]


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
    t0 = time.perf_counter()
    source: Any = sources[0] if len(sources) == 1 and isinstance(sources[0], Mapping) else list(sources)
    dataset = scan(source if (sources or manifest is None) else None, manifest=manifest, group_by=options.group_by)
    if options.git_tracked:
        from .scan.git import keep_tracked

        dataset = keep_tracked(dataset)
    if timings is not None:
        timings["scan"] = time.perf_counter() - t0
    store = FeatureCache(options.cache_dir) if options.cache else None
    try:
        yield AuditContext(dataset, options, cache=store, progress=progress)
    finally:
        if store is not None:
            store.close()
