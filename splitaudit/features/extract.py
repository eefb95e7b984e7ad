"""Per-image features as a pure function over a batch of records.

``extract_batch`` takes and returns a dict of equal-length NumPy columns, the batch format of Ray Data's
``map_batches``; today :mod:`splitaudit.features.runner` maps it over a local process pool. It reads each file
once, keeps at most small grey images (at most 128x128, e.g. draft-decoded JPEGs) until the batch's hashes are
taken together, so memory stays bounded by the batch, and never raises for bad data: every row gets a status.

Output columns: ``digest`` (SHA-256 of the bytes), ``status``/``detail``, ``format``, ``mode``, ``width``,
``height``, ``frames``, ``phash``/``dhash`` and their mirrored twins ``phash_flip``/``dhash_flip`` (uint64), and
``pixel_digest`` (SHA-256 of the decoded RGB pixels; empty for JPEGs decoded in draft mode, where it is computed
later, only for the few candidate pairs that need it, by :func:`pixel_digest_batch`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from . import decode
from .hashing import BATCH_MAX_PIXELS, PHASH_INPUT, batch_hash_inputs, hash_all, hash_inputs

#: Pillow's own hard limit (2x MAX_IMAGE_PIXELS): images above it are reported instead of decoded.
DEFAULT_MAX_PIXELS = 178_956_970
HASH_COLUMNS = ("phash", "dhash", "phash_flip", "dhash_flip")
FEATURE_VERSION = 1  # bump when any output column's meaning changes: it is part of the cache key


@dataclass(frozen=True)
class HashOptions:
    """Settings that change the features; they form the cache key's ``variant``."""

    draft: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def variant(self) -> str:
        return f"v{FEATURE_VERSION}-draft{int(self.draft)}-max{self.max_pixels}"


def content_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def array_digest(pixels: np.ndarray) -> bytes:
    """Digest of an in-memory image: its shape and bytes (the 'file content' of an array row)."""
    h = hashlib.sha256(b"array:%dx%dx%d:" % pixels.shape)
    h.update(np.ascontiguousarray(pixels).data)
    return h.digest()


def pixel_digest(rgb: Image.Image) -> bytes:
    """Digest of what a viewer sees: size plus normalised 8-bit RGB pixels, whatever the encoding."""
    h = hashlib.sha256(b"rgb:%dx%d:" % rgb.size)
    h.update(rgb.tobytes())
    return h.digest()


def _array_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def extract_one(path: str | None, pixels: np.ndarray | None, digest: bytes | None, options: HashOptions) -> tuple[dict[str, Any], Image.Image | None]:
    """Features of one image and the grey image its hashes come from (``None`` when it could not be decoded)."""
    row: dict[str, Any] = {"digest": digest or b"", "status": decode.OK, "detail": "", "format": "", "mode": "",
                           "width": 0, "height": 0, "frames": 0, "pixel_digest": b""}
    try:
        if pixels is not None:
            row.update(digest=digest or array_digest(pixels), format="array", frames=1)
            im = _array_image(pixels)
            row.update(mode=im.mode, width=im.width, height=im.height)
            rgb = decode.to_rgb(im)
            row["pixel_digest"] = pixel_digest(rgb)
            return row, decode.to_gray(im)
        assert path is not None
        try:
            data = _read(path)
        except OSError as exc:
            raise decode.DecodeFailure(decode.UNREADABLE, exc.strerror or str(exc)) from exc
        row["digest"] = content_digest(data)
        if not data:
            raise decode.DecodeFailure(decode.EMPTY, "file is empty (0 bytes)")
        fmt = decode.sniff(data[:16])
        if fmt is None:
            raise decode.DecodeFailure(decode.NOT_IMAGE, "content is not a JPEG, PNG, GIF, WebP, BMP or TIFF image")
        row["format"] = fmt
        im = decode.open_image(data, fmt, max_pixels=options.max_pixels)
        w, h = im.size
        orient = decode.orientation(im)
        if orient in (5, 6, 7, 8):
            w, h = h, w  # EXIF says the picture is shown rotated by 90 degrees: report what a viewer sees
        row.update(mode=im.mode, width=w, height=h, frames=int(getattr(im, "n_frames", 1) or 1))
        drafted = options.draft and fmt == "JPEG"
        im = decode.load(im, draft_size=PHASH_INPUT if drafted else None, orient=orient)
        if drafted:
            gray = decode.to_gray(im)
        else:
            rgb = decode.to_rgb(im)
            row["pixel_digest"] = pixel_digest(rgb)
            gray = decode.to_gray(im) if im.mode in ("L", "RGB") else rgb.convert("L")
        return row, gray
    except decode.DecodeFailure as failure:
        row.update(status=failure.status, detail=failure.reason)
        return row, None


