"""The copy verifier inside the checks (issue #11): re-cropped, zoomed, framed, re-graded and mirrored copies of real
photos that the hashes miss are near-duplicates; distinct crops of the same photos are not; every evaluation image
has its best copy score in the report, and a warm run serves the stage from the cache."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import splitaudit

from conftest import save

#: Source region side in the photo, and the side the images are saved at.
REGION, OUT = 120, 96


def _render(photo: np.ndarray, x: int, y: int, *, shift: int = 0, zoom: float = 1.0, frame: float = 0.0,
            grade: bool = False, mirror: bool = False, crop: float = 0.0) -> Image.Image:
    """The region at (x, y) of ``photo`` as a photographer's copy would show it: the window moved by ``shift``
    source pixels, zoomed (``zoom`` > 1 shows less), a share ``crop`` cut from the right and bottom edges, then framed,
    re-graded or mirrored."""
    side = REGION / zoom
    cx, cy = x + REGION / 2 + shift, y + REGION / 2 + shift / 2
    box = (cx - side / 2, cy - side / 2, cx + side / 2 - crop * side, cy + side / 2 - crop * side)
    im = Image.fromarray(photo).resize((OUT, OUT), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    if frame:
        inner = int(round(OUT * (1 - 2 * frame)))
        framed = Image.new("RGB", (OUT, OUT), (255, 255, 255))
        framed.paste(im.resize((inner, inner), Image.Resampling.LANCZOS), ((OUT - inner) // 2, (OUT - inner) // 2))
        im = framed
    if grade:
        a = np.asarray(im, np.float32) / 255.0
        im = Image.fromarray(np.clip(255 * (a ** 0.8 * np.array([1.1, 1.0, 0.85]) + 0.04), 0, 255).astype(np.uint8))
    if mirror:
        im = ImageOps.mirror(im)
    return im


COPIES = {
    "shift": dict(shift=4),
    "zoom": dict(zoom=1.1),
    "crop": dict(crop=0.15),
    "frame": dict(frame=0.08),
    "grade": dict(grade=True),
    "mirror + shift": dict(mirror=True, shift=3),
}


@pytest.fixture
def recropped(tmp_path: Path, photos: dict[str, np.ndarray]) -> tuple[list[Path], dict[str, str]]:
    """train: 8 regions of each of 4 photos (the regions of one photo are look-alikes: one scene, one texture);
    val: a copy of one train region per transform, and 4 distinct regions of the same photos."""
    root = tmp_path / "data"
    copies: dict[str, str] = {}
    for p, name in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        photo = photos[name]
        h, w = photo.shape[:2]
        xs = np.linspace(20, w - REGION - 20, 3).astype(int)
        ys = np.linspace(20, h - REGION - 20, 3).astype(int)
        spots = [(int(x), int(y)) for y in ys for x in xs]
        for i, (x, y) in enumerate(spots[:8]):
            save(root / "train" / name / f"{name}_{i}.jpg", _render(photo, x, y), quality=92)
        x, y = spots[8]
        save(root / "val" / name / f"{name}_new.jpg", _render(photo, x, y), quality=92)
    for k, (kind, spec) in enumerate(COPIES.items()):
        name = ("astronaut", "coffee", "chelsea", "rocket")[k % 4]
        photo = photos[name]
        h, w = photo.shape[:2]
        xs = np.linspace(20, w - REGION - 20, 3).astype(int)
        ys = np.linspace(20, h - REGION - 20, 3).astype(int)
        i = (k * 3) % 8
        x, y = int(xs[i % 3]), int(ys[i // 3])
        rel = f"{name}/copy_{kind.replace(' + ', '_')}.jpg"
        save(root / "val" / rel, _render(photo, x, y, **spec), quality=85)
        copies[rel] = f"{name}/{name}_{i}.jpg"
    return [root / "train", root / "val"], copies


def _pairs(report: splitaudit.AuditReport, check: str) -> dict[str, str]:
    return {f.images[1].path: f.images[0].path for f in report.by_check(check)}


def test_recropped_copies_are_found_by_the_verifier_and_not_without_it(recropped: tuple[list[Path], dict[str, str]]) -> None:
    splits, copies = recropped
    with_verifier = splitaudit.audit(*splits, backbone="none", select=("near-duplicates", "similar-images"))
    found = _pairs(with_verifier, "near-duplicates")
    flagged = {**_pairs(with_verifier, "similar-images"), **found}
    # Copies are flagged with their source: as near-duplicates (errors) or, in the verifier's uncertain band, as
    # similar images (warnings). Measured: 5 of these 6 are errors; the framed copy (white frame, content shrunk by
    # 16%) scores 0.82, under this small dataset's band (docs/copies.md: frames are among the weakest transforms).
    right = {b for b in copies if flagged.get(b) == copies[b]}
    assert len(right) >= 5 and len(set(found) & set(copies)) >= 4, flagged
    # nothing else is a copy: the distinct regions of the same photos are look-alikes, not copies
    assert set(found) <= set(copies)
    cut = {row["path"]: row["cut"] for row in with_verifier.copies["best"]["val"]}  # each eval image's own cut
    for f in with_verifier.by_check("near-duplicates"):
        reg = f.data["registration"]
        assert reg["score"] >= cut[f.images[1].path] or any(e.stage == "phash" and e.distance <= 10 for e in f.evidence)
        assert any(e.stage == "copy" for e in f.evidence)
    mirrored = next(f for f in with_verifier.findings if "mirror" in f.images[1].path and len(f.images) == 2)
    assert mirrored.data["registration"]["mirrored"]
    zoomed = next(f for f in with_verifier.findings if "zoom" in f.images[1].path and len(f.images) == 2)
    assert zoomed.data["registration"]["scale"] > 1.03  # the copy shows the content bigger

    without = splitaudit.audit(*splits, backbone="none", select=("near-duplicates",), verify=False)
    missed = set(copies) - set(_pairs(without, "near-duplicates"))
    assert len(missed) >= 3, "the hashes alone should miss most of these copies (else this test proves nothing)"


def test_every_eval_image_has_its_best_copy_score_and_the_calibration_is_reported(recropped: tuple[list[Path], dict[str, str]]) -> None:
    splits, copies = recropped
    report = splitaudit.audit(*splits, backbone="none", select=("near-duplicates",))
    doc = json.loads(report.to_json())
    best = {row["path"]: row for row in doc["copies"]["best"]["val"]}
    assert set(best) == {f"{p.parent.name}/{p.name}" for p in splits[1].rglob("*.jpg")}
    cal = doc["copies"]["calibration"]
    assert 0.6 <= cal["similar_cut"] <= cal["copy_cut"] <= 1.0
    assert cal["null_samples"] == 32 and cal["positives"] > 0
    # every eval image's own cut, by its crowding, between the floor and the ceiling (a small null: its floor)
    assert all(cal["copy_floor"] <= row["cut"] <= 0.995 for row in best.values()) and cal["copy_floor"] == 0.98
    for rel, src in copies.items():
        assert best[rel]["partner"] == f"train/{src}", (rel, best[rel])
    # scores are sortable: the copies rank above the distinct regions
    distinct = [row["score"] for p, row in best.items() if "_new" in p and row["score"] is not None]
    assert max(distinct) < min(best[rel]["score"] for rel in copies)


def test_a_warm_run_reads_the_stage_from_the_cache(recropped: tuple[list[Path], dict[str, str]], tmp_path: Path) -> None:
    splits, _ = recropped
    cache = tmp_path / "cache"
    first = splitaudit.audit(*splits, backbone="none", select=("near-duplicates",), cache_dir=cache)
    db = next(cache.glob("cache-v*.sqlite3"))

    def entries() -> list[tuple[str, float]]:
        with sqlite3.connect(db) as conn:
            return sorted(conn.execute("SELECT key, used FROM blobs WHERE key LIKE 'copies:%'").fetchall())

    stored = entries()
    assert len(stored) == 1
    images = sum(s.images for s in first.splits)
    with sqlite3.connect(db) as conn:  # the thumbnails are cached per content digest too
        luma = conn.execute("SELECT count(*) FROM thumbnails WHERE version NOT LIKE '%-value'").fetchone()[0]
        value = conn.execute("SELECT count(*) FROM thumbnails WHERE version LIKE '%-value'").fetchone()[0]
    # the HSV-value thumbnails of the images whose pairs were scored on them, and of no others
    assert luma == images and 0 < value < images
    second = splitaudit.audit(*splits, backbone="none", select=("near-duplicates",), cache_dir=cache)
    assert first.to_json() == second.to_json()
    assert [k for k, _ in entries()] == [k for k, _ in stored]  # read back, not recomputed under another key
    # the hash-only answer is unchanged by the cache: --no-verify does not read the verifier's entry
    assert splitaudit.audit(*splits, backbone="none", select=("near-duplicates",), cache_dir=cache, verify=False).copies == {}


def test_the_seed_draws_the_calibrations_samples(recropped: tuple[list[Path], dict[str, str]], tmp_path: Path) -> None:
    """--seed draws the copy stage's calibration samples (its synthetic copies' transforms): the default is seed 0,
    another seed is another draw of this dataset's cuts, stated in the report, and a cache written at one seed never
    serves another."""
    splits, _ = recropped
    cache = tmp_path / "cache"
    kw = dict(backbone="none", select=("near-duplicates",), cache_dir=cache)
    default = json.loads(splitaudit.audit(*splits, **kw).to_json())["copies"]["calibration"]
    zero = json.loads(splitaudit.audit(*splits, seed=0, **kw).to_json())["copies"]["calibration"]
    one = json.loads(splitaudit.audit(*splits, seed=1, **kw).to_json())["copies"]["calibration"]
    fresh = json.loads(splitaudit.audit(*splits, backbone="none", select=("near-duplicates",), seed=1,
                                        cache=False).to_json())["copies"]["calibration"]
    assert default == zero and default["seed"] == 0
    assert one == fresh and one["seed"] == 1  # computed at seed 1, not read back from seed 0's entry
    # the same training images, other synthetic copies: their scores' quantiles move
    assert one["positive_q05"] != zero["positive_q05"] or one["positive_q50"] != zero["positive_q50"]


def _tiny_windows(photos: dict[str, np.ndarray], seed: int) -> list[tuple[np.ndarray, int, int]]:
    """72 random 96-px windows (photo, x, y) of six photos, 12 each."""
    rng = np.random.default_rng(seed)
    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "china", "flower"):
        p = photos[name]
        h, w = p.shape[:2]
        out += [(p, int(rng.integers(0, w - 128)), int(rng.integers(0, h - 128))) for _ in range(12)]
    return out


def _small(p: np.ndarray, x: int, y: int, s: int = 0) -> np.ndarray:
    """The 96-px window at (x, y), moved by ``s`` px, as a 32-px image."""
    return np.asarray(Image.fromarray(p[y + s : y + s + 96, x + s : x + s + 96]).resize((32, 32), Image.Resampling.BOX))


def test_tiny_images_copies_are_verified_at_their_own_size(photos: dict[str, np.ndarray]) -> None:
    """32-px images (CIFAR-like arrays): a copy shifted by 2 px and re-graded is found; other crops are not."""
    tiles = _tiny_windows(photos, 0)
    small = _small
    train = np.stack([small(*t) for t in tiles[:60]])
    sources = [3, 17, 29, 41, 55]
    copies = [np.clip(small(*tiles[i], s=6).astype(np.float32) * 0.9 + 12, 0, 255).astype(np.uint8) for i in sources]
    val = np.stack(copies + [small(*t) for t in tiles[60:]])
    report = splitaudit.audit(train, val, backbone="none", select=("near-duplicates", "similar-images"))
    index = lambda check: {int(f.images[1].path[2:-1]): int(f.images[0].path[2:-1]) for f in report.by_check(check)}  # noqa: E731
    found = index("near-duplicates")
    flagged = {**index("similar-images"), **found}
    # Measured: 4 of the 5 are errors; the fourth copy scores 0.966, just under this small dataset's calibrated cut.
    right = {b for b, src in enumerate(sources) if flagged.get(b) == src}
    assert len(right) >= 4 and len(found) >= 3 and set(found) <= set(range(len(sources))), flagged


def test_copies_whose_levels_were_edited_are_found_through_the_api(photos: dict[str, np.ndarray],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """32-px colour arrays: copies with their exposure raised until highlights clip, a strong contrast curve or sepia
    toning (photo filters, auto-levels) are near-duplicates, scored with their grey levels matched; without that
    reading some are missed; distinct crops are not flagged either way."""
    from conftest import levels_edit

    from splitaudit.neighbors import verify

    sources = [3, 17, 29, 41, 55, 8, 22, 47, 12, 35, 50, 26]
    kinds = ["bright", "contrast", "sepia"] * 4
    # three draws of tiles: measured, 8 -> 10 copies of 12 found at the first, 10 -> 11 at the others
    for seed in (3, 4, 5):
        tiles = _tiny_windows(photos, seed)
        train = np.stack([_small(*t) for t in tiles[:60]])
        copies = [levels_edit(_small(*tiles[i], s=3 * (k % 2)), kind) for k, (i, kind) in enumerate(zip(sources, kinds))]
        val = np.stack(copies + [_small(*t) for t in tiles[60:]])

        def found() -> dict[int, int]:
            report = splitaudit.audit(train, val, backbone="none", select=("near-duplicates",), cache=False)
            return {int(f.images[1].path[2:-1]): int(f.images[0].path[2:-1])
                    for f in report.by_check("near-duplicates")}

        matched = found()
        assert all(b < len(sources) and sources[b] == a for b, a in matched.items()), matched  # copies of their own
        monkeypatch.setattr(verify, "TONE_FROM", 2.0)  # no pair reaches it: the luma's NCC alone
        luma = found()
        monkeypatch.undo()
        assert set(luma) <= set(matched) and len(luma) < len(matched), (seed, luma, matched)


def test_copies_recoloured_in_hsv_space_are_found_through_the_api(photos: dict[str, np.ndarray],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """32-px colour arrays: copies whose hue was turned or saturation scaled in HSV space (TensorFlow's adjust_hue /
    adjust_saturation) are near-duplicates, read on the images' HSV value; without that second channel some are
    missed; distinct crops are not flagged either way."""
    import cv2

    from splitaudit.neighbors import verify

    def hsv(img: np.ndarray, hue: float, sat: float) -> np.ndarray:
        x = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)
        x[..., 0] = (x[..., 0] + hue) % 360
        x[..., 1] = np.clip(x[..., 1] * sat, 0, 1)
        return np.clip(np.round(255 * cv2.cvtColor(x, cv2.COLOR_HSV2RGB)), 0, 255).astype(np.uint8)

    tiles = _tiny_windows(photos, 1)
    small = _small
    train = np.stack([small(*t) for t in tiles[:60]])
    sources = [3, 17, 29, 41, 55, 8]
    # (hue turn, saturation scale) of each copy. Not here: a stronger desaturation of the fourth tile (x0.3 or x0.5)
    # scores 0.70-0.74 on the luma, under VALUE_FROM, is never read on its value and is missed (docs/copies.md)
    edits = [(35, 1.0), (-30, 1.0), (0, 1.8), (0, 0.7), (30, 1.5), (-40, 0.6)]
    copies = [hsv(small(*tiles[i], s=3 * (k % 2)), *e) for k, (i, e) in enumerate(zip(sources, edits))]
    val = np.stack(copies + [small(*t) for t in tiles[60:]])

    def found() -> dict[int, int]:
        report = splitaudit.audit(train, val, backbone="none", select=("near-duplicates",), cache=False)
        return {int(f.images[1].path[2:-1]): int(f.images[0].path[2:-1]) for f in report.by_check("near-duplicates")}

    both = found()
    assert both == dict(enumerate(sources)), both
    monkeypatch.setattr(verify, "VALUE_FROM", 2.0)  # no pair reaches it: the luma alone
    luma = found()
    assert set(luma) <= set(both) and len(luma) < len(both), luma


def test_copies_saved_as_jpeg_at_32_px_are_found_through_the_api(photos: dict[str, np.ndarray],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """32-px colour arrays: copies re-graded and saved as JPEG at quality 30 at that size (half of them also shifted
    by 3 px) lose the fine band the registration score reads, and their levels moved: scored in a coarser band where
    the JPEG's block grid shows, they are near-duplicates; without that reading some are missed; nothing but
    copies is flagged either way."""
    import io

    from splitaudit.neighbors import verify

    def saved(img: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.round(0.8 * img.astype(np.float32) + 30), 0, 255).astype(np.uint8)).save(
            buf, "JPEG", quality=30)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    sources = [3, 17, 29, 41, 55, 8, 22, 47, 12, 35, 50, 26]
    gained = 0
    for seed in (3, 4, 5):
        tiles = _tiny_windows(photos, seed)
        train = np.stack([_small(*t) for t in tiles[:60]])
        val = np.stack([saved(_small(*tiles[i], s=3 * (k % 2))) for k, i in enumerate(sources)]
                       + [_small(*t) for t in tiles[60:]])

        def found() -> dict[int, int]:
            report = splitaudit.audit(train, val, backbone="none", select=("near-duplicates",), cache=False)
            return {int(f.images[1].path[2:-1]): int(f.images[0].path[2:-1])
                    for f in report.by_check("near-duplicates")}

        def same_shot(b: int, a: int) -> bool:  # its own tile, or a window of the same photo a few px from it
            (p, x, y), (q, u, v) = tiles[sources[b]], tiles[a]
            return p is q and abs(x - u) <= 8 and abs(y - v) <= 8

        matched = found()
        assert all(b < len(sources) and same_shot(b, a) for b, a in matched.items()), (seed, matched)
        monkeypatch.setattr(verify, "JPEG_FROM", 2.0)  # no pair reaches it: the usual band alone
        usual = found()
        monkeypatch.undo()
        assert set(usual) <= set(matched), (seed, usual, matched)
        gained += len(matched) - len(usual)
    assert gained >= 2, gained  # measured: 6 -> 8, 7 -> 9 and 9 -> 9 of the 12


def test_letterboxed_copies_saved_as_jpeg_are_found_in_a_users_folders(photos: dict[str, np.ndarray], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders as a user has them: 32-px training tiles as PNG, and letterboxed copies (3 black rows top and bottom,
    some shifted by 1-2 px) saved as JPEG at quality 60-71 among distinct tiles saved as JPEG. The bars' rows are
    noisy after JPEG; found as bars, the copies register against the right box. Only copies are flagged, with or
    without the bars' rule."""
    from splitaudit.neighbors import register

    sources = [3, 17, 29, 41, 55, 8, 22, 47, 12, 35, 50, 26]
    totals = {"bars": 0, "without": 0}
    for seed in (3, 4, 5):
        tiles = _tiny_windows(photos, seed)
        train, val = tmp_path / f"{seed}" / "train", tmp_path / f"{seed}" / "val"
        train.mkdir(parents=True)
        val.mkdir()
        for i, t in enumerate(tiles[:60]):
            Image.fromarray(_small(*t)).save(train / f"{i:03d}.png")
        for k, i in enumerate(sources):
            boxed = _small(*tiles[i], s=k % 3).copy()
            boxed[:3], boxed[29:] = 0, 0
            Image.fromarray(boxed).save(val / f"c{k:03d}.jpg", quality=60 + k)
        for j, t in enumerate(tiles[60:]):
            Image.fromarray(_small(*t)).save(val / f"d{j:03d}.jpg", quality=85)

        def found() -> set[str]:
            report = splitaudit.audit(train, val, backbone="none", select=("near-duplicates",), cache=False)
            pairs = {Path(f.images[1].path).name: Path(f.images[0].path).name for f in report.by_check("near-duplicates")}
            assert all(v.startswith("c") and int(t[:3]) == sources[int(v[1:4])] for v, t in pairs.items()), pairs
            return set(pairs)

        with_bars = found()
        monkeypatch.setattr(register, "BAR_SHARE", 2.0)  # no content line reaches it: the bars' rule off
        without = found()
        monkeypatch.undo()
        assert without <= with_bars, (seed, without, with_bars)
        totals["bars"] += len(with_bars)
        totals["without"] += len(without)
    # measured: 6, 9, 7 of 12 against 4, 5, 4
    assert totals["bars"] >= totals["without"] + 5, totals
