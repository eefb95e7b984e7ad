"""The Ray engine: a stage's batch function as Ray Data ``map_batches`` over the rows the driver still needs.

What travels: the driver builds Arrow blocks of a whole number of batches (a row number, the file path, the known
content digest; in-memory arrays are put in the object store once and rows carry an index into them), so each
worker batch holds the same rows as the local pool's batch and the function sees the same columns. Results come
back as Arrow/NumPy columns through the object store (never pickled to disk) and are written into preallocated
columns by row number while the run streams, so the driver holds only its output plus a few blocks in flight.

What is required where: the driver needs the dataset's listing (a folder it can walk, or a CSV manifest) and its
cache; the workers need the image files at the same paths (a shared or replicated file system: a manifest path the
driver cannot stat is still read by the workers) and a Python with splitaudit's dependencies. splitaudit's own code
is shipped to a cluster it joins with the job (``runtime_env`` ``py_modules``), so driver and workers always run the
same version of the batch functions; a local runtime's workers import the driver's own copy (see :func:`connect`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..memory import release_freed_memory
from .engine import objects, require_ray
from .runner import BatchFn, Columns

ROW = "_row"
PIXEL_INDEX = "_pix"
#: Retries of a batch whose worker died (node lost, OOM-killed): the batch functions are pure, so a retry is exact;
#: bounded, so an image that crashes its decoder fails the run instead of looping.
MAX_RETRIES = 3

#: Seconds a job pool left early waits for its cancelled tasks to end (see :class:`RayPool`).
CANCEL_WAIT_S = 5.0
#: Rows per Ray Data pipeline: the driver builds (and the object store holds) only this many rows' input blocks at a
#: time, ~100 bytes a row, whatever the dataset's size.
WINDOW = 1_000_000
#: Batches per Arrow block (one Ray task or actor call each): blocks start at multiples of the batch size, so the
#: batches are still the local ones. An actor queues its next calls, but a task slot stays idle between one task's
#: end and the next one's start: ~200 ms per task on the 2-core machine with Ray Data's per-operator reservation,
#: 33-42 ms without it (see :func:`connect`; benchmarks/ray_timeline.py), a core idle 30% of the time with
#: 1,024-row tasks under the reservation. So tasks
#: get bigger blocks: about TASK_WAVES blocks per CPU of the cluster (a slower worker or a retry then costs at most
#: a share of the stage), between BATCHES_PER_BLOCK and MAX_BATCHES_PER_TASK batches each.
BATCHES_PER_BLOCK = 16
TASK_WAVES = 4
MAX_BATCHES_PER_TASK = 256
#: How long a local runtime keeps an idle worker process (see :func:`connect`).
IDLE_WORKER_MS = 60_000

_pixel_stores: dict[str, list[np.ndarray]] = {}  # per worker process: the in-memory images of the current job
_preparing: list[Any] = []  # the driver's refs to its workers' preparation tasks (never waited for)
_runtime: dict[str, bool] = {}  # "here": whether this process started the runtime it uses (on this machine)


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` or start a local Ray runtime (once per process; later calls reuse it)."""
    require_ray()
    import ray

    if ray.is_initialized():
        return
    import splitaudit

    from ..memory import limit_arenas

    limit_arenas()  # before Ray's threads start allocating in this driver

    package = os.path.dirname(os.path.abspath(splitaudit.__file__))
    # No address: RAY_ADDRESS if set, else a new local runtime (never silently joining a cluster found on disk).
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    # A runtime we start keeps idle workers for a minute (Ray's default: 1 s beyond one per CPU): while the embedding
    # actors hold the CPUs the idle task workers count beyond that limit, and the next stage's tasks then waited ~5 s
    # for new ones (benchmarks/scale.py engines, docs/scale.md). Its workers also run at the driver's priority, as the
    # local pool's do: Ray's default lowers theirs by 15 (nice 19 under a nice-5 driver), so on a machine shared with
    # other work they got a fraction of a core (a batch took 10x its CPU time in wall time; benchmarks/scale.py
    # hashstage). A cluster we join keeps its own settings.
    system = {"idle_worker_killing_time_threshold_ms": IDLE_WORKER_MS, "worker_niceness": 0} if target == "local" else None
    if target == "local":
        # The runtime's workers run on this machine with this Python and inherit its environment: the package's
        # folder first on their PYTHONPATH makes them import this very splitaudit, without a runtime environment.
        # A runtime environment (py_modules) made every worker a dedicated one, started only when the first batch
        # came (5-9 s under load before the first batch, against 1.5-1.9 s for the workers Ray starts with the
        # runtime; benchmarks/scale.py hashstage, docs/scale.md).
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([os.path.dirname(package), *([saved] if saved else [])])
        try:
            ray.init(address=target, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     _system_config=system)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    else:
        ray.init(address=target, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env={"py_modules": [package], "excludes": ["__pycache__"]})
    _runtime["here"] = target == "local"
    if target == "local":
        _start_data_actors()
        _prepare_workers(int(ray.cluster_resources().get("CPU", 1)))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # splitaudit reports progress itself
    # Ray Data reserves a share of the cluster for each operator of a pipeline; with ours (the input blocks, then
    # one map) on 2 CPUs the map's second task waited ~1 s for its first to end, in every run, and a slot idled
    # ~200 ms between tasks: both slots busy half the time, a 100k hash stage 6.2 s against 4.7 s without the
    # reservation (benchmarks/ray_timeline.py, docs/scale.md). Our one map may use the whole cluster.
    context.op_resource_reservation_enabled = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled" on every run


