"""Issue #13: hostile and broken inputs, one test per item, each built from real files (photo tiles, FIFOs, links to
/dev/zero, a cache path blocked by a file or a folder). The same inputs run through the CLI in
``test_hostile_corpus.py``."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import save, sigint_as_in_a_terminal, tiles_of
from splitaudit import audit
from splitaudit.checks import all_checks
from splitaudit.errors import SplitauditError
from splitaudit.features import FeatureCache, compute_features
from splitaudit.features.cache import SCHEMA_VERSION
from splitaudit.features import decode
from splitaudit.render import render_github, render_terminal
from splitaudit.render.escape import printable
from splitaudit.scan import scan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A blocked open() or read() is interrupted by SIGALRM and fails the test instead of hanging the suite."""
    def fail(*_: object) -> None:
        raise TimeoutError("hung on a hostile input")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(240)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _splits(root: Path, photos: dict[str, np.ndarray], n: int = 4, size: int = 48) -> tuple[Path, Path]:
    """train/ and val/ with ``n`` distinct real-photo tiles each (class folder ``a``)."""
    tiles = tiles_of(photos["astronaut"], size, 2 * n)
    for k, t in enumerate(tiles):
        save(root / ("train" if k < n else "val") / "a" / f"{k}.jpg", t)
    return root / "train", root / "val"


def _by_path(report, check: str | None = None) -> dict[str, list]:  # type: ignore[no-untyped-def]
    out: dict[str, list] = {}
    for f in report.findings:
        if check is None or f.check == check:
            for ref in f.images:
                out.setdefault(f"{ref.split}/{ref.path}", []).append(f)
    return out


