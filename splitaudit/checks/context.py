"""The per-run context: everything checks share, computed lazily and at most once.

Checks ask the context for evidence (``ctx.features``, ``ctx.matches(...)``) instead of computing it; the first
check to ask pays, the others reuse. Search results are also kept in the on-disk cache, keyed by the exact hash
values searched, so an unchanged dataset is re-checked without searching again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np

from ..features import FeatureCache, FeatureTable, HashOptions, compute_features
from ..features.embeddings.backbones import BackboneSpec
from ..features.hashing import hamming
from ..neighbors import HashPairs, groups_by_key, hash_pairs
from ..neighbors.blank import blank_pairs, blank_rule, near_blank
from ..report.model import ImageRef
from ..scan import Dataset

#: Default near-duplicate radii (bits out of 64), chosen from measurement: see docs/thresholds.md.
DEFAULT_MAX_PHASH = 6
DEFAULT_MAX_DHASH = 12

#: Embedding candidates (see docs/embeddings.md): an eval image's train neighbour is a candidate when its cosine
#: distance is at most MAX_RATIO times the distance to its K-th nearest train image (it stands out of its own
#: neighbourhood, which adapts to uniform datasets), and its cosine is at least MIN_SIMILARITY.
EMBED_K = 10
DEFAULT_MAX_RATIO = 0.5
DEFAULT_MIN_SIMILARITY = 0.85
#: The calibrated cosine threshold: this quantile of the null distribution (each sampled training image's cosine
#: to its nearest *other* training image that is not already a known copy), clipped to [min_similarity, CEILING].
NULL_QUANTILE = 0.999
NULL_SAMPLE = 2000
CEILING = 0.98
#: The NCC a pair needs is calibrated the same way: this quantile of the aligned NCC of NCC_SAMPLE null pairs,
#: never below min_ncc (photos: distinct neighbours correlate far below 0.9; 8x8 digits: above 0.95).
NCC_QUANTILE = 0.99
NCC_SAMPLE = 200
NCC_CEILING = 0.995
#: Hashes are trusted alone when at most this share of training images hash-match another, non-identical training
#: image (photos: ~0%); above it (uniform data such as digits, where every image hashes alike) a hash match needs
#: the embedding or the pixel test to agree.
HASH_COLLISION_RATE = 0.02
#: Images whose crop views (~190 kB each) are kept while confirming pairs.
_VIEW_CACHE = 2048
#: Aligned normalised cross-correlation at or above which a candidate is the same shot (near-duplicate).
DEFAULT_MIN_NCC = 0.9


@dataclass(frozen=True)
class DensePairs:
    """Embedding candidates ``a`` (earlier split) -> ``b`` (later split) with cosine, neighbourhood ratio, and the
    pixel confirmation: aligned NCC and whether the best alignment was mirrored."""

    a: np.ndarray
    b: np.ndarray
    cosine: np.ndarray
    ratio: np.ndarray
    ncc: np.ndarray
    flipped: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


@dataclass(frozen=True)
class Matches:
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

    def __len__(self) -> int:
        return len(self.a)

    def select(self, mask: np.ndarray) -> Matches:
        return Matches(*(getattr(self, f.name)[mask] for f in fields(self)))


class AuditContext:
    """Lazily shared state of one audit run over one dataset."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        cache: FeatureCache | None = None,
        hash_options: HashOptions = HashOptions(),
        workers: int | None = None,
        backbone: BackboneSpec | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.dataset = dataset
        self.backbone = backbone if backbone is not None and backbone.enabled else None  # set before first use
        self.cache = cache
        self.hash_options = hash_options
        self.workers = workers
        self._progress = progress
        self._hash_pairs: dict[tuple[int, int], HashPairs] = {}
        self._matches: dict[tuple, Matches] = {}
        self._dense: dict[tuple[float, float], DensePairs] = {}
        self.embedded_count = 0  # embeddings computed (not from the cache) in this run

    def _ticker(self, stage: str, total: int) -> Callable[[int], None]:
        """A progress callback counting up to ``total`` for ``stage`` (silent without a progress reporter)."""
        done = 0

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if self._progress:
                self._progress(stage, done, total)

        return tick

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
        tick = self._ticker("hashing images", len(self.dataset.records))
        return compute_features(self.dataset, options=self.hash_options, cache=self.cache, workers=self.workers, progress=tick)

    # -- embeddings ----------------------------------------------------------------------------------------------
    @cached_property
    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(n×D float32 L2-normalised embeddings, mask of rows that have one); empty when embeddings are off."""
        n = len(self.dataset.records)
        if self.backbone is None:
            return np.zeros((n, 0), np.float32), np.zeros(n, bool)
        from ..features.embeddings.compute import embed_dataset

        f = self.features
        rows = np.flatnonzero(f.ok).tolist()
        tick = self._ticker("embedding images", len(rows))

        matrix, have, computed = embed_dataset(self.dataset.records, self.dataset.arrays, rows, f["digest"], self.backbone,
                                               cache=self.cache, max_pixels=self.hash_options.max_pixels, progress=tick)
        self.embedded_count = computed
        return matrix, have

    @cached_property
    def _dense_cache_key(self) -> str | None:
        """Identifies the embedding-stage results by their inputs: the backbone, every image's content digest, split
        and hashes, and the decision constants. Embeddings are a function of digest and backbone, so an unchanged
        dataset gets its calibration and confirmed candidates back without searching or decoding again."""
        if self.cache is None or self.backbone is None:
            return None
        f = self.features
        _, have = self.embeddings
        h = hashlib.sha256(b"dense-v1:")
        h.update(repr((self.backbone, self.hash_options.max_pixels, EMBED_K, NULL_QUANTILE, NULL_SAMPLE, CEILING,
                       NCC_QUANTILE, NCC_SAMPLE, DEFAULT_MAX_PHASH, DEFAULT_MAX_DHASH)).encode())
        for column in (self.split_index, have, f.ok, f["phash"], f["dhash"]):
            h.update(np.ascontiguousarray(column).tobytes())
        for d in f["digest"]:
            h.update(d or b"-")
        return h.hexdigest()

    @cached_property
    def calibration(self) -> dict[str, float]:
        """The dataset's own scale of 'similar': nearest-neighbour cosines among distinct training images.

        Uniform datasets (every digit or garment alike) have high nearest-neighbour cosines everywhere, photo
        collections low ones; a copy is only remarkable against its dataset's background. Returns the null
        distribution's quantiles and ``threshold`` = its ``NULL_QUANTILE`` quantile (before clipping).
        """
        key = self._dense_cache_key
        stored = self.cache.get_arrays(f"calibration:{key}") if key and self.cache is not None else None
        if stored is not None and {"names", "values", "ints"} <= set(stored):
            return {str(n): (int(v) if i else float(v))
                    for n, v, i in zip(stored["names"].tolist(), stored["values"].tolist(), stored["ints"].tolist())}
        result = self._calibrate()
        if key and self.cache is not None:
            names = sorted(result)
            self.cache.put_arrays(f"calibration:{key}", {
                "names": np.array(names, dtype=str),
                "values": np.array([result[n] for n in names], dtype=np.float64),
                "ints": np.array([isinstance(result[n], int) for n in names], dtype=bool),  # counts stay ints in JSON
            })
        return result

    def _calibrate(self) -> dict[str, float]:
        from ..neighbors.dense import knn

        emb, have = self.embeddings
        train = np.flatnonzero(have & (self.split_index == 0))
        if emb.shape[1] == 0 or len(train) < 3:
            return {"samples": 0, "threshold": CEILING}
        rng = np.random.default_rng(0)  # a fixed sample: same data, same threshold
        queries = train if len(train) <= NULL_SAMPLE else np.sort(rng.choice(train, NULL_SAMPLE, replace=False))
        sims, ids = knn(emb[train], emb[queries], min(4, len(train)))
        f = self.features
        null: list[float] = []
        null_pairs: list[tuple[int, int]] = []
        for q, row_s, row_i in zip(queries, sims, ids):
            for sim, j in zip(row_s, row_i):
                t = train[j] if j >= 0 else -1
                if t < 0 or t == q:
                    continue
                # Known copies (same bytes, or hashes within the default radii) are not 'distinct' neighbours.
                same = f["digest"][t] == f["digest"][q] or (
                    hamming(f["phash"][[q]], f["phash"][[t]])[0] <= DEFAULT_MAX_PHASH
                    and hamming(f["dhash"][[q]], f["dhash"][[t]])[0] <= DEFAULT_MAX_DHASH)
                if not same:
                    null.append(float(sim))
                    null_pairs.append((int(q), int(t)))
                    break
        if not null:
            return {"samples": 0, "threshold": CEILING}
        v = np.asarray(null)
        q = {f"q{int(p * 1000) / 10:g}": float(np.quantile(v, p)) for p in (0.5, 0.9, 0.99, 0.999)}
        # The closest distinct neighbours are the hardest negatives for the pixel test too.
        hardest = sorted(range(len(null)), key=lambda i: -null[i])[:NCC_SAMPLE]
        na = np.asarray([null_pairs[i][0] for i in hardest])
        nb = np.asarray([null_pairs[i][1] for i in hardest])
        ncc, _ = self._confirm(na, nb)
        ncc = ncc[np.isfinite(ncc)]
        return {"samples": len(v), **q, "threshold": float(np.quantile(v, NULL_QUANTILE)),
                "ncc_samples": len(ncc), "ncc_threshold": float(np.quantile(ncc, NCC_QUANTILE)) if len(ncc) else 0.0}

    def similarity_threshold(self, min_similarity: float = DEFAULT_MIN_SIMILARITY) -> float:
        """The cosine an embedding candidate needs: the calibrated threshold within [min_similarity, CEILING]."""
        return float(min(max(self.calibration["threshold"], min_similarity), max(CEILING, min_similarity)))

    def hash_collision_rate(self, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH) -> float:
        """Share of training images with a hash match inside train that is not pixel-identical: how often this
        dataset's distinct images collide under the hash radii (real within-split copies count too, so it errs
        towards distrusting hashes)."""
        train = self.split_index == 0
        n = int((train & self.features.ok).sum())
        if n == 0:
            return 0.0
        hp = self.hash_pairs(max_phash, max_dhash)
        inside = train[hp.a] & train[hp.b]
        d = self.features["digest"]
        differ = np.fromiter((d[x] != d[y] for x, y in zip(hp.a[inside], hp.b[inside])), dtype=bool, count=int(inside.sum()))
        involved = np.unique(np.concatenate([hp.a[inside][differ], hp.b[inside][differ]]))
        return len(involved) / n

    def ncc_threshold(self, min_ncc: float = DEFAULT_MIN_NCC) -> float:
        """The aligned NCC a pixel confirmation needs: the calibrated value, at least ``min_ncc``."""
        if self.backbone is None:
            return min_ncc
        return float(min(max(self.calibration.get("ncc_threshold", 0.0), min_ncc), max(NCC_CEILING, min_ncc)))

    def dense_pairs(self, min_similarity: float = DEFAULT_MIN_SIMILARITY, max_ratio: float = DEFAULT_MAX_RATIO) -> DensePairs:
        """Embedding candidates from every later split into all earlier ones, each confirmed at pixel level."""
        key = (min_similarity, max_ratio)
        if key in self._dense:
            return self._dense[key]
        store_key = f"dense:{self._dense_cache_key}:{min_similarity!r}:{max_ratio!r}" if self._dense_cache_key else None
        stored = self.cache.get_arrays(store_key) if store_key and self.cache is not None else None
        if stored is not None and all(f.name in stored for f in fields(DensePairs)):
            self._dense[key] = DensePairs(*(stored[f.name] for f in fields(DensePairs)))
            return self._dense[key]
        pairs = self._dense_search(min_similarity, max_ratio)
        if store_key and self.cache is not None:
            self.cache.put_arrays(store_key, {f.name: getattr(pairs, f.name) for f in fields(DensePairs)})
        self._dense[key] = pairs
        return pairs

    def _dense_search(self, min_similarity: float, max_ratio: float) -> DensePairs:
        from ..neighbors.dense import knn

        emb, have = self.embeddings
        a_l: list[np.ndarray] = []
        b_l: list[np.ndarray] = []
        cos_l: list[np.ndarray] = []
        ratio_l: list[np.ndarray] = []
        if emb.shape[1]:
            s = self.split_index
            for later in range(1, len(self.dataset.splits)):
                base = np.flatnonzero(have & (s < later))
                query = np.flatnonzero(have & (s == later))
                if len(base) == 0 or len(query) == 0:
                    continue
                k = min(EMBED_K, len(base))
                sims, ids = knn(emb[base], emb[query], k)
                # The neighbourhood's scale: distance to the k-th neighbour (the farthest one returned).
                far = np.maximum(1.0 - sims[:, -1:], 1e-6)
                ratio = (1.0 - sims) / far
                ok = (ids >= 0) & (sims >= self.similarity_threshold(min_similarity)) & (ratio <= max_ratio)
                qi, kj = np.nonzero(ok)
                a_l.append(base[ids[qi, kj]])
                b_l.append(query[qi])
                cos_l.append(sims[qi, kj].astype(np.float64))
                ratio_l.append(ratio[qi, kj].astype(np.float64))
        cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
        a, b = cat(a_l, np.int64), cat(b_l, np.int64)
        ncc, fl = self._confirm(a, b)
        return DensePairs(a, b, cat(cos_l, np.float64), cat(ratio_l, np.float64), ncc, fl)

    def _confirm_cached(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_confirm` with its answer kept in the cache for these exact pairs of this exact dataset."""
        if not self._dense_cache_key or self.cache is None or len(a) == 0:
            return self._confirm(a, b)
        h = hashlib.sha256(self._dense_cache_key.encode())
        h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes() + b"|" + np.ascontiguousarray(b, dtype=np.int64).tobytes())
        key = f"confirm:{h.hexdigest()}"
        stored = self.cache.get_arrays(key)
        if stored is not None and "ncc" in stored and "flipped" in stored and len(stored["ncc"]) == len(a):
            return stored["ncc"], stored["flipped"]
        ncc, fl = self._confirm(a, b)
        self.cache.put_arrays(key, {"ncc": ncc, "flipped": fl})
        return ncc, fl

    def _confirm(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Aligned NCC of each pair's thumbnails. Each image is decoded once and its crop views are computed once
        (kept for the most recent images: uniform datasets send thousands of pairs that share images)."""
        from collections import OrderedDict

        from ..features.embeddings.compute import load_rgb
        from ..neighbors.confirm import THUMB, ncc_from_views, standard_views, thumbnail

        views: OrderedDict[tuple[int, bool], np.ndarray | None] = OrderedDict()
        thumbs: OrderedDict[int, np.ndarray | None] = OrderedDict()
        records, arrays = self.dataset.records, self.dataset.arrays

        def view(i: int, mirrored: bool) -> np.ndarray | None:
            key = (i, mirrored)
            if key in views:
                views.move_to_end(key)
                return views[key]
            if i not in thumbs:
                r = records[i]
                px = arrays[r.split][r.array_index] if r.array_index >= 0 else None
                rgb = load_rgb(r.path, px, THUMB, max_pixels=self.hash_options.max_pixels)
                thumbs[i] = None if rgb is None else thumbnail(rgb)
                if len(thumbs) > _VIEW_CACHE:
                    thumbs.popitem(last=False)
            t = thumbs[i]
            views[key] = None if t is None else standard_views(t, mirrored)
            if len(views) > _VIEW_CACHE:
                views.popitem(last=False)
            return views[key]

        ncc = np.full(len(a), np.nan)
        fl = np.zeros(len(a), bool)
        # Pairs in order of their first image, so an image's views are reused while they are cached.
        for j in np.lexsort((b, a)).tolist():
            va, vb = view(int(a[j]), False), view(int(b[j]), False)
            if va is not None and vb is not None:
                vbm = view(int(b[j]), True)
                assert vbm is not None
                ncc[j], fl[j] = ncc_from_views(va, vb, vbm)
        return ncc, fl

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
            found = hash_pairs(f["phash"], f["dhash"], f["phash_flip"], f["dhash_flip"], self._searched, max_phash=max_phash, max_dhash=max_dhash)
            if self.cache is not None:
                self.cache.put_arrays(cache_key, found.to_arrays())
        self._hash_pairs[key] = found
        return found

    @cached_property
    def _searched(self) -> np.ndarray:
        """Rows the hash search covers: decoded images that are not near-blank (those match on pixels only)."""
        f = self.features
        return f.ok & ~near_blank(f["spread"], f.ok)

    def _search_key(self, radii: tuple[int, int]) -> str:
        """Identifies a search by its exact input: the hash columns of the decoded rows and the radii."""
        f = self.features
        h = hashlib.sha256(b"hash-pairs-v2:%d:%d:" % radii)
        h.update(self._searched.tobytes())
        for c in ("phash", "dhash", "phash_flip", "dhash_flip"):
            h.update(np.ascontiguousarray(f[c]).tobytes())
        return h.hexdigest()

    def matches(self, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH,
                min_similarity: float = DEFAULT_MIN_SIMILARITY, max_ratio: float = DEFAULT_MAX_RATIO) -> Matches:
        """Every matched pair with merged evidence: identical bytes, identical pixels, hashes, embeddings."""
        key = (max_phash, max_dhash, min_similarity, max_ratio)
        if key in self._matches:
            return self._matches[key]
        f = self.features
        ok = np.flatnonzero(f.ok)
        hp = self.hash_pairs(max_phash, max_dhash)
        dense = self.dense_pairs(min_similarity, max_ratio) if self.backbone is not None else None
        # Identical bytes always hash identically, but add them explicitly so evidence never depends on a radius.
        ea, eb = _exact_pairs(groups_by_key(f["digest"], ok), self.split_index)
        blank = near_blank(f["spread"], f.ok)
        blank_rows = np.flatnonzero(blank)
        ba, bb = blank_pairs(blank_rows, f.ensure_pixel_digests(blank_rows.tolist()), self.split_index)
        parts_a = [hp.a, ea, ba] + ([dense.a] if dense is not None else [])
        parts_b = [hp.b, eb, bb] + ([dense.b] if dense is not None else [])
        a = np.concatenate(parts_a).astype(np.int64)
        b = np.concatenate(parts_b).astype(np.int64)
        if len(a):
            pair_ids = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
            a, b = pair_ids[:, 0], pair_ids[:, 1]
        digests = f["digest"]
        same_bytes = np.fromiter((digests[x] == digests[y] for x, y in zip(a, b)), dtype=bool, count=len(a))
        dp, dd, fl = _best_orientation(f, a, b)
        # Pixel identity is only possible between different files of equal size that hash (almost) alike; only those
        # rows need a full-resolution decode when they were hashed in JPEG draft mode.
        cand = ~same_bytes & (f["width"][a] == f["width"][b]) & (f["height"][a] == f["height"][b]) & ~fl & (dp <= max_phash)
        need = np.unique(np.concatenate([a[cand], b[cand]]))
        pd = f.ensure_pixel_digests(need.tolist()) if len(need) else f["pixel_digest"]
        same_pixels = same_bytes.copy()
        for j in np.flatnonzero(cand):
            same_pixels[j] = bool(pd[a[j]]) and pd[a[j]] == pd[b[j]]
        emb, have = self.embeddings
        cosine = np.full(len(a), np.nan)
        if emb.shape[1] and len(a):
            both = have[a] & have[b]
            cosine[both] = np.einsum("ij,ij->i", emb[a[both]], emb[b[both]])
        candidate = np.zeros(len(a), bool)
        ncc = np.full(len(a), np.nan)
        ncc_flipped = np.zeros(len(a), bool)
        if dense is not None and len(dense):
            at = {(int(x), int(y)): j for j, (x, y) in enumerate(zip(a, b))}
            for x, y, v, vf in zip(dense.a.tolist(), dense.b.tolist(), dense.ncc, dense.flipped):
                j = at[(min(x, y), max(x, y))]
                candidate[j], ncc[j], ncc_flipped[j] = True, v, vf
        hashed = (dp <= max_phash) & (dd <= max_dhash)
        if emb.shape[1] and self.hash_collision_rate(max_phash, max_dhash) > HASH_COLLISION_RATE:
            tau = self.similarity_threshold(min_similarity)
            cos_ok = np.nan_to_num(cosine, nan=-1.0) >= tau
            # Hash matches whose embeddings disagree (uniform datasets: every digit hashes alike) must pass the
            # pixel test; far-off cosines are not worth decoding for.
            check = hashed & ~same_pixels & ~cos_ok & ~candidate & (np.nan_to_num(cosine, nan=-1.0) >= tau - 0.15)
            if check.any():
                ncc[check], ncc_flipped[check] = self._confirm_cached(a[check], b[check])
        else:
            cos_ok = np.ones(len(a), bool)  # hashes are reliable on this dataset (or there is nothing else)
        m = Matches(a, b, same_bytes, same_pixels, dp, dd, fl, hashed, cosine, candidate, ncc, ncc_flipped, cos_ok)
        m = m.select(blank_rule(a, b, blank, same_pixels))  # blank images: identical pixels only
        self._matches[key] = m
        return m

    # -- distribution audit (issue #4) ---------------------------------------------------------------------------
    # Owned by the distribution checks (class-balance, image-properties, split-distinguishability, difficulty,
    # separability, leak-impact). Nothing here runs unless one of them asks: `--backbone none` re-checks stay fast.
    @cached_property
    def properties(self) -> dict[str, np.ndarray]:
        """Per-image properties of decoded records (brightness, contrast, saturation, sharpness, entropy,
        file_size; NaN elsewhere), computed on first use only and cached per content digest."""
        from ..features.properties import compute_properties

        f = self.features
        rows = np.flatnonzero(f.ok).tolist()
        tick = self._ticker("measuring images", len(rows))

        columns, computed = compute_properties(self.dataset.records, self.dataset.arrays, rows, f["digest"], cache=self.cache,
                                               workers=self.workers, max_pixels=self.hash_options.max_pixels, progress=tick)
        self.properties_computed = computed
        return columns

    @cached_property
    def summaries(self) -> dict[str, dict]:
        """Report-level tables the distribution checks measured (``AuditReport.distribution``), by section.
        Checks may write here; their findings are returned, never stored."""
        return {}

    @cached_property
    def probes(self) -> dict[str, object]:
        """Memo of fitted probes and projections (``checks/_probe.py``), so several checks fit each once."""
        return {}


#: Each image of an identical-byte group is paired with at most this many (the first) members of each earlier split:
#: enough for any max_matches_per_image up to it, and linear in the group's size (k copies in train and k in val
#: would otherwise make k² pairs).
_EXACT_LINKS = 16


def _exact_pairs(groups: list[list[int]], split_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs from identical-byte groups: across splits each member with the first ``_EXACT_LINKS`` members of every
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
                for x in by_split[s][:_EXACT_LINKS]:
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
