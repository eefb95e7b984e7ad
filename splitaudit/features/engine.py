"""Where the per-image batch functions run: this machine's process pool (``"local"``) or a Ray cluster (``"ray"``).

Every stage hands the engine a pure batch function (a dict of NumPy columns in, a dict of columns out) and the
columns of the rows it needs, and gets the output columns back in input order. The local engine is
:func:`splitaudit.features.runner.map_batches`; the Ray engine (:mod:`splitaudit.features.ray_engine`) runs the very
same function as Ray Data ``map_batches``, so both give the same columns and so the same report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..errors import SplitauditError, invalid_parameter
from .runner import BatchFn, Columns, map_batches

T = TypeVar("T")
Rows = slice | np.ndarray  # a batch's positions in the input columns
ENGINES = ("local", "ray")
RAY_ADDRESS = "None or a Ray address (host:port, 'auto', ray://host:port)"
RAY_MISSING = ("engine 'ray' needs Ray, which is not installed: pip install 'splitaudit[ray]' "
               "(or use the default engine 'local')")


@dataclass(frozen=True)
class Engine:
    """The run's engine: ``name`` is ``"local"`` or ``"ray"``; ``address`` the Ray cluster to join (``None``: start
    a local Ray runtime, or reuse the one this process already joined); ``workers`` the local pool's size."""

    name: str = "local"
    address: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise invalid_parameter("engine", ENGINES, self.name)
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise invalid_parameter("ray_address", RAY_ADDRESS, self.address)
        if self.name == "ray":
            require_ray()

    @classmethod
    def of(cls, options: Any) -> Engine:
        """The engine an :class:`splitaudit.options.Options` asks for."""
        return cls(options.engine, options.ray_address, options.workers)

    @property
    def distributed(self) -> bool:
        return self.name == "ray"

    def map(self, fn: BatchFn, columns: Columns, *, batch_size: int = 64, progress: Callable[[int], None] | None = None,
            preload: Sequence[str] = (), setup: Callable[[], None] | None = None,
            on_batch: Callable[[int, Columns], None] | None = None, releases_gil: bool = False) -> Columns:
        """``fn`` over ``columns`` in batches of ``batch_size`` rows; the output columns in input order.
        ``on_batch(start, output)`` gets each finished run of consecutive rows (in any order on Ray);
        ``releases_gil``: ``fn`` mostly decodes (C code without the GIL), so the local pool may use threads."""
        if self.name == "local":
            return map_batches(fn, columns, batch_size=batch_size, workers=self.workers, progress=progress,
                               preload=preload, setup=setup, on_batch=on_batch, releases_gil=releases_gil)
        from .ray_engine import ray_map_batches

        return ray_map_batches(fn, columns, address=self.address, batch_size=batch_size, progress=progress,
                               on_batch=on_batch)

    def iter_model(self, fn: BatchFn, columns: Columns, *, batch_size: int,
                   local: Callable[[Columns], Iterator[tuple[Rows, Columns]]]) -> Iterator[tuple[Rows, Columns]]:
        """A stateful batch function (a model loaded on first call) over ``columns``, batch by batch, as (rows,
        output): ``local(columns)`` runs it here; on Ray it runs in a pool of actors (one GPU each when the cluster
        has GPUs), so the model is loaded once per actor, and batches come back as they finish."""
        if self.name == "local":
            return local(columns)
        from .ray_engine import ray_iter_batches

        return ray_iter_batches(fn, columns, address=self.address, batch_size=batch_size, actors=True)

    def job_pool(self):  # type: ignore[no-untyped-def]
        """Where a stage's GIL-bound array jobs run (:data:`~splitaudit.features.workers.JOBS`), or ``None`` where
        nothing can help (one local worker): locally this process and ``workers - 1`` worker processes
        (:func:`~splitaudit.features.workers.local_pool`), on Ray the cluster's tasks
        (:class:`~splitaudit.features.ray_engine.RayPool`). Close it (``with``) when the stage ends."""
        if self.name == "local":
            from .workers import local_pool

            return local_pool(self.workers)
        from .ray_engine import RayPool

        return RayPool(self.address)

    def starmap(self, fn: Callable[..., T], shared: tuple, tasks: Sequence[tuple]) -> list[T]:
        """``[fn(*shared, *task) for task in tasks]``: here in order, or on Ray one task each with the ``shared``
        arrays put in the object store once (the search's shards)."""
        if self.name == "local":
            return [fn(*shared, *task) for task in tasks]
        from .ray_engine import ray_starmap

        return ray_starmap(fn, shared, tasks, address=self.address)


def resolve_engine(engine: Engine | None = None, workers: int | None = None) -> Engine:
    """``engine``, or the local pool of ``workers`` processes (stage functions called without an engine)."""
    return engine if engine is not None else Engine("local", None, workers)


def require_ray() -> None:
    """Raise the one clear error (CLI exit 2) when Ray Data is not importable."""
    try:
        import ray.data  # noqa: F401  (importing is the test)
    except ImportError as exc:
        raise SplitauditError(RAY_MISSING) from exc


def objects(values: Sequence[object] | np.ndarray) -> np.ndarray:
    """A 1-D object column holding exactly ``values`` (NumPy would turn a list of equal-shape arrays into a block)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out
