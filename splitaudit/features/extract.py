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
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from . import decode
from .hashing import BATCH_MAX_PIXELS, PHASH_INPUT, batch_hash_inputs, hash_all, hash_inputs

#: Pillow's own hard limit (2x MAX_IMAGE_PIXELS): images above it are reported instead of decoded.
DEFAULT_MAX_PIXELS = 178_956_970
HASH_COLUMNS = ("phash", "dhash", "phash_flip", "dhash_flip")
#: pHash/dHash of a tagged image's pixels as stored (before the EXIF orientation; equal to phash/dhash otherwise).
STORED_HASH_COLUMNS = ("stored_phash", "stored_dhash")
#: Numeric output columns and their dtypes (the rest are objects: bytes and strings).
NUMBER_COLUMNS = {"width": np.int64, "height": np.int64, "frames": np.int64, "orientation": np.int64,
                  "spread": np.float64, **{c: np.uint64 for c in (*HASH_COLUMNS, *STORED_HASH_COLUMNS)}}
FEATURE_VERSION = 2  # bump when any output column's meaning changes: it is part of the cache key


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


def pixel_digest(rgb: Image.Image, pixels: bytes | None = None) -> bytes:
    """Digest of what a viewer sees: size plus normalised 8-bit RGB pixels, whatever the encoding (``pixels``:
    ``rgb.tobytes()`` when the caller has it)."""
    h = hashlib.sha256(b"rgb:%dx%d:" % rgb.size)
    h.update(rgb.tobytes() if pixels is None else pixels)
    return h.digest()


def _array_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")


#: Largest file :func:`_read` returns whole (the embedding and property stages, which only see decoded images).
MAX_READ_BYTES = 1 << 30


