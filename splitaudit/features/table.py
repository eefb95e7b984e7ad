"""Compute the features of a whole dataset once: cache look-ups, then the batch function on the misses."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..scan.records import Dataset, ImageRecord
from . import decode
from .cache import FEATURE_FIELDS, FeatureCache
from .extract import HASH_COLUMNS, HashOptions, array_digest, content_digest, extract_batch, pixel_digest_batch
from .runner import map_batches

Progress = Callable[[int], None]


@dataclass
class FeatureTable:
    """Columns aligned with ``Dataset.records`` (row i describes record i).

    ``pixel_digest`` starts empty for draft-decoded JPEGs and is filled lazily by :meth:`ensure_pixel_digests`.
    """

    columns: dict[str, np.ndarray]
    hits: int = 0
    misses: int = 0
    variant: str = ""
    _records: Sequence[ImageRecord] = field(default=(), repr=False)
    _arrays: dict = field(default_factory=dict, repr=False)
    _options: HashOptions = field(default_factory=HashOptions, repr=False)
    _cache: FeatureCache | None = field(default=None, repr=False)
    _workers: int | None = field(default=None, repr=False)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.columns["status"])

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of rows that decoded (and so have hashes)."""
        return self.columns["status"] == decode.OK

    def ensure_pixel_digests(self, indices: Sequence[int]) -> np.ndarray:
        """Fill in full-resolution pixel digests for these rows (only where missing) and return the column."""
        pd = self.columns["pixel_digest"]
        todo = [int(i) for i in indices if self.columns["status"][i] == decode.OK and not pd[i]]
        if todo:
            batch = _batch_columns([self._records[i] for i in todo], self._arrays)
            out = map_batches(_PixelDigests(self._options), batch, workers=self._workers)
            for i, value in zip(todo, out["pixel_digest"]):
                pd[i] = value
            if self._cache is not None:
                self._cache.store_pixel_digests(((self.columns["digest"][i], pd[i]) for i in todo), self.variant)
        return pd


@dataclass(frozen=True)
class _PixelDigests:
    options: HashOptions

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return pixel_digest_batch(batch, self.options)


@dataclass(frozen=True)
class _Extract:
    """A picklable callable for the pool (Ray Data accepts the same callable class)."""

    options: HashOptions

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return extract_batch(batch, self.options)


def _batch_columns(records: Sequence[ImageRecord], arrays: dict, digests: Sequence[bytes | None] | None = None) -> dict[str, np.ndarray]:
    n = len(records)
    cols = {
        "path": np.array([r.path for r in records], dtype=object),
        "pixels": np.empty(n, dtype=object),
        "digest": np.array(list(digests) if digests is not None else [None] * n, dtype=object),
    }
    for i, r in enumerate(records):
        if r.array_index >= 0:
            cols["pixels"][i] = arrays[r.split][r.array_index]
    return cols


def _known_digests(dataset: Dataset, cache: FeatureCache) -> tuple[list[bytes | None], list[int]]:
    """Digests from the stat fast path; returns them and the indices of file records that missed it."""
    records = dataset.records
    known: list[bytes | None] = [None] * len(records)
    stat_rows: dict[str, tuple[int, int, int, bytes]] = {}
    for spec in dataset.splits:
        if spec.kind == "folder":
            stat_rows.update(cache.digests_under(spec.root))
    manifest_paths = [r.path for r in records if r.path and r.split not in {s.name for s in dataset.splits if s.kind == "folder"}]
    if manifest_paths:
        stat_rows.update(cache.digests_for(manifest_paths))
    missed: list[int] = []
    for i, r in enumerate(records):
        if r.array_index >= 0:
            known[i] = array_digest(dataset.arrays[r.split][r.array_index])
            continue
        row = stat_rows.get(r.path) if r.path else None
        if row is not None and row[:3] == (r.size, r.mtime_ns, r.inode) and r.size >= 0:
            known[i] = row[3]
        else:
            missed.append(i)
    return known, missed


def compute_features(
    dataset: Dataset,
    *,
    options: HashOptions = HashOptions(),
    cache: FeatureCache | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> FeatureTable:
    """Features of every record, from the cache where possible and computed in parallel otherwise."""
    records = dataset.records
    n = len(records)
    variant = options.variant
    rows: dict[int, tuple] = {}
    known: list[bytes | None] = [None] * n
    missed: list[int] = []
    if cache is not None:
        known, missed = _known_digests(dataset, cache)
        if missed:
            # Moved or copied files have a new path but known content: a cheap digest pass finds their features.
            for i in missed:
                try:
                    with open(records[i].path, "rb") as fh:  # type: ignore[arg-type]
                        known[i] = content_digest(fh.read())
                except OSError:
                    known[i] = None
        cached = cache.features_for([d for d in known if d], variant)
        for i, d in enumerate(known):
            if d and d in cached:
                rows[i] = cached[d]
    todo = [i for i in range(n) if i not in rows]
    if progress and rows:
        progress(len(rows))
    computed: dict[str, np.ndarray] = {}
    if todo:
        batch = _batch_columns([records[i] for i in todo], dataset.arrays, [known[i] for i in todo])
        computed = map_batches(_Extract(options), batch, workers=workers, progress=progress)
        if cache is not None:
            cache.store_features(computed, variant)
    columns = _assemble(n, rows, todo, computed, known)
    if cache is not None and todo:
        fresh = set(todo) | set(missed)  # paths whose stat row is new or stale
        cache.store_files(
            (r.path, r.size, r.mtime_ns, r.inode, columns["digest"][i])
            for i, r in enumerate(records)
            if i in fresh and r.path and r.size >= 0 and columns["digest"][i]
        )
    return FeatureTable(columns, hits=len(rows), misses=len(todo), variant=variant, _records=records,
                        _arrays=dataset.arrays, _options=options, _cache=cache, _workers=workers)


def _assemble(n: int, rows: dict[int, tuple], todo: list[int], computed: dict[str, np.ndarray], known: list[bytes | None]) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {"digest": np.empty(n, dtype=object)}
    for f in FEATURE_FIELDS:
        if f in HASH_COLUMNS:
            columns[f] = np.zeros(n, dtype=np.uint64)
        elif f in ("width", "height", "frames"):
            columns[f] = np.zeros(n, dtype=np.int64)
        else:
            columns[f] = np.empty(n, dtype=object)
    if rows:
        idx = np.fromiter(rows.keys(), dtype=np.int64, count=len(rows))
        values = list(rows.values())
        for j, f in enumerate(FEATURE_FIELDS):
            col = [v[j] for v in values]
            if f in HASH_COLUMNS:
                columns[f][idx] = np.array(col, dtype=np.int64).view(np.uint64)
            elif f == "pixel_digest":
                columns[f][idx] = [bytes(v) for v in col]
            else:
                columns[f][idx] = col
        columns["digest"][idx] = [known[i] for i in rows]
    if todo:
        t = np.asarray(todo, dtype=np.int64)
        for f in ("digest", *FEATURE_FIELDS):
            columns[f][t] = computed[f]
    return columns


def is_image_name(relpath: str) -> bool:
    """Does the file name promise an image? (decides whether a non-image is a finding or skipped)."""
    return os.path.splitext(relpath)[1].lower() in decode.IMAGE_SUFFIXES
