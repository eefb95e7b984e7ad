"""Merge every view's pairs into one table of matches with each stage's evidence (one row per pair)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..features.hashing import hamming
from ..features.table import FeatureTable
from .binary import HashPairs
from .blank import blank_pairs, blank_rule, near_blank
from .columns import Columns
from .confirm import Confirmation
from .groups import groups_by_key
from .verify import CopyMatches


@dataclass(frozen=True)
class DensePairs(Columns):
    """Embedding candidates ``a`` (earlier split) -> ``b`` (later split) with cosine, neighbourhood ratio, and the
    pixel confirmation: aligned NCC and whether the best alignment was mirrored."""

    a: np.ndarray
    b: np.ndarray
    cosine: np.ndarray
    ratio: np.ndarray
    ncc: np.ndarray
    flipped: np.ndarray


@dataclass(frozen=True)
class Matches(Columns):
    """Matched pairs over record indices (``a < b``) with every stage's evidence, one row per pair.

    ``same_bytes``/``same_pixels`` are exact matches; ``phash``/``dhash`` the Hamming distances in the better
    orientation, ``flipped`` when that orientation is mirrored; ``hashed`` when both are within the radii.
    With embeddings on: ``cosine`` (NaN without embeddings), and for embedding candidates (``candidate``) the
    aligned pixel correlation ``ncc`` (NaN otherwise) and ``ncc_flipped``.
    """

    a: np.ndarray
    b: np.ndarray
    same_bytes: np.ndarray
    same_pixels: np.ndarray
    phash: np.ndarray
    dhash: np.ndarray
    flipped: np.ndarray
    hashed: np.ndarray
    cosine: np.ndarray
    candidate: np.ndarray
    ncc: np.ndarray
    ncc_flipped: np.ndarray
    cos_ok: np.ndarray  # a hash match needs no further confirmation (embeddings agree, or hashes are reliable here)
    copy_score: np.ndarray  # the verifier's registered copy score (NaN: not a verified candidate)
    copy: np.ndarray  # the verifier's decision: the same shot
    copy_similar: np.ndarray  # the verifier's uncertain band
    copy_mirrored: np.ndarray  # the registration (see verify.CopyMatches): b mirrored, zoom, angle, offset
    copy_scale: np.ndarray
    copy_angle: np.ndarray
    copy_dx: np.ndarray
    copy_dy: np.ndarray
    copy_mad: np.ndarray  # grey levels apart on the registered overlap (the pixel agreement: verify.pixel_agreement)
    copy_level: np.ndarray  # blurred grey levels apart relative to the contrast there (the level rule: verify.level)


def merge_matches(
    f: FeatureTable,
    split_index: np.ndarray,
    hp: HashPairs,
    dense: DensePairs | None,
    emb: np.ndarray,
    have: np.ndarray,
    *,
    max_phash: int,
    max_dhash: int,
    trust_hashes: Callable[[], bool],
    min_cosine: float,
    pixel_digests: Callable[[np.ndarray], np.ndarray],
    confirm: Callable[[np.ndarray, np.ndarray], Confirmation],
    copies: CopyMatches | None = None,
) -> Matches:
    """Every matched pair with merged evidence: identical bytes, identical pixels, hashes, embeddings.

    ``pixel_digests(rows)`` gives the full-resolution pixel digest column with ``rows`` filled in (only pairs that
    may be pixel-identical need it); ``confirm(a, b)`` scores pairs at pixel level; ``trust_hashes()`` says whether
    a hash match alone is a copy on this dataset (asked only when embeddings or ``copies`` are given); ``min_cosine`` is the
    calibrated cosine a hash match's embeddings must reach to be trusted without the pixel test. ``copies``: the
    verifier's pairs and decisions (:func:`~.verify.find_copies`), joined in as more pairs and evidence.
    """
    ok = np.flatnonzero(f.ok)
    # Identical bytes always hash identically, but add them explicitly so evidence never depends on a radius.
    ea, eb = exact_pairs(groups_by_key(f["digest"], ok), split_index)
    # Near-blank images are left out of the hash search: they match on identical pixels only (neighbors.blank).
    blank = near_blank(f["spread"], f.ok)
    blank_rows = np.flatnonzero(blank)
    ba, bb = blank_pairs(blank_rows, pixel_digests(blank_rows), split_index)
    # matched pairs only: the verifier's copies and its uncertain band, not every candidate it scored
    matched = (copies.copy | copies.similar) if copies is not None else None
    extra_a = ([dense.a] if dense is not None else []) + ([copies.a[matched]] if copies is not None else [])
    extra_b = ([dense.b] if dense is not None else []) + ([copies.b[matched]] if copies is not None else [])
    a = np.concatenate([hp.a, ea, ba] + extra_a).astype(np.int64)
    b = np.concatenate([hp.b, eb, bb] + extra_b).astype(np.int64)
    n = len(f)
    if len(a):
        # each pair once, ordered by (a, b): one integer key a pair (a row-wise unique of the (m, 2) array sorts
        # structured rows: 0.6 s for the 60k check's 1.0M pairs)
        key = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
        a, b = key // n, key % n
    same_bytes = equal_values(f["digest"], a, b)
    dp, dd, fl = best_orientation(f, a, b)
    # Pixel identity is only possible between different files of equal size that hash (almost) alike; only those
    # rows need a full-resolution decode when they were hashed in JPEG draft mode.
    cand = ~same_bytes & (f["width"][a] == f["width"][b]) & (f["height"][a] == f["height"][b]) & ~fl & (dp <= max_phash)
    pd = pixel_digests(np.unique(np.concatenate([a[cand], b[cand]])))
    same_pixels = same_bytes.copy()
    for j in np.flatnonzero(cand):
        same_pixels[j] = bool(pd[a[j]]) and pd[a[j]] == pd[b[j]]
    cosine = pair_cosines(emb, have, a, b)
    candidate = np.zeros(len(a), bool)
    ncc = np.full(len(a), np.nan)
    ncc_flipped = np.zeros(len(a), bool)
    if dense is not None and len(dense):
        da, db = np.asarray(dense.a, np.int64), np.asarray(dense.b, np.int64)
        j, k = _rows_of(a, b, da, db)  # every dense pair is one of the pairs
        candidate[j], ncc[j], ncc_flipped[j] = True, np.asarray(dense.ncc)[k], np.asarray(dense.flipped)[k]
    hashed = (dp <= max_phash) & (dd <= max_dhash)
    if emb.shape[1] and not trust_hashes():
        cos = np.nan_to_num(cosine, nan=-1.0)
        cos_ok = cos >= min_cosine
        # Hash matches whose embeddings disagree (uniform datasets: every digit hashes alike) must pass the
        # pixel test; far-off cosines are not worth decoding for.
        check = hashed & ~same_pixels & ~cos_ok & ~candidate & (cos >= min_cosine - 0.15)
        # Each image's CONFIRM_LINKS most similar hash partners only: the work stays linear in the images (60k 32-px
        # crops of a few photos had 1.0M hash pairs, 0.9M of them sent here: hours), and a group of copies stays
        # connected. With the verifier on too: on uniform data (garments) its cut sits where distinct look-alikes
        # score, and this test still passes the mirrored, re-graded and JPEG copies that hash alike (Fashion-MNIST
        # 20k: recall 0.349 without it, 0.404 with it (0.405 unbounded), 2.85 and 3.13 false pairs per 1k eval images).
        check &= best_links(a, b, cos, CONFIRM_LINKS, check)
        if check.any():
            c = confirm(a[check], b[check])
            ncc[check], ncc_flipped[check] = c.ncc, c.flipped
    elif copies is not None and not trust_hashes():
        # No embeddings, but the verifier registered each eval image's best hash matches: on a dataset whose distinct
        # images hash alike (garments, digits: 43% of Fashion-MNIST's eval images had a false hash pair), its decision
        # is the evidence, not the hash match
        cos_ok = np.zeros(len(a), bool)
    else:
        cos_ok = np.ones(len(a), bool)  # hashes are reliable on this dataset (or there is nothing else)
    reg = copy_columns(a, b, copies)
    m = Matches(a, b, same_bytes, same_pixels, dp, dd, fl, hashed, cosine, candidate, ncc, ncc_flipped, cos_ok, *reg)
    return m.select(blank_rule(a, b, blank, same_pixels))  # blank images: identical pixels only


#: Hash matches per image that the pixel confirmation tests when hashes collide on the dataset (without the copy
#: verifier): its most similar partners by embedding cosine.
CONFIRM_LINKS = 4


def best_links(a: np.ndarray, b: np.ndarray, score: np.ndarray, per_image: int, among: np.ndarray) -> np.ndarray:
    """Mask of the pairs among ``among`` that are one of the ``per_image`` best by ``score`` of either of their
    images (ties: the earlier row)."""
    rows = np.flatnonzero(among)
    pair = np.concatenate([rows, rows])  # each pair once per image, ranked among all of that image's pairs
    node = np.concatenate([a[rows], b[rows]])
    order = np.lexsort((pair, -score[pair], node))
    first = np.r_[True, node[order][1:] != node[order][:-1]] if len(order) else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    keep = np.zeros(len(a), bool)
    keep[pair[order][np.arange(len(order)) - start < per_image]] = True
    return keep


#: Pairs whose cosine is computed together: their gathered embeddings are 2 x 5 kB each at 1280 dimensions (all
#: 100k pairs of a 20k-photo check at once held 1.1 GB).
COSINE_BLOCK = 2048


def pair_cosines(emb: np.ndarray, have: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inner product of rows ``a[j]`` and ``b[j]`` of ``emb`` (NaN where either has no embedding), a block of
    :data:`COSINE_BLOCK` pairs at a time."""
    cosine = np.full(len(a), np.nan)
    if not emb.shape[1] or not len(a):
        return cosine
    rows = np.flatnonzero(have[a] & have[b])
    for s in range(0, len(rows), COSINE_BLOCK):
        r = rows[s : s + COSINE_BLOCK]
        cosine[r] = np.einsum("ij,ij->i", emb[a[r]], emb[b[r]])
    return cosine


