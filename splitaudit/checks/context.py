"""The per-run context: a typed memo of the pipeline's stages, so every check shares one computation of each.

It owns no algorithm. Each property calls a stage's pure function (``features``, ``neighbors``) the first time a
check asks and remembers the answer for the run (:meth:`AuditContext.memo`); the dearer search results are also kept
in the on-disk cache under a key built from their exact inputs (:meth:`AuditContext.stored`), so an unchanged
dataset is re-checked without searching or decoding again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..features import FeatureCache, FeatureTable, HashOptions, compute_features
from ..features.engine import Engine
from ..features.embeddings.backbones import NONE, BackboneSpec
from ..features.table import full_pixel_digests
from ..neighbors import HashPairs, hash_pairs
from ..neighbors.blank import near_blank
from ..neighbors.confirm import Confirmation, confirm_records
from ..neighbors.dense import dense_candidates
from ..neighbors.matches import DensePairs, Matches, merge_matches
from ..neighbors.verify import CopyMatches, find_copies
from ..neighbors.thresholds import (CONSTANTS, DEFAULT_MAX_DHASH, DEFAULT_MAX_PHASH, DEFAULT_MAX_RATIO, DEFAULT_MIN_NCC,
                                    DEFAULT_MIN_SIMILARITY, EMBED_K, HASH_COLLISION_RATE, Calibration, calibrate,
                                    hash_collision_rate, ncc_threshold, similarity_threshold)
from ..progress import SEARCH, THUMBNAILS, VERIFY, staged
from ..report.model import ImageRef
from ..scan import Dataset

if TYPE_CHECKING:
    from ..options import Options

T = TypeVar("T")
Progress = Callable[[str, int, int], None]

__all__ = ["AuditContext", "DensePairs", "Matches", "DEFAULT_MAX_DHASH", "DEFAULT_MAX_PHASH",
           "DEFAULT_MAX_RATIO", "DEFAULT_MIN_NCC", "DEFAULT_MIN_SIMILARITY"]


def shown_aspect(f) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Each record's width / height as a viewer shows it (the features stage records the size turned by an EXIF
    orientation, as the thumbnails are); NaN where it did not decode."""
    w, h = f["width"].astype(np.float64), f["height"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f.ok & (w > 0) & (h > 0), w / h, np.nan)


@dataclass(frozen=True)
class Embeddings:
    """The embedding stage's output: n×D L2-normalised vectors, the rows that have one, and how many were computed
    (not read from the cache) in this run."""

    matrix: np.ndarray
    have: np.ndarray
    computed: int = 0


