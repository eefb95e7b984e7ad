"""The pre-commit hook keeps a dataset repository leak-free: a real git repo, real pre-commit, real commits."""

from __future__ import annotations

import os
import re
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


def _env(tmp_path: Path) -> dict[str, str]:
    """pre-commit and git in a throw-away home, with the splitaudit beside this interpreter on PATH."""
    return {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def published_hook(hook_id: str = "splitaudit") -> dict:
    (hook,) = [h for h in yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text()) if h["id"] == hook_id]
    return hook


def test_hook_definition() -> None:
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["splitaudit", "splitaudit-hash"]
    for hook in hooks:
        assert hook["pass_filenames"] is False and hook["require_serial"] is True
        assert hook["entry"].split()[:2] == ["splitaudit", "check"]
        assert "--format concise" in hook["entry"] and "--quiet" in hook["entry"].split()
    # The hash hook needs no CNN, and its install leaves the CNN's dependencies out (see test_packaging.py).
    hash_hook = published_hook("splitaudit-hash")
    assert "--backbone none" in hash_hook["entry"]
    assert hash_hook["additional_dependencies"] == ["--config-settings=splitaudit-dependencies=hash"]


def test_release_version_agrees_with_the_readme() -> None:
    """The README's `rev:` names the tag of the current version, so copying it works."""
    import splitaudit

    (pyproject_version,) = re.findall(r'^version = "([^"]+)"$', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    revs = re.findall(r"^\s+rev: (\S+)$", (REPO_ROOT / "README.md").read_text(), re.M)
    assert pyproject_version == splitaudit.__version__
    assert revs and set(revs) == {f"v{pyproject_version}"}, revs


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_commit_fails_on_a_leak_and_passes_once_it_is_removed(tmp_path: Path, photos: dict) -> None:
    repo = tmp_path / "dataset-repo"
    repo.mkdir()
    ds = build_planted(repo / "data", photos)
    (repo / "pyproject.toml").write_text('[tool.splitaudit]\nsplits = ["data/train", "data/val", "data/test"]\n')
    hook = published_hook()
    # The hook exactly as published, run with the splitaudit installed beside this interpreter (no network).
    local = {**hook, "language": "system"}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]}))

    env = _env(tmp_path)
    assert _git(repo, "init", "-q", env=env).returncode == 0
    install = subprocess.run([sys.executable, "-m", "pre_commit", "install"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    _git(repo, "add", "-A", env=env)
    leaky = _git(repo, "commit", "-m", "add dataset", env=env)
    said = leaky.stdout + leaky.stderr  # git shows hook output on either stream, depending on its version
    assert leaky.returncode != 0, said
    assert "FAIL" in said and "near-duplicates" in said, said
    # What fails, one line per finding, with the file as the repository names it.
    for original, split, relpath, check in ds.leaks:
        assert f"data/{split}/{relpath}: " in said and f"train/{original}" in said, said
    assert _git(repo, "rev-parse", "HEAD", env=env).returncode != 0  # nothing was committed

    for _, split, relpath, _ in ds.leaks:
        (ds.split(split) / relpath).unlink()
    _git(repo, "add", "-A", env=env)
    fixed = _git(repo, "commit", "-m", "add dataset without leaks", env=env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "Passed" in fixed.stdout + fixed.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_hash_hook_with_git_tracked_ignores_an_untracked_scratch_copy(tmp_path: Path, photos: dict) -> None:
    repo = tmp_path / "dataset-repo"
    repo.mkdir()
    ds = build_planted(repo / "data", photos, with_leaks=False)
    (repo / "pyproject.toml").write_text('[tool.splitaudit]\nsplits = ["data/train", "data/val", "data/test"]\n')
    hook = published_hook("splitaudit-hash")
    # As published plus the user's `args: [--git-tracked]`; "system" runs the splitaudit beside this interpreter, and
    # takes no additional_dependencies (test_packaging.py installs the hook's environment for real).
    local = {k: v for k, v in hook.items() if k != "additional_dependencies"} | {"language": "system", "args": ["--git-tracked"]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]}))
    env = _env(tmp_path)
    assert _git(repo, "init", "-q", env=env).returncode == 0
    assert subprocess.run([sys.executable, "-m", "pre_commit", "install"], cwd=repo, env=env, capture_output=True, timeout=300).returncode == 0
    _git(repo, "add", "-A", env=env)
    # A scratch copy of a training image, left untracked in val: not part of the commit, so it does not block it.
    (ds.split("val") / "cat" / "scratch.jpg").write_bytes((ds.split("train") / "cat" / "cat_01.jpg").read_bytes())
    ok = _git(repo, "commit", "-m", "dataset", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Once staged it is in the commit: refused, and the line names it.
    _git(repo, "add", "-A", env=env)
    bad = _git(repo, "commit", "-m", "add the scratch file", env=env)
    said = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "data/val/cat/scratch.jpg: exact copy of train/cat/cat_01.jpg" in said, said
