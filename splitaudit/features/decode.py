"""Recognise and decode one image safely.

Images are recognised from their magic bytes, never their extension, and decoded with Pillow restricted to the
sniffed format so a mislabelled file cannot be parsed as something else. Decoding never raises for bad data: the
caller gets a status and a one-line reason, which the ``unreadable-images`` check turns into a finding.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from typing import BinaryIO

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

#: ISO-BMFF brands (``ftyp`` box at offset 4) of the AVIF and HEIF families, read when Pillow has the plugin.
_AVIF_BRANDS = (b"avif", b"avis")
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")

#: File name endings that promise an image: a non-image with one of these is reported, others are skipped.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})

#: Images above this many pixels are never decoded at full size, so one image cannot cost gigabytes of memory in
#: a worker (a 12000x12000 PNG of 164 KB decodes to 1.6 GB): JPEGs are decoded at the largest DCT scale (1/2,
#: 1/4, 1/8) within the limit, other formats are reported as ``oversized`` (a warning) and not audited.
LARGE_PIXELS = 40_000_000
#: Files up to this size are read into memory in one call; larger ones are digested as a stream and decoded from
#: disk, so a 200 MB non-image costs no more memory than a small one.
IN_MEMORY_BYTES = 16 << 20
_CHUNK = 1 << 20

# Statuses (stable strings: they appear in JSON output and the cache).
OK = "ok"
EMPTY = "empty"
NOT_IMAGE = "not-image"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
UNDECODABLE = "undecodable"
TOO_LARGE = "too-large"
UNSUPPORTED = "unsupported"  # an image format we do not read here (e.g. HEIF without pillow-heif): skipped, warned
OVERSIZED = "oversized"  # within the bomb guard but above LARGE_PIXELS in a format that cannot decode reduced


def sniff(head: bytes) -> str | None:
    """The Pillow format name for these leading bytes, or ``None`` if they are not an image we read."""
    for magic, offset, fmt in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if fmt == "WEBP" and head[:4] != b"RIFF":
                continue
            return fmt
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS and _has_plugin("AVIF"):
            return "AVIF"
        if brand in _HEIF_BRANDS and _has_plugin("HEIF"):
            return "HEIF"
    return None


#: Image formats we do not read: files of these kinds are skipped with a warning, never silently.
UNSUPPORTED_SUFFIXES = frozenset({".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".psd", ".ico", ".svg", ".dng",
                                  ".cr2", ".nef", ".arw", ".raw", ".exr", ".hdr", ".tga", ".pcx", ".ppm", ".pgm", ".pbm"})


def not_read(head: bytes, name: str) -> DecodeFailure:
    """The failure for content we do not decode: ``unsupported`` for an image format without a reader here (by its
    ISO-BMFF brand or its file name ending), ``not-image`` otherwise."""
    if head[4:8] == b"ftyp" and head[8:12] in _AVIF_BRANDS + _HEIF_BRANDS:
        kind = "AVIF" if head[8:12] in _AVIF_BRANDS else "HEIF"
        return DecodeFailure(UNSUPPORTED, f"{kind} image, but this Pillow has no {kind} reader (for HEIF: pip install pillow-heif); skipped")
    suffix = os.path.splitext(name)[1].lower()
    if suffix in UNSUPPORTED_SUFFIXES:
        return DecodeFailure(UNSUPPORTED, f"{suffix} images are not read (JPEG, PNG, GIF, WebP, BMP, TIFF, AVIF are); skipped")
    return DecodeFailure(NOT_IMAGE, "content is not a JPEG, PNG, GIF, WebP, BMP, TIFF or AVIF image")


_PLUGINS: dict[str, bool] = {}


def _has_plugin(fmt: str) -> bool:
    """Is Pillow able to open ``fmt`` here (AVIF is built into recent Pillow; HEIF comes with pillow-heif)?"""
    if fmt not in _PLUGINS:
        if fmt == "HEIF":
            try:
                import pillow_heif  # type: ignore[import-not-found]

                pillow_heif.register_heif_opener()
            except Exception:  # not installed, or a broken install: HEIF files are then reported as unsupported
                pass
        Image.init()
        _PLUGINS[fmt] = fmt in Image.OPEN
    return _PLUGINS[fmt]


def open_regular(path: str) -> tuple[BinaryIO, int]:
    """Open a regular file (after following links) for reading, and its size.

    FIFOs, devices and sockets are refused without blocking (``O_NONBLOCK``: opening a FIFO would otherwise wait
    for a writer forever, and ``/dev/zero`` never ends), and the check is made on the opened descriptor, so a file
    swapped for a FIFO after the scan is refused too.
    """
    fd, size = open_regular_fd(path)
    try:
        return os.fdopen(fd, "rb"), size
    except BaseException:
        os.close(fd)
        raise


def open_regular_fd(path: str) -> tuple[int, int]:
    """:func:`open_regular` as a bare descriptor (the caller closes it), for callers that read a small file whole:
    a buffered file object costs more than reading a 1-kB image."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DecodeFailure(UNREADABLE, exc.strerror or str(exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DecodeFailure(UNREADABLE, f"not a regular file ({_kind(st.st_mode)}); only regular files are read")
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a plain file"


