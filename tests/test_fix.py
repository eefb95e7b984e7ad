"""`splitaudit fix`: a leak-free split plan, applied to a copy, passes `splitaudit check` with class proportions kept.

Stated tolerance (docs/fix.md): moves change the training split's class shares by at most ``tolerance`` (default
0.02, absolute per class); an evaluation split's shares change by at most the share of its images the plan removes
(removing k of n images cannot move any class share by more than k/n).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import splitaudit
from splitaudit.cli import main
from splitaudit.errors import InvalidParameterError, SplitauditError
from splitaudit.fix import apply_plan, build_plan, deviation, plan_fix
from splitaudit.report.model import AuditReport, Finding, ImageRef, Severity, SplitSummary, Verdict
from splitaudit.scan import Dataset, ImageRecord, SplitSpec

from conftest import Planted, save, tiles_of, tree_state

CLASSES = {"temple": "china", "flower": "flower", "cat": "chelsea", "coffee": "coffee"}
GROUP_BY = r"^[^/]+/([a-z]+\d+)_"  # 'coffee/trcoffee07_b.jpg' belongs to group 'trcoffee07'
TOLERANCE = 0.02


def build_leaky(root: Path, photos: dict[str, np.ndarray]) -> dict[str, str]:
    """20/6/6 48-px tiles per class (each file its own group), then planted leaks; returns eval path -> kind."""
    spare: dict[str, list[Image.Image]] = {}
    for cls, photo in CLASSES.items():
        tiles = tiles_of(photos[photo], 48, 40, step=52)
        assert len(tiles) >= 38, photo
        for i, t in enumerate(tiles[:20]):
            save(root / "train" / cls / f"tr{cls}{i:02d}_a.jpg", t)
        for i, t in enumerate(tiles[20:26]):
            save(root / "val" / cls / f"va{cls}{i:02d}_a.jpg", t)
        for i, t in enumerate(tiles[26:32]):
            save(root / "test" / cls / f"te{cls}{i:02d}_a.jpg", t)
        spare[cls] = tiles[32:]
    tr = lambda cls, i: root / "train" / cls / f"tr{cls}{i:02d}_a.jpg"  # noqa: E731
    save(root / "val" / "temple" / "copy_exact.jpg", tr("temple", 1).read_bytes())
    save(root / "test" / "cat" / "copy_exact.jpg", tr("cat", 2).read_bytes())
    save(root / "val" / "cat" / "copy_mirrored.jpg", Image.open(tr("cat", 5)).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    save(root / "test" / "coffee" / "copy_resized.jpg", Image.open(tr("coffee", 4)).resize((40, 40), Image.Resampling.LANCZOS))
    save(root / "val" / "flower" / "conflict.jpg", tr("cat", 6).read_bytes())  # a cat photo filed as a flower
    planted = {"val/temple/copy_exact.jpg": "exact", "test/cat/copy_exact.jpg": "exact", "val/cat/copy_mirrored.jpg": "near",
               "test/coffee/copy_resized.jpg": "near", "val/flower/conflict.jpg": "conflict"}
    # Three training groups (patients, sessions) with two new, different photos each in val.
    for g, (a, b) in zip((7, 8, 9), ((0, 1), (2, 3), (4, 5))):
        for suffix, tile in (("b", spare["coffee"][a]), ("c", spare["coffee"][b])):
            save(root / "val" / "coffee" / f"trcoffee{g:02d}_{suffix}.jpg", tile)
            planted[f"val/coffee/trcoffee{g:02d}_{suffix}.jpg"] = "group"
    return planted


@pytest.fixture
def leaky(tmp_path: Path, photos: dict[str, np.ndarray]) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "data"
    return root, build_leaky(root, photos)


def _splits(root: Path) -> list[Path]:
    return [root / "train", root / "val", root / "test"]


def _classes(report: AuditReport) -> dict[str, dict[str, int]]:
    return {s.name: dict(s.classes) for s in report.splits}


def test_plan_applied_to_a_copy_passes_check_and_keeps_class_proportions(leaky: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, planted = leaky
    before = splitaudit.audit(*_splits(root), backbone="none", group_by=GROUP_BY)
    assert before.failed
    original = tree_state(root)

    plan = plan_fix(*_splits(root), backbone="none", group_by=GROUP_BY, tolerance=TOLERANCE)
    changed = {f"{f.split}/{f.path}": f for f in plan.changes}
    assert set(changed) == set(planted)  # every planted leak leaves its split, and nothing else does
    for path, kind in planted.items():
        f = changed[path]
        if kind in ("exact", "conflict"):  # identical copies and mislabelled copies are dropped
            assert f.action == "drop" and f.to_split is None, f
        else:
            assert f.action in ("move", "drop"), f
        if f.action == "move":
            assert f.to_split == "train" and f.to_path == f.path
    assert "label" in changed["val/flower/conflict.jpg"].reason
    assert changed["val/cat/copy_mirrored.jpg"].action == "move"
    for g in (7, 8, 9):  # a group moves or is dropped as a whole
        assert changed[f"val/coffee/trcoffee{g:02d}_b.jpg"].action == changed[f"val/coffee/trcoffee{g:02d}_c.jpg"].action
    actions = {changed[f"val/coffee/trcoffee{g:02d}_b.jpg"].action for g in (7, 8, 9)}
    assert actions == {"move", "drop"}  # the tolerance let one group move and made the others drop

    applied = apply_plan(plan, to=tmp_path / "fixed")
    fixed = Path(applied.target)
    assert tree_state(root) == original  # the originals were only read
    assert main(["check", "--backbone", "none", "--group-by", GROUP_BY, *map(str, _splits(fixed)), "--quiet"]) == 0
    after = splitaudit.audit(*_splits(fixed), backbone="none", group_by=GROUP_BY)
    assert not [f for f in after.findings if f.severity >= Severity.ERROR]

    # The plan predicted the fixed tree's class counts exactly, and the stated tolerance holds on the real tree.
    assert _classes(after) == {s.split: dict(s.after) for s in plan.shifts}
    old, new = _classes(before), _classes(after)
    assert deviation(new["train"], old["train"]) <= TOLERANCE
    for split in ("val", "test"):
        removed = sum(1 for f in plan.changes if f.split == split)
        n = sum(old[split].values())
        assert deviation(new[split], old[split]) <= removed / n + 1e-9
        assert abs(deviation(new[split], old[split]) - plan.shifts[["train", "val", "test"].index(split)].deviation) < 1e-9
    assert applied.copied == sum(before_split.files for before_split in before.splits) - plan.dropped
    moved = fixed / "train" / "cat" / "copy_mirrored.jpg"
    src = root / "val" / "cat" / "copy_mirrored.jpg"
    assert moved.read_bytes() == src.read_bytes() and moved.stat().st_ino != src.stat().st_ino
    assert moved.stat().st_mtime_ns == src.stat().st_mtime_ns  # copy2 keeps timestamps


def test_prefer_drop_leaves_training_split_untouched(leaky: tuple[Path, dict[str, str]]) -> None:
    root, planted = leaky
    plan = plan_fix(*_splits(root), backbone="none", group_by=GROUP_BY, prefer="drop")
    assert plan.moved == 0 and plan.dropped == len(planted)
    assert plan.shifts[0].deviation == 0.0 and plan.shifts[0].before == plan.shifts[0].after


def test_cli_writes_plan_csv_and_a_manifest_that_checks_clean(leaky: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, planted = leaky
    out, manifest = tmp_path / "plan.csv", tmp_path / "plans" / "new.csv"
    manifest.parent.mkdir()
    r = subprocess.run([sys.executable, "-m", "splitaudit", "fix", *map(str, _splits(root)), "--backbone", "none", "--group-by", GROUP_BY,
                        "--output", str(out), "--write-manifest", str(manifest)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("8 leaked component(s)") and "drop val/temple/copy_exact.jpg" in r.stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["action", "split", "path", "label", "to_split", "to_path", "component", "reason"]
    assert {f"{row['split']}/{row['path']}" for row in rows} == set(planted)
    assert not (tmp_path / "fixed").exists()  # nothing applied without --apply
    # The manifest points at the original files with their new splits: auditable without copying anything.
    lines = manifest.read_text().splitlines()
    assert lines[0] == "path,label,split,group" and any(line.startswith("../data/val/cat/copy_mirrored.jpg,cat,train,") for line in lines)
    assert main(["check", "--backbone", "none", "--manifest", str(manifest), "--quiet"]) == 0


def test_cli_apply_copies_into_a_new_tree(planted: Planted, tmp_path: Path) -> None:
    target = tmp_path / "fixed"
    r = subprocess.run([sys.executable, "-m", "splitaudit", "fix", *map(str, planted.splits), "--backbone", "none", "--apply", "--to", str(target)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"into {target}" in r.stdout
    assert main(["check", "--backbone", "none", *(str(target / s) for s in ("train", "val", "test")), "--quiet"]) == 0
    assert (target / "manifest.csv").read_text().startswith("path,label,split\n")
    for args in (["--apply"], ["--to", str(tmp_path / "other")]):
        r = subprocess.run([sys.executable, "-m", "splitaudit", "fix", *map(str, planted.splits), "--backbone", "none", *args],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--apply and --to DIR go together" in r.stderr


def test_apply_refuses_to_touch_the_sources_or_a_non_empty_target(planted: Planted, tmp_path: Path) -> None:
    plan = plan_fix(*planted.splits, backbone="none")
    state = tree_state(planted.root)
    with pytest.raises(SplitauditError, match="overlaps the source split folder"):
        apply_plan(plan, to=planted.split("val") / "fixed")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(SplitauditError, match="is not an empty folder"):
        apply_plan(plan, to=busy)
    assert (busy / "keep.txt").read_text() == "mine"
    # A source edited after the plan: refuse rather than copy something the plan never saw.
    victim = planted.split("train") / "cat" / "cat_00.jpg"
    save(victim, Image.open(victim).rotate(90))
    state = tree_state(planted.root)
    with pytest.raises(SplitauditError, match="changed since the plan was made"):
        apply_plan(plan, to=tmp_path / "fixed")
    assert not (tmp_path / "fixed").exists() and not [p for p in tmp_path.iterdir() if "splitaudit-fix" in p.name]
    assert tree_state(planted.root) == state
    empty = tmp_path / "empty"
    empty.mkdir()
    plan = plan_fix(*planted.splits, backbone="none")
    assert apply_plan(plan, to=empty).copied == 60  # an existing empty folder is fine


def test_manifest_input_plan_and_apply(planted: Planted, tmp_path: Path) -> None:
    rows = ["path,label,split"]
    for split in ("train", "val", "test"):
        for p in sorted((planted.root / split).rglob("*.*")):
            rows.append(f"{p.relative_to(planted.root).as_posix()},{p.parent.name},{split}")
    manifest = planted.root / "data.csv"
    manifest.write_text("\n".join(rows) + "\n")
    plan = plan_fix(manifest=manifest, backbone="none")
    assert plan.kinds == ("manifest",) * 3 and plan.dropped + plan.moved == 8
    applied = apply_plan(plan, to=planted.root / "fixed")  # beside the manifest: allowed, the manifest lists files
    assert (Path(applied.target) / "val" / "val" / "temple" / "temple_v0.jpg").is_file()  # <split>/<manifest path>
    assert main(["check", "--backbone", "none", "--manifest", applied.manifest, "--quiet"]) == 0


def test_arrays_get_a_plan_but_no_files(photos: dict[str, np.ndarray]) -> None:
    tiles = [np.asarray(t) for t in tiles_of(photos["coffee"], 32, 12)]
    x_train, y_train = np.stack(tiles[:10]), np.arange(10) % 2
    x_val, y_val = np.stack([tiles[3], tiles[10], tiles[11]]), np.array([1, 0, 1])
    plan = plan_fix((x_train, y_train), (x_val, y_val), backbone="none")
    assert [(f.action, f.split, f.path) for f in plan.changes] == [("drop", "val", "x[0]")]
    with pytest.raises(SplitauditError, match="in-memory arrays have no files"):
        apply_plan(plan, to="unused")
    with pytest.raises(SplitauditError, match="in-memory arrays have no files"):
        plan.to_manifest()


# -- the rule on small hand-made inputs ----------------------------------------------------------------------------


def _dataset(files: dict[str, list[tuple[str, str]]]) -> Dataset:
    specs = tuple(SplitSpec(s, f"/nowhere/{s}") for s in files)
    records = tuple(ImageRecord(s, p, f"/nowhere/{s}/{p}", label) for s, items in files.items() for p, label in items)
    return Dataset(specs, records)


def _report(ds: Dataset, findings: list[Finding]) -> AuditReport:
    from collections import Counter

    splits = tuple(SplitSummary(s.name, s.root, n, n, 0, 0, tuple(sorted(Counter(r.label for r in ds.records if r.split == s.name).items())))
                   for s in ds.splits for n in [sum(1 for r in ds.records if r.split == s.name)])
    return AuditReport(splits, tuple(findings), Verdict(True, Severity.ERROR, (), ""))


def _pair(check: str, a: tuple[str, str, str], b: tuple[str, str, str], category: str = "near-duplicate") -> Finding:
    return Finding(check, Severity.ERROR if a[0] != b[0] else Severity.WARNING, "", (ImageRef(*a), ImageRef(*b)), category)


def test_components_follow_within_split_links_and_find_their_home() -> None:
    ds = _dataset({"train": [(f"a/{i}.jpg", "a") for i in range(40)] + [(f"b/{i}.jpg", "b") for i in range(40)],
                   "val": [("a/x.jpg", "a"), ("a/y.jpg", "a"), ("b/0.jpg", "b"), ("b/z.jpg", "b")],
                   "test": [("b/w.jpg", "b"), ("a/t.jpg", "a")]})
    findings = [
        _pair("near-duplicates", ("train", "a/1.jpg", "a"), ("val", "a/x.jpg", "a")),
        _pair("within-split-duplicates", ("val", "a/x.jpg", "a"), ("val", "a/y.jpg", "a")),  # y only copies x
        _pair("near-duplicates", ("val", "b/z.jpg", "b"), ("test", "b/w.jpg", "b")),  # no training member
        _pair("near-duplicates", ("train", "b/0.jpg", "b"), ("val", "b/0.jpg", "b")),  # same name in train
    ]
    plan = build_plan(ds, _report(ds, findings), tolerance=0.05)
    got = {(f.split, f.path): (f.action, f.to_split, f.to_path) for f in plan.changes}
    assert got == {
        ("val", "a/x.jpg"): ("move", "train", "a/x.jpg"),
        ("val", "a/y.jpg"): ("move", "train", "a/y.jpg"),  # follows x: left in val it would copy a training image
        ("test", "b/w.jpg"): ("move", "val", "b/w.jpg"),  # home is the earliest split the component reaches
        ("val", "b/0.jpg"): ("move", "train", "b/0__from-val.jpg"),  # renamed: train/b/0.jpg exists
    }
    assert plan.components == 3
    assert deviation(dict(plan.shifts[0].after), dict(plan.shifts[0].before)) == pytest.approx(plan.shifts[0].deviation)


def test_tolerance_decides_move_or_drop_greedily() -> None:
    ds = _dataset({"train": [(f"a/{i}.jpg", "a") for i in range(10)] + [(f"b/{i}.jpg", "b") for i in range(10)],
                   "val": [(f"a/v{i}.jpg", "a") for i in range(4)]})
    findings = [_pair("near-duplicates", ("train", f"a/{i}.jpg", "a"), ("val", f"a/v{i}.jpg", "a")) for i in range(4)]
    report = _report(ds, findings)
    # One more 'a' in train: 11/21 vs 10/20 is a 2.4-point shift; two more: 4.5 points.
    assert build_plan(ds, report, tolerance=0.03).moved == 1
    assert build_plan(ds, report, tolerance=0.05).moved == 2
    assert build_plan(ds, report, tolerance=0.2).moved == 4
    assert build_plan(ds, report, tolerance=0.0).moved == 0
    with pytest.raises(InvalidParameterError, match="The 'tolerance' parameter must be a float in \\[0, 1\\]. Got 2 instead."):
        build_plan(ds, report, tolerance=2)
    with pytest.raises(InvalidParameterError, match="The 'prefer' parameter must be one of"):
        build_plan(ds, report, prefer="shuffle")


def test_plan_fix_rejects_options_that_would_hide_leaks(planted: Planted) -> None:
    with pytest.raises(InvalidParameterError, match="'ignore' parameter"):
        plan_fix(*planted.splits, backbone="none", ignore=["near-duplicates"])


def test_no_leaks_no_changes(clean: Planted, tmp_path: Path) -> None:
    plan = plan_fix(*clean.splits, backbone="none")
    assert plan.changes == () and plan.components == 0 and plan.max_deviation == 0.0
    assert plan.to_csv() == "action,split,path,label,to_split,to_path,component,reason\n"
    applied = apply_plan(plan, to=tmp_path / "copy")
    assert applied.copied == 56 and applied.dropped == 0  # 40 + 8 + 8
    assert sorted(os.listdir(applied.target)) == ["manifest.csv", "test", "train", "val"]


def test_unreadable_files_are_left_out_so_the_applied_copy_passes_check(planted: Planted, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import save

    val = planted.split("val")
    save(val / "temple" / "broken.jpg", (planted.split("train") / "temple" / "temple_09.jpg").read_bytes()[:400])  # truncated
    (val / "cat" / "empty.png").write_bytes(b"")
    plan = plan_fix(*planted.splits, backbone="none")
    excluded = {(f.split, f.path) for f in plan.files if f.action == "exclude"}
    assert excluded == {("val", "temple/broken.jpg"), ("val", "cat/empty.png")}
    assert all(f.reason.startswith("unreadable-images: ") for f in plan.files if f.action == "exclude")
    assert plan.excluded == 2 and "leave out 2 unreadable file(s)" in plan.summary()
    assert "exclude val/temple/broken.jpg  (unreadable-images: " in plan.summary()
    assert "exclude,val,temple/broken.jpg" in plan.to_csv()
    assert "broken.jpg" not in plan.to_manifest(tmp_path)

    target = tmp_path / "fixed"
    assert main(["fix", "--backbone", "none", *map(str, planted.splits), "--apply", "--to", str(target)]) == 0
    assert "2 unreadable left out" in capsys.readouterr().out
    assert not (target / "val" / "temple" / "broken.jpg").exists() and not (target / "val" / "cat" / "empty.png").exists()
    assert (val / "temple" / "broken.jpg").exists()  # the originals stay
    assert main(["check", "--backbone", "none", *(str(target / s) for s in ("train", "val", "test")), "--quiet"]) == 0
