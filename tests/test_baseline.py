"""Baselines: reviewed findings stop failing the CLI and the pre-commit hook; new leaks still fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import splitaudit
from splitaudit.report.baseline import apply_baseline, load_baseline
from splitaudit.cli import main

from conftest import Planted, build_planted, save

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "splitaudit", *args, "--backbone", "none"], capture_output=True, text=True, cwd=cwd, timeout=300)


def _new_leak(ds: Planted) -> str:
    """Copy one more training image into val: a finding no baseline has seen."""
    save(ds.split("val") / "coffee" / "new_leak.jpg", (ds.split("train") / "coffee" / "coffee_08.jpg").read_bytes())
    return "val/coffee/new_leak.jpg"


def test_write_baseline_is_deterministic_and_accepts_every_finding(planted: Planted, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    r = run("check", *map(str, planted.splits), "--write-baseline", str(a), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr  # everything is now accepted
    assert r.stdout.startswith("PASS") and "8 accepted in the baseline" in r.stdout
    assert "wrote 8 accepted finding(s)" in r.stderr
    assert run("check", *map(str, planted.splits), "--write-baseline", str(b), "--no-cache").returncode == 0
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    assert doc["version"] == 1 and list(doc) == sorted(doc)
    ids = [e["id"] for e in doc["accepted"]]
    assert ids == sorted(ids) and len(ids) == 8
    report = splitaudit.audit(*planted.splits, backbone="none")
    assert set(ids) == {f.id for f in report.findings}
    entry = next(e for e in doc["accepted"] if e["check"] == "exact-duplicates")
    assert entry["message"] == "val/temple/copy_exact.jpg is an exact copy of train/temple/temple_00.jpg"
    assert entry["images"] == ["train/temple/temple_00.jpg", "val/temple/copy_exact.jpg"] and entry["severity"] == "error"


def test_baselined_findings_are_reported_as_accepted_and_new_ones_fail(planted: Planted, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    assert main(["check", "--backbone", "none", *map(str, planted.splits), "--write-baseline", str(baseline), "-q"]) == 0
    r = run("check", *map(str, planted.splits), "--baseline", str(baseline), "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verdict"]["failed"] is False and len(doc["findings"]) == 8  # still listed...
    assert all(f["data"]["baseline"] == "accepted" for f in doc["findings"])  # ...as accepted

    path = _new_leak(planted)
    r = run("check", *map(str, planted.splits), "--baseline", str(baseline), "--format", "json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    new = [f for f in doc["findings"] if f["data"].get("baseline") != "accepted"]
    assert [i["path"] for f in new for i in f["images"] if i["split"] == "val"] == [path.split("/", 1)[1]]
    assert doc["verdict"]["reason"].startswith("1 finding(s) at or above error: exact-duplicates (1); 8 accepted in the baseline")


def test_api_and_apply_baseline(planted: Planted) -> None:
    report = splitaudit.audit(*planted.splits, backbone="none")
    exact = report.by_check("exact-duplicates")[0]
    partial = splitaudit.audit(*planted.splits, backbone="none", baseline=[exact.id])
    assert partial.failed and [f.id for f in partial.findings if f.accepted] == [exact.id]
    assert partial.verdict.reason.endswith("; 1 accepted in the baseline")
    assert partial.findings[0].id == report.findings[0].id  # accepting a finding does not change its id
    everything = apply_baseline(report, [f.id for f in report.findings])
    assert not everything.failed and all(f.accepted for f in everything.findings)
    assert apply_baseline(everything, []).failed  # a new, empty baseline replaces the old marks
    with pytest.raises(splitaudit.InvalidParameterError, match="The 'baseline' parameter must be a baseline file path or finding ids"):
        splitaudit.audit(*planted.splits, backbone="none", baseline=["not-an-id"])


@pytest.mark.parametrize("content, message", [
    ("{", "is not valid JSON"),
    ('{"version": 1}', "must be a JSON object with an 'accepted' list"),
    ('{"version": 9, "accepted": []}', "has version 9"),
    ('{"version": 1, "accepted": [{"id": "zz"}]}', "entry 0 has no valid 'id'"),
])
def test_bad_baseline_is_exit_2_in_one_line(planted: Planted, tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "baseline.json"
    bad.write_text(content)
    r = run("check", *map(str, planted.splits), "--baseline", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    r = run("check", *map(str, planted.splits), "--baseline", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot read baseline" in r.stderr
    with pytest.raises(splitaudit.SplitauditError, match=message.replace("'", ".")):
        load_baseline(bad)


def test_baseline_key_in_pyproject_is_relative_to_it(planted: Planted) -> None:
    assert main(["check", "--backbone", "none", *map(str, planted.splits), "--write-baseline", str(planted.root / "audit" / "bl.json")]) == 2
    (planted.root / "audit").mkdir()
    assert main(["check", "--backbone", "none", *map(str, planted.splits), "--write-baseline", str(planted.root / "audit" / "bl.json"), "-q"]) == 0
    (planted.root / "pyproject.toml").write_text('[tool.splitaudit]\nsplits = ["train", "val", "test"]\nbaseline = "audit/bl.json"\n')
    r = run("check", "--quiet", cwd=planted.root / "val")
    assert r.returncode == 0 and "8 accepted in the baseline" in r.stdout, r.stdout + r.stderr
    (planted.root / "pyproject.toml").write_text('[tool.splitaudit]\nbaseline = 3\n')
    r = run("check", "train", "val", cwd=planted.root)
    assert r.returncode == 2 and "'baseline' must be a path to a baseline file" in r.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_precommit_hook_passes_a_baselined_leak_and_fails_a_new_one(tmp_path: Path, photos: dict) -> None:
    repo = tmp_path / "dataset-repo"
    repo.mkdir()
    ds = build_planted(repo / "data", photos)
    (repo / "pyproject.toml").write_text('[tool.splitaudit]\nsplits = ["data/train", "data/val", "data/test"]\n'
                                         'baseline = ".splitaudit-baseline.json"\n')
    (hook,) = [h for h in yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text()) if h["id"] == "splitaudit"]
    local = {**hook, "language": "system"}  # the published hook, run with the splitaudit beside this interpreter
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]}))
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300)

    assert git("init", "-q").returncode == 0
    assert subprocess.run([sys.executable, "-m", "pre_commit", "install"], cwd=repo, env=env, capture_output=True, timeout=300).returncode == 0
    # The curator reviews the planted findings and accepts them (here: all of them).
    w = subprocess.run([sys.executable, "-m", "splitaudit", "check", "--write-baseline", ".splitaudit-baseline.json", "--quiet"],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert w.returncode == 0, w.stderr
    git("add", "-A")
    ok = git("commit", "-m", "dataset with reviewed findings")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Passed" in ok.stdout + ok.stderr

    _new_leak(ds)
    git("add", "-A")
    bad = git("commit", "-m", "a new leak")
    said = bad.stdout + bad.stderr
    assert bad.returncode != 0, said
    assert "FAIL 1 finding(s) at or above error: exact-duplicates (1)" in said, said
    assert git("rev-list", "--count", "HEAD").stdout.strip() == "1"  # the leaky commit was refused
