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


def test_a_shuffled_manifest_still_has_train_as_its_training_split(clean: Planted) -> None:
    # rows in any order (a manifest written from a shuffled table): the split named train is the one the others are
    # compared with, not the split of the first row; the other splits keep their order of appearance
    from splitaudit.scan.manifest import read_manifest

    train = sorted(clean.split("train").rglob("*.jpg"))
    val = sorted(clean.split("val").rglob("*.jpg"))
    rel = lambda p: p.relative_to(clean.root).as_posix()  # noqa: E731
    rows = [f"{rel(val[0])},{val[0].parent.name},val", f"{rel(train[0])},{train[0].parent.name},Test"]
    rows += [f"{rel(p)},{p.parent.name},TRAIN" for p in train] + [f"{rel(p)},{p.parent.name},val" for p in val[1:]]
    manifest = clean.root / "shuffled.csv"
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    specs, records = read_manifest(manifest)
    assert [s.name for s in specs] == ["TRAIN", "val", "Test"]
    assert [r.split for r in records] == ["TRAIN"] * len(train) + ["val"] * len(val) + ["Test"]
    report = splitaudit.audit(manifest=manifest, backbone="none", select=("exact-duplicates",))
    leak = {s.name: s.leak_fraction for s in report.splits}
    assert leak["TRAIN"] == 0 and leak["Test"] == 1.0  # the test image is a training file listed again
    (finding,) = report.by_check("exact-duplicates")
    assert [i.split for i in finding.images] == ["TRAIN", "Test"]


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


def test_records_are_held_as_columns_and_read_back_as_given() -> None:
    # a data set's records are columns (RecordTable): every record reads back equal to the one given, by index,
    # slice and iteration; one that does not fit the columns (a path not ending with its relative path, an integer
    # beyond 64 bits, an unhashable label) is kept as it is
    import pickle
    import tracemalloc

    from splitaudit.scan.records import Dataset, ImageRecord, RecordTable, SplitSpec

    given = (
        ImageRecord("train", "cat/1.jpg", "/data/train/cat/1.jpg", "cat", None, 1234, 1_700_000_000_123_456_789, 42,
                    1_700_000_000_123_456_790),
        ImageRecord("train", "caf\u00e9/\udcff.png", "/data/train/caf\u00e9/\udcff.png", "caf\u00e9", "g1"),  # undecodable name
        ImageRecord("val", "x[3]", None, "7", None, array_index=3),
        ImageRecord("val", "a.jpg", "/elsewhere/b.jpg", None, "g1", 10),
        ImageRecord("val", "b.jpg", "/v/b.jpg", None, None, 10, inode=2**64 - 1),
        ImageRecord("val", "c.jpg", "/v/c.jpg", ["unhashable"], None),  # type: ignore[arg-type]
        ImageRecord("val", "", "/v/", None, None),
    )
    table = RecordTable(given)
    assert len(table) == len(given) and list(table) == list(given) and table == given and given == table
    assert [table[i] for i in range(-len(given), len(given))] == list(given) * 2
    assert table[1:5] == given[1:5] and table[::-2] == given[::-2]
    assert table[5] is given[5] and table[3] is given[3] and table[4] is given[4]  # kept as they are
    with pytest.raises(IndexError):
        table[len(given)]
    assert pickle.loads(pickle.dumps(table)) == table and table != given[:-1] and table != list(given)
    ds = Dataset((SplitSpec("train", "/data/train"), SplitSpec("val", "/v")), given)
    assert isinstance(ds.records, RecordTable) and ds == Dataset(ds.splits, table)
    assert hash(Dataset(ds.splits, given[:5])) == hash(Dataset(ds.splits, RecordTable(given[:5])))
    assert len(ds) == len(given) and RecordTable() == ()

    many = [ImageRecord("train" if i % 10 else "val", f"images/{i // 1000:05d}/{i:07d}.jpg",
                        f"/tmp/sa-scale/images/{i // 1000:05d}/{i:07d}.jpg", str(i % 8), None, 1000 + i,
                        1_796_409_369_791_210_410 + i, 2_000_000 + i, 1_796_409_369_791_210_410 + i) for i in range(20_000)]
    tracemalloc.start()
    try:
        held = RecordTable(many)
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size / len(many) < 120, size / len(many)  # ~90 bytes a record (as objects: ~420)
    assert held == tuple(many)
