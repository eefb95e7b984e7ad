"""Pixel confirmation of candidate pairs: its memo of thumbnails and crop views is bounded by bytes, not by count,
and a small budget changes the work, never the answers. Real photos (scikit-image / scikit-learn samples)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from splitaudit.neighbors.confirm import (
    SHARES,
    Views,
    THUMB,
    NEVER,
    ByteLRU,
    NextUseCache,
    _operators,
    _pillow_views,
    _standardise,
    aligned_ncc,
    confirm_pairs,
    exact_sums,
    image_thumbnail,
    mirror_views,
    next_uses,
    pair_order,
    raw_views,
    record_thumbnails,
    thumbnail,
)


def test_byte_lru_never_holds_more_than_its_budget() -> None:
    lru = ByteLRU(10_000)
    made: list[int] = []

    def make(n: int) -> np.ndarray:
        made.append(n)
        return np.zeros(n, np.uint8)

    for key, size in enumerate([4_000, 3_000, 2_000, 5_000, 1_000, 9_000, 500]):
        lru.get(key, lambda size=size: make(size))
        assert lru.held <= lru.budget
        assert lru.held == sum(v.nbytes for v in lru._items.values() if v is not None)
    assert lru.peak == 10_000  # 3k + 2k + 5k, after the 4k item went: full, never over
    lru.get(6, lambda: make(1))  # the most recent item is still held: no new work
    assert made[-1] == 500
    big = lru.get("big", lambda: make(20_000))  # larger than the whole budget: returned, not kept
    assert big is not None and len(big) == 20_000 and "big" not in lru._items and lru.held <= lru.budget
    assert lru.made == 8
    assert lru.get("none", lambda: None) is None and lru.held <= lru.budget  # a failed decode costs nothing


def test_next_uses_gives_each_positions_next_one_with_the_same_key() -> None:
    keys = np.array([5, 2, 5, 7, 2, 5, 9])
    assert next_uses(keys).tolist() == [2, 4, 5, NEVER, NEVER, NEVER, NEVER]
    assert next_uses(np.zeros(0, np.int64)).tolist() == []


def test_next_use_cache_lets_go_of_the_value_needed_last_and_keeps_none_never_needed_again() -> None:
    """Belady's rule on a known request sequence: against LRU on a cyclic sequence one slot larger than the cache
    (LRU's worst case: it makes every value every time), it makes fewer; never over its budget."""
    size = 1_000
    seq = np.tile(np.arange(5), 6)  # five keys in a cycle, a cache of four values
    nxt = next_uses(seq)
    far, lru = NextUseCache(4 * size), ByteLRU(4 * size)
    for r, key in enumerate(seq.tolist()):
        far.get(key, lambda: np.zeros(size, np.uint8), int(nxt[r]))
        lru.get(key, lambda: np.zeros(size, np.uint8))
        assert far.held <= far.budget and far.held == sum(v.nbytes for v, _ in far._items.values() if v is not None)
    assert lru.made == len(seq) and far.made < 12  # 5 first makes, then about one a cycle
    assert far.held == 0  # nothing is needed after the last request: nothing kept
    assert far.peak == 4 * size
    once = NextUseCache(10 * size)
    once.get("x", lambda: np.zeros(size, np.uint8), NEVER)
    assert once.held == 0 and once.made == 1
    # a value needed later than everything held is not kept in a full cache; a sooner one replaces the farthest
    full = NextUseCache(2 * size)
    for key, n in (("a", 10), ("b", 20)):
        full.get(key, lambda: np.zeros(size, np.uint8), n)
    full.get("late", lambda: np.zeros(size, np.uint8), 30)
    assert set(full._items) == {"a", "b"}
    full.get("soon", lambda: np.zeros(size, np.uint8), 5)
    assert set(full._items) == {"a", "soon"}
    full.touch("a", 40)  # a's next use moved past soon's: the next value goes in its place
    full.get("mid", lambda: np.zeros(size, np.uint8), 15)
    assert set(full._items) == {"soon", "mid"}
    assert full.get(None, lambda: None, 1) is None and full.held <= full.budget  # a failed decode costs nothing


def _crops(photos: dict[str, np.ndarray], count: int = 3) -> list[np.ndarray]:
    """Four crops of each of ``count`` real photos: copies (a shifted crop, a mirrored one) and a distinct tile."""
    out = []
    for photo in list(photos.values())[:count]:
        h, w = photo.shape[:2]
        s = min(h, w) // 2
        for dy, dx in ((0, 0), (8, 12), (s // 2, s // 2)):
            out.append(np.ascontiguousarray(photo[dy : dy + s, dx : dx + s]))
        out.append(np.ascontiguousarray(photo[:s, :s][:, ::-1]))
    return out


def _view_bytes(image: np.ndarray) -> int:
    """What one image's :class:`Views` hold."""
    return Views(raw_views(thumbnail(image).astype(np.uint8))).nbytes


def test_confirm_answers_do_not_depend_on_the_cache_budget(photos: dict[str, np.ndarray]) -> None:
    images = _crops(photos)
    n = len(images)
    a, b = (x.ravel() for x in np.triu_indices(n, 1))
    decodes = [0]

    def thumb(i: int) -> np.ndarray:
        decodes[0] += 1
        return thumbnail(images[i])

    caches: list[NextUseCache] = []
    roomy = confirm_pairs(a, b, thumb, cache_bytes=2**30, caches=caches)
    assert decodes[0] == n  # each image decoded once when everything fits
    view_bytes = _view_bytes(images[0])  # one image's views
    decodes[0] = 0
    small: list[NextUseCache] = []
    budget = int(3.5 * view_bytes / SHARES[1])  # views of three images, ten thumbnails
    tight = confirm_pairs(a, b, thumb, cache_bytes=budget, caches=small)
    assert all(c.peak <= c.budget for c in small) and sum(c.budget for c in small) <= budget
    assert small[1].peak >= 3 * view_bytes and small[0].peak >= 6 * THUMB * THUMB  # the caches were used
    # every image's views made once, its mirror's crops once (image 0 is never a b, so never mirrored); with less
    # memory, some made again ...
    assert caches[1].made == n and caches[2].made == n - 1
    assert small[1].made > n
    np.testing.assert_array_equal(tight.ncc, roomy.ncc)  # ... and the very same answers
    np.testing.assert_array_equal(tight.flipped, roomy.flipped)
    # the memo returns what the direct computation gives, pair by pair
    for j in range(0, len(a), 17):
        ncc, flipped = aligned_ncc(thumbnail(images[a[j]]), thumbnail(images[b[j]]))
        assert (ncc, flipped) == (tight.ncc[j], tight.flipped[j])
    # the shifted crop and the mirrored crop of one photo are copies; a far crop is not
    first = {(int(x), int(y)): j for j, (x, y) in enumerate(zip(a, b))}
    assert roomy.ncc[first[(0, 1)]] > 0.9 and roomy.ncc[first[(0, 3)]] > 0.9 and roomy.flipped[first[(0, 3)]]
    assert roomy.ncc[first[(0, 2)]] < roomy.ncc[first[(0, 1)]]


def test_an_undecodable_image_gives_nan_and_is_not_retried_while_remembered(photos: dict[str, np.ndarray]) -> None:
    images = _crops(photos)[:3]
    calls: dict[int, int] = {}

    def thumb(i: int) -> np.ndarray | None:
        calls[i] = calls.get(i, 0) + 1
        return None if i == 1 else thumbnail(np.asarray(Image.fromarray(images[i])))

    got = confirm_pairs(np.array([0, 0, 1]), np.array([1, 2, 2]), thumb)
    assert np.isnan(got.ncc[0]) and np.isnan(got.ncc[2]) and np.isfinite(got.ncc[1])
    assert calls == {0: 1, 1: 1, 2: 1}


def test_pairs_of_one_image_are_visited_together_so_a_small_cache_makes_each_view_once(photos: dict[str, np.ndarray]) -> None:
    """Groups of crops of one photo (every pair within a group) whose pairs arrive shuffled, under shuffled image
    numbers: the pair order visits each group's pairs in one run, so a cache of eight images' crop views makes each
    image's views once per orientation, and decodes it once."""
    images = _crops(photos, len(photos))
    n = len(images)
    rng = np.random.default_rng(3)
    label = rng.permutation(n)  # image numbers unrelated to the groups
    pairs = [(label[g + i], label[g + j]) for g in range(0, n, 4) for i in range(4) for j in range(i + 1, 4)]
    pairs = [pairs[k] for k in rng.permutation(len(pairs))]
    a, b = np.array([min(p) for p in pairs]), np.array([max(p) for p in pairs])
    group = np.argsort(label) // 4  # image number -> its group
    order = pair_order(a, b)
    assert sorted(order.tolist()) == list(range(len(a)))  # a permutation of the pairs
    runs = 1 + int(np.count_nonzero(np.diff(group[a[order]])))
    assert runs == n // 4  # one run of pairs per group
    thumbs = {i: thumbnail(images[i]) for i in range(n)}
    caches: list[NextUseCache] = []
    budget = int(8 * _view_bytes(images[0]) / SHARES[1]) + 1
    got = confirm_pairs(a, b, thumbs.__getitem__, cache_bytes=budget, caches=caches)
    assert caches[0].made == n and caches[1].made == n and caches[2].made <= n
    within = np.array([aligned_ncc(thumbs[x], thumbs[y])[0] for x, y in zip(a[:5], b[:5])])
    np.testing.assert_array_equal(got.ncc[:5], within)


def test_crop_views_as_matrix_products_match_pillows_crops_and_resizes(photos: dict[str, np.ndarray]) -> None:
    """raw_views computes the 37 crops x resizes as products with Pillow's own BILINEAR weights, rounded after each
    pass as Pillow rounds (half up): under 2% of the grey levels differ from Pillow's (fixed-point ties), by 1, and
    every crop view's correlation with another image's is within 0.002 of Pillow's."""
    rng = np.random.default_rng(1)
    for photo in photos.values():
        h, w = photo.shape[:2]
        for _ in range(3):
            s = int(rng.integers(24, min(h, w) // 2))
            y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
            t = thumbnail(np.ascontiguousarray(photo[y : y + s, x : x + s]))
            other = thumbnail(np.ascontiguousarray(photo[y + 3 : y + s + 3, x : x + s]))
            for mirrored in (False, True):
                new, ref = raw_views(t, mirrored), _pillow_views(t, mirrored)
                assert new.shape == ref.shape and new.dtype == ref.dtype == np.uint8
                diff = np.abs(new.astype(int) - ref)
                assert diff.max() <= 1 and (diff > 0).mean() < 0.02
                o_new = _standardise(raw_views(other).astype(np.float32))[0]
                o_ref = _standardise(_pillow_views(other).astype(np.float32))[0]
                c_new = _standardise(new.astype(np.float32)) @ o_new
                c_ref = _standardise(ref.astype(np.float32)) @ o_ref
                assert np.abs(c_new - c_ref).max() <= 0.002


def _dense_views(t: np.ndarray, mirrored: bool = False) -> np.ndarray:
    """raw_views as it was before the horizontal passes were stacked (kept verbatim as the reference): one product
    per side and pass, rounded with a clip."""
    img = np.asarray(t, np.float64)
    if mirrored:
        img = img[:, ::-1]
    out = []
    for n, ops in _operators():
        rows = np.clip(np.floor(img @ ops.T + 0.5), 0, 255)
        block = np.clip(np.floor(ops @ rows + 0.5), 0, 255).astype(np.uint8)
        out.append(block.reshape(n, 48, n, 48).transpose(0, 2, 1, 3).reshape(n * n, 48, 48))
    return np.concatenate(out)


def test_crop_views_are_exact_so_stacked_and_mirrored_views_equal_the_reference(photos: dict[str, np.ndarray]) -> None:
    """The crop views' sums are exact in float64 (float32 weights times grey levels), so stacking every side's
    horizontal pass into one product, and taking a mirror's crops from the thumbnail's own crops at the mirrored
    offsets (Pillow's weights are symmetric), give the very same grey levels as the per-side products: every value
    equal, on crops of real photos at several sizes (upscaled, downscaled), both orientations, and on extremes."""
    assert exact_sums()
    rng = np.random.default_rng(7)
    thumbs = [np.zeros((THUMB, THUMB), np.float32), np.full((THUMB, THUMB), 255, np.float32),
              (np.indices((THUMB, THUMB)).sum(0) % 2 * 255).astype(np.float32)]  # blank, white, a checkerboard
    for photo in photos.values():
        h, w = photo.shape[:2]
        for _ in range(4):
            s = int(rng.integers(12, min(h, w)))
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            thumbs.append(thumbnail(np.ascontiguousarray(photo[y : y + s, x : x + s])))
    for t in thumbs:
        own = raw_views(t)
        np.testing.assert_array_equal(own, _dense_views(t))
        np.testing.assert_array_equal(raw_views(t, True), _dense_views(t, True))
        np.testing.assert_array_equal(mirror_views(own, t), _dense_views(t, True))


def test_helper_threads_change_the_work_never_the_answers(photos: dict[str, np.ndarray]) -> None:
    """With helper threads making the thumbnails and crop views ahead of the pairs (any number of them, roomy or
    tight caches, an undecodable image among them), every answer is the one the loop gives alone."""
    images = _crops(photos, len(photos))
    n = len(images)
    rng = np.random.default_rng(5)
    pairs = {(int(x), int(y)) for x, y in rng.integers(0, n, (400, 2)) if x != y}
    a = np.array([min(p) for p in sorted(pairs)])
    b = np.array([max(p) for p in sorted(pairs)])
    assert len(a) >= 64  # enough pairs to start the helpers (PREPARE_FROM)

    def thumb(i: int) -> np.ndarray | None:
        return None if i == 5 else thumbnail(images[i])

    alone = confirm_pairs(a, b, thumb, workers=1)
    assert np.isnan(alone.ncc[(a == 5) | (b == 5)]).all() and np.isfinite(alone.ncc[(a != 5) & (b != 5)]).all()
    budget = int(3.5 * _view_bytes(images[0]) / SHARES[1])
    for workers in (2, 3):
        for cache_bytes in (2**30, budget):
            caches: list[NextUseCache] = []
            got = confirm_pairs(a, b, thumb, workers=workers, cache_bytes=cache_bytes, caches=caches)
            np.testing.assert_array_equal(got.ncc, alone.ncc)
            np.testing.assert_array_equal(got.flipped, alone.flipped)
            assert all(c.peak <= c.budget for c in caches)


def test_an_error_in_a_helper_thread_is_raised_by_the_loop(photos: dict[str, np.ndarray]) -> None:
    """A thumbnail that raises (not a decode failure: those are ``None``) stops the confirmation with that error,
    whichever thread made it first, and no helper thread outlives the call."""
    import threading

    images = _crops(photos, len(photos))
    n = len(images)
    a, b = (x.ravel() for x in np.triu_indices(n, 1))

    def thumb(i: int) -> np.ndarray:
        if i == 7:
            raise RuntimeError("boom")
        return thumbnail(images[i])

    before = threading.active_count()
    try:
        confirm_pairs(a, b, thumb, workers=2)
    except RuntimeError as e:
        assert str(e) == "boom"
    else:
        raise AssertionError("no error")
    assert threading.active_count() == before


def test_standardise_in_place_gives_the_former_values(photos: dict[str, np.ndarray]) -> None:
    """_standardise works in place on the caller's float copy and sums the squares itself: every value equals the
    former ``(v - mean) / max(np.linalg.norm(v - mean), 1e-6)``, on real crop views, a blank and a white image."""
    thumbs = [np.zeros((THUMB, THUMB), np.float32), np.full((THUMB, THUMB), 255, np.float32)]
    thumbs += [thumbnail(np.ascontiguousarray(p[:40, :40])) for p in photos.values()]
    for t in thumbs:
        for v in (raw_views(t), raw_views(t, True)):
            x = v.reshape(len(v), -1).astype(np.float32)
            x = x - x.mean(axis=1, keepdims=True)
            former = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
            np.testing.assert_array_equal(_standardise(v.astype(np.float32)), former)


def test_thumbnails_without_the_array_round_trip_are_the_former_ones(photos: dict[str, np.ndarray], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """image_thumbnail (and record_thumbnails, which decodes into it) gives the values of the former
    ``np.asarray(Image.fromarray(rgb).convert("L").resize((THUMB, THUMB), BILINEAR), float32)``, at THUMB and at
    other sizes; the files go through load_rgb's own decoding either way."""
    from splitaudit.features.embeddings.compute import load_rgb
    from splitaudit.scan import scan

    def former(rgb: np.ndarray) -> np.ndarray:
        im = Image.fromarray(rgb).convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.float32)

    for k, photo in enumerate(photos.values()):
        for side in (THUMB, 32, 150):
            rgb = np.asarray(Image.fromarray(photo).resize((side, side + 7)))
            got = image_thumbnail(Image.fromarray(rgb))
            assert got.dtype == np.float32 and got.shape == (THUMB, THUMB)
            np.testing.assert_array_equal(got, former(rgb))
            np.testing.assert_array_equal(thumbnail(rgb), former(rgb))
        folder = tmp_path / ("train", "val")[k % 2] / "c"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).resize((40 + k, 32)).save(folder / f"{k}.jpg", quality=90)
        Image.fromarray(photo).resize((120, 96 + k)).save(folder / f"{k}.png")
    ds = scan([str(tmp_path / "train"), str(tmp_path / "val")])
    thumb = record_thumbnails(ds, max_pixels=10**8)
    for i, r in enumerate(ds.records):
        np.testing.assert_array_equal(thumb(i), former(load_rgb(r.path, None, THUMB)))


def test_correlating_unstandardised_crops_gives_the_standardised_views_ncc(photos: dict[str, np.ndarray]) -> None:
    """correlate (crops scaled by their norms, means folded into the product, the mirror's crops read off the
    image's own) gives the NCC of the definition: every standardised crop of a against b's full view and of b against
    a's, b as it lies and mirrored (ncc_from_views over standard_views), within float32 rounding, and the same
    orientation; on crops of real photos, a shifted and a mirrored copy, a blank and a white image."""
    from splitaudit.neighbors.confirm import correlate, mirror_crops, ncc_from_views, standard_views

    images = _crops(photos)
    thumbs = [thumbnail(im) for im in images]
    thumbs += [np.zeros((THUMB, THUMB), np.float32), np.full((THUMB, THUMB), 255, np.float32)]
    mirrored = 0
    for x in range(len(thumbs)):
        for y in range(len(thumbs)):
            a8, b8 = thumbs[x].astype(np.uint8), thumbs[y].astype(np.uint8)
            want = ncc_from_views(standard_views(a8), standard_views(b8), standard_views(b8, True))
            got = correlate(Views(raw_views(a8)), Views(raw_views(b8)), mirror_crops(b8))
            assert abs(got[0] - want[0]) < 1e-5, (x, y, got, want)
            assert got[1] == want[1], (x, y, got, want)
            mirrored += got[1]
    assert mirrored > 0  # the mirrored crops of each photo were found mirrored
