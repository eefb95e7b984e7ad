"""Local features with RANSAC as the registration's second start, for photos (issue #11): real photo windows at
112 px, crops the dense search does not reach (25% from a corner), neighbouring crops that keypoints match well but
that are other framings, and the stage end to end from a user's folders."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from splitaudit.neighbors import register as rg
from splitaudit.neighbors.keypoints import KEY_SIDE, KeyImages, keypoint_starts
from splitaudit.neighbors.verify import find_copies, keypoint_registration

OUT = 112  # the photos' side
THUMB = 64  # their thumbnails' (features.thumbnails.PHOTO)


def window(photo: np.ndarray, cx: float, cy: float, region: float, *, zoom: float = 1.0,
           shift: tuple[float, float] = (0.0, 0.0), angle: float = 0.0) -> np.ndarray:
    """The ``region``-px square of ``photo`` around (cx, cy) (moved by ``shift`` regions), zoomed and turned by
    ``angle`` degrees, as OUT px."""
    up = 4 * OUT
    k = region / zoom / up
    c = (up - 1) / 2
    t = np.radians(angle)
    r = k * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    centre = np.array([cx + shift[0] * region, cy + shift[1] * region])
    m = np.hstack([r, (centre - r @ np.array([c, c]))[:, None]])
    hi = cv2.warpAffine(photo, m, (up, up), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(hi, (OUT, OUT), interpolation=cv2.INTER_AREA)


def corner_crop(photo: np.ndarray, cx: float, cy: float, region: float, sx: int = 1, sy: int = 1) -> np.ndarray:
    """25% cut off from one corner: the remaining 75% of the window, grown back to OUT px."""
    return window(photo, cx, cy, region, zoom=1 / 0.75, shift=(sx * 0.125, sy * 0.125))


def thumbs_of(images: np.ndarray) -> np.ndarray:
    return np.stack([cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
                     for im in images])


def keys_of(images: np.ndarray):  # type: ignore[no-untyped-def]
    """``keys(rows)`` as the check context makes it, over in-memory images (the same batch function)."""
    got = KeyImages(max_pixels=10**8)({"path": np.full(len(images), None, dtype=object),
                                       "pixels": np.array(list(images) + [None], dtype=object)[:-1]})
    return lambda rows: (got["key"][rows], got["ok"][rows])


@pytest.fixture(scope="module")
def windows(photos):  # type: ignore[no-untyped-def]
    return photo_windows(photos)


def photo_windows(photos):  # type: ignore[no-untyped-def]
    """(images, where): 112-px windows of 96-px regions of four photos, 10 each, textured, not overlapping."""
    imgs, where = [], []
    for name in ("astronaut", "coffee", "chelsea", "china"):
        p = photos[name]
        h, w = p.shape[:2]
        n = 0
        for y in range(40, h - 140, 96):
            for x in range(40, w - 140, 96):
                if n < 10 and p[y : y + 96, x : x + 96].std() >= 20:
                    imgs.append(window(p, x + 48, y + 48, 96))
                    where.append((name, x + 48.0, y + 48.0))
                    n += 1
    return np.stack(imgs), where


def test_too_far_allows_what_a_crop_needs_and_no_more() -> None:
    side = rg.SIDE
    p = np.array([
        [1 / 0.75, 0.0, 6.0, 6.0],  # 25% from a corner: inside the source
        [1 / 0.75, 0.0, -6.0, 6.5],  # the same, a little shifted
        [1.0, 0.0, 5.0, 5.0],  # a shift within MAX_OFFSET
        [1.0, 0.0, 12.0, 0.0],  # a neighbouring crop: 25% of the side at zoom 1
        [1.07, 1.3, -3.8, -8.2],  # zoomed 7% and 19% off: neither inside nor within MAX_OFFSET
        [0.75, 0.0, -6.0, -6.0],  # the source seen from the crop: the crop inside it
    ])
    assert rg.too_far(p, side).tolist() == [False, False, False, True, True, False]


def test_keypoints_recover_a_corner_crop_and_its_mirror(photos, windows) -> None:  # type: ignore[no-untyped-def]
    imgs, where = windows
    copies, src, mirrored = [], [], []
    for s in (0, 10, 20, 30):
        name, cx, cy = where[s]
        c = corner_crop(photos[name], cx, cy, 96, -1, 1)
        for flip in (False, True):
            copies.append(np.ascontiguousarray(c[:, ::-1]) if flip else c)
            src.append(s)
            mirrored.append(flip)
    images = np.concatenate([imgs, np.stack(copies)])
    keys = keys_of(images)
    b = len(imgs) + np.arange(len(copies))
    found, mir, params, inliers = keypoint_starts(keys, np.array(src), b, rg.SIDE)
    assert found.sum() >= 6, inliers
    assert (mir[found] == np.array(mirrored)[found]).all()
    # b shows a's lower-left 75% grown by 1/0.75: its centre 12.5% of the side left of and below a's
    want = np.array([1 / 0.75, 0.0, -0.125 * rg.SIDE, 0.125 * rg.SIDE])
    for row, flip in zip(params[found], np.array(mirrored)[found]):
        k, theta, dx, dy = row
        assert abs(k - want[0]) < 0.04 and abs(theta) < 1.5, row
        # a mirrored b is registered flipped back: the offset is the unflipped one
        assert abs(dx - want[2]) < 1.0 and abs(dy - want[3]) < 1.0, (row, flip)
    # deterministic, and the same on one thread as on two
    again = keypoint_starts(keys, np.array(src), b, rg.SIDE, workers=1)
    for x, y in zip((found, mir, params, inliers), again):
        np.testing.assert_array_equal(x, y)


def test_keypoint_starts_score_corner_crops_high_and_neighbouring_crops_zero(photos, windows) -> None:  # type: ignore[no-untyped-def]
    """A neighbouring crop matches by keypoints as well as a copy does (most of it is the same pixels) but lies
    25-40% off at zoom 1: the registration scores it 0 from any start."""
    imgs, where = windows
    extra, src, kind = [], [], []
    for s in (1, 11, 21, 31):
        name, cx, cy = where[s]
        extra.append(corner_crop(photos[name], cx, cy, 96, 1, -1))
        src.append(s)
        kind.append("copy")
        extra.append(window(photos[name], cx, cy, 96, shift=(0.3, 0.1)))
        src.append(s)
        kind.append("neighbour")
    images = np.concatenate([imgs, np.stack(extra)])
    b = len(imgs) + np.arange(len(extra))
    rows, reg = keypoint_registration(thumbs_of(images), keys_of(images), np.array(src), b)
    kinds = np.array(kind)[rows]
    assert (kinds == "neighbour").sum() >= 3, "keypoints match neighbouring crops: the test would prove nothing"
    assert (reg.score[kinds == "neighbour"] == 0).all(), reg.score
    assert (reg.score[kinds == "copy"] > 0.97).sum() >= 3, reg.score[kinds == "copy"]


#: Copies the dense search finds in part (registered, scoring under the cut from its own start): rotated crops and
#: crops from a corner.
HARD = {
    "rotate 7 + crop 12%": {"zoom": 1 / 0.88, "angle": 7.0},
    "rotate 10 + crop 10%": {"zoom": 1 / 0.9, "angle": -10.0},
    "crop 20% corner": {"zoom": 1 / 0.8, "shift": (0.1, 0.1)},
    "crop 25% corner": {"zoom": 1 / 0.75, "shift": (-0.125, 0.125)},
}


def test_find_copies_finds_more_rotated_and_cropped_copies_with_keypoints(photos, windows) -> None:  # type: ignore[no-untyped-def]
    """End to end over arrays: rotated crops and corner crops of 26 windows, with the key images given (and the
    calibration's null given the same second opinion) and without; neighbouring crops and distinct windows are
    copies neither way."""
    imgs, where = windows
    extra, truth = [], []
    sources = [s for s in range(len(imgs)) if s % 10 not in (8, 9, 3)]
    for i, s in enumerate(sources):
        name, cx, cy = where[s]
        extra.append(window(photos[name], cx, cy, 96, **list(HARD.values())[i % len(HARD)]))
        truth.append(s)
    for s in (3, 13, 23, 33):
        name, cx, cy = where[s]
        extra.append(window(photos[name], cx, cy, 96, shift=(-0.1, 0.3)))
    images = np.concatenate([imgs, np.stack(extra)])
    split = np.zeros(len(images), np.int64)
    split[len(imgs) :] = 1
    split[[8, 18, 28, 38]] = 1  # distinct eval windows
    thumbs = thumbs_of(images)
    copies = {}
    for label, keys in (("with", keys_of(images)), ("without", None)):
        m = find_copies(thumbs, split, keys=keys)
        copies[label] = {(int(a), int(b)) for a, b, c in zip(m.a, m.b, m.copy) if c}
    planted = {(s, len(imgs) + i) for i, s in enumerate(truth)}
    assert copies["with"] <= planted and copies["without"] <= planted, (copies, planted)
    assert copies["without"] <= copies["with"], copies
    # 25 against 24 here (23 against 19 before the twenty-fifth session: the dense registration of each pixel
    # search's nearest window now finds most of what the keypoints found)
    assert len(copies["with"]) > len(copies["without"]), (len(copies["with"]), len(copies["without"]))


def write_corner_crops(photos, windows, root):  # type: ignore[no-untyped-def]
    """The windows as a user's folders (train PNG, a few distinct ones in val as JPEG) with four copies in val,
    each turned by 7 degrees and cropped by 12% (or from a corner by 20%); returns (train folder, val folder, {copy
    file: its source's file})."""
    imgs, where = windows
    tr, ev = root / "train", root / "val"
    os.makedirs(tr)
    os.makedirs(ev)
    for i, im in enumerate(imgs):
        if i % 10 == 9:
            Image.fromarray(im).save(ev / f"distinct{i:02d}.jpg", quality=90)
        else:
            Image.fromarray(im).save(tr / f"t{i:02d}.png")
    crops = {}
    for s in (4, 14, 24, 34):
        name, cx, cy = where[s]
        kind = HARD["rotate 7 + crop 12%"] if s % 20 == 4 else HARD["crop 20% corner"]
        Image.fromarray(window(photos[name], cx, cy, 96, **kind)).save(ev / f"crop{s:02d}.jpg", quality=85)
        crops[f"crop{s:02d}.jpg"] = f"t{s:02d}.png"
    return tr, ev, crops


def test_a_corner_crop_is_found_from_a_users_folders(photos, windows, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Through the check context: JPEG files of 112 px get key images (KEY_FROM), read where they lie."""
    import splitaudit

    tr, ev, crops = write_corner_crops(photos, windows, tmp_path)
    report = splitaudit.audit(str(tr), str(ev), cache=False, backbone="none", select=("near-duplicates",))
    found = {os.path.basename(f.images[1].path): os.path.basename(f.images[0].path)
             for f in report.findings if f.check == "near-duplicates"}
    assert set(found.items()) <= set(crops.items()), found
    assert len(found) >= 3, found
    assert KEY_SIDE >= OUT  # the key images are not smaller than these photos


def test_no_keypoints_option_turns_the_second_opinion_off(photos, windows, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``keypoints=False`` (``--no-keypoints``): the run gives the copy stage no key images; with the default, the
    112-px files get theirs, decoded from the files as the thumbnails are."""
    from splitaudit.options import Options
    from splitaudit.run import open_run

    tr, ev, _ = write_corner_crops(photos, windows, tmp_path)
    for on in (True, False):
        with open_run((str(tr), str(ev)), options=Options(cache=False, backbone="none", keypoints=on)) as ctx:
            thumbs, ok = ctx.thumbnails
            keys = ctx._keys(ok)
            if not on:
                assert keys is None
                continue
            rows = np.arange(3)
            images, good = keys(rows)
            assert good.all() and images.shape == (3, KEY_SIDE, KEY_SIDE)
            # the key image is the same picture as the thumbnail (both squashed grey views of the file)
            small = np.stack([cv2.resize(im, thumbs.shape[1:], interpolation=cv2.INTER_AREA) for im in images])
            assert np.abs(small.astype(np.float64) - thumbs[rows]).mean() < 4.0


def test_the_nulls_second_opinion_spares_pairs_already_over_every_cut(photos, windows, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The calibration's null gets the keypoints' second opinion as the decisions do: a sampled training image's best
    pair at KEYS_FROM or more, but not one at CEILING, which no cut can refuse (exact copies inside train); rotated
    crops inside train (scoring under CEILING from the dense search) still get it."""
    from splitaudit.neighbors import verify
    from splitaudit.neighbors.calibrate import calibrate

    imgs, where = windows
    dups = [1, 11, 21, 31]
    crops = [2, 12, 22, 32]
    extra = [imgs[s] for s in dups]
    for s in crops:
        name, cx, cy = where[s]
        extra.append(window(photos[name], cx, cy, 96, **HARD["rotate 7 + crop 12%"]))
    images = np.concatenate([imgs, np.stack(extra)])
    n = len(imgs)
    given: list[tuple[int, int]] = []
    real = verify.keypoint_registration

    def recorded(thumbs, keys, a, b, **kw):  # type: ignore[no-untyped-def]
        given.extend(zip(np.asarray(a).tolist(), np.asarray(b).tolist()))
        return real(thumbs, keys, a, b, **kw)

    monkeypatch.setattr(verify, "keypoint_registration", recorded)
    calibrate(thumbs_of(images), np.arange(len(images)), keys=keys_of(images), seed=0)
    pairs = {frozenset(p) for p in given}
    assert not pairs & {frozenset((s, n + i)) for i, s in enumerate(dups)}, given
    assert pairs & {frozenset((s, n + len(dups) + i)) for i, s in enumerate(crops)}, given
