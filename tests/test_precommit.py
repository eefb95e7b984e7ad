"""The pre-commit hook keeps a dataset repository leak-free: a real git repo, real pre-commit, real commits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import build_planted

REPO_ROOT = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def test_hook_definition() -> None:
    (hook,) = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "splitaudit"
    assert hook["pass_filenames"] is False and hook["require_serial"] is True
    assert hook["entry"].split()[:2] == ["splitaudit", "check"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_commit_fails_on_a_leak_and_passes_once_it_is_removed(tmp_path: Path, photos: dict) -> None:
    repo = tmp_path / "dataset-repo"
    repo.mkdir()
    ds = build_planted(repo / "data", photos)
    (repo / "pyproject.toml").write_text('[tool.splitaudit]\nsplits = ["data/train", "data/val", "data/test"]\n')
    (hook,) = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    # The hook exactly as published, run with the splitaudit installed beside this interpreter (no network).
    local = {**hook, "language": "system"}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]}))

    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    assert _git(repo, "init", "-q", env=env).returncode == 0
    install = subprocess.run([sys.executable, "-m", "pre_commit", "install"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    _git(repo, "add", "-A", env=env)
    leaky = _git(repo, "commit", "-m", "add dataset", env=env)
    said = leaky.stdout + leaky.stderr  # git shows hook output on either stream, depending on its version
    assert leaky.returncode != 0, said
    assert "FAIL" in said and "near-duplicates" in said, said
    assert _git(repo, "rev-parse", "HEAD", env=env).returncode != 0  # nothing was committed

    for _, split, relpath, _ in ds.leaks:
        (ds.split(split) / relpath).unlink()
    _git(repo, "add", "-A", env=env)
    fixed = _git(repo, "commit", "-m", "add dataset without leaks", env=env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "Passed" in fixed.stdout + fixed.stderr