def read_head_and_digest(fh: BinaryIO, size: int, hasher) -> bytes | None:  # type: ignore[no-untyped-def]
    """Feed at most ``size`` bytes of ``fh`` to ``hasher``; return the whole content when it is small enough to keep
    (at most :data:`IN_MEMORY_BYTES`), else ``None`` (the caller decodes from the file)."""
    if size <= IN_MEMORY_BYTES:
        data = fh.read(size + 1)[:size] if size else fh.read(1)[:0]
        hasher.update(data)
        return data
    left = size
    while left > 0:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            break
        hasher.update(chunk)
        left -= len(chunk)
    return None


class DecodeFailure(Exception):
    """Carries a status and a one-line reason; never escapes the features stage."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def open_image(data: bytes | BinaryIO, fmt: str, *, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse decompression bombs before any pixel is decoded. ``data`` is the file's bytes
    or an open binary file (kept open by the caller until the pixels are loaded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warning: we apply our own limit below.
            im = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data, formats=[fmt])
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
        bound_pixels(im)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
            if orient != 1 and (orient is not None or may_be_oriented(im)):
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


#: ``info`` keys from which Pillow's ``getexif`` reads an orientation (besides a TIFF's own tags).
_ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def may_be_oriented(im: Image.Image) -> bool:
    """Could ``ImageOps.exif_transpose`` turn this loaded image? Without any source of an orientation it returns an
    unturned copy: skipping it gives the same pixels without parsing EXIF or copying them."""
    return hasattr(im, "tag_v2") or any(k in im.info for k in _ORIENTATION_SOURCES)


#: Images up to this many pixels may be decoded by :func:`quick_jpeg`.
QUICK_MAX_PIXELS = 512 * 512
# Markers of the frame types quick_jpeg decodes: baseline, extended sequential, progressive (Huffman coding).
_QUICK_SOF = (0xC0, 0xC1, 0xC2)
# Markers that never carry a segment length.
_BARE_MARKERS = frozenset((0x01, *range(0xD0, 0xDA)))


def plain_jpeg(data: bytes) -> tuple[str, int, int] | None:
    """(mode, width, height) of a plain small JPEG that :func:`quick_jpeg` may decode, else ``None``.

    Plain means 8-bit, 1 or 3 components, Huffman-coded, 1 to :data:`QUICK_MAX_PIXELS` pixels, with no APP1
    (EXIF/XMP: an orientation), APP14 (Adobe colour transform) or MPF (multi-picture) segment: the image Pillow's
    header parser would describe as ``L``/``RGB``, upright, one frame."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, end, frame = 2, len(data), None
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in _BARE_MARKERS or marker == 0xFF:
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2 or pos + 2 + length > end:
            return None  # a segment cut short (a truncated file): the usual path reports it
        if marker == 0xDA:  # start of scan: the header is complete
            break
        if marker in _QUICK_SOF:
            if frame is not None or length < 8:
                return None
            frame = (data[pos + 4], (data[pos + 5] << 8) | data[pos + 6], (data[pos + 7] << 8) | data[pos + 8],
                     data[pos + 9])
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) or marker in (0xE1, 0xEE):
            return None  # other frame types; EXIF/XMP; Adobe
        elif marker == 0xE2 and data[pos + 4 : pos + 8] == b"MPF\x00":
            return None  # a multi-picture file (Pillow's MPO reader)
        pos += 2 + length
    else:
        return None
    if frame is None:
        return None
    bits, h, w, layers = frame
    if bits != 8 or layers not in (1, 3) or not 0 < w * h <= QUICK_MAX_PIXELS:
        return None
    return ("L" if layers == 1 else "RGB"), w, h


def quick_jpeg(data: bytes, mode: str | None, draft_size: int | None, max_pixels: int,
               header: tuple[str, int, int] | None = None) -> Image.Image | None:
    """A :func:`plain_jpeg` (``header``, when the caller has it) decoded straight by Pillow's libjpeg decoder,
    skipping Pillow's Python header parser (more than half of the cost of a 32-px image): the pixels of
    ``open_image`` + ``draft(mode, (d, d))`` + ``load``, bit for bit (tested). ``None`` for any other file or any
    decoder error: the caller takes the usual path, which reports the problem as before."""
    header = header or plain_jpeg(data)
    if header is None or header[1] * header[2] > max_pixels:
        return None
    own, w, h = header
    out = mode if own == "RGB" and mode in ("L", "YCbCr") else own
    scale = 1
    if draft_size:  # JpegImageFile.draft's choice of DCT scale
        fit = min(w // draft_size, h // draft_size)
        scale = next((s for s in (8, 4, 2, 1) if fit >= s), 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.frombytes(out, (-(-w // scale), -(-h // scale)), data, "jpeg", (out, "", scale, 0))
    except (ValueError, OSError, MemoryError):
        return None


def bound_pixels(im: Image.Image) -> None:
    """Keep a decode within :data:`LARGE_PIXELS`: a JPEG is switched to a reduced DCT scale (if not already
    drafted smaller), any other format above the limit raises ``oversized`` before its pixels are decoded."""
    w, h = im.size
    if w * h <= LARGE_PIXELS:
        return
    if im.format == "JPEG":
        for scale in (2, 4, 8):
            if (w // scale) * (h // scale) <= LARGE_PIXELS or scale == 8:
                im.draft(None, (-(-w // scale), -(-h // scale)))  # type: ignore[arg-type]
                return
    raise DecodeFailure(OVERSIZED, f"{w}x{h} pixels is above the decode limit of {LARGE_PIXELS:,} pixels; not audited "
                                   "(resize it, or audit it separately)")


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def orient(im: Image.Image, orientation: int) -> Image.Image:
    """The loaded image as a viewer shows it under EXIF ``orientation`` (the same image object when upright)."""
    method = _TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


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
