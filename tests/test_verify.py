"""The copy stage (issue #11) on real photos and Fashion-MNIST: candidates, registration, verification, calibration.

Copies are made here from the photos themselves (a window of the photo rendered again, shifted / zoomed / rotated,
then framed, re-graded, greyed, mirrored, JPEG-encoded), independently of the calibration's own transforms.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")

from splitaudit.errors import InvalidParameterError
from splitaudit.neighbors import candidates
from splitaudit.neighbors import register as rg
from splitaudit.neighbors import verify
from splitaudit.neighbors.calibrate import TAIL_FROM, calibrate, tail_cut
from splitaudit.neighbors.candidates import candidate_pairs, csls_knn, pixel_vectors
from splitaudit.neighbors.register import PLAIN_DATASET, plain_share
from splitaudit.neighbors.verify import CopyMatches, decide, find_copies, pixel_agreement, screen, verify_pairs

SIDE = 32


def window(photo: np.ndarray, cx: float, cy: float, region: float, *, shift: tuple[float, float] = (0.0, 0.0),
           zoom: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """The ``region``-px square of ``photo`` around (cx, cy) as a SIDE-px image; shift in output pixels."""
    up = 4 * SIDE
    k = region / zoom / up
    t = np.radians(angle)
    r = k * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    c = (up - 1) / 2
    centre = np.array([cx + shift[0] * region / SIDE, cy + shift[1] * region / SIDE])
    m = np.hstack([r, (centre - r @ np.array([c, c]))[:, None]])
    hi = cv2.warpAffine(photo, m, (up, up), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(hi, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def jpeg(img: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def framed(img: np.ndarray, f: float, colour: int) -> np.ndarray:
    inner = int(round(SIDE * (1 - 2 * f)))
    out = np.full_like(img, colour)
    o = (SIDE - inner) // 2
    out[o : o + inner, o : o + inner] = cv2.resize(img, (inner, inner), interpolation=cv2.INTER_AREA)
    return out


def graded(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32) / 255
    return np.clip(255 * (x**0.85 * np.array([1.15, 0.95, 0.85]) + 0.04), 0, 255).astype(np.uint8)


def grey(img: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(Image.fromarray(img).convert("L"))[..., None], 3, axis=2)


#: name -> (window arguments, edit of the 32-px result)
COPIES = {
    "shift 2px": ({"shift": (2.0, -1.0)}, None),
    "shift 4px": ({"shift": (-4.0, 0.0)}, None),
    "zoom in 10%": ({"zoom": 1.1}, None),
    "zoom out 10%": ({"zoom": 1 / 1.1}, None),
    "crop 15%": ({"zoom": 1 / 0.85, "shift": (2.4, 0.0)}, None),
    "rotate 5": ({"angle": 5.0}, None),
    "frame 8%": ({}, lambda im: framed(im, 0.08, 255)),
    "letterbox": ({}, lambda im: np.concatenate([np.zeros_like(im[:4]), im[4:-4], np.zeros_like(im[:4])])),
    "colour grade": ({}, graded),
    "greyscale": ({}, grey),
    "jpeg q50": ({}, lambda im: jpeg(im, 50)),
    "mirror": ({}, lambda im: np.ascontiguousarray(im[:, ::-1])),
    "mirror + shift 1 + jpeg q70": ({"shift": (1.0, 1.0)}, lambda im: jpeg(np.ascontiguousarray(im[:, ::-1]), 70)),
}


def _centres(photo: np.ndarray, region: int, count: int) -> list[tuple[float, float]]:
    """Centres of non-overlapping, textured regions (grey std >= 20), 0.3 regions from the edges."""
    out = []
    h, w = photo.shape[:2]
    for y in range(int(0.3 * region), h - int(1.3 * region), region):
        for x in range(int(0.3 * region), w - int(1.3 * region), region):
            if photo[y : y + region, x : x + region].std() >= 20:
                out.append((x + region / 2, y + region / 2))
            if len(out) == count:
                return out
    return out


@pytest.fixture(scope="module")
def tiles() -> tuple[np.ndarray, list[tuple[str, float, float]], dict[str, np.ndarray]]:
    """32-px renders of 64-px regions of four photos (12 each), and where they came from."""
    from conftest import _load_photo

    photos = {n: _load_photo(n) for n in ("astronaut", "coffee", "chelsea", "china")}
    imgs, where = [], []
    for name, p in photos.items():
        for cx, cy in _centres(p, 64, 12):
            imgs.append(window(p, cx, cy, 64))
            where.append((name, cx, cy))
    return np.stack(imgs), where, photos


@pytest.fixture(scope="module")
def calibration(tiles):  # type: ignore[no-untyped-def]
    imgs, _, _ = tiles
    return calibrate(imgs, np.arange(len(imgs)), null_sample=48, positive_sample=26, seed=0)


def test_registration_recovers_the_transform(tiles) -> None:  # type: ignore[no-untyped-def]
    imgs, where, photos = tiles
    name, cx, cy = where[3]
    src = imgs[3]
    cases = [
        (window(photos[name], cx, cy, 64, shift=(2.0, 0.0)), False, 1.0, 2.0 / SIDE),
        (np.ascontiguousarray(window(photos[name], cx, cy, 64)[:, ::-1]), True, 1.0, 0.0),
        (window(photos[name], cx, cy, 64, zoom=1.1), False, 1.1, 0.0),
    ]
    copies = np.stack([c[0] for c in cases])
    reg = verify_pairs(np.concatenate([src[None], copies]), np.zeros(3, np.int64), np.arange(1, 4))
    for i, (_, mirrored, scale, dx) in enumerate(cases):
        assert reg.score[i] > 0.95
        assert bool(reg.mirrored[i]) is mirrored
        assert abs(reg.scale[i] - scale) < 0.04
        # b's centre sits at a's centre plus the shift (the copy's window moved right: its content moves left)
        assert abs(abs(reg.dx[i]) - dx) < 0.5 / SIDE


def test_copies_score_above_the_cut_and_distinct_tiles_below(tiles, calibration) -> None:  # type: ignore[no-untyped-def]
    imgs, where, photos = tiles
    sources = [0, 13, 26, 39]  # one region of each photo
    copies, names, src = [], [], []
    for s in sources:
        name, cx, cy = where[s]
        for label, (kw, edit) in COPIES.items():
            im = window(photos[name], cx, cy, 64, **kw)
            copies.append(edit(im) if edit else im)
            names.append(label)
            src.append(s)
    allimgs = np.concatenate([imgs, np.stack(copies)])
    reg = verify_pairs(allimgs, np.array(src), len(imgs) + np.arange(len(copies)))
    pixels = pixel_agreement(reg.mad, reg.spread, reg.still, reg.score, calibration.similar_cut)
    copy, _ = decide(reg.score, np.zeros(len(names), bool), calibration, pixels=pixels)
    missed = [(n, round(float(v), 3)) for n, v, c in zip(names, reg.score, copy) if not c]
    # The cut follows the null (1e-3 false pairs per image; no fixed ceiling under it): 70% of the copies are
    # confirmed (by their score or their pixels' agreement), 95% at least in the similar-images band, and every
    # transform reaches that band on 3 of 4 photos
    assert len(missed) <= 0.3 * len(names), (calibration.copy_cut, missed)
    unseen = [(n, round(float(v), 3)) for n, v in zip(names, reg.score) if v < calibration.similar_cut]
    assert len(unseen) <= 0.05 * len(names), (calibration.similar_cut, unseen)
    for label in COPIES:
        assert sum(n == label for n, _ in unseen) <= 1, (label, unseen)
    # distinct tiles of the same photo (other regions: the same texture, the same light) stay below the cut
    a, b = [], []
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            if where[i][0] == where[j][0]:
                a.append(i)
                b.append(j)
    neg = verify_pairs(imgs, np.array(a), np.array(b))
    assert (neg.score < calibration.copy_cut).mean() >= 0.99, np.sort(neg.score)[-5:]
    assert not pixel_agreement(neg.mad, neg.spread).any(), np.sort(neg.mad)[:5]


def test_neighbouring_crops_are_not_copies(tiles, calibration) -> None:  # type: ignore[no-untyped-def]
    """A window moved by 25-40% of its side overlaps the original by most of its area but is another framing."""
    imgs, where, photos = tiles
    near, src = [], []
    for s in (1, 14, 27, 40):
        name, cx, cy = where[s]
        for f, ang in ((0.25, 0.0), (0.3, 1.6), (0.4, 3.9)):
            near.append(window(photos[name], cx + 64 * f * np.cos(ang), cy + 64 * f * np.sin(ang), 64))
            src.append(s)
    allimgs = np.concatenate([imgs, np.stack(near)])
    reg = verify_pairs(allimgs, np.array(src), len(imgs) + np.arange(len(near)))
    assert (reg.score < calibration.copy_cut).all(), reg.score


def fmnist() -> tuple[np.ndarray, np.ndarray] | None:
    import gzip

    path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    if not os.path.exists(path):
        return None
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    x = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:400]
    with gzip.open(path.replace("images-idx3", "labels-idx1"), "rb") as fh:
        y = np.frombuffer(fh.read(), np.uint8, offset=8)[:400]
    return x, y


def garment_look_alikes():  # type: ignore[no-untyped-def]
    """Fashion-MNIST test garments as 32-px thumbnails, and each one registered against its nearest other garment
    (pixel view), leaving out pairs within 8 grey levels at 28 px (real duplicates inside the test set)."""
    data = fmnist()
    if data is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    x, _ = data
    thumbs = np.stack([np.repeat(cv2.resize(a, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2) for a in x])
    vec = pixel_vectors(thumbs)
    _, ids, _, _ = csls_knn(vec, vec, 2)
    nn = np.where(ids[:, 0] == np.arange(len(vec)), ids[:, 1], ids[:, 0])
    keep = np.abs(x.astype(np.int16) - x[nn]).mean(axis=(1, 2)) > 8
    # registered as a run registers them: garments are objects on a plain background
    plain = plain_share(thumbs, np.arange(len(thumbs))) >= PLAIN_DATASET
    return thumbs, verify_pairs(thumbs, np.arange(len(thumbs))[keep], nn[keep], plain=plain)


def test_distinct_garments_are_not_copies_and_shifted_ones_are() -> None:
    """Fashion-MNIST: look-alike garments of one class (each one's nearest other garment) are no copies; the same
    garment shifted by 2 px, or mirrored and JPEG-encoded, is."""
    thumbs, neg = garment_look_alikes()
    cal = calibrate(thumbs, np.arange(len(thumbs)), null_sample=60, positive_sample=26, seed=0)
    assert cal.plain_background and cal.plain_share >= 0.9
    assert (neg.score >= cal.copy_cut).mean() <= 0.01, (cal, np.sort(neg.score)[-5:])
    shifted = np.roll(thumbs[:20], 2, axis=2)
    mirrored = np.stack([jpeg(np.ascontiguousarray(t[:, ::-1]), 70) for t in thumbs[20:40]])
    both = np.concatenate([thumbs[:40], shifted, mirrored])
    pos = verify_pairs(both, np.arange(40), np.arange(40, 80), plain=cal.plain_background)
    # Garments are uniform data: distinct look-alikes align well, the calibrated cut rises to ~0.99 to hold the
    # false-pair rate, and some copies fall into the similar-images band (docs/copies.md)
    assert (pos.score >= cal.copy_cut).mean() >= 0.8, (np.mean(pos.score >= cal.copy_cut), np.sort(pos.score)[:5])
    assert (pos.score >= cal.similar_cut).mean() >= 0.95, (np.mean(pos.score >= cal.similar_cut), cal.similar_cut)


def test_garments_on_a_plain_background_are_registered_with_their_surround(tiles) -> None:  # type: ignore[no-untyped-def]
    """Objects on a plain background (Fashion-MNIST's garments): the uniform surround is no frame. Painted over with
    the content box's edge lines (as a frame is), it gave streaks that a shifted copy does not repeat: garments moved
    by 1-2 px with a black fill scored 0.982 at their 10th percentile and 0.941 at worst (measured), 0.990 and 0.971
    with the surround kept. The dataset decides: garments are judged objects on a plain background, photo tiles
    (whose flat sides, a sky, must stay boxed) are not."""
    x = fmnist()
    if x is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    thumbs = np.stack([np.repeat(cv2.resize(a, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2)
                       for a in x[0]])
    assert plain_share(thumbs, np.arange(len(thumbs))) >= PLAIN_DATASET
    photos, _, _ = tiles
    assert plain_share(photos, np.arange(len(photos))) < PLAIN_DATASET
    src = thumbs[:60]
    moves = [(1, 0), (-1, 1), (2, -1), (0, 2)]
    moved = np.stack([cv2.warpAffine(t, np.float32([[1, 0, moves[i % 4][0]], [0, 1, moves[i % 4][1]]]), (SIDE, SIDE),
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0) for i, t in enumerate(src)])
    both = np.concatenate([src, moved])
    a, b = np.arange(60), np.arange(60, 120)
    boxed = verify_pairs(both, a, b, start=screen(both, a, b)).score
    kept = verify_pairs(both, a, b, start=screen(both, a, b, plain=True), plain=True).score
    assert np.quantile(kept, 0.1) >= 0.987 and kept.min() >= 0.96, (np.quantile(kept, 0.1), kept.min())
    assert np.quantile(kept, 0.1) > np.quantile(boxed, 0.1) and kept.min() > boxed.min()


def test_a_framed_copy_shrunk_and_grown_back_is_registered_inside_its_blurred_frame_edge(tiles) -> None:  # type: ignore[no-untyped-def]
    """A framed copy shrunk to 60-80%, grown back and saved as JPEG has a blurred frame edge: the content box's
    outermost line is a blend of the frame and the content, and repeated across the frame it is structure the source
    lacks. Moved one pixel in (``register.blended_sides``), 38 of the 48 tiles' copies register at 0.97 or more
    (median 0.988); with the blended line kept, 11 (median 0.919: measured)."""
    from splitaudit.neighbors.register import blended_sides, frames, to_grey

    imgs, _, _ = tiles

    def regrown(img: np.ndarray, f: float) -> np.ndarray:
        small = Image.fromarray(img).resize((round(SIDE * f),) * 2, Image.Resampling.BICUBIC)
        return jpeg(np.asarray(small.resize((SIDE, SIDE), Image.Resampling.BICUBIC)), 85)

    copies = np.stack([regrown(framed(t, 0.08, (0, 128, 255)[i % 3]), (0.6, 0.7, 0.8)[i % 3]) for i, t in enumerate(imgs)])
    grey = to_grey(copies)
    assert (blended_sides(grey, frames(grey)) != frames(grey)).any(axis=1).mean() >= 0.9
    both = np.concatenate([imgs, copies])
    a, b = np.arange(len(imgs)), np.arange(len(imgs), 2 * len(imgs))
    score = verify_pairs(both, a, b, start=screen(both, a, b)).score
    assert np.median(score) >= 0.98 and (score >= 0.97).mean() >= 0.7, (np.median(score), np.mean(score >= 0.97))


def test_garments_whose_pixels_agree_are_copies_and_look_alikes_do_not_agree() -> None:
    """The pixel agreement (grey levels within PIXEL_MAD of each other, the definition of Fashion-MNIST's
    duplicates): a garment re-encoded as JPEG q90 agrees with its source whatever its structural score; the nearest
    other garment of each (distinct look-alikes, their mean absolute difference over 8 grey levels at 28 px) does
    not, and neither do near-blank pairs."""
    from splitaudit.neighbors.verify import pixel_agreement

    thumbs, neg = garment_look_alikes()
    assert not pixel_agreement(neg.mad, neg.spread).any(), np.sort(neg.mad)[:5]
    reencoded = np.stack([jpeg(t, 90) for t in thumbs[:40]])
    both = np.concatenate([thumbs[:40], reencoded])
    pos = verify_pairs(both, np.arange(40), np.arange(40, 80))
    assert pixel_agreement(pos.mad, pos.spread).mean() >= 0.95, np.sort(pos.mad)[-5:]
    # near-blank images agree to a grey level or two and are no copies by this rule (the blank check owns them)
    dark = np.stack([np.full((SIDE, SIDE, 3), v, np.uint8) for v in (3, 5)])
    dark[1, 10:20, 10:20] = 9
    blank = verify_pairs(dark, np.array([0]), np.array([1]))
    assert blank.mad[0] <= 4 and not pixel_agreement(blank.mad, blank.spread).any()


def test_every_train_duplicate_of_an_eval_garment_is_found() -> None:
    """An eval garment with four near-identical copies in train (each within a few grey levels: re-encoded,
    re-quantised) is a copy of each of them, though only its best PER_IMAGE pairs are registered: the pixel
    agreement compares every candidate as it lies. Its distinct neighbours are not copies of it."""
    data = fmnist()
    if data is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    x, _ = data
    garments = [np.repeat(cv2.resize(a, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2) for a in x[:120]]
    src = garments[0]
    copies = [jpeg(src, 95), jpeg(src, 90), np.clip(src.astype(np.int16) + 2, 0, 255).astype(np.uint8), (src // 4) * 4]
    train = np.stack(garments[1:] + copies)
    images = np.concatenate([train, src[None]])
    split = np.r_[np.zeros(len(train), np.int64), 1]
    found = find_copies(images, split, per_image=2)
    partners = set(found.a[found.copy & (found.b == len(train))].tolist())
    dup = set(range(len(garments) - 1, len(train)))
    assert partners == dup, (partners, dup)
    # bounded: its 2 best pairs by screen and its 2 best hash matches, each pixel search's nearest garment, and the
    # garment that best lies inside it (candidates.inside_best)
    mine = found.b == len(train)
    assert int((found.registered & mine & (found.pixel_rank != 0)).sum()) <= 4 + 1
    assert int((found.registered & mine).sum()) <= 4 + len(candidates.VIEWS) + len(candidates.CROSS) + 1


def test_rotated_and_cropped_copies_register_from_the_screens_start(photos) -> None:  # type: ignore[no-untyped-def]
    """From the screen's start (the decisions' path): a copy rotated 7 deg and zoomed out 10% is found at its
    rotation (the screen tries 7 deg at zoom 1 only, the refinement moves 3 deg), and a 20% side crop of a window
    whose sky and shadow are uniform rows (content boxes a third of the image) keeps enough overlap to be scored."""
    from conftest import _load_photo
    from splitaudit.neighbors.verify import screen

    astronaut, camera = photos["astronaut"], np.repeat(_load_photo("camera")[..., None], 3, axis=2)
    cases = [(astronaut, (240, 60), {"zoom": 1 / 0.9, "angle": 7.0}), (astronaut, (360, 240), {"zoom": 1 / 0.9, "angle": -7.0}),
             (camera, (100, 260), {"zoom": 1 / 0.8, "shift": (3.2, 0.0)})]
    imgs = np.stack([im for p, (cx, cy), kw in cases for im in (window(p, cx, cy, 96), window(p, cx, cy, 96, **kw))])
    a, b = np.arange(0, len(imgs), 2), np.arange(1, len(imgs), 2)
    reg = verify_pairs(imgs, a, b, start=screen(imgs, a, b))
    assert (reg.score >= 0.98).all(), reg.score
    assert abs(abs(reg.angle[0]) - 7.0) < 1.5 and abs(abs(reg.angle[1]) - 7.0) < 1.5, reg.angle


def test_candidates_are_flip_aware_and_merge_views(tiles) -> None:  # type: ignore[no-untyped-def]
    imgs, where, photos = tiles
    name, cx, cy = where[5]
    mirrored = np.ascontiguousarray(window(photos[name], cx, cy, 64, shift=(1.0, 0.0))[:, ::-1])
    thumbs = np.concatenate([imgs, mirrored[None]])
    split = np.zeros(len(thumbs), np.int64)
    split[-1] = 1
    split[40:48] = 1  # a few distinct eval images too
    # any unit-norm rows serve as the embedding view; CNN embeddings hardly change under a mirror, nor does this
    emb = pixel_vectors(thumbs, "coarse") + pixel_vectors(thumbs, "coarse", mirrored=True)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cand = candidate_pairs(thumbs, split, embeddings=emb, hash_a=np.array([2]), hash_b=np.array([len(thumbs) - 1]))
    row = np.flatnonzero((cand.a == 5) & (cand.b == len(thumbs) - 1))
    assert len(row) == 1
    assert cand.pixel_rank[row[0]] == 0 and cand.pixel_mirrored[row[0]]
    assert cand.embed_rank[row[0]] >= 0
    hashed = np.flatnonzero(cand.hashed)
    assert [(int(cand.a[j]), int(cand.b[j])) for j in hashed] == [(2, len(thumbs) - 1)]
    assert (split[cand.a] < split[cand.b]).all()
    with pytest.raises(InvalidParameterError):
        candidate_pairs(thumbs, split, views=("pixels", "nope"))


def test_find_copies_end_to_end(tiles, calibration) -> None:  # type: ignore[no-untyped-def]
    imgs, where, photos = tiles
    extra, truth = [], []
    for s, (kw, edit) in zip((2, 15, 28, 41), (COPIES["shift 2px"], COPIES["colour grade"], COPIES["frame 8%"], COPIES["mirror"])):
        name, cx, cy = where[s]
        im = window(photos[name], cx, cy, 64, **kw)
        extra.append(edit(im) if edit else im)
        truth.append(s)
    thumbs = np.concatenate([imgs, np.stack(extra)])
    split = np.zeros(len(thumbs), np.int64)
    split[len(imgs) :] = 1
    split[[7, 20, 33, 46]] = 1  # distinct eval images
    m = find_copies(thumbs, split, calibration=calibration, per_image=2)
    found = {(int(a), int(b)) for a, b, c in zip(m.a, m.b, m.copy) if c}
    assert found == {(s, len(imgs) + i) for i, s in enumerate(truth)}
    # the registration work is bounded: each eval image's 2 best pairs by screen score (no hash pairs here), each
    # pixel search's nearest image, and the image that best lies inside it (candidates.inside_best)
    other = m.registered & (m.pixel_rank != 0)
    assert other.sum() <= 3 * (split == 1).sum() and np.isnan(m.score[~m.registered]).all()
    assert np.isfinite(m.screen_score).all() and (np.bincount(m.b[other]) <= 3).all()
    assert (np.bincount(m.b[m.registered]) <= 3 + len(candidates.VIEWS) + len(candidates.CROSS)).all()
    ev = np.flatnonzero(split == 1)
    assert np.isfinite(m.best_score[ev]).all() and np.isnan(m.best_score[split == 0]).all()
    assert (m.best_partner[len(imgs) :] == truth).all()
    # the registration is held for the registered pairs alone: read whole or at some rows it is the same column, NaN
    # or 0 where a pair was not registered, and the run cache's plain arrays give it back
    assert len(m.registration) == m.registered.sum() < len(m)
    rows = np.random.default_rng(0).integers(0, len(m), 200)
    for name in verify.REGISTERED_ONLY + ("mad", "copy"):
        np.testing.assert_array_equal(m.at(name, rows), getattr(m, name)[rows])
    for name in verify.REGISTERED_ONLY + ("mad", "spread", "still"):
        np.testing.assert_array_equal(getattr(m, name)[m.registered], getattr(m.registration, name))
    assert not m.mirrored[~m.registered].any() and (m.scale[~m.registered] == 0).all()
    back = CopyMatches.from_arrays(m.to_arrays())
    assert back is not None
    np.testing.assert_equal(vars(back.calibration), vars(m.calibration))  # NaN where not measured, alike
    for name, col in m.pairs().items():
        np.testing.assert_array_equal(back.pairs()[name], col)


def test_deterministic_and_bounded(tiles, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    imgs, _, _ = tiles
    a = np.arange(0, 20)
    b = np.arange(20, 40)
    first = verify_pairs(imgs, a, b)
    calls = {"score": 0, "pairs": 0, "match": 0}
    score, match = rg._Stack.score, rg._template_match

    def counted_score(self, params, *args):  # type: ignore[no-untyped-def]
        calls["score"] += 1
        calls["pairs"] += len(params)
        return score(self, params, *args)

    def counted_match(*args):  # type: ignore[no-untyped-def]
        calls["match"] += 1
        return match(*args)

    monkeypatch.setattr(rg._Stack, "score", counted_score)
    monkeypatch.setattr(rg, "_template_match", counted_match)
    second = verify_pairs(imgs, a, b, workers=1)
    third = verify_pairs(imgs, a, b, workers=2)
    for f in ("score", "mirrored", "scale", "angle", "dx", "dy", "overlap", "mad", "smooth_mad"):
        assert np.array_equal(getattr(first, f), getattr(second, f))
        assert np.array_equal(getattr(first, f), getattr(third, f))
    # a fixed search per pair: 2 x 7 zooms + 2 x 4 angles at half resolution, 2 + 3 re-found; the refinement and
    # the final score batched over the pairs: 1 + 2 x 4 x 3 + 1 scores of all pairs at once
    assert calls["match"] <= 2 * 20 * (22 + 5)
    assert calls["score"] <= 2 * 26 and calls["pairs"] <= 2 * 20 * 26


def test_the_null_tail_fit_hits_its_rate_and_ignores_the_bulk_and_likely_copies() -> None:
    from splitaudit.neighbors.calibrate import null_model

    rng = np.random.default_rng(0)
    null = np.tanh(rng.gumbel(0.8, 0.15, 20000))
    cut, u, scale = tail_cut(null, 1e-3)
    assert abs(np.mean(null >= cut) - 1e-3) < 0.6e-3, np.mean(null >= cut)
    assert abs(np.tanh(u) - np.quantile(null, TAIL_FROM)) < 1e-9 and abs(scale - 0.15) < 0.05
    # the bulk does not move it: pairs the search scores lower (below the fitted tail) leave the cut alone
    lower = null.copy()
    bulk = null < np.quantile(null, TAIL_FROM - 0.1)
    lower[bulk] = np.tanh(np.arctanh(null[bulk]) - 0.3)
    assert tail_cut(lower, 1e-3)[0] == pytest.approx(cut, abs=1e-9)
    # copies inside train (3% of the null, scoring like the synthetic copies) are set aside as likely copies
    contaminated = np.concatenate([null, np.full(600, 0.995)])
    m1 = null_model(null, None, 0.99, 1e-3, 2e-2)
    m2 = null_model(contaminated, None, 0.99, 1e-3, 2e-2)
    assert m2.likely.sum() == 600 and not m2.likely[: len(null)].any()
    assert abs((m2.intercept + m2.copy_residual) - (m1.intercept + m1.copy_residual)) < 0.05
    # ... and so are 15% of copies (real datasets, tiny suites): the set-aside tests against the rest's own tail,
    # with no cap that would let the excess copies into the fit
    heavy = np.concatenate([null, np.full(3500, 0.995)])
    m3 = null_model(heavy, None, 0.99, 1e-3, 2e-2)
    assert m3.likely.sum() == 3500 and abs((m3.intercept + m3.copy_residual) - (m1.intercept + m1.copy_residual)) < 0.05


def test_the_null_given_crowding_hits_its_rate_in_crowds_and_alone() -> None:
    """Distinct neighbours score higher in a crowd (tiles of a texture, garments): fitted on 400 samples as the
    calibration does, the cut given crowding keeps the false-pair rate near its aim both in a crowd and alone, and
    alone it sits far under one cut for all (the recall a single cut wastes)."""
    from splitaudit.neighbors.calibrate import Calibration, null_model

    rng = np.random.default_rng(1)
    crowd = rng.uniform(0.2, 1.4, 80400)
    null = np.tanh(0.3 + 1.1 * crowd + rng.gumbel(0.0, 0.12, len(crowd)))
    fit, held, x = slice(0, 400), slice(400, None), crowd[400:]
    model = null_model(null[fit], crowd[fit], 0.999, 1e-3, 2e-2)
    assert abs(model.slope - 1.1) < 0.1, model.slope
    cal = Calibration(0.99, 0.9, 1e-3, 2e-2, 400, *(0.0,) * 4, 0, 0.0, 0.0, 0, *(0.0,) * 4, "", 0, 0,
                      crowding_intercept=model.intercept, crowding_slope=model.slope, crowding_lo=0.2,
                      crowding_hi=1.4, crowding_median=0.8, copy_residual=model.copy_residual,
                      similar_residual=model.similar_residual, copy_floor=0.0, similar_floor=0.0)
    cut, similar = cal.cuts(x)
    for part in (x < 0.6, x > 1.0):  # held-out samples, alone and in a crowd
        assert np.mean(null[held][part] >= cut[part]) < 3e-3, np.mean(null[held][part] >= cut[part])
        assert 0.005 < np.mean(null[held][part] >= similar[part]) < 0.05
    flat = null_model(null[fit], None, 0.999, 1e-3, 2e-2)
    one = np.tanh(flat.intercept + flat.copy_residual)
    assert np.arctanh(one) - np.arctanh(np.median(cut[x < 0.6])) > 0.5, (one, np.median(cut[x < 0.6]))


def test_screen_ranks_copies_first_and_finds_the_start(tiles) -> None:  # type: ignore[no-untyped-def]
    """The vectorised screen: a copy outscores the eval image's distinct neighbours, and its start (orientation,
    zoom, shift) is the transform's."""
    from splitaudit.neighbors.verify import screen, select

    imgs, where, photos = tiles
    copies = []
    for s, kw, edit in ((3, {"shift": (2.0, 0.0)}, None), (17, {}, COPIES["mirror"][1]), (30, {"zoom": 1.15}, None)):
        name, cx, cy = where[s]
        im = window(photos[name], cx, cy, 64, **kw)
        copies.append(edit(im) if edit else im)
    thumbs = np.concatenate([imgs, np.stack(copies)])
    n = len(imgs)
    a = np.tile(np.arange(n), 3)
    b = np.repeat(np.arange(n, n + 3), n)
    sc = screen(thumbs, a, b)
    keep = select(sc, b, 1)
    assert sorted(zip(a[keep].tolist(), b[keep].tolist())) == [(3, n), (17, n + 1), (30, n + 2)]
    first, mirrored, zoomed = (np.flatnonzero(keep & (b == n + i))[0] for i in range(3))
    assert not sc.mirrored[first] and sc.mirrored[mirrored] and sc.scale[zoomed] > 1.05
    # the window moved right by 2 of 32 px: b's centre shows a's centre + 2/32 of the side (screen steps: 1/24)
    assert abs(sc.dx[first] - 2 / 32) <= 1 / 24 and abs(sc.dy[first]) <= 1 / 24


