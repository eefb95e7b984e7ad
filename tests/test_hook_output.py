"""The pre-commit hook's output and scope: one ruff-style line per finding (--format concise), --git-tracked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import splitaudit
from splitaudit.cli import main
from splitaudit.render.concise import render_concise

from conftest import Planted, build_planted, save

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "splitaudit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **GIT_ENV})


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **GIT_ENV}, timeout=120)


def test_concise_is_one_line_per_finding_then_the_verdict(planted: Planted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(planted.root)
    save(planted.split("train") / "cat" / "dup.jpg", (planted.split("train") / "cat" / "cat_01.jpg").read_bytes())
    save(planted.split("test") / "rocket" / "r.png", (planted.split("test") / "cat" / "copy_lossless.png").read_bytes())
    report = splitaudit.audit(*planted.splits, backbone="none")
    lines = render_concise(report).splitlines()
    assert len(lines) == len(report.findings) + 1
    assert lines[-1].startswith("FAIL ") and lines[-1].endswith(report.verdict.reason)
    # Each planted copy: its file relative to the working directory, then what it copies, the evidence, the check.
    for original, split, relpath, check in planted.leaks:
        (line,) = [ln for ln in lines if ln.startswith(f"{split}/{relpath}: ") and ln.endswith(f"[{check}]")] or [lines]
        assert f"of train/{original}" in line and not line.startswith(f"{split}/{relpath}: {split}/"), line
    near = next(ln for ln in lines if ln.startswith("val/coffee/copy_q40.jpg: "))
    assert re.fullmatch(r"val/coffee/copy_q40\.jpg: near-duplicate of train/coffee/coffee_03\.jpg \(phash \d+, dhash \d+, copy 0\.9\d\d\) "
                        r"\[near-duplicates\]", near), near
    # Findings below --fail-on say their severity; findings about no file start with the check.
    assert any(ln.startswith("train/cat/") and ln.endswith("[within-split-duplicates, warning]") for ln in lines), lines
    assert any(ln.startswith("class-balance: test has classes absent from train") for ln in lines), lines


def test_concise_paths_are_relative_to_the_working_directory(planted: Planted) -> None:
    name = planted.root.name
    r = _run("check", "--backbone", "none", "--format", "concise", "--quiet", f"{name}/train", f"{name}/val",
             cwd=planted.root.parent)
    assert r.returncode == 1 and r.stderr == "", r.stderr
    assert f"{name}/val/temple/copy_exact.jpg: exact copy of train/temple/temple_00.jpg" in r.stdout, r.stdout
    assert r.stdout.splitlines()[-1].startswith("FAIL ")


@needs_git
def test_git_tracked_ignores_untracked_files(clean: Planted, photos: dict) -> None:
    repo = clean.root
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    # An untracked scratch copy in val: it leaks, but it is not part of what is being committed.
    save(repo / "val" / "scratch.jpg", (repo / "train" / "cat" / "cat_01.jpg").read_bytes())
    args = ("check", "--backbone", "none", "--format", "concise", "--quiet", "train", "val", "test")
    assert _run(*args, cwd=repo).returncode == 1
    tracked = _run(*args, "--git-tracked", cwd=repo)
    assert tracked.returncode == 0 and tracked.stdout.startswith("PASS"), tracked.stdout + tracked.stderr
    # Staged is tracked: `git add` puts it in the commit, so it is audited.
    _git(repo, "add", "val/scratch.jpg")
    staged = _run(*args, "--git-tracked", cwd=repo)
    assert staged.returncode == 1 and "val/scratch.jpg: exact copy of train/cat/cat_01.jpg" in staged.stdout, staged.stdout
    # Reports count only the tracked files.
    _git(repo, "rm", "-q", "--cached", "val/scratch.jpg")
    report = splitaudit.audit(repo / "train", repo / "val", backbone="none", git_tracked=True)
    assert report.splits[1].images == len([p for p in (repo / "val").rglob("*") if p.is_file()]) - 1


@needs_git
def test_git_tracked_in_pyproject_and_from_a_subfolder(tmp_path: Path, photos: dict) -> None:
    ds = build_planted(tmp_path / "repo" / "data", photos, with_leaks=False)
    repo = tmp_path / "repo"
    (repo / "pyproject.toml").write_text('[tool.splitaudit]\nsplits = ["data/train", "data/val"]\ngit-tracked = true\n')
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    save(ds.split("val") / "cat" / "scratch.jpg", (ds.split("train") / "cat" / "cat_02.jpg").read_bytes())
    r = _run("check", "--backbone", "none", "--format", "concise", cwd=repo / "data" / "val")
    assert r.returncode == 0, r.stdout + r.stderr


def test_git_tracked_outside_a_repository_is_a_usage_error(clean: Planted, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("git") is not None:
        probe = subprocess.run(["git", "-C", str(clean.root), "rev-parse"], capture_output=True)
        if probe.returncode == 0:
            pytest.skip("the temporary folder is inside a git repository")
    code = main(["check", "--backbone", "none", "--git-tracked", *map(str, clean.splits)])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("splitaudit check:")]  # progress
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("splitaudit: error: git_tracked:") and "not inside a git repository" in err[0], err


def test_git_tracked_refuses_arrays() -> None:
    import numpy as np

    x = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(splitaudit.SplitauditError, match="in-memory array"):
        splitaudit.audit(x, x, backbone="none", git_tracked=True)
