"""The incremental cache: SQLite, keyed by content digest, with a stat fast path.

Design (after black's cache and git's index): a file whose (size, mtime_ns, ctime_ns, inode) match what we saw last time is not read at all;
its content digest comes from the ``files`` table, and its features from ``features``, keyed by that digest. Keys
are content, not paths, because files moving between splits is exactly what we audit: a moved file keeps its
features. Every write is one SQLite transaction (atomic); WAL mode and a busy timeout let two runs share one cache.
A damaged or foreign file is deleted and rebuilt, never fatal: the cache only ever saves time. Nothing is pickled:
arrays are stored as raw bytes or ``.npy`` blobs read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: 2: paths as bytes (any file name), ctime in the stat key, orientation/spread columns; 3: per-image vectors in
#: rowid tables (below)
SCHEMA_VERSION = 3
CACHE_ENV = "SPLITAUDIT_CACHE_DIR"
_CHUNK = 900  # stay under SQLite's default limit of bound parameters per statement
_MAX_BLOBS = 64

FEATURE_FIELDS = ("status", "detail", "format", "mode", "width", "height", "frames",
                  "phash", "dhash", "phash_flip", "dhash_flip", "pixel_digest",
                  "orientation", "spread", "stored_phash", "stored_dhash")
_UINT64_FIELDS = {"phash", "dhash", "phash_flip", "dhash_flip", "stored_phash", "stored_dhash"}
_INT_FIELDS = ("width", "height", "frames", "orientation")

# The per-image vector tables are rowid tables with a unique index, not WITHOUT ROWID ones: a WITHOUT ROWID row is
# kept in a b-tree of its keys, which holds ~1 kB of a row in the page (4 kB pages) and the rest in an overflow page
# of its own. A 1 kB thumbnail took ~6 kB of file, and 60k of them written at random keys 1.1 GB of writes and 2.2 s;
# as rowid rows, appended in rowid order, 105 MB of file, 0.2 GB and 0.5 s (2.5 kB embeddings: 3.2 -> 1.25 s).
#: The page size of a new cache file (an existing one keeps its own). A 2.5 kB embedding row filled a 4 kB page of
#: its own (1.5 kB of it empty); 8 kB pages hold three. 60k embeddings and thumbnails (scratch, WAL as here): 334 ->
#: 240 MB of file and 2.2 -> 1.2 s of writes, reading them all back as fast.
PAGE_SIZE = 8192
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, digest BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS features (
    digest BLOB NOT NULL, variant TEXT NOT NULL,
    status TEXT NOT NULL, detail TEXT NOT NULL, format TEXT NOT NULL, mode TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, frames INTEGER NOT NULL,
    phash INTEGER NOT NULL, dhash INTEGER NOT NULL, phash_flip INTEGER NOT NULL, dhash_flip INTEGER NOT NULL,
    pixel_digest BLOB NOT NULL, orientation INTEGER NOT NULL, spread REAL NOT NULL,
    stored_phash INTEGER NOT NULL, stored_dhash INTEGER NOT NULL,
    PRIMARY KEY (digest, variant)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS embeddings (
    digest BLOB NOT NULL, model TEXT NOT NULL, vector BLOB NOT NULL, UNIQUE (digest, model)
);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, value BLOB NOT NULL, used REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS properties (
    digest BLOB NOT NULL, version TEXT NOT NULL, vector BLOB NOT NULL, UNIQUE (digest, version)
);
CREATE TABLE IF NOT EXISTS thumbnails (
    digest BLOB NOT NULL, version TEXT NOT NULL, vector BLOB NOT NULL, UNIQUE (digest, version)
);
PRAGMA user_version = {SCHEMA_VERSION};
"""


_OPEN_ATTEMPTS = 20


def _is_busy(exc: BaseException) -> bool:
    """SQLite's 'database is locked' / 'busy': another process holds the file, which is not damage."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def default_cache_dir() -> Path:
    """``$SPLITAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/splitaudit``, else ``~/.cache/splitaudit``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "splitaudit"


def _signed(values: np.ndarray) -> list[int]:
    return np.asarray(values, dtype=np.uint64).view(np.int64).tolist()


