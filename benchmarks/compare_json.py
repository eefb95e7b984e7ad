"""Before/after comparison: is the JSON report of this tree byte-identical to that of another revision?

A refactoring must not change what users see. This script checks out ``--ref`` into a temporary git worktree,
then audits the same datasets with both trees (each in a subprocess with its own ``PYTHONPATH`` and its own cache
folder, twice: a cold run, then a warm re-check that reads the cache) and compares the JSON byte for byte.

Datasets: the bundled demo (hash-only and with embeddings), the planted tiles of the test suite (hash-only and with
embeddings), and scikit-learn's 8x8 digits as arrays with embeddings (uniform data: the hash-collision and pixel
confirmation path).

    python benchmarks/compare_json.py --ref 1a5f3b9          # prints one line per dataset and run, exits 1 on a diff
    python benchmarks/compare_json.py --ref HEAD~3 --quick   # hash-only datasets only
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_AUDIT = """
import sys, numpy as np, splitaudit
kind, backbone, out = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "digits":
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images * 255 / 16).astype(np.uint8)[..., None]
    y = d.target
    x = np.concatenate([x, x[:40], np.flip(x[40:60], axis=2)])  # copies and mirrored copies land in the test part
    y = np.concatenate([y, y[:40], y[40:60]])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    report = splitaudit.audit((x[:1400], y[:1400]), (x[1400:], y[1400:]), backbone=backbone)
else:
    report = splitaudit.audit(*sys.argv[4:], backbone=backbone)
open(out, "w").write(report.to_json())
"""


def _planted(root: Path) -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import PHOTO_NAMES, _load_photo, build_planted

    ds = build_planted(root, {n: _load_photo(n) for n in PHOTO_NAMES})
    return [str(p) for p in ds.splits]


def _run(tree: Path, cache: Path, kind: str, backbone: str, splits: list[str], out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree), SPLITAUDIT_CACHE_DIR=str(cache), PYTHONHASHSEED="0")
    subprocess.run([sys.executable, "-c", _AUDIT, kind, backbone, str(out), *splits], env=env, check=True, cwd=tree)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="1a5f3b9", help="the revision to compare with (default: the last commit before the #10 redesign)")
    ap.add_argument("--quick", action="store_true", help="hash-only datasets only (no TensorFlow)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="splitaudit-compare-") as tmp:
        tmp_path = Path(tmp)
        ref_tree = tmp_path / "ref"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(ref_tree), args.ref], check=True)
        try:
            demo = [str(ROOT / "fixtures" / "demo" / s) for s in ("train", "val", "test")]
            planted = _planted(tmp_path / "planted")
            cases = [("demo", "none", demo), ("planted", "none", planted)]
            if not args.quick:
                cases += [("demo", "efficientnet_lite0", demo), ("planted", "efficientnet_lite0", planted),
                          ("digits", "efficientnet_lite0", [])]
            failed = 0
            for kind, backbone, splits in cases:
                name = f"{kind}-{backbone}"
                for tree_name, tree in (("ref", ref_tree), ("new", ROOT)):
                    cache = tmp_path / f"cache-{name}-{tree_name}"
                    for run in ("cold", "warm"):
                        _run(tree, cache, kind, backbone, splits, tmp_path / f"{name}-{tree_name}-{run}.json")
                for run in ("cold", "warm"):
                    a = (tmp_path / f"{name}-ref-{run}.json").read_text()
                    b = (tmp_path / f"{name}-new-{run}.json").read_text()
                    same = a == b
                    failed += not same
                    print(f"{name:32} {run:5} {'identical' if same else 'DIFFERENT'} ({len(b)} bytes)")
                    if not same:
                        sys.stdout.writelines(list(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "ref", "new", n=2))[:60])
            print(f"{len(cases) * 2 - failed} identical, {failed} different")
            return 1 if failed else 0
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref_tree)], check=False)


if __name__ == "__main__":
    sys.exit(main())
