"""Apply a :class:`~splitaudit.fix.plan.FixPlan` by *copying* the kept and moved files into a new split tree.

The original data are never modified: files are copied (``shutil.copy2``, timestamps kept), never moved; the
target must be new or empty and may not lie inside a source split (or contain one); every source must still have
the size and modification time it had when the plan was made. The tree is built in a temporary sibling folder
and renamed into place, so a failure leaves no half-written target.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import SplitauditError
from .plan import LEFT_OUT, FixPlan

#: Written at the top of the new tree: the planned dataset as a manifest (paths relative to the tree).
MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class AppliedPlan:
    """Where the new tree is and what went into it."""

    target: str
    copied: int
    dropped: int
    manifest: str
    excluded: int = 0  # unreadable files left out


def _safe_relpath(path: str) -> PurePosixPath:
    """A relative path that cannot leave the target (manifest paths may be absolute or contain '..')."""
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", ".", "")]
    parts = ["__up__" if p == ".." else p for p in parts]
    if not parts:
        raise SplitauditError(f"cannot place {path!r} in the new tree: empty path")
    return PurePosixPath(*parts)


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def apply_plan(plan: FixPlan, *, to: str | os.PathLike[str]) -> AppliedPlan:
    """Copy the planned dataset into ``to/<split>/<path>`` and write ``to/manifest.csv``; returns what was done."""
    if any(f.source is None for f in plan.files):
        raise SplitauditError("in-memory arrays have no files to copy (nor do streamed datasets): apply the plan to "
                              "them yourself (see plan.changes)")
    target = Path(os.path.abspath(os.fspath(to)))
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SplitauditError(f"--to {str(target)!r} exists and is not an empty folder: give a new folder")
    real_target = Path(os.path.realpath(target))
    for root, kind in zip(plan.roots, plan.kinds):
        if kind not in ("folder", "subset"):
            continue  # a manifest lists its files: a new folder beside it changes nothing it reads (Keras' listing would)
        real_root = Path(os.path.realpath(root))
        if _inside(real_target, real_root) or _inside(real_root, real_target):
            raise SplitauditError(f"--to {str(target)!r} overlaps the source split folder {root!r}: the originals must stay untouched")

    kept = [f for f in plan.files if f.action not in LEFT_OUT]
    for f in kept:
        try:
            st = os.stat(f.source)  # type: ignore[arg-type]
        except OSError as exc:
            raise SplitauditError(f"{f.split}/{f.path} is gone since the plan was made ({exc.strerror or exc}); run splitaudit fix again") from exc
        if f.size >= 0 and (st.st_size != f.size or st.st_mtime_ns != f.mtime_ns):
            raise SplitauditError(f"{f.split}/{f.path} changed since the plan was made; run splitaudit fix again")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.splitaudit-fix-", dir=target.parent))
    try:
        rows = []
        seen: set[PurePosixPath] = set()
        for f in kept:
            rel = PurePosixPath(f.to_split or f.split) / _safe_relpath(f.to_path or f.path)
            if rel in seen:
                raise SplitauditError(f"two files would be copied to {rel}; the plan is inconsistent")
            seen.add(rel)
            dest = tmp.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f.source, dest)  # type: ignore[arg-type]
            rows.append((str(rel), f.label or "", f.to_split or f.split, f.group or ""))
        with open(tmp / MANIFEST_NAME, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            groups = any(r[3] for r in rows)
            w.writerow(["path", "label", "split", *(["group"] if groups else [])])
            for r in rows:
                w.writerow(r if groups else r[:3])
        if target.exists():
            target.rmdir()  # empty (checked above); rename needs it gone
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return AppliedPlan(str(target), len(kept), plan.dropped, str(target / MANIFEST_NAME), plan.excluded)
