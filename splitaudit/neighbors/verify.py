"""The copy verifier: is a candidate pair the same shot (re-cropped, re-graded, re-encoded), or a similar scene?

Each pair is registered (:mod:`.register`: zoom, mirror, small rotation, sub-pixel shift, frames) and scored by the
normalised cross-correlation of band-passed grey images on the overlap of the two images' content. A grey,
band-passed NCC is what a per-channel affine colour correction followed by a residual test amounts to, without
its over-fitting: level, contrast and grey conversion drop out, structure has to agree. The calibration
(:mod:`.calibrate`) turns the score into decisions for this dataset.

:func:`find_copies` is the whole stage over plain arrays: candidates, a vectorised screen of every candidate
(:mod:`.screen`), registration of each eval image's :data:`PER_IMAGE` best candidates by screen score (and of
its best :data:`PER_IMAGE` hash matches, each pixel search's nearest image, and the candidate that best lies inside
it, :func:`~.candidates.inside_best`, from both screens' starts) from the screen's start, calibration, decisions.
The registration work is bounded by the eval image count, not by the candidate count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..memory import MemoryGate, release_freed_memory
from .register import LEVEL_SOFTEN, PIXEL_MAD, PIXEL_SPREAD, SIDE, Prepared, Registration, prepare, register_pairs
from .screen import Screen, screen_pairs

#: Pairs are verified in chunks whose images are prepared together (bounded memory: ~9 kB per prepared image, ~160 kB
#: per pair in flight), one chunk per thread or worker. The chunks' pairs matter to the last digits (a pair's place in
#: register's stacks: 512-pair chunks against 256 moved 7 of 2,048 pairs' scores by at most 1.5e-6), not which thread
#: or process runs them or when. 256 rather than 512: two threads registered the 20k-photo check's 9,218 pairs in
#: 2.9 s against 4.6 s (each chunk's large temporary arrays, faulted in afresh, held the threads back), and a worker
#: process peaks at ~115 MB against ~155 MB.
CHUNK = 256
#: Working memory of one chunk in flight per pair (two chunks of 512 pairs added 140-175 MiB to a 20k-photo check):
#: a second chunk starts beside the first only within :data:`~splitaudit.memory.BUDGET_BYTES`.
PAIR_BYTES = 160_000
#: Pairs registered per eval image: its best PER_IMAGE candidates by screen score, and its best PER_IMAGE hash
#: matches.
PER_IMAGE = 2
#: An eval image's best registered pair scoring this or more (and under its copy cut) gets the second opinion of
#: local features, where the caller gives key images (photos). Measured on the 112-px held-out-like suite: of the
#: registered pairs that keypoint starts raised to 0.98 or more, 4 of 103 had scored under 0.8 (at 0.6, the
#: registration's own PRUNE).
KEYS_FROM = 0.8
#: A registered pair scoring this or more (and under the cuts' CEILING) is also scored on both images' HSV value
#: (max(R, G, B)), refined from the transform found, where the caller gives the value, and keeps the better score
#: (the calibration's null pairs alike: the cut is of the scores the decisions read). Hue and saturation edits made
#: in HSV or HSL space keep the value and move the luma: on the 32-px colour suite such copies scored 0.88-0.97 on
#: the luma, where the cut is ~0.98, and 0.98-1.0 on the value; the copies it raised over the cut scored 0.875 or
#: more on the luma. From 0.6 instead (every refined pair), the null's bulk rose with it: the colour suite's recall
#: was 0.915 against 0.920 at five seeds (scored at the luma's transform, not refined).
VALUE_FROM = 0.85
#: How far apart (in log) two images' colourfulness must be for their value to be read (:func:`recoloured`).
RECOLOURED = 0.02
#: Pairs whose value thumbnails are asked for at once (:func:`value_scores`): at most twice as many thumbnails held.
VALUE_PAIRS = 8192
#: A registered pair scoring this or more (and under the cuts' CEILING) is also scored with its grey levels matched
#: (:func:`tone_scores`) where they rank alike, and keeps the better score.
TONE_FROM = 0.85
#: A registered pair of tiny images scoring this or more (and under the cuts' CEILING) where either image shows a
#: JPEG's block grid is also scored in a coarser band (:func:`jpeg_scores`), and keeps the better score. Lower than
#: the other readings' floors: a copy saved at quality 50 lost most of the band the luma reads (crop 12% + JPEG q50,
#: 32 px: 0.87 at the median, some under 0.8).
JPEG_FROM = 0.75
#: Images whose block steps are measured at once (:func:`jpeg_scores`; ~16 kB of working arrays each at 32 px).
STEPS_BLOCK = 1024


def verify_pairs(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, *, side: int = SIDE, mirror: bool = True,
                 start: Registration | None = None, prune: bool = True, workers: int | None = None,
                 aspect: np.ndarray | None = None, plain: bool = False, pool=None,  # type: ignore[no-untyped-def]
                 also: Registration | None = None) -> Registration:
    """Register and score every pair (``thumbs[a[i]]``, ``thumbs[b[i]]``): a copy score per pair and the transform
    that maps a onto b. Deterministic; the work is bounded by the pair count (a fixed search per pair). ``start``:
    each pair's :func:`screen` answer, the starting point that replaces the half-resolution search; ``also``: a
    second start per pair, tried beside it where its score is not NaN (:func:`widen`). ``prune``:
    pairs whose template peak stays under :data:`~.register.PRUNE` skip the refinement (the calibration's null
    does not prune: its scores, low ones included, are what the cut is fitted to). ``workers``: threads (default:
    one per core); the answer does not depend on them. ``aspect``: per thumbnail, its image's width / height
    relative to the dataset's (:func:`~.register.unsquash`; None: all alike). ``plain``: objects on a plain
    background (:func:`~.register.plain_sides`)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..features.runner import default_workers

    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    n = len(a)
    out = {f.name: np.zeros(n, bool if f.name in ("mirrored", "still") else np.float64) for f in fields(Registration)}
    order = np.lexsort((a, b))
    # tiny images (grown to the working side) keep their resampling kernel: scored blurred too (RESOLUTION_TRIES)
    from . import register

    tries = register.RESOLUTION_TRIES if thumbs.shape[1] < side else ()

    def columns(sel: np.ndarray) -> dict[str, np.ndarray]:
        ids, inv = np.unique(np.concatenate([a[sel], b[sel]]), return_inverse=True)
        got = {"thumbs": thumbs[ids], "ia": inv[: len(sel)], "ib": inv[len(sel) :]}
        if aspect is not None:
            got["aspect"] = np.asarray(aspect)[ids]
        if start is not None:
            got["start_mirrored"] = start.mirrored[sel]
            got["start_scale"], got["start_angle"] = start.scale[sel], start.angle[sel]
        if also is not None:
            on = np.isfinite(also.score[sel])
            got["also_mirrored"] = also.mirrored[sel]
            got["also_scale"] = np.where(on, also.scale[sel], np.nan)
            got["also_angle"] = also.angle[sel]
        return got

    args = {"side": side, "mirror": mirror, "prune": prune, "tries": list(tries), "plain": plain}

    def chunk(begin: int) -> None:  # writes its own rows of ``out``: chunks run side by side
        sel = order[begin : begin + CHUNK]
        for k, v in register_job(args, columns(sel)).items():
            out[k][sel] = v

    segments = [order[s : s + CHUNK] for s in range(0, n, CHUNK)]
    if pool is not None and len(segments) > 1:
        from contextlib import closing

        with closing(pool.map("register", ((args, columns(sel)) for sel in segments))) as answers:
            for sel, got in zip(segments, answers):
                for k, v in got.items():
                    out[k][sel] = v
        release_freed_memory()
        return Registration(**out)

    # Threads, not processes: the time goes to OpenCV's template matching and warps and to large NumPy operations,
    # which release the GIL; a thread adds no memory of its own and works where forking is unsafe (TensorFlow or
    # faiss threads running).
    workers = min(default_workers() if workers is None else workers, max(1, -(-n // CHUNK)))
    if workers <= 1:
        for begin in range(0, n, CHUNK):
            chunk(begin)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="splitaudit-verify") as threads:
            gate = MemoryGate(CHUNK * PAIR_BYTES)
            list(threads.map(lambda begin: gate.run(chunk, begin), range(0, n, CHUNK)))
    release_freed_memory()  # the chunks' working images, freed in the threads' heaps: the next step starts lower
    return Registration(**out)


def register_job(args: dict, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One chunk of :func:`verify_pairs` (also a worker job, :mod:`~splitaudit.features.workers`): the pairs
    (``thumbs[ia[p]]``, ``thumbs[ib[p]]``) registered and scored; the :class:`Registration`'s columns."""
    images, ia, ib = arrays["thumbs"], arrays["ia"], arrays["ib"]
    side = int(args["side"])
    prep = prepare(images, side, arrays.get("aspect"), bool(args["plain"]))
    seeds = None
    if "start_mirrored" in arrays:
        seeds = list(zip(arrays["start_mirrored"].tolist(), arrays["start_scale"].tolist(),
                         arrays["start_angle"].tolist()))
    others = None
    if "also_mirrored" in arrays:
        others = [None if not math.isfinite(k) else (fl, k, t) for fl, k, t in
                  zip(arrays["also_mirrored"].tolist(), arrays["also_scale"].tolist(), arrays["also_angle"].tolist())]
    r = register_pairs(prep, ia, ib, mirror=bool(args["mirror"]), starts=seeds, prune=bool(args["prune"]),
                       tries=tuple(args["tries"]), also=others)
    return {"score": r.score, "mirrored": r.mirrored,
            "scale": r.params[:, 0], "angle": r.params[:, 1],  # x_b = k R (x_a - c - d) + c: b shows a k times bigger
            "dx": r.params[:, 2] / side, "dy": r.params[:, 3] / side, "overlap": np.minimum(r.overlap, 1.0),
            "mad": r.mad, "spread": r.spread, "still": r.still, "smooth_mad": r.smooth_mad}


def keypoint_registration(thumbs: np.ndarray, keys: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                          a: np.ndarray, b: np.ndarray, *, side: int = SIDE, aspect: np.ndarray | None = None,
                          workers: int | None = None, plain: bool = False) -> tuple[np.ndarray, Registration]:
    """The second opinion of local features (:mod:`.keypoints`): each pair registered from the similarity its
    keypoints fit, refined and scored like every pair. Returns (the pairs that had such a start, their
    :class:`Registration`). Pairs of an image shown in another shape (``aspect``, :func:`relative_aspect`) get none:
    their thumbnails are squeezed before registering, their key images are not."""
    from .keypoints import keypoint_starts
    from .register import ASPECT_SAME, register_from

    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    rows = np.arange(len(a))
    if aspect is not None:
        same = np.abs(np.log(np.asarray(aspect, np.float64))) <= np.log(ASPECT_SAME)
        rows = rows[same[a] & same[b]]
    found, mirrored, params, _ = keypoint_starts(keys, a[rows], b[rows], side, workers=workers)
    rows, mirrored, params = rows[found], mirrored[found], params[found]
    out = {f.name: np.zeros(len(rows), bool if f.name in ("mirrored", "still") else np.float64)
           for f in fields(Registration)}
    for s in range(0, len(rows), CHUNK):
        sel = slice(s, s + CHUNK)
        ids, inv = np.unique(np.concatenate([a[rows[sel]], b[rows[sel]]]), return_inverse=True)
        n = len(rows[sel])
        r = register_from(prepare(thumbs[ids], side, plain=plain), inv[:n], inv[n:], mirrored[sel], params[sel])
        out["score"][sel], out["mirrored"][sel] = r.score, r.mirrored
        out["scale"][sel], out["angle"][sel] = r.params[:, 0], r.params[:, 1]
        out["dx"][sel], out["dy"][sel] = r.params[:, 2] / side, r.params[:, 3] / side
        out["overlap"][sel] = np.minimum(r.overlap, 1.0)
        out["mad"][sel], out["spread"][sel], out["still"][sel] = r.mad, r.spread, r.still
        out["smooth_mad"][sel] = r.smooth_mad
    return rows, Registration(**out)


def value_scores(values: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], thumbs: np.ndarray, a: np.ndarray,
                 b: np.ndarray, columns: dict[str, np.ndarray], rows: np.ndarray, *, side: int = SIDE,
                 aspect: np.ndarray | None = None, plain: bool = False, workers: int | None = None) -> np.ndarray:
    """The score of each registered pair ``rows`` (``b[p]`` onto ``a[p]``) read on the two images' HSV value
    instead of their luma, refined from the transform in ``columns`` (the luma's). ``values(records)``: their value
    thumbnails (of ``thumbs``' side) and whether each is in colour; NaN where neither image is (a grey image's value
    is its luma: the same score), where the two images' colour is alike (:func:`recoloured`), or where either
    image's value is one edge (:data:`~.register.APERTURE`). The value thumbnails are asked for :data:`VALUE_PAIRS`
    pairs at a time (one job of the engine each, a bounded number of thumbnails held); their pairs are registered
    :data:`CHUNK` at a time on ``workers`` threads (default: one per core; the answer does not depend on them)."""
    from ..features.runner import default_workers
    from .register import APERTURE, RESOLUTION_TRIES, isotropy, register_from, to_grey

    rows = np.asarray(rows, np.int64)
    out = np.full(len(rows), np.nan)
    tries = RESOLUTION_TRIES if thumbs.shape[1] < side else ()
    workers = default_workers() if workers is None else workers
    for s in range(0, len(rows), VALUE_PAIRS):
        r = rows[s : s + VALUE_PAIRS]
        ids, inv = np.unique(np.concatenate([a[r], b[r]]), return_inverse=True)
        v, colour = values(ids)
        n = len(r)
        ia, ib = inv[:n], inv[n:]
        todo = np.flatnonzero((colour[ia] | colour[ib]) & recoloured(v, to_grey(np.asarray(thumbs[ids])), ia, ib))
        params = np.column_stack([columns["scale"][r], columns["angle"][r], columns["dx"][r] * side,
                                  columns["dy"][r] * side])
        mirrored = columns["mirrored"][r].astype(bool)

        def chunk(t: np.ndarray, s: int = s) -> None:  # writes its own rows of ``out``: chunks run side by side
            used, local = np.unique(np.concatenate([ia[t], ib[t]]), return_inverse=True)
            prep = prepare(np.asarray(v[used]), side, None if aspect is None else np.asarray(aspect)[ids[used]], plain)
            # refined on the value from the luma's transform: a luma that the edit moved a lot registers a little
            # off (32-px colour suite: 1,094 of 1,200 copies found scored at the luma's transform, 1,103 refined)
            got = register_from(prep, local[: len(t)], local[len(t) :], mirrored[t], params[t], tries=tries).score
            # Where one channel dominates, the value can be one edge where the luma is not (a red retina's rim: its
            # vessels are in the green): two crops of that edge registered at 0.991 on the value, 0.972 on the luma
            # (isotropy 0.007 against 0.024). Such a value says nothing: the aperture rule, on the value's images.
            iso = isotropy(prep)
            got[np.minimum(iso[local[: len(t)]], iso[local[len(t) :]]) < APERTURE] = np.nan
            out[s + t] = got

        _chunks_on_threads(chunk, [todo[c : c + CHUNK] for c in range(0, len(todo), CHUNK)], workers, "value")
    return out


def tone_scores(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, columns: dict[str, np.ndarray], rows: np.ndarray, *,
                side: int = SIDE, aspect: np.ndarray | None = None, plain: bool = False,
                workers: int | None = None) -> np.ndarray:
    """The score of each registered pair ``rows`` (``b[p]`` onto ``a[p]``) at the transform in ``columns`` with a's
    grey levels mapped onto b's first (:func:`~.register.tone_matched`: NaN where their levels do not rank alike;
    all NaN for objects on a ``plain`` background). Registered :data:`CHUNK` pairs at a time on ``workers``
    threads (the answer does not depend on them)."""
    from .register import RESOLUTION_TRIES, tone_matched

    rows = np.asarray(rows, np.int64)
    out = np.full(len(rows), np.nan)
    if plain:
        # Objects on one plain background rank alike where the background lies: read so, distinct garments rose
        # with the copies (Fashion-MNIST 5k: the copy cut 0.9901 -> 0.9910, recall 0.755 -> 0.745)
        return out
    tries = RESOLUTION_TRIES if thumbs.shape[1] < side else ()
    return _read_registered(thumbs, a, b, columns, rows, np.arange(len(rows)), side=side, aspect=aspect, plain=plain,
                            workers=workers, name="tone",
                            read=lambda prep, ia, ib, fl, params: tone_matched(prep, ia, ib, fl, params, tries=tries))


def _read_registered(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, columns: dict[str, np.ndarray], rows: np.ndarray,
                     todo: np.ndarray, *, side: int, aspect: np.ndarray | None, plain: bool, workers: int | None,
                     name: str, read: Callable[..., np.ndarray]) -> np.ndarray:
    """``read(prep, ia, ib, mirrored, params)`` of the registered pairs ``rows[todo]`` (``b[p]`` onto ``a[p]``) at the
    transforms in ``columns``, their images prepared :data:`CHUNK` pairs at a time on ``workers`` threads (the answer
    does not depend on them); NaN for the other rows."""
    from ..features.runner import default_workers

    out = np.full(len(rows), np.nan)
    params = np.column_stack([columns["scale"][rows], columns["angle"][rows], columns["dx"][rows] * side,
                              columns["dy"][rows] * side])
    mirrored = columns["mirrored"][rows].astype(bool)

    def chunk(t: np.ndarray) -> None:  # writes its own rows of ``out``: chunks run side by side
        used, local = np.unique(np.concatenate([a[rows[t]], b[rows[t]]]), return_inverse=True)
        prep = prepare(np.asarray(thumbs[used]), side, None if aspect is None else np.asarray(aspect)[used], plain)
        out[t] = read(prep, local[: len(t)], local[len(t) :], mirrored[t], params[t])

    _chunks_on_threads(chunk, [todo[c : c + CHUNK] for c in range(0, len(todo), CHUNK)],
                       default_workers() if workers is None else workers, name)
    return out


def jpeg_scores(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, columns: dict[str, np.ndarray], rows: np.ndarray, *,
                side: int = SIDE, aspect: np.ndarray | None = None, plain: bool = False,
                workers: int | None = None) -> np.ndarray:
    """The score of each registered pair ``rows`` at the transform in ``columns`` with both images band-passed at
    :data:`~.register.JPEG_BAND` (:func:`~.register.coarse_scores`), where either image shows a JPEG's block grid
    (:func:`~.register.block_steps` of :data:`~.register.JPEG_STEPS` or more); NaN elsewhere. Only for tiny images,
    whose thumbnails are the images at their own size (a photo's thumbnail averages its blocks away), and not for
    objects on a ``plain`` background (Fashion-MNIST 5k: look-alike garments rose with the copies, the recall at the
    null's 99.5th percentile 0.63 -> 0.40; their resampled edges show steps anywhere). Registered :data:`CHUNK` pairs
    at a time on ``workers`` threads (the answer does not depend on them)."""
    from .register import JPEG_STEPS, block_steps, coarse_scores, to_grey

    rows = np.asarray(rows, np.int64)
    out = np.full(len(rows), np.nan)
    if plain or thumbs.shape[1] >= side or not len(rows):
        return out
    used, local = np.unique(np.concatenate([a[rows], b[rows]]), return_inverse=True)
    # a block of images at a time: the steps' working arrays stay a few MB whatever the eval split's size
    steps = np.concatenate([block_steps(to_grey(np.asarray(thumbs[used[s : s + STEPS_BLOCK]])))
                            for s in range(0, len(used), STEPS_BLOCK)])
    blocky = np.maximum(steps[local[: len(rows)]], steps[local[len(rows) :]]) >= JPEG_STEPS
    return _read_registered(thumbs, a, b, columns, rows, np.flatnonzero(blocky), side=side, aspect=aspect, plain=plain,
                            workers=workers, name="jpeg", read=coarse_scores)


def _chunks_on_threads(chunk: Callable[[np.ndarray], None], chunks: list[np.ndarray], workers: int, name: str) -> None:
    """``chunk(t)`` of each of ``chunks`` (each writes its own rows of an answer), on up to ``workers`` threads, each
    chunk's working memory admitted by a :class:`~splitaudit.memory.MemoryGate` of one chunk's pairs."""
    from concurrent.futures import ThreadPoolExecutor

    if workers <= 1 or len(chunks) <= 1:
        for t in chunks:
            chunk(t)
        return
    with ThreadPoolExecutor(min(workers, len(chunks)), thread_name_prefix=f"splitaudit-{name}") as threads:
        gate = MemoryGate(CHUNK * PAIR_BYTES)
        list(threads.map(lambda t: gate.run(chunk, t), chunks))


def recoloured(value: np.ndarray, luma: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair (``a[p]``, ``b[p]``: rows of the (k, s, s) ``value`` and ``luma`` images): whether the two images'
    colourfulness differs, the mean of each pixel's value over its luma, relative to the mean value, apart by
    :data:`RECOLOURED` in log or more. A colour edit moves it (on the colour suites, 98-100% of the hue and
    saturation edits' copies); two crops of one colourful scene keep it: the value has nothing to say there that
    the luma does not (crops of the red retina: 0.001-0.036, and their value, its red channel, lacks the vessels
    the luma holds: 0.99 for distinct crops)."""
    v = np.asarray(value, np.float32).reshape(len(value), -1)
    lum = np.asarray(luma, np.float32).reshape(len(luma), -1)
    chroma = np.maximum((v - lum).mean(axis=1) / np.maximum(v.mean(axis=1), 1.0), 1e-3)
    return np.abs(np.log(chroma[a] / chroma[b])) >= RECOLOURED


def take_readings(values: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None, thumbs: np.ndarray,
                  a: np.ndarray, b: np.ndarray, columns: dict[str, np.ndarray], registered: np.ndarray, *,
                  aspect: np.ndarray | None = None, plain: bool = False, workers: int | None = None) -> np.ndarray:
    """Raise the score of the ``registered`` pairs under the cuts' ceiling, each later image's :data:`PER_IMAGE` best,
    to a second reading's where that is higher (``columns`` in place): their :func:`value_scores` from
    :data:`VALUE_FROM` up (where ``values`` is given), their :func:`tone_scores` from :data:`TONE_FROM` up, their
    :func:`jpeg_scores` from :data:`JPEG_FROM` up. Returns the rows raised, and every pair's score without the JPEG
    reading: the structure the level and pixel rules read (:func:`decide`'s ``pixels``). A coarse band says a pair
    is one shot only where its own null says so (the copy cut): it raised a distinct neighbouring crop of one
    texture into the similar band (0.928 -> 0.975), where the level rule then called it a copy (32-px suite)."""
    from .calibrate import CEILING

    score = np.nan_to_num(columns["score"], nan=-1.0)
    registered = np.asarray(registered, bool)
    got = np.full(len(score), -np.inf)

    def best_rows(floor: float) -> np.ndarray:
        # each image's PER_IMAGE best pairs (by the luma's score): on the 60k 32-px check the undecided eval images'
        # every pair from VALUE_FROM up meant 10,183 value thumbnails and 4.9 s; their best two 5,863 and 3.1 s, the
        # same findings
        return np.flatnonzero(_best_per_image(score, b, PER_IMAGE, registered & (score >= floor) & (score < CEILING)))

    if values is not None:
        rows = best_rows(VALUE_FROM)
        got[rows] = np.nan_to_num(value_scores(values, thumbs, a, b, columns, rows, aspect=aspect, plain=plain,
                                                workers=workers), nan=-np.inf)
    rows = best_rows(TONE_FROM)
    got[rows] = np.maximum(got[rows], np.nan_to_num(tone_scores(thumbs, a, b, columns, rows, aspect=aspect, plain=plain,
                                                                workers=workers), nan=-np.inf))
    fine = got.copy()
    rows = best_rows(JPEG_FROM)
    got[rows] = np.maximum(got[rows], np.nan_to_num(jpeg_scores(thumbs, a, b, columns, rows, aspect=aspect, plain=plain,
                                                                workers=workers), nan=-np.inf))
    raised = np.flatnonzero(got > score)
    structure = columns["score"].copy()
    lifted = np.flatnonzero(fine > score)
    structure[lifted] = fine[lifted]
    columns["score"][raised] = got[raised]
    return raised, structure


def take_better(columns: dict[str, np.ndarray], rows: np.ndarray, got: Registration) -> np.ndarray:
    """Overwrite the :class:`Registration` columns of ``rows`` by ``got`` where it scores higher (in place);
    returns the rows taken."""
    better = got.score > np.nan_to_num(columns["score"][rows], nan=-np.inf)
    for f in fields(Registration):
        columns[f.name][rows[better]] = getattr(got, f.name)[better]
    return rows[better]


def screen(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, *, side: int = SIDE, mirror: bool = True,
           workers: int | None = None, aspect: np.ndarray | None = None, plain: bool = False) -> Registration:
    """:func:`.screen.screen_pairs` over thumbnails: every image prepared once (only its half-resolution working
    images, as is and mirrored, are kept: ~4.6 kB an image; in temporary files above
    :data:`~splitaudit.memory.SPILL_BYTES`, 460 MB at 100k images, read back block by block), all pairs screened at
    once."""
    from .screen import VARIANTS, WEIGHTS

    return _screens(thumbs, a, b, ((VARIANTS, WEIGHTS),), side, mirror, workers, aspect, plain)[0].start()


def screen_outward(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, *, side: int = SIDE, mirror: bool = True,
                   workers: int | None = None, aspect: np.ndarray | None = None, plain: bool = False,
                   pool=None) -> tuple[Screen, Screen]:  # type: ignore[no-untyped-def]
    """:func:`screen`'s answer as a :class:`~.screen.Screen` (its start made for the pairs registered alone,
    :func:`widen`), and the pairs' screen with b shown bigger (:data:`~.screen.OUTWARD`: the train image a crop of
    the eval image), from one preparation of the images."""
    from .screen import OUTWARD, OUTWARD_WEIGHTS, VARIANTS, WEIGHTS

    main, out = _screens(thumbs, a, b, ((VARIANTS, WEIGHTS), (OUTWARD, OUTWARD_WEIGHTS)), side, mirror, workers, aspect,
                         plain, pool)
    return main, out


def widen(sc: Screen, out: Screen, b: np.ndarray, keep: np.ndarray, both: np.ndarray | None = None,
          *, kept_only: bool = False) -> tuple[np.ndarray, Registration, Registration]:
    """The pairs to register and their starts, given the main screen ``sc``, the outward one ``out`` and the main
    selection ``keep``: each later image's best pair by ``out`` joins where its outward peak beats every main peak of
    that image (one pair more at most; the main slots are not given up), and every pair starts from whichever screen
    scored it higher. The third answer, ``also``: for the pairs of ``both``, the other screen's start, which their
    registration tries too (score NaN elsewhere; :func:`verify_pairs`). ``kept_only``: the starts of the pairs to
    register alone (``start.select(keep)``, the same values), not of every pair: the copy stage's 1.78M candidates
    at 1M images made three full copies of the screen's 11 columns (~130 MB each) to keep a sixth of their rows."""
    b = np.asarray(b, np.int64)
    top = np.full(int(b.max()) + 1 if len(b) else 0, -np.inf)
    np.maximum.at(top, b, sc.score)
    extra = _best_per_image(out.score, b, 1, np.ones(len(b), bool)) & (out.score > top[b])
    keep = keep | extra
    rows = np.flatnonzero(keep) if kept_only else slice(None)
    take = out.score[rows] > sc.score[rows]
    main, outward = sc.start(rows), out.start(rows)
    start = Registration(**{f.name: np.where(take, getattr(outward, f.name), getattr(main, f.name))
                            for f in fields(Registration)})
    other = {f.name: np.where(take, getattr(main, f.name), getattr(outward, f.name)) for f in fields(Registration)}
    del main, outward
    on = np.zeros(len(b), bool) if both is None else np.asarray(both, bool)
    also = Registration(**{**other, "score": np.where(on[rows], other["score"], np.nan)})
    return keep, start, also


def _screens(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, groups, side: int, mirror: bool,  # type: ignore[no-untyped-def]
             workers: int | None, aspect: np.ndarray | None, plain: bool = False, pool=None) -> list[Screen]:
    """One :func:`.screen.screen_pairs` answer per (variants, weights) of ``groups``, the images prepared once."""
    from ..memory import SPILL_BYTES, SpilledRows

    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ids, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    shape = (len(ids), side // 2, side // 2)
    spill = 2 * len(ids) * (side // 2) ** 2 * 4 > SPILL_BYTES  # as is and mirrored
    # the half-resolution images as they are and mirrored (register.halve)
    small, small_mirror = ((SpilledRows(shape, np.float32), SpilledRows(shape, np.float32)) if spill
                           else (np.zeros(shape, np.float32), np.zeros(shape, np.float32)))
    box = np.zeros((len(ids), 4), np.int64)

    def made(s: int) -> Prepared:
        return prepare(thumbs[ids[s : s + CHUNK]], side, None if aspect is None else aspect[ids[s : s + CHUNK]], plain)

    from concurrent.futures import ThreadPoolExecutor

    from ..features.runner import default_workers

    # chunks prepared two at a time on threads (each image's working images are its own: the same numbers; 20k
    # thumbnails 1.1 -> 0.6 s), only their half-resolution images kept: not every chunk's full one
    starts = list(range(0, len(ids), CHUNK))
    side_by_side = max(1, min(default_workers() if workers is None else workers, len(starts)))
    with ThreadPoolExecutor(side_by_side, thread_name_prefix="splitaudit-prepare") as threads:
        for w in range(0, len(starts), side_by_side):
            wave = starts[w : w + side_by_side]
            for s, p in zip(wave, threads.map(made, wave)):
                for rows, got in ((small, p.small), (small_mirror, p.small_mirror)):
                    if spill:
                        rows.write(s, got)  # type: ignore[union-attr]
                    else:
                        rows[s : s + CHUNK] = got
                box[s : s + CHUNK] = p.box
    z = np.zeros((0, side, side), np.float32)
    prep = Prepared(z, small, box, np.zeros(len(ids), np.float32), z, small_mirror)  # type: ignore[arg-type]
    try:
        return [screen_pairs(prep, inv[: len(a)], inv[len(a) :], mirror=mirror, workers=workers, variants=v, weights=w,
                             pool=pool) for v, w in groups]
    finally:
        if spill:
            small.close()  # type: ignore[union-attr]
            small_mirror.close()  # type: ignore[union-attr]
        release_freed_memory()


def _best_per_image(score: np.ndarray, b: np.ndarray, per_image: int, among: np.ndarray) -> np.ndarray:
    """Mask of each later image's ``per_image`` best pairs by ``score`` among the rows ``among`` (ties: earlier row)."""
    rows = np.flatnonzero(among)
    order = rows[np.lexsort((rows, -score[rows], b[rows]))]
    first = np.r_[True, b[order][1:] != b[order][:-1]] if len(order) else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    keep = np.zeros(len(b), bool)
    keep[order[np.arange(len(order)) - start < per_image]] = True
    return keep


def select(sc: Screen | Registration, b: np.ndarray, per_image: int = PER_IMAGE, hashed: np.ndarray | None = None,
           nearest: np.ndarray | None = None) -> np.ndarray:
    """The pairs worth registering: each later image's ``per_image`` best pairs by screen score, its
    ``per_image`` best hash matches (uniform data -- garments, digits -- hash alike by the dozen per image), and
    the ``nearest`` pairs: each pixel search's nearest image (a candidate's ``pixel_rank`` 0), whatever its screen
    score. Among look-alike garments the coarse screen often ranks distinct ones above a copy shifted or re-framed by
    a pixel or two that a pixel view still finds nearest (Fashion-MNIST 20k: 92 of 135 planted copies not
    registered), and it ranks a photo cut 20% off a corner low whatever else is there (only registering the nearest
    pairs that screen within 0.1 of the best kept none of the 32-px photo suites' gains). Bounds the registration
    work to 2 x ``per_image`` pairs per eval image, and one per pixel search (:data:`~.candidates.VIEWS` and
    :data:`~.candidates.CROSS`), whatever the candidate count (:func:`find_copies` passes one more ``nearest`` pair an
    eval image: the candidate that best lies inside it, :func:`~.candidates.inside_best`)."""
    b = np.asarray(b, np.int64)
    keep = _best_per_image(sc.score, b, per_image, np.ones(len(b), bool))
    if hashed is not None:
        keep |= _best_per_image(sc.score, b, per_image, np.asarray(hashed, bool))
    if nearest is not None:
        keep |= np.asarray(nearest, bool)
    return keep


#: The registration's columns that only registered pairs have (NaN or 0 for every other candidate): a
#: :class:`CopyMatches` holds them for its registered pairs alone: at 300k images, 150k of its 510k candidates are
#: registered, and the whole columns (seven of floats, one of flags) held 21 MB more to the run's end.
REGISTERED_ONLY = ("score", "mirrored", "scale", "angle", "dx", "dy", "overlap", "smooth_mad")


#: The registration's columns whose value for a pair not registered is NaN (the others': 0 or False).
UNREGISTERED_NAN = ("score", "mad", "smooth_mad")


def _fill(name: str) -> object:
    """A pair's value in the registration's column ``name`` when it was not registered (as :func:`find_copies`
    fills it)."""
    return np.nan if name in UNREGISTERED_NAN else 0


class _Whole:
    """A :class:`CopyMatches` column of the registration, read whole: NaN or 0 where a pair was not registered."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: CopyMatches | None, owner: type | None = None) -> np.ndarray:
        return self if obj is None else obj._whole(self.name)  # type: ignore[return-value]


@dataclass(frozen=True)
class CopyMatches:
    """The copy stage's answer over record indices: candidate pairs ``a`` (earlier split) -> ``b`` (later split)
    with the candidate evidence, the registration and the decision. ``copy``: a confirmed copy (the near-duplicates
    error); ``similar``: the uncertain band (the similar-images warning). ``best_score`` / ``best_partner``: per
    record, its best-scoring candidate in an earlier split (NaN / -1 for none): every eval image's best copy score
    goes into the JSON report. ``calibration``: the values the decisions used. ``screen_score``, ``registered``:
    per pair, the screen's score, and whether the pair was registered (its eval image's best :data:`PER_IMAGE` by
    screen score, among its best :data:`PER_IMAGE` hash matches, or a pixel search's nearest: :func:`select`).

    ``mad``, ``spread``, ``still``: every pair's pixel agreement (:class:`~.register.Transform`: on the registered
    overlap, or of the two images as they lie, whichever agrees better). ``registration``: the
    :class:`~.register.Registration` of the registered pairs alone, in pair order. The :data:`REGISTERED_ONLY`
    columns read as attributes (``score``, ``scale``, ...) are made whole on each read, NaN or 0 where a pair was
    not registered; :meth:`at` reads some rows of one without making it."""

    a: np.ndarray
    b: np.ndarray
    pixel_rank: np.ndarray
    embed_rank: np.ndarray
    hashed: np.ndarray
    copy: np.ndarray
    similar: np.ndarray
    best_score: np.ndarray
    best_partner: np.ndarray
    calibration: object  # a calibrate.Calibration
    screen_score: np.ndarray
    registered: np.ndarray
    crowding: np.ndarray  # per record: calibrate.crowding (NaN: no candidates)
    mad: np.ndarray
    spread: np.ndarray
    still: np.ndarray
    registration: Registration

    # the REGISTERED_ONLY columns, made whole on each read
    score = _Whole()
    mirrored = _Whole()
    scale = _Whole()
    angle = _Whole()
    dx = _Whole()
    dy = _Whole()
    overlap = _Whole()
    smooth_mad = _Whole()

    def _whole(self, name: str) -> np.ndarray:
        values = getattr(self.registration, name)
        out = np.full(len(self), _fill(name), values.dtype)
        out[self.registered] = values
        return out

    def at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column ``name`` (a field's or a :data:`REGISTERED_ONLY` one's) at pair ``rows``, made for those rows."""
        rows = np.asarray(rows, np.int64)
        if name not in REGISTERED_ONLY:
            return np.asarray(getattr(self, name))[rows]
        values = getattr(self.registration, name)
        out = np.full(len(rows), _fill(name), values.dtype)
        # where each registered pair sits among the registered ones: its rank in the pair order
        where = np.flatnonzero(self.registered)
        pos = np.searchsorted(where, rows)
        hit = pos < len(where)
        hit[hit] = where[pos[hit]] == rows[hit]
        out[hit] = values[pos[hit]]
        return out

    def cuts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(copy cut, similar cut) of the records ``rows`` (eval images: each image's own, by its crowding)."""
        return self.calibration.cuts(self.crowding[np.asarray(rows, np.int64)])  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.a)

    def pairs(self) -> dict[str, np.ndarray]:
        """The per-pair columns, every registration column made whole (for a table or a saved file)."""
        skip = {"best_score", "best_partner", "calibration", "crowding", "registration"}
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out.update({name: getattr(self, name) for name in REGISTERED_ONLY})
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return copies_to_arrays(self)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> CopyMatches | None:
        return copies_from_arrays(arrays)


#: Candidate pairs compared at once by :func:`still_agreement` (memory: ~16 kB per pair at 64 px).
STILL_CHUNK = 1024


def still_agreement(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MAD, spread) per pair of the two thumbnails' grey levels as they lie, at their own side: the mean absolute
    difference of the whole images (as is or mirrored, the smaller) and a's grey standard deviation inside both
    images' content boxes (:func:`~.register.frames`), measured where the MAD is within
    :data:`~.register.PIXEL_MAD` (the only pairs :func:`pixel_agreement` reads it of; NaN elsewhere). Vectorised.

    The spread is the content's, not the frame's: two distinct shots in the same uniform frame (a 12% grey border
    of a blue sky and of a grey cell, 32 px) differ by 3 grey levels over the whole images, most of them frame, and
    the frame's contrast against the content gave a spread of 30; inside the frame it is 5, a near-blank content
    the rule does not judge. The MAD stays the whole images' (the ground truth's definition, issue #11)."""
    from .register import PIXEL_MAD, frames, mirror_box, to_grey

    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    mad = np.full(len(a), np.inf)
    spread = np.full(len(a), np.nan)
    for s in range(0, len(a), STILL_CHUNK):
        # each image of the chunk made grey once (an image is in several pairs), differences in one buffer
        ids, inv = np.unique(np.concatenate([a[s : s + STILL_CHUNK], b[s : s + STILL_CHUNK]]), return_inverse=True)
        grey = to_grey(thumbs[ids])
        ga, gb = grey[inv[: len(inv) // 2]], grey[inv[len(inv) // 2 :]]
        diff = np.subtract(ga, gb)
        as_is = np.abs(diff, out=diff).mean(axis=(1, 2))
        np.subtract(ga, gb[:, :, ::-1], out=diff)
        mirrored = np.abs(diff, out=diff).mean(axis=(1, 2))
        del diff, grey
        mad[s : s + STILL_CHUNK] = np.minimum(as_is, mirrored)
        near = np.flatnonzero(np.minimum(as_is, mirrored) <= PIXEL_MAD)
        if len(near):
            ga, gb = ga[near], gb[near]
            flip = mirrored[near] < as_is[near]
            box_a, box_b = frames(ga), frames(gb)
            box_b = np.where(flip[:, None], mirror_box(box_b, ga.shape[2]), box_b)
            x0, y0 = np.maximum(box_a[:, 0], box_b[:, 0]), np.maximum(box_a[:, 1], box_b[:, 1])
            x1, y1 = np.minimum(box_a[:, 2], box_b[:, 2]), np.minimum(box_a[:, 3], box_b[:, 3])
            rows, cols = np.arange(ga.shape[1]), np.arange(ga.shape[2])
            inside = (((rows[None, :] >= y0[:, None]) & (rows[None, :] <= y1[:, None]))[:, :, None]
                      & ((cols[None, :] >= x0[:, None]) & (cols[None, :] <= x1[:, None]))[:, None, :])
            n = np.maximum(inside.sum(axis=(1, 2)), 1)
            mean = np.where(inside, ga, 0.0).sum(axis=(1, 2)) / n
            var = np.where(inside, (ga - mean[:, None, None]) ** 2, 0.0).sum(axis=(1, 2)) / n
            # boxes that do not meet (one framed low, the other high): no content in common, nothing to judge
            spread[s + near] = np.where((x1 >= x0) & (y1 >= y0), np.sqrt(var), 0.0)
    return mad, spread


def pixel_agreement(mad: np.ndarray, spread: np.ndarray, still: np.ndarray | None = None, score: np.ndarray | None = None,
                    similar_cut: float | np.ndarray = -1.0) -> np.ndarray:
    """Per registered pair: its grey levels agree within :data:`~.register.PIXEL_MAD`, and the compared area is no
    near-blank one (a's grey spread at least :data:`~.register.PIXEL_SPREAD`). NaN: not registered. Where the MAD is
    of the registered overlap (not ``still``: the whole images as they lie), the structure must agree too, the
    ``score`` at ``similar_cut`` at least: two smooth, low-contrast regions of one photo (retina, 3.9 grey levels
    apart on a 1.27x zoomed overlap, score 0.948) agree in level without being one shot."""
    mad = np.nan_to_num(np.asarray(mad, np.float64), nan=np.inf)
    agree = (mad <= PIXEL_MAD) & (np.nan_to_num(np.asarray(spread, np.float64), nan=0.0) >= PIXEL_SPREAD)
    if still is not None and score is not None:
        agree &= np.asarray(still, bool) | (np.nan_to_num(np.asarray(score, np.float64), nan=-1.0) >= similar_cut)
    return agree


def level(mad: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Per registered pair: its grey levels' mean absolute difference on the overlap relative to a's grey spread
    there, softened by :data:`~.register.LEVEL_SOFTEN` grey levels (NaN where not registered). A copy's levels differ
    by its noise (JPEG, resampling); a distinct look-alike's by a share of its content."""
    return np.asarray(mad, np.float64) / (np.asarray(spread, np.float64) + LEVEL_SOFTEN)


def level_agreement(smooth_mad: np.ndarray, spread: np.ndarray, score: np.ndarray, similar_cut: float | np.ndarray,
                    level_cut: float) -> np.ndarray:
    """Per pair: structure that scores in the similar band at least and a :func:`level` (of the blurred grey levels'
    ``smooth_mad``) at most the calibration's ``level_cut`` (NaN: the rule is off); the level is of the registered
    overlap, or of the whole images as they lie where those agree better (a re-encoded copy needs no transform).
    The structural score alone loses low-contrast copies after JPEG or a shift: the band-pass keeps mostly noise
    there, while the blurred levels of a copy still agree. Measured (benchmarks/copy_suites.py, find_copies): at
    cuts of 0.068 (32 px) and 0.050 (128 px) the rule finds 47 of the 32-px suite's 82 misses and 21 of the 128-px
    suite's 29, with no new false pair (the lowest level of a distinct pair in the band: 0.093 and 0.078). The
    level alone would take a similar scene of the same level; the score excludes it."""
    if not np.isfinite(level_cut):
        return np.zeros(len(np.asarray(score)), bool)
    lev = np.nan_to_num(level(smooth_mad, spread), nan=np.inf)
    sc = np.nan_to_num(np.asarray(score, np.float64), nan=-1.0)
    return (sc >= similar_cut) & (lev <= level_cut)


def decide(score: np.ndarray, hashed: np.ndarray, calibration, *, trust_hashes: bool = False,  # type: ignore[no-untyped-def]
           pixels: np.ndarray | None = None, crowding: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(copy, similar) per pair. A pair is a copy at its copy cut (the calibration's, at the eval image's
    ``crowding``: :meth:`~.calibrate.Calibration.cuts`), or where its ``pixels`` agree (:func:`pixel_agreement`:
    the same picture to a viewer, whatever the structural score); a hash match is one always with ``trust_hashes``
    (datasets whose distinct images do not hash alike: the check context's hash collision rate), so the stage never
    finds fewer copies than hashes alone. Where hashes collide, a hash match adds nothing: on scikit-learn's digits
    distinct images that hash alike also register at 0.976-0.981, inside the similar band (an earlier rule, hash
    match + similar band, reported them). The band between the cuts is 'similar'."""
    score = np.nan_to_num(np.asarray(score, np.float64), nan=-1.0)
    hashed = np.asarray(hashed, bool)
    copy_cut, similar_cut = calibration.cuts(np.full(len(score), np.nan) if crowding is None else crowding)
    copy = (score >= copy_cut) | (hashed & trust_hashes)
    if pixels is not None:
        copy |= np.asarray(pixels, bool)
    similar = ~copy & (score >= similar_cut)
    return copy, similar


#: A second partner of one eval image is a copy only if it scores within this of the image's best partner.
SECONDARY_MARGIN = 0.02


def demote_secondary(b: np.ndarray, score: np.ndarray, hashed: np.ndarray, copy: np.ndarray, similar: np.ndarray,
                     *, margin: float = SECONDARY_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """A shot has one source: an eval image's copy partners other than its best are copies only when they score
    nearly as well (within ``margin``: copies of that source inside train, which score alike); the others are
    look-alikes of the source (a neighbouring crop of a mirror-symmetric scene, another tile of one texture) and
    move to the similar band. Pairs the hashes (or the pixel agreement: the caller passes it in ``hashed``) back keep their decision
    (independent evidence)."""
    score = np.nan_to_num(np.asarray(score, np.float64), nan=-1.0)
    best = np.full(int(b.max(initial=-1)) + 1, -np.inf)
    np.maximum.at(best, b[copy], score[copy])
    weak = copy & ~hashed & (score < best[b] - margin)
    return copy & ~weak, similar | weak


def demote_apertures(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, copy: np.ndarray, similar: np.ndarray,
                     evidence: np.ndarray, aspect: np.ndarray | None = None, plain: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Copies decided by their registration alone where either image is one edge (:data:`~.register.APERTURE`)
    move to the similar band: a copy of such an image and another crop of the same edge are not told apart by
    registering them. Either, not both: the score is read on the overlap, and where one image is one edge so is a
    true copy's overlap, whatever the other image holds beyond it (a crop of the rim at isotropy 0.008 against
    another crop at 0.019 registered at 0.98, mirrored, scaled 0.75). ``evidence``: pairs backed otherwise (a hash
    match, the pixel agreement as they lie), which keep their decision. Only the images of those pairs are
    measured (a few per copy found)."""
    from .register import APERTURE, isotropy, prepare

    check = np.flatnonzero(copy & ~evidence)
    if not len(check):
        return copy, similar
    ids, inv = np.unique(np.concatenate([a[check], b[check]]), return_inverse=True)
    iso = np.concatenate([isotropy(prepare(thumbs[ids[s : s + CHUNK]], SIDE,
                                           None if aspect is None else aspect[ids[s : s + CHUNK]], plain))
                          for s in range(0, len(ids), CHUNK)])
    flat = np.minimum(iso[inv[: len(check)]], iso[inv[len(check) :]]) < APERTURE
    copy, similar = copy.copy(), similar.copy()
    copy[check[flat]] = False
    similar[check[flat]] = True
    return copy, similar


def relative_aspect(aspect: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """Each record's width / height over the median one of the records ``reference`` (a mask: the training
    split's), or None where every record has that shape to within :data:`~.register.ASPECT_SAME` (the usual case:
    nothing to undo). The images of another shape are the ones squeezed (:func:`~.register.unsquash`), so the
    training images, most of them, keep their full thumbnails."""
    from .register import ASPECT_SAME

    aspect = np.asarray(aspect, np.float64)
    ok = np.isfinite(aspect) & (aspect > 0)
    ref = ok & reference
    if not ref.any():
        return None
    r = np.where(ok, aspect / float(np.median(aspect[ref])), 1.0)
    return r if (np.abs(np.log(r)) > np.log(ASPECT_SAME)).any() else None


#: Bytes of one image's pixel views (:func:`~.candidates.view_vectors`: 729 float32 numbers, as is and mirrored),
#: and the most the copy stage holds for every image at once, for the searches of both its threads to share.
VIEW_BYTES = 729 * 4 * 2
HELD_VIEWS_BYTES = 32 * 2**20


class _Beside:
    """``fn(*args)`` on a thread of its own, faiss's OpenMP at one thread there (its thread count is each thread's
    own); :meth:`result` waits for it and returns its value or raises its error. A daemon thread: when the caller
    fails or is interrupted meanwhile, it does not wait for this work, and the interpreter's exit does not either.
    It must not start a worker pool's processes: they get SIGTERM when the thread that started them ends."""

    def __init__(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        import threading

        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name="splitaudit-eval-pairs", daemon=True)
        self._thread.start()

    def _run(self, fn, args) -> None:  # type: ignore[no-untyped-def]
        from .candidates import _faiss_one_thread

        try:
            _faiss_one_thread()
            self._value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            self._error = exc

    def result(self):  # type: ignore[no-untyped-def]
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class _EitherThread:
    """``fn()`` run once, by the first of two threads to :meth:`claim` it; :meth:`result` claims it too, then waits
    for its value or raises its error. :meth:`cancel` hands ``exc`` to the waiter when the claiming side failed
    before it claimed."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        import threading
        from concurrent.futures import Future

        self._fn = fn
        self._lock = threading.Lock()
        self._claimed = False
        self._done: Future = Future()

    def _take(self) -> bool:
        with self._lock:
            taken, self._claimed = not self._claimed, True
        return taken

    def claim(self) -> None:
        """Run ``fn`` here unless a thread has already claimed it."""
        if self._take():
            try:
                self._done.set_result(self._fn())
            except BaseException as exc:
                self._done.set_exception(exc)
                raise

    def cancel(self, exc: BaseException) -> None:
        if self._take():
            self._done.set_exception(exc)

    def result(self):  # type: ignore[no-untyped-def]
        self.claim()
        return self._done.result()


def find_copies(thumbs: np.ndarray, split_index: np.ndarray, *, valid: np.ndarray | None = None,
                embeddings: np.ndarray | None = None, have_embedding: np.ndarray | None = None,
                hash_a: np.ndarray | None = None, hash_b: np.ndarray | None = None, trust_hashes: bool | None = False,
                calibration=None, seed: int = 0, per_image: int = PER_IMAGE, workers: int | None = None,
                aspect: np.ndarray | None = None,
                keys: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None, pool=None,
                values: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
                ) -> CopyMatches:  # type: ignore[no-untyped-def]
    """The copy stage over arrays: candidates (pixel views, embeddings, hashes), a vectorised screen of every
    candidate, registration of each eval image's ``per_image`` best candidates and best hash matches,
    calibration on the training split (unless one is given), decisions, and every record's best copy score.

    ``thumbs``: (N, s, s[, 3]) uint8 squashed thumbnails of every record (32 px for tiny images, 64 px for
    photos); ``split_index``: 0 = train, then the later splits; ``valid``: rows that decoded; ``trust_hashes``:
    hash matches are copies on their own (see :func:`decide`); ``None``: where the calibration finds that distinct
    training images rarely hash alike (:func:`~.calibrate.distinct_hash_rate` at most
    :data:`~.thresholds.HASH_COLLISION_RATE`: copies inside train do not count against the hashes); ``workers``: threads of the screen and the
    registration (default: one per core; the answer does not depend on them); ``aspect``: each record's width /
    height as shown (None: all square, as arrays are): thumbnails are squashed squares, and a copy cut to another
    shape than its source's is registered in their shared geometry (:func:`relative_aspect`); ``keys``: the key
    images of records (:func:`~.keypoints.keypoint_starts`; ok only for photos of
    :data:`~.keypoints.KEY_FROM` px or more): each eval image's best registered pair, when it scores from
    :data:`KEYS_FROM` up to its copy cut, gets the second opinion of local features (:func:`keypoint_registration`),
    the calibration's null pairs alike; ``pool``: a :class:`~splitaudit.features.workers.WorkerPool` the screen's
    blocks and the registration's chunks of tiny images (thumbnails smaller than :data:`~.register.SIDE`) run on
    (:meth:`~splitaudit.features.engine.Engine.job_pool`: local worker processes, or Ray tasks; the answer is the
    same); ``values``: the HSV-value thumbnails of records and whether each is in colour (:func:`value_scores`;
    None: luma only): registered pairs
    from :data:`VALUE_FROM` up are scored on them too, the calibration's null pairs alike."""
    from .calibrate import crowding
    from .candidates import candidate_pairs, cross_part, embedding_pairs, inside_best

    split_index = np.asarray(split_index)
    n = len(split_index)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    aspect = None if aspect is None else relative_aspect(aspect, valid & (split_index == 0))
    if thumbs.shape[1] >= SIDE:
        # Photos' thumbnails: two threads register as fast as this process and a worker (20k photos' 9,218 pairs:
        # 2.9 s against 2.7 s), and the worker would hold ~115 MB more. Tiny images grown to the working side are
        # also scored blurred (RESOLUTION_TRIES), more work under the GIL: 60k 32-px images' 27,978 pairs took
        # 14.1 s on threads, 9.0 s on the pool; their screen 11.7 against 10.2 s.
        pool = None
    train = np.flatnonzero(valid & (split_index == 0))
    hashes = None if hash_a is None or hash_b is None else (np.asarray(hash_a), np.asarray(hash_b))

    def search():  # type: ignore[no-untyped-def]
        # the embedding search first: it gathers the splits' rows (98 MiB at 20k photos) while the pixel views
        # (114 MiB) do not exist yet
        embedded = embedding_pairs(split_index, embeddings, have_embedding, valid=valid)
        release_freed_memory()  # its gathered rows, and the pages it read of spilled embeddings
        # the pixel views are made per search, for the rows it reads (not held for every image: 5.8 kB an image)
        return candidate_pairs(thumbs, split_index, valid=valid, embeddings=embeddings,
                               have_embedding=have_embedding, hash_a=hash_a, hash_b=hash_b, embedded=embedded,
                               vectors=vectors, crossed=None if crossed is None else crossed.result)

    def register(cand, plain: bool):  # type: ignore[no-untyped-def]
        sc, out = screen_outward(thumbs, cand.a, cand.b, workers=workers, aspect=aspect, plain=plain, pool=pool)
        # each eval image's crowding, from its pixel-view candidates as the calibration measures its null's
        proposed = cand.pixel_rank >= 0
        crowd = crowding(cand.b[proposed], sc.score[proposed], n)
        # each eval image's candidate that best lies inside it (a train image cut from a corner of it) is
        # registered too, from both screens' starts: the main screen often peaks higher for it, at a zoom near 1
        inside = inside_best(thumbs, cand.a, cand.b)
        keep, start, also = widen(sc, out, cand.b, select(sc, cand.b, per_image, hashed=cand.hashed,
                                                           nearest=(cand.pixel_rank == 0) | inside), both=inside,
                                  kept_only=True)
        del out
        got = verify_pairs(thumbs, cand.a[keep], cand.b[keep], start=start, workers=workers, aspect=aspect,
                           plain=plain, pool=pool, also=also)
        del start, also
        # every candidate, registered or not, compared as it lies: a pixel-level duplicate needs no registration,
        # and an eval image with several such train duplicates (Fashion-MNIST) has only its best few registered
        mad, spread = still_agreement(thumbs, cand.a, cand.b)
        # the screen's score alone is kept (its other ten columns: ~120 MB at 1M images' 1.78M candidates)
        return sc.score, crowd, keep, got, mad, spread

    vectors = None  # every image's pixel views, made once for both threads where they are small (below)
    crossed: _EitherThread | None = None  # the eval images' cross searches, run by the thread free first (below)
    if calibration is not None:
        # objects on a plain background or not: decided on the training images, once for every image of the run
        plain = bool(calibration.plain_background)
        cand = search()
        screen_score, crowd, keep, got, mad, spread = register(cand, plain)
    else:
        # The calibration reads the training images alone: the eval images' search, screen and registration run on
        # a thread of their own beside it, each side partly serial (2,000 photos: the stage took 3.1 s wall for
        # 4.4 CPU-s on two cores, one after the other). A worker pool serves this thread alone (its processes die
        # with the thread that started them): with one (tiny images), the calibration has it while the other thread
        # searches, and the eval images' screen and registration follow here. BLAS and OpenMP stay at one thread
        # each meanwhile, so that the cores are not oversubscribed and no product runs at a thread count that
        # depends on timing.
        from .calibrate import calibrate
        from .candidates import _one_thread_each, view_vectors
        from .register import PLAIN_DATASET, plain_share

        with _one_thread_each():
            # objects on a plain background or not, as the calibration decides it: the screen needs it first
            plain = bool(plain_share(thumbs, train) >= PLAIN_DATASET)
            if isinstance(thumbs, np.ndarray) and len(thumbs) * VIEW_BYTES <= HELD_VIEWS_BYTES:
                # each search would make its rows' views again (the candidates', the calibration's, the cross
                # searches': ~1.1 thread-s of 2,000 photos' stage); the same numbers, each image's views its own
                vectors = view_vectors(thumbs)
            # With a pool (tiny images), the eval images' cross searches run on whichever thread is free first: here
            # once the calibration is done, or on the helper once it has searched the views. On 60k 32-px images the
            # calibration took 13 s of the helper's 35 s of search, and the other core idled meanwhile. The same
            # searches, so the same candidates.
            crossed = _EitherThread(lambda: cross_part(thumbs, split_index, valid=valid, vectors=vectors)) \
                if pool is not None else None
            beside = _Beside(search if pool is not None else lambda: (c := search(), register(c, plain)))
            try:
                # the calibration lets go of its copy of the views after its searches
                calibration = calibrate(thumbs, train, seed=seed, per_image=per_image, workers=workers,
                                        hash_pairs=hashes, aspect=aspect, keys=keys, plain=plain, pool=pool,
                                        values=values,
                                        vectors=None if vectors is None else dict(vectors))
                if crossed is not None:
                    crossed.claim()
            except BaseException as exc:
                if crossed is not None:
                    crossed.cancel(exc)  # the helper stops waiting for them
                raise
            if pool is not None:
                cand = beside.result()
                screen_score, crowd, keep, got, mad, spread = register(cand, plain)
            else:
                cand, (screen_score, crowd, keep, got, mad, spread) = beside.result()
            vectors = None
    if trust_hashes is None:
        from .thresholds import HASH_COLLISION_RATE

        trust_hashes = bool(calibration.hash_distinct_rate <= HASH_COLLISION_RATE)  # NaN (not measured): no
    reg = {f.name: np.full(len(cand), _fill(f.name), getattr(got, f.name).dtype) for f in fields(Registration)}
    for name, col in reg.items():
        col[keep] = getattr(got, name)
    if keys is not None:
        # for each eval image without a copy yet, the pair a start the dense search cannot reach might decide: its
        # best registered pair, if it scores KEYS_FROM or more (one pair an eval image at most; none for those
        # decided already)
        copy_cut, _ = calibration.cuts(crowd[cand.b])
        score = np.nan_to_num(reg["score"], nan=-1.0)
        decided = np.zeros(n, bool)
        decided[cand.b[score >= copy_cut]] = True
        second = np.flatnonzero(_best_per_image(score, cand.b, 1, keep) & ~decided[cand.b] & (score >= KEYS_FROM))
        rows, better = keypoint_registration(thumbs, keys, cand.a[second], cand.b[second], aspect=aspect,
                                             workers=workers, plain=plain)
        take_better(reg, second[rows], better)
    closer = ~(np.nan_to_num(reg["mad"], nan=np.inf) <= mad)
    reg["mad"][closer], reg["spread"][closer], reg["still"][closer] = mad[closer], spread[closer], True
    reg["smooth_mad"][closer] = np.nan  # the level rule reads registered overlaps only
    _, similar_cut = calibration.cuts(crowd[cand.b])
    # the whole images as they lie agree on their own, whatever the registration: a registered overlap that agrees a
    # little better (Fashion-MNIST: a test image 3.88 grey levels from its train twin, 3.51 on the overlap) must not
    # put the pair under the structural test the overlap's agreement needs
    as_they_lie = pixel_agreement(mad, spread)
    structure = reg["score"]  # the score the pixel and level rules read (without the JPEG reading: take_readings)

    def decisions(rows: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the pairs ``rows``, every pair of their eval images among them (each image's decisions read its own pairs)
        score, hashed, still = reg["score"][rows], cand.hashed[rows], reg["still"][rows]
        pixels = pixel_agreement(reg["mad"][rows], reg["spread"][rows], still, structure[rows], similar_cut[rows])
        pixels |= as_they_lie[rows]
        levels = level_agreement(reg["smooth_mad"][rows], reg["spread"][rows], structure[rows], similar_cut[rows],
                                 calibration.level_cut)
        copy, similar = decide(score, hashed, calibration, trust_hashes=trust_hashes, pixels=pixels | levels,
                               crowding=crowd[cand.b[rows]])
        # the level rule leans on the structural score too: not independent evidence against a better-scoring partner
        copy, similar = demote_secondary(cand.b[rows], score, hashed | pixels, copy, similar)
        return demote_apertures(thumbs, cand.a[rows], cand.b[rows], copy, similar,
                                hashed | (pixels & still) | as_they_lie[rows], aspect, plain)

    copy, similar = decisions(slice(None))
    # Only the eval images without a copy yet are read a second time (on their value, with their levels matched):
    # another score of a decided image's pairs changes none of its decisions. The images whose scores rose are
    # decided again, their pairs alone (the whole again took ~2 s on the 60k 32-px check: the aperture rule's
    # isotropy of every copy's images).
    decided = np.zeros(n, bool)
    decided[cand.b[copy]] = True
    raised, structure = take_readings(values, thumbs, cand.a, cand.b, reg, keep & ~decided[cand.b], aspect=aspect,
                                      plain=plain, workers=workers)
    if len(raised):
        again = np.flatnonzero(np.isin(cand.b, cand.b[raised]))
        copy[again], similar[again] = decisions(again)
    best = np.full(n, np.nan)
    partner = np.full(n, -1, np.int64)
    score = np.nan_to_num(reg["score"], nan=-np.inf)
    order = np.lexsort((cand.a, -score))  # best score first; ties: the lowest partner index
    for j in order[::-1].tolist():  # the last write per record wins: the best
        if keep[j]:
            best[cand.b[j]] = reg["score"][j]
            partner[cand.b[j]] = cand.a[j]
    registration = Registration(**{name: col[keep] for name, col in reg.items()})
    return CopyMatches(a=cand.a, b=cand.b, pixel_rank=cand.pixel_rank, embed_rank=cand.embed_rank,
                       hashed=cand.hashed, copy=copy, similar=similar, best_score=best, best_partner=partner,
                       calibration=calibration, screen_score=screen_score, registered=keep, crowding=crowd,
                       mad=reg["mad"], spread=reg["spread"], still=reg["still"], registration=registration)


def as_dict(calibration) -> dict[str, float | int]:  # type: ignore[no-untyped-def]
    """A calibration's values for the JSON report."""
    return asdict(calibration)


def copies_to_arrays(c: CopyMatches) -> dict[str, np.ndarray]:
    """Plain arrays of a :class:`CopyMatches` (the run cache stores them: nothing executable)."""
    out = {f.name: getattr(c, f.name) for f in fields(c) if f.name not in ("calibration", "registration")}
    out.update({f"calibration.{k}": np.asarray(v) for k, v in asdict(c.calibration).items()})
    out.update({f"registration.{k}": v for k, v in c.registration.to_arrays().items()})
    return out


def copies_from_arrays(arrays: dict[str, np.ndarray]) -> CopyMatches | None:
    """:func:`copies_to_arrays` reversed; ``None`` when the arrays are not of this shape (an older layout)."""
    from .calibrate import Calibration

    names = [f.name for f in fields(CopyMatches) if f.name not in ("calibration", "registration")]
    cal_names = [f.name for f in fields(Calibration)]
    if not all(n in arrays for n in names) or not all(f"calibration.{n}" in arrays for n in cal_names):
        return None
    registration = Registration.from_arrays({k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("registration.")})
    if registration is None or len(registration) != int(np.count_nonzero(arrays["registered"])):
        return None
    cal = Calibration(**{n: arrays[f"calibration.{n}"].item() for n in cal_names})
    return CopyMatches(**{n: arrays[n] for n in names}, calibration=cal, registration=registration)
