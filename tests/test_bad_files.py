"""Bad files inside real splits: every kind is reported once with the right status, or decoded the way a viewer shows it.

The dataset is real photographs (scikit-learn's china/flower and scikit-image's bundled photos) cut into tiles and
written in the Keras layout ``train/<class>/*.jpg``, ``val/<class>/*``. Each test plants one kind of bad file (some
in train too) and runs the real pipeline: Pillow, faiss, SQLite, the CLI in a subprocess. Nothing is mocked.

Every helper lives in this file on purpose (it does not depend on the shared conftest's helpers).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

import splitaudit
from splitaudit import AuditReport, Finding, Severity

LEAK_CHECKS = ("exact-duplicates", "pixel-duplicates", "near-duplicates")
PILLOW_HARD_LIMIT = 178_956_970  # 2 x Image.MAX_IMAGE_PIXELS: the documented default of audit(max_pixels=...)

# --------------------------------------------------------------------------------------------------------------
# Real photographs and tiles
# --------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """A real photo as a uint8 array (RGB, or 2-D grey for scikit-image's grey photos)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    return getattr(skimage.data, name)()


def tile(name: str, x: int, y: int, w: int = 128, h: int = 96) -> Image.Image:
    """A ``w`` x ``h`` crop of a real photo at (x, y): RGB for colour photos, L for grey ones."""
    a = _photo(name)
    assert y + h <= a.shape[0] and x + w <= a.shape[1], (name, x, y, w, h, a.shape)
    crop = np.ascontiguousarray(a[y : y + h, x : x + w])
    assert crop.std() > 20, f"{name} tile at ({x}, {y}) is too flat to be a useful test image"
    return Image.fromarray(crop)


def jpeg_bytes(im: Image.Image, quality: int = 92, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def png_bytes(im: Image.Image, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


# The clean base: three classes, distinct non-overlapping textured tiles, in both splits.
BASE: dict[str, dict[str, list[tuple[str, int, int]]]] = {
    "train": {
        "city": [("china", 0, 236), ("china", 256, 236), ("china", 512, 236)],
        "flower": [("flower", 0, 140), ("flower", 256, 140), ("flower", 512, 236)],
        "misc": [("astronaut", 192, 64), ("coffee", 200, 150), ("chelsea", 150, 100)],
    },
    "val": {
        "city": [("china", 128, 331), ("china", 384, 331)],
        "flower": [("flower", 128, 236), ("flower", 384, 331)],
        "misc": [("rocket", 256, 250), ("astronaut", 100, 300)],
    },
}


class Data:
    """A dataset under ``root`` (``root/train``, ``root/val``) with the clean base written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for split, classes in BASE.items():
            for cls, tiles in classes.items():
                for i, (name, x, y) in enumerate(tiles):
                    self.write(split, f"{cls}/{cls}_{i}.jpg", jpeg_bytes(tile(name, x, y)))

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def val(self) -> Path:
        return self.root / "val"

    def path(self, split: str, rel: str) -> Path:
        return self.root / split / rel

    def write(self, split: str, rel: str, data: bytes) -> Path:
        p = self.path(split, rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def symlink(self, split: str, rel: str, target: str, *, directory: bool = False) -> Path:
        p = self.path(split, rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p, target_is_directory=directory)
        return p

    def audit(self, cache_dir: Path, **kw: Any) -> AuditReport:
        return splitaudit.audit(str(self.train), str(self.val), cache_dir=str(cache_dir), workers=1, **kw, backbone="none")


@pytest.fixture
def data(tmp_path: Path) -> Data:
    return Data(tmp_path / "data")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


BASE_FILES = {s: sum(len(t) for t in c.values()) for s, c in BASE.items()}

# --------------------------------------------------------------------------------------------------------------
# Reading reports
# --------------------------------------------------------------------------------------------------------------


def bad_files(report: AuditReport) -> dict[tuple[str, str], tuple[str, Severity]]:
    """(split, path) -> (status, severity) of every per-image unreadable-images finding; each image at most once."""
    out: dict[tuple[str, str], tuple[str, Severity]] = {}
    for f in report.by_check("unreadable-images"):
        if not f.images:
            continue
        assert len(f.images) == 1, f.message
        key = (f.images[0].split, f.images[0].path)
        assert key not in out, f"{key} reported twice: {f.message}"
        out[key] = (f.data["status"], f.severity)
    return out


def leak_pairs(report: AuditReport) -> dict[tuple[str, str, str, str], Finding]:
    """(split, path, split, path) -> cross-split copy finding."""
    out = {}
    for f in report.findings:
        if f.check in LEAK_CHECKS:
            a, b = f.images
            out[(a.split, a.path, b.split, b.path)] = f
    return out


def split_summary(report: AuditReport, name: str) -> splitaudit.SplitSummary:
    (s,) = [s for s in report.splits if s.name == name]
    return s


def describe(report: AuditReport) -> str:
    return "\n".join(f"  [{f.severity.label}] {f.check}: {f.message} {dict(f.data)}" for f in report.findings) or "  (none)"


def assert_only(report: AuditReport, *, bad: dict[tuple[str, str], str], leaks: Iterable[tuple[str, str, str, str]] = (),
                warnings: dict[tuple[str, str], str] | None = None, skipped_links: Iterable[str] = ()) -> None:
    """The report's findings are exactly the expected bad files (errors), warnings, leak pairs and scan warnings for
    skipped folder links ("split/relpath"): nothing else."""
    warnings = warnings or {}
    got = bad_files(report)
    expected = {k: (v, Severity.ERROR) for k, v in bad.items()} | {k: (v, Severity.WARNING) for k, v in warnings.items()}
    assert got == expected, describe(report)
    pairs = leak_pairs(report)
    assert set(pairs) == set(leaks), describe(report)
    scan = [f for f in report.by_check("unreadable-images") if not f.images]
    assert all(f.data.get("status") == "scan" and f.severity is Severity.WARNING for f in scan), describe(report)
    assert sorted(f.message.split(":")[0] for f in scan) == sorted(skipped_links), describe(report)
    others = [f for f in report.findings if f.check not in (*LEAK_CHECKS, "unreadable-images")]
    assert others == [], describe(report)


# --------------------------------------------------------------------------------------------------------------
# File builders
# --------------------------------------------------------------------------------------------------------------


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)


def bilevel_png(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A 1-bit grey PNG of ``width`` x ``height``, streamed row by row (never holds the raw image in memory).

    ``rows`` < ``height`` writes only that many rows of pixel data: a tiny file that declares huge dimensions.
    """
    row = bytes(1 + (width + 7) // 8)  # filter byte 0 + packed bits, all black
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height if rows is None else rows)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def truncated_jpeg() -> tuple[bytes, bytes]:
    """A real photo JPEG and its first 60% of bytes."""
    full = jpeg_bytes(tile("coffee", 400, 60, 160, 120))
    return full, full[: int(len(full) * 0.6)]


def cmyk_pair() -> tuple[bytes, bytes]:
    """A real RGB photo tile as a JPEG, and the same tile converted to CMYK and saved as a CMYK JPEG."""
    src = tile("coffee", 330, 250)
    cmyk = src.convert("CMYK")
    assert cmyk.mode == "CMYK"
    data = jpeg_bytes(cmyk, quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    return jpeg_bytes(src, quality=95), data


def gray16_pair() -> tuple[bytes, bytes]:
    """An 8-bit grey PNG of a real grey photo and the same pixels scaled to the full 16-bit range (mode I;16)."""
    g8 = np.asarray(tile("camera", 200, 180))
    assert g8.ndim == 2 and g8.dtype == np.uint8
    g16 = g8.astype(np.uint16) * 257  # 0..255 -> 0..65535, exactly invertible
    im16 = Image.fromarray(g16)
    data16 = png_bytes(im16)
    reopened = Image.open(io.BytesIO(data16))
    assert reopened.mode == "I;16" and np.array_equal(np.asarray(reopened), g16)
    return png_bytes(Image.fromarray(g8, "L")), data16


def palette_pair() -> tuple[bytes, bytes]:
    """A palette PNG of a real tile whose transparent index (black in the palette) covers a block, and its
    flattened RGB twin as a viewer shows it: the block white."""
    q = tile("astronaut", 300, 360).quantize(colors=255)  # indices 0..254; 255 is ours
    idx = np.asarray(q).copy()
    idx[20:70, 30:90] = 255
    palette = (q.getpalette() or [])[: 255 * 3]
    palette += [0, 0, 0] * (256 - len(palette) // 3)  # index 255 (and padding) black
    pim = Image.fromarray(idx, "P")
    pim.putpalette(palette)
    data = png_bytes(pim, transparency=255)
    reopened = Image.open(io.BytesIO(data))
    assert reopened.mode == "P" and "transparency" in reopened.info
    flat = np.asarray(pim.convert("RGB")).copy()
    flat[idx == 255] = 255
    return png_bytes(Image.fromarray(flat, "RGB")), data


def animated_gif() -> bytes:
    frames = [tile("flower", x, 331).convert("P", palette=Image.Palette.ADAPTIVE) for x in (0, 256, 512)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = buf.getvalue()
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    return data


# EXIF orientation -> the transpose that turns an upright picture into the stored pixels (the inverse of what a
# viewer applies: 6 = "rotate 90 degrees clockwise to show", 8 = "rotate 90 degrees counter-clockwise to show").
_STORE_AS = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def exif_rotated_pair(orientation: int) -> tuple[Image.Image, bytes, bytes]:
    """An upright real tile as a JPEG, and a JPEG whose stored pixels are rotated with an EXIF orientation tag
    that makes it display upright again."""
    upright = tile("chelsea", 250, 40, 160, 120)
    stored = upright.transpose(_STORE_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    rotated = jpeg_bytes(stored, quality=92, exif=exif.tobytes())
    shown = Image.open(io.BytesIO(rotated))
    assert shown.getexif().get(0x0112) == orientation and shown.size == (120, 160)
    assert ImageOps.exif_transpose(shown).size == upright.size
    return upright, jpeg_bytes(upright, quality=92), rotated


# --------------------------------------------------------------------------------------------------------------
# The clean base
# --------------------------------------------------------------------------------------------------------------


def test_clean_base_has_no_findings(data: Data, cache: Path) -> None:
    """Precondition of every other test: the real tiles are all distinct and decode, so any finding is planted."""
    report = data.audit(cache)
    assert report.findings == (), describe(report)
    assert not report.failed
    for s in ("train", "val"):
        summary = split_summary(report, s)
        assert (summary.files, summary.images, summary.unreadable, summary.skipped) == (BASE_FILES[s], BASE_FILES[s], 0, 0)


# --------------------------------------------------------------------------------------------------------------
# Files that cannot be images: empty, truncated, text named .jpg; and non-image files beside images
# --------------------------------------------------------------------------------------------------------------


def _plant_empty(d: Data) -> dict[tuple[str, str], str]:
    d.write("val", "city/empty.jpg", b"")
    d.write("train", "flower/empty.jpeg", b"")
    return {("val", "city/empty.jpg"): "empty", ("train", "flower/empty.jpeg"): "empty"}


def _plant_truncated(d: Data) -> dict[tuple[str, str], str]:
    full, cut = truncated_jpeg()
    assert Image.open(io.BytesIO(full)).load() is not None  # the source is a complete, decodable photo
    d.write("val", "misc/truncated.jpg", cut)
    d.write("train", "misc/truncated.jpg", full[: int(len(full) * 0.6)])
    return {("val", "misc/truncated.jpg"): "truncated", ("train", "misc/truncated.jpg"): "truncated"}


def _plant_text_as_jpg(d: Data) -> dict[tuple[str, str], str]:
    d.write("val", "flower/notes.jpg", b"these are my notes, not a photo\n" * 4)
    d.write("train", "city/index.PNG", b"<html><body>not an image</body></html>\n")
    return {("val", "flower/notes.jpg"): "not-image", ("train", "city/index.PNG"): "not-image"}


@pytest.mark.parametrize("plant", [_plant_empty, _plant_truncated, _plant_text_as_jpg], ids=["empty", "truncated", "text-named-jpg"])
def test_broken_file_is_one_error_finding_with_its_status(data: Data, cache: Path, plant: Callable[[Data], dict[tuple[str, str], str]]) -> None:
    expected = plant(data)
    report = data.audit(cache)
    assert_only(report, bad=expected)
    assert report.failed  # unreadable images are errors: the default verdict fails
    for (split, path), status in expected.items():
        (f,) = [f for f in report.by_check("unreadable-images") if f.images and f.images[0].path == path and f.images[0].split == split]
        assert f.severity is Severity.ERROR and f.data["status"] == status
        assert path in f.message and status in f.message
        assert f.images[0].label == path.split("/")[0]
    for split in ("train", "val"):
        n_bad = sum(1 for s, _ in expected if s == split)
        summary = split_summary(report, split)
        assert (summary.files, summary.images, summary.unreadable, summary.skipped) == (BASE_FILES[split] + n_bad, BASE_FILES[split], n_bad, 0)


def test_non_image_files_beside_images_are_skipped_not_reported(data: Data, cache: Path) -> None:
    data.write("val", "labels.csv", b"path,label\ncity/city_0.jpg,city\n")
    data.write("val", "flower/README.txt", b"flowers from sklearn\n")
    data.write("train", "labels.csv", b"path,label\n")
    data.write("val", "city/.DS_Store", b"\x00\x00\x00\x01Bud1")  # hidden: not even a file of the split
    report = data.audit(cache)
    assert report.findings == (), describe(report)
    assert not report.failed
    val, train = split_summary(report, "val"), split_summary(report, "train")
    assert (val.files, val.images, val.unreadable, val.skipped) == (BASE_FILES["val"] + 2, BASE_FILES["val"], 0, 2)
    assert (train.files, train.images, train.unreadable, train.skipped) == (BASE_FILES["train"] + 1, BASE_FILES["train"], 0, 1)


# --------------------------------------------------------------------------------------------------------------
# Unusual but valid encodings: decoded as a viewer shows them (so copies across splits are still found)
# --------------------------------------------------------------------------------------------------------------


def test_cmyk_jpeg_decodes_and_matches_its_rgb_source(data: Data, cache: Path) -> None:
    rgb, cmyk = cmyk_pair()
    data.write("train", "misc/coffee_rgb.jpg", rgb)
    data.write("val", "misc/coffee_cmyk.jpg", cmyk)
    report = data.audit(cache)
    pair = ("train", "misc/coffee_rgb.jpg", "val", "misc/coffee_cmyk.jpg")
    assert_only(report, bad={}, leaks=[pair])
    assert leak_pairs(report)[pair].check in ("near-duplicates", "pixel-duplicates")
    assert split_summary(report, "val").images == BASE_FILES["val"] + 1


def test_cmyk_jpeg_alone_is_a_normal_image(data: Data, cache: Path) -> None:
    _, cmyk = cmyk_pair()
    data.write("val", "misc/coffee_cmyk.jpg", cmyk)
    report = data.audit(cache)
    assert report.findings == (), describe(report)
    assert split_summary(report, "val").images == BASE_FILES["val"] + 1


def test_16bit_png_decodes_and_matches_its_8bit_version(data: Data, cache: Path) -> None:
    g8, g16 = gray16_pair()
    data.write("train", "misc/camera8.png", g8)
    data.write("val", "misc/camera16.png", g16)
    report = data.audit(cache)
    pair = ("train", "misc/camera8.png", "val", "misc/camera16.png")
    assert_only(report, bad={}, leaks=[pair])
    # x * 257 scaled back by 255/65535 is exactly x: the 16-bit file shows the very same pixels.
    assert leak_pairs(report)[pair].check == "pixel-duplicates", describe(report)
    assert split_summary(report, "val").images == BASE_FILES["val"] + 1


def test_palette_png_with_transparency_decodes_composited_on_white(data: Data, cache: Path) -> None:
    flat, palette = palette_pair()
    data.write("val", "misc/astro_palette.png", palette)
    alone = data.audit(cache)
    assert alone.findings == (), describe(alone)
    assert split_summary(alone, "val").images == BASE_FILES["val"] + 1

    # Its flattened twin (transparent block white, as a viewer shows it on a white page) has the same pixels.
    data.write("train", "misc/astro_flat.png", flat)
    report = data.audit(cache)
    pair = ("train", "misc/astro_flat.png", "val", "misc/astro_palette.png")
    assert_only(report, bad={}, leaks=[pair])
    assert leak_pairs(report)[pair].check == "pixel-duplicates", describe(report)


def test_animated_gif_is_a_warning(data: Data, cache: Path) -> None:
    data.write("val", "flower/animated.gif", animated_gif())
    report = data.audit(cache)
    assert_only(report, bad={}, warnings={("val", "flower/animated.gif"): "animated"})
    (f,) = report.by_check("unreadable-images")
    assert f.severity is Severity.WARNING and f.data["frames"] == 3 and "animated" in f.message
    assert not report.failed  # a warning does not fail the default verdict...
    assert data.audit(cache, fail_on="warning").failed
    assert split_summary(report, "val").images == BASE_FILES["val"] + 1  # ...and its first frame is audited


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_matches_its_upright_copy(data: Data, cache: Path, orientation: int) -> None:
    upright, upright_jpeg, rotated = exif_rotated_pair(orientation)
    # Guard on the test itself: ignoring the EXIF tag would NOT match (the stored pixels look different).
    assert imagehash.phash(Image.open(io.BytesIO(rotated)).convert("L")) - imagehash.phash(upright.convert("L")) > 16
    data.write("train", "misc/cat_upright.jpg", upright_jpeg)
    data.write("val", "misc/cat_rotated.jpg", rotated)
    report = data.audit(cache)
    pair = ("train", "misc/cat_upright.jpg", "val", "misc/cat_rotated.jpg")
    assert_only(report, bad={}, leaks=[pair])
    f = leak_pairs(report)[pair]
    assert f.check == "near-duplicates"
    assert not any(e.flipped for e in f.evidence)  # matched upright, not as a mirror image


# --------------------------------------------------------------------------------------------------------------
# Decompression bombs: refused from the header, never decoded
# --------------------------------------------------------------------------------------------------------------


def test_max_pixels_guard_fires_exactly_above_the_limit(data: Data, cache: Path) -> None:
    big = tile("china", 100, 200, 200, 150)  # 30,000 pixels; the base tiles have 12,288
    data.write("val", "city/big.png", png_bytes(big))
    at_limit = data.audit(cache, max_pixels=200 * 150)
    assert at_limit.findings == (), describe(at_limit)
    above = data.audit(cache, max_pixels=200 * 150 - 1)
    assert_only(above, bad={("val", "city/big.png"): "too-large"})
    (f,) = above.by_check("unreadable-images")
    assert "200x150" in f.message


def test_lowered_max_pixels_refuses_a_tiny_file_declaring_huge_dimensions(data: Data, cache: Path) -> None:
    # 12000 x 10000 = 120 M pixels: below Pillow's own hard limit, so only splitaudit's max_pixels can refuse it.
    assert 12_000 * 10_000 < PILLOW_HARD_LIMIT
    bomb = bilevel_png(12_000, 10_000, rows=8)
    assert len(bomb) < 2_000
    data.write("val", "city/declared_huge.png", bomb)
    report = data.audit(cache, max_pixels=100_000_000)
    assert_only(report, bad={("val", "city/declared_huge.png"): "too-large"})


# Runs the audit in a child process under an address-space limit, so that a regression that decodes the bomb fails
# the test (MemoryError, or a high-water mark far above the limit below) instead of exhausting the machine's memory.
_BOMB_CHILD = r"""
import json, resource, sys
limit = int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import splitaudit
report = splitaudit.audit(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3], workers=1, select=["unreadable-images"], backbone="none")
hwm = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"report": report.to_dict(), "hwm": hwm}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to measure the child's peak memory")
def test_png_beyond_pillows_limit_is_refused_without_decoding(data: Data, cache: Path) -> None:
    # A complete, valid 20000 x 20000 PNG (400 M pixels, 2.2x Pillow's hard limit) of a few dozen KB on disk.
    assert 20_000 * 20_000 > PILLOW_HARD_LIMIT
    bomb = bilevel_png(20_000, 20_000)
    assert len(bomb) < 200_000
    data.write("val", "city/bomb.png", bomb)
    data.write("train", "flower/bomb.png", bomb)
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", _BOMB_CHILD, str(data.train), str(data.val), str(cache), str(3 * 2**30)],
                       capture_output=True, text=True, env={**os.environ, **threads}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    statuses = {(i["split"], i["path"]): (f["data"]["status"], f["severity"]) for f in out["report"]["findings"] for i in f["images"]}
    assert statuses == {("val", "city/bomb.png"): ("too-large", "error"), ("train", "flower/bomb.png"): ("too-large", "error")}, out
    # Decoding it would need >= 400 MB for the 1-bit raster alone (Pillow keeps one byte per pixel) and ~4 GB through
    # hashing; refusing it from the header costs nothing beyond the interpreter and its libraries (~100-150 MB).
    assert out["hwm"] < 350 * 2**20, f"peak resident memory {out['hwm'] >> 20} MiB"


# --------------------------------------------------------------------------------------------------------------
# Files the process cannot read; symlinks
# --------------------------------------------------------------------------------------------------------------


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


def _probe(cmd_prefix: list[str], user: dict[str, Any], secret: Path, env: dict[str, str], cwd: Path) -> str | None:
    """None if a process started this way can import splitaudit but NOT read ``secret``; else why not."""
    code = ("import sys, splitaudit\n"
            "try:\n    open(sys.argv[1], 'rb').read(1)\nexcept PermissionError:\n    sys.exit(0)\n"
            "sys.exit(3)\n")
    try:
        r = subprocess.run([*cmd_prefix, sys.executable, "-c", code, str(secret)], capture_output=True, text=True,
                           env=env, cwd=cwd, timeout=600, **user)
    except OSError as exc:
        return f"cannot start: {exc}"
    if r.returncode == 3:
        return "the process can still read a mode-000 file"
    if r.returncode != 0:
        return f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}"
    return None


def _unprivileged(secret: Path, env: dict[str, str], cwd: Path) -> tuple[list[str], dict[str, Any], str]:
    """How to start a process that cannot read ``secret`` although we are root: (command prefix, subprocess
    keyword arguments, description). Skips the test, with every reason, when no way works."""
    reasons = []
    nobody = _nobody()
    if nobody is None:
        reasons.append("no 'nobody' user")
    else:
        user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        why = _probe([], user, secret, env, cwd)
        if why is None:
            return [], user, "as user nobody"
        reasons.append(f"as nobody: {why}")
    # The interpreter may live where nobody cannot reach it (e.g. under /root). Then stay root but drop the two
    # capabilities that let root ignore file modes: the process is denied a mode-000 file like any user.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        reasons.append("no setpriv to drop CAP_DAC_OVERRIDE")
    else:
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]
        why = _probe(prefix, {}, secret, env, cwd)
        if why is None:
            return prefix, {}, "as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH"
        reasons.append(f"setpriv: {why}")
    pytest.skip("running as root and no way to start a process that file permissions apply to: " + "; ".join(reasons))


def test_file_without_read_permission_is_unreadable(tmp_path: Path, cache: Path) -> None:
    if os.geteuid() != 0:
        d = Data(tmp_path / "data")
        secret = d.write("val", "misc/secret.jpg", jpeg_bytes(tile("rocket", 400, 150)))
        secret.chmod(0)
        try:
            assert not os.access(secret, os.R_OK)
            report = d.audit(cache)
        finally:
            secret.chmod(0o644)
        assert_only(report, bad={("val", "misc/secret.jpg"): "unreadable"})
        assert split_summary(report, "val").unreadable == 1
        return

    # Root ignores file modes: run the CLI in a process that does not. pytest's tmp_path is private to root (0700),
    # so the dataset, cache and HOME live in a world-traversable folder of their own.
    base = Path(tempfile.mkdtemp(prefix="splitaudit-perm-"))
    try:
        base.chmod(0o755)
        d = Data(base / "data")
        secret = d.write("val", "misc/secret.jpg", jpeg_bytes(tile("rocket", 400, 150)))
        for p in [base / "cache", base / "home"]:
            p.mkdir()
            p.chmod(0o777)
        for dirpath, dirnames, filenames in os.walk(d.root):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        secret.chmod(0)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base / "home"),
               "SPLITAUDIT_CACHE_DIR": str(base / "cache"), "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        prefix, user, how = _unprivileged(secret, env, base)
        r = subprocess.run([*prefix, sys.executable, "-m", "splitaudit", "check", str(d.train), str(d.val), "--format", "json",
                            "--cache-dir", str(base / "cache"), "--workers", "1"],
                           capture_output=True, text=True, env=env, cwd=base, timeout=600, **user)
        assert r.returncode == 1, f"{how}: exit {r.returncode}\n{r.stderr}"
        doc = json.loads(r.stdout)
        findings = doc["findings"]
        unread = [f for f in findings if f["check"] == "unreadable-images"]
        assert [(f["images"][0]["split"], f["images"][0]["path"], f["data"]["status"], f["severity"]) for f in unread] == [
            ("val", "misc/secret.jpg", "unreadable", "error")], (how, findings)
        assert [f for f in findings if f["check"] != "unreadable-images"] == [], (how, findings)
        val = [s for s in doc["splits"] if s["name"] == "val"][0]
        assert (val["files"], val["images"], val["unreadable"]) == (BASE_FILES["val"] + 1, BASE_FILES["val"], 1), how
        assert stat.S_IMODE(secret.stat().st_mode) == 0  # the audit did not "fix" permissions
    finally:
        for dirpath, _, filenames in os.walk(base):
            for f in filenames:
                p = os.path.join(dirpath, f)
                if not os.path.islink(p):
                    os.chmod(p, 0o644)
        shutil.rmtree(base, ignore_errors=True)


def test_broken_symlink_is_unreadable(data: Data, cache: Path) -> None:
    data.symlink("val", "city/gone.jpg", str(data.root / "nowhere" / "deleted.jpg"))
    data.symlink("train", "misc/dangling.png", "missing.png")
    report = data.audit(cache)
    assert_only(report, bad={("val", "city/gone.jpg"): "unreadable", ("train", "misc/dangling.png"): "unreadable"})
    for split in ("train", "val"):
        assert split_summary(report, split).unreadable == 1


def _audit_with_deadline(d: Data, cache: Path, seconds: float = 60) -> AuditReport:
    """Run the audit in a daemon thread so that a scan stuck in a loop fails the test instead of hanging it."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["report"] = d.audit(cache)
        except BaseException as exc:  # re-raised below, in the test's thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"the audit did not finish within {seconds} s (symlink loop?)"
    if "error" in box:
        raise box["error"]
    return box["report"]


def test_symlink_loop_terminates_without_double_counting(data: Data, cache: Path) -> None:
    loops = {
        ("val", "city/loop"): "..",  # val/city/loop -> val (its parent: the split root)
        ("val", "flower/self"): ".",  # val/flower/self -> val/flower (itself)
        ("train", "misc/deeper/up"): "../..",  # train/misc/deeper/up -> train, two levels up
    }
    for (split, rel), target in loops.items():
        data.symlink(split, rel, target, directory=True)
    assert os.path.samefile(data.path("val", "city/loop"), data.val)
    report = _audit_with_deadline(data, cache)
    for split in ("train", "val"):
        s = split_summary(report, split)
        assert (s.files, s.images, s.unreadable, s.skipped) == (BASE_FILES[split], BASE_FILES[split], 0, 0), describe(report)
    # Each looping link is skipped once, with a warning naming it; no image is reported, none under a looped path.
    scan = [f for f in report.by_check("unreadable-images") if f.data.get("status") == "scan"]
    assert sorted(f.message.split(":")[0] for f in scan) == sorted(f"{s}/{r}" for s, r in loops), describe(report)
    assert all(f.severity is Severity.WARNING and f.images == () for f in scan)
    assert [f for f in report.findings if f not in scan] == [], describe(report)
    assert not report.failed


# --------------------------------------------------------------------------------------------------------------
# Everything at once, through the API and the CLI: each bad file once, and the dataset untouched
# --------------------------------------------------------------------------------------------------------------


def tree_state(root: Path) -> dict[str, tuple[str, Any, int]]:
    """Every entry below ``root`` (symlinks not followed): kind, content hash (or link target) and mtime."""
    out: dict[str, tuple[str, Any, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


def plant_everything(d: Data) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str], set[tuple[str, str, str, str]]]:
    """All kinds in one dataset: (error statuses, warning statuses, expected cross-split pairs)."""
    bad: dict[tuple[str, str], str] = {}
    for plant in (_plant_empty, _plant_truncated, _plant_text_as_jpg):
        bad |= plant(d)
    d.write("val", "labels.csv", b"path,label\n")
    d.write("val", "city/.DS_Store", b"\x00\x00\x00\x01Bud1")
    rgb, cmyk = cmyk_pair()
    d.write("train", "misc/coffee_rgb.jpg", rgb)
    d.write("val", "misc/coffee_cmyk.jpg", cmyk)
    g8, g16 = gray16_pair()
    d.write("train", "misc/camera8.png", g8)
    d.write("val", "misc/camera16.png", g16)
    flat, palette = palette_pair()
    d.write("train", "misc/astro_flat.png", flat)
    d.write("val", "misc/astro_palette.png", palette)
    d.write("val", "flower/animated.gif", animated_gif())
    _, upright_jpeg, rotated = exif_rotated_pair(6)
    d.write("train", "misc/cat_upright.jpg", upright_jpeg)
    d.write("val", "misc/cat_rotated.jpg", rotated)
    # Declares 20000 x 20000 (beyond Pillow's limit) with a few rows of data: refused from its header like the complete
    # bomb of the test above, while a regression here would cost only the raster, not a full decode.
    d.write("val", "city/bomb.png", bilevel_png(20_000, 20_000, rows=8))
    bad[("val", "city/bomb.png")] = "too-large"
    d.symlink("val", "city/gone.jpg", str(d.root / "nowhere.jpg"))
    bad[("val", "city/gone.jpg")] = "unreadable"
    d.symlink("val", "city/loop", "..", directory=True)
    warnings = {("val", "flower/animated.gif"): "animated"}
    pairs = {
        ("train", "misc/coffee_rgb.jpg", "val", "misc/coffee_cmyk.jpg"),
        ("train", "misc/camera8.png", "val", "misc/camera16.png"),
        ("train", "misc/astro_flat.png", "val", "misc/astro_palette.png"),
        ("train", "misc/cat_upright.jpg", "val", "misc/cat_rotated.jpg"),
    }
    return bad, warnings, pairs


def test_all_kinds_at_once_api_and_cli_report_each_once_and_change_nothing(tmp_path: Path, cache: Path) -> None:
    d = Data(tmp_path / "data")
    bad, warnings, pairs = plant_everything(d)
    before = tree_state(d.root)

    report = d.audit(cache)
    assert_only(report, bad=bad, warnings=warnings, leaks=pairs, skipped_links=["val/city/loop"])
    assert report.failed
    n_val_bad = sum(1 for s, _ in bad if s == "val")
    val = split_summary(report, "val")
    assert val.unreadable == n_val_bad and val.skipped == 1
    # val: base + every planted file except the hidden one; the loop is neither a file nor followed twice.
    val_files = {str(p.relative_to(d.val)) for p in d.val.rglob("*") if not p.name.startswith(".") and (p.is_file() or (p.is_symlink() and not p.exists()))}
    assert val.files == len(val_files), sorted(val_files)
    assert val.images == val.files - val.unreadable - val.skipped
    assert tree_state(d.root) == before, "the API run changed the dataset"

    # The CLI, in a fresh process with its own cache folder (so it decodes everything again).
    cli_cache = tmp_path / "cli-cache"
    env = {**os.environ, "SPLITAUDIT_CACHE_DIR": str(cli_cache)}
    env.pop("SPLITAUDIT_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "splitaudit", "check", str(d.train), str(d.val), "--format", "json",
                        "--cache-dir", str(cli_cache), "--workers", "1"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verdict"]["failed"] is True
    listed = Counter((i["split"], i["path"]) for f in doc["findings"] for i in f["images"] if f["check"] == "unreadable-images")
    assert listed == Counter({**{k: 1 for k in bad}, **{k: 1 for k in warnings}}), listed
    statuses = {(f["images"][0]["split"], f["images"][0]["path"]): (f["data"]["status"], f["severity"])
                for f in doc["findings"] if f["check"] == "unreadable-images" and f["images"]}
    assert statuses == {**{k: (v, "error") for k, v in bad.items()}, **{k: (v, "warning") for k, v in warnings.items()}}
    cli_pairs = {(f["images"][0]["split"], f["images"][0]["path"], f["images"][1]["split"], f["images"][1]["path"])
                 for f in doc["findings"] if f["check"] in LEAK_CHECKS}
    assert cli_pairs == pairs
    # Every bad file appears in exactly one finding of the whole report.
    everywhere = Counter((i["split"], i["path"]) for f in doc["findings"] for i in f["images"])
    assert all(everywhere[k] == 1 for k in [*bad, *warnings]), everywhere
    assert {s["name"]: (s["unreadable"], s["skipped"]) for s in doc["splits"]} == {
        s.name: (s.unreadable, s.skipped) for s in report.splits}
    assert tree_state(d.root) == before, "the CLI run changed the dataset"
