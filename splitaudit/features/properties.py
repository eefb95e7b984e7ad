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

import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import decode
from .extract import DEFAULT_MAX_PIXELS, _read

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
        try:
            data = _read(path)  # type: ignore[arg-type]
        except OSError as exc:
            raise decode.DecodeFailure(decode.UNREADABLE, str(exc)) from exc
        size = float(len(data))
        fmt = decode.sniff(data[:16])
        if fmt is None:
            raise decode.DecodeFailure(decode.NOT_IMAGE, "not an image")
        im = decode.open_image(data, fmt, max_pixels=max_pixels)
        if fmt == "JPEG":
            im.draft(None, (ANALYSIS_SIDE, ANALYSIS_SIDE))  # type: ignore[arg-type]  # DCT scaling: cheap
        im = decode.load(im, draft_size=None)
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


def properties_batch(batch: dict[str, np.ndarray], max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, np.ndarray]:
    """Properties of a batch. Input columns: ``path`` and optionally ``pixels`` (object arrays).

    Output: one float64 column per name in :data:`MEASURED`; a row that cannot be decoded is all NaN.
    """
    paths = batch["path"]
    n = len(paths)
    pixels = batch.get("pixels", np.full(n, None, dtype=object))
    out = np.full((n, len(MEASURED)), np.nan)
    for i in range(n):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rgb, size = _analysis_image(paths[i], pixels[i], max_pixels)
                out[i, :5] = measure(rgb)
            out[i, 5] = size
        except (decode.DecodeFailure, OSError, ValueError, MemoryError):
            pass  # the features stage reports bad files; here they simply have no properties
    return {name: out[:, j] for j, name in enumerate(MEASURED)}


@dataclass(frozen=True)
class _Properties:
    """A picklable callable for the pool."""

    max_pixels: int = DEFAULT_MAX_PIXELS

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return properties_batch(batch, self.max_pixels)


def property_version(max_pixels: int) -> str:
    return f"p{PROPERTY_VERSION}-side{ANALYSIS_SIDE}-max{max_pixels}"


def compute_properties(
    records: Sequence,
    arrays: dict,
    rows: Sequence[int],
    digests: Sequence[bytes],
    *,
    cache: object | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Properties of ``rows`` (decoded records) as n-length float64 columns (NaN elsewhere), and how many were
    computed rather than read from the cache.

    The cache answers an unchanged dataset with one blob (keyed by every row's digest), and a changed one per
    content digest, so only new or edited files are decoded.
    """
    from .runner import map_batches

    if progress:  # announce the stage before the cache look-ups and the workers' start-up
        progress(0)
    n = len(records)
    version = property_version(max_pixels)
    rows = [int(i) for i in rows]
    h = hashlib.sha256(f"properties:{version}:".encode())
    for i in rows:
        h.update(i.to_bytes(8, "little"))
        h.update(digests[i] or b"")
    key = h.hexdigest()
    if cache is not None:
        stored = cache.get_arrays(key)  # type: ignore[attr-defined]
        if stored is not None and set(stored) == set(MEASURED) and all(len(v) == n for v in stored.values()):
            if progress:
                progress(len(rows))
            return {k: np.asarray(stored[k], dtype=np.float64) for k in MEASURED}, 0
    matrix = np.full((n, len(MEASURED)), np.nan)
    known = cache.properties_for([digests[i] for i in rows], version) if cache is not None else {}  # type: ignore[attr-defined]
    todo: list[int] = []
    for i in rows:
        v = known.get(digests[i]) if digests[i] else None
        if v is not None and len(v) == len(MEASURED):
            matrix[i] = v
        else:
            todo.append(i)
    if progress and len(rows) > len(todo):
        progress(len(rows) - len(todo))
    if todo:
        cols = {"path": np.array([records[i].path for i in todo], dtype=object), "pixels": np.empty(len(todo), dtype=object)}
        for j, i in enumerate(todo):
            if records[i].array_index >= 0:
                cols["pixels"][j] = arrays[records[i].split][records[i].array_index]
        out = map_batches(_Properties(max_pixels), cols, workers=workers, progress=progress)
        got = np.stack([out[k] for k in MEASURED], axis=1)
        matrix[np.asarray(todo)] = got
        if cache is not None:
            keep = [j for j, i in enumerate(todo) if digests[i]]
            cache.store_properties([digests[todo[j]] for j in keep], got[keep], version)  # type: ignore[attr-defined]
    columns = {k: matrix[:, j].copy() for j, k in enumerate(MEASURED)}
    if cache is not None:
        cache.put_arrays(key, columns)  # type: ignore[attr-defined]
    return columns, len(todo)
