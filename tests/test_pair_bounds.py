"""How many pairs the older pixel confirmation (``neighbors/confirm.py``) may be asked to score, and which hash
matches count as copies where distinct images hash alike: crowded data (many overlapping crops of one photo, uniform
garments) sends most images' hashes within radius of dozens of others."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
from PIL import Image

from splitaudit import Options, audit
from splitaudit.neighbors.matches import CONFIRM_LINKS, _rows_of, best_links, equal_values
from splitaudit.progress import VERIFY
from splitaudit.run import open_run


def test_pair_lookups_answer_as_the_dict_loops_they_replace() -> None:
    # merge_matches found each dense or verifier pair's row through a dict of every pair (1.0M pairs at 60k images:
    # 1.5 s of Python); the array look-up must give what the loop gave: the last row of a repeated pair, the last
    # query where several queries name one pair (either order), nothing for a pair that is not there
    rng = np.random.default_rng(3)
    a = rng.integers(0, 40, 400)
    b = a + rng.integers(1, 40, 400)  # a < b, with repeats
    qa, qb = rng.integers(0, 80, 300), rng.integers(0, 80, 300)
    flip = rng.random(300) < 0.5
    qa, qb = np.where(flip, qb, qa), np.where(flip, qa, qb)
    at = {(int(x), int(y)): j for j, (x, y) in enumerate(zip(a, b))}
    want: dict[int, int] = {}
    for k, (x, y) in enumerate(zip(qa.tolist(), qb.tolist())):
        j = at.get((min(x, y), max(x, y)))
        if j is not None:
            want[j] = k
    rows, queries = _rows_of(a, b, qa, qb)
    assert dict(zip(rows.tolist(), queries.tolist())) == want and len(rows) == len(want) > 20
    assert [len(x) for x in _rows_of(a[:0], b[:0], qa, qb)] == [0, 0]
    # digests compared by row: None equals only None; values that share their first 8 bytes are told apart
    digests = np.array([b"x", None, b"y", b"x", None, b"", b"abcdefgh1", b"abcdefgh2", b"abcdefgh1", b"\0" * 8],
                       dtype=object)
    i, j = (x.ravel() for x in np.meshgrid(np.arange(len(digests)), np.arange(len(digests))))
    assert equal_values(digests, i, j).tolist() == [digests[x] == digests[y] for x, y in zip(i, j)]


def test_best_links_keeps_each_images_best_partners() -> None:
    # image 0 is linked to 1..6 with falling scores; 7-8 is a pair of its own
    a = np.array([0, 0, 0, 0, 0, 0, 7])
    b = np.array([1, 2, 3, 4, 5, 6, 8])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.1])
    keep = best_links(a, b, score, 2, np.ones(7, bool))
    # 0's two best, plus every pair that is the best of its other image (each of 1..6 has only one partner)
    assert keep.all()
    # among a subset: rows outside ``among`` are never kept
    among = np.array([True, True, True, False, False, False, True])
    assert best_links(a, b, score, 2, among).tolist() == [True, True, True, False, False, False, True]
    # both images of a pair have other, better partners: dropped
    a2 = np.array([0, 0, 1, 1, 0])
    b2 = np.array([2, 3, 2, 3, 1])
    s2 = np.array([0.9, 0.8, 0.9, 0.8, 0.1])
    assert best_links(a2, b2, s2, 2, np.ones(5, bool)).tolist() == [True, True, True, True, False]


def _crowded(photo: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` 32-px crops of 80-100% of one photo's short side at random places: nearly every crop hashes within
    radius of many others."""
    rng = np.random.default_rng(seed)
    im = Image.fromarray(photo)
    w, h = im.size
    out = []
    for _ in range(n):
        s = int(min(w, h) * rng.uniform(0.8, 1.0))
        x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        out.append(np.asarray(im.crop((x, y, x + s, y + s)).resize((32, 32), Image.Resampling.BILINEAR)))
    return np.stack(out)


def test_pixel_confirmation_stays_linear_in_the_images_on_crowded_data(photos: dict[str, np.ndarray], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without the copy verifier, hash matches whose embeddings disagree go to the pixel confirmation: each image's
    CONFIRM_LINKS most similar partners, not every match (60k 32-px crops of 15 photos had 1.0M hash pairs)."""
    x = _crowded(photos["china"], 1500)
    opts = Options(cache_dir=str(tmp_path / "cache"), verify=False)
    calls: list[tuple[str, int, int]] = []
    audit(x[:1200], x[1200:], options=opts, progress=lambda s, d, t: calls.append((s, d, t)))
    confirmed = [t for s, d, t in calls if s == VERIFY and d == 0]
    bound = 2 * CONFIRM_LINKS * len(x)
    with open_run([x[:1200], x[1200:]], options=opts) as ctx:
        pairs = len(ctx.hash_pairs())
    assert pairs > bound  # crowded enough that confirming every hash match would pass the bound
    assert confirmed and max(confirmed) <= bound


def _fashion(n: int) -> tuple[np.ndarray, np.ndarray]:
    path = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    if not os.path.exists(path):
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    with gzip.open(path, "rb") as fh:
        x = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    with gzip.open(path.replace("images-idx3", "labels-idx1"), "rb") as fh:
        y = np.frombuffer(fh.read(), np.uint8, offset=8)[:n]
    return x, y


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("L"))


def test_garment_copies_that_hash_alike_are_found_with_the_verifier_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fashion-MNIST: distinct garments of one class hash alike by the dozen, so a hash match is no copy on its own
    there. Mirrored, re-graded and JPEG copies of training garments, re-rendered at 32 px with another filter (they
    hash alike), are found by the default check (issue #11: never fewer than hashes alone). At 20k training
    garments the pixel test of each image's best hash matches is what finds many of them (benchmarks/copy_check.py,
    docs/copies.md); this test keeps the small case honest."""
    x, y = _fashion(2000)
    # at 32 px as a dataset would hold them; each copy re-rendered from the 28-px original with another filter
    x = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BICUBIC)) for a in x])
    raw, _ = _fashion(1500)
    train_x, train_y = x[:1500], y[:1500]
    val_x, val_y = x[1500:].copy(), y[1500:].copy()

    def rerender(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BILINEAR))

    makers = {"mirror": lambda a: rerender(a[:, ::-1]), "grade": lambda a: rerender((a * 0.8 + 30).astype(np.uint8)),
              "jpeg 50": lambda a: _jpeg(rerender(a), 50)}
    planted: dict[tuple[int, int], str] = {}
    for k, (name, make) in enumerate(makers.items()):
        for t in range(5):
            src, dst = 100 * k + 7 * t, 5 * k + t
            val_x[dst], val_y[dst] = make(raw[src]), train_y[src]
            planted[(src, dst)] = name
    report = audit((train_x, train_y), (val_x, val_y), options=Options(cache_dir=str(tmp_path / "cache")))
    found = set()
    for f in report.findings:
        if f.check == "near-duplicates":
            at = {r.split: int(r.path[2:-1]) for r in f.images}  # array inputs are named x[i] within their split
            found.add((at["train"], at["val"]))
    for name in makers:
        pairs = [p for p, n in planted.items() if n == name]
        assert sum(p in found for p in pairs) >= 4, (name, sorted(found & set(pairs)))
