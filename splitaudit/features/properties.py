"""Image properties (brightness, contrast, saturation, sharpness, entropy, file size) as a pure batch function.

:func:`properties_batch` has the same shape as :func:`~splitaudit.features.extract.extract_batch` (a dict of
NumPy columns in, a dict of columns out) and is mapped over the same process pool. It reads each file once, never
raises for a bad file (its row is NaN) and keeps nothing decoded after its row is done. It is *not* part of the
default hash stage: :func:`compute_properties` runs only when a check asks ``AuditContext.properties``.

Every image is analysed at a modest size: JPEGs are decoded with libjpeg's DCT scaling (``draft``) to the smallest
scale that keeps both sides >= ``ANALYSIS_SIDE``, then every image is box-filtered down to fit in
``ANALYSIS_SIDE`` x ``ANALYSIS_SIDE`` (small images are never enlarged). That is enough because brightness,
saturation and the entropy of the grey histogram are global averages that a box filter preserves (means exactly),
and contrast loses only texture finer than 1/128 of the picture. Sharpness is *meant* to be measured at one fixed
scale: a Laplacian at native resolution would mostly measure resolution (a 4000-px photo of a blurred scene scores
"sharp"), while at a common scale it compares how much detail the images show.

Width, height, aspect ratio, mode and format are already in the feature table; they are not repeated here.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import decode
from .extract import DEFAULT_MAX_PIXELS, HashOptions, _read, decode_file, extract_one, pixel_digest

#: Longest side at which properties are measured (see the module docstring for why it is enough).
ANALYSIS_SIDE = 128
#: An image whose grey standard deviation (0-255) is below this is "near-blank" (a flat frame, a lens cap, a
#: failed export). 2 grey levels is below what JPEG noise on a flat area usually gives a real scene.
BLANK_STD = 2.0
PROPERTY_VERSION = 1  # bump when a column's meaning changes: it is part of the cache key
#: Measured columns, in the order they are cached.
MEASURED = ("brightness", "contrast", "saturation", "sharpness", "entropy", "file_size")

Progress = Callable[[int], None]


def _analysis_image(path: str | None, pixels: np.ndarray | None, max_pixels: int) -> tuple[Image.Image, float]:
    """The image as RGB at analysis size, and its file size in bytes (NaN for in-memory arrays)."""
    if pixels is not None:
        im = Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")
        size = math.nan
    else:
        im, nbytes = decode_file(path, mode=None, draft_size=ANALYSIS_SIDE, max_pixels=max_pixels)  # type: ignore[arg-type]
        size = float(nbytes)
    rgb = decode.to_rgb(im)
    if max(rgb.size) > ANALYSIS_SIDE:
        scale = ANALYSIS_SIDE / max(rgb.size)
        target = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(target, Image.Resampling.BOX)
    return rgb, size


def measure(rgb: Image.Image) -> tuple[float, float, float, float, float]:
    """(brightness, contrast, saturation, sharpness, entropy) of an RGB image.

    brightness: mean grey level (ITU-R 601 luma, 0-255); contrast: standard deviation of grey (RMS contrast);
    saturation: mean HSV saturation (0-255); sharpness: variance of the 4-neighbour Laplacian of grey (NaN below
    3x3 pixels); entropy: Shannon entropy of the 256-bin grey histogram, in bits (0-8).
    """
    grey = np.asarray(rgb.convert("L"), dtype=np.float64)
    sat = np.asarray(rgb.convert("HSV"), dtype=np.float64)[..., 1]
    hist = np.bincount(grey.astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum()) + 0.0
    if grey.shape[0] >= 3 and grey.shape[1] >= 3:
        lap = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1]) - 4.0 * grey[1:-1, 1:-1]
        sharpness = float(lap.var())
    else:
        sharpness = math.nan
    return float(grey.mean()), float(grey.std()), float(sat.mean()), sharpness, entropy


def measure_stack(rgb: np.ndarray) -> np.ndarray:
    """:func:`measure` of k RGB images of one size at once, a (k, h, w, 3) uint8 stack: (k, 5) float64.

    One Pillow conversion of the stack (stacked vertically: its per-pixel L and HSV conversions are those of each
    image) and integer moments over the stack replace per-image calls: grey levels and the Laplacian of grey are
    integers, so their sums and sums of squares are exact, and each mean and variance is one division of exact
    integers (measure's two-pass float variance agrees to ~1e-15 relative; tested)."""
    k, h, w, _ = rgb.shape
    n = h * w
    tall = Image.fromarray(rgb.reshape(k * h, w, 3), "RGB")
    grey8 = np.frombuffer(tall.convert("L").tobytes(), np.uint8).reshape(k, n)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # the working arrays are kept small (uint16 / int16 / int32, the grey moments from the histogram): int64 copies
    # of the stack were ~15 allocations of 4 MB per 32 images, page-faulted afresh when a stage measures batch by batch
    top = np.maximum(np.maximum(r, g), b).astype(np.uint16)
    sat = saturation_table()[(top << 8) | np.minimum(np.minimum(r, g), b)].reshape(k, n)
    out = np.empty((k, 5))
    hist = np.stack([np.bincount(row, minlength=256) for row in grey8]).astype(np.int64)
    levels = np.arange(256, dtype=np.int64)
    total = hist @ levels  # exact integer sums, as summing the pixels
    out[:, 0] = total / n
    out[:, 1] = np.sqrt(_exact_variance(total, hist @ (levels * levels), n))
    out[:, 2] = sat.sum(axis=1, dtype=np.int64) / n
    if h >= 3 and w >= 3:
        g16 = grey8.reshape(k, h, w).astype(np.int16)  # a Laplacian of grey levels lies within +-1020
        lap = ((g16[:, 1:-1, :-2] + g16[:, 1:-1, 2:] + g16[:, :-2, 1:-1] + g16[:, 2:, 1:-1]) - 4 * g16[:, 1:-1, 1:-1]).reshape(k, -1)
        out[:, 3] = _exact_variance(lap.sum(axis=1, dtype=np.int64), np.square(lap, dtype=np.int32).sum(axis=1, dtype=np.int64),
                                    lap.shape[1])
    else:
        out[:, 3] = math.nan
    p = hist / n
    logs = np.log2(p, out=np.zeros_like(p), where=hist > 0)
    out[:, 4] = -(p * logs).sum(axis=1) + 0.0
    return out


@functools.cache
def saturation_table() -> np.ndarray:
    """Pillow's HSV saturation of a pixel by ``max(r, g, b) << 8 | min(r, g, b)`` (it depends on nothing else:
    tested over all 2^24 colours), read from Pillow itself: a table look-up is 3x cheaper than its conversion."""
    top, low = np.divmod(np.arange(65536), 256)
    pixels = np.stack([top, np.minimum(low, top), np.minimum(low, top)], axis=1).astype(np.uint8).reshape(256, 256, 3)
    return np.asarray(Image.fromarray(pixels, "RGB").convert("HSV"))[..., 1].ravel().copy()


def _exact_variance(total: np.ndarray, squares: np.ndarray, n: int) -> np.ndarray:
    """Population variance from exact integer sums: (n * sum(x^2) - sum(x)^2) / n^2, the numerator in int64 (at
    most 1020^2 * n^2 for the Laplacian: far below 2^63 at 128 px); Python integers for larger images."""
    if n * n * 1020**2 < 2**62:
        return (n * squares - total * total) / float(n * n)
    return np.array([(n * int(q) - int(t) * int(t)) / (n * n) for t, q in zip(total, squares)])


def properties_batch(batch: dict[str, np.ndarray], max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, np.ndarray]:
    """Properties of a batch. Input columns: ``path`` and optionally ``pixels`` (object arrays).

    Output: one float64 column per name in :data:`MEASURED`; a row that cannot be decoded is all NaN. Images of
    one analysis size are measured together (:func:`measure_stack`).
    """
    paths = batch["path"]
    n = len(paths)
    pixels = batch.get("pixels", np.full(n, None, dtype=object))
    out = np.full((n, len(MEASURED)), np.nan)
    by_size: _Groups = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            try:
                rgb, size = _analysis_image(paths[i], pixels[i], max_pixels)
            except (decode.DecodeFailure, OSError, ValueError, MemoryError):
                continue  # the features stage reports bad files; here they simply have no properties
            _add(by_size, i, rgb)
            out[i, 5] = size
    _measure_groups(by_size, out)
    return {name: out[:, j] for j, name in enumerate(MEASURED)}


_Groups = dict[tuple[int, int], list[tuple[int, np.ndarray]]]


def _add(groups: _Groups, row: int, rgb: Image.Image, pixels: bytes | None = None) -> None:
    """Queue an RGB image (``pixels``: its ``tobytes()`` when the caller has them) for :func:`_measure_groups`."""
    data = rgb.tobytes() if pixels is None else pixels
    groups.setdefault((rgb.height, rgb.width), []).append((row, np.frombuffer(data, np.uint8).reshape(rgb.height, rgb.width, 3)))


def _measure_groups(groups: _Groups, out: np.ndarray) -> None:
    """Fill the first five columns of ``out``'s rows in ``groups`` (images of one size measured together)."""
    for group in groups.values():
        out[[i for i, _ in group], :5] = measure_stack(np.stack([a for _, a in group]))


def digests_and_properties_batch(batch: dict[str, np.ndarray], options: HashOptions | None = None) -> dict[str, np.ndarray]:
    """:func:`~.extract.pixel_digest_batch`'s ``pixel_digest`` column and, from the same decode, ``properties``
    ((n, 6) in :data:`MEASURED` order) of the plain small JPEGs (:func:`decode.plain_jpeg`) whose full-resolution
    pixels are their analysis image (both sides <= :data:`ANALYSIS_SIDE`); NaN rows for the others.

    The confirm stage decodes many tiny images at full resolution, and the properties stage would decode them
    again, the same way: this measures them on the way (the caller caches the properties)."""
    paths = batch["path"]
    n = len(paths)
    pixels = batch.get("pixels", np.full(n, None, dtype=object))
    digests = batch.get("digest", np.full(n, None, dtype=object))
    max_pixels = options.max_pixels if options is not None else DEFAULT_MAX_PIXELS
    full = HashOptions(draft=False, max_pixels=max_pixels)
    found = np.full(n, b"", dtype=object)
    out = np.full((n, len(MEASURED)), np.nan)
    by_size: _Groups = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            small = _small_plain_jpeg(paths[i], max_pixels) if pixels[i] is None else None
            if small is None:  # everything else exactly as pixel_digest_batch takes it
                found[i] = extract_one(paths[i], pixels[i], digests[i], full)[0]["pixel_digest"]
                continue
            rgb, out[i, 5] = small
            data = rgb.tobytes()
            found[i] = pixel_digest(rgb, data)
            _add(by_size, i, rgb, data)
    _measure_groups(by_size, out)
    return {"pixel_digest": found, "properties": out}


def _small_plain_jpeg(path: str, max_pixels: int) -> tuple[Image.Image, float] | None:
    """(full-resolution RGB, file size) of a plain JPEG of sides <= ANALYSIS_SIDE, else ``None``."""
    try:
        data = _read(path)
    except OSError:
        return None
    header = decode.plain_jpeg(data) if decode.sniff(data[:16]) == "JPEG" else None
    if header is None or max(header[1], header[2]) > ANALYSIS_SIDE:
        return None
    im = decode.quick_jpeg(data, None, None, max_pixels, header)
    return None if im is None else (decode.to_rgb(im), float(len(data)))


def property_version(max_pixels: int) -> str:
    return f"p{PROPERTY_VERSION}-side{ANALYSIS_SIDE}-max{max_pixels}"


def compute_properties(
    records: Sequence,
    arrays: dict,
    rows: Sequence[int] | np.ndarray,
    digests: Sequence[bytes],
    *,
    cache: object | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
    engine: object | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Properties of ``rows`` (decoded records) as n-length float64 columns (NaN elsewhere), and how many were
    computed rather than read from the cache (per content digest: only new or edited files are decoded)."""
    from .per_image import compute_per_image

    matrix, ok, computed = compute_per_image(
        _PropertyVectors(max_pixels), table="properties", version=property_version(max_pixels), width=len(MEASURED),
        dtype="<f8", records=records, arrays=arrays, rows=rows, digests=digests, cache=cache, workers=workers,
        progress=progress, engine=engine)
    # NaN where not measured, in place, and each column a view of the one matrix: a new matrix and copied columns
    # were two more of it at once (48 MB each at 1M images, the peak of the check's last stage; issue #15)
    if not matrix.flags.writeable:
        matrix = matrix.copy()
    matrix[~ok] = np.nan
    return {k: matrix[:, j] for j, k in enumerate(MEASURED)}, computed


@dataclass(frozen=True)
class _PropertyVectors:
    """:func:`properties_batch` as one matrix and an ok mask (the :mod:`.per_image` shape); picklable for the pool."""

    max_pixels: int = DEFAULT_MAX_PIXELS

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = properties_batch(batch, self.max_pixels)
        matrix = np.stack([out[k] for k in MEASURED], axis=1)
        return {"vector": matrix, "ok": ~np.isnan(matrix[:, :2]).all(axis=1)}