def prepare_worker() -> None:
    """Import the hash stage's modules and do its one-time set-up in this worker process (what the local pool's
    forked workers inherit from the driver)."""
    import importlib

    from .extract import warm_up
    from .hashing import WORKER_MODULES

    for name in WORKER_MODULES:
        importlib.import_module(name)
    warm_up()


def _start_data_actors() -> None:
    """Ask for Ray Data's own actors (its statistics, autoscaling coordinator and actor tracker: one each per
    cluster, made by a process's first execution) now, not waited for: their processes start with the runtime
    instead of beside the first stage's tasks. Internal functions of Ray Data: where a version lacks one, the first
    execution makes them as before."""
    import importlib

    for module, name in (("ray.data._internal.stats", "get_or_create_stats_actor"),
                         ("ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator",
                          "get_or_create_autoscaling_coordinator"),
                         ("ray.data._internal.execution.node_trackers.actor_location",
                          "get_or_create_actor_location_tracker")):
        try:
            getattr(importlib.import_module(module), name)()
        except Exception:  # noqa: BLE001 - an optimisation only: Ray Data makes them itself when it needs them
            pass


def _prepare_workers(cpus: int) -> None:
    """One :func:`prepare_worker` task per CPU of a runtime we started, not waited for: the idle workers Ray starts
    with it import splitaudit, NumPy, Pillow and SciPy while the driver goes on (building the first blocks, Ray
    Data's start), instead of when the first batches come (~3 s of a first run on the 2-core machine, 1.27-1.66x
    local; docs/scale.md)."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(prepare_worker)
    _preparing.extend(remote.remote() for _ in range(max(1, cpus)))


@dataclass(frozen=True)
class _OnWorker:
    """``fn`` on a Ray Data batch: rebuilds the columns ``fn`` expects, returns its output with the row numbers."""

    fn: BatchFn
    names: tuple[str, ...]
    pixels: Any = None  # an ObjectRef to the list of in-memory images, or None

    batch_size: int = 64

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One whole block: ``fn`` on each run of ``batch_size`` rows (the local pool's batches, as blocks start at
        multiples of it), the outputs concatenated as the local pool does. Slicing here rather than in Ray Data
        saves its per-batch conversions to and from Arrow (~25 ms per 1,024 rows, 5% of the hash stage's work)."""
        cols: dict[str, np.ndarray] = {}
        for name in self.names:
            if name == "pixels" and self.pixels is None:
                cols[name] = np.full(len(block[ROW]), None, dtype=object)
            elif name == "pixels":
                store = self._store()
                cols[name] = objects([store[int(i)] if i >= 0 else None for i in block[PIXEL_INDEX]])
            elif block[name].dtype == object or block[name].dtype.kind in "USV":
                cols[name] = objects(block[name].tolist())
            else:
                cols[name] = block[name]
        n = len(block[ROW])
        outs = [dict(self.fn({k: v[s : s + self.batch_size] for k, v in cols.items()}))
                for s in range(0, n, self.batch_size)]
        out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]} if outs else {}
        out[ROW] = block[ROW]
        return out

    def _store(self) -> list[np.ndarray]:
        import ray

        key = self.pixels.hex()
        if key not in _pixel_stores:
            _pixel_stores.clear()  # one job's images at a time
            _pixel_stores[key] = ray.get(self.pixels)
        return _pixel_stores[key]