class AuditContext:
    """Lazily shared state of one audit run over one dataset, built complete from the run's :class:`Options`."""

    def __init__(self, dataset: Dataset, options: Options | None = None, *, cache: FeatureCache | None = None,
                 progress: Progress | None = None) -> None:
        from ..options import Options

        self.dataset = dataset
        self.options = options if options is not None else Options()
        self.cache = cache
        self.hash_options = HashOptions(draft=self.options.draft, max_pixels=self.options.max_pixels)
        self.engine = Engine.of(self.options)
        self._progress = progress
        self._memo: dict[Hashable, Any] = {}

    # -- the two memo helpers -------------------------------------------------------------------------------------
    def memo(self, key: Hashable, fn: Callable[[], T]) -> T:
        """``fn()``, computed the first time ``key`` is asked for in this run."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def stored(self, key: Hashable, inputs: tuple[Any, ...], fn: Callable[[], T], load: Callable[[dict[str, np.ndarray]], T | None]) -> T:
        """:meth:`memo`, also kept in the on-disk cache under a key made of ``key`` and the exact ``inputs`` (arrays,
        bytes, or values with a stable ``repr``). ``load`` rebuilds the result from its arrays (``None``: stale)."""

        def compute() -> T:
            if self.cache is None:
                return fn()
            name = store_key(key, inputs)
            arrays = self.cache.get_arrays(name)
            value = load(arrays) if arrays is not None else None
            if value is None:
                value = fn()
                self.cache.put_arrays(name, value.to_arrays())  # type: ignore[attr-defined]
            return value

        return self.memo(key, compute)

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
        from ..memory import release_freed_memory

        tick = self._ticker("hashing images", len(self.dataset.records))
        table = compute_features(self.dataset, options=self.hash_options, cache=self.cache, progress=tick,
                                 engine=self.engine)
        # the stage's batches and the cache's rows are freed by now but kept by the heaps: 40 MiB at 200k images on
        # Ray (benchmarks/results/ray-driver-trim-thirtieth.txt)
        release_freed_memory()
        return table

    def pixel_digests(self, rows: np.ndarray) -> np.ndarray:
        """The full-resolution pixel digest column with ``rows`` filled in (the confirm stage's output; the feature
        table itself is never changed). Digests found once are reused by later calls of the run."""
        column: np.ndarray = self.memo("pixel-digests", lambda: self.features["pixel_digest"].copy())
        todo = [int(i) for i in rows if not column[i]]
        if todo:
            found = full_pixel_digests(self.dataset, self.features, todo, options=self.hash_options, cache=self.cache,
                                       engine=self.engine)
            for i, value in found.items():
                column[i] = value
        return column

    @cached_property
    def backbone(self) -> BackboneSpec | None:
        """The network for embeddings, ``None`` when they are off. Its input side, unless set, follows the images'
        median size (so it needs the features)."""
        s = self.options
        if s.backbone == NONE:
            return None
        if s.image_size is not None:
            size = s.image_size
        else:
            from ..features.embeddings.compute import auto_image_size

            f = self.features
            size = auto_image_size(f["width"][f.ok], f["height"][f.ok])
        return BackboneSpec(s.backbone, s.weights, size)

    # -- embeddings ----------------------------------------------------------------------------------------------
    @property
    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(n×D float32 L2-normalised embeddings, mask of rows that have one); empty when embeddings are off. Above
        :data:`~splitaudit.memory.SPILL_BYTES` the matrix is read-only, mapped from a temporary file
        (:func:`~splitaudit.memory.spill_array`)."""
        e = self._embeddings
        return e.matrix, e.have

    @property
    def embedded_count(self) -> int:
        """Embeddings computed (not read from the cache) in this run."""
        e = self._memo.get("embeddings")
        return e.computed if e is not None else 0

    @property
    def _embeddings(self) -> Embeddings:
        def compute() -> Embeddings:
            n = len(self.dataset.records)
            if self.backbone is None:
                return Embeddings(np.zeros((n, 0), np.float32), np.zeros(n, bool))
            from ..features.embeddings.compute import embed_dataset

            f = self.features
            rows = np.flatnonzero(f.ok).tolist()
            matrix, have, computed = embed_dataset(self.dataset.records, self.dataset.arrays, rows, f["digest"], self.backbone,
                                                   cache=self.cache, max_pixels=self.hash_options.max_pixels,
                                                   progress=self._ticker("embedding images", len(rows)), engine=self.engine)
            from ..memory import release_freed_memory, spill_array

            # read whole by the probes' PCA and the neighbour searches, held unread through every other stage:
            # mapped from a file, the 98 MiB at 20k photos count only while a stage reads them (issue #16)
            matrix = spill_array(matrix)
            release_freed_memory()
            return Embeddings(matrix, have, computed)

        return self.memo("embeddings", compute)

    @cached_property
    def _dense_inputs(self) -> tuple[Any, ...]:
        """What every embedding-stage result depends on: the backbone, every image's content digest, split and
        hashes, and the decision constants. Embeddings are a function of digest and backbone, so an unchanged dataset
        gets its calibration and confirmed candidates back without searching or decoding again."""
        f = self.features
        return ("dense-v2", self.backbone, self.hash_options.max_pixels, CONSTANTS, self.split_index, self.embeddings[1],
                f.ok, f["phash"], f["dhash"], tuple(f["digest"]))

    @property
    def calibration(self) -> Calibration | None:
        """The dataset's null distribution of distinct-neighbour cosines and the thresholds it gives (``None``
        without embeddings). See :func:`splitaudit.neighbors.thresholds.calibrate`."""
        if self.backbone is None:
            return None
        f = self.features

        def compute() -> Calibration:
            emb, have = self.embeddings
            return calibrate(emb, have, self.split_index, f["digest"], f["phash"], f["dhash"], self._confirm)

        return self.stored("calibration", self._dense_inputs, compute, Calibration.from_arrays)

    def similarity_threshold(self, min_similarity: float = DEFAULT_MIN_SIMILARITY) -> float:
        cal = self.calibration
        return similarity_threshold(cal if cal is not None else Calibration(), min_similarity)

    def ncc_threshold(self, min_ncc: float = DEFAULT_MIN_NCC) -> float:
        return ncc_threshold(self.calibration, min_ncc)

    def hash_collision_rate(self, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH) -> float:
        f = self.features
        return hash_collision_rate(self.hash_pairs(max_phash, max_dhash), self.split_index, f["digest"], f.ok)

    # -- neighbours ----------------------------------------------------------------------------------------------
    def _confirm(self, a: np.ndarray, b: np.ndarray) -> Confirmation:
        return staged_call(VERIFY, len(a), lambda: confirm_records(
            self.dataset, a, b, max_pixels=self.hash_options.max_pixels, workers=self.options.workers,
            engine=self.engine))

    def confirmed(self, a: np.ndarray, b: np.ndarray) -> Confirmation:
        """:func:`~splitaudit.neighbors.confirm.confirm_pairs` of these exact pairs, kept for this exact dataset."""
        if len(a) == 0:
            return self._confirm(a, b)
        pairs = (np.ascontiguousarray(a, np.int64), np.ascontiguousarray(b, np.int64))
        return self.stored(("confirm", store_key("pairs", pairs)), (*self._dense_inputs, *pairs),
                           lambda: self._confirm(a, b), Confirmation.from_arrays)

    def dense_pairs(self, min_similarity: float = DEFAULT_MIN_SIMILARITY, max_ratio: float = DEFAULT_MAX_RATIO) -> DensePairs:
        """Embedding candidates from every later split into all earlier ones, each confirmed at pixel level."""

        def compute() -> DensePairs:
            emb, have = self.embeddings
            threshold = self.similarity_threshold(min_similarity)
            a, b, cos, ratio = staged_call(SEARCH, len(self.dataset.records), lambda: dense_candidates(
                emb, have, self.split_index, len(self.dataset.splits), k=EMBED_K, min_cosine=threshold,
                max_ratio=max_ratio, starmap=self._shards().get("starmap")))
            c = self._confirm(a, b)
            return DensePairs(a, b, cos, ratio, c.ncc, c.flipped)

        return self.stored(("dense", min_similarity, max_ratio), self._dense_inputs, compute, DensePairs.from_arrays)

    def hash_pairs(self, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH) -> HashPairs:
        """Pairs of decoded images whose pHash and dHash agree within the radii (either orientation)."""
        # A wider search already done answers a narrower question by filtering.
        for key, pairs in list(self._memo.items()):
            if isinstance(key, tuple) and key[0] == "hash-pairs" and key[1] >= max_phash and key[2] >= max_dhash:
                return self.memo(("hash-pairs", max_phash, max_dhash),
                                 lambda: pairs.select((pairs.phash <= max_phash) & (pairs.dhash <= max_dhash)))
        f = self.features
        # Near-blank images are not searched: every one is within radius of every other (they match on pixels only).
        searched = f.ok & ~near_blank(f["spread"], f.ok)
        inputs = ("hash-pairs-v3", searched, f["phash"], f["dhash"], f["phash_flip"], f["dhash_flip"])
        return self.stored(("hash-pairs", max_phash, max_dhash), inputs,
                           lambda: staged_call(SEARCH, len(f), lambda: hash_pairs(
                               f["phash"], f["dhash"], f["phash_flip"], f["dhash_flip"], searched,
                               max_phash=max_phash, max_dhash=max_dhash, **self._shards())),
                           HashPairs.from_arrays)

    def _shards(self) -> dict[str, Any]:
        """On a cluster the searches shard their base by split and run a task per shard (exact merges)."""
        return {"shards": self.split_index, "starmap": self.engine.starmap} if self.engine.distributed else {}

    def hashes_trusted(self, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH) -> bool:
        """Whether a hash match is a copy on its own here: distinct training images rarely hash alike. With the copy
        verifier, copies inside train (which hash alike too) do not count against the hashes
        (:func:`~splitaudit.neighbors.calibrate.distinct_hash_rate`); without it, every non-identical hash match
        inside train does."""
        if self.options.verify:
            return bool(self.copies(max_phash, max_dhash).calibration.hash_distinct_rate <= HASH_COLLISION_RATE)
        return self.hash_collision_rate(max_phash, max_dhash) <= HASH_COLLISION_RATE

    def matches(self, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH,
                min_similarity: float = DEFAULT_MIN_SIMILARITY, max_ratio: float = DEFAULT_MAX_RATIO) -> Matches:
        """Every matched pair with merged evidence: identical bytes, identical pixels, hashes, embeddings."""

        def compute() -> Matches:
            emb, have = self.embeddings
            return merge_matches(
                self.features, self.split_index, self.hash_pairs(max_phash, max_dhash),
                self.dense_pairs(min_similarity, max_ratio) if self.backbone is not None else None, emb, have,
                max_phash=max_phash, max_dhash=max_dhash,
                trust_hashes=lambda: self.hashes_trusted(max_phash, max_dhash),
                min_cosine=self.similarity_threshold(min_similarity) if self.backbone is not None else 1.0,
                pixel_digests=self.pixel_digests, confirm=self.confirmed,
                copies=self.copies(max_phash, max_dhash) if self.options.verify else None)

        def merged() -> Matches:
            from ..memory import release_freed_memory

            m = compute()
            release_freed_memory()  # the merge's working columns (~130 MiB at 1M images): the checks start lower
            return m

        return self.memo(("matches", max_phash, max_dhash, min_similarity, max_ratio), merged)

    # -- copies: the verifier (issue #11) ------------------------------------------------------------------------
    @property
    def thumbnails(self) -> tuple[np.ndarray, np.ndarray]:
        """((n, s, s) uint8 grey thumbnails, mask of rows that have one): the copy verifier's pixels (s: 32 px for
        tiny images, 64 for photos). Above :data:`~splitaudit.memory.SPILL_BYTES` the thumbnails are held in a
        temporary file read back by rows (:class:`~splitaudit.memory.SpilledRows`), not in memory: 78 MiB at 20k
        photos, through the whole copy stage (issues #15, #16)."""

        def compute() -> tuple[np.ndarray, np.ndarray]:
            from ..features.thumbnails import compute_thumbnails, thumbnail_side
            from ..memory import release_freed_memory, spill_rows

            f = self.features
            rows = np.flatnonzero(f.ok)
            side = thumbnail_side(f["width"][f.ok], f["height"][f.ok])
            thumbs, ok, _ = compute_thumbnails(self.dataset.records, self.dataset.arrays, rows, f["digest"], side=side,
                                               cache=self.cache, workers=self.options.workers,
                                               max_pixels=self.hash_options.max_pixels,
                                               progress=self._ticker(THUMBNAILS, len(rows)), engine=self.engine,
                                               spill=True)  # above SPILL_BYTES: written to the file as made
            thumbs = spill_rows(thumbs)  # (a smaller array stays as it is)
            release_freed_memory()
            return thumbs, ok

        return self.memo("thumbnails", compute)

    def copies(self, max_phash: int = DEFAULT_MAX_PHASH, max_dhash: int = DEFAULT_MAX_DHASH) -> CopyMatches:
        """The copy stage (:func:`~splitaudit.neighbors.verify.find_copies`): candidates from the pixel views, the
        embeddings and the hash pairs, each registered and scored, decided at this dataset's calibrated cuts."""
        f = self.features
        thumbs, have_thumb = self.thumbnails
        emb, have = self.embeddings
        hp = self.hash_pairs(max_phash, max_dhash)
        # Near-blank images match on identical pixels only (neighbors.blank): nothing to register.
        valid = f.ok & have_thumb & ~near_blank(f["spread"], f.ok)

        # the calibration's samples (its null and its synthetic copies) are drawn with the run's --seed: another
        # seed is another draw of the same dataset's cuts, a check of how much a borderline decision rests on it
        seed = 0 if self.options.seed is None else int(self.options.seed)

        def compute() -> CopyMatches:
            # whether a hash match is a copy on its own is decided by the stage: it tells copies inside train
            # (which hash alike) from distinct images that collide; tiny images' screen and registration hold the
            # GIL most of the time: their blocks run on a worker process beside this one (started if needed)
            with self.engine.job_pool() or nullcontext() as pool:
                return staged_call(VERIFY, int(valid.sum()), lambda: find_copies(
                    thumbs, self.split_index, valid=valid, embeddings=emb if emb.shape[1] else None,
                    have_embedding=have, hash_a=hp.a, hash_b=hp.b, trust_hashes=None, workers=self.options.workers,
                    aspect=shown_aspect(f), keys=self._keys(valid), pool=pool, seed=seed,
                    values=self._values(valid, thumbs)))

        # Thumbnails are a function of each image's content (digest) and max_pixels; the verifier's own code is part
        # of the key, so a changed algorithm never serves results of the old one. (The default seed adds nothing to
        # the key: caches written before the seed was read stay valid.)
        inputs = ("copies-v1", _verifier_code(), self.hash_options.max_pixels, self.split_index, valid, tuple(f["digest"]),
                  self.backbone, have, hp.a, hp.b, "trust-by-calibration", ("keypoints", self.options.keypoints),
                  *((("seed", seed),) if seed else ()))
        return self.stored(("copies", max_phash, max_dhash), inputs, compute, CopyMatches.from_arrays)

    def _keys(self, valid: np.ndarray):  # type: ignore[no-untyped-def]
        """The copy stage's key images (:func:`~splitaudit.neighbors.keypoints.record_keys`): photos whose smaller
        side is :data:`~splitaudit.neighbors.keypoints.KEY_FROM` px or more; None when there are none or the options
        turn keypoints off."""
        from ..neighbors.keypoints import KEY_FROM, record_keys

        if not self.options.keypoints:
            return None
        f = self.features
        eligible = valid & (np.minimum(f["width"], f["height"]) >= KEY_FROM)
        if not eligible.any():
            return None
        return record_keys(self.dataset, eligible, max_pixels=self.hash_options.max_pixels, engine=self.engine)

    def _values(self, valid: np.ndarray, thumbs: np.ndarray):  # type: ignore[no-untyped-def]
        """The copy stage's HSV-value thumbnails (:func:`~splitaudit.features.thumbnails.value_thumbnails`); None when
        no valid image is in colour."""
        from ..features.thumbnails import GREY_MODES, value_thumbnails

        f = self.features
        colour = valid & np.isin(f["mode"].astype(str), GREY_MODES, invert=True)
        if not colour.any():
            return None
        return value_thumbnails(self.dataset.records, self.dataset.arrays, f["digest"], colour, thumbs,
                                cache=self.cache, workers=self.options.workers,
                                max_pixels=self.hash_options.max_pixels, engine=self.engine)

    def computed_copies(self) -> CopyMatches | None:
        """The copy stage's result at the default radii if a check ran it in this run (``None`` otherwise)."""
        return self._memo.get(("copies", DEFAULT_MAX_PHASH, DEFAULT_MAX_DHASH))

    # -- distribution audit --------------------------------------------------------------------------------------
    @property
    def properties(self) -> dict[str, np.ndarray]:
        """Per-image properties of decoded records (brightness, contrast, saturation, sharpness, entropy,
        file_size; NaN elsewhere), computed on first use only and cached per content digest."""
        return self._properties[0]

    @property
    def properties_computed(self) -> int:
        """Properties computed (not read from the cache) in this run."""
        return self._properties[1]

    @property
    def _properties(self) -> tuple[dict[str, np.ndarray], int]:
        def compute() -> tuple[dict[str, np.ndarray], int]:
            from ..features.properties import compute_properties

            from ..memory import release_freed_memory

            f = self.features
            rows = np.flatnonzero(f.ok)
            try:
                return compute_properties(self.dataset.records, self.dataset.arrays, rows, f["digest"], cache=self.cache,
                                          max_pixels=self.hash_options.max_pixels, engine=self.engine,
                                          progress=self._ticker("measuring images", len(rows)))
            finally:
                release_freed_memory()  # the decoding threads' heaps: the checks that read the properties start lower

        return self.memo("properties", compute)