def _read(path: str) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_READ_BYTES` (``OSError`` otherwise: never a FIFO or a
    device, which would block or never end)."""
    try:
        fd, size = decode.open_regular_fd(path)
    except decode.DecodeFailure as failure:
        raise OSError(failure.reason) from failure
    try:
        if size > MAX_READ_BYTES:
            raise OSError(f"file of {size:,} bytes is above the limit of {MAX_READ_BYTES:,}")
        return _read_fd(fd, size)
    finally:
        os.close(fd)


def _read_fd(fd: int, size: int) -> bytes:
    """At most ``size`` bytes of an open file (fewer if it ends early), with bare system calls: a buffered file
    object costs more than reading a 1-kB image."""
    chunks: list[bytes] = []
    while size > 0 and (chunk := os.read(fd, size)):
        chunks.append(chunk)
        size -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_file(path: str, *, mode: str | None, draft_size: int | None, max_pixels: int) -> tuple[Image.Image, int]:
    """A file's pixels as a viewer sees them (turned as ``ImageOps.exif_transpose`` turns them) and its size in
    bytes; a JPEG is decoded in ``mode`` and at the smallest DCT scale keeping both sides >= ``draft_size`` when
    given (its ``draft``). Raises :class:`decode.DecodeFailure` or ``OSError`` when unreadable."""
    try:
        data = _read(path)
    except OSError as exc:
        raise decode.DecodeFailure(decode.UNREADABLE, str(exc)) from exc
    fmt = decode.sniff(data[:16])
    if fmt is None:
        raise decode.DecodeFailure(decode.NOT_IMAGE, "not an image")
    if fmt == "JPEG":
        quick = decode.quick_jpeg(data, mode, draft_size, max_pixels)
        if quick is not None:  # a plain small JPEG: upright, decoded without Pillow's header parser
            return quick, len(data)
    im = decode.open_image(data, fmt, max_pixels=max_pixels)
    if fmt == "JPEG" and (mode or draft_size):
        im.draft(mode, (draft_size, draft_size) if draft_size else None)  # type: ignore[arg-type]  # DCT scaling
    return decode.load(im, draft_size=None), len(data)


def file_digest(path: str) -> bytes | None:
    """SHA-256 of a regular file's content, read as a stream; ``None`` when it is not a readable regular file."""
    try:
        fh, size = decode.open_regular(path)
    except decode.DecodeFailure:
        return None
    h = hashlib.sha256()
    try:
        with fh:
            decode.read_head_and_digest(fh, size, h)
    except OSError:
        return None
    return h.digest()


Grays = tuple[dict[str, Any], Image.Image | None, Image.Image | None]


def extract_one(path: str | None, pixels: np.ndarray | None, digest: bytes | None, options: HashOptions) -> Grays:
    """Features of one image, the grey image its hashes come from (``None`` when it could not be decoded) and, for
    an image with an EXIF orientation tag, the grey image as stored (before the tag is applied; else ``None``)."""
    row: dict[str, Any] = {"digest": digest or b"", "status": decode.OK, "detail": "", "format": "", "mode": "",
                           "width": 0, "height": 0, "frames": 0, "pixel_digest": b"", "orientation": 1}
    try:
        if pixels is not None:
            row.update(digest=digest or array_digest(pixels), format="array", frames=1)
            im = _array_image(pixels)
            row.update(mode=im.mode, width=im.width, height=im.height)
            rgb = decode.to_rgb(im)
            row["pixel_digest"] = pixel_digest(rgb)
            return row, decode.to_gray(im), None
        assert path is not None
        fd, size = decode.open_regular_fd(path)
        if size > decode.IN_MEMORY_BYTES:  # digested as a stream, decoded from disk
            with os.fdopen(fd, "rb") as fh:
                return _extract_file(fh, size, row, options, path)
        try:
            data = _read_fd(fd, size)
        except OSError as exc:
            raise decode.DecodeFailure(decode.UNREADABLE, exc.strerror or str(exc)) from exc
        finally:
            os.close(fd)
        return _extract_file(None, size, row, options, path, data)
    except decode.DecodeFailure as failure:
        row.update(status=failure.status, detail=failure.reason)
        return row, None, None


def _extract_file(fh: BinaryIO | None, size: int, row: dict[str, Any], options: HashOptions, path: str,
                  data: bytes | None = None) -> Grays:
    """:func:`extract_one` for a regular file, given as its ``data`` when small (read once into memory) or open as
    ``fh`` when large (digested as a stream and decoded from disk: memory does not grow with the file's size)."""
    try:
        hasher = hashlib.sha256()
        try:
            if data is None:
                data = decode.read_head_and_digest(fh, size, hasher)  # type: ignore[arg-type]
            else:
                hasher.update(data)
            head = data[:16] if data is not None else (fh.seek(0), fh.read(16))[1]  # type: ignore[union-attr]
        except OSError as exc:
            raise decode.DecodeFailure(decode.UNREADABLE, exc.strerror or str(exc)) from exc
        row["digest"] = hasher.digest()
        if size == 0:
            raise decode.DecodeFailure(decode.EMPTY, "file is empty (0 bytes)")
        fmt = decode.sniff(head)
        if fmt is None:
            raise decode.not_read(head, path)
        row["format"] = fmt
        drafted = options.draft and fmt == "JPEG"
        header = decode.plain_jpeg(data) if fmt == "JPEG" and data is not None else None
        quick = header and decode.quick_jpeg(data, "L" if drafted else None, PHASH_INPUT if drafted else None,  # type: ignore[arg-type]
                                             options.max_pixels, header)
        if quick is not None:  # a plain small JPEG: upright, one frame, decoded without Pillow's header parser
            row.update(mode=header[0], width=header[1], height=header[2], frames=1)  # type: ignore[index]
            return _finish(row, quick, quick, drafted)
        if data is None:
            fh.seek(0)  # type: ignore[union-attr]
        im = decode.open_image(data if data is not None else fh, fmt, max_pixels=options.max_pixels)
        w, h = im.size
        orient = decode.orientation(im)
        if orient in (5, 6, 7, 8):
            w, h = h, w  # EXIF says the picture is shown rotated by 90 degrees: report what a viewer sees
        row.update(mode=im.mode, width=w, height=h, frames=int(getattr(im, "n_frames", 1) or 1))
        # Decode the stored pixels (what Keras' loaders see: they ignore the tag), then orient them as a viewer does.
        stored = decode.load(im, draft_size=PHASH_INPUT if drafted else None, orient=1)
        row["orientation"] = orient
        return _finish(row, decode.orient(stored, orient), stored, drafted)
    except decode.DecodeFailure as failure:
        row.update(status=failure.status, detail=failure.reason)
        return row, None, None


def _finish(row: dict[str, Any], im: Image.Image, stored: Image.Image, drafted: bool) -> Grays:
    """The grey images of a decoded file (``im`` as a viewer sees it, ``stored`` before its EXIF orientation) and
    its pixel digest unless it was decoded in draft mode."""
    if drafted:
        gray = decode.to_gray(im)
    else:
        rgb = decode.to_rgb(im)
        row["pixel_digest"] = pixel_digest(rgb)
        gray = decode.to_gray(im) if im.mode in ("L", "RGB") else rgb.convert("L")
    # A tagged image is also hashed as stored: a copy differing only by its orientation tag shows the model the
    # same pixels (see ``stored_phash``); upright images have one set of hashes.
    return row, gray, (None if im is stored else decode.to_gray(stored))


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
    grays: list[Image.Image] = []
    decoded: list[int] = []
    stored_at: dict[int, int] = {}  # row -> position in ``grays`` of its stored (untagged) grey image
    for i in range(n):
        row, gray, stored = extract_one(paths[i], pixels[i], digests[i], options)
        rows.append(row)
        if gray is None:
            continue
        decoded.append(i)
        grays.append(gray)
        if stored is not None:
            stored_at[i] = len(grays)
            grays.append(stored)
    p_all, d_all = _hash_inputs_of(grays)
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
        "orientation": np.array([r["orientation"] for r in rows], dtype=np.int64),
        "spread": np.zeros(n, dtype=np.float64),
    }
    if grays:
        hashed = hash_all(p_all, d_all)
    else:
        hashed = {c: np.zeros(0, np.uint64) for c in HASH_COLUMNS}
    # Position in ``grays`` of each decoded row's viewer-oriented image, and of the image as stored.
    viewer = np.array([k for k in range(len(grays)) if k not in set(stored_at.values())], dtype=np.int64)
    as_stored = viewer.copy()
    for j, i in enumerate(decoded):
        if i in stored_at:
            as_stored[j] = stored_at[i]
    for column in HASH_COLUMNS:
        full = np.zeros(n, dtype=np.uint64)
        full[decoded] = hashed[column][viewer]
        out[column] = full
    for column, source in (("stored_phash", "phash"), ("stored_dhash", "dhash")):
        full = np.zeros(n, dtype=np.uint64)
        full[decoded] = hashed[source][as_stored]
        out[column] = full
    if grays:
        # Tonal spread of the 32x32 hash input: near-blank images (spread ~0) hash alike whatever their colour.
        out["spread"][decoded] = p_all[viewer].reshape(len(viewer), -1).std(axis=1)
    return out


def _hash_inputs_of(grays: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32) and (N, 8, 9) hash inputs: small greys (draft-decoded JPEGs, thumbnails) resized together, far
    cheaper per image; large ones one by one."""
    p_in: list[np.ndarray | None] = [None] * len(grays)
    d_in: list[np.ndarray | None] = [None] * len(grays)
    small = [k for k, g in enumerate(grays) if g.width * g.height <= BATCH_MAX_PIXELS]
    for k, g in enumerate(grays):
        if g.width * g.height > BATCH_MAX_PIXELS:
            p_in[k], d_in[k] = hash_inputs(g)
    if small:
        p_small, d_small = batch_hash_inputs([grays[k] for k in small])
        for j, k in enumerate(small):
            p_in[k], d_in[k] = p_small[j], d_small[j]
    if not grays:
        return np.zeros((0, PHASH_INPUT, PHASH_INPUT), np.uint8), np.zeros((0, 8, 9), np.uint8)
    return np.stack(p_in), np.stack(d_in)  # type: ignore[arg-type]


def pixel_digest_batch(batch: dict[str, np.ndarray], options: HashOptions = HashOptions()) -> dict[str, np.ndarray]:
    """Full-resolution pixel digests (the confirmation stage for JPEGs hashed in draft mode): the ``pixel_digest``
    column of :func:`extract_batch` without drafting, without taking the hashes nobody reads here."""
    full = HashOptions(draft=False, max_pixels=options.max_pixels)
    paths = batch["path"]
    n = len(paths)
    pixels = batch.get("pixels", np.full(n, None, dtype=object))
    digests = batch.get("digest", np.full(n, None, dtype=object))
    return {"pixel_digest": np.array([extract_one(paths[i], pixels[i], digests[i], full)[0]["pixel_digest"]
                                      for i in range(n)], dtype=object)}