def warm_up() -> None:
    """Do once, in the parent, the set-up every worker would otherwise repeat: Pillow's format plugins, the DCT's
    plans and the resize pass order for the most common draft size. Forked workers inherit it (~10 ms each)."""
    Image.init()
    grey = Image.new("L", (PHASH_INPUT, PHASH_INPUT))
    p, d = batch_hash_inputs([grey, grey])
    hash_all(p, d)


def extract_batch(batch: dict[str, np.ndarray], options: HashOptions = HashOptions()) -> dict[str, np.ndarray]:
    """Features for a batch. Input columns: ``path`` and optionally ``pixels`` and ``digest`` (object arrays)."""
    paths = batch["path"]
    n = len(paths)
    pixels = batch.get("pixels", np.full(n, None, dtype=object))
    digests = batch.get("digest", np.full(n, None, dtype=object))
    rows: list[dict[str, Any]] = []
    decoded: list[int] = []
    p_in: list[np.ndarray | None] = []
    d_in: list[np.ndarray | None] = []
    small: list[tuple[int, Image.Image]] = []
    for i in range(n):
        row, gray = extract_one(paths[i], pixels[i], digests[i], options)
        rows.append(row)
        if gray is None:
            continue
        decoded.append(i)
        if gray.width * gray.height <= BATCH_MAX_PIXELS:
            # Small greys (draft-decoded JPEGs, thumbnails) are resized together below: far cheaper per image.
            small.append((len(p_in), gray))
            p_in.append(None)
            d_in.append(None)
        else:
            # Large ones are reduced to their hash inputs now, so a batch never holds many full-size images.
            p, d = hash_inputs(gray)
            p_in.append(p)
            d_in.append(d)
    if small:
        p_small, d_small = batch_hash_inputs([g for _, g in small])
        for j, (k, _) in enumerate(small):
            p_in[k], d_in[k] = p_small[j], d_small[j]
    out: dict[str, np.ndarray] = {
        "digest": np.array([r["digest"] for r in rows], dtype=object),
        "pixel_digest": np.array([r["pixel_digest"] for r in rows], dtype=object),
        "status": np.array([r["status"] for r in rows], dtype=object),
        "detail": np.array([r["detail"] for r in rows], dtype=object),
        "format": np.array([r["format"] for r in rows], dtype=object),
        "mode": np.array([r["mode"] for r in rows], dtype=object),
        "width": np.array([r["width"] for r in rows], dtype=np.int64),
        "height": np.array([r["height"] for r in rows], dtype=np.int64),
        "frames": np.array([r["frames"] for r in rows], dtype=np.int64),
    }
    if decoded:
        hashed = hash_all(np.stack(p_in), np.stack(d_in))
    else:
        hashed = {c: np.zeros(0, np.uint64) for c in HASH_COLUMNS}
    for column in HASH_COLUMNS:
        full = np.zeros(n, dtype=np.uint64)
        full[decoded] = hashed[column]
        out[column] = full
    return out


def pixel_digest_batch(batch: dict[str, np.ndarray], options: HashOptions = HashOptions()) -> dict[str, np.ndarray]:
    """Full-resolution pixel digests (the confirmation stage for JPEGs hashed in draft mode)."""
    full = HashOptions(draft=False, max_pixels=options.max_pixels)
    out = extract_batch(batch, full)
    return {"pixel_digest": out["pixel_digest"]}
