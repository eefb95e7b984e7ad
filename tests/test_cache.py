"""The SQLite cache: stat fast path, content keys (moved files keep features), damage recovery, concurrency."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import splitaudit
from splitaudit.features.cache import SCHEMA_VERSION, FeatureCache

from conftest import Planted, save


def _db(cache_dir: Path) -> Path:
    return cache_dir / f"cache-v{SCHEMA_VERSION}.sqlite3"


def test_unchanged_dataset_is_served_from_the_cache(planted: Planted, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    first = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    n = sum(s.files for s in first.splits)
    assert first.cache == {"hits": 0, "misses": n, "embedded": 0}
    second = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    assert second.cache == {"hits": n, "misses": 0, "embedded": 0}
    assert second.to_json() == first.to_json()
    with sqlite3.connect(_db(cache)) as conn:
        assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] >= 1  # the search result is cached too


def test_copied_or_moved_file_keeps_its_features_by_content(planted: Planted, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    shutil.copy(planted.split("train") / "cat" / "cat_09.jpg", planted.split("test") / "cat" / "moved_here.jpg")
    report = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    assert report.cache["misses"] == 0  # new path, known content: nothing decoded again
    assert any(f.images[1].path == "cat/moved_here.jpg" for f in report.by_check("exact-duplicates"))


def test_changed_content_is_recomputed(planted: Planted, tmp_path: Path, photos: dict) -> None:
    from conftest import tiles_of

    cache = tmp_path / "c"
    splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    target = planted.split("val") / "cat" / "copy_mirrored.jpg"
    save(target, tiles_of(photos["rocket"], 64, 1)[0])  # same path, new content: no longer a copy
    report = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    assert report.cache["misses"] == 1
    assert not any(f.images[1].path == "cat/copy_mirrored.jpg" for f in report.findings if len(f.images) == 2)


def test_damaged_cache_is_rebuilt_not_fatal(planted: Planted, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    good = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none").to_json()
    db = _db(cache)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    report = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    assert report.to_json() == good
    assert report.cache["hits"] == 0
    with sqlite3.connect(db) as conn:  # rebuilt into a real, filled cache
        assert conn.execute("SELECT count(*) FROM features").fetchone()[0] > 0
    assert splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none").cache["misses"] == 0


def test_truncated_cache_file_is_rebuilt(planted: Planted, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    good = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none").to_json()
    with FeatureCache(cache) as c:  # fold the WAL in so the main file holds everything
        c._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
    db = _db(cache)
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3] + b"\0" * 1000)
    assert splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none").to_json() == good


def test_two_concurrent_runs_share_one_cache(planted: Planted, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    cmd = [sys.executable, "-m", "splitaudit", "check", *map(str, planted.splits), "--format", "json", "--cache-dir", str(cache), "--workers", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    # No time limit: the work is bounded by the planted files (both runs write features and embeddings), and two
    # TensorFlow start-ups on a loaded machine took longer than any fixed limit would allow.
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [1, 1], [o[1] for o in outs]
    assert outs[0][0] == outs[1][0]
    assert json.loads(outs[0][0])["verdict"]["failed"] is True
    assert splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none").cache["misses"] == 0


def test_no_cache_writes_nothing(planted: Planted, tmp_path: Path) -> None:
    cache = tmp_path / "never"
    report = splitaudit.audit(*planted.splits, cache=False, cache_dir=cache, backbone="none")
    assert not cache.exists() and report.cache["misses"] > 0


def test_nothing_is_unpickled_from_disk() -> None:
    """Cache blobs are .npy read with allow_pickle=False; only the restricted torch-weights reader may unpickle."""
    root = Path(splitaudit.__file__).parent
    allowed = {root / "features" / "embeddings" / "torch_weights.py"}
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "allow_pickle=True" not in text, path
        if path not in allowed:
            assert not re.search(r"\bpickle\b|\bshelve\b|\bmarshal\b", text), path


def test_snapshot_round_trips_digests_exactly(planted: Planted, tmp_path: Path) -> None:
    """The per-folder snapshot stores digests as raw bytes: trailing zero bytes survive (an 'S32' array would not)."""
    from splitaudit.features.table import _array_to_digests, _digests_to_array

    values = [b"\x00" * 32, b"ab" * 15 + b"\x00\x00", b"", bytes(range(32))]
    arr, present = _digests_to_array(values)
    assert _array_to_digests(arr, present).tolist() == values
    # And a real run served from snapshots gives the same table as one computed from scratch.
    cache = tmp_path / "c"
    splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    fresh = splitaudit.audit(*planted.splits, cache=False, backbone="none")
    again = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    assert again.cache["misses"] == 0 and again.to_json() == fresh.to_json()


def test_arrays_are_stored_compressed_and_read_back_exactly(tmp_path: Path) -> None:
    """A blob is a deflated .npz (the copy stage's answer is held ~3 times while SQLite stores it: the smaller the
    better); every dtype and value comes back, and blobs of earlier runs (np.savez, stored) still read."""
    import io
    import zipfile

    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {"score": np.where(rng.random(5000) < 0.7, np.nan, rng.random(5000)), "copy": rng.random(5000) < 0.1,
              "a": np.arange(5000, dtype=np.int64) * 3, "code": rng.integers(0, 2**64, 5000, dtype=np.uint64),
              "names": np.array(["pixels", "crops", ""]), "grid": rng.random((40, 7)).astype(np.float32),
              "empty": np.zeros(0, np.int64)}
    with FeatureCache(tmp_path / "c") as cache:
        cache.put_arrays("k", arrays)
        got = cache.get_arrays("k")
        assert got is not None and list(got) == list(arrays)
        for name, value in arrays.items():
            assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        old = io.BytesIO()
        np.savez(old, **arrays)
        (blob,) = sqlite3.connect(_db(tmp_path / "c")).execute("SELECT value FROM blobs WHERE key = 'k'").fetchone()
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        assert len(blob) < len(old.getvalue())
        with sqlite3.connect(_db(tmp_path / "c")) as conn:
            conn.execute("UPDATE blobs SET value = ? WHERE key = 'k'", (old.getvalue(),))
        again = cache.get_arrays("k")
        assert again is not None and all(np.array_equal(again[n], v, equal_nan=v.dtype.kind == "f")
                                         for n, v in arrays.items())
        cache.put_arrays("objects", {"x": np.array([{"a": 1}], dtype=object)})  # would need a pickle: not stored
        assert cache.get_arrays("objects") is None


def test_per_image_vectors_take_about_their_own_size_on_disk(tmp_path: Path) -> None:
    # Thumbnails (1 kB) and embeddings (2.5 kB) stored at random content keys: as WITHOUT ROWID rows each one took a
    # page and an overflow page of its own (6x the bytes written for 60k thumbnails, 2.2 s against 0.5 s)
    import hashlib

    import numpy as np

    n = 3000
    digests = [hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(n)]
    thumbs = np.random.default_rng(0).integers(0, 256, (n, 1024), dtype=np.uint8)
    emb = np.random.default_rng(1).standard_normal((n, 1280)).astype(np.float16)
    with FeatureCache(tmp_path / "c") as cache:
        for s in range(0, n, 1000):
            cache.store_vectors("thumbnails", digests[s : s + 1000], thumbs[s : s + 1000], "v1", "|u1")
            cache.store_embeddings(digests[s : s + 1000], emb[s : s + 1000], "net")
        got = cache.vectors_for("thumbnails", digests[::7], "v1", "|u1")
        assert all(np.array_equal(got[d], thumbs[i]) for i, d in zip(range(0, n, 7), digests[::7]))
        back = cache.embeddings_for(digests[5:9], "net")
        assert all(np.array_equal(back[d], emb[5 + j]) for j, d in enumerate(digests[5:9]))
        with sqlite3.connect(_db(tmp_path / "c")) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    payload = thumbs.nbytes + emb.nbytes + 2 * n * 40  # the rows' bytes, keys included
    # 1.10x: three 2.5 kB rows share an 8 kB page (1.52x with 4 kB pages, a row to a page; 2.6x as WITHOUT ROWID rows)
    assert _db(tmp_path / "c").stat().st_size < 1.25 * payload


def test_a_cache_made_with_smaller_pages_is_still_used(planted: Planted, tmp_path: Path) -> None:
    """New cache files get :data:`~splitaudit.features.cache.PAGE_SIZE`; a file an older version made with 4 kB pages
    keeps them (SQLite sets the size when the file is made) and serves a re-check from the cache."""
    from splitaudit.features.cache import PAGE_SIZE

    cache = tmp_path / "c"
    cache.mkdir()
    with sqlite3.connect(_db(cache)) as conn:  # as SQLite's default made it before
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
    first = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    n = sum(s.files for s in first.splits)
    again = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    with sqlite3.connect(_db(cache)) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert first.cache == {"hits": 0, "misses": n, "embedded": 0}
    assert again.cache == {"hits": n, "misses": 0, "embedded": 0} and again.to_json() == first.to_json()
    fresh = tmp_path / "fresh"
    splitaudit.audit(*planted.splits, cache_dir=fresh, backbone="none")
    with sqlite3.connect(_db(fresh)) as conn:
        assert PAGE_SIZE == 8192 and conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE


def test_a_fresh_cache_is_not_searched_by_content_digest(planted: Planted, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The digest pass (moved or copied files found by their content) reads every file that missed the stat fast
    # path: in a fresh cache it can find nothing, so the first run leaves the digests to the extract stage. Once
    # the cache holds features, a new file is digested and found by content (the test above).
    from splitaudit.features import table

    digested: list[str] = []
    real = table.file_digest
    monkeypatch.setattr(table, "file_digest", lambda path: (digested.append(path), real(path))[1])
    cache = tmp_path / "c"
    with FeatureCache(cache) as fresh:
        assert not fresh.holds_features()
    first = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    assert digested == [] and first.cache["hits"] == 0
    with FeatureCache(cache) as used:
        assert used.holds_features()
    shutil.copy(planted.split("train") / "cat" / "cat_09.jpg", planted.split("test") / "cat" / "moved_here.jpg")
    second = splitaudit.audit(*planted.splits, cache_dir=cache, backbone="none")
    assert [Path(p).name for p in digested] == ["moved_here.jpg"] and second.cache["misses"] == 0
    assert splitaudit.audit(*planted.splits, backbone="none", cache=False).to_json() == \
        splitaudit.audit(*planted.splits, cache_dir=tmp_path / "c2", backbone="none").to_json()
