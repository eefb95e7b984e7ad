"""The vectorised hashes are bit-for-bit imagehash's, on real photos, mirrored included."""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

from splitaudit.features.decode import to_gray
from splitaudit.features.hashing import batch_hash_inputs, hamming, hash_all, hash_inputs

from conftest import tiles_of


def test_phash_and_dhash_equal_imagehash(photos: dict) -> None:
    images = [t for name in ("china", "coffee", "astronaut") for t in tiles_of(photos[name], 96, 6)]
    images.append(Image.fromarray(photos["rocket"]).convert("L"))  # a grey image and a non-square one
    inputs = [hash_inputs(to_gray(im)) for im in images]
    h = hash_all(np.stack([p for p, _ in inputs]), np.stack([d for _, d in inputs]))
    for i, im in enumerate(images):
        mirror = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        assert int(h["phash"][i]) == int(str(imagehash.phash(im)), 16)
        assert int(h["dhash"][i]) == int(str(imagehash.dhash(im)), 16)
        assert int(h["phash_flip"][i]) == int(str(imagehash.phash(mirror)), 16)
        assert int(h["dhash_flip"][i]) == int(str(imagehash.dhash(mirror)), 16)


def test_hamming_counts_bits() -> None:
    a = np.array([0, 0xFFFFFFFFFFFFFFFF, 0b1011], dtype=np.uint64)
    b = np.array([0, 0, 0b0001], dtype=np.uint64)
    assert hamming(a, b).tolist() == [0, 64, 2]


def test_batched_resize_equals_imagehash_on_draft_sized_photos(photos: dict) -> None:
    """The batch path (one Pillow call per axis for a stack of same-sized images) gives imagehash's hashes exactly,
    for the sizes JPEG draft decoding produces (32-127 px, square or not) and for odd ones."""
    rng = np.random.default_rng(4)
    images: list[Image.Image] = []
    for name in ("china", "coffee", "astronaut", "rocket"):
        grey = Image.fromarray(photos[name]).convert("L")
        for w, h in [(32, 32), (32, 32), (40, 32), (33, 57), (64, 48), (64, 48), (100, 75), (127, 127), (20, 28), (20, 28)]:
            x, y = int(rng.integers(0, grey.width - w)), int(rng.integers(0, grey.height - h))
            images.append(grey.crop((x, y, x + w, y + h)))
    p, d = batch_hash_inputs(images)
    single = [hash_inputs(im) for im in images]
    assert all(np.array_equal(p[i], sp) and np.array_equal(d[i], sd) for i, (sp, sd) in enumerate(single))
    h = hash_all(p, d)
    for i, im in enumerate(images):
        assert int(h["phash"][i]) == int(str(imagehash.phash(im)), 16)
        assert int(h["dhash"][i]) == int(str(imagehash.dhash(im)), 16)
