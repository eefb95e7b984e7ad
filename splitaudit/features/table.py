"""Compute the features of a whole dataset once: cache look-ups, then the batch function on the misses."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..scan.records import Dataset, ImageRecord, SplitSpec
from . import decode
from .cache import FEATURE_FIELDS, FeatureCache, StatKey
from .engine import Engine, resolve_engine
from .extract import NUMBER_COLUMNS, HashOptions, array_digest, extract_batch, file_digest, warm_up
from .hashing import WORKER_MODULES
from .properties import digests_and_properties_batch, property_version

Progress = Callable[[int], None]


@dataclass(frozen=True)
class FeatureTable:
    """Columns aligned with ``Dataset.records`` (row i describes record i), and how many rows came from the cache.

    ``pixel_digest`` is empty for JPEGs hashed in draft mode: :func:`full_pixel_digests` computes it for the few
    rows that need it (the confirm stage's output, kept by the run; this table is never changed).
    """

    columns: dict[str, np.ndarray]
    hits: int = 0
    misses: int = 0
    variant: str = ""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.columns["status"])

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of rows that decoded (and so have hashes)."""
        return self.columns["status"] == decode.OK


def full_pixel_digests(dataset: Dataset, table: FeatureTable, rows: Sequence[int], *, options: HashOptions,
                       cache: FeatureCache | None = None, workers: int | None = None,
                       engine: Engine | None = None) -> dict[int, bytes]:
    """Full-resolution pixel digests of these decoded rows: the table's own where it has one, else the cache's
    (by content digest), else decoded now (and stored in the cache)."""
    pd, digests = table["pixel_digest"], table["digest"]
    out = {int(i): pd[i] for i in rows if table["status"][i] == decode.OK}
    todo = [i for i, v in out.items() if not v]
    if todo and cache is not None:
        stored = cache.features_for([digests[i] for i in todo if digests[i]], table.variant)
        column = FEATURE_FIELDS.index("pixel_digest")
        for i in todo:
            row = stored.get(digests[i]) if digests[i] else None
            if row is not None and row[column]:
                out[i] = bytes(row[column])
        todo = [i for i in todo if not out[i]]
    if todo:
        batch = batch_columns(_Rows(dataset.records, todo), dataset.arrays)
        # Full-resolution decoding and sha256 release the GIL: threads, no forked copy of this (by now large) process.
        result = resolve_engine(engine, workers=workers).map(_PixelDigests(options), batch, releases_gil=True)
        out.update(zip(todo, result["pixel_digest"]))
        if cache is not None:
            cache.store_pixel_digests(((digests[i], out[i]) for i in todo), table.variant)
            # The tiny images measured on the way: the properties stage reads them from the cache, not the files.
            measured = result["properties"]
            keep = [j for j, i in enumerate(todo) if digests[i] and not np.isnan(measured[j, 0])]
            if keep:
                cache.store_vectors("properties", [digests[todo[j]] for j in keep], measured[keep].astype("<f8"),
                                    property_version(options.max_pixels), "<f8")
    return out


@dataclass(frozen=True)
class _PixelDigests:
    """Pixel digests, and the properties of tiny images from the same decode (a picklable callable)."""

    options: HashOptions

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return digests_and_properties_batch(batch, self.options)


@dataclass(frozen=True)
class _Extract:
    """A picklable callable for the pool (Ray Data accepts the same callable class)."""

    options: HashOptions

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return extract_batch(batch, self.options)


def batch_columns(records: Sequence[ImageRecord], arrays: dict, digests: Sequence[bytes | None] | None = None) -> dict[str, np.ndarray]:
    n = len(records)
    cols = {
        "path": np.empty(n, dtype=object),
        "pixels": np.empty(n, dtype=object),
        "digest": np.array(list(digests) if digests is not None else [None] * n, dtype=object),
    }
    for i, r in enumerate(records):  # each record read once (a RecordTable makes it when read)
        cols["path"][i] = r.path
        if r.array_index >= 0:
            cols["pixels"][i] = arrays[r.split][r.array_index]
    return cols


class _Rows(Sequence[ImageRecord]):
    """``records[rows[j]]`` for each j, read when asked: not a list of every record to hash (the records are
    columns, :class:`~splitaudit.scan.records.RecordTable`; a list of them all is ~420 bytes a record)."""

    def __init__(self, records: Sequence[ImageRecord], rows: Sequence[int]) -> None:
        self.records, self.rows = records, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j):  # type: ignore[no-untyped-def, override]
        if isinstance(j, slice):
            return [self.records[i] for i in self.rows[j]]
        return self.records[self.rows[j]]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self.records[i] for i in self.rows)


