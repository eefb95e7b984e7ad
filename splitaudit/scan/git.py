"""``--git-tracked``: keep only the files git tracks, so an untracked scratch file never blocks a commit.

A file counts as tracked when it is in the index (``git ls-files``): committed, or staged as the commit being made.
Each split's repository is the one holding its root (a manifest's: the manifest's folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace

from ..errors import SplitauditError
from .records import Dataset


def _git(root: str, *args: str) -> bytes:
    """``git -C root args`` output; a missing git or a folder outside any repository is one-line usage error."""
    git = shutil.which("git")
    if git is None:
        raise SplitauditError("git_tracked needs git, and no git command was found on PATH")
    try:
        done = subprocess.run([git, "-C", root, *args], capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SplitauditError(f"git_tracked: git failed in {root!r}: {exc}") from exc
    if done.returncode != 0:
        said = os.fsdecode(done.stderr).strip().splitlines()
        if any("not a git repository" in line for line in said):
            raise SplitauditError(f"git_tracked: {root!r} is not inside a git repository (only tracked files can be "
                                  "selected in one); drop git_tracked or audit a folder of a git repository")
        raise SplitauditError(f"git_tracked: git failed in {root!r}: {said[-1] if said else done.returncode}")
    return done.stdout


def tracked_files(root: str) -> tuple[str, frozenset[str]]:
    """``(top, paths)``: the repository holding ``root`` (a real path) and every tracked file in it, relative to it."""
    top = os.fsdecode(_git(root, "rev-parse", "--show-toplevel").rstrip(b"\n"))
    listed = _git(top, "ls-files", "-z", "--full-name")
    return top, frozenset(os.fsdecode(p) for p in listed.split(b"\0") if p)


def keep_tracked(dataset: Dataset) -> Dataset:
    """``dataset`` without the records of files git does not track. In-memory arrays have no repository: refused."""
    repos: dict[str, tuple[str, frozenset[str]]] = {}
    for spec in dataset.splits:
        if spec.kind == "array":
            raise SplitauditError(f"git_tracked: split {spec.name!r} is an in-memory array, not files in a git repository")
        repos[spec.name] = tracked_files(os.path.abspath(spec.root))

    folders: dict[tuple[str, str], str] = {}  # (split, folder) -> folder relative to the repository, "/"-separated

    def tracked(split: str, path: str) -> bool:
        top, listed = repos[split]
        folder, name = os.path.split(os.path.abspath(path))
        if (split, folder) not in folders:
            # The folder's real path, as git's toplevel is one; the file name as is (a tracked symlink is the link).
            rel = os.path.relpath(os.path.realpath(folder), top).replace(os.sep, "/")
            folders[split, folder] = "" if rel == "." else rel + "/"
        return folders[split, folder] + name in listed

    kept = tuple(r for r in dataset.records if r.path is not None and tracked(r.split, r.path))
    return replace(dataset, records=kept)