# 1 ------------------------------------------------------------------------------------------------------------------
def test_fifo_and_dev_zero_are_unreadable_findings(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    os.mkfifo(train / "a" / "p.jpg")
    (val / "a" / "z.jpg").symlink_to("/dev/zero")
    report = audit(train, val, backbone="none")
    found = _by_path(report, "unreadable-images")
    assert "not a regular file (a FIFO)" in found["train/a/p.jpg"][0].message
    assert "not a regular file (a character device)" in found["val/a/z.jpg"][0].message


def test_manifest_row_at_dev_zero(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    rows = ["path,label,split"] + [f"{p.relative_to(tmp_path)},a,{p.parts[-3]}" for p in sorted(tmp_path.rglob("*.jpg"))]
    (tmp_path / "m.csv").write_text("\n".join(rows + ["/dev/zero,a,val"]) + "\n")
    report = audit(manifest=tmp_path / "m.csv", backbone="none")
    assert "character device" in _by_path(report, "unreadable-images")["val//dev/zero"][0].message


# 2, 3 ---------------------------------------------------------------------------------------------------------------
def test_huge_png_and_large_non_image_stay_within_memory(tmp_path: Path) -> None:
    """A 12000x12000 PNG (a few KB on disk) and a 64 MB random '.jpg': peak RSS grows by far less than either."""
    Image.new("1", (12000, 12000)).save(tmp_path / "big.png")
    (tmp_path / "rand.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 64 << 20, dtype=np.uint8).tobytes())
    script = textwrap.dedent(f"""
        import resource, numpy as np
        from splitaudit.features.extract import extract_batch
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = extract_batch({{"path": np.array([{str(tmp_path / 'big.png')!r}, {str(tmp_path / 'rand.jpg')!r}], dtype=object)}})
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(list(out["status"]), grown)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    statuses, grown = done.stdout.rsplit("]", 1)
    assert statuses.strip("[ '") .split("', '") == [decode.OVERSIZED, decode.NOT_IMAGE], done.stderr
    assert int(grown) < 40 * 1024, f"RSS grew by {int(grown) // 1024} MB"  # 12000x12000 RGB alone is 432 MB


def test_oversized_is_a_warning(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    Image.new("1", (8000, 6000)).save(val / "a" / "big.png")
    report = audit(train, val, backbone="none")
    (f,) = _by_path(report, "unreadable-images")["val/a/big.png"]
    assert f.severity.label == "warning" and "decode limit" in f.message and not report.failed


# 4 ------------------------------------------------------------------------------------------------------------------
def test_class_only_in_val_is_a_finding(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    tiles = tiles_of(photos["china"], 24, 100)
    counts = {"train": {"a": 30, "b": 30}, "val": {"a": 5, "b": 5, "c": 30}}
    k = 0
    for split, per in counts.items():
        for label, n in per.items():
            for _ in range(n):
                save(tmp_path / split / label / f"{k}.png", tiles[k], "PNG")
                k += 1
    report = audit(tmp_path / "train", tmp_path / "val", backbone="none", select=["class-balance"])
    messages = " | ".join(f.message for f in report.findings)
    assert "absent from train: c" in messages and "'c' (absent from train)" in messages


# 5 ------------------------------------------------------------------------------------------------------------------
def test_non_utf8_name_on_a_fresh_cache(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    copy = os.path.join(os.fsencode(val / "a"), b"caf\xe9-\xff.jpg")
    with open(copy, "wb") as fh:
        fh.write((train / "a" / "0.jpg").read_bytes())
    report = audit(train, val, backbone="none")  # the autouse fixture gives an empty cache folder
    assert "val/a/caf\\xe9-\\xff.jpg" in _by_path(report, "exact-duplicates")
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")  # writable as UTF-8
    again = audit(train, val, backbone="none")  # and read back from the cache
    assert [f.id for f in again.findings] == [f.id for f in report.findings]


# 6 ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["dir-is-a-file", "under-a-file", "database-is-a-folder", "proc"])
def test_cache_faults_run_without_cache_with_one_warning(tmp_path: Path, photos: dict[str, np.ndarray], fault: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Root ignores permission bits, so the faults used are ones that also stop root: a file where the folder
    should be, a folder below a file, a folder where the database file should be, a folder inside /proc."""
    train, val = _splits(tmp_path, photos)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    cache_dir = {"dir-is-a-file": blocker, "under-a-file": blocker / "cache", "proc": Path("/proc/self/splitaudit"),
                 "database-is-a-folder": tmp_path / "cache"}[fault]
    if fault == "database-is-a-folder":
        (cache_dir / f"cache-v{SCHEMA_VERSION}.sqlite3").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="splitaudit"):
        report = audit(train, val, backbone="none", cache_dir=cache_dir)
    warnings = [r for r in caplog.records if "continuing without it" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert not report.failed and report.splits[0].images == 4
    assert blocker.read_text() == "not a folder"


def test_read_only_cache_folder_holding_a_database_runs_without_it(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    """A cache folder and database the user may read but not write (a shared CI cache): the run reads nothing it
    cannot trust, warns once, gives the same verdict, and changes nothing there. Root ignores modes, so the second run
    drops the two capabilities that let it (``setpriv``), as tests/test_bad_files.py does."""
    import shutil
    import tempfile

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("no setpriv to run without CAP_DAC_OVERRIDE")
    base = Path(tempfile.mkdtemp(prefix="splitaudit-rocache-"))
    try:
        base.chmod(0o755)
        train, val = _splits(base / "data", photos)
        for dirpath, _, filenames in os.walk(base / "data"):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        cache = base / "cache"
        first = audit(train, val, backbone="none", cache_dir=cache)
        databases = sorted(cache.iterdir())
        assert databases, "the first run wrote no cache"
        before = {p.name: p.read_bytes() for p in databases}
        for p in databases:
            p.chmod(0o444)
        cache.chmod(0o555)
        caps = "-dac_override,-dac_read_search"
        env = {**os.environ, "HOME": str(base)}
        r = subprocess.run([setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--", sys.executable, "-m", "splitaudit",
                            "check", str(train), str(val), "--backbone", "none", "--cache-dir", str(cache), "--format", "json"],
                           capture_output=True, text=True, env=env, cwd=base, timeout=600)
        assert r.returncode == (1 if first.failed else 0), r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.count("continuing without it") == 1, r.stderr
        assert [f["id"] for f in json.loads(r.stdout)["findings"]] == [f.id for f in first.findings]
        assert {p.name: p.read_bytes() for p in sorted(cache.iterdir())} == before  # no -wal/-shm, no change
    finally:
        for dirpath, dirnames, _ in os.walk(base):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(base, ignore_errors=True)


# 7, 8 ---------------------------------------------------------------------------------------------------------------
def test_overlapping_splits_are_refused(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path / "data", photos)
    with pytest.raises(SplitauditError, match="overlap"):
        audit(tmp_path / "data", val, backbone="none")
    (tmp_path / "alias").symlink_to(train)
    with pytest.raises(SplitauditError, match="same folder"):
        audit({"train": train, "other": tmp_path / "alias"}, backbone="none")


def test_empty_and_unsupported_splits_fail(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    empty = tmp_path / "empty"
    empty.mkdir()
    report = audit(train, empty, backbone="none")
    assert report.failed and any("has no readable image" in f.message for f in report.findings)

    icons = tmp_path / "icons" / "a"
    icons.mkdir(parents=True)
    for k, t in enumerate(tiles_of(photos["coffee"], 32, 3)):
        t.save(icons / f"{k}.ico")  # a real image format we do not read
    report = audit(train, icons.parent, backbone="none")
    kinds = {(f.severity.label, f.data.get("status")) for f in report.findings}
    assert ("warning", "unsupported") in kinds and ("error", "no-readable-image") in kinds and report.failed
    assert report.splits[1].skipped == 3


def test_avif_is_read_with_the_installed_plugin(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    Image.open(train / "a" / "0.jpg").save(val / "a" / "copy.avif", quality=90)
    assert decode.sniff((val / "a" / "copy.avif").read_bytes()[:16]) == "AVIF"
    report = audit(train, val, backbone="none")
    assert report.splits[1].images == 5 and "val/a/copy.avif" in _by_path(report, "near-duplicates")


def test_single_split_manifest_is_refused(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    _splits(tmp_path, photos)
    (tmp_path / "m.csv").write_text("path,label,split\ntrain/a/0.jpg,a,train\ntrain/a/1.jpg,a,train\n")
    with pytest.raises(SplitauditError, match="at least two"):
        scan(manifest=tmp_path / "m.csv")


# 9 ------------------------------------------------------------------------------------------------------------------
def test_orientation_only_copy_is_found(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    exif = Image.Exif()
    exif[0x0112] = 6
    tile = tiles_of(photos["chelsea"], 64, 1)[0].crop((0, 0, 64, 40))
    tile.save(train / "a" / "up.jpg", quality=90)
    tile.save(val / "a" / "tagged.jpg", quality=90, exif=exif.tobytes())
    for backbone in ("none", "efficientnet_lite0"):
        report = audit(train, val, backbone=backbone, select=["pixel-duplicates", "near-duplicates", "exact-duplicates"])
        (f,) = _by_path(report)["val/a/tagged.jpg"]
        assert f.check == "pixel-duplicates" and "orientation tag (6 vs 1)" in f.message


# 10 -----------------------------------------------------------------------------------------------------------------
def test_rewrite_with_restored_mtime_is_seen(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    target = max((val / "a").iterdir(), key=lambda p: p.stat().st_size)
    source = min((train / "a").iterdir(), key=lambda p: p.stat().st_size)
    assert not audit(train, val, backbone="none").failed
    st = target.stat()
    # Overwrite in place with a copy of a training image padded after its end marker to the old size.
    data = source.read_bytes()
    assert len(data) < st.st_size
    target.write_bytes(data + b"\x00" * (st.st_size - len(data)))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    report = audit(train, val, backbone="none")
    assert f"val/a/{target.name}" in _by_path(report), "a stale cache entry hid the new content"


# 11 -----------------------------------------------------------------------------------------------------------------
def test_solid_colours_are_not_near_duplicates(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    Image.new("RGB", (64, 64), (0, 0, 0)).save(train / "a" / "black.png")
    Image.new("RGB", (64, 64), (250, 250, 250)).save(val / "a" / "white.png")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(val / "a" / "red.jpg")
    Image.new("RGB", (64, 64), (0, 0, 0)).save(val / "a" / "black.bmp")  # identical pixels: still a copy
    report = audit(train, val, backbone="none")
    found = _by_path(report)
    assert "val/a/white.png" not in found and "val/a/red.jpg" not in found
    assert [f.check for f in found["val/a/black.bmp"]] == ["pixel-duplicates"]


# 12 -----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("check", "options"), [("near-duplicates", {"max-phash": -5}), ("near-duplicates", {"max_dhash": 65}),
                                                ("near-duplicates", {"min_ncc": float("nan")}), ("class-balance", {"alpha": 0.0}),
                                                ("exact-duplicates", {"max_matches_per_image": 0})])
def test_out_of_range_parameters_are_usage_errors(check: str, options: dict) -> None:
    with pytest.raises(SplitauditError, match="must be"):
        all_checks()[check].validate(options)


def test_in_range_parameters_pass() -> None:
    assert all_checks()["near-duplicates"].validate({"max-phash": 64})["max_phash"] == 64


# 13 -----------------------------------------------------------------------------------------------------------------
def test_sigint_keeps_finished_work_and_exits_130(tmp_path: Path, photos: dict[str, np.ndarray],
                                                  _isolated_cache: Path) -> None:
    tiles = tiles_of(photos["flower"], 16, 4000, step=5)
    for k, t in enumerate(tiles):
        save(tmp_path / ("train" if k % 2 else "val") / f"{k}.png", t, "PNG")
    cmd = [sys.executable, "-m", "splitaudit", "check", str(tmp_path / "train"), str(tmp_path / "val"), "--backbone", "none",
           "--workers", "2", "--format", "json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=sigint_as_in_a_terminal)
    try:
        _interrupt_and_check(proc, _isolated_cache, tmp_path, len(tiles))
    finally:
        if proc.poll() is None:  # a hung run must not outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _interrupt_and_check(proc: subprocess.Popen, cache_dir: Path, root: Path, n: int) -> None:
    db = cache_dir / f"cache-v{SCHEMA_VERSION}.sqlite3"
    stored = 0
    for _ in range(600):  # interrupt as soon as the first batch of features is in the cache (work-bounded wait)
        if proc.poll() is not None:
            break
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
                stored = conn.execute("SELECT count(*) FROM features").fetchone()[0]
        except sqlite3.Error:
            stored = 0
        if stored:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before any batch was stored: make the dataset larger"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert sorted(p.name for p in cache_dir.iterdir()) == [f"cache-v{SCHEMA_VERSION}.sqlite3"]  # no -wal / -shm left
    dataset = scan([root / "train", root / "val"])
    with FeatureCache(cache_dir) as cache:
        table = compute_features(dataset, cache=cache, workers=1)
    assert table.hits >= stored > 0 and table.hits + table.misses == n


# 14 -----------------------------------------------------------------------------------------------------------------
def test_control_characters_are_escaped_in_terminal_and_github(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    train, val = _splits(tmp_path, photos)
    evil = "x\r\n::warning file=evil::injected\x1b[31mred\x07\x9b.jpg"
    (val / "a" / evil).write_bytes((train / "a" / "0.jpg").read_bytes())
    report = audit(train, val, backbone="none")
    for text in (render_terminal(report), render_github(report)):
        assert not any(ch in text for ch in "\r\x1b\x07\x9b")
        assert "\\r\\n::warning file=evil::injected\\x1b[31mred\\x07\\x9b.jpg" in text
    github = render_github(report)
    assert all(line.startswith(("::error ", "::warning ", "::notice ", "FAIL ", "PASS ")) for line in github.splitlines())


def test_printable_escapes_every_control_and_undecodable_byte() -> None:
    controls = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)])) + "\u202e" + os.fsdecode(b"\xff")
    out = printable("ok " + controls)
    assert out.startswith("ok ") and out.isprintable() and out.isascii()
    assert printable("plain é ü 漢字") == "plain é ü 漢字"


def test_many_blank_images_make_linear_pairs(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    """60 black frames and 60 dark-grey ones (PNG and BMP, identical pixels per colour) spread over both splits:
    each copy is reported, none across colours, and the pairs stay linear in the number of blank images."""
    from splitaudit.checks import AuditContext

    train, val = _splits(tmp_path, photos)
    for k in range(60):
        for colour, name in (((0, 0, 0), "black"), ((20, 20, 20), "grey")):
            split = train if k % 3 == 0 else val
            Image.new("RGB", (40, 40), colour).save(split / "a" / f"{name}{k}.{'png' if k % 2 else 'bmp'}")
    ctx = AuditContext(scan([train, val]))
    blank = np.flatnonzero(ctx.features["spread"] < 3)
    assert len(blank) == 120
    hp = ctx.hash_pairs()
    assert not (np.isin(hp.a, blank) | np.isin(hp.b, blank)).any()  # blanks are left out of the hash search
    m = ctx.matches()
    # pairs with a blank image: identical pixels only, at most 16 links per copy (plus a chain); the photo tiles'
    # own look-alike pairs (the copy verifier's band) are not this test's subject
    blank_pair = np.isin(m.a, blank) | np.isin(m.b, blank)
    assert bool(m.same_pixels[blank_pair].all()) and blank_pair.sum() <= 17 * 120
    report = audit(train, val, backbone="none")
    copies = _by_path(report, "pixel-duplicates") | _by_path(report, "exact-duplicates")
    assert sum(1 for p in copies if p.startswith("val/")) == 80  # every val frame, none matched across colours
    assert not _by_path(report, "near-duplicates")
