"""The check registry: parameters come from signatures, are validated, a crashing check is an error, and every
check keeps the result contract on a real dataset."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

import splitaudit
from splitaudit.checks import AuditContext, registry
from splitaudit.checks.registry import Check, all_checks, register
from splitaudit.cli import main
from splitaudit.features import FeatureCache
from splitaudit.options import Options
from splitaudit.features.embeddings.backbones import DEFAULT_BACKBONE
from splitaudit.report import CheckResult, Finding, ImageRef, Severity
from splitaudit.report.model import _clean
from splitaudit.scan import scan

from conftest import Planted


def test_every_builtin_check_takes_ctx_and_keyword_only_params() -> None:
    checks = all_checks()
    assert set(checks) == {
        "class-balance", "exact-duplicates", "group-leakage", "label-conflicts", "near-duplicates",
        "pixel-duplicates", "similar-images", "unreadable-images", "within-split-duplicates",
        # the distribution audit (#4)
        "image-properties", "split-distinguishability", "difficulty", "separability", "leak-impact",
    }
    for check in checks.values():
        params = list(inspect.signature(check.func).parameters.values())
        assert params[0].name == "ctx"
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:]), check.name
        assert check.summary


DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
DEMO_SPLITS = [DEMO / "train", DEMO / "val", DEMO / "test"]


def _run_all(backbone: str, cache_dir: Path, order: list[Check]) -> dict[str, CheckResult]:
    """Every check in ``order`` on one fresh context over the demo dataset (real photos, planted copies, unreadable
    files, five classes), each with its default parameters."""
    dataset = scan([str(p) for p in DEMO_SPLITS])
    with FeatureCache(cache_dir) as store:
        ctx = AuditContext(dataset, Options(backbone=backbone), cache=store)
        return {c.name: c.run(ctx, {}) for c in order}


@pytest.fixture(scope="module", params=["none", DEFAULT_BACKBONE])
def demo_results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict[str, CheckResult]]:
    cache_dir = tmp_path_factory.mktemp("contract-cache")
    return request.param, cache_dir, _run_all(request.param, cache_dir, list(all_checks().values()))


def test_every_check_returns_a_frozen_result_of_its_own_findings_and_json_ready_tables(demo_results) -> None:  # type: ignore[no-untyped-def]
    backbone, _, results = demo_results
    assert set(results) == set(all_checks())
    for name, result in results.items():
        assert isinstance(result, CheckResult), name
        assert isinstance(result.findings, tuple) and isinstance(result.tables, Mapping), name
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.findings = ()  # type: ignore[misc]
        with pytest.raises(TypeError):
            result.tables["x"] = 1  # type: ignore[index]
        for f in result.findings:
            assert isinstance(f, Finding) and f.check == name and isinstance(f.severity, Severity) and not f.accepted, (name, f)
            assert all(isinstance(i, ImageRef) for i in f.images), (name, f)
            json.dumps(f.to_dict(), allow_nan=False)
        assert all(isinstance(k, str) for k in result.tables), name
        json.dumps(_clean(dict(result.tables)), allow_nan=False)
    sections = [s for r in results.values() for s in r.tables]
    assert len(sections) == len(set(sections))  # one owner per distribution section
    # The demo plants copies, unreadable files and five classes: these must be found, and with embeddings every
    # distribution check measures its table.
    found = {n for n, r in results.items() if r.findings}
    assert {"exact-duplicates", "pixel-duplicates", "near-duplicates", "unreadable-images"} <= found
    expected = {"classes", "properties", "distinguishability"}
    if backbone != "none":
        expected |= {"difficulty", "separability", "leak_impact"}
    assert set(sections) == expected


def test_check_results_do_not_depend_on_order_or_repetition(demo_results) -> None:  # type: ignore[no-untyped-def]
    """A check stores nothing another check reads: in reverse order, on a fresh context, every result is the same."""
    backbone, cache_dir, results = demo_results
    again = _run_all(backbone, cache_dir, list(reversed(all_checks().values())))
    for name, result in results.items():
        assert [f.to_dict() for f in again[name].findings] == [f.to_dict() for f in result.findings], name
        assert _clean(dict(again[name].tables)) == _clean(dict(result.tables)), name


def test_the_report_is_assembled_from_the_results(demo_results) -> None:  # type: ignore[no-untyped-def]
    backbone, cache_dir, results = demo_results
    report = splitaudit.audit(*DEMO_SPLITS, backbone=backbone, cache_dir=cache_dir)
    merged = {s: t for r in results.values() for s, t in r.tables.items()}
    assert report.to_dict()["distribution"] == _clean(dict(sorted(merged.items())))
    assert sorted(f.to_dict()["id"] for f in report.findings) == sorted(f.id for r in results.values() for f in r.findings)
    assert report.policy.leak_checks == frozenset(n for n, c in all_checks().items() if c.leak)


def test_check_options_are_validated_against_the_signature(planted: Planted) -> None:
    near = all_checks()["near-duplicates"]
    assert near.validate({"max-phash": 4}) == {**near.params, "max_phash": 4}
    assert near.params["max_phash"] == 6 and near.params["max_dhash"] == 12
    with pytest.raises(splitaudit.InvalidParameterError, match="has no parameter 'radius'"):
        near.validate({"radius": 3})
    with pytest.raises(splitaudit.InvalidParameterError, match="must be of type int. Got 2.5 instead"):
        near.validate({"max_phash": 2.5})


def test_tighter_radius_drops_farther_pairs(planted: Planted) -> None:
    # the hash radius alone decides here: the copy verifier is off
    loose = splitaudit.audit(*planted.splits, select=["near-duplicates"], backbone="none", verify=False)
    dist = sorted(next(e.distance for e in f.evidence if e.stage == "phash") for f in loose.findings)
    assert dist and dist[-1] > 0
    tight = splitaudit.audit(*planted.splits, select=["near-duplicates"], check_options={"near-duplicates": {"max_phash": int(dist[-1]) - 1}}, backbone="none", verify=False)
    assert len(tight.findings) == sum(d <= dist[-1] - 1 for d in dist) < len(loose.findings)


@pytest.fixture
def crashing_check(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(registry, "_REGISTRY", dict(all_checks()))

    @register("always-crashes", summary="a check with a bug")
    def always_crashes(ctx, *, factor: int = 2):  # type: ignore[no-untyped-def]
        return [1 / (factor - 2)]

    return "always-crashes"


def test_a_crashing_check_is_an_error_not_a_silent_skip(planted: Planted, crashing_check: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(splitaudit.CheckError, match="check 'always-crashes' failed: ZeroDivisionError"):
        splitaudit.audit(*planted.splits, select=[crashing_check], backbone="none")
    assert main(["check", "--backbone", "none", *map(str, planted.splits), "--select", crashing_check]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("splitaudit check:")]  # progress
    assert err == ["splitaudit: error: check 'always-crashes' failed: ZeroDivisionError: division by zero"]


def test_class_balance_finds_missing_and_extra_classes(clean: Planted) -> None:
    import shutil

    shutil.rmtree(clean.split("val") / "cat")
    extra = clean.split("test") / "dog"
    extra.mkdir()
    shutil.copy(clean.split("test") / "coffee" / "coffee_t0.jpg", extra / "x.jpg")
    (clean.split("test") / "coffee" / "coffee_t0.jpg").unlink()
    report = splitaudit.audit(*clean.splits, select=["class-balance"], backbone="none")
    kinds = {(f.data["split"], f.data["kind"]): f for f in report.findings}
    assert kinds[("val", "missing-in-eval")].data["classes"] == ["cat"]
    assert kinds[("test", "only-in-eval")].data["classes"] == ["dog"]
    assert kinds[("test", "only-in-eval")].severity == splitaudit.Severity.ERROR


def test_class_proportions_chi_square(tmp_path, photos) -> None:  # type: ignore[no-untyped-def]
    from conftest import save, tiles_of

    a = tiles_of(photos["hubble_deep_field"], 40, 150, step=44)
    b = tiles_of(photos["astronaut"], 40, 100, step=44)
    assert len(a) >= 120 and len(b) >= 90
    for i, t in enumerate(a[:60]):
        save(tmp_path / "train" / "space" / f"{i}.jpg", t)
    for i, t in enumerate(b[:60]):
        save(tmp_path / "train" / "person" / f"{i}.jpg", t)
    # val: 55 space vs 5 person, far from train's 50/50
    for i, t in enumerate(a[60:115]):
        save(tmp_path / "val" / "space" / f"{i}.jpg", t)
    for i, t in enumerate(b[60:65]):
        save(tmp_path / "val" / "person" / f"{i}.jpg", t)
    report = splitaudit.audit(tmp_path / "train", tmp_path / "val", select=["class-balance"], backbone="none")
    (finding,) = report.findings
    assert finding.data["kind"] == "proportions" and finding.data["p_value"] < 1e-6 and finding.data["cramers_v"] > 0.3


def test_every_check_declares_how_its_findings_are_shown(planted: Planted) -> None:
    checks = all_checks()
    assert {c.display for c in checks.values()} == set(registry.DISPLAYS)
    with pytest.raises(splitaudit.InvalidParameterError, match="'display' parameter of check 'x' must be one of"):
        register("x", summary="a check shown as a chart", display="chart")
    train = planted.split("train")
    (train / "cat" / "dup.jpg").write_bytes((train / "cat" / "cat_01.jpg").read_bytes())
    report = splitaudit.audit(*planted.splits, backbone="none")
    shown = {checks[f.check].display for f in report.findings}
    assert {"pair", "group"} <= shown
    for f in report.findings:  # what each kind promises the renderers
        kind = checks[f.check].display
        if kind == "pair":
            assert len(f.images) == 2 and f.images[0].split != f.images[1].split and f.evidence, f
        elif kind == "group":
            assert len(f.images) >= 2, f
        elif kind == "image":
            assert len(f.images) <= 1, f


@pytest.fixture
def renamed_copies(monkeypatch: pytest.MonkeyPatch) -> str:
    """A new check, unknown to every renderer and to the fix planner: exact copies under another name."""
    import dataclasses

    monkeypatch.setattr(registry, "_REGISTRY", dict(all_checks()))
    exact = all_checks()["exact-duplicates"].func

    @register("renamed-copies", summary="exact copies, found by a check no renderer knows", leak=True, display="pair")
    def renamed_copies(ctx, *, max_matches_per_image: int = 5):  # type: ignore[no-untyped-def]
        return [dataclasses.replace(f, check="renamed-copies") for f in exact(ctx, max_matches_per_image=max_matches_per_image)]

    return "renamed-copies"


def test_a_new_check_is_shown_and_fixed_by_its_declaration(planted: Planted, renamed_copies: str) -> None:
    from splitaudit.fix import build_plan
    from splitaudit.render import render_html, render_markdown
    from splitaudit.scan import scan

    report = splitaudit.audit(*planted.splits, select=[renamed_copies], backbone="none")
    assert [f.check for f in report.findings] == [renamed_copies]  # the planted exact copy
    assert '<b id="n-pairs">1</b>' in render_html(report, max_thumbnails=0)
    assert "`val/temple/copy_exact.jpg` (temple) \u2194 `train/temple/temple_00.jpg` (temple)" in render_markdown(report)
    plan = build_plan(scan([str(p) for p in planted.splits]), report)
    assert [(f.action, f.split, f.path, f.reason) for f in plan.changes] == [
        ("drop", "val", "temple/copy_exact.jpg", "renamed-copies; identical copy of a train image")]
