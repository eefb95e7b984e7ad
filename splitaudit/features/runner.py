"""Run a pure batch function over columns: in-process for small jobs, on a local process pool otherwise.

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
from concurrent.futures import Future, ProcessPoolExecutor

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
) -> Columns:
    """Apply ``fn`` to consecutive batches of ``columns`` and concatenate the outputs in input order.

    ``preload`` names modules ``fn`` imports lazily: they are imported once before the pool starts, so forked
    workers inherit them instead of each paying the import (scipy.fft: 0.17 s per worker). ``setup`` likewise runs
    once in this process before a pool is started (warming caches the workers inherit). ``on_batch(start, output)``
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
    if workers == 1 or n < _MIN_ROWS_FOR_POOL:
        for batch in batches:
            outputs.append(fn(batch))
            if progress:
                progress(len(next(iter(batch.values()))))
    else:
        context = _mp_context()
        for module in preload:
            importlib.import_module(module)
        if setup is not None:
            setup()
        if preload and context.get_start_method() == "forkserver":
            context.set_forkserver_preload(list(preload))
        with _workers_started(workers, context) as pool:
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
            except BaseException:  # Ctrl-C or an error: drop the queued batches, let the workers end, then raise
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


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


def _mp_context() -> multiprocessing.context.BaseContext:
    """fork when it is safe, forkserver when the parent runs threads.

    fork copies a process with its threads half-alive (TensorFlow's or faiss' pools can deadlock in the child), so
    a threaded parent gets forkserver. But forkserver and spawn re-import the caller's ``__main__`` in every worker,
    which fails for code run from stdin or a notebook and re-runs unguarded scripts: fork, where safe, avoids both.
    """
    threaded = threading.active_count() > 1 or any(m in sys.modules for m in ("tensorflow", "torch", "jax"))
    if threaded or "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    return multiprocessing.get_context("fork")


def _drain_one(pending: list[tuple[Future[Columns], int]], outputs: list[Columns], progress: Callable[[int], None] | None) -> None:
    future, size = pending.pop(0)
    outputs.append(future.result())
    if progress:
        progress(size)
