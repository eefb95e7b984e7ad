"""Issue #13's corpus: every hostile input through the real CLI, each in a subprocess with a bounded timeout.

For each case: no traceback, exactly the documented exit code (0 clean, 1 findings, 2 usage/config error), no file
of the dataset changed (hashed before and after, links and FIFOs by their target, never read), and no hang. Images
are small (48 px tiles), so the whole corpus is bounded work. The counts are printed for the closing note.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import save, tiles_of

from splitaudit.features.cache import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180  # per case; a healthy case takes a few seconds


def tree_hash(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` by lstat: regular files by content, links by target, FIFOs/devices by mode."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            key = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    out[key] = ("file", hashlib.sha256(fh.read()).hexdigest(), st.st_mtime_ns, st.st_size)
            else:
                out[key] = ("other", stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, dict[str, list[Image.Image]]], list[str]]  # writes the dataset, returns CLI arguments
    exit_code: int


def _base(root: Path, tiles: dict[str, list[Image.Image]], n: int = 3) -> tuple[Path, Path]:
    for k, t in enumerate(tiles["a"][:n]):
        save(root / "train" / "a" / f"{k}.jpg", t)
    for k, t in enumerate(tiles["b"][:n]):
        save(root / "val" / "a" / f"{k}.jpg", t)
    return root / "train", root / "val"


def _with(extra: Callable[[Path, Path, Path, dict], None], *flags: str) -> Callable[[Path, dict], list[str]]:
    def build(root: Path, tiles: dict[str, list[Image.Image]]) -> list[str]:
        train, val = _base(root, tiles)
        extra(root, train, val, tiles)
        return [str(train), str(val), *flags]
    return build


def _copy(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes())


def _ico_split(root: Path, tiles: dict) -> Path:
    d = root / "icons" / "a"
    d.mkdir(parents=True)
    for k, t in enumerate(tiles["c"][:2]):
        t.save(d / f"{k}.ico")
    return d.parent


def _manifest(root: Path, rows: list[str]) -> str:
    (root / "m.csv").write_text("\n".join(["path,label,split", *rows]) + "\n")
    return str(root / "m.csv")


def _cases() -> list[Case]:
    c: list[Case] = []
    add = lambda name, build, code: c.append(Case(name, build, code))  # noqa: E731
    nothing = lambda *a: None  # noqa: E731
    add("clean", _with(nothing), 0)
    add("fifo", _with(lambda r, t, v, x: os.mkfifo(t / "a" / "p.jpg")), 1)
    add("dev-zero-link", _with(lambda r, t, v, x: (v / "a" / "z.jpg").symlink_to("/dev/zero")), 1)
    add("dev-null-link", _with(lambda r, t, v, x: (v / "a" / "n.png").symlink_to("/dev/null")), 1)
    add("broken-link", _with(lambda r, t, v, x: (v / "a" / "gone.jpg").symlink_to(r / "nowhere.jpg")), 1)
    add("folder-loop", _with(lambda r, t, v, x: (t / "a" / "loop").symlink_to(t)), 0)
    add("huge-png", _with(lambda r, t, v, x: Image.new("1", (12000, 12000)).save(v / "a" / "big.png")), 0)
    add("large-random-jpg", _with(lambda r, t, v, x: (v / "a" / "rand.jpg").write_bytes(os.urandom(24 << 20))), 1)
    add("empty-file", _with(lambda r, t, v, x: (v / "a" / "e.jpg").write_bytes(b"")), 1)
    add("truncated-jpg", _with(lambda r, t, v, x: (v / "a" / "t.jpg").write_bytes((t / "a" / "0.jpg").read_bytes()[:300])), 1)
    add("text-as-png", _with(lambda r, t, v, x: (v / "a" / "x.png").write_text("hello")), 1)
    add("readme-beside", _with(lambda r, t, v, x: (v / "README.md").write_text("# data")), 0)
    add("hidden-files", _with(lambda r, t, v, x: (v / ".DS_Store").write_bytes(b"\0\1")), 0)
    add("bomb-header-png", _with(lambda r, t, v, x: _bomb(v / "a" / "bomb.png")), 1)
    add("animated-gif", _with(lambda r, t, v, x: x["c"][0].save(v / "a" / "anim.gif", save_all=True,
                                                                 append_images=[x["c"][1]])), 0)
    add("exact-copy", _with(lambda r, t, v, x: _copy(t / "a" / "0.jpg", v / "a" / "copy.jpg")), 1)
    add("control-char-name", _with(lambda r, t, v, x: _copy(t / "a" / "0.jpg", v / "a" / "x\r\n::warning::inj\x1b[31m\x07.jpg"),
                                   "--format", "github"), 1)
    add("non-utf8-name", _with(lambda r, t, v, x: Path(os.fsdecode(os.path.join(os.fsencode(v / "a"), b"caf\xe9.jpg")))
                               .write_bytes((t / "a" / "1.jpg").read_bytes()), "--format", "json"), 1)
    add("non-utf8-class-folder", _with(lambda r, t, v, x: _non_utf8_class(v, x)), 1)  # a class only in val: an error
    add("empty-file-no-suffix", _with(lambda r, t, v, x: (v / "b").write_bytes(b"")), 1)
    add("solid-colours", _with(lambda r, t, v, x: (Image.new("RGB", (48, 48), (0, 0, 0)).save(t / "a" / "k.png"),
                                                   Image.new("RGB", (48, 48), (255, 255, 255)).save(v / "a" / "w.png"))), 0)
    add("exif-orientation-copy", _with(lambda r, t, v, x: _tagged_copy(t, v)), 1)
    add("class-only-in-val", _with(lambda r, t, v, x: [save(v / "z" / f"{k}.jpg", im) for k, im in enumerate(x["c"][:3])]), 1)
    add("empty-split", lambda r, x: [str(_base(r, x)[0]), str(_mkdir(r / "empty"))], 1)
    add("unsupported-only-split", lambda r, x: [str(_base(r, x)[0]), str(_ico_split(r, x))], 1)
    add("overlapping-splits", lambda r, x: [str(r), str(_base(r, x)[1])], 2)
    add("same-folder-twice", lambda r, x: ["--split", f"a={_base(r, x)[0]}", "--split", f"b={r / 'train'}"], 2)
    add("missing-folder", lambda r, x: [str(_base(r, x)[0]), str(r / "nope")], 2)
    add("one-split", lambda r, x: [str(_base(r, x)[0])], 2)
    add("manifest-one-split", lambda r, x: (_base(r, x), ["--manifest", _manifest(r, ["train/a/0.jpg,a,train"])])[1], 2)
    add("manifest-dev-zero", lambda r, x: (_base(r, x), ["--manifest", _manifest(r, ["train/a/0.jpg,a,train", "/dev/zero,a,val",
                                                                                    "val/a/0.jpg,a,val"])])[1], 1)
    add("manifest-fifo", lambda r, x: (_base(r, x), os.mkfifo(r / "f.jpg"),
                                       ["--manifest", _manifest(r, ["train/a/0.jpg,a,train", "f.jpg,a,val", "val/a/1.jpg,a,val"])])[2], 1)
    add("manifest-no-columns", lambda r, x: (_base(r, x), ["--manifest", _manifest(r, ["a,b"])])[1], 2)
    add("manifest-binary", lambda r, x: (_base(r, x), (r / "m.csv").write_bytes(b"\xff\xfe\0\0garbage"),
                                         ["--manifest", str(r / "m.csv")])[2], 2)
    add("manifest-is-fifo", lambda r, x: (_base(r, x), os.mkfifo(r / "m.csv"), ["--manifest", str(r / "m.csv")])[2], 2)
    add("max-phash-negative", _with(nothing, "--config", "CONFIG:[tool.splitaudit.checks.near-duplicates]\nmax-phash = -5\n"), 2)
    add("unknown-check-option", _with(nothing, "--config", "CONFIG:[tool.splitaudit.checks.near-duplicates]\nmax-hash = 3\n"), 2)
    add("bad-group-regex", _with(nothing, "--group-by", "(unclosed"), 2)
    add("unknown-select", _with(nothing, "--select", "no-such-check"), 2)
    add("cache-dir-is-a-file", _with(lambda r, t, v, x: (r.parent / "blocker").write_text("x"), "--cache-dir", "ROOT:blocker"), 0)
    add("cache-dir-under-a-file", _with(lambda r, t, v, x: (r.parent / "blocker").write_text("x"), "--cache-dir", "ROOT:blocker/c"), 0)
    add("cache-db-is-a-folder", _with(lambda r, t, v, x: (r.parent / "cache" / f"cache-v{SCHEMA_VERSION}.sqlite3").mkdir(parents=True),
                                      "--cache-dir", "ROOT:cache"), 0)
    add("cache-db-is-garbage", _with(lambda r, t, v, x: (_mkdir(r.parent / "cache") / f"cache-v{SCHEMA_VERSION}.sqlite3").write_bytes(b"garbage" * 100),
                                     "--cache-dir", "ROOT:cache"), 0)
    add("cache-in-proc", _with(nothing, "--cache-dir", "/proc/self/splitaudit-cache"), 0)
    add("output-is-a-folder", _with(lambda r, t, v, x: _mkdir(r.parent / "out"), "--output", "ROOT:out"), 2)
    return c


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _bomb(path: Path) -> None:
    """A valid PNG header claiming 100000x100000 pixels (the decompression-bomb guard refuses it unread)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def _non_utf8_class(val: Path, tiles: dict) -> None:
    d = Path(os.fsdecode(os.path.join(os.fsencode(val), b"cl\xe4ss")))
    d.mkdir()
    tiles["c"][3].save(d / "0.jpg")