def _known_digests(dataset: Dataset, cache: FeatureCache, subset: Sequence[int]) -> tuple[dict[int, bytes | None], list[int]]:
    """Digests from the stat fast path for the records in ``subset``; returns them and the file records that missed."""
    records = dataset.records
    known: dict[int, bytes | None] = {}
    stat_rows: dict[str, tuple[StatKey, bytes]] = {}
    folder_splits = {s.name for s in dataset.splits if s.kind == "folder"}
    wanted = {records[i].split for i in subset}
    for spec in dataset.splits:
        if spec.kind == "folder" and spec.name in wanted:
            stat_rows.update(cache.digests_under(spec.root))
    manifest_paths = [r.path for r in _Rows(records, subset) if r.path and r.split not in folder_splits]
    if manifest_paths:
        stat_rows.update(cache.digests_for(manifest_paths))
    missed: list[int] = []
    for i in subset:
        r = records[i]
        if r.array_index >= 0:
            known[i] = array_digest(dataset.arrays[r.split][r.array_index])
            continue
        row = stat_rows.get(r.path) if r.path else None
        if row is not None and row[0] == stat_key(r) and r.size >= 0:
            known[i] = row[1]
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
    engine: Engine | None = None,
) -> FeatureTable:
    """Features of every record, from the cache where possible and computed in parallel otherwise.

    Cache look-ups go from cheapest to dearest: a per-folder snapshot of the last run (whole columns, matched by
    path list and stat, no per-row SQL), then the per-file stat fast path, then a digest of the bytes (moved or
    copied files), and only then decoding, on ``engine`` (default: the local pool of ``workers`` processes). Only
    the misses go to the engine: the cache on this machine stays the source of truth.
    """
    if progress:  # announce the stage before the cache look-ups and the workers' start-up
        progress(0)
    records = dataset.records
    n = len(records)
    variant = options.variant
    columns = _empty_columns(n)
    filled = np.zeros(n, dtype=bool)
    dirty: set[str] = set()
    if cache is not None:
        for spec, idx in _folder_slices(dataset):
            same = _from_snapshot(cache.get_arrays(_snapshot_key(spec.root, variant)), records, idx, columns)
            filled[idx[same]] = True
            if not same.all():
                dirty.add(spec.name)
        dirty.update(s.name for s in dataset.splits if s.kind != "folder")
    rest = np.flatnonzero(~filled).tolist()
    rows: dict[int, tuple] = {}
    known: dict[int, bytes | None] = {}
    missed: list[int] = []
    if cache is not None and rest:
        known, missed = _known_digests(dataset, cache, rest)
        if missed and cache.holds_features():
            # Moved or copied files have a new path but known content: a cheap digest pass finds their features.
            # Streamed, regular files only: a FIFO or /dev/zero link is left to the extract stage to report. Not
            # in a fresh cache, where it can find nothing: it read every file once more on one core (60k 32-px
            # files: 0.9 s from the page cache) before the extract stage digests them again.
            for i in missed:
                path = records[i].path
                known[i] = file_digest(path) if path else None
        cached = cache.features_for([d for d in known.values() if d], variant)
        for i, d in known.items():
            if d and d in cached:
                rows[i] = cached[d]
    todo = [i for i in rest if i not in rows]
    if progress and n - len(todo):
        progress(n - len(todo))
    computed: dict[str, np.ndarray] = {}
    if todo:
        batch = batch_columns(_Rows(records, todo), dataset.arrays, [known.get(i) for i in todo])
        writer = _BatchWriter(cache, variant, _Rows(records, todo))
        try:
            computed = resolve_engine(engine, workers=workers).map(
                _Extract(options), batch, progress=progress, preload=WORKER_MODULES, setup=warm_up,
                on_batch=writer.add if cache is not None else None)
        finally:
            writer.flush()  # also when interrupted: the next run resumes from what was finished
    _assemble(columns, rows, todo, computed, known)
    if cache is not None and missed:
        # Moved or copied files found by their digest: their stat rows are new (computed rows were stored above).
        done = set(todo)
        cache.store_files((records[i].path, stat_key(records[i]), columns["digest"][i]) for i in missed
                          if i not in done and records[i].path and records[i].size >= 0 and columns["digest"][i])
    if cache is not None:
        for spec, idx in _folder_slices(dataset):
            if spec.name in dirty:
                cache.put_arrays(_snapshot_key(spec.root, variant), _snapshot(records, idx, columns))
    return FeatureTable(columns, hits=n - len(todo), misses=len(todo), variant=variant)