def _path_key(path: str) -> bytes:
    """A file path as the bytes the OS uses: lossless for any name, including ones that are not UTF-8 (which
    Python holds as surrogate escapes and SQLite's TEXT cannot store)."""
    return os.fsencode(path)


def _text_key(key: str) -> str:
    """A blob key that SQLite can store whatever file names it embeds (undecodable bytes as ``\\xNN``)."""
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: A file's stat key: (size, mtime_ns, ctime_ns, inode). ctime changes on every write and cannot be set back, so
#: a file rewritten in place with its size and mtime restored is still seen as changed (as git's index does).
StatKey = tuple[int, int, int, int]


class FeatureCache:
    """A SQLite feature cache; every method degrades to 'miss' rather than raise."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.directory / f"cache-v{SCHEMA_VERSION}.sqlite3"
        self.rebuilt = False
        self.disabled = False
        self._conn: sqlite3.Connection | None = None
        self._connect()

    # -- connection management ---------------------------------------------------------------------------------
    def _connect(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, a read-only file system
            self._disable(f"cannot create folder {self.directory}: {exc.strerror or exc}")
            return
        if self.path.exists() and not self.path.is_file():
            self._disable(f"{self.path} is not a file")
            return
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                self._conn = self._open()
                return
            except sqlite3.DatabaseError as exc:
                if _is_busy(exc):
                    # Another run is creating or switching the file to WAL (some of which SQLite answers with
                    # 'locked' at once, without waiting): a busy cache is not a damaged one, never delete it.
                    time.sleep(0.1 * (attempt + 1))
                    continue
                if isinstance(exc, sqlite3.OperationalError):
                    # Cannot open or write here (read-only folder or file, no space): the environment, not damage.
                    self._disable(str(exc))
                    return
                log.warning("splitaudit cache %s is damaged (%s); rebuilding it", self.path, exc)
                self._rebuild()
                return
        log.warning("splitaudit cache %s stays busy; continuing without it", self.path)
        self._conn = None

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"unknown schema version {version}")
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL writes the header of a new file; else a no-op
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute("SELECT count(*) FROM features WHERE 0").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _rebuild(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass
            except OSError as exc:  # read-only folder, or a folder where the file should be
                self._disable(f"cannot replace {self.path}{suffix}: {exc.strerror or exc}")
                return
        self.rebuilt = True
        try:
            self._conn = self._open()
        except sqlite3.Error as exc:  # e.g. a read-only folder: run without a cache
            self._disable(str(exc))

    def _disable(self, reason: str) -> None:
        """Run on without a cache (it only ever saves time), saying so once."""
        self.close()
        if not self.disabled:
            log.warning("splitaudit cache %s unavailable (%s); continuing without it", self.directory, reason)
        self.disabled = True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, fn: Any, default: Any) -> Any:
        """Run ``fn(conn)``; a damaged database is rebuilt and the call answers ``default`` (a miss)."""
        if self._conn is None:
            return default
        try:
            return fn(self._conn)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                log.warning("splitaudit cache busy (%s); continuing without it for this step", exc)
                return default
            if "readonly" in str(exc) or "unable to open" in str(exc) or "disk" in str(exc):
                self._disable(str(exc))  # the environment refuses writes: deleting the file would not help
                return default
            log.warning("splitaudit cache error (%s); rebuilding it", exc)
        except sqlite3.DatabaseError as exc:
            log.warning("splitaudit cache %s is damaged (%s); rebuilding it", self.path, exc)
        self._rebuild()
        return default

    # -- files: the stat fast path -------------------------------------------------------------------------------
    def digests_under(self, root: str) -> dict[str, tuple[StatKey, bytes]]:
        """Every cached ``path -> ((size, mtime_ns, ctime_ns, inode), digest)`` below folder ``root`` (one range
        query)."""
        prefix = _path_key(os.path.join(os.path.abspath(root), ""))
        # Paths below the root sort between b"root/" and b"root0" ('0' follows '/'; BLOBs compare as bytes).
        upper = prefix[:-1] + bytes([prefix[-1] + 1])

        def q(conn: sqlite3.Connection) -> dict[str, tuple[StatKey, bytes]]:
            rows = conn.execute("SELECT path, size, mtime_ns, ctime_ns, inode, digest FROM files WHERE path >= ? AND path < ?",
                                (prefix, upper))
            return {os.fsdecode(bytes(r[0])): ((r[1], r[2], r[3], r[4]), bytes(r[5])) for r in rows}

        return self._run(q, {})

    def digests_for(self, paths: Sequence[str]) -> dict[str, tuple[StatKey, bytes]]:
        """Cached stat and digest for these exact paths (manifest input, where paths share no root)."""
        def q(conn: sqlite3.Connection) -> dict[str, tuple[StatKey, bytes]]:
            out: dict[str, tuple[StatKey, bytes]] = {}
            for start in range(0, len(paths), _CHUNK):
                chunk = [_path_key(p) for p in paths[start : start + _CHUNK]]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT path, size, mtime_ns, ctime_ns, inode, digest FROM files WHERE path IN ({marks})"
                for r in conn.execute(sql, chunk):
                    out[os.fsdecode(bytes(r[0]))] = ((r[1], r[2], r[3], r[4]), bytes(r[5]))
            return out

        return self._run(q, {})

    def store_files(self, rows: Iterable[tuple[str, StatKey, bytes]]) -> None:
        """Remember ``(path, stat key, digest)`` rows for the stat fast path."""
        values = [(_path_key(p), *st, d) for p, st, d in rows]
        if values:
            self._run(lambda c: self._write(c, "INSERT OR REPLACE INTO files (path, size, mtime_ns, ctime_ns, inode, digest) "
                                               "VALUES (?, ?, ?, ?, ?, ?)", values), None)

    # -- features, keyed by content ------------------------------------------------------------------------------
    def holds_features(self) -> bool:
        """Whether any image's features are cached (a fresh cache holds none, so no digest can find one)."""
        return bool(self._run(lambda c: c.execute("SELECT 1 FROM features LIMIT 1").fetchone() is not None, False))

    def features_for(self, digests: Sequence[bytes], variant: str) -> dict[bytes, tuple[Any, ...]]:
        """Cached feature rows (in ``FEATURE_FIELDS`` order, hashes as uint64) for these digests."""
        cols = ", ".join(FEATURE_FIELDS)
        unique = list(dict.fromkeys(digests))

        def q(conn: sqlite3.Connection) -> dict[bytes, tuple[Any, ...]]:
            out: dict[bytes, tuple[Any, ...]] = {}
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT digest, {cols} FROM features WHERE variant = ? AND digest IN ({marks})"
                for r in conn.execute(sql, [variant, *chunk]):
                    out[bytes(r[0])] = r[1:]
            return out

        return self._run(q, {})

    def store_features(self, columns: dict[str, np.ndarray], variant: str) -> None:
        """Store rows of an ``extract_batch`` output (rows without a digest are skipped)."""
        keep = [i for i, d in enumerate(columns["digest"]) if d]
        if not keep:
            return
        values = {f: (_signed(columns[f][keep]) if f in _UINT64_FIELDS else [columns[f][i] for i in keep]) for f in FEATURE_FIELDS}
        for f in _INT_FIELDS:
            values[f] = [int(v) for v in values[f]]
        values["spread"] = [float(v) for v in values["spread"]]
        rows = [(bytes(columns["digest"][i]), variant, *(values[f][j] for f in FEATURE_FIELDS)) for j, i in enumerate(keep)]
        marks = ",".join("?" * (2 + len(FEATURE_FIELDS)))
        self._run(lambda c: self._write(c, f"INSERT OR REPLACE INTO features (digest, variant, {', '.join(FEATURE_FIELDS)}) VALUES ({marks})", rows), None)

    def store_pixel_digests(self, pairs: Iterable[tuple[bytes, bytes]], variant: str) -> None:
        rows = [(pd, d, variant) for d, pd in pairs if d and pd]
        if rows:
            self._run(lambda c: self._write(c, "UPDATE features SET pixel_digest = ? WHERE digest = ? AND variant = ?", rows), None)

    # -- per-image vectors keyed by content: embeddings (by backbone identity), image properties (by version) ------
    def embeddings_for(self, digests: Sequence[bytes], model: str) -> dict[bytes, np.ndarray]:
        """Cached float16 vectors for these digests under backbone identity ``model``."""
        return self._vectors_for("embeddings", "model", digests, model, "<f2")

    def store_embeddings(self, digests: Sequence[bytes], vectors: np.ndarray, model: str) -> None:
        self._store_vectors("embeddings", digests, vectors, model, "<f2")

    #: Per-image vector tables keyed by (digest, version) (``features.per_image``): their names are our constants.
    VECTOR_TABLES = ("properties", "thumbnails")

    def vectors_for(self, table: str, digests: Sequence[bytes], version: str, dtype: str) -> dict[bytes, np.ndarray]:
        """Cached vectors of one of :data:`VECTOR_TABLES` for these digests under ``version``."""
        assert table in self.VECTOR_TABLES
        return self._vectors_for(table, "version", digests, version, dtype)

    def store_vectors(self, table: str, digests: Sequence[bytes], vectors: np.ndarray, version: str, dtype: str) -> None:
        assert table in self.VECTOR_TABLES
        self._store_vectors(table, digests, vectors, version, dtype)

    def _vectors_for(self, table: str, key_column: str, digests: Sequence[bytes], key: str, dtype: str) -> dict[bytes, np.ndarray]:
        unique = list(dict.fromkeys(d for d in digests if d))

        def q(conn: sqlite3.Connection) -> dict[bytes, np.ndarray]:
            out: dict[bytes, np.ndarray] = {}
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                # table and column names are our constants, never user input
                for d, v in conn.execute(f"SELECT digest, vector FROM {table} WHERE {key_column} = ? AND digest IN ({marks})", [key, *chunk]):
                    out[bytes(d)] = np.frombuffer(v, dtype=dtype)
            return out

        return self._run(q, {})

    def _store_vectors(self, table: str, digests: Sequence[bytes], vectors: np.ndarray, key: str, dtype: str) -> None:
        rows = [(d, key, np.asarray(v, dtype=dtype).tobytes()) for d, v in zip(digests, vectors) if d]
        if rows:
            self._run(lambda c: self._write(c, f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", rows), None)

    # -- blobs: derived results such as neighbour pairs ---------------------------------------------------------
    def get_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        key = _text_key(key)

        def q(conn: sqlite3.Connection) -> dict[str, np.ndarray] | None:
            row = conn.execute("SELECT value FROM blobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE blobs SET used = ? WHERE key = ?", (time.time(), key))
            with np.load(io.BytesIO(row[0]), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}

        try:
            return self._run(q, None)
        except (ValueError, OSError, KeyError):  # a damaged .npz blob: treat as a miss
            return None

    def put_arrays(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Store ``arrays`` under ``key`` as one compressed ``.npz`` (:func:`npz_bytes`)."""
        key = _text_key(key)
        try:
            value = npz_bytes(arrays)
        except ValueError:  # an object array: not stored (it would be pickled, and nothing is unpickled from here)
            return

        def w(conn: sqlite3.Connection) -> None:
            self._write(conn, "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)", [(key, value, time.time())])
            # Keep the blob table bounded: drop the least recently used results.
            conn.execute("DELETE FROM blobs WHERE key NOT IN (SELECT key FROM blobs ORDER BY used DESC LIMIT ?)", (_MAX_BLOBS,))

        self._run(w, None)

    @staticmethod
    def _write(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


#: zlib level of the arrays stored as blobs: the fastest; the copy stage's answer (21 MB of arrays at 100k images)
#: packs into 3.5 MB at level 1 in ~0.5 s more than uncompressed.
BLOB_LEVEL = 1


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as a compressed ``.npz`` (what ``np.savez_compressed`` writes, at :data:`BLOB_LEVEL`; read back by
    ``np.load``). A blob is held about three times while SQLite stores it (this buffer, the bound copy, the record):
    uncompressed, the copy stage's answer so took +65 MiB at 100k images (~0.6 GB at 1M), at the end of the check,
    above what the stage itself held; compressed, +14 MiB. No object arrays (nothing is pickled)."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, allowZip64=True, compresslevel=BLOB_LEVEL) as zf:
        for name, value in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()
