"""The per-run context: everything checks share, computed lazily and at most once.

Checks ask the context for evidence (``ctx.features``, ``ctx.matches(...)``) instead of computing it; the first
check to ask pays, the others reuse. Search results are also kept in the on-disk cache, keyed by the exact hash
values searched, so an unchanged dataset is re-checked without searching again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..features import FeatureCache, FeatureTable, HashOptions, compute_features
from ..features.hashing import hamming
from ..neighbors import HashPairs, groups_by_key, hash_pairs
from ..report.model import ImageRef
from ..scan import Dataset

#: Default near-duplicate radii (bits out of 64), chosen from measurement: see docs/thresholds.md.
DEFAULT_MAX_PHASH = 6
DEFAULT_MAX_DHASH = 12


@dataclass(frozen=True)
class Matches:
    """Matched pairs over record indices (``a < b``) with every stage's evidence, one row per pair.

    ``same_bytes``/``same_pixels`` are exact matches; ``phash``/``dhash`` the Hamming distances in the better
    orientation, ``flipped`` when that orientation is mirrored.
    """

    a: np.ndarray
    b: np.ndarray
    same_bytes: np.ndarray
    same_pixels: np.ndarray
    phash: np.ndarray
    dhash: np.ndarray
    flipped: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    def select(self, mask: np.ndarray) -> Matches:
        return Matches(*(getattr(self, f)[mask] for f in ("a", "b", "same_bytes", "same_pixels", "phash", "dhash", "flipped")))


class AuditContext:
    """Lazily shared state of one audit run over one dataset."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        cache: FeatureCache | None = None,
        hash_options: HashOptions = HashOptions(),
        workers: int | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.dataset = dataset
        self.cache = cache
        self.hash_options = hash_options
        self.workers = workers
        self._progress = progress
        self._hash_pairs: dict[tuple[int, int], HashPairs] = {}
        self._matches: dict[tuple[int, int], Matches] = {}

    # -- records -----------------------------------------------------------------------------------------------
    @cached_property
    def split_index(self) -> np.ndarray:
        """Split number (position in ``dataset.splits``) of every record."""
        pos = {name: i for i, name in enumerate(self.dataset.split_names)}
        return np.fromiter((pos[r.split] for r in self.dataset.records), dtype=np.int64, count=len(self.dataset.records))

    def ref(self, i: int) -> ImageRef:
        r = self.dataset.records[int(i)]
        return ImageRef(r.split, r.relpath, r.label)

    # -- features ------------------------------------------------------------------------------------------------
    @cached_property
    def features(self) -> FeatureTable:
        """Digests and hashes of every record (from the cache where possible)."""
        total = len(self.dataset.records)
        done = 0

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if self._progress:
                self._progress("hashing images", done, total)

        return compute_features(self.dataset, options=self.hash_options, cache=self.cache, workers=self.workers, progress=tick)

    # -- neighbours ----------------------------------------------------------------------------------------------
    def hash_pairs(self, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH) -> HashPairs:
        """Pairs of decoded images whose pHash and dHash agree within the radii (either orientation)."""
        key = (max_phash, max_dhash)
        if key in self._hash_pairs:
            return self._hash_pairs[key]
        # A wider search already done answers a narrower question by filtering.
        for (p, d), pairs in self._hash_pairs.items():
            if p >= max_phash and d >= max_dhash:
                found = pairs.select((pairs.phash <= max_phash) & (pairs.dhash <= max_dhash))
                self._hash_pairs[key] = found
                return found
        f = self.features
        cache_key = self._search_key(key)
        stored = self.cache.get_arrays(cache_key) if self.cache is not None else None
        if stored is not None:
            found = HashPairs.from_arrays(stored)
        else:
            found = hash_pairs(f["phash"], f["dhash"], f["phash_flip"], f["dhash_flip"], f.ok, max_phash=max_phash, max_dhash=max_dhash)
            if self.cache is not None:
                self.cache.put_arrays(cache_key, found.to_arrays())
        self._hash_pairs[key] = found
        return found

    def _search_key(self, radii: tuple[int, int]) -> str:
        """Identifies a search by its exact input: the hash columns of the decoded rows and the radii."""
        f = self.features
        h = hashlib.sha256(b"hash-pairs-v1:%d:%d:" % radii)
        h.update(f.ok.tobytes())
        for c in ("phash", "dhash", "phash_flip", "dhash_flip"):
            h.update(np.ascontiguousarray(f[c]).tobytes())
        return h.hexdigest()

    def matches(self, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH) -> Matches:
        """Every matched pair with merged evidence: identical bytes, identical pixels, hash distances."""
        key = (max_phash, max_dhash)
        if key in self._matches:
            return self._matches[key]
        f = self.features
        ok = np.flatnonzero(f.ok)
        hp = self.hash_pairs(max_phash, max_dhash)
        # Identical bytes always hash identically, but add them explicitly so evidence never depends on a radius.
        ea, eb = _exact_pairs(groups_by_key(f["digest"], ok), self.split_index)
        a = np.concatenate([hp.a, ea])
        b = np.concatenate([hp.b, eb])
        if len(a):
            pair_ids = np.unique(np.stack([a, b], axis=1), axis=0)
            a, b = pair_ids[:, 0], pair_ids[:, 1]
        digests = f["digest"]
        same_bytes = np.fromiter((digests[x] == digests[y] for x, y in zip(a, b)), dtype=bool, count=len(a))
        dp, dd, fl = _best_orientation(f, a, b)
        # Pixel identity is only possible between different files of equal size that hash (almost) alike; only those
        # rows need a full-resolution decode when they were hashed in JPEG draft mode.
        cand = ~same_bytes & (f["width"][a] == f["width"][b]) & (f["height"][a] == f["height"][b]) & ~fl
        need = np.unique(np.concatenate([a[cand], b[cand]]))
        pd = f.ensure_pixel_digests(need.tolist()) if len(need) else f["pixel_digest"]
        same_pixels = same_bytes.copy()
        for j in np.flatnonzero(cand):
            same_pixels[j] = bool(pd[a[j]]) and pd[a[j]] == pd[b[j]]
        m = Matches(a, b, same_bytes, same_pixels, dp, dd, fl)
        self._matches[key] = m
        return m


def _exact_pairs(groups: list[list[int]], split_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs from identical-byte groups: all pairs across splits, a chain within a split (enough to connect it)."""
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
                for x in by_split[s]:
                    for y in by_split[t]:
                        a.append(min(x, y))
                        b.append(max(x, y))
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def _best_orientation(f: FeatureTable, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash distances of each pair, as is and with ``a`` mirrored, keeping the closer orientation."""
    dp0, dd0 = hamming(f["phash"][a], f["phash"][b]), hamming(f["dhash"][a], f["dhash"][b])
    dp1, dd1 = hamming(f["phash_flip"][a], f["phash"][b]), hamming(f["dhash_flip"][a], f["dhash"][b])
    flip = (dp1 + dd1) < (dp0 + dd0)
    return np.where(flip, dp1, dp0), np.where(flip, dd1, dd0), flip
