"""Shared test data: real photographs (scikit-learn and scikit-image bundles) cut into tiles and planted leaks.

Nothing here is mocked: tests write real image files, run the real pipeline (Pillow, faiss, SQLite) and read the
real outputs.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PHOTO_NAMES = ("china", "flower", "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


@pytest.fixture(scope="session")
def _model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted (LiteRT) networks, shared by the session's tests: a conversion takes 15-40 s and depends only on
    the weights, the converter and the input side, never on a test's data."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, _model_dir: Path) -> Path:
    """Every test gets its own cache folder: no test reads the user's cache or another test's."""
    d = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SPLITAUDIT_CACHE_DIR", str(d))
    monkeypatch.setenv("SPLITAUDIT_MODEL_DIR", str(_model_dir))
    return d


def _load_photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    return getattr(skimage.data, name)()


def levels_edit(img: np.ndarray, kind: str) -> np.ndarray:
    """``img`` with its grey levels edited by more than a gain and offset: an exposure raised until highlights clip
    ("bright"), a strong S-curve ("contrast") or sepia toning, as photo filters and re-scans edit them."""
    x = img.astype(np.float32) / 255
    if kind == "bright":
        x = x * 1.5 + 0.05
    elif kind == "contrast":
        x = 1 / (1 + np.exp(-8 * (x - x.mean())))
    else:
        x = x @ np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32).T
    return np.clip(np.round(255 * x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real colour photographs as uint8 RGB arrays, by name."""
    return {n: _load_photo(n) for n in PHOTO_NAMES}


def tiles_of(photo: np.ndarray, size: int, count: int, *, step: int | None = None) -> list[Image.Image]:
    """Non-overlapping ``size``-pixel tiles (row-major), skipping near-uniform ones (sky, background)."""
    step = step or size
    out: list[Image.Image] = []
    h, w = photo.shape[:2]
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            t = photo[y : y + size, x : x + size]
            if t.std() < 20:
                continue
            out.append(Image.fromarray(t))
            if len(out) == count:
                return out
    return out


def tile_splits(root: Path, per_photo: int, step: int, side: int = 64) -> tuple[Path, Path]:
    """``train/<photo>/NNN.jpg`` and ``val/...`` (every fifth tile) of ``side``-px tiles of every bundled photo."""
    n = 0
    for name in PHOTO_NAMES:
        photo = _load_photo(name)
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        for i, t in enumerate(tiles_of(photo[..., :3], side, per_photo, step=step)):
            save(root / ("train" if n % 5 else "val") / name / f"{i:03d}.jpg", t)
            n += 1
    return root / "train", root / "val"


