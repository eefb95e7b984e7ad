"""Recognise and decode one image safely.

Images are recognised from their magic bytes, never their extension, and decoded with Pillow restricted to the
sniffed format so a mislabelled file cannot be parsed as something else. Decoding never raises for bad data: the
caller gets a status and a one-line reason, which the ``unreadable-images`` check turns into a finding.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

# (prefix, offset, Pillow format). WebP needs "WEBP" at offset 8 after a RIFF header.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)

#: File name endings that promise an image: a non-image with one of these is reported, others are skipped.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})

# Statuses (stable strings: they appear in JSON output and the cache).
OK = "ok"
EMPTY = "empty"
NOT_IMAGE = "not-image"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
UNDECODABLE = "undecodable"
TOO_LARGE = "too-large"


def sniff(head: bytes) -> str | None:
    """The Pillow format name for these leading bytes, or ``None`` if they are not an image we read."""
    for magic, offset, fmt in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if fmt == "WEBP" and head[:4] != b"RIFF":
                continue
            return fmt
    return None


class DecodeFailure(Exception):
    """Carries a status and a one-line reason; never escapes the features stage."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def open_image(data: bytes, fmt: str, *, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse decompression bombs before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warning: we apply our own limit below.
            im = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise DecodeFailure(TOO_LARGE, str(exc)) from exc
    except Exception as exc:  # Pillow raises many types for corrupt headers; all mean "cannot decode"
        raise DecodeFailure(UNDECODABLE, f"cannot parse {fmt} header: {exc}") from exc
    w, h = im.size
    if w * h > max_pixels:
        raise DecodeFailure(TOO_LARGE, f"{w}x{h} pixels exceeds the limit of {max_pixels} (decompression bomb guard)")
    if w == 0 or h == 0:
        raise DecodeFailure(UNDECODABLE, f"image has zero size {w}x{h}")
    return im


def orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright) or 1 when absent or unreadable."""
    if "exif" not in im.info and im.format != "TIFF":
        return 1  # no EXIF block at all (TIFF keeps its tags elsewhere): skip building an Exif object per image
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a corrupt EXIF block must not hide the image itself
        return 1


def load(im: Image.Image, *, draft_size: int | None, orient: int | None = None) -> Image.Image:
    """Decode pixels (optionally at a reduced JPEG scale) and apply the EXIF orientation a viewer would show.

    ``orient`` is the already-read :func:`orientation`, when the caller has it: upright images then skip a second
    EXIF parse.
    """
    try:
        if draft_size and im.format == "JPEG":
            # libjpeg scales by 1/2, 1/4 or 1/8 while decoding, staying >= draft_size on both sides: much cheaper
            # than a full decode followed by a resize, and more than enough for 32x32 perceptual hashes.
            im.draft("L", (draft_size, draft_size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
            if orient != 1:
                im = ImageOps.exif_transpose(im)
    except DecodeFailure:
        raise
    except OSError as exc:
        msg = str(exc)
        status = TRUNCATED if "truncated" in msg or "broken data stream" in msg or "end of file" in msg.lower() else UNDECODABLE
        raise DecodeFailure(status, msg) from exc
    except Exception as exc:
        raise DecodeFailure(UNDECODABLE, f"{type(exc).__name__}: {exc}") from exc
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    """Normalise any mode to 8-bit RGB as a viewer would show it (alpha composited on white, 16-bit scaled)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        # 16-bit and 32-bit integer greys: scale the full range of the type to 0-255 (not a clip at 255).
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return im.convert("RGB")
    return im


def to_gray(im: Image.Image) -> Image.Image:
    """8-bit grey for hashing, using Pillow's own L conversion for ordinary modes (as imagehash does)."""
    if im.mode in ("L", "RGB"):
        return im.convert("L") if im.mode != "L" else im
    return to_rgb(im).convert("L")
