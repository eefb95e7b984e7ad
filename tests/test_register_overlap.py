"""The registration's batched score (splitaudit/neighbors/register.py:_Stack) on real photos: its overlap mask is
worked out per row as an interval of columns; it must be exactly the pixels whose mapped point lies inside both
content boxes, and the score of a pure shift must be the NCC of the two crops computed directly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")

from splitaudit.neighbors import register as rg


def _photo_tiles(n: int, side: int, seed: int) -> np.ndarray:
    """n grey side-px tiles from the camera photo (float32)."""
    photo = skimage_data.camera().astype(np.float32)
    rng = np.random.default_rng(seed)
    ys, xs = rng.integers(0, photo.shape[0] - side, n), rng.integers(0, photo.shape[1] - side, n)
    return np.stack([photo[y : y + side, x : x + side] for y, x in zip(ys, xs)])


def _brute_mask(stack: rg._Stack, params: np.ndarray, box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    """Per pixel of a's frame: inside a's inset box and mapped (float64) inside b's inset box."""
    side = stack.side
    m = rg._matrices(params, stack.c)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64)
    xb = m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys + m[:, 0, 2, None, None]
    yb = m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys + m[:, 1, 2, None, None]
    ia, ib = rg._inset(box_a, side)[:, :, None, None], rg._inset(box_b, side)[:, :, None, None]
    eps = 1e-9
    inside_b = (xb >= ib[:, 0] - eps) & (xb <= ib[:, 2] + eps) & (yb >= ib[:, 1] - eps) & (yb <= ib[:, 3] + eps)
    inside_a = (xs >= ia[:, 0]) & (xs <= ia[:, 2]) & (ys >= ia[:, 1]) & (ys <= ia[:, 3])
    r0, r1, c0, c1 = stack.crop
    assert not (inside_a[:, :r0].any() or inside_a[:, r1:].any() or inside_a[:, :, :c0].any() or inside_a[:, :, c1:].any())
    return (inside_a & inside_b)[:, r0:r1, c0:c1].reshape(len(params), -1)


def test_overlap_mask_is_the_mapped_boxes():
    side, p = 48, 120
    rng = np.random.default_rng(3)
    a, b = _photo_tiles(p, side, 0), _photo_tiles(p, side, 1)
    full = np.array([0, 0, side - 1, side - 1])
    framed = np.column_stack([rng.integers(0, 9, p), rng.integers(0, 9, p), rng.integers(39, 48, p), rng.integers(39, 48, p)])
    box_a = np.where(np.arange(p)[:, None] < 40, full, framed)
    box_b = np.where(np.arange(p)[:, None] % 3 == 0, full, framed[::-1])
    params = np.column_stack([np.exp(rng.uniform(-0.25, 0.25, p)), rng.uniform(-12, 12, p), rng.uniform(-7, 7, p),
                              rng.uniform(-7, 7, p)])
    params[:20] = (1.0, 0.0, 0.0, 0.0)  # the identity: every edge lands exactly on a box edge
    params[20:50, :2] = (1.0, 0.0)
    params[20:50, 2:] = rng.integers(-6, 7, (30, 2))  # whole-pixel shifts: edges on edges again
    params[50:60, 1] = 0.0  # zoom without rotation: rows at one b coordinate
    stack = rg._Stack(a, box_a, b, box_b)
    mask, n, _ = stack._sample(slice(0, p), params, stack.mosaic)
    want = _brute_mask(stack, params, box_a, box_b)
    assert np.array_equal(mask, want)
    assert np.array_equal(n, want.sum(axis=1))


def test_shift_score_is_the_ncc_of_the_crops():
    side, p = 48, 12
    a = rg.prepare(_photo_tiles(p, side, 4)).image  # band-passed, as the registration scores them
    rng = np.random.default_rng(5)
    shifts = rng.integers(-5, 6, (p, 2))
    b = np.stack([np.roll(x, (int(dy), int(dx)), axis=(0, 1)) for x, (dx, dy) in zip(a, shifts)])
    b += rng.normal(0, 0.5, b.shape).astype(np.float32)
    box = np.tile([0, 0, side - 1, side - 1], (p, 1))
    stack = rg._Stack(a, box, b, box)
    # b = a moved by (dx, dy): x_b = x_a + (dx, dy), i.e. d = -(dx, dy) in x_b = k R (x_a - c - d) + c
    params = np.column_stack([np.ones(p), np.zeros(p), -shifts[:, 0], -shifts[:, 1]]).astype(np.float64)
    score, _ = stack.score(params)
    m = 3  # MARGIN at 48 px
    for i, (dx, dy) in enumerate(shifts.tolist()):
        # a's pixels whose shifted point stays inside b's inset box, and b's pixels there
        ys, xs = np.mgrid[0:side, 0:side]
        keep = ((xs >= m) & (xs <= side - 1 - m) & (ys >= m) & (ys <= side - 1 - m)
                & (xs + dx >= m) & (xs + dx <= side - 1 - m) & (ys + dy >= m) & (ys + dy <= side - 1 - m))
        u = a[i][keep].astype(np.float64)
        v = b[i][ys[keep] + dy, xs[keep] + dx].astype(np.float64)
        want = np.corrcoef(u, v)[0, 1]
        assert score[i] == pytest.approx(want, abs=1e-4)