def test_the_screen_scores_a_mirror_and_a_subpixel_shift_as_the_copies_they_are(tiles) -> None:  # type: ignore[no-untyped-def]
    """A mirrored tile screens as the tile itself: its half-resolution images come from the mirrored working image
    (``register.halve``; the half-resolution image mirrored lies half a pixel off). A tile moved by 1 of 32 px (0.75
    of the screen's pixels) nearly so: the peak is read between the grid's shifts (``screen.subpixel_peak``).
    Before both: mirrors 0.888-0.954 (median), the moved tiles' median 0.975 (0.991 now)."""
    from splitaudit.neighbors.verify import screen

    imgs, where, photos = tiles
    n = len(imgs)
    mirrored = np.ascontiguousarray(imgs[:, :, ::-1])
    moved = np.stack([window(photos[name], cx, cy, 64, shift=(1.0, 0.0)) for name, cx, cy in where])
    thumbs = np.concatenate([imgs, mirrored, moved])
    a = np.arange(n)
    m = screen(thumbs, a, a + n)
    assert m.mirrored.all() and m.score.min() >= 0.999, np.sort(m.score)[:3]
    s = screen(thumbs, a, a + 2 * n)
    assert np.median(s.score) >= 0.985, np.quantile(s.score, [0.1, 0.5])