class _Actor:
    """The actor form (Ray Data calls the class once per actor): ``fn`` keeps its loaded model between batches."""

    def __init__(self, call: _OnWorker) -> None:
        self.call = call

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.call(batch)


def batches_per_block(rows: int, batch_size: int, actors: bool, cpus: float) -> int:
    """Batches in each block of a run of ``rows`` rows (see :data:`TASK_WAVES`): BATCHES_PER_BLOCK for actors,
    for tasks about TASK_WAVES blocks per CPU."""
    if actors:
        return BATCHES_PER_BLOCK
    batches = -(-rows // batch_size)
    per_block = -(-batches // max(1, int(cpus) * TASK_WAVES))
    return min(MAX_BATCHES_PER_TASK, max(BATCHES_PER_BLOCK, per_block))


def _blocks(columns: Columns, batch_size: int, per_block: int = BATCHES_PER_BLOCK) -> tuple[list[Any], Any]:
    """Object-store refs of Arrow tables of ``per_block`` batches with the row numbers, and the ref of in-memory
    images. Each table is put as soon as it is made: the driver never holds a window's tables at once (~150 MB at
    1M rows, benchmarks/scale.py rss)."""
    import pyarrow as pa
    import ray

    n = len(next(iter(columns.values())))
    plain = {k: v for k, v in columns.items() if k != "pixels"}
    pixels_ref = None
    pixel_index = None
    if "pixels" in columns and any(p is not None for p in columns["pixels"]):
        have = [j for j, p in enumerate(columns["pixels"]) if p is not None]
        pixels_ref = ray.put([columns["pixels"][j] for j in have])
        pixel_index = np.full(n, -1, dtype=np.int64)
        pixel_index[have] = np.arange(len(have))
    # One Arrow type per object column for every block (a block of only None would be typed null, and read back as
    # NaN): text or bytes by its first value.
    types = {k: pa.string() if isinstance(next((x for x in v if x is not None), b""), str) else pa.binary()
             for k, v in plain.items() if v.dtype == object}
    tables = []
    rows_per_block = batch_size * per_block
    for start in range(0, n, rows_per_block):
        s = slice(start, min(n, start + rows_per_block))
        data: dict[str, Any] = {ROW: pa.array(np.arange(s.start, s.stop, dtype=np.int64))}
        for k, v in plain.items():
            data[k] = pa.array(v[s].tolist(), type=types[k]) if k in types else pa.array(v[s])
        if "pixels" in columns:
            data[PIXEL_INDEX] = pa.array(pixel_index[s] if pixel_index is not None else np.full(s.stop - s.start, -1, np.int64))
        tables.append(ray.put(pa.table(data)))
    return tables, pixels_ref


def ray_iter_batches(fn: BatchFn, columns: Columns, *, address: str | None = None, batch_size: int = 64,
                     actors: bool = False) -> Iterator[tuple[np.ndarray, Columns]]:
    """``fn`` over ``columns`` on Ray, as (row positions, output) per finished block, in no particular order.

    ``actors``: run ``fn`` in a pool of actors (a model loaded once per actor), one GPU each where the cluster has
    GPUs and ``fn.gpu`` is true, else one CPU each; otherwise as stateless tasks (one CPU each) that Ray retries when a worker dies. Rows
    go to the cluster in windows of :data:`WINDOW`, so the driver's input blocks stay bounded too.
    """
    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        return
    connect(address)
    import ray

    cpus = ray.cluster_resources().get("CPU", 1)
    for offset in range(0, n, WINDOW):
        part = {k: v[offset : offset + WINDOW] for k, v in columns.items()}
        size = len(next(iter(part.values())))
        tables, pixels_ref = _blocks(part, batch_size, batches_per_block(size, batch_size, actors, cpus))
        for batch in _mapped(tables, _OnWorker(fn, tuple(columns), pixels_ref, batch_size), actors):
            rows = np.asarray(batch.pop(ROW), dtype=np.int64) + offset
            yield rows, {k: _objects(v) if v.dtype.kind in "OUSV" else v for k, v in batch.items()}
        del tables, pixels_ref


def _objects(column: np.ndarray) -> np.ndarray:
    """An object column back from Arrow, its text values interned: Arrow gives every row its own ``"ok"``, where the
    local pool's unpickled batches share one (50 bytes a row per text column: ~150 MB more at 1M images)."""
    values = column.tolist()
    return objects([sys.intern(v) if type(v) is str else v for v in values])


def ray_map_batches(fn: BatchFn, columns: Columns, *, address: str | None = None, batch_size: int = 64,
                    progress: Callable[[int], None] | None = None,
                    on_batch: Callable[[int, Columns], None] | None = None) -> Columns:
    """:func:`splitaudit.features.runner.map_batches` on Ray: same function, same batches, same output columns,
    written into preallocated columns by row number while the run streams. ``on_batch(start, output)`` gets each
    run of consecutive rows as it arrives."""
    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        return {}
    out: Columns = {}
    filled = np.zeros(n, dtype=bool)
    for rows, batch in ray_iter_batches(fn, columns, address=address, batch_size=batch_size):
        for k, v in batch.items():
            if k not in out:
                out[k] = np.empty((n, *v.shape[1:]), dtype=v.dtype)
            out[k][rows] = v
        filled[rows] = True
        if on_batch is not None:
            cuts = np.flatnonzero(np.diff(rows) != 1) + 1  # a block's rows are consecutive; split if ever not
            for part in np.split(np.arange(len(rows)), cuts):
                on_batch(int(rows[part[0]]), {k: v[part] for k, v in batch.items()})
        if progress:
            progress(len(rows))
    if not filled.all():  # pragma: no cover - Ray raises first when a batch fails for good
        raise RuntimeError(f"the Ray run returned {int(filled.sum())} of {n} rows")
    # the input tables' Python lists and the blocks read back are freed by now, in glibc's heaps and Arrow's: at
    # 200k images the hash stage left 53 MiB of such pages in the driver (45 glibc's, 8 Arrow's)
    release_freed_memory()
    return out


def _mapped(tables: list[Any], call: _OnWorker, actors: bool) -> Iterator[dict[str, np.ndarray]]:
    """The output batches of ``call`` over ``tables`` (object-store refs), one call per whole block
    (``batch_size=None``; ``call`` cuts it into the local batches), as they finish (streaming, in no particular
    order)."""
    import ray
    import ray.data

    ds = ray.data.from_arrow_refs(tables)
    with warnings.catch_warnings():
        # Ray Data's own default is to retry forever; a bounded count needs the (deprecated) remote-args route.
        warnings.simplefilter("ignore", DeprecationWarning)
        if actors:
            resources = ray.cluster_resources()
            # One GPU per actor only for a function that runs on GPUs (``fn.gpu``): the LiteRT backbone runs on CPUs.
            gpus = int(resources.get("GPU", 0)) if getattr(call.fn, "gpu", False) else 0
            size = gpus or max(1, int(resources.get("CPU", 1)))
            mapped = ds.map_batches(_Actor, fn_constructor_args=(call,), batch_size=None, batch_format="numpy",
                                    # Every actor from the start: growing the pool from one actor as the queue
                                    # builds left a core idle for much of a small run (benchmarks/scale.py engines).
                                    compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size, initial_size=size),
                                    max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES,
                                    **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
        else:
            mapped = ds.map_batches(call, batch_size=None, batch_format="numpy", num_cpus=1,
                                    max_retries=MAX_RETRIES)
    return mapped.iter_batches(batch_format="numpy", batch_size=None)


def run_job(name: str, args: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One job of :data:`~splitaudit.features.workers.JOBS` (an allow-list, as in a local worker process)."""
    from .workers import JOBS, _job

    if name not in JOBS:
        raise ValueError(f"no job {name!r} (jobs: {sorted(JOBS)})")
    return _job(name)(args, arrays)


class RayPool:
    """The :class:`~splitaudit.features.workers.WorkerPool` interface on Ray: the copy stage's and the pixel
    confirmation's array jobs (screen, registration, confirmation: GIL-bound NumPy work, which a local run splits
    over worker processes) as Ray tasks, one CPU each, spread over the cluster instead of held in the driver's one
    process. Jobs are pure functions of their arguments, so a task whose worker died is retried exactly.

    ``files_shared``: whether the tasks can read files the driver writes (true only for a runtime this process
    started on this machine); jobs are sent their arrays otherwise."""

    def __init__(self, address: str | None = None) -> None:
        connect(address)
        import ray

        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.files_shared = bool(_runtime.get("here"))
        #: jobs answered so far (as WorkerPool counts them)
        self.answered = {"tasks": 0}

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to stop: the tasks' workers belong to the cluster."""

    def map(self, job: str, tasks: Iterable[tuple[dict[str, Any], dict[str, np.ndarray]]]) -> Iterator[dict[str, np.ndarray]]:
        """``job`` on each ``(args, arrays)`` of ``tasks`` as Ray tasks; the answers in task order. At most twice
        the cluster's CPUs of tasks are submitted ahead of the answer wanted next (the driver's and the object
        store's memory stay bounded); a job that raises is a :class:`~splitaudit.features.workers.WorkerError`.
        Leaving the generator early cancels the tasks still queued."""
        import ray

        from .workers import JOBS, WorkerError

        if job not in JOBS:
            raise WorkerError(f"no job {job!r} (jobs: {sorted(JOBS)})")
        remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(run_job)
        pending: deque[Any] = deque()

        def answer() -> dict[str, np.ndarray]:
            ref = pending.popleft()
            try:
                got = ray.get(ref)
            except ray.exceptions.RayError as e:  # the job raised, or its worker died more than MAX_RETRIES times
                cause = getattr(e, "cause", None) or e
                raise WorkerError(f"a {job!r} job failed on the cluster: {type(cause).__name__}: {cause}") from e
            self.answered["tasks"] += 1
            return got

        try:
            for args, arrays in tasks:
                pending.append(remote.remote(job, args, arrays))
                if len(pending) >= 2 * self.slots:
                    yield answer()
            while pending:
                yield answer()
        finally:
            for ref in pending:  # abandoned (an error, or the caller stopped reading): nothing more to compute
                ray.cancel(ref)
            if pending:
                # their outcomes read (and dropped): Ray prints every failed task nobody read as an "Unhandled
                # error" with its traceback, after the one-line error the caller is about to show
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
                for ref in done:
                    try:
                        ray.get(ref)
                    except Exception:  # noqa: BLE001 - the first failure is the one raised
                        pass


def ray_starmap(fn: Callable[..., Any], shared: tuple, tasks: Sequence[tuple], *, address: str | None = None) -> list[Any]:
    """``fn(*shared, *task)`` for each task as Ray tasks (one CPU each, retried like batches); ``shared`` is put in the
    object store once and read zero-copy by every task on a node."""
    connect(address)
    import ray

    refs = [ray.put(x) for x in shared]
    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(fn)
    return ray.get([remote.remote(*refs, *task) for task in tasks])
