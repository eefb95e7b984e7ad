"""Planted leaks of each kind in real photos are found, with the right evidence; distinct photos are not paired."""

from __future__ import annotations

import splitaudit
from splitaudit import Severity

from conftest import Planted, tree_state


def _pairs(report: splitaudit.AuditReport, checks: tuple[str, ...] = ("exact-duplicates", "pixel-duplicates", "near-duplicates")) -> dict[tuple[str, str, str], splitaudit.Finding]:
    out = {}
    for f in report.findings:
        if f.check in checks:
            first, second = f.images
            assert first.split == "train", f.message
            out[(first.path, second.split, second.path)] = f
    return out


def test_every_planted_leak_is_found_by_the_right_check(planted: Planted) -> None:
    report = splitaudit.audit(*planted.splits, backbone="none")
    pairs = _pairs(report)
    expected = {(a, s, b): check for a, s, b, check in planted.leaks}
    assert {k: f.check for k, f in pairs.items()} == expected
    assert report.failed


def test_evidence_names_stage_and_distance(planted: Planted) -> None:
    pairs = _pairs(splitaudit.audit(*planted.splits, backbone="none"))
    exact = pairs[("temple/temple_00.jpg", "val", "temple/copy_exact.jpg")]
    assert exact.category == "exact"
    assert {e.stage for e in exact.evidence} == {"bytes", "pixels", "phash", "dhash"}
    assert all(e.distance == 0 for e in exact.evidence)

    comment = pairs[("flower/flower_01.jpg", "val", "flower/copy_comment.jpg")]
    assert comment.category == "identical-pixels"
    assert "bytes" not in {e.stage for e in comment.evidence} and "pixels" in {e.stage for e in comment.evidence}

    mirrored = pairs[("cat/cat_05.jpg", "val", "cat/copy_mirrored.jpg")]
    ph = next(e for e in mirrored.evidence if e.stage == "phash")
    assert ph.flipped and ph.distance <= 2

    q40 = pairs[("coffee/coffee_03.jpg", "val", "coffee/copy_q40.jpg")]
    assert q40.category == "near-duplicate"
    dists = {e.stage: e.distance for e in q40.evidence}
    assert 0 < dists["phash"] + dists["dhash"] and dists["phash"] <= 10
    assert q40.images[0].label == "coffee" and q40.images[1].label == "coffee"


def test_clean_split_of_distinct_photos_has_no_pair_findings(clean: Planted) -> None:
    report = splitaudit.audit(*clean.splits, backbone="none")
    # Look-alike tiles may be shown for review (similar-images warnings: the copy verifier's uncertain band), but no
    # pair is a copy.
    assert [f for f in report.findings if f.check not in ("class-balance", "similar-images")] == []
    assert all(f.severity == Severity.WARNING for f in report.by_check("similar-images"))
    assert not report.failed
    assert [s.images for s in report.splits] == [40, 8, 8]


def test_audit_never_modifies_the_dataset(planted: Planted) -> None:
    before = tree_state(planted.root)
    splitaudit.audit(*planted.splits, backbone="none")
    assert tree_state(planted.root) == before


def test_leak_fraction_and_tolerance(planted: Planted) -> None:
    report = splitaudit.audit(*planted.splits, backbone="none")
    val = next(s for s in report.splits if s.name == "val")
    # val: 8 clean + exact, comment, q40, mirrored copies = 4 leaked of 12
    assert val.images == 12 and abs(val.leak_fraction - 4 / 12) < 1e-9
    tolerant = splitaudit.audit(*planted.splits, max_leak_fraction=0.5, backbone="none")
    assert not tolerant.failed and tolerant.verdict.tolerated == len(_pairs(report))
    strict = splitaudit.audit(*planted.splits, max_leak_fraction=0.2, backbone="none")
    assert strict.failed


def test_within_split_duplicates_and_label_conflicts(planted: Planted) -> None:
    from conftest import save

    train = planted.split("train")
    save(train / "temple" / "again.jpg", (train / "temple" / "temple_07.jpg").read_bytes())
    save(train / "cat" / "wrong_label.jpg", (train / "temple" / "temple_08.jpg").read_bytes())
    report = splitaudit.audit(*planted.splits, backbone="none")
    groups = report.by_check("within-split-duplicates")
    assert sorted(tuple(i.path for i in g.images) for g in groups) == [
        ("cat/wrong_label.jpg", "temple/temple_08.jpg"),
        ("temple/again.jpg", "temple/temple_07.jpg"),
    ]
    assert all(g.severity == Severity.WARNING for g in groups)
    conflicts = report.by_check("label-conflicts")
    assert len(conflicts) == 1
    assert conflicts[0].data["labels"] == {"cat": 1, "temple": 1}
    assert conflicts[0].severity == Severity.WARNING  # within one split; across splits it is an error


def test_arrays_like_keras_datasets(photos: dict) -> None:
    import numpy as np

    from conftest import tiles_of

    tiles = [np.asarray(t) for t in tiles_of(photos["astronaut"], 32, 40, step=40)]
    x_train = np.stack(tiles[:30])
    y_train = np.arange(30) % 3
    x_val = np.stack([tiles[30], tiles[31], tiles[3], tiles[5][:, ::-1]]).astype(np.float32) / 255.0
    y_val = np.array([0, 1, 0, 1])  # the mirrored copy of train x[5] (label 2) is labelled 1
    report = splitaudit.audit((x_train, y_train), (x_val, y_val), backbone="none")
    found = {(f.images[0].path, f.images[1].path, f.check) for f in report.findings if f.check.endswith("duplicates")}
    # float32 / 255 round-trips to the same uint8 rows, so x[3] -> val x[2] is an exact copy of the array data
    assert found == {("x[3]", "x[2]", "exact-duplicates"), ("x[5]", "x[3]", "near-duplicates")}
    conflict = report.by_check("label-conflicts")
    assert [tuple((i.split, i.path) for i in c.images) for c in conflict] == [(("train", "x[5]"), ("val", "x[3]"))]
