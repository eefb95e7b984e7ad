"""Per-image vectors computed by a pure batch function, cached per content digest: image properties, thumbnails.

The cache answers an unchanged dataset with one blob (keyed by every row's digest), and a changed one per content
digest, so only new or edited files are decoded. The batch function maps a dict of ``path``/``pixels`` columns to
one (n, width) matrix; a row it could not decode is all NaN (floats) or flagged in ``ok`` (any dtype).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Progress = Callable[[int], None]
BatchFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def batch_columns(records: Sequence[Any], arrays: dict, rows: Sequence[int]) -> dict[str, np.ndarray]:
    """The ``path``/``pixels`` input columns of a batch function for these records."""
    cols = {"path": np.array([records[i].path for i in rows], dtype=object), "pixels": np.empty(len(rows), dtype=object)}
    for j, i in enumerate(rows):
        if records[i].array_index >= 0:
            cols["pixels"][j] = arrays[records[i].split][records[i].array_index]
    return cols


def compute_per_image(fn: BatchFn, *, table: str, version: str, width: int, dtype: str, records: Sequence[Any],
                      arrays: dict, rows: Sequence[int], digests: Sequence[bytes], cache: Any | None = None,
                      workers: int | None = None, progress: Progress | None = None, engine: Any | None = None
                      ) -> tuple[np.ndarray, np.ndarray, int]:
    """(matrix (n, width) of ``dtype``, ok mask (n,), how many rows were computed rather than read from the cache).

    ``fn(batch)`` returns ``{"vector": (m, width), "ok": (m,) bool}``; rows outside ``rows`` are zero and not ok.
    Vectors are cached in ``table`` under ``version`` (rows that failed are not cached: a fixed file is retried).
    The rows to compute run on ``engine`` (default: the local pool of ``workers`` processes)."""
    from .engine import resolve_engine

    if progress:  # announce the stage before the cache look-ups and the workers' start-up
        progress(0)
    n = len(records)
    rows = [int(i) for i in rows]
    h = hashlib.sha256(f"{table}:{version}:{width}:{dtype}:".encode())
    for i in rows:
        h.update(i.to_bytes(8, "little"))
        h.update(digests[i] or b"")
    key = h.hexdigest()
    if cache is not None:
        stored = cache.get_arrays(key)
        if stored is not None and set(stored) == {"vector", "ok"} and stored["vector"].shape == (n, width) \
                and stored["vector"].dtype == np.dtype(dtype) and len(stored["ok"]) == n:
            if progress:
                progress(len(rows))
            return stored["vector"], stored["ok"].astype(bool), 0
    matrix = np.zeros((n, width), dtype)
    ok = np.zeros(n, bool)
    known = cache.vectors_for(table, [digests[i] for i in rows], version, dtype) if cache is not None else {}
    todo: list[int] = []
    for i in rows:
        v = known.get(digests[i]) if digests[i] else None
        if v is not None and len(v) == width:
            matrix[i], ok[i] = v, True
        else:
            todo.append(i)
    if progress and len(rows) > len(todo):
        progress(len(rows) - len(todo))
    if todo:
        # Every per-image function decodes whole images (Pillow, NumPy reductions: no GIL held): threads locally.
        out = resolve_engine(engine, workers=workers).map(fn, batch_columns(records, arrays, todo), progress=progress,
                                                          releases_gil=True)
        got, good = out["vector"].astype(dtype, copy=False), out["ok"].astype(bool)
        matrix[np.asarray(todo)], ok[np.asarray(todo)] = got, good
        if cache is not None:
            keep = [j for j, i in enumerate(todo) if digests[i] and good[j]]
            cache.store_vectors(table, [digests[todo[j]] for j in keep], got[keep], version, dtype)
    if cache is not None:
        cache.put_arrays(key, {"vector": matrix, "ok": ok})
    return matrix, ok, len(todo)