def _tagged_copy(train: Path, val: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    im = Image.open(train / "a" / "0.jpg")
    im.save(train / "a" / "up.jpg", quality=95)
    im.save(val / "a" / "tagged.jpg", quality=95, exif=exif.tobytes())


@pytest.fixture(scope="module")
def corpus_tiles() -> dict[str, list[Image.Image]]:
    from conftest import _load_photo

    return {k: tiles_of(_load_photo(name), 48, 8) for k, name in (("a", "astronaut"), ("b", "coffee"), ("c", "chelsea"))}


def _resolve(args: list[str], root: Path) -> list[str]:
    out = []
    for a in args:
        if a.startswith("ROOT:"):  # beside the dataset, not inside it (a cache there is not the user's data)
            a = str(root.parent / a[5:])
        elif a.startswith("CONFIG:"):
            (root / "pyproject.toml").write_text(a[7:])
            a = str(root / "pyproject.toml")
        out.append(a)
    return out


RESULTS: dict[str, str] = {}
CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, corpus_tiles: dict, _isolated_cache: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    args = _resolve(case.build(root, corpus_tiles), root)
    before = tree_hash(root)
    cmd = [sys.executable, "-m", "splitaudit", "check", *args, "--backbone", "none", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=TIMEOUT_S, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        RESULTS[case.name] = "hang"
        raise
    after = tree_hash(root)
    output = done.stdout + done.stderr
    if b"Traceback" in output or b"internal error" in output:
        RESULTS[case.name] = "crash"
    elif before != after:
        RESULTS[case.name] = "changed"
    else:
        RESULTS[case.name] = "ok" if done.returncode == case.exit_code else f"exit {done.returncode}"
    assert b"Traceback" not in output and b"internal error" not in output, output.decode(errors="replace")[-2000:]
    assert before == after, "the dataset was modified"
    assert done.returncode == case.exit_code, output.decode(errors="replace")[-2000:]
    if case.name == "control-char-name":
        assert not any(ch in done.stdout for ch in b"\r\x1b\x07")
        assert all(line.startswith((b"::", b"FAIL", b"PASS")) for line in done.stdout.splitlines())


def test_corpus_summary() -> None:
    """Printed with ``-s``: inputs tried, crashes, hangs, files changed (runs last in this module)."""
    if len(RESULTS) < len(CASES):
        pytest.skip("run the whole module for the summary")
    counts = {k: sum(1 for v in RESULTS.values() if v == k) for k in ("crash", "hang", "changed")}
    print(f"\nhostile corpus: {len(RESULTS)} inputs, {counts['crash']} crashes, {counts['hang']} hangs, "
          f"{counts['changed']} with files changed, {sum(v.startswith('exit') for v in RESULTS.values())} wrong exit codes")
    assert not any(counts.values())
