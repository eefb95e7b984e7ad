"""The registration's batched score (splitaudit/neighbors/register.py:_Stack) on real photos: one channel is warped
and the overlap mask compared on the sample points; both must be what the two-channel warp (b and its content box)
gave, and the score of a pure shift must be the NCC of the two crops computed directly."""

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


def _two_channel(stack: rg._Stack, params: np.ndarray, b: np.ndarray, box_b: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """What the score used before (sixth session): b and its inset box as two channels of one OpenCV remap at the
    unrounded float32 points; the mask where the box channel exceeds 0.999, inside a's inset box."""
    import cv2

    side, t, p = stack.side, stack.side + 2, len(params)
    ins = rg._inset(box_b, side)
    mosaic = np.zeros((p, t, t, 2), np.float32)
    mosaic[:, 1:-1, 1:-1, 0] = b
    r = np.arange(side)
    mosaic[:, 1:-1, 1:-1, 1] = (((r >= ins[:, 1:2]) & (r <= ins[:, 3:4]))[:, :, None]
                                & ((r >= ins[:, 0:1]) & (r <= ins[:, 2:3]))[:, None, :])
    m = rg._matrices(params, stack.c).astype(np.float32)
    g = r.astype(np.float32)
    x = (m[:, 0, 0, None, None] * g[None, None, :]) + (m[:, 0, 1, None, None] * g[None, :, None] + m[:, 0, 2, None, None] + 1.0)
    y = (m[:, 1, 0, None, None] * g[None, None, :]) + (m[:, 1, 1, None, None] * g[None, :, None] + m[:, 1, 2, None, None])
    np.clip(y, -1.0, float(side), out=y)
    y += (1.0 + t * np.arange(p, dtype=np.float32))[:, None, None]
    w = cv2.remap(mosaic.reshape(-1, t, 2), x.reshape(-1, side), y.reshape(-1, side), cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(p, side, side, 2)
    r0, r1, c0, c1 = stack.crop
    in_a = stack.in_a.reshape(p, r1 - r0, c1 - c0)
    mask = (w[:, r0:r1, c0:c1, 1] > 0.999) & in_a
    return mask.reshape(p, -1), w[:, r0:r1, c0:c1, 0].reshape(p, -1)


def test_overlap_mask_is_the_two_channel_warps():
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
    params[20:50, 2:] = rng.integers(-6, 7, (30, 2)) + rng.choice([0.0, 1 / 64, -1 / 64, 0.3], (30, 2))  # edge ties
    params[50:60, 1] = 0.0  # zoom without rotation
    stack = rg._Stack(a, box_a, b, box_b)
    mask, n, w = stack._sample(slice(0, p), params, stack.mosaic)
    want, want_w = _two_channel(stack, params, b, box_b)
    assert np.array_equal(mask, want)
    assert np.array_equal(n, want.sum(axis=1))
    assert np.abs(np.where(mask, w - want_w, 0.0)).max() < 1e-3  # grey levels 0-255: the same points, bilinear


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
