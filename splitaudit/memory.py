"""Giving freed memory back to the operating system between stages."""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import threading
import weakref


def release_freed_memory() -> None:
    """Hand freed buffers back to the OS (glibc keeps them otherwise, one heap per thread that allocated): the
    network's, a neighbour stage's working arrays, a Ray stage's blocks (Arrow's heap too), so the later stages
    start from what is still in use. The pages read from :func:`spill_array`'s files leave this process too (they
    stay in the page cache)."""
    drop_spilled_pages()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
    arrow = sys.modules.get("pyarrow")  # (imported by the Ray engine alone: never imported here)
    if arrow is not None:
        try:
            # Arrow's own heap (mimalloc) keeps the pages of the Ray engine's blocks after they are freed
            arrow.default_memory_pool().release_unused()
        except AttributeError:  # a pyarrow before 13 has no such call
            pass


#: glibc's ``M_ARENA_MAX`` (mallopt's parameter number) and the arenas a driver holding Ray's threads may use.
M_ARENA_MAX = -8
DRIVER_ARENAS = 2


def limit_arenas(arenas: int = DRIVER_ARENAS) -> bool:
    """Let this process's threads share at most ``arenas`` malloc heaps (glibc; elsewhere nothing, False). Ray's
    client runs dozens of threads in the driver; glibc gives threads their own heaps (up to 8 per core), and the
    copy stage's freed working arrays stayed in them: at 100k images the driver's peak RSS was 904 MB on Ray against
    ~410 MB locally, 508 MB with two heaps (``MALLOC_ARENA_MAX=2``; docs/scale.md). Heaps made before the call stay."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):  # not glibc (musl)
        return False


#: Arrays larger than this go to a temporary file when a caller allows it (:class:`SpilledRows`).
SPILL_BYTES = 32 * 2**20


#: Rows of a file at most this many bytes apart are read by one call, the bytes between them into a scratch buffer:
#: a call costs ~7-10 us (the system call and this module's loop), copying 32 kB from the page cache ~3 us.
MERGE_GAP_BYTES = 32 * 1024
#: Buffers of one ``preadv`` call at most (Linux's ``IOV_MAX`` is 1024).
MAX_BUFFERS = 1024


def read_plan(unique: "np.ndarray", row_bytes: int) -> tuple[list[int], list[int], list[tuple[int, int]]]:  # type: ignore[name-defined]
    """How :func:`read_rows` reads the sorted distinct row numbers ``unique``: the runs of consecutive rows (their
    first and end positions in ``unique``) and the groups of runs read by one call each (first and end run). Runs
    are joined while the rows between two of them take at most :data:`MERGE_GAP_BYTES` and the call's buffers (a run
    and a gap each) stay within :data:`MAX_BUFFERS`."""
    import numpy as np

    if not len(unique):
        return [], [], []
    cuts = np.flatnonzero(np.diff(unique) != 1) + 1
    starts, ends = [0, *cuts.tolist()], [*cuts.tolist(), len(unique)]
    gap_rows = (np.diff(unique)[cuts - 1] - 1).tolist()
    max_gap = MERGE_GAP_BYTES // max(int(row_bytes), 1)
    groups: list[tuple[int, int]] = []
    first, buffers = 0, 1
    for i, gap in enumerate(gap_rows):  # the rows between run i and run i + 1
        if gap <= max_gap and buffers + 2 <= MAX_BUFFERS:
            buffers += 2
        else:
            groups.append((first, i + 1))
            first, buffers = i + 1, 1
    groups.append((first, len(starts)))
    return starts, ends, groups


def read_rows(path: str, shape: tuple[int, ...], dtype: object, rows) -> "np.ndarray":  # type: ignore[name-defined,no-untyped-def]
    """Rows ``rows`` (row numbers, any order, repeats allowed) of the C-ordered ``shape`` array of ``dtype`` in the file
    at ``path`` (a :class:`SpilledRows` file: another process, a worker, reads the rows it needs itself)."""
    import numpy as np

    dtype = np.dtype(dtype)  # type: ignore[call-overload]
    rows = np.asarray(rows, np.int64)
    # Plain reads of the distinct rows into the answer's own memory, not through a mapping: the page cache holds
    # large folios (ext4, Linux 6.16+), and a fault maps a whole folio, so 400 rows scattered over a 100 MB file
    # mapped all of it into this process while they were read (+100 MB of resident size for 400 kB of rows). One
    # call a group of nearby rows (read_plan), the file's bytes between them into a scratch buffer: a search's
    # thousands of scattered rows took a call a row.
    out = np.empty((len(rows), *shape[1:]), dtype)
    if not len(rows):
        return out
    unique, inverse = np.unique(rows, return_inverse=True)
    buf = out if len(unique) == len(rows) and (len(rows) < 2 or bool((np.diff(rows) > 0).all())) else \
        np.empty((len(unique), *shape[1:]), dtype)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    view = memoryview(buf.reshape(-1).view(np.uint8))
    starts, ends, groups = read_plan(unique, row_bytes)
    first_row = unique[starts].tolist()
    scratch = memoryview(bytearray(min(MERGE_GAP_BYTES, row_bytes * (int(unique[-1]) - int(unique[0]) + 1))))
    fd = os.open(path, os.O_RDONLY)
    try:
        for g0, g1 in groups:
            # the group's runs into their places in buf, the rows between them into the scratch buffer
            parts: list[memoryview] = []
            for r in range(g0, g1):
                if r > g0:
                    gap = first_row[r] - first_row[r - 1] - (ends[r - 1] - starts[r - 1])
                    parts.append(scratch[: gap * row_bytes])
                parts.append(view[starts[r] * row_bytes : ends[r] * row_bytes])
            at = first_row[g0] * row_bytes
            left = sum(len(p) for p in parts)
            while left:
                got = os.preadv(fd, parts, at)
                if got <= 0:
                    raise OSError(f"short read of {path}")
                at, left = at + got, left - got
                while left and got:  # a short read (rare for a regular file): on from where it stopped
                    if got >= len(parts[0]):
                        got -= len(parts.pop(0))
                    else:
                        parts[0], got = parts[0][got:], 0
    finally:
        os.close(fd)
    if buf is not out:
        out[...] = buf[inverse.reshape(-1)]
    return out


#: Every :class:`SpilledRows` whose file exists. A thread that is not waited for (the copy stage's helper, a daemon:
#: an interrupted run does not wait for it) may still hold one when the interpreter exits, and an object never
#: collected never removes its file: the files left are removed at exit, and none is made after that (the thread
#: runs on while the exit handlers run).
_LIVE_FILES: weakref.WeakSet = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_EXITING = False


@atexit.register
def _remove_spilled_files() -> None:
    global _EXITING
    with _LIVE_LOCK:
        _EXITING = True
        left = list(_LIVE_FILES)
    for rows in left:
        rows.close()


class SpilledRows:
    """The rows of a large array in a temporary file, read back by index (``x[rows]``, ``x[a:b]``, ``len``,
    ``shape``): a read copies the rows out of the file with plain reads, so the rows live in the page cache, not in
    this process's resident memory (a mapping would count the pages it touched, and with large folios in the page
    cache, every folio a row lies in). Filled in parts with :meth:`write` or :meth:`write_rows`; the file is removed
    by :meth:`close` (or when the object is collected)."""

    def __init__(self, shape: tuple[int, ...], dtype: object, folder: str | None = None) -> None:
        import tempfile

        import numpy as np

        self.shape, self.dtype = tuple(shape), np.dtype(dtype)  # type: ignore[call-overload]
        with _LIVE_LOCK:
            if _EXITING:  # callers that can go on without the file take an OSError so (candidates._view_array)
                raise OSError("the interpreter is exiting: no new temporary rows file")
            fd, self.path = tempfile.mkstemp(prefix="splitaudit-rows-", suffix=".bin", dir=folder)
            _LIVE_FILES.add(self)
        with open(fd, "wb") as fh:
            fh.truncate(int(np.prod(self.shape)) * self.dtype.itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    def _map(self, mode: str):  # type: ignore[no-untyped-def]
        import numpy as np

        return np.memmap(self.path, self.dtype, mode, shape=self.shape)

    def write(self, start: int, rows) -> None:  # type: ignore[no-untyped-def]
        """Rows ``start ...`` of the array (plain file writes: no page of it enters this process's memory)."""
        import numpy as np

        rows = np.ascontiguousarray(rows, self.dtype)
        row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        with open(self.path, "r+b") as fh:
            fh.seek(start * row_bytes)
            fh.write(rows.tobytes())

    def write_rows(self, index, rows) -> None:  # type: ignore[no-untyped-def]
        """Rows ``rows[j]`` at the row numbers ``index[j]`` (distinct, any order): one plain file write per run of
        consecutive row numbers, as :meth:`write`."""
        import numpy as np

        index = np.asarray(index, np.int64)
        if not len(index):
            return
        rows = np.ascontiguousarray(rows, self.dtype).reshape(len(index), *self.shape[1:])
        order = np.argsort(index, kind="stable")
        index, rows = index[order], rows[order]
        cuts = np.flatnonzero(np.diff(index) != 1) + 1
        row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        with open(self.path, "r+b") as fh:
            for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(index)]):
                fh.seek(int(index[lo]) * row_bytes)
                fh.write(rows[lo:hi].tobytes())

    def reshape(self, *shape):  # type: ignore[no-untyped-def]
        """The same rows seen with another shape of as many rows and values (``(n, s*s)`` rows as ``(n, s, s)``): a
        new object that takes the file over (this one no longer removes it)."""
        import numpy as np

        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else tuple(shape)
        if shape[0] != self.shape[0] or int(np.prod(shape)) != int(np.prod(self.shape)):
            raise ValueError(f"cannot see rows of shape {self.shape} as {shape}")
        out = object.__new__(SpilledRows)
        out.shape, out.dtype, out.path = shape, self.dtype, self.path
        with _LIVE_LOCK:  # the file's owner, removed at exit, is the new object
            _LIVE_FILES.add(out)
            _LIVE_FILES.discard(self)
        self.path = ""
        return out

    def _rows(self, index):  # type: ignore[no-untyped-def]
        """The row numbers ``index`` selects along the first axis (an int array), or ``None`` where it is no plain
        row selection (a tuple, a float array: left to NumPy's indexing of a mapping)."""
        import numpy as np

        n = self.shape[0]
        if isinstance(index, slice):
            return np.arange(*index.indices(n), dtype=np.int64)
        if isinstance(index, tuple):
            return None
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (n,):
                return None
            return np.flatnonzero(index)
        if index.ndim != 1 or (len(index) and index.dtype.kind not in "iu"):
            return None
        index = index.astype(np.int64)
        if len(index) and (index.min() < -n or index.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return np.where(index < 0, index + n, index)

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        import numpy as np

        if isinstance(index, (int, np.integer)):  # one row: a row selection of one
            if not -self.shape[0] <= int(index) < self.shape[0]:
                raise IndexError(f"row {index} out of range for {self.shape[0]} rows")
            return self[np.array([int(index)])][0]
        rows = self._rows(index)
        if rows is None:  # an index that is no plain row selection: through a mapping, as NumPy reads it
            m = self._map("r")
            try:
                return np.array(m[index])
            finally:
                m._mmap.close()  # type: ignore[attr-defined]
                del m
        return read_rows(self.path, self.shape, self.dtype, rows)

    def close(self) -> None:
        if getattr(self, "path", None):
            try:
                os.remove(self.path)
            except OSError:
                pass
            self.path = ""
        if _LIVE_FILES is not None:  # None when collected while the interpreter tears this module down
            _LIVE_FILES.discard(self)

    __del__ = close


def spill_rows(x, block_bytes: int = 8 * 2**20):  # type: ignore[no-untyped-def]
    """``x`` itself up to :data:`SPILL_BYTES`; above it, its rows copied block by block into a :class:`SpilledRows`
    (read back by index: ``y[rows]``, ``y[a:b]``, ``len``), so that ``x`` can be dropped and its pages leave the
    process once no one else holds it."""
    import numpy as np

    if isinstance(x, SpilledRows):  # already in a file (made there: :func:`~.features.per_image.compute_per_image`)
        return x
    x = np.asarray(x)
    if x.nbytes <= SPILL_BYTES or not len(x):
        return x
    out = SpilledRows(x.shape, x.dtype)
    step = max(1, block_bytes // max(1, x[0].nbytes))
    for s in range(0, len(x), step):
        out.write(s, x[s : s + step])
    return out


#: The mappings made by :func:`spill_array` that are still in use (an mmap goes once no array refers to it).
_SPILLED: weakref.WeakSet = weakref.WeakSet()


def spill_array(x, block_bytes: int = 8 * 2**20):  # type: ignore[no-untyped-def]
    """``x`` itself up to :data:`SPILL_BYTES`; above it, a read-only array of the same values mapped from an unlinked
    temporary file (written block by block, never through the mapping). Unlike :class:`SpilledRows` it is a plain
    ndarray that every consumer reads as it is; the pages a read brings in count in this process's resident size
    only until :func:`drop_spilled_pages` (called by :func:`release_freed_memory`): the next read finds them in
    the page cache. For arrays read whole by some stages and held, unread, through others (the embeddings)."""
    import mmap
    import tempfile

    import numpy as np

    x = np.asarray(x)
    if x.nbytes <= SPILL_BYTES or not len(x):
        return x
    step = max(1, block_bytes // max(1, x[0].nbytes))
    try:
        with tempfile.TemporaryFile(prefix="splitaudit-array-") as fh:
            for s in range(0, len(x), step):
                fh.write(np.ascontiguousarray(x[s : s + step]).data)
            fh.flush()
            m = mmap.mmap(fh.fileno(), x.nbytes, access=mmap.ACCESS_READ)  # the mapping keeps the file's pages
    except OSError:  # no room (or no folder) for the file: the array stays in memory, the run goes on
        return x
    _SPILLED.add(m)
    return np.frombuffer(m, x.dtype).reshape(x.shape)


def drop_spilled_pages() -> None:
    """Unmap from this process the pages it has read of :func:`spill_array`'s arrays (``MADV_DONTNEED`` on a
    read-only file mapping: the data stays in the file and the page cache; a later read maps it again)."""
    import mmap

    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None:
        return
    for m in list(_SPILLED):
        try:
            m.madvise(advice)
        except (ValueError, OSError):  # closed meanwhile
            pass


#: The resident size that threads of one step keep under when they can (:class:`MemoryGate`): issue #16's 500 MiB
#: for a default check, less a margin for what a step's estimate leaves out.
BUDGET_BYTES = 448 * 2**20


def resident_bytes() -> int:
    """This process's resident size (0 where ``/proc`` is not there: no gate then)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class MemoryGate:
    """Lets a task start beside those already running only while the resident size plus ``cost`` bytes for each of
    them and for the new one stays within ``budget``; one task always runs. Threads running chunks of one step
    (each holding ``cost`` of working arrays) run side by side on a small process, one at a time on a large one;
    which thread runs a chunk, and when, never changes its answer."""

    def __init__(self, cost: int, budget: int | None = None) -> None:
        import threading

        self.cost, self.budget = int(cost), BUDGET_BYTES if budget is None else int(budget)
        self.running, self.most = 0, 0
        self._cond = threading.Condition()

    def _may_start(self) -> bool:
        return self.running == 0 or resident_bytes() + (self.running + 1) * self.cost <= self.budget

    def run(self, fn, *args):  # type: ignore[no-untyped-def]
        """``fn(*args)`` once the gate lets it start."""
        with self._cond:
            self._cond.wait_for(self._may_start)
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return fn(*args)
        finally:
            with self._cond:
                self.running -= 1
                self._cond.notify_all()