def staged_call(name: str, total: int, fn: Callable[[], T]) -> T:
    """``fn()`` reported as stage ``name`` (see :mod:`splitaudit.progress`): the neighbour stages run inside whichever
    check asks first, so without a name the run would sit silent on that check."""
    from ..memory import drop_spilled_pages, release_freed_memory

    drop_spilled_pages()  # a stage starts without the pages an earlier step read of the embeddings (pair cosines)
    with staged(name, total):
        try:
            return fn()
        finally:
            # the neighbour stages free hundreds of MiB of working arrays (20k photos): give the pages back
            release_freed_memory()


def _verifier_code() -> bytes:
    """A digest of the copy stage's source code (candidates, registration, verification, calibration)."""
    from ..neighbors import calibrate, candidates, keypoints, register, screen, verify

    h = hashlib.sha256()
    for module in (candidates, register, verify, calibrate, screen, keypoints):
        with open(module.__file__, "rb") as fh:  # type: ignore[arg-type]
            h.update(fh.read())
    return h.digest()


def store_key(key: Hashable, inputs: tuple[Any, ...]) -> str:
    """The one cache-key builder: a digest of ``key`` and every input (arrays by dtype, shape and bytes)."""
    h = hashlib.sha256(repr(key).encode())
    for x in inputs:
        if isinstance(x, np.ndarray):
            h.update(f"|{x.dtype.str}{x.shape}|".encode())
            h.update(np.ascontiguousarray(x).tobytes() if x.dtype != object else repr(x.tolist()).encode())
        elif isinstance(x, tuple) and all(isinstance(v, (bytes, type(None))) for v in x):
            for v in x:
                h.update(v or b"-")
        else:
            h.update(b"|" + repr(x).encode())
    return f"{key[0] if isinstance(key, tuple) else key}:{h.hexdigest()}"