class _BatchWriter:
    """Stores computed features (and their files' stat rows) in the cache every ``FLUSH_ROWS`` rows, each write one
    transaction, so work survives an interrupted run (SIGINT during hashing) without one write per batch."""

    FLUSH_ROWS = 2048

    def __init__(self, cache: FeatureCache | None, variant: str, records: Sequence[ImageRecord]) -> None:
        self.cache, self.variant, self.records = cache, variant, records
        self.pending: list[tuple[int, dict[str, np.ndarray]]] = []
        self.rows = 0

    def add(self, start: int, out: dict[str, np.ndarray]) -> None:
        self.pending.append((start, out))
        self.rows += len(out["digest"])
        if self.rows >= self.FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.cache is None or not self.pending:
            return
        pending, self.pending, self.rows = self.pending, [], 0
        merged = {k: np.concatenate([o[k] for _, o in pending]) for k in pending[0][1]}
        self.cache.store_features(merged, self.variant)
        files = []
        for start, out in pending:
            for j, d in enumerate(out["digest"]):
                r = self.records[start + j]
                if d and r.path and r.size >= 0:
                    files.append((r.path, stat_key(r), d))
        self.cache.store_files(files)


def stat_key(r: ImageRecord) -> StatKey:
    """What must be unchanged for a file's cached digest to be trusted (ctime: see :data:`cache.StatKey`)."""
    return (r.size, r.mtime_ns, r.ctime_ns, r.inode)


def _folder_slices(dataset: Dataset) -> list[tuple[SplitSpec, np.ndarray]]:
    """Each folder split with the indices of its records."""
    by_split: dict[str, list[int]] = {}
    for i, r in enumerate(dataset.records):
        if r.array_index < 0:
            by_split.setdefault(r.split, []).append(i)
    return [(s, np.asarray(by_split.get(s.name, []), dtype=np.int64)) for s in dataset.splits if s.kind == "folder"]


def _snapshot_key(root: str, variant: str) -> str:
    return f"snapshot-v2:{variant}:{os.path.abspath(root)}"


def _paths_digest(records: Sequence[ImageRecord], idx: np.ndarray) -> np.ndarray:
    h = hashlib.sha256()
    for i in idx.tolist():
        h.update(records[i].relpath.encode("utf-8", "surrogateescape") + b"\0")
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _stats(records: Sequence[ImageRecord], idx: np.ndarray) -> np.ndarray:
    return np.array([stat_key(records[i]) for i in idx.tolist()], dtype=np.int64).reshape(-1, 4)


