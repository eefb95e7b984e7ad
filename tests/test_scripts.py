"""``splitaudit.audit`` called the way Keras users write scripts: TensorFlow imported at the top, no
``if __name__ == "__main__":`` guard, run as a file, from stdin and as exec'd code (a notebook cell). The script must
run once, exit 0 and print the CLI's JSON; no child process of it may carry TensorFlow (spawn and forkserver
workers re-ran the whole script, TensorFlow included, and then broke the pool).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import tile_splits

from splitaudit.features.runner import pool_kind

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.tf, pytest.mark.slow]

SCRIPT = """\
{tf_import}
import os, sys
import splitaudit

print("script body ran in", os.getpid(), file=sys.stderr)
report = splitaudit.audit({train!r}, {val!r}, cache_dir={cache!r}, workers=2)
sys.stdout.write(report.to_json())
"""
TF_LIBRARIES = ("libtensorflow_framework", "_pywrap_tensorflow_internal")


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """~300 64-px tiles of real photos: more rows than the pool threshold (96), so the stages use a pool."""
    train, val = tile_splits(tmp_path_factory.mktemp("script"), per_photo=40, step=48)
    n = sum(1 for _ in train.rglob("*.jpg")) + sum(1 for _ in val.rglob("*.jpg"))
    assert n >= 2 * 96, n
    return str(train), str(val)


@pytest.fixture(scope="module")
def models(_model_dir: Path) -> Path:
    """The session's converted networks: the CLI run below converts, the scripts only load (a conversion is a
    child process that imports TensorFlow by design; it must not be mistaken for a worker)."""
    return _model_dir


def _env(models: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "TF_CPP_MIN_LOG_LEVEL": "2", "SPLITAUDIT_MODEL_DIR": str(models)}


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                kids = [int(k) for k in fh.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _carries_tensorflow(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as fh:
            maps = fh.read()
    except OSError:
        return False
    return any(lib in maps for lib in TF_LIBRARIES)


def _run_watched(cmd: list[str], models: Path, stdin: str | None = None) -> tuple[subprocess.CompletedProcess, set[int], set]:
    """Run ``cmd``; also the pids of its descendants seen while it ran, and (pid, command line) of those that held
    TensorFlow mapped for over half a second: a worker. (TensorFlow's own import runs ``uname -p``, whose child
    carries the parent's maps for the instant between fork and exec; that is no worker.)"""
    proc = subprocess.Popen(cmd, env=_env(models), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    since: dict[int, tuple[float, float, str]] = {}  # pid -> first and last time seen with TensorFlow, command line
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for child in _descendants(proc.pid):
                seen.add(child)
                if _carries_tensorflow(child):
                    now = time.monotonic()
                    first = since.get(child, (now, now, ""))[0]
                    since[child] = (first, now, _cmdline(child))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate(stdin, timeout=900)
    done.set()
    watcher.join()
    with_tf = {(pid, line) for pid, (first, last, line) in since.items() if last - first > 0.5}
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), seen, with_tf


@pytest.fixture(scope="module")
def cli_json(splits: tuple[str, str], models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The CLI's report on the same splits (this run also converts the network, so the scripts do not)."""
    cache = tmp_path_factory.mktemp("cli-cache")
    done = subprocess.run([sys.executable, "-m", "splitaudit", "check", *splits, "--format", "json", "--workers", "2",
                           "--cache-dir", str(cache), "--exit-zero"], env=_env(models), capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("how", ["file", "stdin", "exec"])
def test_unguarded_keras_script(splits: tuple[str, str], cli_json: dict, models: Path, tmp_path: Path, how: str) -> None:
    source = SCRIPT.format(tf_import="import tensorflow as tf", train=splits[0], val=splits[1], cache=str(tmp_path / "c"))
    path = tmp_path / "train_model.py"
    path.write_text(source)
    if how == "file":
        done, _, with_tf = _run_watched([sys.executable, str(path)], models)
    elif how == "stdin":
        done, _, with_tf = _run_watched([sys.executable, "-"], models, stdin=source)
    else:  # a notebook cell: exec'd code, a __main__ without a file, and other threads running (the kernel's)
        cell = ("import threading; threading.Thread(target=threading.Event().wait, daemon=True).start(); "
                f"exec(compile(open({str(path)!r}).read(), '<ipython-input-1>', 'exec'))")
        done, _, with_tf = _run_watched([sys.executable, "-c", cell], models)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("script body ran in") == 1, done.stderr[-3000:]
    assert with_tf == set()
    assert json.loads(done.stdout) == cli_json


def test_unguarded_script_from_stdin_forks_plain_workers(splits: tuple[str, str], cli_json: dict, models: Path,
                                                         tmp_path: Path) -> None:
    """Without TensorFlow, a single-threaded script's hashing runs on forked workers: they never re-read
    ``__main__`` (there is no file to read from stdin) and never import TensorFlow."""
    source = SCRIPT.format(tf_import="", train=splits[0], val=splits[1], cache=str(tmp_path / "c"))
    done, seen, with_tf = _run_watched([sys.executable, "-"], models, stdin=source)
    assert done.returncode == 0, done.stderr[-3000:]
    assert seen, "no worker process was seen: the fork pool was not covered"
    assert with_tf == set()
    assert done.stderr.count("script body ran in") == 1
    assert json.loads(done.stdout) == cli_json


def test_pool_policy_never_forks_a_threaded_or_tensorflow_process(models: Path) -> None:
    assert pool_kind(1, 10_000) == "inline" and pool_kind(2, 10) == "inline"
    assert pool_kind(2, 10_000, releases_gil=True) == "threads"
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert pool_kind(2, 10_000) == "threads"
    finally:
        stop.set()
        t.join()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from splitaudit.features.runner import pool_kind; "
            "a = pool_kind(2, 10_000); import tensorflow; print(a, pool_kind(2, 10_000))")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT)], env=_env(models), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.stdout.split() == ["fork", "threads"], done.stderr[-2000:]
