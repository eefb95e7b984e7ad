"""Copies cut to another shape than their source (issue #11): thumbnails are squashed squares, so a square crop of
a 4:3 photo is its middle stretched by 4/3 against the source's thumbnail, which no zoom, shift or rotation maps
onto it. The verifier registers such pairs in their shared geometry, from each image's shape as shown."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from splitaudit.neighbors.verify import relative_aspect, screen, verify_pairs

#: A region in source pixels (4:3) and the thumbnails' side for photos.
RW, RH, THUMB = 160, 120, 64


def _regions(photos: dict[str, np.ndarray], count: int) -> list[np.ndarray]:
    """Non-overlapping 4:3 regions of real photos with texture (grey spread > 20)."""
    out = []
    for p in photos.values():
        h, w = p.shape[:2]
        for y in range(0, h - RH + 1, RH):
            for x in range(0, w - RW + 1, RW):
                r = p[y : y + RH, x : x + RW]
                if r.std() > 20:
                    out.append(np.ascontiguousarray(r[..., :3]) if r.ndim == 3 else np.repeat(r[..., None], 3, 2))
    rng = np.random.default_rng(0)
    return [out[i] for i in rng.permutation(len(out))[:count]]


def _thumb(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def test_a_crop_to_another_shape_registers_in_the_shared_geometry(photos) -> None:  # type: ignore[no-untyped-def]
    """Square centre crops and 16:9 crops of 4:3 regions: with each image's shape they register at zoom 1 and
    score as copies; as squashed squares they do not (the score of a stretched copy)."""
    regions = _regions(photos, 24)
    crops = [r[:, (RW - RH) // 2 : (RW - RH) // 2 + RH] if i % 2 == 0 else r[(RH - 90) // 2 : (RH - 90) // 2 + 90]
             for i, r in enumerate(regions)]
    thumbs = np.stack([_thumb(x) for x in regions + crops])
    shape = np.array([RW / RH] * len(regions) + [c.shape[1] / c.shape[0] for c in crops])
    n = len(regions)
    a, b = np.arange(n), np.arange(n, 2 * n)
    rel = relative_aspect(shape, np.arange(2 * n) < n)
    assert rel is not None and np.allclose(rel[:n], 1.0) and np.allclose(rel[n::2], 0.75)
    got = verify_pairs(thumbs, a, b, start=screen(thumbs, a, b, aspect=rel), aspect=rel)
    squashed = verify_pairs(thumbs, a, b, start=screen(thumbs, a, b))
    assert np.median(got.score) >= 0.99 and (got.score >= 0.98).mean() >= 0.9, np.round(np.sort(got.score)[:6], 3)
    assert np.median(np.abs(got.scale - 1.0)) <= 0.01, np.round(got.scale, 3)
    assert np.median(squashed.score) <= 0.95, np.round(np.sort(squashed.score)[-6:], 3)


def test_relative_aspect_is_none_where_every_image_has_the_training_shape() -> None:
    same = np.array([4 / 3, 500 / 375, 640 / 480, 4032 / 3024, np.nan])  # sizes rounded to whole pixels; one unread
    assert relative_aspect(same, np.ones(5, bool)) is None
    # the training split's shape is the reference, however many eval images have another
    mixed = np.array([4 / 3] * 3 + [1.0] * 5)
    rel = relative_aspect(mixed, np.arange(8) < 3)
    assert rel is not None and np.allclose(rel, [1, 1, 1] + [0.75] * 5)


def test_copies_cut_to_another_shape_are_found(tmp_path: Path, photos) -> None:  # type: ignore[no-untyped-def]
    """End to end from files: 4:3 training photos; validation copies cut square, 16:9 or 3:4 (one of them stored
    turned, with an EXIF orientation that shows it upright: the shape is the one shown); distinct 4:3 and square
    images. Every copy is found, and nothing else."""
    import splitaudit

    regions = _regions(photos, 72)
    train, val = tmp_path / "train" / "a", tmp_path / "val" / "a"
    train.mkdir(parents=True)
    val.mkdir(parents=True)
    for i, r in enumerate(regions[:56]):
        Image.fromarray(r).save(train / f"t{i:03d}.png")
    cuts = {"square": (20, 0, 120, 120), "16:9": (0, 15, 160, 90), "3:4": (35, 0, 90, 120)}
    truth = {}
    for i in range(18):
        kind = list(cuts)[i % 3]
        x, y, w, h = cuts[kind]
        c = Image.fromarray(np.ascontiguousarray(regions[i][y : y + h, x : x + w]))
        name = f"c{i:03d}.jpg"
        if i == 2:  # the 3:4 crop stored turned, shown upright by its EXIF orientation (6: turn 90 degrees clockwise)
            exif = Image.Exif()
            exif[0x0112] = 6
            c.transpose(Image.Transpose.ROTATE_90).save(val / name, quality=90, exif=exif)
        else:
            c.save(val / name, quality=90)
        truth[name] = f"t{i:03d}.png"
    for i, r in enumerate(regions[56:]):  # distinct images, 4:3 and square
        Image.fromarray(r if i % 2 else np.ascontiguousarray(r[:, 20:140])).save(val / f"d{i:03d}.jpg", quality=90)
    report = splitaudit.audit(str(tmp_path / "train"), str(tmp_path / "val"), cache=False, backbone="none",
                              select=("exact-duplicates", "pixel-duplicates", "near-duplicates"))
    found, other = set(), []
    for f in report.findings:
        if len(f.images) == 2:
            a, b = (Path(im.path).name for im in f.images)
            (found.add(b) if truth.get(b) == a else other.append((a, b, f.check)))
    assert found == set(truth), sorted(set(truth) - found)
    assert not other, other
