"""Scanning: Keras layout and flat folders, content sniffing, determinism, symlink loops, manifests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import splitaudit
from splitaudit.scan import scan

from conftest import Planted, save, tiles_of


def test_keras_layout_labels_and_deterministic_order(clean: Planted) -> None:
    ds = scan([clean.split("train"), clean.split("val")])
    assert ds.split_names == ("train", "val")
    train = [r for r in ds.records if r.split == "train"]
    assert [r.relpath for r in train] == sorted(r.relpath for r in train)
    assert {r.label for r in train} == {"cat", "coffee", "flower", "temple"}
    assert all(r.label == r.relpath.split("/")[0] for r in ds.records)
    assert scan([clean.split("train"), clean.split("val")]) == ds


def test_flat_folders_have_no_labels(tmp_path: Path, photos: dict) -> None:
    tiles = tiles_of(photos["coffee"], 64, 6)
    for i, t in enumerate(tiles[:4]):
        save(tmp_path / "a" / f"{i}.jpg", t)
    for i, t in enumerate(tiles[4:]):
        save(tmp_path / "b" / f"{i}.jpg", t)
    report = splitaudit.audit(tmp_path / "a", tmp_path / "b", backbone="none")
    assert all(s.classes == () for s in report.splits)
    assert report.findings == ()


def test_images_recognised_by_content_not_extension(tmp_path: Path, photos: dict) -> None:
    t = tiles_of(photos["china"], 64, 2)
    save(tmp_path / "train" / "x" / "photo.dat", t[0], "PNG")  # a PNG under an odd name is still an image
    save(tmp_path / "train" / "x" / "README.txt", b"not an image")  # skipped quietly
    save(tmp_path / "train" / ".hidden.jpg", b"ignored")  # hidden files are not scanned
    save(tmp_path / "val" / "x" / "ok.jpg", t[1])
    report = splitaudit.audit(tmp_path / "train", tmp_path / "val", backbone="none")
    train = report.splits[0]
    assert (train.files, train.images, train.skipped, train.unreadable) == (2, 1, 1, 0)
    assert report.findings == ()


def test_symlink_loop_terminates_without_double_counting(clean: Planted) -> None:
    loop = clean.split("train") / "cat" / "loop"
    os.symlink("..", loop)
    report = splitaudit.audit(*clean.splits, backbone="none")
    assert report.splits[0].images == 40
    assert [f.data.get("status") for f in report.by_check("unreadable-images")] == ["scan"]


def test_split_names_must_be_unique(tmp_path: Path, clean: Planted) -> None:
    other = tmp_path / "other" / "train"
    other.mkdir(parents=True)
    with pytest.raises(splitaudit.SplitauditError, match="two splits are named 'train'"):
        splitaudit.audit(clean.split("train"), other, backbone="none")


def test_manifest_with_groups(clean: Planted, tmp_path: Path) -> None:
    rows = ["path,label,split,group"]
    for split in ("train", "val"):
        for p in sorted(clean.split(split).rglob("*.jpg")):
            rel = p.relative_to(clean.root).as_posix()
            group = "patient7" if p.name in ("cat_00.jpg", "cat_v0.jpg") else p.stem
            rows.append(f"{rel},{p.parent.name},{split},{group}")
    manifest = clean.root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    report = splitaudit.audit(manifest=manifest, backbone="none")
    assert [s.name for s in report.splits] == ["train", "val"]
    leaks = report.by_check("group-leakage")
    assert len(leaks) == 1 and leaks[0].data["group"] == "patient7"
    assert leaks[0].data["counts"] == {"train": 1, "val": 1}


def test_manifest_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("path,split\na.jpg,train\n")
    with pytest.raises(splitaudit.SplitauditError, match="lacks column"):
        splitaudit.audit(manifest=m, backbone="none")


def test_group_by_regex_on_relative_paths(clean: Planted) -> None:
    # "cat_00.jpg" in train and "cat_v0.jpg" in val share the capture "cat_" + first digit/letter... make a real group
    report = splitaudit.audit(*clean.splits, group_by=r"^(cat)/", backbone="none")
    leaks = report.by_check("group-leakage")
    assert len(leaks) == 1 and leaks[0].data["counts"] == {"train": 10, "val": 2, "test": 2}
    with pytest.raises(splitaudit.InvalidParameterError, match="'group_by' parameter must be a valid regular expression"):
        splitaudit.audit(*clean.splits, group_by="(unclosed", backbone="none")
