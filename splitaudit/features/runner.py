"""Run a pure batch function over columns: in-process for small jobs, on local threads or forked processes otherwise.

The function has Ray Data's ``map_batches`` shape (dict of NumPy columns in, dict of columns out), so moving the
features stage to a cluster is a matter of replacing this module's loop with ``ray.data.from_numpy(...)
.map_batches(fn)``; the search and checks only ever see the concatenated columns.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from ..errors import invalid_parameter

Columns = dict[str, np.ndarray]
BatchFn = Callable[[Columns], Columns]

# Below this many rows a pool costs more (worker start-up imports) than it saves.
_MIN_ROWS_FOR_POOL = 96


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _slices(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def map_batches(
    fn: BatchFn,
    columns: Columns,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    preload: Sequence[str] = (),
    setup: Callable[[], None] | None = None,
    on_batch: Callable[[int, Columns], None] | None = None,
    releases_gil: bool = False,
) -> Columns:
    """Apply ``fn`` to consecutive batches of ``columns`` and concatenate the outputs in input order.

    Where the batches run is :func:`pool_kind`'s choice (``releases_gil``: ``fn`` spends its time in C code that
    releases the GIL, such as decoding, so threads are as fast as processes). ``preload`` names modules ``fn``
    imports lazily: they are imported once before the pool starts, so forked workers inherit them instead of each
    paying the import (scipy.fft: 0.17 s per worker). ``setup`` likewise runs once in this process before a pool
    is started (warming caches the workers inherit). ``on_batch(start, output)``
    is called for each batch's output as soon as it is in order (``start`` = its first row), so a caller can keep
    finished work before the whole job ends (an interrupted run then resumes where it stopped).
    """
    if batch_size < 1:
        raise invalid_parameter("batch_size", "an int >= 1", batch_size)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise invalid_parameter("workers", "an int >= 1", workers)
    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        return {}
    batches = ({k: v[s] for k, v in columns.items()} for s in _slices(n, batch_size))
    outputs: _Outputs = _Outputs(on_batch)
    kind = pool_kind(workers, n, releases_gil=releases_gil)
    if kind == "inline":
        for batch in batches:
            outputs.append(fn(batch))
            if progress:
                progress(len(next(iter(batch.values()))))
    else:
        for module in preload:
            importlib.import_module(module)
        if setup is not None:
            setup()
        with _pool(kind, workers) as pool:
            try:
                # Bounded in-flight submissions keep memory flat however many images there are.
                window = workers * 4
                pending: list[tuple[Future[Columns], int]] = []
                for batch in batches:
                    pending.append((pool.submit(fn, batch), len(next(iter(batch.values())))))
                    if len(pending) >= window:
                        _drain_one(pending, outputs, progress)
                while pending:
                    _drain_one(pending, outputs, progress)
            except BaseException:  # Ctrl-C or an error: drop the queued batches, let the running ones end, then raise
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return _concatenate(outputs)


def _concatenate(outputs: list[Columns]) -> Columns:
    """The batch outputs' columns concatenated in order, one column at a time, each column's parts dropped once it is
    made: the whole output is held about once, not twice (every per-record column of the hash stage at the end of
    its pool, ~300 bytes an image with the small arrays' headers). The callers' own dicts are left as they are (the
    cache writer still holds the last ones)."""
    parts = [dict(o) for o in outputs]
    outputs.clear()
    out: Columns = {}
    for k in list(parts[0]):
        out[k] = np.concatenate([p.pop(k) for p in parts])
    return out


class _Outputs(list):  # type: ignore[type-arg]
    """The batch outputs in order, passing each to ``on_batch`` with its first row as it arrives."""

    def __init__(self, on_batch: Callable[[int, Columns], None] | None) -> None:
        super().__init__()
        self._on_batch = on_batch
        self._rows = 0

    def append(self, out: Columns) -> None:  # type: ignore[override]
        super().append(out)
        if self._on_batch is not None:
            self._on_batch(self._rows, out)
        self._rows += len(next(iter(out.values()))) if out else 0


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the parent: a terminal sends SIGINT to the whole process group, and workers
    dying of it mid-batch broke the pool (an internal error and their tracebacks instead of 'interrupted')."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _ready() -> None:
    return None


def _workers_started(workers: int, context: multiprocessing.context.BaseContext) -> ProcessPoolExecutor:
    """A pool whose workers are already running, started with Ctrl-C held back: a SIGINT that lands while
    ``os.fork`` runs its at-fork handlers is swallowed there ('Exception ignored'), and the run went on."""
    main = threading.current_thread() is threading.main_thread()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if main else None
    pool = None
    try:
        try:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_ignore_sigint)
            for f in [pool.submit(_ready) for _ in range(workers)]:  # each submit starts a worker while none is idle
                f.result()
        finally:
            if held is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a Ctrl-C held meanwhile is raised here
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    return pool


def pool_kind(workers: int, rows: int, *, releases_gil: bool = False) -> str:
    """The one pool policy: ``"inline"``, ``"threads"`` or ``"fork"`` for a job of ``rows`` rows on ``workers``.

    Worker processes are only ever forked, and only from a plain single-threaded process for work that holds the
    GIL (hashing): a forked child inherits the imports and never re-runs the caller's script. spawn and forkserver
    are never used: their workers re-import ``__main__`` from its file (re-running an unguarded Keras script, which
    then breaks the pool) or fail where it has none (``python - < script.py``, notebooks), and each pays the
    imports again. Everywhere else threads do the work: where fork is unsafe (other threads running, as in a
    notebook kernel or once TensorFlow, faiss or XNNPACK started theirs: a forked copy of a half-held lock
    deadlocks), where TensorFlow, PyTorch or JAX is imported (a worker must never carry it), in a daemonic process
    (it may not have children), without fork (Windows), and for work that releases the GIL, where threads keep
    pace with processes and add no memory (forked workers' resident pages count the parent's again).
    One stage holds the GIL late in a run, when forking is unsafe or costly: the pixel confirmation of hash matches
    runs on fresh interpreters of :mod:`splitaudit.features.workers` (``python -m``: no ``__main__`` re-imported,
    plain arrays over pipes), not on this policy's pools.
    """
    if workers <= 1 or rows < _MIN_ROWS_FOR_POOL:
        return "inline"
    if releases_gil or not _fork_is_safe():
        return "threads"
    return "fork"


def _fork_is_safe() -> bool:
    if "fork" not in multiprocessing.get_all_start_methods() or multiprocessing.current_process().daemon:
        return False
    # Python threads only: native pools (OpenBLAS starts one at import, OpenMP, XNNPACK) are fork-aware or unused
    # by the workers, but a Python thread may hold a lock the child then waits on forever.
    return threading.active_count() == 1 and not any(m in sys.modules for m in ("tensorflow", "torch", "jax"))


def _pool(kind: str, workers: int) -> Executor:
    if kind == "threads":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="splitaudit-worker")
    return _workers_started(workers, multiprocessing.get_context("fork"))


def _drain_one(pending: list[tuple[Future[Columns], int]], outputs: list[Columns], progress: Callable[[int], None] | None) -> None:
    future, size = pending.pop(0)
    outputs.append(future.result())
    if progress:
        progress(size)
