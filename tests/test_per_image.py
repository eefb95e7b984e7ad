"""Per-image vectors (thumbnails, properties) are computed and cached a bounded chunk at a time: the answers and
the cache are those of one whole job, while no job and no cache read holds more than a chunk. Real photo tiles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from splitaudit.features import FeatureCache, per_image
from splitaudit.features.engine import Engine
from splitaudit.features.thumbnails import compute_thumbnails
from splitaudit.scan import scan

SIDE = 32


class Counting:
    """The local engine, recording the rows of each job it is given."""

    def __init__(self) -> None:
        self.jobs: list[int] = []
        self.local = Engine("local", None, 2)

    @property
    def distributed(self) -> bool:
        return False

    def map(self, fn, columns, **kw):  # type: ignore[no-untyped-def]
        self.jobs.append(len(columns["path"]))
        return self.local.map(fn, columns, **kw)


@pytest.fixture()
def tiles(photos: dict[str, np.ndarray]) -> np.ndarray:
    out = []
    for photo in photos.values():
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        h, w = photo.shape[:2]
        out += [photo[y : y + SIDE, x : x + SIDE, :3] for y in range(0, h - SIDE, 97) for x in range(0, w - SIDE, 89)]
    return np.ascontiguousarray(np.stack(out[:300]))


def _thumbs(tiles: np.ndarray, cache: FeatureCache | None, engine: Counting) -> tuple[np.ndarray, np.ndarray, int]:
    ds = scan({"train": tiles[:200], "val": tiles[200:]})
    digests = [hashlib.sha256(t.tobytes()).digest() for t in tiles]
    return compute_thumbnails(ds.records, ds.arrays, list(range(len(tiles))), digests, side=SIDE, cache=cache,
                              engine=engine)


def test_chunked_thumbnails_equal_one_job_and_bound_each_job(tiles: np.ndarray, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    whole = Counting()
    want, want_ok, computed = _thumbs(tiles, None, whole)
    assert whole.jobs == [len(tiles)] and computed == len(tiles) and want_ok.all()
    assert want.shape == (len(tiles), SIDE, SIDE) and want.dtype == np.uint8 and want.std() > 10  # real content

    rows = 64
    monkeypatch.setattr(per_image, "CHUNK_BYTES", rows * SIDE * SIDE)  # 64 thumbnails a chunk
    monkeypatch.setattr(per_image, "BLOB_MAX", 1024)  # too small for the whole matrix: read back per digest
    cache = FeatureCache(tmp_path / "cache")
    chunked = Counting()
    got, ok, computed = _thumbs(tiles, cache, chunked)
    assert max(chunked.jobs) <= rows and sum(chunked.jobs) == len(tiles) == computed
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ok, want_ok)

    again = Counting()
    warm, warm_ok, computed = _thumbs(tiles, cache, again)  # everything from the per-digest rows, chunk by chunk
    assert computed == 0 and again.jobs == []
    np.testing.assert_array_equal(warm, want)
    np.testing.assert_array_equal(warm_ok, want_ok)