def jpeg_bytes(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def save(path: Path, im: Image.Image | bytes, fmt: str = "JPEG", **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(im, bytes):
        path.write_bytes(im)
    elif fmt == "JPEG":
        path.write_bytes(jpeg_bytes(im, int(kw.get("quality", 90))))  # type: ignore[arg-type]
    else:
        im.save(path, fmt, **kw)
    return path


def with_comment(jpeg: bytes, text: bytes) -> bytes:
    """The same JPEG with a COM segment inserted after SOI: new bytes, identical decoded pixels."""
    seg = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    return jpeg[:2] + seg + jpeg[2:]


@dataclass
class Planted:
    """A dataset on disk and the pairs planted in it: (train relpath, eval split, eval relpath, expected check)."""

    root: Path
    splits: list[Path]
    leaks: list[tuple[str, str, str, str]] = field(default_factory=list)

    def split(self, name: str) -> Path:
        return self.root / name


def build_planted(root: Path, photos: dict[str, np.ndarray], *, with_leaks: bool = True) -> Planted:
    """train/val/test from 4 photos (one class each), 64-px tiles; with_leaks plants one copy of each kind."""
    classes = {"temple": "china", "flower": "flower", "cat": "chelsea", "coffee": "coffee"}
    ds = Planted(root, [root / "train", root / "val", root / "test"])
    train_tiles: dict[str, list[Image.Image]] = {}
    for cls, photo in classes.items():
        tiles = tiles_of(photos[photo], 64, 14, step=72)
        assert len(tiles) == 14, f"{photo}: not enough textured tiles"
        train_tiles[cls] = tiles[:10]
        for i, t in enumerate(tiles[:10]):
            save(root / "train" / cls / f"{cls}_{i:02d}.jpg", t)
        for i, t in enumerate(tiles[10:12]):
            save(root / "val" / cls / f"{cls}_v{i}.jpg", t)
        for i, t in enumerate(tiles[12:14]):
            save(root / "test" / cls / f"{cls}_t{i}.jpg", t)
    if not with_leaks:
        return ds
    src = lambda cls, i: root / "train" / cls / f"{cls}_{i:02d}.jpg"  # noqa: E731
    # exact copy of the bytes
    save(root / "val" / "temple" / "copy_exact.jpg", src("temple", 0).read_bytes())
    ds.leaks.append(("temple/temple_00.jpg", "val", "temple/copy_exact.jpg", "exact-duplicates"))
    # same pixels, different bytes: a JPEG comment (metadata) added, and a lossless PNG and WebP of the decoded pixels
    save(root / "val" / "flower" / "copy_comment.jpg", with_comment(src("flower", 1).read_bytes(), b"edited by a tool"))
    ds.leaks.append(("flower/flower_01.jpg", "val", "flower/copy_comment.jpg", "pixel-duplicates"))
    decoded = Image.open(src("cat", 2)).convert("RGB")
    save(root / "test" / "cat" / "copy_lossless.png", decoded, "PNG")
    ds.leaks.append(("cat/cat_02.jpg", "test", "cat/copy_lossless.png", "pixel-duplicates"))
    save(root / "test" / "cat" / "copy_lossless.webp", Image.open(src("cat", 3)).convert("RGB"), "WEBP", lossless=True)
    ds.leaks.append(("cat/cat_03.jpg", "test", "cat/copy_lossless.webp", "pixel-duplicates"))
    # near duplicates: re-encoded, resized, mirrored, slightly cropped
    save(root / "val" / "coffee" / "copy_q40.jpg", Image.open(src("coffee", 3)), quality=40)
    ds.leaks.append(("coffee/coffee_03.jpg", "val", "coffee/copy_q40.jpg", "near-duplicates"))
    save(root / "test" / "temple" / "copy_resized.jpg", Image.open(src("temple", 4)).resize((48, 48), Image.Resampling.LANCZOS))
    ds.leaks.append(("temple/temple_04.jpg", "test", "temple/copy_resized.jpg", "near-duplicates"))
    save(root / "val" / "cat" / "copy_mirrored.jpg", Image.open(src("cat", 5)).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    ds.leaks.append(("cat/cat_05.jpg", "val", "cat/copy_mirrored.jpg", "near-duplicates"))
    # A 3% crop off one edge: on 64-px tiles such crops move pHash by 2-12 bits; this one stays within the radius.
    # Crops the hashes miss are the embedding stage's job (see test_embeddings.py).
    save(root / "test" / "flower" / "copy_crop.jpg", Image.open(src("flower", 7)).crop((0, 0, 64, 62)))
    ds.leaks.append(("flower/flower_07.jpg", "test", "flower/copy_crop.jpg", "near-duplicates"))
    return ds


@pytest.fixture
def planted(tmp_path: Path, photos: dict[str, np.ndarray]) -> Planted:
    return build_planted(tmp_path / "data", photos)


@pytest.fixture
def clean(tmp_path: Path, photos: dict[str, np.ndarray]) -> Planted:
    return build_planted(tmp_path / "clean", photos, with_leaks=False)


def tree_state(root: Path) -> dict[str, tuple[bytes, int]]:
    """Content and mtime of every file below ``root``: to prove a run changed nothing."""
    import hashlib

    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.is_symlink() and not p.exists():
                continue
            try:
                out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).digest(), p.stat().st_mtime_ns)
            except PermissionError:
                out[str(p.relative_to(root))] = (b"unreadable", p.stat().st_mtime_ns)
    return out


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` of a child the tests interrupt: Ctrl-C at its default action, as under a terminal. A shell
    starts a background job (``pytest ... &``) with SIGINT ignored, the child inherits that, and Python keeps an
    inherited ignore: the tests' SIGINT would then be lost and the run would finish (seen in a backgrounded suite)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