def _digests_to_array(values: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Object column of 32-byte digests (or b"") -> (n, 32) uint8 and a 'present' mask (plain arrays only in an npz)."""
    out = np.zeros((len(values), 32), dtype=np.uint8)
    present = np.zeros(len(values), dtype=bool)
    for j, v in enumerate(values):
        if v:
            out[j] = np.frombuffer(v, dtype=np.uint8)
            present[j] = True
    return out, present


def _array_to_digests(arr: np.ndarray, present: np.ndarray) -> np.ndarray:
    # A void view gives exact bytes (an 'S32' view would drop trailing zero bytes of a digest).
    out = np.array(np.ascontiguousarray(arr).view("V32").ravel().tolist(), dtype=object) if len(arr) else np.empty(0, object)
    out[~present] = b""
    return out


def _snapshot(records: Sequence[ImageRecord], idx: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One folder's rows as plain arrays (no object dtype, so the npz reads back with pickling disabled)."""
    snap: dict[str, np.ndarray] = {"paths": _paths_digest(records, idx), "stat": _stats(records, idx)}
    for name in ("digest", "pixel_digest"):
        snap[name], snap[name + "_present"] = _digests_to_array(columns[name][idx].tolist())
    for name in _STRING_FIELDS:
        uniques, codes = np.unique(np.asarray(columns[name][idx].tolist() or [""], dtype=str), return_inverse=True)
        snap[name + "_values"], snap[name + "_codes"] = uniques, codes[: len(idx)].astype(np.int32)
    for name in _NUMBER_FIELDS:
        snap[name] = np.asarray(columns[name][idx])
    return snap


def _from_snapshot(snap: dict[str, np.ndarray] | None, records: Sequence[ImageRecord], idx: np.ndarray,
                   columns: dict[str, np.ndarray]) -> np.ndarray:
    """Fill the rows of ``idx`` whose path list and stat match the snapshot; returns that mask over ``idx``."""
    none = np.zeros(len(idx), dtype=bool)
    if snap is None or len(idx) == 0:
        return none
    try:
        if snap["stat"].shape != (len(idx), 4) or not np.array_equal(snap["paths"], _paths_digest(records, idx)):
            return none
        stat = _stats(records, idx)
        same = (snap["stat"] == stat).all(axis=1) & (stat[:, 0] >= 0)
        rows = idx[same]
        for name in ("digest", "pixel_digest"):
            columns[name][rows] = _array_to_digests(snap[name][same], snap[name + "_present"][same])
        for name in _STRING_FIELDS:
            values = np.array(snap[name + "_values"].tolist(), dtype=object)
            columns[name][rows] = values[snap[name + "_codes"][same]]
        for name in _NUMBER_FIELDS:
            columns[name][rows] = snap[name][same]
        return same
    except (KeyError, IndexError, ValueError, TypeError):  # a snapshot from another version: ignore it
        return none


_STRING_FIELDS = ("status", "detail", "format", "mode")
_NUMBER_FIELDS = tuple(NUMBER_COLUMNS)


def _empty_columns(n: int) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {"digest": np.empty(n, dtype=object)}
    for f in FEATURE_FIELDS:
        columns[f] = np.zeros(n, dtype=NUMBER_COLUMNS[f]) if f in NUMBER_COLUMNS else np.empty(n, dtype=object)
    return columns


def _assemble(columns: dict[str, np.ndarray], rows: dict[int, tuple], todo: list[int], computed: dict[str, np.ndarray],
              known: dict[int, bytes | None]) -> None:
    """Fill ``columns`` in place from cached feature rows and freshly computed ones (``computed``'s columns are
    taken out of it as they are copied)."""
    if rows:
        idx = np.fromiter(rows.keys(), dtype=np.int64, count=len(rows))
        values = list(rows.values())
        for j, f in enumerate(FEATURE_FIELDS):
            col = [v[j] for v in values]
            if NUMBER_COLUMNS.get(f) is np.uint64:
                columns[f][idx] = np.array(col, dtype=np.int64).view(np.uint64)
            elif f == "pixel_digest":
                columns[f][idx] = [bytes(v) for v in col]
            else:
                columns[f][idx] = col
        columns["digest"][idx] = [known[i] for i in rows]
    if todo:
        t = np.asarray(todo, dtype=np.int64)
        for f in ("digest", *FEATURE_FIELDS):
            columns[f][t] = computed.pop(f)  # each computed column dropped once copied: never both whole at once


def is_image_name(relpath: str) -> bool:
    """Does the file name promise an image? (decides whether a non-image is a finding or skipped)."""
    return os.path.splitext(relpath)[1].lower() in decode.IMAGE_SUFFIXES


def is_skipped(status: str, relpath: str) -> bool:
    """Is this row left out of the audit on purpose: a non-image beside the images (README, labels.csv) or an image
    format not read here (reported as a warning)?"""
    return status == decode.UNSUPPORTED or (status == decode.NOT_IMAGE and not is_image_name(relpath))
