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


def test_spilled_thumbnails_are_written_to_a_file_as_made_with_the_same_rows(tiles: np.ndarray, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Above SPILL_BYTES (``spill=True``, as the check context asks) the thumbnails go into a temporary file a chunk
    at a time, computed or read from the cache, and come back as SpilledRows: the same rows as the in-memory matrix,
    which is never made (the matrix is 1 kB an image: 300 MB at 300k images)."""
    import os

    from splitaudit import memory

    ds = scan({"train": tiles[:200], "val": tiles[200:]})
    digests = [hashlib.sha256(t.tobytes()).digest() for t in tiles]
    digests[7] = b""  # no digest: computed, never cached
    rows = [i for i in range(len(tiles)) if i != 11]  # a row not asked for stays zero and not ok
    want, want_ok, _ = compute_thumbnails(ds.records, ds.arrays, rows, digests, side=SIDE, engine=Engine("local", None, 2))
    assert not want[11].any() and not want_ok[11] and want_ok.sum() == len(rows)

    monkeypatch.setattr(memory, "SPILL_BYTES", 0)
    monkeypatch.setattr(per_image, "CHUNK_BYTES", 64 * SIDE * SIDE)
    monkeypatch.setattr(per_image, "BLOB_MAX", 1024)  # the whole-matrix blob is for small sets: not this one
    cache = FeatureCache(tmp_path / "cache")
    for computed_want in (len(rows), 1):  # cold, then warm (all but the digest-less row from the cache, chunked)
        chunked = Counting()
        got, ok, computed = compute_thumbnails(ds.records, ds.arrays, rows, digests, side=SIDE, cache=cache,
                                               engine=chunked, spill=True)
        assert isinstance(got, memory.SpilledRows) and got.shape == want.shape and computed == computed_want
        assert sum(chunked.jobs) == computed_want and max(chunked.jobs) <= 64
        np.testing.assert_array_equal(got[np.arange(len(tiles))], want)
        np.testing.assert_array_equal(got[5:9], want[5:9])
        np.testing.assert_array_equal(ok, want_ok)
        assert memory.spill_rows(got) is got  # the check context's spill_rows keeps it as it is
        path = got.path
        assert os.path.exists(path)
        del got
        assert not os.path.exists(path)  # the file goes with the object
    plain, _, _ = compute_thumbnails(ds.records, ds.arrays, rows, digests, side=SIDE, cache=cache, engine=Counting())
    assert isinstance(plain, np.ndarray)  # without spill: the matrix, as before
    np.testing.assert_array_equal(plain, want)


def _coverage(n: int, side: int) -> np.ndarray:
    """(side, n): each output pixel's share of each of n source pixels, by the length of their overlap."""
    edges = np.arange(side + 1) * n / side
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n)[None, :]
    return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None) / (n / side)


@pytest.mark.parametrize("size", [(112, 112), (150, 90), (200, 131)])
def test_thumbnails_are_the_area_average_at_any_ratio(photos: dict[str, np.ndarray], size: tuple[int, int]) -> None:
    """A photo shrunk to its thumbnail: each pixel the coverage-weighted mean of the source pixels under it, also at
    ratios that are no whole number (Pillow's BOX counted each source pixel whole or not at all there, a jitter that
    cost the verifier a tenth of the copies of 112-px tiles)."""
    from PIL import Image

    from splitaudit.features.thumbnails import thumbnail_of

    w, h = size
    photo = photos["astronaut"][40 : 40 + h, 60 : 60 + w]
    grey = np.asarray(Image.fromarray(photo).convert("L"), np.float64)
    want = _coverage(h, 64) @ grey @ _coverage(w, 64).T
    got = thumbnail_of(None, photo, 64).astype(np.float64)
    assert np.abs(got - want).max() <= 1.0, np.abs(got - want).max()


def test_value_thumbnails_are_each_pixels_largest_channel_and_a_grey_images_own_grey(photos: dict[str, np.ndarray],
                                                                                       tmp_path: Path) -> None:
    """The copy verifier's second channel: max(R, G, B) shrunk by the same area average (arrays and JPEG files, the
    file decoded in colour, not straight to grey); a grey image's value is its grey; another channel is an error."""
    from PIL import Image

    from conftest import save
    from splitaudit.errors import InvalidParameterError
    from splitaudit.features.thumbnails import compute_thumbnails, thumbnail_of

    photo = photos["coffee"][30:230, 50:250]
    value = photo.max(axis=2).astype(np.float64)
    want = _coverage(200, 64) @ value @ _coverage(200, 64).T
    got = thumbnail_of(None, photo, 64, channel="value").astype(np.float64)
    luma = thumbnail_of(None, photo, 64).astype(np.float64)
    assert np.abs(got - want).max() <= 1.0
    assert (got >= luma - 1).all() and (got - luma).mean() > 10  # a colourful photo: the value is well above its luma
    path = save(tmp_path / "coffee.jpg", Image.fromarray(photo), quality=95)
    from_file = thumbnail_of(str(path), None, 64, channel="value").astype(np.float64)
    assert np.abs(from_file - want).mean() < 3 and (from_file - thumbnail_of(str(path), None, 64)).mean() > 10
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    gpath = save(tmp_path / "grey.png", Image.fromarray(grey), fmt="PNG")
    np.testing.assert_array_equal(thumbnail_of(str(gpath), None, 64, channel="value"), thumbnail_of(str(gpath), None, 64))
    ds = scan({"train": photo[None, :32, :32], "val": photo[None, 32:64, :32]})
    with pytest.raises(InvalidParameterError, match="'channel'.*'luma', 'value'.*'hue'"):
        compute_thumbnails(ds.records, ds.arrays, [0], [b"x", b"y"], side=SIDE, channel="hue")


def test_rows_asked_for_now_and_then_are_cached_per_digest_never_as_a_whole_blob(tiles: np.ndarray,
                                                                                  tmp_path: Path) -> None:
    """``whole=False`` (the copy stage's value thumbnails: a few rows each time, other rows each time): the rows
    are kept per content digest and served from there, and no whole-matrix blob is written for each request."""
    import sqlite3

    ds = scan({"train": tiles[:200], "val": tiles[200:]})
    digests = [hashlib.sha256(t.tobytes()).digest() for t in tiles]
    cache = FeatureCache(tmp_path / "cache")
    db = next((tmp_path / "cache").glob("cache-v*.sqlite3"))
    blobs = lambda: sqlite3.connect(db).execute("SELECT count(*) FROM blobs").fetchone()[0]  # noqa: E731
    before = blobs()
    first, ok, computed = compute_thumbnails(ds.records, ds.arrays, [3, 50, 90], digests, side=SIDE, cache=cache,
                                             channel="value", whole=False)
    assert computed == 3 and ok.sum() == 3 and blobs() == before
    again, _, computed = compute_thumbnails(ds.records, ds.arrays, [50, 90, 120], digests, side=SIDE, cache=cache,
                                            channel="value", whole=False)
    assert computed == 1 and blobs() == before  # two of them from their digests
    np.testing.assert_array_equal(again[[50, 90]], first[[50, 90]])
    with_blob = compute_thumbnails(ds.records, ds.arrays, [3, 50], digests, side=SIDE, cache=cache, channel="value")
    assert with_blob[2] == 0 and blobs() == before + 1  # the default keeps the whole matrix too, as before
