"""The per-image passes as they were before issue #16's faster paths (main at b6fc087), kept verbatim as the
reference the fast paths must equal: every image through Pillow's own header parser, one image at a time."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from splitaudit.features import decode
from splitaudit.features.extract import HashOptions, _read, pixel_digest
from splitaudit.features.hashing import PHASH_INPUT
from splitaudit.features.properties import ANALYSIS_SIDE


def analysis_image(path: str, max_pixels: int) -> tuple[Image.Image, float]:
    data = _read(path)
    size = float(len(data))
    fmt = decode.sniff(data[:16])
    if fmt is None:
        raise decode.DecodeFailure(decode.NOT_IMAGE, "not an image")
    im = decode.open_image(data, fmt, max_pixels=max_pixels)
    if fmt == "JPEG":
        im.draft(None, (ANALYSIS_SIDE, ANALYSIS_SIDE))  # type: ignore[arg-type]
    im.load()
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)
    rgb = decode.to_rgb(im)
    if max(rgb.size) > ANALYSIS_SIDE:
        scale = ANALYSIS_SIDE / max(rgb.size)
        target = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(target, Image.Resampling.BOX)
    return rgb, size


def measure(rgb: Image.Image) -> tuple[float, float, float, float, float]:
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


def properties(path: str, max_pixels: int = 178_956_970) -> list[float]:
    rgb, size = analysis_image(path, max_pixels)
    return [*measure(rgb), size]


def thumbnail(path: str, side: int, max_pixels: int = 178_956_970) -> np.ndarray:
    data = _read(path)
    fmt = decode.sniff(data[:16])
    assert fmt is not None
    im = decode.open_image(data, fmt, max_pixels=max_pixels)
    if fmt == "JPEG":
        im.draft("L", (side, side))  # type: ignore[arg-type]
    im.load()
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)
    grey = decode.to_rgb(im).convert("L") if im.mode not in ("L", "RGB") else im.convert("L")
    if grey.size == (side, side):
        return np.asarray(grey, dtype=np.uint8)
    if grey.width >= side and grey.height >= side:  # the area average (third thumbnail version)
        import cv2

        return cv2.resize(np.asarray(grey, dtype=np.uint8), (side, side), interpolation=cv2.INTER_AREA)
    return np.asarray(grey.resize((side, side), Image.Resampling.BICUBIC), dtype=np.uint8)


def extract(path: str, options: HashOptions) -> tuple[dict[str, Any], Image.Image | None, Image.Image | None]:
    """The row, viewer grey and stored grey of the hash pass (``_extract_file`` before the quick path)."""
    row: dict[str, Any] = {"format": "", "mode": "", "width": 0, "height": 0, "frames": 0, "pixel_digest": b"",
                           "orientation": 1}
    data = _read(path)
    fmt = decode.sniff(data[:16])
    assert fmt is not None
    row["format"] = fmt
    im = decode.open_image(data, fmt, max_pixels=options.max_pixels)
    w, h = im.size
    orient = decode.orientation(im)
    if orient in (5, 6, 7, 8):
        w, h = h, w
    row.update(mode=im.mode, width=w, height=h, frames=int(getattr(im, "n_frames", 1) or 1))
    drafted = options.draft and fmt == "JPEG"
    stored = decode.load(im, draft_size=PHASH_INPUT if drafted else None, orient=1)
    im = decode.orient(stored, orient)
    row["orientation"] = orient
    if drafted:
        gray = decode.to_gray(im)
    else:
        rgb = decode.to_rgb(im)
        row["pixel_digest"] = pixel_digest(rgb)
        gray = decode.to_gray(im) if im.mode in ("L", "RGB") else rgb.convert("L")
    return row, gray, (None if im is stored else decode.to_gray(stored))
