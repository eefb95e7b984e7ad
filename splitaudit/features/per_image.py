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
    cols = {"path": np.empty(len(rows), dtype=object), "pixels": np.empty(len(rows), dtype=object)}
    for j, i in enumerate(rows):
        r = records[i]  # read once: a RecordTable makes the record when read
        cols["path"][j] = r.path
        if r.array_index >= 0:
            cols["pixels"][j] = arrays[r.split][r.array_index]
    return cols


#: Rows computed (and read from or written to the cache) together: the stage holds the one (n, width) matrix and
#: about this many bytes of a chunk's vectors besides (20k 64-px thumbnails are 78 MiB; whole, the job's outputs,
#: their concatenation and the cache's copies held four times that at once).
CHUNK_BYTES = 16 * 2**20
#: ... and at most this many rows: a row also costs its path, its digest and its cache look-up, whatever its vector's
#: width (the properties' 48 bytes a row made 350k-row chunks, ~70 MB of those at once at 1M images).
CHUNK_ROWS = 65536
#: The whole matrix is also kept as one cache blob (an unchanged dataset read in one query) up to this size; a
#: bigger one is read back per digest, a chunk at a time (a blob is written and read through whole copies).
BLOB_MAX = 16 * 2**20
#: Row numbers turned into Python ints at a time (for the cache key).
ROW_BLOCK = 65536


def compute_per_image(fn: BatchFn, *, table: str, version: str, width: int, dtype: str, records: Sequence[Any],
                      arrays: dict, rows: Sequence[int] | np.ndarray, digests: Sequence[bytes], cache: Any | None = None,
                      workers: int | None = None, progress: Progress | None = None, engine: Any | None = None,
                      spill: bool = False, whole: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """(matrix (n, width) of ``dtype``, ok mask (n,), how many rows were computed rather than read from the cache).

    ``fn(batch)`` returns ``{"vector": (m, width), "ok": (m,) bool}``; rows outside ``rows`` are zero and not ok.
    Vectors are cached in ``table`` under ``version`` (rows that failed are not cached: a fixed file is retried).
    The rows to compute run on ``engine`` (default: the local pool of ``workers`` processes), a chunk of about
    :data:`CHUNK_BYTES` at a time. ``spill``: a matrix of more than :data:`~splitaudit.memory.SPILL_BYTES` is
    written a chunk at a time into a :class:`~splitaudit.memory.SpilledRows` (a temporary file read back by rows)
    and returned so: the whole matrix is never in memory (the thumbnails: 1 kB an image, 300 MB at 300k images).
    ``whole=False``: never keep the whole matrix as one blob (a few rows asked for now and then, each time others:
    their vectors are kept per digest alone)."""
    from ..memory import SPILL_BYTES, SpilledRows
    from .engine import resolve_engine

    if progress:  # announce the stage before the cache look-ups and the workers' start-up
        progress(0)
    n = len(records)
    # Row numbers as one array, read a block at a time as Python ints: lists of a million ints (the rows, the rows to
    # compute) were ~50 MB of small objects at 1M images, and the heap kept most of it after they were freed.
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    h = hashlib.sha256(f"{table}:{version}:{width}:{dtype}:".encode())
    for s in range(0, len(rows), ROW_BLOCK):
        for i in rows[s : s + ROW_BLOCK].tolist():
            h.update(i.to_bytes(8, "little"))
            h.update(digests[i] or b"")
    key = h.hexdigest()
    blob = whole and n * width * np.dtype(dtype).itemsize <= BLOB_MAX
    if cache is not None and blob:
        stored = cache.get_arrays(key)
        if stored is not None and set(stored) == {"vector", "ok"} and stored["vector"].shape == (n, width) \
                and stored["vector"].dtype == np.dtype(dtype) and len(stored["ok"]) == n:
            if progress:
                progress(len(rows))
            return stored["vector"], stored["ok"].astype(bool), 0
    spilled = spill and not blob and n * width * np.dtype(dtype).itemsize > SPILL_BYTES
    matrix: Any = SpilledRows((n, width), dtype) if spilled else np.zeros((n, width), dtype)
    ok = np.zeros(n, bool)
    chunk = max(64, min(CHUNK_ROWS, CHUNK_BYTES // max(1, width * np.dtype(dtype).itemsize)))
    missing: list[np.ndarray] = []
    for s in range(0, len(rows), chunk):
        part = rows[s : s + chunk].tolist()
        known = cache.vectors_for(table, [digests[i] for i in part], version, dtype) if cache is not None else {}
        hits: list[int] = []
        todo_part: list[int] = []
        for i in part:
            v = known.get(digests[i]) if digests[i] else None
            if v is not None and len(v) == width:
                hits.append(i)
                if not spilled:
                    matrix[i] = v
                ok[i] = True
            else:
                todo_part.append(i)
        if spilled and hits:
            matrix.write_rows(hits, np.stack([known[digests[i]] for i in hits]))
        missing.append(np.asarray(todo_part, np.int64))
        del known, part, hits, todo_part
    todo = np.concatenate(missing) if missing else np.zeros(0, np.int64)
    del missing
    if progress and len(rows) > len(todo):
        progress(len(rows) - len(todo))
    run = resolve_engine(engine, workers=workers) if len(todo) else None
    for s in range(0, len(todo), chunk):
        part = todo[s : s + chunk].tolist()
        # Every per-image function decodes whole images (Pillow, NumPy reductions: no GIL held): threads locally.
        out = run.map(fn, batch_columns(records, arrays, part), progress=progress, releases_gil=True)  # type: ignore[union-attr]
        got, good = out["vector"].astype(dtype, copy=False), out["ok"].astype(bool)
        if spilled:
            matrix.write_rows(part, got)
        else:
            matrix[np.asarray(part)] = got
        ok[np.asarray(part)] = good
        if cache is not None:
            keep = [j for j, i in enumerate(part) if digests[i] and good[j]]
            cache.store_vectors(table, [digests[part[j]] for j in keep], got[keep], version, dtype)
        del out, got
    if cache is not None and blob:
        cache.put_arrays(key, {"vector": matrix, "ok": ok})
    return matrix, ok, len(todo)
