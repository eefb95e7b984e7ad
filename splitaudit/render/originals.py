"""Full-resolution originals for the HTML report's enlarged pair view (``--html-originals``).

``embed``: each image's file bytes as a ``data:`` URI, in report order (most severe pairs first) until the total
reaches ``--html-embed-mib``; a file in a format browsers show (JPEG, PNG, GIF, WebP, BMP) with at most
``--html-max-pixels`` pixels is embedded byte for byte, anything else is decoded with the pipeline's safe decoder
and re-encoded (PNG at full size, or WebP downscaled to the pixel cap), and the page says which. ``link``: a
relative URL from the report's folder to the file, so a report written next to the data opens the originals
where they are (nothing is read). ``none``: the view shows the thumbnails only.
"""

from __future__ import annotations

import base64
import io
import math
import os
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, features

from ..features import decode
from ..features.extract import DEFAULT_MAX_PIXELS

#: Formats Chromium, Firefox and Safari all display: embedded as they are.
_SHOWN = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}
_WEBP = features.check("webp")
_BATCH = 32  # images read per round: the budget is checked between rounds, so reading stops soon after it is spent


@dataclass(frozen=True)
class Original:
    """One image as the enlarged view shows it: ``src`` (data: URI or relative URL), its size as embedded (0 when
    linked: the browser reads it), the original size, and how it was made (``file``, ``re-encoded``,
    ``downscaled``, ``linked``)."""

    src: str
    width: int
    height: int
    original_width: int
    original_height: int
    how: str

    def to_json(self) -> list[Any]:
        return [self.src, self.width, self.height, self.original_width, self.original_height, self.how]


@dataclass(frozen=True)
class Originals:
    """The originals of a report's pair images, by image index (``None``: not embedded), and what was done."""

    items: tuple[Original | None, ...]
    mode: str
    budget_bytes: int
    max_pixels: int
    used_bytes: int
    stopped_at: int | None  # the first image index past the budget (embedding stopped there), else None

    @property
    def count(self) -> int:
        return sum(1 for o in self.items if o is not None)

    def note(self) -> str:
        """What the page says about its originals (plain text)."""
        n, total = self.count, len(self.items)
        if self.mode == "none" or total == 0:
            return "The enlarged view shows thumbnails: no originals were embedded or linked (--html-originals none)."
        if self.mode == "link":
            return (f"Originals are linked by relative path ({n} of {total} images): they open while the report stays "
                    "next to the data.")
        small = sum(1 for o in self.items if o is not None and o.how == "downscaled")
        text = (f"Originals are embedded for {n} of {total} images ({self.used_bytes / 2**20:.1f} MiB of a "
                f"{self.budget_bytes / 2**20:g} MiB cap, most severe pairs first)")
        if small:
            text += f"; {small} larger than {self.max_pixels:,} pixels were downscaled to that size"
        if n < total:
            text += "; the others show their thumbnails"
        return text + "."


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _encode(im: Image.Image, max_pixels: int, size: tuple[int, int]) -> Original:
    """A decoded image re-encoded for the page: PNG at full size, WebP (or JPEG) scaled down to ``max_pixels``."""
    w, h = im.size
    buf = io.BytesIO()
    if w * h <= max_pixels:
        im.save(buf, "PNG", optimize=False)
        return Original(_data_uri("image/png", buf.getvalue()), w, h, size[0], size[1], "re-encoded")
    f = math.sqrt(max_pixels / (w * h))
    im = im.resize((max(1, int(w * f)), max(1, int(h * f))), Image.Resampling.LANCZOS)
    if _WEBP:
        im.save(buf, "WEBP", quality=90, method=4)
        mime = "image/webp"
    else:
        im.save(buf, "JPEG", quality=90)
        mime = "image/jpeg"
    return Original(_data_uri(mime, buf.getvalue()), im.size[0], im.size[1], size[0], size[1], "downscaled")


def original_of_file(path: str, *, max_pixels: int, decode_limit: int = DEFAULT_MAX_PIXELS) -> Original | None:
    """The file as the page embeds it, or ``None`` when it is no readable image (or a bomb: refused unread)."""
    try:
        fh, size = decode.open_regular(path)
        with fh:
            if size > decode.IN_MEMORY_BYTES * 8:
                return None
            data = fh.read()
        fmt = decode.sniff(data[:16])
        if fmt is None:
            return None
        im = decode.open_image(data, fmt, max_pixels=decode_limit)
        w, h = im.size
        if fmt in _SHOWN and w * h <= max_pixels:
            return Original(_data_uri(_SHOWN[fmt], data), w, h, w, h, "file")
        return _encode(decode.to_rgb(decode.load(im, draft_size=None)), max_pixels, (w, h))
    except (decode.DecodeFailure, OSError, ValueError):
        return None


def as_image(value: Any) -> Image.Image:
    """What an ``image_loader`` returned (PIL image, H×W[×C] array in uint8 or [0, 1]) as a PIL image."""
    if isinstance(value, Image.Image):
        return value
    a = np.asarray(value)
    if a.dtype != np.uint8:
        scale = 255.0 if a.size and float(a.max()) <= 1.0 else 1.0
        a = np.clip(np.rint(a.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return Image.fromarray(a)


def original_of_value(value: Any, *, max_pixels: int) -> Original | None:
    """What an ``image_loader`` returned (see :func:`as_image`; ``None``: no image) as an embedded original."""
    if value is None:
        return None
    im = decode.to_rgb(as_image(value))
    return _encode(im, max_pixels, im.size)


def relative_url(path: str, start: str) -> str:
    """``path`` as a URL relative to the folder ``start`` (every character that is not a plain name quoted, so a
    file name can never become a scheme or a query)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(start))
    return "/".join(urllib.parse.quote(part, safe="") for part in rel.split(os.sep))


def collect(files: Sequence[str | None], *, mode: str, budget_bytes: int, max_pixels: int, link_from: str,
            loader: Callable[[int], Any] | None = None) -> Originals:
    """The originals of images ``0..n-1`` (``files[k]``: the image's file, ``None`` for arrays). ``loader(k)``,
    when given, supplies in-memory images instead of files (embed mode only)."""
    n = len(files)
    if mode == "none" or n == 0:
        return Originals((None,) * n, mode, budget_bytes, max_pixels, 0, None)
    if mode == "link":
        items = tuple(Original(relative_url(f, link_from), 0, 0, 0, 0, "linked") if f else None for f in files)
        return Originals(items, mode, budget_bytes, max_pixels, 0, None)

    def one(k: int) -> Original | None:
        if loader is not None:
            try:
                return original_of_value(loader(k), max_pixels=max_pixels)
            except Exception:  # a user callback failing on one image must not cost the report
                return None
        return original_of_file(files[k], max_pixels=max_pixels) if files[k] else None

    out: list[Original | None] = [None] * n
    used, stopped = 0, None
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, n, _BATCH):
            batch = list(pool.map(one, range(start, min(n, start + _BATCH))))
            for k, item in enumerate(batch, start=start):
                if item is None:
                    continue
                if used + len(item.src) > budget_bytes:
                    stopped = k
                    break
                out[k] = item
                used += len(item.src)
            if stopped is not None:
                break
    return Originals(tuple(out), mode, budget_bytes, max_pixels, used, stopped)