def test_the_subpixel_peak_reads_a_peak_between_grid_shifts() -> None:
    """A Gaussian correlation peak of height 1 centred between grid shifts: the grid's best value is 0.946, the
    parabolas' reading 0.986 (a third of the error or less); a peak on the grid is read as it is."""
    from splitaudit.neighbors.screen import subpixel_peak

    p = 24
    y, x = np.mgrid[:p, :p]
    y, x = np.where(y > p // 2, y - p, y), np.where(x > p // 2, x - p, x)  # shifts as the FFT lays them out
    corr = np.stack([np.exp(-((x - 0.4) ** 2 + (y + 0.3) ** 2) / 4.5), np.exp(-(x**2 + y**2) / 4.5)])
    got = subpixel_peak(corr, np.array([0.0, 0.0]), np.array([0.0, 0.0]))
    assert corr[0].max() < 0.95 and 0.0 <= 1.0 - got[0] <= (1.0 - corr[0].max()) / 3, (corr[0].max(), got)
    assert got[1] == 1.0


def test_copies_inside_train_do_not_count_against_the_hashes() -> None:
    """A hash match inside train is a collision only between distinct images: matches whose images the null set
    aside as copies inside train leave the distinct rate, so a dataset holding copies still trusts its hashes,
    and one whose distinct images hash alike (garments, digits) does not."""
    from splitaudit.neighbors.calibrate import distinct_hash_rate

    train = np.arange(100)
    a, b = np.arange(0, 20, 2), np.arange(1, 21, 2)  # 20 of 100 training images in 10 hash-matched pairs
    queries = np.arange(0, 100, 2)  # the null sampled every other image: 10 of them matched
    copies = np.isin(queries, a)  # ... and set all 10 aside as copies inside train
    assert distinct_hash_rate(train, a, b, queries, copies) == (0.2, 0.0)
    half = copies & (queries < 10)  # only half of them: the other half are distinct images that collide
    assert distinct_hash_rate(train, a, b, queries, half) == (0.2, pytest.approx(0.1))
    # pairs across splits and a record matched with itself are not collisions inside train
    assert distinct_hash_rate(train, np.array([5, 7]), np.array([150, 7]), queries, copies)[0] == 0.0


@pytest.fixture(scope="module")
def crowded_tiles() -> tuple[np.ndarray, list[tuple[np.ndarray, float, float]]]:
    """32-px renders of 64-px regions of eight photos every 48 px (overlapping neighbours, textures: brick, grass),
    with their photo and centre: a crowded training split, as the copy suites' is."""
    from conftest import _load_photo

    imgs, where = [], []
    for name in ("astronaut", "coffee", "chelsea", "china", "camera", "rocket", "brick", "grass"):
        p = _load_photo(name)
        p = np.ascontiguousarray((np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p)[..., :3])
        h, w = p.shape[:2]
        for y in range(40, h - 104, 48):
            for x in range(40, w - 104, 48):
                imgs.append(window(p, x + 32, y + 32, 64))
                where.append((p, x + 32.0, y + 32.0))
    return np.stack(imgs), where


def test_cross_searches_find_crops_and_frames_of_flat_sided_photos(crowded_tiles) -> None:  # type: ignore[no-untyped-def]
    from splitaudit.neighbors.candidates import CROSS_K, cross_pairs, pairs_within
    from splitaudit.neighbors.register import frames, to_grey

    imgs, where = crowded_tiles
    n = len(imgs)
    # copies cut 20% off one side, and framed copies of regions with a flat side (sky, a wall: the uniform-rows
    # rule cuts it off the source, not off its framed copy)
    pick = np.random.default_rng(0).choice(n, 60, replace=False)
    sides = [(0.1, 0.0), (-0.1, 0.0), (0.0, 0.1), (0.0, -0.1)]
    crops = [window(where[i][0], where[i][1] + 64 * sides[j % 4][0], where[i][2] + 64 * sides[j % 4][1], 0.8 * 64)
             for j, i in enumerate(pick.tolist())]
    box = frames(to_grey(imgs))
    flat_by = np.maximum(np.maximum(box[:, 0], box[:, 1]), np.maximum(31 - box[:, 2], 31 - box[:, 3]))
    flat = np.flatnonzero((flat_by >= 4) & (to_grey(imgs).std(axis=(1, 2)) > 15))
    assert len(flat) >= 30
    framed_copies = [framed(imgs[i], 0.08, 255 if j % 2 else 0) for j, i in enumerate(flat.tolist())]
    sources = np.concatenate([pick, flat])
    thumbs = np.concatenate([imgs, np.stack(crops + framed_copies)])
    split = np.r_[np.zeros(n, np.int64), np.ones(len(sources), np.int64)]
    copies = n + np.arange(len(sources))
    truth = set(zip(sources.tolist(), copies.tolist()))
    base, query = np.arange(n), copies

    def found(pairs: set, rows: np.ndarray) -> int:
        return sum((int(sources[r - n]), int(r)) in pairs for r in rows)

    (_, ca, cb, crank, _, _), = cross_pairs(thumbs, base, query[: len(pick)], CROSS_K, ("crops",))
    (_, fa, fb, _, _, _), = cross_pairs(thumbs, base, query[len(pick) :], CROSS_K, ("framed",))
    assert found(set(zip(ca.tolist(), cb.tolist())), query[: len(pick)]) >= 45  # 48 of 60 alone (measured)
    assert found(set(zip(fa.tolist(), fb.tolist())), query[len(pick) :]) == len(flat)
    assert crank.max() < CROSS_K and len(ca) == CROSS_K * len(pick)
    without = candidate_pairs(thumbs, split, cross=())
    with_cross = candidate_pairs(thumbs, split)

    def got(c) -> set:  # type: ignore[no-untyped-def]
        return set(zip(c.a.tolist(), c.b.tolist())) & truth

    # measured: 103 of the 112 copies' sources without the cross searches (53 of 60 crops), 110 with (58)
    assert got(without) < got(with_cross)  # the views' pairs stay; the cross searches add
    assert len(got(with_cross)) >= len(truth) - 3
    assert set(with_cross.pixel_view[np.isin(with_cross.a * len(thumbs) + with_cross.b,
                                             [a * len(thumbs) + b for a, b in got(with_cross) - got(without)])]) <= {"framed", "crops"}
    # the calibration's neighbours come from the same searches, never the image itself
    qa, qb, nearest = pairs_within(imgs, np.arange(n), np.arange(0, n, 7))
    assert (qa != qb).all() and len(qa)
    # every query has a nearest other image, and one at most per search
    assert set(qa[nearest].tolist()) == set(qa.tolist())
    assert np.bincount(qa[nearest]).max() <= len(candidates.VIEWS) + len(candidates.CROSS)
    with pytest.raises(InvalidParameterError):
        cross_pairs(thumbs, base, query, CROSS_K, ("nope",))


def test_low_contrast_copies_after_jpeg_and_shifts_are_found_by_their_levels(crowded_tiles) -> None:  # type: ignore[no-untyped-def]
    """Low-contrast tiles (sky, walls, fur: grey spread 6-20) re-encoded at JPEG q50 after a 1-2 px shift mostly
    score under their copy cut (the structural band is much JPEG noise there) but keep their blurred grey levels; the
    level rule, with its cut read off the null, finds more of them, and distinct crops of the same photos between the
    training tiles stay no copies."""
    from dataclasses import replace

    from splitaudit.neighbors.register import to_grey
    from splitaudit.neighbors.verify import level

    imgs, where = crowded_tiles
    n = len(imgs)
    cal = calibrate(imgs, np.arange(n), seed=0)
    assert 0 < cal.level_cut <= 0.1 and cal.level_pairs >= 40 and cal.level_null > cal.level_cut
    spread = to_grey(imgs).std(axis=(1, 2))
    low = np.flatnonzero((spread >= 6) & (spread <= 20))[::2][:40]
    assert len(low) >= 30
    shifts = [(1.0, 0.0), (0.0, -2.0), (-1.0, 1.0), (2.0, 1.0)]
    copies = [jpeg(window(where[i][0], where[i][1], where[i][2], 64, shift=shifts[j % 4]), 50)
              for j, i in enumerate(low.tolist())]
    # distinct: crops of the same photos centred between four training tiles (a third of each neighbour's area)
    mid = [window(where[i][0], where[i][1] + 24, where[i][2] + 24, 64) for i in range(0, n, 5)]
    thumbs = np.concatenate([imgs, np.stack(copies + mid)])
    split = np.r_[np.zeros(n, np.int64), np.ones(len(copies) + len(mid), np.int64)]
    truth = {(int(s), n + k) for k, s in enumerate(low.tolist())}

    def run(c):  # type: ignore[no-untyped-def]
        m = find_copies(thumbs, split, calibration=c)
        return m, {(int(a), int(b)) for a, b, x in zip(m.a, m.b, m.copy) if x}

    on, found_on = run(cal)
    off, found_off = run(replace(cal, level_cut=float("nan")))
    assert len(found_on & truth) > len(found_off & truth)
    # measured: 22 of 39 (8 without the level rule); the rest score under the similar band of a crowded sky
    assert len(found_on & truth) >= 0.5 * len(truth)
    rescued = np.array([(int(a), int(b)) in (found_on - found_off) for a, b in zip(on.a, on.b)])
    assert (level(on.smooth_mad, on.spread)[rescued] <= cal.level_cut).all()
    assert not {b for _, b in found_on - truth} - {b for _, b in found_off - truth}  # no new false pair


def _low_contrast_windows(photos: dict[str, np.ndarray], count: int) -> list[np.ndarray]:
    """32-px renders of 64-px regions whose grey spread is 3-10 (sky, walls, blurred backgrounds), from several
    photos, each from another place."""
    out = []
    for p in photos.values():
        g = np.asarray(Image.fromarray(p).convert("L"), np.float32)
        for y in range(0, g.shape[0] - 64, 64):
            for x in range(0, g.shape[1] - 64, 64):
                if 3.0 <= g[y : y + 64, x : x + 64].std() <= 10.0:
                    out.append(window(p, x + 32, y + 32, 64))
    return out[:: max(1, len(out) // count)][:count]


def test_a_shared_frame_is_no_pixel_agreement(tiles) -> None:  # type: ignore[no-untyped-def]
    """Two distinct low-contrast shots in the same uniform frame agree in grey level over the whole images (the frame
    is most of it) and the frame's edge gave them a large spread: the whole-image rule called them copies (a blue
    sky and a grey cell, 32 px, in 12% grey frames). The spread is now the content's, inside both frames; a framed
    textured tile and its JPEG copy still agree."""
    from conftest import _load_photo

    from splitaudit.neighbors.verify import still_agreement

    photos = {n: _load_photo(n) for n in ("astronaut", "coffee", "chelsea", "china", "rocket", "camera")}
    flat = [framed(w, 0.12, 128) for w in _low_contrast_windows(photos, 40)]
    assert len(flat) >= 20
    g = np.stack([np.asarray(Image.fromarray(f).convert("L"), np.float32) for f in flat])
    a, b = np.triu_indices(len(flat), 1)
    whole = np.abs(g[a] - g[b]).mean(axis=(1, 2))
    # the old rule's reach: pairs of distinct shots within PIXEL_MAD over the whole image, with the frame's spread
    near = (whole <= rg.PIXEL_MAD) & (g[a].std(axis=(1, 2)) >= rg.PIXEL_SPREAD)
    assert near.sum() >= 3, (near.sum(), np.sort(whole)[:5])
    mad, spread = still_agreement(np.stack(flat), a[near], b[near])
    assert not pixel_agreement(mad, spread).any(), (mad, spread)
    # a textured tile in the same frame, re-encoded: the content agrees, and its spread is its own
    imgs, _, _ = tiles
    src = np.stack([framed(t, 0.12, 128) for t in imgs[:12]])
    both = np.concatenate([src, np.stack([jpeg(s, 90) for s in src])])
    mad, spread = still_agreement(both, np.arange(12), np.arange(12, 24))
    assert pixel_agreement(mad, spread).mean() >= 0.9, (mad, spread)


def test_a_wide_frame_registers_at_the_zoom_the_frames_give(tiles, calibration) -> None:  # type: ignore[no-untyped-def]
    """A copy in a 12% frame is its source shrunk by 1.32, beyond the template search's zooms and more than the
    refinement moves from them; the content boxes give the zoom, and the copy registers there."""
    from splitaudit.neighbors.verify import screen

    imgs, _, _ = tiles
    src = imgs[:24]
    copies = np.stack([framed(t, 0.12, (0, 128, 255)[i % 3]) for i, t in enumerate(src)])
    both = np.concatenate([src, copies])
    a, b = np.arange(24), np.arange(24, 48)
    got = verify_pairs(both, a, b, start=screen(both, a, b))
    inner = round(SIDE * 0.76) / SIDE
    # the median zoom found is 0.765 against 0.75 (0.015-0.016 off, with the frame filled at either resolution);
    # without the frames' zoom the refinement stops at 0.78-0.82
    assert np.median(np.abs(got.scale - inner)) <= 0.02, np.round(got.scale, 3)
    # without the frames' zoom: 15 of 24 at the cut (the refinement stops at zoom 0.78-0.82); with it, 20
    assert (got.score >= calibration.copy_cut).mean() >= 0.75, (np.sort(got.score)[:6], calibration.copy_cut)


def test_a_frame_is_found_through_jpeg_noise(tiles) -> None:  # type: ignore[no-untyped-def]
    """JPEG's ringing at 32 px puts a grey frame's rows at a grey spread of 2-5, over the uniform-rows bound: the
    frame was found on some sides only and the copy registered against a wrong box. A frame of one colour all
    round, edged by content, is found through the noise; low-contrast photos (sky, walls), whose sides fade into
    their content, keep the boxes of the uniform rows alone."""
    from conftest import _load_photo

    from splitaudit.neighbors.register import frames, to_grey

    imgs, _, _ = tiles
    copies = np.stack([jpeg(framed(t, 0.08, (0, 128, 255)[i % 3]), 75) for i, t in enumerate(imgs[:36])])
    g = to_grey(copies)
    inner = int(round(SIDE * 0.84))
    o = (SIDE - inner) // 2  # the frame's width in pixels (2 at 32 px, and 3 on the far sides)
    expected = np.array([o, o, o + inner - 1, o + inner - 1])
    whole = lambda box: (np.abs(box - expected) <= 1).all(axis=1)
    got = frames(g)
    assert whole(got).mean() >= 0.75, got  # 29 of 36; the rest run into content of the frame's colour
    saved = rg.FRAME_NOISY
    try:  # the uniform-rows bound alone: the same copies' frames are cut short (the test's reason to exist)
        rg.FRAME_NOISY = rg.FRAME_STD
        assert whole(frames(g)).mean() <= 0.4  # 8 of 36
        photos = {n: _load_photo(n) for n in ("astronaut", "coffee", "chelsea", "china", "rocket", "camera")}
        flat = to_grey(np.stack(_low_contrast_windows(photos, 40)))
        strict = frames(flat)
    finally:
        rg.FRAME_NOISY = saved
    assert len(flat) >= 20 and (frames(flat) == strict).all()


def _barred(img: np.ndarray, f: float, across: bool) -> np.ndarray:
    """``img`` with black bars of ``f`` of the side: top and bottom (a letterbox) or left and right (a pillarbox)."""
    b, out = int(round(SIDE * f)), img.copy()
    if across:
        out[:b], out[SIDE - b :] = 0, 0
    else:
        out[:, :b], out[:, SIDE - b :] = 0, 0
    return out


def test_letterbox_bars_are_found_through_jpeg_noise(tiles, calibration) -> None:  # type: ignore[no-untyped-def]
    """A letterbox's bars saved as JPEG at 32 px have a grey spread of 2-5, over the uniform-rows bound, and only
    two sides: the frame rule (one colour all round) does not see them, the box stopped short of the bars, and the
    copy registered against the wrong box (``copy_check.py --files``: 8 of 10 missed letterboxed copies). Two opposite
    bars of one colour, equally wide and edged by content all along, are found; low-contrast windows and the distinct
    tiles keep their boxes."""
    from conftest import _load_photo

    from splitaudit.neighbors.register import frames, to_grey

    imgs, _, _ = tiles
    src = imgs[:36]
    copies = np.stack([jpeg(_barred(t, 0.10, i % 2 == 0), 60) for i, t in enumerate(src)])
    expected = np.array([[0, 3, 31, 28] if i % 2 == 0 else [3, 0, 28, 31] for i in range(36)])
    both, a, b = np.concatenate([src, copies]), np.arange(36), np.arange(36, 72)
    photos = {n: _load_photo(n) for n in ("astronaut", "coffee", "chelsea", "china", "rocket", "camera")}
    flat = to_grey(np.stack(_low_contrast_windows(photos, 40)))
    found = (frames(to_grey(copies)) == expected).all(axis=1).sum()
    kept = frames(flat), frames(to_grey(imgs))
    registered = verify_pairs(both, a, b, start=screen(both, a, b)).score
    saved = rg.BAR_SHARE
    try:  # without the bars' rule (no content line reaches a share over 1)
        rg.BAR_SHARE = 2.0
        found_before = (frames(to_grey(copies)) == expected).all(axis=1).sum()
        before = frames(flat), frames(to_grey(imgs))
        registered_before = verify_pairs(both, a, b, start=screen(both, a, b)).score
    finally:
        rg.BAR_SHARE = saved
    assert found >= 27 and found_before <= 18, (found, found_before)  # measured: 30 and 15 of 36
    assert len(flat) >= 20 and all((k == o).all() for k, o in zip(kept, before))
    at_cut, at_cut_before = (registered >= calibration.copy_cut).sum(), (registered_before >= calibration.copy_cut).sum()
    assert at_cut >= at_cut_before + 3, (at_cut, at_cut_before)  # measured: 21 and 16 of 36


def test_a_frame_blended_into_a_copy_stored_smaller_is_left_out_of_the_content_view(crowded_tiles, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A framed copy stored smaller (19-24 px, JPEG) and grown back to 32 px: the box's outer line is half frame, half
    content, and the content view (a candidate search) took it in. It now leaves it out as the registration does
    (``register.blended_sides``) where a frame runs all round with content along it (``register.framed_all_round``):
    more such copies have their source among their nearest in that view. Garments on a plain background, bands on
    one side and the distinct tiles are not such frames."""
    from splitaudit.neighbors.register import framed_all_round, frames, to_grey

    imgs, _ = crowded_tiles

    def stored_small(img: np.ndarray, side: int) -> np.ndarray:
        small = jpeg(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA), 85)
        return cv2.resize(small, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)

    src = np.arange(0, len(imgs), max(1, len(imgs) // 60))[:60]
    copies = np.stack([stored_small(framed(imgs[i], 0.12, (0, 128, 255)[k % 3]), 19 + k % 6) for k, i in enumerate(src)])
    both = np.concatenate([imgs, copies])

    def nearest() -> int:  # copies whose source is among their PIXEL_K nearest in the content view
        v = candidates.view_vectors(both, ("content",))["content"][0]
        top = np.argsort(-(v[len(imgs) :] @ v[: len(imgs)].T), axis=1)[:, : candidates.PIXEL_K]
        return sum(int(i in top[k]) for k, i in enumerate(src))

    found = nearest()
    monkeypatch.setattr(rg, "framed_all_round", lambda g, f: np.zeros(len(g), bool))
    before = nearest()
    monkeypatch.undo()
    assert found >= before + 6, (found, before)  # measured: 44 and 33 of 60
    garments = to_grey(_fashion_thumbs(1000)).astype(np.float32)
    assert framed_all_round(garments, frames(garments)).sum() <= 10  # measured: 2 of 1,000
    tiles = to_grey(imgs).astype(np.float32)
    assert not framed_all_round(tiles, frames(tiles)).any()
    band = tiles[:24].copy()
    band[:, :, :3] = 0  # a translation's black fill on one side
    assert (frames(band)[:, 0] >= 3).all() and not framed_all_round(band, frames(band)).any()


def test_a_dark_or_bright_frame_does_not_ring_into_low_contrast_content() -> None:
    """Resized with its image, a black or white frame's step rang into the content (cubic kernels reach two native
    pixels), and on low-contrast content (a sky, a wall: grey spread 3-10) that ringing was much of the band-passed
    structure the score compares. The frame is now replaced by the content's edge at the native resolution: copies
    in black, grey and white frames score alike, and high."""
    from conftest import _load_photo

    from splitaudit.neighbors.verify import screen

    photos = {n: _load_photo(n) for n in ("astronaut", "coffee", "chelsea", "china", "rocket", "camera")}
    src = np.stack(_low_contrast_windows(photos, 40))
    assert len(src) >= 20
    n = len(src)
    scores = {}
    for colour in (0, 128, 255):
        both = np.concatenate([src, np.stack([framed(t, 0.06, colour) for t in src])])
        a, b = np.arange(n), np.arange(n, 2 * n)
        scores[colour] = verify_pairs(both, a, b, start=screen(both, a, b)).score
    # measured: median 0.983 in every frame (0.900, 0.863, 0.665 in black, grey, white frames before)
    for colour, s in scores.items():
        assert np.median(s) >= 0.97 and np.mean(s >= 0.95) >= 0.6, (colour, np.round(np.sort(s)[:8], 3))
    medians = [np.median(s) for s in scores.values()]
    assert max(medians) - min(medians) <= 0.005, medians


def _rim_windows() -> tuple[np.ndarray, np.ndarray]:
    """32-px renders of 96-px windows on the rim of the retina photo (an orange disc on black) and of the windows
    36 px further along the rim: distinct crops of one edge."""
    from skimage.data import retina

    p = retina()
    mask = (cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) > 25).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    rim = max(contours, key=len)[:, 0, :]
    half = 48
    inside = lambda q: half + 40 < q[0] < p.shape[1] - half - 40 and half + 40 < q[1] < p.shape[0] - half - 40
    win = lambda q: cv2.resize(np.ascontiguousarray(p[q[1] - half : q[1] + half, q[0] - half : q[0] + half]), (SIDE, SIDE),
                               interpolation=cv2.INTER_AREA)
    at = [i for i in range(0, len(rim) - 36, len(rim) // 40) if inside(rim[i]) and inside(rim[i + 36])]
    return np.stack([win(rim[i]) for i in at]), np.stack([win(rim[i + 36]) for i in at])


def test_two_crops_of_one_edge_are_not_copies_by_registration(tiles) -> None:  # type: ignore[no-untyped-def]
    """The aperture problem: two crops of one edge (the retina's rim, flat colour either side) register wherever a
    stretch of the edge fits and score as copies do. Where either image's structure is that close to one direction
    (:data:`~.register.APERTURE`), a copy decided by registration alone moves to the similar band; textured copies
    and pairs with other evidence keep their decision."""
    from splitaudit.neighbors.register import APERTURE, isotropy, prepare
    from splitaudit.neighbors.verify import demote_apertures, screen

    here, along = _rim_windows()
    n = len(here)
    assert n >= 12
    both = np.concatenate([here, along])
    a, b = np.arange(n), np.arange(n, 2 * n)
    got = verify_pairs(both, a, b, start=screen(both, a, b))
    assert (got.score >= 0.97).sum() >= n // 2, np.round(got.score, 3)  # the problem: distinct, and scoring high
    iso = isotropy(prepare(both))
    flat = np.minimum(iso[a], iso[b]) < APERTURE
    # either image one edge, not both: the rule before the twenty-fifth session took 3 of 13 pairs
    assert flat.sum() > (np.maximum(iso[a], iso[b]) < APERTURE).sum() >= 3, np.round(iso, 4)
    copy, similar = demote_apertures(both, a, b, np.ones(n, bool), np.zeros(n, bool), np.zeros(n, bool))
    assert (~copy == flat).all() and (similar == flat).all()
    # other evidence (a hash match, the pixels as they lie) keeps the decision
    copy, _ = demote_apertures(both, a, b, np.ones(n, bool), np.zeros(n, bool), np.ones(n, bool))
    assert copy.all()
    # textured tiles and their shifted copies are far from one direction, and keep their decision
    imgs, where, photos = tiles
    shifted = np.stack([window(photos[w[0]], w[1], w[2], 64, shift=(1.0, 0.0)) for w in where[:24]])
    pair = np.concatenate([imgs[:24], shifted])
    iso = isotropy(prepare(pair))
    one_edge = np.minimum(iso[:24], iso[24:]) < APERTURE
    assert one_edge.sum() <= 1, np.round(iso, 3)  # one of the 24 tiles is a single edge too (0.009)
    copy, _ = demote_apertures(pair, np.arange(24), np.arange(24, 48), np.ones(24, bool), np.zeros(24, bool), np.zeros(24, bool))
    assert (copy == ~one_edge).all()


def test_a_value_that_is_one_edge_or_of_an_unedited_colour_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The HSV value of a red retina is its red channel: its rim with little of the vessels the luma holds. Where
    either image's value is one edge (:data:`~.register.APERTURE`), the value's score is not read (NaN), as the
    aperture rule would not trust the luma's there; nor where the two images' colour is alike (no colour edit:
    :func:`~splitaudit.neighbors.verify.recoloured`); elsewhere it is."""
    from splitaudit.neighbors.register import APERTURE, isotropy, prepare

    here, along = _rim_windows()
    n = len(here)
    # the crops further along the rim with their hue turned: a colour edit, so their value is read (the turn keeps
    # the value, and its one edge)
    both = np.concatenate([here, np.stack([_hsv_edit(x, hue=30) for x in along])])
    a, b = np.arange(n), np.arange(n, 2 * n)
    got = verify_pairs(both, a, b, start=screen(both, a, b))
    columns = {"scale": got.scale, "angle": got.angle, "dx": got.dx, "dy": got.dy, "mirrored": got.mirrored}
    value = both.max(axis=-1)
    read = verify.value_scores(lambda rows: (value[rows], np.ones(len(rows), bool)), both, a, b, columns, np.arange(n))
    iso_luma, iso_value = isotropy(prepare(both)), isotropy(prepare(value))
    flat = np.minimum(iso_value[a], iso_value[b]) < APERTURE
    # the value is one edge more often than the luma: the case the rule is for
    assert flat.sum() > (np.minimum(iso_luma[a], iso_luma[b]) < APERTURE).sum(), (np.round(iso_luma, 4), np.round(iso_value, 4))
    assert np.isnan(read[flat]).all() and np.isfinite(read[~flat]).all() and (~flat).any()
    # chunks of 4 pairs: the same answer on one thread and on two (the chunks, not the threads, fix the sums)
    monkeypatch.setattr(verify, "CHUNK", 4)
    one, two = (verify.value_scores(lambda rows: (value[rows], np.ones(len(rows), bool)), both, a, b, columns,
                                    np.arange(n), workers=w) for w in (1, 2))
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, read, atol=1e-3)
    monkeypatch.undo()
    # as they are, two crops of one colourful scene: mostly the same colourfulness (no colour edit: not read), or a
    # value that is one edge; no pair's score is raised, where without the colour test one distinct pair would be
    plain = np.concatenate([here, along])
    got = verify_pairs(plain, a, b, start=screen(plain, a, b))
    columns = {"scale": got.scale, "angle": got.angle, "dx": got.dx, "dy": got.dy, "mirrored": got.mirrored}
    plain_values = lambda rows: (plain[rows].max(axis=-1), np.ones(len(rows), bool))  # noqa: E731
    alike = ~verify.recoloured(plain.max(axis=-1), rg.to_grey(plain), a, b)
    assert alike.sum() >= 2 * n // 3, alike
    read = verify.value_scores(plain_values, plain, a, b, columns, np.arange(n))
    assert not (read > got.score).any(), (np.round(read, 3), np.round(got.score, 3))
    monkeypatch.setattr(verify, "RECOLOURED", 0.0)
    ungated = verify.value_scores(plain_values, plain, a, b, columns, np.arange(n))
    assert (ungated > got.score + 0.03).any(), (np.round(ungated, 3), np.round(got.score, 3))
    monkeypatch.undo()
    # a hue turn, a saturation change and a grey copy are colour edits
    for edited in (np.stack([_hsv_edit(x, hue=30) for x in here]), np.stack([_hsv_edit(x, saturation=0.6) for x in here]),
                   np.repeat(rg.to_grey(here).round().astype(np.uint8)[..., None], 3, axis=3)):
        pair = np.concatenate([here, edited])
        assert verify.recoloured(pair.max(axis=-1), rg.to_grey(pair), a, b).all()


def test_a_copy_resampled_with_a_smoother_kernel_scores_as_a_copy(tiles) -> None:  # type: ignore[no-untyped-def]
    """A copy made with another resampling kernel than its source (the source grown to 32 px bicubic, the copy
    re-rendered bilinear and area-averaged, as Fashion-MNIST's planted copies are) lacks the finest band the score
    reads; each image is also scored blurred a little (:data:`~.register.RESOLUTION_TRIES`), the best kept."""
    from splitaudit.neighbors.verify import screen

    imgs, _, _ = tiles
    small = [cv2.resize(t, (28, 28), interpolation=cv2.INTER_AREA) for t in imgs[:36]]
    src = np.stack([cv2.resize(s, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC) for s in small])
    copies = np.stack([cv2.resize(cv2.resize(s, (4 * SIDE, 4 * SIDE), interpolation=cv2.INTER_LINEAR), (SIDE, SIDE),
                                  interpolation=cv2.INTER_AREA) for s in small])
    both = np.concatenate([src, copies])
    a, b = np.arange(36), np.arange(36, 72)
    start = screen(both, a, b)
    tried = verify_pairs(both, a, b, start=start).score
    saved = rg.RESOLUTION_TRIES
    try:
        rg.RESOLUTION_TRIES = ()
        plain = verify_pairs(both, a, b, start=start).score
    finally:
        rg.RESOLUTION_TRIES = saved
    assert (tried >= plain - 1e-9).all()
    # measured: 36 of 36 at 0.998 or more with the tries, 3 of 36 without
    assert (tried >= 0.998).mean() >= 0.9 and (plain >= 0.998).mean() <= 0.3, (np.sort(tried)[:4], np.sort(plain)[-4:])


def corner_crops(where: list, photos: dict, rows: list[int]) -> list[np.ndarray]:
    """For each tile of ``rows``, a crop of its 64-px region cut 25% or 20% (in turn) from each corner in turn."""
    corners = ((1, 1), (-1, 1), (1, -1), (-1, -1))
    out = []
    for j, s in enumerate(rows):
        name, cx, cy = where[s]
        crop = (0.25, 0.2)[j % 2]
        ox, oy = corners[j % 4]
        out.append(window(photos[name], cx + ox * 32 * crop, cy + oy * 32 * crop, 64 * (1 - crop)))
    return out


def test_screen_ranks_the_source_of_a_corner_crop_first(tiles) -> None:  # type: ignore[no-untyped-def]
    """A 20-25% crop from a corner (zoom 1.25-1.33, its centre 14-18% of the side off) is screened at the variant
    that shows the copy smaller, with the shift a crop inside its source may take: its source outscores the other
    tiles of the same photos (among the PER_IMAGE pairs registered; 7 of the 8 here: one 25% crop screens best at
    another variant, 0.743, third behind two other tiles of its photo at 0.814 and 0.759 since the screen's mirror is
    a true one; it was second by 0.009 before), and the starts at that variant lie at a shift the registration may
    take."""
    from splitaudit.neighbors.register import too_far
    from splitaudit.neighbors.verify import PER_IMAGE, screen, select

    imgs, where, photos = tiles
    rows = list(range(2, len(imgs), 6))
    copies = corner_crops(where, photos, rows)
    thumbs = np.concatenate([imgs, np.stack(copies)])
    n, m = len(imgs), len(copies)
    a = np.tile(np.arange(n), m)
    b = np.repeat(np.arange(n, n + m), n)
    sc = screen(thumbs, a, b)
    keep = select(sc, b, PER_IMAGE)
    source = np.zeros(len(a), bool)
    for j, s in enumerate(rows):
        source[(a == s) & (b == n + j)] = True
    assert keep[source].sum() >= len(rows) - 1, np.flatnonzero(~keep[source])
    quarter = source & np.isin(b, n + np.arange(0, m, 2)) & (sc.scale > 1.2)
    assert quarter.sum() >= 2  # the 25% crops (at 1.15 they may rank too, at a worse start)
    side = 24  # the screen's half-resolution side, in whose pixels dx, dy are shares
    params = np.stack([sc.scale[quarter], sc.angle[quarter], sc.dx[quarter] * side, sc.dy[quarter] * side], axis=1)
    assert not too_far(params, side).any()


def test_the_outward_screen_adds_the_crop_of_an_eval_image(tiles) -> None:  # type: ignore[no-untyped-def]
    """The other way round: a train image that is a 20-25% corner crop of an eval image. The outward screen (b
    shown bigger) adds that pair to the registered ones where the main screen's slots went to other tiles of the
    same photos, starts it zoomed out, and the registration then finds the crop; the main slots stay as they were."""
    from splitaudit.neighbors.verify import PER_IMAGE, screen, screen_outward, select, verify_pairs, widen

    imgs, where, photos = tiles
    rows = list(range(2, len(imgs), 4))
    crops = corner_crops(where, photos, rows)
    # train: the crops and every tile but their sources; eval: the sources
    others = [i for i in range(len(imgs)) if i not in rows]
    thumbs = np.concatenate([np.stack(crops), imgs[others], imgs[rows]])
    n_train, m = len(crops) + len(others), len(rows)
    a = np.tile(np.arange(n_train), m)
    b = np.repeat(np.arange(n_train, n_train + m), n_train)
    sc, out = screen_outward(thumbs, a, b)
    main = select(sc, b, PER_IMAGE)
    np.testing.assert_array_equal(sc.score, screen(thumbs, a, b).score)  # the main screen is the same one
    # the screen's answer is compact (14 bytes a pair, not a registration's 74); its starts are made for any rows
    assert sc.score.itemsize + sc.best.itemsize + sc.shift.itemsize == 14
    whole, some = screen(thumbs, a, b), np.flatnonzero(b % 3 == 0)
    for name, col in whole.select(some).to_arrays().items():
        np.testing.assert_array_equal(getattr(sc.start(some), name), col)
    assert whole.mirrored.any() and (whole.scale != 1).any() and (whole.dx != 0).any()  # not vacuous
    keep, start, also = widen(sc, out, b, main, both=b % 2 == 0)
    # the starts of the kept pairs alone (what the copy stage asks, not every candidate's) are the same values
    kept, start_kept, also_kept = widen(sc, out, b, main, both=b % 2 == 0, kept_only=True)
    np.testing.assert_array_equal(kept, keep)
    for name, col in start.select(keep).to_arrays().items():
        np.testing.assert_array_equal(getattr(start_kept, name), col)
        np.testing.assert_array_equal(getattr(also_kept, name), getattr(also.select(keep), name))
    assert len(start_kept) == keep.sum() < len(b)
    assert (keep | ~main).all()  # slots are only added, one an eval image at most
    assert np.bincount(b[keep & ~main] - n_train, minlength=m).max() <= 1
    partner = a == (b - n_train)  # crop j is train row j, its source eval row n_train + j
    added = partner & keep & ~main
    assert added.sum() >= 2  # the main screen alone missed some crops' sources...
    assert keep[partner].sum() >= m - 1  # ...and now nearly every one is registered
    got = verify_pairs(thumbs, a[added], b[added], start=start.select(added))
    assert (got.score > 0.9).all()
    assert (got.scale < 0.85).all()  # b (the source) shows the crop's content smaller


def test_screen_pairs_wants_one_weight_per_variant(tiles) -> None:  # type: ignore[no-untyped-def]
    from splitaudit.neighbors.screen import OUTWARD, screen_pairs
    from splitaudit.neighbors.verify import SIDE, prepare

    imgs, _, _ = tiles
    prep = prepare(imgs[:4], SIDE)
    with pytest.raises(InvalidParameterError, match="'weights'"):
        screen_pairs(prep, np.array([0, 1]), np.array([2, 3]), variants=OUTWARD, weights=(1.0, 0.9))
    assert len(screen_pairs(prep, np.array([0, 1]), np.array([2, 3]), variants=OUTWARD, weights=(0.95,))) == 2


def fmnist_twin(train: int, test: int) -> tuple[np.ndarray, int]:
    """A Fashion-MNIST ground-truth pair (train and test index, within 4 grey levels at 28 px) among 1,500 other
    training garments, as 32-px thumbnails: (images, the row of the train twin; the test image is the last)."""
    import gzip

    path = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    if not os.path.exists(path):
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    with gzip.open(path, "rb") as fh:
        xtr = np.frombuffer(fh.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(path.replace("train-", "t10k-"), "rb") as fh:
        xte = np.frombuffer(fh.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    assert np.abs(xte[test].astype(np.int16) - xtr[train]).mean() <= 4
    to32 = lambda a: np.repeat(cv2.resize(a, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2)  # noqa: E731
    rows = [train, *range(1500)]
    return np.stack([to32(xtr[k]) for k in rows] + [to32(xte[test])]), 0


def test_a_garment_within_four_grey_levels_of_its_train_twin_is_a_copy_whatever_its_registration() -> None:
    """Fashion-MNIST's test image 6428 lies 3.88 grey levels (mean absolute difference at 28 px) from train image
    12545: a duplicate by the dataset's ground truth. Registered, the overlap agrees a little better (3.51) at a
    structural score of 0.953, under the similar band of 1,500 training garments: the whole images as they lie
    must still count as agreeing pixels (they did not when the registered overlap took their place)."""
    imgs, twin = fmnist_twin(12545, 6428)
    c = find_copies(imgs, np.r_[np.zeros(len(imgs) - 1, np.int64), 1])
    k = np.flatnonzero((c.a == twin) & (c.b == len(imgs) - 1))
    assert len(k) == 1
    _, similar_cut = c.cuts(c.b[k])
    assert c.score[k[0]] < similar_cut[0]  # the structural score alone would not decide it
    assert c.copy[k[0]], (c.score[k], c.mad[k], c.still[k])


def test_pixels_that_agree_as_they_lie_keep_a_one_edge_garment_a_copy() -> None:
    """Fashion-MNIST's test image 5898 and train image 20075 (3.89 grey levels apart at 28 px, 3.72 at 32 px): both
    are nearly one straight edge (:func:`~splitaudit.neighbors.verify.demote_apertures` moves such pairs, decided
    by registration alone, to the similar band), but their pixels agree as they lie: independent evidence that
    keeps the copy (it was demoted when the registered overlap's agreement had taken the place of the whole
    images')."""
    imgs, twin = fmnist_twin(20075, 5898)
    c = find_copies(imgs, np.r_[np.zeros(len(imgs) - 1, np.int64), 1])
    k = np.flatnonzero((c.a == twin) & (c.b == len(imgs) - 1))
    assert len(k) == 1 and not c.still[k[0]]
    assert c.copy[k[0]], (c.score[k], c.mad[k], c.similar[k])


def test_the_null_sets_aside_a_train_twin_whose_pixels_agree_as_they_lie() -> None:
    """The calibration's null sets aside sampled training images with a copy inside train, among them those whose
    pixels agree with a neighbour's as they lie (as the decisions count them): Fashion-MNIST's train image 12545 and
    its twin (test image 6428, 3.88 grey levels apart) put in one training split register with an overlap that
    agrees a little better, at a structural score under the synthetic copies' 5th percentile."""
    imgs, twin = fmnist_twin(12545, 6428)
    rows = np.r_[0, np.arange(1, 301), len(imgs) - 1]  # the pair and 300 other garments, all in train
    cal = calibrate(imgs, rows, null_sample=len(rows), positive_sample=40, seed=0)
    assert cal.null_pixel_agree >= 2, cal  # each of the two is a sampled image with the other as its neighbour


@pytest.mark.parametrize("side", [64, 32])
def test_the_calibration_beside_the_eval_pairs_gives_the_answer_it_gives_before_them(photos, side: int) -> None:  # type: ignore[no-untyped-def]
    """The calibration runs on a thread of its own beside the eval images' search, screen and registration (tiny
    images: beside the search, on the worker pool the screen then takes over): the copy stage's every column
    equals the stage's with the same calibration made first, and the process's BLAS thread limits are what they
    were before the stage."""
    from contextlib import nullcontext

    from conftest import tiles_of

    from splitaudit.features.workers import local_pool

    tiles = [t for p in photos.values() for t in tiles_of(p, 96, 24, step=40)]
    thumbs = np.stack([np.asarray(t.resize((side, side))) for t in tiles])
    split = (np.arange(len(thumbs)) % 4 == 0).astype(np.int64)
    with (local_pool(2) if side < rg.SIDE else nullcontext()) as pool:
        _beside_equals_before(thumbs, split, pool)
        assert pool is None or pool.answered["processes"] > 0  # the worker served the stage


def _beside_equals_before(thumbs: np.ndarray, split: np.ndarray, pool) -> None:  # type: ignore[no-untyped-def]
    import threading

    from threadpoolctl import threadpool_info

    # find_copies first: the libraries it loads (faiss's OpenMP and OpenBLAS) are in the picture from then on
    find_copies(thumbs[:8], split[:8], workers=2, pool=pool)
    limits = {i["filepath"]: i["num_threads"] for i in threadpool_info()}
    names: set[str] = set()
    threading.setprofile(lambda *_: names.add(threading.current_thread().name))
    try:
        beside = find_copies(thumbs, split, workers=2, pool=pool)
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    assert any(n.startswith("splitaudit-eval-pairs") for n in names), names
    assert {i["filepath"]: i["num_threads"] for i in threadpool_info()} == limits
    first = calibrate(thumbs, np.flatnonzero(split == 0), per_image=2, workers=2, pool=pool)
    assert first == beside.calibration
    after = find_copies(thumbs, split, workers=2, calibration=first, pool=pool)
    got, want = beside.to_arrays(), after.to_arrays()
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_large_base_is_searched_in_cells_and_finds_the_copies_exhaustive_search_finds(photos, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """From IVF_FROM base rows the candidate searches visit the nearest IVF cells of the base's PCA projections, not
    every row. Here (the threshold lowered to this base of overlapping windows, dense like real photo crops) the
    planted copies' sources are found as often as by the exhaustive search, and the answer is the same every time and
    whatever the query sets' cut: the cells come from the base alone, with fixed seeds."""
    from splitaudit.neighbors import candidates as cd

    base, where = [], []
    for name, p in photos.items():
        h, w = p.shape[:2]
        for cy in range(40, h - 40, 14):
            for cx in range(40, w - 40, 14):
                if p[cy - 32 : cy + 32, cx - 32 : cx + 32].std() >= 20:
                    base.append(window(p, cx, cy, 64))
                    where.append((name, cx, cy))
    base = np.stack(base)
    rng = np.random.default_rng(5)
    src = np.sort(rng.choice(len(base), 150, replace=False))
    kinds = list(COPIES.values())
    copies = []
    for j, s in enumerate(src.tolist()):
        kw, edit = kinds[j % len(kinds)]
        name, cx, cy = where[s]
        im = window(photos[name], cx, cy, 64, **kw)
        copies.append(edit(im) if edit else im)
    thumbs = np.concatenate([base, np.stack(copies)])
    split = np.r_[np.zeros(len(base), np.int64), np.ones(len(copies), np.int64)]
    assert len(base) > 2_000

    def found(cand) -> np.ndarray:  # type: ignore[no-untyped-def]
        pairs = set(zip(cand.a.tolist(), cand.b.tolist()))
        return np.array([(int(s), len(base) + j) in pairs for j, s in enumerate(src)])

    exhaustive = cd.candidate_pairs(thumbs, split)
    monkeypatch.setattr(cd, "IVF_FROM", 1_000)
    monkeypatch.setattr(cd, "IVF_QUERIES", 100)
    monkeypatch.setattr(cd, "REDUCE_PAIRS", 1e5)  # the views' searches are reduced (and so in cells) here too
    assert cd.use_cells(len(base), len(copies), 256)
    assert not cd.use_cells(len(base), 99, 256) and not cd.use_cells(999, len(copies), 256)  # few queries, small base
    in_cells = cd.candidate_pairs(thumbs, split)
    assert found(exhaustive).mean() > 0.9
    assert found(in_cells).sum() >= found(exhaustive).sum() - 1
    # the same every time; the cells are a function of the base alone
    again = cd.candidate_pairs(thumbs, split)
    assert all(np.array_equal(getattr(in_cells, f), getattr(again, f), equal_nan=f.endswith("score"))
               for f in ("a", "b", "pixel_rank", "pixel_score", "pixel_view"))
    view = pixel_vectors(thumbs)
    cells = cd.PcaCells(view[: len(base)])
    assert cells.index.ntotal == len(base) and 0 < cells.index.nprobe < cells.index.nlist
    whole = cd._search(view[: len(base)], [view[len(base) :]], 20, reduce_above=0, cells=cells)[0]
    parts = cd._search(view[: len(base)], [view[len(base) : len(base) + 70], view[len(base) + 70 :]], 20, reduce_above=0,
                       cells=cd.PcaCells(view[: len(base)]))
    assert np.array_equal(whole[1], np.concatenate([parts[0][1], parts[1][1]]))
    assert np.array_equal(whole[0], np.concatenate([parts[0][0], parts[1][0]]))
    assert cells.index.nprobe == cd.cells_probed(cells.index.nlist)


def test_the_cells_visited_are_a_share_up_to_1m_images_and_a_fixed_count_beyond() -> None:
    """The copy stage's cells: ~4% visited while that is at most MAX_CELLS_PROBED (every base of 1M images' 794k
    training rows or fewer: the figures measured there hold), then that count, so a query's work grows with the
    base's square root (2 sqrt(n) cells) and not with the base."""
    from splitaudit.neighbors import candidates as cd
    from splitaudit.neighbors import dense

    for base_rows in (500_000, 794_058):  # IVF_FROM, and 1M of benchmarks/scale.py's images
        nlist = dense.ivf_nlist(base_rows)
        assert cd.cells_probed(nlist) == dense.ivf_nprobe(nlist) <= cd.MAX_CELLS_PROBED
    work = []
    for base_rows in (10**7, 10**8):
        nlist = dense.ivf_nlist(base_rows)
        assert cd.cells_probed(nlist) == cd.MAX_CELLS_PROBED < dense.ivf_nprobe(nlist)
        work.append(cd.cells_probed(nlist) * base_rows / nlist)  # rows a query compares
    assert 3 < work[1] / work[0] < 3.4  # ~sqrt(10) for 10x the base


def _fashion_thumbs(n: int) -> np.ndarray:
    """The first ``n`` Fashion-MNIST test garments grown to 32 px (bicubic, as ``benchmarks/copy_suites.py``), RGB."""
    import gzip

    import cv2

    path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    if not os.path.exists(path):
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    with gzip.open(path, "rb") as fh:
        x = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    return np.stack([np.repeat(cv2.resize(g, (32, 32), interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2) for g in x])


def test_each_pixel_searchs_nearest_garment_is_registered_among_look_alikes() -> None:
    """Among look-alike garments the coarse screen often ranks distinct ones above a copy shifted by a pixel or two,
    which a pixel search still finds nearest: such a candidate is registered whatever its screen rank (in the
    decisions and, alike, in the calibration's null). Here every copy's source is nearest in some pixel search;
    without the rule 6 of them went unregistered and 52 of the 60 copies were found, with it 58 (none falsely)."""
    import cv2

    from splitaudit.neighbors.verify import PER_IMAGE, find_copies

    train = _fashion_thumbs(1500)
    rng = np.random.default_rng(3)
    src = rng.choice(len(train), 60, replace=False)
    copies = []
    for k, s in enumerate(src.tolist()):
        dx, dy = (1 + k % 2) * (1 if k % 4 < 2 else -1), (k // 4) % 3 - 1  # 1-2 px sideways, -1..1 px up or down
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        copies.append(cv2.warpAffine(train[s], m, (32, 32), borderMode=cv2.BORDER_REPLICATE))
    thumbs = np.concatenate([train, np.stack(copies)])
    split = np.r_[np.zeros(len(train), np.int64), np.ones(len(copies), np.int64)]
    got = find_copies(thumbs, split, workers=1)
    nearest = got.pixel_rank == 0
    assert got.registered[nearest].all()
    # the case in point: pixel-nearest pairs the screen ranks below each eval image's best PER_IMAGE
    order = np.lexsort((-got.screen_score, got.b))
    first = np.r_[True, got.b[order][1:] != got.b[order][:-1]]
    place = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    screen_rank = np.empty(len(order), np.int64)
    screen_rank[order] = place
    rescued = nearest & (screen_rank >= PER_IMAGE)
    assert rescued.sum() >= 3
    source = dict(zip((len(train) + np.arange(len(src))).tolist(), src.tolist()))
    is_source = np.array([source[b] == a for a, b in zip(got.a.tolist(), got.b.tolist())])
    assert (rescued & is_source).any()  # some of them are the copies' true sources
    found = {b for a, b in zip(got.a[got.copy].tolist(), got.b[got.copy].tolist()) if source[b] == a}
    assert len(found) >= 0.9 * len(src), len(found)
    # nothing else is reported as a copy of these garments
    assert all(source[b] == a for a, b in zip(got.a[got.copy].tolist(), got.b[got.copy].tolist()))


def test_a_registration_also_tries_the_other_screens_start(tiles) -> None:  # type: ignore[no-untyped-def]
    """A train image cut 20-25% from a corner of its eval image often peaks higher in the main screen, at a zoom
    near 1, than in the outward one at its true zoom of ~0.77; started from the main screen alone the registration
    never leaves that zoom. ``widen``'s ``also`` (the other screen's start, for the pairs asked: the candidate that
    best lies inside its eval image, :func:`~splitaudit.neighbors.candidates.inside_best`) gives it the outward zoom too."""
    from splitaudit.neighbors.verify import screen_outward, verify_pairs, widen

    imgs, where, photos = tiles
    rows = list(range(1, len(imgs), 2))
    crops = corner_crops(where, photos, rows)
    thumbs = np.concatenate([np.stack(crops), imgs[rows]])
    m = len(rows)
    a, b = np.arange(m), np.arange(m, 2 * m)  # crop j (train) against its source (eval)
    sc, out = screen_outward(thumbs, a, b)
    asked = np.arange(m) % 3 != 0
    keep, start, also = widen(sc, out, b, np.ones(m, bool), both=asked)
    np.testing.assert_array_equal(np.isfinite(also.score), asked)
    np.testing.assert_array_equal(also.score[asked], np.minimum(sc.score, out.score)[asked])  # the other screen's
    alone = verify_pairs(thumbs, a, b, start=start)
    both = verify_pairs(thumbs, a, b, start=start, also=also)
    # the pairs not asked register as before (the refinement runs over the pairs together: its last digits move)
    np.testing.assert_allclose(both.score[~asked], alone.score[~asked], atol=1e-4)
    # another start only adds, up to the refinement's last digits (a higher template peak may refine a hair lower)
    assert (both.score >= alone.score - 1e-3).all()
    lost = asked & (sc.score > out.score)  # started at the main screen's zoom
    wrong = lost & (alone.scale > 0.85)
    assert wrong.sum() >= 4, wrong.sum()  # registered at the wrong zoom (measured: 8 of 16 asked)...
    found = wrong & (both.score > 0.95) & (both.scale < 0.85)
    assert found.sum() >= wrong.sum() / 2, (alone.score[wrong], both.score[wrong])  # ...not now (6 of the 8)


def test_inside_best_finds_the_train_crop_among_an_eval_images_candidates(crowded_tiles) -> None:  # type: ignore[no-untyped-def]
    """A copy is as often the crop as the source: train images cut 20-25% from a corner of their eval image, in a
    crowded training split (overlapping tiles of eight photos, brick, grass). Among all of an eval image's train
    candidates, the one that best lies inside it (shrunk and placed as the ``crops`` search places a query), kept
    where it lies inside far better than it matches whole (INSIDE_MARGIN), is mostly its crop, some of which the
    whole-image pixel view does not rank first."""
    from splitaudit.neighbors.candidates import inside_best, pixel_vectors

    imgs, where = crowded_tiles
    n = len(imgs)
    rows = np.sort(np.random.default_rng(3).choice(n, 40, replace=False))
    corners = ((1, 1), (-1, 1), (1, -1), (-1, -1))
    crops = []
    for j, s in enumerate(rows.tolist()):
        p, cx, cy = where[s]
        crop, (ox, oy) = (0.25, 0.2)[j % 2], corners[j % 4]
        crops.append(window(p, cx + ox * 32 * crop, cy + oy * 32 * crop, 64 * (1 - crop)))
    others = np.setdiff1d(np.arange(n), rows)
    # train: the crops, then every tile but their sources; eval: the sources
    thumbs = np.concatenate([np.stack(crops), imgs[others], imgs[rows]])
    n_train, m = len(rows) + len(others), len(rows)
    a = np.tile(np.arange(n_train), m)
    b = np.repeat(np.arange(n_train, n_train + m), n_train)
    best = inside_best(thumbs, a, b)
    assert np.bincount(b[best] - n_train, minlength=m).max() <= 1  # one pair an eval image at most
    partner = a == b - n_train  # crop j is train row j, its source eval row n_train + j
    v = pixel_vectors(thumbs)
    cos = np.einsum("pd,pd->p", v[a], v[b])
    nearest = np.zeros(len(a), bool)
    for q in range(m):
        mine = np.flatnonzero(b == n_train + q)
        nearest[mine[np.argmax(cos[mine])]] = True
    # measured: 13 crops kept of 40, 3 other images (ungated, the best pairs: 25 crops, 15 others); the whole view's
    # nearest is the crop for 11 eval images
    assert (best & partner).sum() >= 10, (best & partner).sum()
    assert (best & ~partner).sum() <= (best & partner).sum() / 2, (best & ~partner).sum()
    assert (best & partner & ~nearest).sum() >= 3  # crops the whole view does not rank first
    # the answer does not depend on the pairs' order
    shuffle = np.random.default_rng(0).permutation(len(a))
    np.testing.assert_array_equal(inside_best(thumbs, a[shuffle], b[shuffle]), best[shuffle])


def test_crop_hypotheses_are_the_view_of_the_shrunk_image_pasted_on_a_blank_canvas(crowded_tiles) -> None:  # type: ignore[no-untyped-def]
    """The ``crops`` search's query views, computed with pooling products, equal their definition: the image shrunk
    to CROP_WINDOW, pasted at each spot of a zero 32-px canvas, the canvas's 2 x 2 cell means over the cells' share
    inside the window, mean-centred and zero outside it, unit norm. Grey and colour, 32- and 64-px thumbnails."""
    import cv2

    from splitaudit.neighbors.candidates import CROP_POSITIONS, CROP_WINDOW, PIXEL_SIDE, crop_hypotheses

    imgs = crowded_tiles[0][:50]
    big = np.stack([cv2.resize(t, (64, 64), interpolation=cv2.INTER_LINEAR) for t in imgs])
    for thumbs in (imgs, big, rg.to_grey(imgs).round().astype(np.uint8)):
        g = rg.to_grey(thumbs)
        if g.shape[1:] != (32, 32):
            g = np.stack([cv2.resize(x, (32, 32), interpolation=cv2.INTER_AREA) for x in g])
        w = round(32 * CROP_WINDOW)
        small = np.stack([cv2.resize(x, (w, w), interpolation=cv2.INTER_AREA) for x in g])
        f = 32 // PIXEL_SIDE
        want = []
        for oy in np.linspace(0, 32 - w, CROP_POSITIONS).round().astype(int):
            for ox in np.linspace(0, 32 - w, CROP_POSITIONS).round().astype(int):
                canvas = np.zeros((len(g), 32, 32), np.float64)
                mask = np.zeros((32, 32))
                canvas[:, oy : oy + w, ox : ox + w] = small
                mask[oy : oy + w, ox : ox + w] = 1
                m = mask.reshape(PIXEL_SIDE, f, PIXEL_SIDE, f).mean(axis=(1, 3))
                c = canvas.reshape(len(g), PIXEL_SIDE, f, PIXEL_SIDE, f).mean(axis=(2, 4)) / np.maximum(m, 1e-6)
                v = ((c - ((c * m).sum(axis=(1, 2)) / m.sum())[:, None, None]) * m).reshape(len(g), -1)
                want.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        got = crop_hypotheses(thumbs)
        assert len(got) == CROP_POSITIONS**2 and all(h.shape == (len(g), PIXEL_SIDE**2) for h in got)
        for h, ref in zip(got, want):
            assert h.dtype == np.float32
            np.testing.assert_allclose(h, ref, atol=2e-6)


def test_the_similar_band_is_read_off_the_fitted_tail_and_holds_steady_across_draws() -> None:
    """The similar band's residual cut comes from the null's fitted tail at its rate, as the copy cut does, not from
    one order statistic of the sample: drawn 30 times as the calibration draws its null (355 samples kept), it moves
    far less than the sample's 99th percentile (the 4th largest value), and on held-out samples it flags distinct
    neighbours near its rate. (Measured on the held-out-like 32-px suite, ten seeds: the 99th percentile, which
    bound the band at every seed, moved 0.72-1.04 in z, the fitted tail 0.68-0.77.)"""
    from splitaudit.neighbors.calibrate import SIMILAR_RATE, null_model

    rng = np.random.default_rng(5)
    law = lambda n: np.tanh(rng.gumbel(0.8, 0.15, n))  # noqa: E731
    band, q99 = [], []
    for _ in range(30):
        null = law(355)
        band.append(null_model(null, None, 0.999, 1e-3, SIMILAR_RATE).similar_residual
                    + null_model(null, None, 0.999, 1e-3, SIMILAR_RATE).intercept)
        q99.append(float(np.quantile(np.arctanh(null), 0.99)))
    assert np.std(band) < 0.75 * np.std(q99), (np.std(band), np.std(q99))  # measured: 0.57 of it (the old floor: 0.91)
    held = law(200000)
    rates = [float(np.mean(held >= np.tanh(c))) for c in band]
    assert 0.5 * SIMILAR_RATE < np.median(rates) < 2 * SIMILAR_RATE, np.median(rates)


def test_the_null_survives_a_third_of_copies_inside_train_and_keeps_look_alikes() -> None:
    """Copies inside train scoring like the synthetic copies (0.97-0.999) in a quarter or a third of the null: the
    likely-copy test against the rest's tail set none aside (the rest's tail was theirs) and the cut went to the
    ceiling. Tested first against the tail of the samples that do not score like copies (at the copy cut's rate),
    they are set aside and the cut is the clean null's. Distinct look-alikes whose upper third scores like copies, explained by crowding
    (garments), stay in the null: its cut keeps held-out look-alikes near the aimed rate."""
    from splitaudit.neighbors.calibrate import Calibration, null_model

    rng = np.random.default_rng(2)
    for share in (0.25, 0.35):
        clean = np.tanh(rng.gumbel(0.8, 0.15, 400))
        k = int(400 * share)
        copies = np.tanh(rng.uniform(np.arctanh(0.97), np.arctanh(0.999), k))
        null = np.concatenate([clean[: 400 - k], copies])
        m0, m = null_model(clean, None, 0.97, 1e-3, 2e-2), null_model(null, None, 0.97, 1e-3, 2e-2)
        assert m.likely[400 - k :].mean() > 0.95 and m.likely[: 400 - k].mean() < 0.01, m.likely.sum()
        # measured: every copy set aside, no distinct sample; the cut 0.959 and 0.955 against the clean 0.958 and 0.950
        cut0, cut = np.tanh(m0.intercept + m0.copy_residual), np.tanh(m.intercept + m.copy_residual)
        assert abs(np.arctanh(cut) - np.arctanh(cut0)) < 0.25, (cut, cut0)
    crowd = rng.uniform(0.2, 1.4, 80400)
    looks = np.tanh(1.0 + 1.1 * crowd + rng.gumbel(0.0, 0.12, len(crowd)))
    fit, held = slice(0, 400), slice(400, None)
    copy_like = float(np.quantile(looks[fit], 2 / 3))
    model = null_model(looks[fit], crowd[fit], copy_like, 1e-3, 2e-2)
    assert model.likely.sum() <= 12, model.likely.sum()  # measured: 1, as with the test against the rest's tail alone
    cal = Calibration(0.99, 0.9, 1e-3, 2e-2, 400, *(0.0,) * 4, 0, 0.0, 0.0, 0, *(0.0,) * 4, "", 0, 0,
                      crowding_intercept=model.intercept, crowding_slope=model.slope, crowding_lo=0.2,
                      crowding_hi=1.4, crowding_median=0.8, copy_residual=model.copy_residual,
                      similar_residual=model.similar_residual, copy_floor=0.0, similar_floor=0.0)
    cut, _ = cal.cuts(crowd[held])
    assert np.mean(looks[held] >= cut) < 3e-3, np.mean(looks[held] >= cut)


def test_copies_inside_train_under_the_copy_like_gate_are_set_aside_by_their_levels(crowded_tiles, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Copies inside train made by a shift or a crop and JPEG score under the synthetic copies' 5th percentile, where
    the likely-copy tests never look, and their pixels do not agree within 4 grey levels: they stayed in the null and
    raised the copy cut. Their blurred levels agree as a copy's do; the null now sets aside samples whose pair the
    level rule's cut takes for a copy (scoring at least the null pairs' median), and the cut is the clean split's
    again."""
    from splitaudit.neighbors import calibrate as calibrate_module
    from splitaudit.neighbors.calibrate import level_copies

    # the rule itself: levels at most the cut, scores at least the kept pairs' median; nothing without a cut
    lv = np.array([0.02, 0.02, 0.2, np.nan, 0.05, 0.01])
    sc = np.array([0.9, 0.5, 0.95, 0.99, 0.92, 0.97])  # the kept pairs' median: 0.91
    kept = np.array([True, True, True, True, True, False])
    assert level_copies(lv, sc, kept, 0.06).tolist() == [False, False, False, False, True, True]
    assert not level_copies(lv, sc, kept, float("nan")).any()

    imgs, where = crowded_tiles
    n = len(imgs)
    pick = np.sort(np.random.default_rng(1).choice(n, 24, replace=False))
    copies = [jpeg(window(where[i][0], where[i][1], where[i][2], 64, zoom=1 / 0.9, shift=(1.0, -1.0)), 60) if k % 2 == 0
              else jpeg(window(where[i][0], where[i][1], where[i][2], 64, shift=(2.0, 1.0)), 50)
              for k, i in enumerate(pick.tolist())]
    thumbs = np.concatenate([imgs, np.stack(copies)])
    train = np.arange(len(thumbs))
    with_rule = calibrate(thumbs, train, seed=0)
    # distinct brick and grass tiles register at 0.94-0.99 with levels of 0.068-0.098, under this split's level cut
    # (0.1): NULL_LEVEL_CAP keeps them in the null (measured: 10 set aside without it, 1 with it, a near-blank tile)
    clean = calibrate(imgs, np.arange(n), seed=0)
    assert clean.null_level_agree <= 2
    monkeypatch.setattr(calibrate_module, "level_copies", lambda levels, *_: np.zeros(len(levels), bool))
    without = calibrate(thumbs, train, seed=0)
    # measured: 4 samples set aside by their levels; cuts 0.9902 against 0.9919 without the rule and 0.9891 on the
    # clean split (0.9893, 0.9932, 0.9892 before register.CROP_ZOOMS, which moved a few null samples' registrations;
    # the clean split was calibrated without the rule until then, and fell from 0.9897 to 0.9871 so)
    assert with_rule.null_level_agree >= 3 and without.null_level_agree == 0
    assert with_rule.copy_cut < without.copy_cut
    assert abs(with_rule.copy_cut - clean.copy_cut) < 0.5 * abs(without.copy_cut - clean.copy_cut)


def test_work_either_thread_may_take_runs_once_and_hands_its_answer_or_error_to_the_other() -> None:
    """The eval images' cross searches run on whichever thread claims them first (the calibration's, once done, or
    the helper's, once it has searched the views); the other waits for the answer, or gets the error."""
    import threading

    from splitaudit.neighbors.verify import _EitherThread

    calls: list[str] = []
    release = threading.Event()

    def work() -> int:
        calls.append(threading.current_thread().name)
        release.wait(5)
        return 42

    either = _EitherThread(work)
    got: list[int] = []
    helper = threading.Thread(target=lambda: got.append(either.result()), name="helper")
    helper.start()
    while not calls:  # the helper claimed it first and runs it
        threading.Event().wait(0.01)
    either.claim()  # this thread comes second: nothing to run
    release.set()
    helper.join(5)
    assert got == [42] and calls == ["helper"]
    assert either.result() == 42 and calls == ["helper"]

    either = _EitherThread(lambda: 1 // 0)  # claimed here: the error is raised here and handed to the waiter
    with pytest.raises(ZeroDivisionError):
        either.claim()
    with pytest.raises(ZeroDivisionError):
        either.result()

    either = _EitherThread(lambda: calls.append("never"))  # this side failed before claiming: the waiter gets why
    either.cancel(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        either.result()
    assert "never" not in calls


def _hsv_edit(img: np.ndarray, hue: float = 0.0, saturation: float = 1.0) -> np.ndarray:
    """``img`` with its hue turned and its saturation scaled in HSV space, as TensorFlow's ``adjust_hue`` /
    ``adjust_saturation`` and colour-jitter augmentations edit colour."""
    x = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)
    x[..., 0] = (x[..., 0] + hue) % 360
    x[..., 1] = np.clip(x[..., 1] * saturation, 0, 1)
    return np.clip(np.round(255 * cv2.cvtColor(x, cv2.COLOR_HSV2RGB)), 0, 255).astype(np.uint8)


def _with_copies(imgs: np.ndarray, copies: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 48 tiles and their edited ``copies`` as one set: (thumbnails, split index, training rows); the copies and
    tiles 7, 20, 33 and 46 (distinct eval images) are the evaluation split."""
    thumbs = np.concatenate([imgs, np.stack(copies)])
    split = np.zeros(len(thumbs), np.int64)
    split[len(imgs) :] = 1
    split[[7, 20, 33, 46]] = 1
    return thumbs, split, np.flatnonzero(split == 0)


def _found_by_floor(thumbs: np.ndarray, split: np.ndarray, train: np.ndarray, monkeypatch: pytest.MonkeyPatch,
                    floor: str, runs: dict[str, float]) -> tuple[dict, dict, object]:
    """Per run (name: the value of ``verify.<floor>``, the score a second reading starts from; 2.0: never): the pairs
    found as copies and every record's best score, calibrated and decided on the same images; and the last
    calibration."""
    found, best, cal = {}, {}, None
    for name, value in runs.items():
        monkeypatch.setattr(verify, floor, value)
        cal = calibrate(thumbs, train, null_sample=44, positive_sample=26, seed=0)
        m = find_copies(thumbs, split, calibration=cal, per_image=2)
        found[name] = {(int(a), int(b)) for a, b, c in zip(m.a, m.b, m.copy) if c}
        best[name] = m.best_score
    monkeypatch.undo()
    return found, best, cal


def test_copies_recoloured_in_hsv_space_are_found_on_their_value(tiles) -> None:  # type: ignore[no-untyped-def]
    """Hue and saturation edits keep each pixel's largest channel (the HSV value) and move its luma: scored on the
    value too, every such copy is found; on the luma alone some are not; distinct tiles stay far under the cut."""
    imgs, where, photos = tiles
    edits = [({"shift": (1.0, 0.0)}, {"hue": 35}), ({}, {"hue": -30}), ({"shift": (0.0, 1.0)}, {"saturation": 1.8}),
             ({"shift": (1.0, 1.0)}, {"saturation": 0.3}), ({}, {"hue": 30, "saturation": 1.5})]
    sources = [3, 14, 27, 38, 45]
    extra = [_hsv_edit(window(photos[where[s][0]], *where[s][1:], 64, **kw), **edit)
             for s, (kw, edit) in zip(sources, edits)]
    thumbs, split, train = _with_copies(imgs, extra)
    values = lambda rows: (thumbs[rows].max(axis=-1), np.ones(len(rows), bool))  # noqa: E731
    truth = {(s, len(imgs) + i) for i, s in enumerate(sources)}
    found, best = {}, {}
    for name, v in (("luma", None), ("value", values)):
        cal = calibrate(thumbs, train, null_sample=44, positive_sample=26, seed=0, values=v)
        m = find_copies(thumbs, split, calibration=cal, per_image=2, values=v)
        found[name] = {(int(a), int(b)) for a, b, c in zip(m.a, m.b, m.copy) if c}
        best[name] = m.best_score
    assert found["value"] == truth
    assert len(found["luma"]) < len(truth)  # else this test proves nothing
    copies = np.arange(len(imgs), len(thumbs))
    # copies decided on their luma keep its score (an eval image with a copy already is not read again); the others
    # score higher on their value
    raised = best["value"][copies] > best["luma"][copies]
    assert (best["value"][copies] >= best["luma"][copies]).all() and raised.sum() >= len(truth) - len(found["luma"])
    # a pair is read on the value where one image is in colour; two grey images keep their luma's score
    a, b = np.array([3, 14]), np.array([len(imgs), len(imgs) + 1])
    columns = {"scale": np.ones(2), "angle": np.zeros(2), "dx": np.zeros(2), "dy": np.zeros(2),
               "mirrored": np.zeros(2, bool)}
    grey_only = lambda rows: (thumbs[rows].max(axis=-1), np.zeros(len(rows), bool))  # noqa: E731
    assert np.isnan(verify.value_scores(grey_only, thumbs, a, b, columns, np.arange(2))).all()
    assert np.isfinite(verify.value_scores(values, thumbs, a, b, columns, np.arange(2))).all()
    distinct = np.array([7, 20, 33, 46])
    np.testing.assert_array_equal(best["value"][distinct], best["luma"][distinct])  # far under VALUE_FROM
    assert (best["value"][distinct] < verify.VALUE_FROM).all()


def test_copies_whose_levels_were_edited_are_found_with_them_matched(tiles, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A clipped exposure, a strong contrast curve or sepia move the grey levels by more than the gain and offset the
    NCC ignores: scored again with a's levels mapped onto b's (:func:`~splitaudit.neighbors.register.tone_matched`),
    each such copy scores at least as high, and more of them are found; distinct tiles are not found either way.
    (These 48 overlapping tiles put the cuts at 0.988-0.995: a rotated or shifted copy here can stay under.)"""
    from conftest import levels_edit

    imgs, where, photos = tiles
    edits = [({"shift": (1.0, 0.0)}, "bright"), ({"angle": 4.0}, "bright"), ({}, "contrast"),
             ({"shift": (0.0, 1.0)}, "contrast"), ({"shift": (1.0, 1.0)}, "sepia"), ({}, "bright")]
    sources = [3, 14, 27, 38, 45, 9]
    extra = [levels_edit(window(photos[where[s][0]], *where[s][1:], 64, **kw), kind)
             for s, (kw, kind) in zip(sources, edits)]
    thumbs, split, train = _with_copies(imgs, extra)
    truth = {(s, len(imgs) + i) for i, s in enumerate(sources)}
    found, best, _ = _found_by_floor(thumbs, split, train, monkeypatch, "TONE_FROM",
                                     {"luma": 2.0, "tone": verify.TONE_FROM})
    assert found["luma"] < found["tone"] <= truth  # measured: 2 of the 6 on the luma alone, 4 with the tone reading
    assert len(found["tone"]) >= 4
    copies = np.arange(len(imgs), len(thumbs))
    assert (best["tone"][copies] >= best["luma"][copies]).all()
    assert (best["tone"][copies] > best["luma"][copies] + 0.03).sum() >= 2  # the rotated and the shifted copy
    distinct = np.array([7, 20, 33, 46])
    assert (best["tone"][distinct] < verify.TONE_FROM).all()


def test_levels_are_matched_only_where_they_rank_alike(tiles, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The tone reading reads a pair only where its levels rank alike on the overlap (an edit of the levels keeps
    their order): NaN for distinct tiles of one photo, registered as well as they go. A copy whose levels moved by a
    gain and offset is read and scores as the luma's NCC does. Clipped, curved or sepia copies that the luma scores
    near a cut (0.9-0.99) are read, and most of them score higher so. Its chunks give the same answer on one thread
    and on two."""
    from conftest import levels_edit

    imgs, where, photos = tiles
    srcs = np.arange(0, 48, 4)
    n = len(srcs)
    plain = [window(photos[where[s][0]], *where[s][1:], 64, shift=(1.0, 0.0)) for s in srcs]
    a, b = np.arange(n), np.arange(n, 2 * n)

    def read(copies: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple]:  # type: ignore[type-arg]
        both = np.concatenate([imgs[srcs], np.stack(copies)])
        got = verify_pairs(both, a, b, start=screen(both, a, b))
        columns = {"scale": got.scale, "angle": got.angle, "dx": got.dx, "dy": got.dy, "mirrored": got.mirrored}
        return got.score, verify.tone_scores(both, a, b, columns, np.arange(n)), (both, columns)

    # the next tile of the same photo (12 tiles a photo): distinct, often of the same texture
    luma, tone, _ = read([imgs[s + 1] for s in srcs])
    assert np.isnan(tone).all(), (np.round(tone, 3), np.round(luma, 3))
    luma, tone, _ = read([np.clip(np.round(0.8 * p.astype(np.float32) + 20), 0, 255).astype(np.uint8) for p in plain])
    assert np.isfinite(tone).all() and (np.abs(tone - luma) < 0.01).all(), (np.round(tone, 3), np.round(luma, 3))
    lumas, tones = [], []
    for kind in ("bright", "contrast", "sepia"):
        luma, tone, (both, columns) = read([levels_edit(p, kind) for p in plain])
        lumas.append(luma)
        tones.append(tone)
    luma, tone = np.concatenate(lumas), np.concatenate(tones)
    near = (luma >= 0.9) & (luma < 0.99)
    done = near & np.isfinite(tone)
    assert near.sum() >= 8 and done.sum() >= near.sum() - 1, (np.round(luma, 3), np.round(tone, 3))
    assert (tone[done] > luma[done]).sum() >= 0.8 * done.sum() and np.median(tone[done] - luma[done]) > 0.01
    monkeypatch.setattr(verify, "CHUNK", 4)
    one, two = (verify.tone_scores(both, a, b, columns, np.arange(n), workers=w) for w in (1, 2))
    monkeypatch.undo()
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, tones[-1], atol=1e-6)


def test_average_ranks_are_scipys_rankdata() -> None:
    """:func:`~splitaudit.neighbors.register.average_ranks` ranks each row as SciPy's ``rankdata`` does, ties (a
    clipped highlight's equal levels, the masked entries' infinities) sharing their average rank."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    x = rng.integers(0, 12, (40, 300)).astype(np.float64)  # many ties
    x[:, :50] = np.inf
    x[3] = 7.0  # one row of a single value
    np.testing.assert_array_equal(rg.average_ranks(x), rankdata(x, axis=1))
    y = rng.normal(size=(5, 1000))
    np.testing.assert_array_equal(rg.average_ranks(y), rankdata(y, axis=1))


def test_a_jpegs_block_grid_is_read_at_32_px_in_a_coarser_band(tiles, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """block_steps tells 32-px tiles saved as JPEG (quality 50-70) from the same tiles unsaved; jpeg_scores scores
    only pairs where either image shows the grid, only tiny images (a 64-px thumbnail: all NaN) and not on a plain
    background; the JPEG copies it reads score higher so, most of them; distinct tiles scored so stay under the
    copies. One thread or two, the same."""
    import cv2

    from splitaudit.neighbors.register import JPEG_STEPS, block_steps, to_grey

    imgs, _, _ = tiles
    small = imgs  # 32 px
    saved = np.stack([jpeg(t, 50 + 10 * (k % 3)) for k, t in enumerate(small)])
    steps_saved, steps_raw = block_steps(to_grey(saved)), block_steps(to_grey(small))
    assert (steps_saved >= JPEG_STEPS).mean() >= 0.4 and (steps_raw >= JPEG_STEPS).mean() <= 0.05, (
        np.round(steps_saved, 2), np.round(steps_raw, 2))
    n = 24
    a = np.arange(n)

    def read(both: np.ndarray, b: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
        got = verify_pairs(both, a, b, start=screen(both, a, b))
        columns = {"scale": got.scale, "angle": got.angle, "dx": got.dx, "dy": got.dy, "mirrored": got.mirrored}
        return got.score, verify.jpeg_scores(both, a, b, columns, np.arange(n), **kw)

    both = np.concatenate([small[:n], saved[:n]])
    luma, coarse = read(both, np.arange(n, 2 * n))
    blocky = steps_saved[:n] >= JPEG_STEPS
    assert (np.isfinite(coarse) == (blocky | (steps_raw[:n] >= JPEG_STEPS))).all()
    assert (coarse[blocky] > luma[blocky]).mean() >= 0.7, (np.round(coarse, 3), np.round(luma, 3))
    # distinct tiles (the next tile of the same photo, saved alike): read, and well under the copies' coarse scores
    _, other = read(np.concatenate([small[:n], saved[1 : n + 1]]), np.arange(n, 2 * n))
    assert np.nanmedian(other) < np.nanmedian(coarse[blocky]) - 0.1, (np.round(other, 3), np.round(coarse, 3))
    assert np.isnan(read(both, np.arange(n, 2 * n), plain=True)[1]).all()
    big = np.stack([cv2.resize(t, (64, 64), interpolation=cv2.INTER_CUBIC) for t in imgs[:n]])
    big = np.concatenate([big, np.stack([jpeg(t, 50) for t in big])])
    assert np.isnan(read(big, np.arange(n, 2 * n))[1]).all()  # 64-px thumbnails (photos'): not read
    monkeypatch.setattr(verify, "STEPS_BLOCK", 7)  # the steps measured a few images at a time: the same reading
    np.testing.assert_array_equal(read(both, np.arange(n, 2 * n))[1], coarse)
    monkeypatch.setattr(verify, "CHUNK", 5)
    np.testing.assert_array_equal(read(both, np.arange(n, 2 * n), workers=2)[1],
                                  read(both, np.arange(n, 2 * n), workers=1)[1])


def test_copies_saved_as_jpeg_are_found_in_a_coarser_band(tiles, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Copies re-graded and saved as JPEG (quality 35 and 50) at 32 px: their levels moved (no level rule) and the
    fine band the score reads is lost. Scored in a coarser band too where the block grid shows
    (:func:`~splitaudit.neighbors.verify.jpeg_scores`), each scores at least as high and more of them are found;
    distinct tiles are not found either way."""
    imgs, where, photos = tiles
    grade = lambda x: np.clip(np.round(0.8 * x.astype(np.float32) + 30), 0, 255).astype(np.uint8)  # noqa: E731
    edits = [{}, {"shift": (1.0, 0.0)}, {"zoom": 1.08}, {"shift": (0.0, 1.0)}]
    sources = [3, 14, 27, 38, 45, 9, 1, 22]
    extra = [jpeg(grade(window(photos[where[s][0]], *where[s][1:], 64, **edits[k % 4])), 35 + 15 * (k % 2))
             for k, s in enumerate(sources)]
    thumbs, split, train = _with_copies(imgs, extra)
    truth = {(s, len(imgs) + i) for i, s in enumerate(sources)}
    found, best, cal = _found_by_floor(thumbs, split, train, monkeypatch, "JPEG_FROM",
                                       {"usual": 2.0, "jpeg": verify.JPEG_FROM})
    assert found["usual"] < found["jpeg"] == truth  # measured: 5 of the 8 in the usual band alone
    copies = np.arange(len(imgs), len(thumbs))
    assert (best["jpeg"][copies] >= best["usual"][copies]).all()
    distinct = np.array([7, 20, 33, 46])
    assert (best["jpeg"][distinct] < cal.copy_cut).all()


def test_a_corner_crop_started_at_zoom_one_is_registered_at_its_zoom(tiles, calibration) -> None:  # type: ignore[no-untyped-def]
    """The screen's zoom-1 peak can beat its own 1.3 variant for a 20-25% crop from a corner (the variant is weighted
    down), and the refinement moves the zoom by 5% at most: from a start at zoom 1 the registration also re-finds
    zoom 1.25 (:data:`~splitaudit.neighbors.register.CROP_ZOOMS`) where the start fits only so-so. Before, none of
    these 48 crops (half of them saved at JPEG q60) was registered within 5% of its zoom (all at 1.12 or less); now
    26 are, at a median score of 0.989. Neighbouring tiles of one photo registered so stay under the copy cut. End to
    end (:func:`find_copies`, the 25% crops of every other tile among four distinct tiles): 20 of 24 found, 17 before."""
    imgs, where, photos = tiles
    n = len(imgs)
    crops = [jpeg(c, 60) if j % 4 < 2 else c for j, c in enumerate(corner_crops(where, photos, list(range(n))))]
    thumbs = np.concatenate([imgs, np.stack(crops)])
    grey = np.stack([np.asarray(Image.fromarray(t).convert("L")) for t in thumbs])
    prep = rg.prepare(grey, rg.SIDE)
    r = rg.register_pairs(prep, np.arange(n), np.arange(n, 2 * n), starts=[(False, 1.0, 0.0)] * n)
    truth = np.array([1 / (1 - (0.25, 0.2)[j % 2]) for j in range(n)])
    at_zoom = np.abs(np.log(r.params[:, 0] / truth)) < 0.05
    assert at_zoom.sum() >= n // 2, np.round(r.params[:, 0], 2)
    assert np.median(r.score[at_zoom]) >= 0.98, np.round(r.score[at_zoom], 3)
    same = np.array([where[i][0] == where[i + 1][0] for i in range(n - 1)])
    da, db = np.arange(n - 1)[same], np.arange(1, n)[same]
    rd = rg.register_pairs(prep, da, db, starts=[(False, 1.0, 0.0)] * len(da))
    assert (rd.score < calibration.copy_cut).all(), (np.round(np.sort(rd.score)[-3:], 3), calibration.copy_cut)
    rows = list(range(0, n, 2))
    thumbs = np.concatenate([imgs, np.stack([crops[s] for s in rows])])
    split = np.zeros(len(thumbs), np.int64)
    split[n:] = 1
    split[[1, 15, 29, 43]] = 1  # distinct eval images
    m = find_copies(thumbs, split, calibration=calibration, per_image=2)
    found = {(int(a), int(b)) for a, b, c in zip(m.a, m.b, m.copy) if c}
    truth = {(s, n + j) for j, s in enumerate(rows)}
    assert len(found & truth) >= 19 and found <= truth, (len(found & truth), found - truth)
