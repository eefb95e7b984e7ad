"""Install time and size of the two hook environments: the complete package and the splitaudit-hash hook's.

    python benchmarks/hook_install.py [--keep DIR]

Both start from an empty pip cache. The complete install is `pip install .` into a fresh venv (what the
`splitaudit` hook's environment and the README's quick start get); the hash hook's is pre-commit's own
`install-hooks` on a throw-away dataset repository whose config points at this checkout's HEAD. Prints seconds,
`du` sizes, the ratio, and whether TensorFlow ended up in each environment.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def timed(cmd: list[str], **kw: object) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="splitaudit-hook-install-"))
    work.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    src = work / "src"
    subprocess.run(f"git -C {ROOT} archive HEAD --prefix=src/ | tar -x -C {work}", shell=True, check=True)

    venv = work / "full"
    full_s = timed([sys.executable, "-m", "venv", str(venv)])
    full_s += timed([str(venv / "bin" / "pip"), "install", "-q", str(src)], env={**os.environ, "PIP_CACHE_DIR": str(work / "cache-full")})
    full_tf = any((venv / "lib").glob("python3*/site-packages/tensorflow"))

    repo = work / "dataset"
    repo.mkdir()
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {ROOT}\n    rev: {head}\n    hooks:\n      - id: splitaudit-hash\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    home = work / "pre-commit-home"
    hash_s = timed([sys.executable, "-m", "pre_commit", "install-hooks"], cwd=repo,
                   env={**os.environ, "PRE_COMMIT_HOME": str(home), "PIP_CACHE_DIR": str(work / "cache-hash")})
    (hook_env,) = home.glob("repo*/py_env-*")
    hash_tf = any((hook_env / "lib").glob("python3*/site-packages/tensorflow"))

    full_b, hash_b = du(venv), du(hook_env)
    print(f"complete install:  {full_s:6.0f} s  {full_b / 1e6:7.0f} MB  tensorflow: {full_tf}")
    print(f"splitaudit-hash:   {hash_s:6.0f} s  {hash_b / 1e6:7.0f} MB  tensorflow: {hash_tf}")
    print(f"hash hook / complete: time {hash_s / full_s:.2f}x, size {hash_b / full_b:.2f}x")


if __name__ == "__main__":
    main()