def copy_columns(a: np.ndarray, b: np.ndarray, copies: CopyMatches | None) -> list[np.ndarray]:
    """The verifier's columns for pairs (a < b): score, copy, similar, mirrored, scale, angle, dx, dy, mad, level."""
    from .verify import level

    n = len(a)
    cols = [np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), *(np.full(n, np.nan) for _ in range(6))]
    if copies is None or not len(copies) or not n:
        return cols
    # a copy pair that is not a matched pair (scored below the band) has its score in the report's copies object only
    j, k = _rows_of(a, b, np.asarray(copies.a, np.int64), np.asarray(copies.b, np.int64))
    # the copy stage's columns at those rows alone (its registration's are held for its registered pairs only)
    names = ("score", "copy", "similar", "mirrored", "scale", "angle", "dx", "dy", "mad")
    src = [copies.at(name, k) for name in names] + [level(copies.at("smooth_mad", k), copies.at("spread", k))]
    for col, values in zip(cols, src):
        col[j] = values
    return cols


def equal_values(values: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``values[a[j]] == values[b[j]]`` per pair for byte strings (content digests; ``None`` equals only ``None``),
    compared by row number: each value's first 8 bytes as one integer per row, then the few pairs whose integers agree
    compared whole (1.0M pairs at 60k images: pair by pair took seconds). A dict of every distinct value, the way before,
    held an entry and an integer object a value (~80 MB at 1M images, by their sizes) in the copy stage's last step."""
    prefix = np.zeros(len(values), np.uint64)
    none = np.zeros(len(values), bool)
    for s in range(0, len(values), 65536):  # a block of values at a time: no list of a million slices
        block = values[s : s + 65536].tolist()
        none[s : s + len(block)] = [v is None for v in block]
        raw = b"".join((v or b"")[:8].ljust(8, b"\0") for v in block)
        prefix[s : s + len(block)] = np.frombuffer(raw, np.uint64)
    same = (prefix[a] == prefix[b]) & (none[a] == none[b])
    for j in np.flatnonzero(same).tolist():
        same[j] = values[a[j]] == values[b[j]]
    return same


def _rows_of(a: np.ndarray, b: np.ndarray, qa: np.ndarray, qb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the query pairs (``qa``, ``qb``, either order) are among the pairs (``a``, ``b``; ``a < b``): (rows of the
    pairs, rows of the queries), for the queries that are there, each pair row once with its last query (as a loop
    writing query by query would leave it)."""
    if not len(a) or not len(qa):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n = int(max(a.max(), b.max(), qa.max(), qb.max())) + 1
    keys = a * n + b
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    wanted = np.minimum(qa, qb) * n + np.maximum(qa, qb)
    at = np.searchsorted(sorted_keys, wanted, side="right") - 1  # the last of equal keys: a dict's last row
    found = at >= 0
    found[found] = sorted_keys[at[found]] == wanted[found]
    rows, queries = order[at[found]], np.flatnonzero(found)
    last = len(rows) - 1 - np.unique(rows[::-1], return_index=True)[1]  # a pair row's last query wins
    return rows[last], queries[last]


#: Each image of an identical-byte group is paired with at most this many (the first) members of each earlier split:
#: enough for any max_matches_per_image up to it, and linear in the group's size (k copies in train and k in val
#: would otherwise make k² pairs).
EXACT_LINKS = 16


def exact_pairs(groups: list[list[int]], split_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs from identical-byte groups: across splits each member with the first ``EXACT_LINKS`` members of every
    earlier split, a chain within a split (enough to connect it)."""
    a: list[int] = []
    b: list[int] = []
    for g in groups:
        by_split: dict[int, list[int]] = {}
        for i in g:
            by_split.setdefault(int(split_index[i]), []).append(i)
        for members in by_split.values():
            a.extend(members[:-1])
            b.extend(members[1:])
        splits = sorted(by_split)
        for si, s in enumerate(splits):
            for t in splits[si + 1 :]:
                for x in by_split[s][:EXACT_LINKS]:
                    for y in by_split[t]:
                        a.append(min(x, y))
                        b.append(max(x, y))
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def best_orientation(f: FeatureTable, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash distances of each pair, as is and with ``a`` mirrored, keeping the closer orientation."""
    dp0, dd0 = hamming(f["phash"][a], f["phash"][b]), hamming(f["dhash"][a], f["dhash"][b])
    dp1, dd1 = hamming(f["phash_flip"][a], f["phash"][b]), hamming(f["dhash_flip"][a], f["dhash"][b])
    flip = (dp1 + dd1) < (dp0 + dd0)
    return np.where(flip, dp1, dp0), np.where(flip, dd1, dd0), flip
