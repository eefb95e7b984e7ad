"""The per-image passes' fast paths (issue #16) give exactly what the per-image Pillow paths gave.

Real photographs (scikit-learn, scikit-image) are written as JPEG and PNG files of 2-300 px, colour, grey, RGBA,
palette, 16-bit, CMYK and EXIF/XMP-rotated; every pass is compared with :mod:`per_image_reference` (the code before
the change): thumbnails and digests bit for bit, properties to float rounding.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import per_image_reference as ref
import pytest
from PIL import Image

from splitaudit.features import FeatureCache, compute_features, decode
from splitaudit.features.extract import HashOptions, extract_batch, extract_one, pixel_digest_batch
from splitaudit.features.properties import (ANALYSIS_SIDE, MEASURED, compute_properties, digests_and_properties_batch,
                                            measure_stack, properties_batch)
from splitaudit.features.table import full_pixel_digests
from splitaudit.features.thumbnails import thumbnails_batch
from splitaudit.scan import scan

SIZES = ((20, 20), (32, 32), (47, 31), (64, 64), (100, 150), (257, 130), (300, 300))


def _exif(orientation: int) -> bytes:
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def _write(folder: Path, name: str, im: Image.Image, fmt: str, **kw: object) -> str:
    path = folder / name
    im.save(path, fmt, **kw)
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """{"plain": plain small JPEGs (the quick path's), "other": every other kind of file}."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    d = tmp_path_factory.mktemp("passes")
    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg"), skimage.data.astronaut(),
              skimage.data.coffee(), skimage.data.camera(), skimage.data.coins()]
    plain: list[str] = []
    other: list[str] = []
    rng = np.random.default_rng(16)
    for k, (w, h) in enumerate(SIZES):
        for j, photo in enumerate(photos):
            y, x = (int(rng.integers(0, photo.shape[a] - s)) for a, s in ((0, h), (1, w)))
            im = Image.fromarray(np.ascontiguousarray(photo[y : y + h, x : x + w]))
            rgb, grey = im.convert("RGB"), im.convert("L")
            tag = f"{k}-{j}"
            plain += [_write(d, f"q75-{tag}.jpg", rgb, "JPEG", quality=75),
                      _write(d, f"q95p-{tag}.jpg", rgb, "JPEG", quality=95, subsampling=0, progressive=True),
                      _write(d, f"grey-{tag}.jpg", grey, "JPEG", quality=85)]
            alpha = Image.fromarray(np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1)), "L")
            rgba = rgb.copy()
            rgba.putalpha(alpha)
            other += [_write(d, f"rot6-{tag}.jpg", rgb, "JPEG", exif=_exif(6)),
                      _write(d, f"rot3-{tag}.jpg", grey, "JPEG", exif=_exif(3)),
                      _write(d, f"xmp8-{tag}.jpg", rgb, "JPEG",
                             xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="8"/></rdf:RDF></x:xmpmeta>'),
                      _write(d, f"cmyk-{tag}.jpg", rgb.convert("CMYK"), "JPEG"),
                      _write(d, f"rgb-{tag}.png", rgb, "PNG"),
                      _write(d, f"grey-{tag}.png", grey, "PNG"),
                      _write(d, f"rgba-{tag}.png", rgba, "PNG"),
                      _write(d, f"pal-{tag}.png", rgb.convert("P"), "PNG", transparency=0),
                      _write(d, f"rot5-{tag}.png", rgb, "PNG", exif=_exif(5)),
                      _write(d, f"i16-{tag}.png", Image.fromarray(np.asarray(grey).astype(np.uint16) * 257), "PNG")]
    other.append(_write(d, "tiny.png", Image.fromarray(photos[0][:2, :5]), "PNG"))  # below 3x3: no sharpness
    return {"plain": plain, "other": other}


def _jpegs(corpus: dict[str, list[str]]) -> list[str]:
    return corpus["plain"] + [p for p in corpus["other"] if p.endswith(".jpg")]


@pytest.mark.parametrize(("mode", "draft"), [(None, None), ("L", 32), (None, 128), ("L", 64), ("RGB", 64), ("RGB", 128)])
def test_quick_jpeg_equals_pillow_or_declines(corpus: dict[str, list[str]], mode: str | None, draft: int | None) -> None:
    for path in _jpegs(corpus):
        data = Path(path).read_bytes()
        quick = decode.quick_jpeg(data, mode, draft, 10**9)
        # EXIF, XMP and Adobe (CMYK) files are declined: Pillow's parser reads their orientation and colour transform
        assert (quick is not None) == (path in corpus["plain"]), path
        if quick is not None:
            im = Image.open(io.BytesIO(data))
            if mode or draft:
                im.draft(mode, (draft, draft) if draft else None)  # type: ignore[arg-type]
            im.load()
            assert (quick.mode, quick.size) == (im.mode, im.size) and quick.tobytes() == im.tobytes(), path
    assert decode.quick_jpeg(data[: len(data) // 2], mode, draft, 10**9) is None  # truncated: the usual path reports it
    assert decode.quick_jpeg(data, mode, draft, max_pixels=16) is None  # the bomb guard is the usual path's


def test_properties_equal_reference(corpus: dict[str, list[str]], tmp_path: Path) -> None:
    paths = corpus["plain"] + corpus["other"]
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(Path(paths[0]).read_bytes()[:300])
    out = properties_batch({"path": np.array([*paths, str(bad)], dtype=object)})
    got = np.stack([out[k] for k in MEASURED], axis=1)
    want = np.array([ref.properties(p) for p in paths])
    assert np.isnan(got[-1]).all()
    assert np.isnan(want[:, 3]).sum() == 1  # the 2x5 image has no sharpness, in both
    np.testing.assert_allclose(got[:-1], want, rtol=1e-12, atol=1e-9, equal_nan=True)


def test_measure_stack_equals_measure(photos: dict[str, np.ndarray]) -> None:
    for h, w in ((1, 7), (3, 3), (31, 47), (128, 96), (2000, 1500)):  # the last beyond int64 moments
        stack = np.stack([np.ascontiguousarray(np.resize(p, (h, w, 3))) for p in photos.values()])
        got = measure_stack(stack)
        want = np.array([ref.measure(Image.fromarray(a)) for a in stack])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("side", [32, 64])
def test_thumbnails_equal_reference_bit_for_bit(corpus: dict[str, list[str]], side: int) -> None:
    paths = corpus["plain"] + corpus["other"]
    out = thumbnails_batch({"path": np.array(paths, dtype=object)}, side)
    assert out["ok"].all()
    for j, p in enumerate(paths):
        assert np.array_equal(out["vector"][j].reshape(side, side), ref.thumbnail(p, side)), p


@pytest.mark.parametrize("draft", [True, False])
def test_hash_pass_equals_reference(corpus: dict[str, list[str]], draft: bool) -> None:
    options = HashOptions(draft=draft)
    for p in corpus["plain"] + corpus["other"]:
        row, gray, stored = extract_one(p, None, None, options)
        want_row, want_gray, want_stored = ref.extract(p, options)
        assert {k: row[k] for k in want_row} == want_row, p
        assert gray is not None and (gray.mode, gray.size, gray.tobytes()) == (want_gray.mode, want_gray.size, want_gray.tobytes())  # type: ignore[union-attr]
        assert (stored is None) == (want_stored is None), p
        if stored is not None:
            assert stored.tobytes() == want_stored.tobytes()  # type: ignore[union-attr]


def test_pixel_digests_equal_reference(corpus: dict[str, list[str]], tmp_path: Path) -> None:
    paths = corpus["plain"] + corpus["other"]
    missing = str(tmp_path / "gone.jpg")
    got = pixel_digest_batch({"path": np.array([*paths, missing], dtype=object)})["pixel_digest"]
    want = [ref.extract(p, HashOptions(draft=False))[0]["pixel_digest"] for p in paths]
    assert list(got[:-1]) == want and all(len(x) == 32 for x in want) and got[-1] == b""
    # and the hash pass fills the same column only for images it did not draft
    hashed = extract_batch({"path": np.array(paths, dtype=object)})["pixel_digest"]
    assert all(h in (b"", w) for h, w in zip(hashed, want))


def test_confirm_pass_measures_tiny_jpegs_from_its_decode(corpus: dict[str, list[str]]) -> None:
    paths = corpus["plain"] + corpus["other"]
    out = digests_and_properties_batch({"path": np.array(paths, dtype=object)})
    assert list(out["pixel_digest"]) == [ref.extract(p, HashOptions(draft=False))[0]["pixel_digest"] for p in paths]
    measured = ~np.isnan(out["properties"][:, 0])
    tiny = [p in corpus["plain"] and max(Image.open(p).size) <= ANALYSIS_SIDE for p in paths]
    assert measured.tolist() == tiny and 0 < sum(tiny) < len(paths)
    want = np.array([ref.properties(p) for p, t in zip(paths, tiny) if t])
    np.testing.assert_allclose(out["properties"][measured], want, rtol=1e-12, atol=1e-9)


def test_properties_stage_reads_what_the_confirm_stage_measured(corpus: dict[str, list[str]], tmp_path: Path) -> None:
    """Through a real cache: after the confirm stage's digests, only images it could not measure are decoded again,
    and every property equals a run without a cache."""
    import shutil

    for split in ("train", "val"):
        (tmp_path / split / "x").mkdir(parents=True)
    paths = corpus["plain"] + corpus["other"]
    for j, p in enumerate(paths):
        shutil.copy(p, tmp_path / ("train" if j % 4 else "val") / "x" / Path(p).name)
    dataset = scan([tmp_path / "train", tmp_path / "val"])
    with FeatureCache(tmp_path / "cache") as cache:
        table = compute_features(dataset, cache=cache, workers=1)
        rows = np.flatnonzero(table.ok).tolist()
        digests = full_pixel_digests(dataset, table, rows, options=HashOptions(), cache=cache, workers=1)
        props, computed = compute_properties(dataset.records, dataset.arrays, rows, table["digest"], cache=cache, workers=1)
    names = [Path(r.path).name for r in dataset.records]
    tiny = sum(1 for p in paths if p in corpus["plain"] and max(Image.open(p).size) <= ANALYSIS_SIDE)
    assert len(rows) == len(paths) and computed == len(paths) - tiny
    want = {Path(p).name: ref.extract(p, HashOptions(draft=False))[0]["pixel_digest"] for p in paths}
    assert [digests[i] for i in rows] == [want[n] for n in names]
    fresh, _ = compute_properties(dataset.records, dataset.arrays, rows, table["digest"], cache=None, workers=1)
    for k in MEASURED:
        np.testing.assert_allclose(props[k], fresh[k], rtol=1e-12, atol=1e-9, equal_nan=True)


def test_saturation_table_is_pillows_hsv_over_every_colour() -> None:
    from splitaudit.features.properties import saturation_table

    every = np.arange(2**24, dtype=np.uint32)
    rgb = np.stack([every >> 16, (every >> 8) & 255, every & 255], axis=1).astype(np.uint8)
    want = np.asarray(Image.fromarray(rgb.reshape(4096, 4096, 3), "RGB").convert("HSV"))[..., 1].ravel()
    top, low = rgb.max(axis=1).astype(np.intp), rgb.min(axis=1)
    assert np.array_equal(saturation_table()[(top << 8) | low], want)


def test_truncated_jpeg_headers_are_findings_not_crashes(photos: dict[str, np.ndarray], tmp_path: Path) -> None:
    """Every prefix of a small real JPEG's header (a file cut short while copying) is declined by the quick header
    reader and reported by the usual path as a decode failure: never an exception out of the hash pass."""
    buf = io.BytesIO()
    Image.fromarray(next(iter(photos.values()))[:32, :32]).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    sos = data.index(b"\xff\xda")
    for cut in range(2, sos + 4):
        prefix = data[:cut]
        assert decode.plain_jpeg(prefix) is None
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(prefix)
        row = extract_one(str(path), None, None, HashOptions())[0]
        assert row["status"] != decode.OK, cut
    assert decode.plain_jpeg(data) == ("RGB", 32, 32)
