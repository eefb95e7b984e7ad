"""Grey thumbnails for the copy verifier, as a pure batch function (the shape of ``extract_batch``).

Every decoded image becomes one ``side`` x ``side`` grey (ITU-R 601 luma) uint8 thumbnail, squashed to a square
as the networks see it and EXIF-oriented as a viewer sees it. The side follows the dataset (:func:`thumbnail_side`):
tiny images (CIFAR-like, 32 px) keep their own pixels, photos are shrunk to 64 px -- the sizes the verifier was
measured at (``benchmarks/copy_suites.py``); the verifier registers both at its working side of 48 px. JPEGs are
decoded at the smallest DCT scale that keeps both sides >= side (cheap). 1-4 kB per image, cached per content
digest.

The copy verifier also reads the HSV *value* (each pixel's largest channel) of some images (``channel="value"``):
hue and saturation edits made in HSV or HSL space (TensorFlow's ``adjust_hue``/``adjust_saturation``, colour-jitter
augmentations, most editors' hue slider) keep it, while they move the luma a lot.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import decode
from .extract import DEFAULT_MAX_PIXELS, decode_file

#: Thumbnail sides: images whose median longer side is at most TINY_MAX get TINY, others PHOTO.
TINY, PHOTO, TINY_MAX = 32, 64, 48
THUMB_VERSION = 3  # bump when the thumbnail's meaning changes: part of the cache key
#: Pillow modes without colour: an image decoded in one of them has its luma for its value.
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
#: What a thumbnail's grey level is: ITU-R 601 luma (Pillow's ``convert("L")``) or the HSV value, max(R, G, B).
CHANNELS = ("luma", "value")


def thumbnail_side(widths: np.ndarray, heights: np.ndarray) -> int:
    """The thumbnail side for a dataset of images of these sizes (decoded ones)."""
    if len(widths) == 0:
        return PHOTO
    return TINY if float(np.median(np.maximum(widths, heights))) <= TINY_MAX else PHOTO


def thumbnail_of(path: str | None, pixels: np.ndarray | None, side: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                 channel: str = "luma") -> np.ndarray:
    """One image's side x side grey thumbnail of ``channel`` (:data:`CHANNELS`; raises :class:`decode.DecodeFailure`
    or ``OSError`` when unreadable)."""
    if pixels is not None:
        im = Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")
    else:
        # a JPEG decoded straight to grey skips its colour planes; the value needs them
        im, _ = decode_file(path, mode="L" if channel == "luma" else "RGB", draft_size=side,  # type: ignore[arg-type]
                            max_pixels=max_pixels)
    if im.mode == "L":  # a grey image: its value is its grey
        grey = im
    elif channel == "luma":
        grey = decode.to_rgb(im).convert("L") if im.mode != "RGB" else im.convert("L")
    else:
        rgb = np.asarray(decode.to_rgb(im) if im.mode != "RGB" else im)
        grey = Image.fromarray(np.ascontiguousarray(rgb.max(axis=2)), "L")
    # Shrinking is the area average (each output pixel the coverage-weighted mean of the source pixels under it:
    # OpenCV's INTER_AREA), what the verifier was measured on (benchmarks/copy_suites.py). Pillow's BOX is that only at
    # whole ratios: its box is sampled at the source pixels' centres, so at 112 -> 64 px each source pixel counts
    # whole or not at all, a jitter of up to half a pixel that raised the null's cut and lowered the copies' scores
    # (held-out-like 112-px tiles: 0.79 of the planted copies found, 0.90 with the area average). BILINEAR's triangle
    # filter blurred away the fine band the copy score reads (47 misses against 35 of the 128-px suite's 378).
    # Growing a tiny image is bicubic.
    if grey.size != (side, side):
        if grey.width >= side and grey.height >= side:
            import cv2

            small = cv2.resize(np.frombuffer(grey.tobytes(), np.uint8).reshape(grey.height, grey.width), (side, side),
                               interpolation=cv2.INTER_AREA)
            return np.ascontiguousarray(small)
        grey = grey.resize((side, side), Image.Resampling.BICUBIC)
    return np.frombuffer(grey.tobytes(), np.uint8).reshape(side, side)  # twice as fast as np.asarray


def thumbnails_batch(batch: dict[str, np.ndarray], side: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                     channel: str = "luma") -> dict[str, np.ndarray]:
    """Thumbnails of ``channel`` of a batch (columns ``path`` and optionally ``pixels``): ``vector`` (n, side*side)
    uint8 and ``ok``; a row that cannot be decoded is zero and not ok (the feature stage reports it)."""
    paths = batch["path"]
    n = len(paths)
    pixels = batch.get("pixels", np.full(n, None, dtype=object))
    out = np.zeros((n, side * side), np.uint8)
    ok = np.zeros(n, bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            try:
                out[i] = thumbnail_of(paths[i], pixels[i], side, max_pixels, channel).ravel()
                ok[i] = True
            except (decode.DecodeFailure, OSError, ValueError, MemoryError):
                pass
    return {"vector": out, "ok": ok}


@dataclass(frozen=True)
class _Thumbnails:
    """A picklable callable for the pool."""

    side: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    channel: str = "luma"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return thumbnails_batch(batch, self.side, self.max_pixels, self.channel)


def compute_thumbnails(records: Sequence, arrays: dict, rows: Sequence[int] | np.ndarray, digests: Sequence[bytes], *, side: int,
                       cache: object | None = None, workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                       progress: Callable[[int], None] | None = None, engine: object | None = None,
                       spill: bool = False, channel: str = "luma", whole: bool = True
                       ) -> tuple[np.ndarray, np.ndarray, int]:
    """(thumbnails (n, side, side) uint8 of ``channel``, ok mask, how many were computed rather than read from the
    cache).
    ``spill``: above :data:`~splitaudit.memory.SPILL_BYTES` the thumbnails are written into a temporary file as
    they are made and returned as a :class:`~splitaudit.memory.SpilledRows` (read back by rows), never held whole;
    ``whole``: see :func:`~.per_image.compute_per_image`."""
    from ..errors import invalid_parameter
    from .per_image import compute_per_image

    if channel not in CHANNELS:
        raise invalid_parameter("channel", CHANNELS, channel)
    version = f"t{THUMB_VERSION}-side{side}-max{max_pixels}" + ("" if channel == "luma" else f"-{channel}")
    matrix, ok, computed = compute_per_image(
        _Thumbnails(side, max_pixels, channel), table="thumbnails", version=version,
        width=side * side, dtype="|u1", records=records, arrays=arrays, rows=rows, digests=digests, cache=cache,
        workers=workers, progress=progress, engine=engine, spill=spill, whole=whole)
    return matrix.reshape(len(records), side, side), ok, computed


def value_thumbnails(records: Sequence, arrays: dict, digests: Sequence[bytes], colour: np.ndarray, luma: np.ndarray, *,
                     cache: object | None = None, workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                     engine: object | None = None) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A callable giving records' HSV-value thumbnails (k, side, side) uint8 and whether each is in colour, made
    when asked for (the copy stage asks for the few images of its best pairs) and cached per content digest like
    the luma ones. ``colour``: the records in colour (the others' value is their luma, read off ``luma``: their
    thumbnails, (N, side, side)); a record whose value thumbnail is its luma one (grey content), or that no longer
    decodes, counts as grey."""
    side = int(luma.shape[1])
    colour = np.asarray(colour, bool)

    def values(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, np.int64)
        out = np.array(luma[rows], np.uint8)
        made = np.zeros(len(rows), bool)
        need = rows[colour[rows]]
        if len(need):
            got, ok, _ = compute_thumbnails(records, arrays, need, digests, side=side, cache=cache, workers=workers,
                                            max_pixels=max_pixels, engine=engine, channel="value", whole=False)
            at = np.flatnonzero(colour[rows])[ok[need]]
            value = got[rows[at]]
            # an RGB image of grey content (R = G = B) has its luma for its value: nothing to read again
            made[at] = (value != out[at]).reshape(len(at), -1).any(axis=1)
            out[at] = value
        return out, made

    return values
