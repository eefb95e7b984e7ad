"""No process of ours outlives the command: the CLI runs in its own session, which must be empty once it exits,
after a normal run and after Ctrl-C (SIGINT to the whole process group, as a terminal sends it) at any stage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sigint_as_in_a_terminal, tile_splits

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.tf, pytest.mark.slow]


def _session_members(sid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process in session ``sid`` (zombies are dead: not counted)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                head, rest = fh.read().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append((int(entry), head.split("(", 1)[1]))
    return out


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _maps(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/maps") as fh:
            return fh.read()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """~1,000 64-px tiles of real photos: enough rows for the process pool and a few seconds of embedding."""
    train, val = tile_splits(tmp_path_factory.mktemp("exit"), per_photo=160, step=24)
    n = sum(1 for _ in train.rglob("*.jpg")) + sum(1 for _ in val.rglob("*.jpg"))
    assert n >= 600, n
    return [str(train), str(val)]


def _start(splits: list[str], cache: Path, models: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if models is not None:
        env["SPLITAUDIT_MODEL_DIR"] = str(models)
    cmd = [sys.executable, "-m", "splitaudit", "check", *splits, "--format", "json", "--cache-dir", str(cache), "--exit-zero"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=sigint_as_in_a_terminal)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=900)
    return proc.returncode, err


def test_session_is_empty_after_a_run(dataset: list[str], tmp_path: Path) -> None:
    proc = _start(dataset, tmp_path / "c")
    saw_pool = False
    while proc.poll() is None:  # watch for the worker pool, so the test knows it covered one
        saw_pool = saw_pool or len(_session_members(proc.pid)) > 1
        time.sleep(0.02)
    rc, err = _finish(proc)
    assert rc == 0, err
    assert saw_pool
    assert _session_members(proc.pid) == []


@pytest.mark.parametrize("stage", ["hashing", "converting", "embedding"])
def test_session_is_empty_after_ctrl_c(dataset: list[str], tmp_path: Path, stage: str) -> None:
    # The converted network is built by an earlier run (or this one), so the interrupted run reaches inference;
    # "converting" interrupts the child process that runs TensorFlow's converter, with its own model folder.
    models = tmp_path / "models" if stage == "converting" else None
    if stage == "embedding":
        warm = _start(dataset, tmp_path / "warm")
        assert _finish(warm)[0] == 0
    proc = _start(dataset, tmp_path / "c", models)
    reached = False
    while proc.poll() is None and not reached:
        if stage == "hashing":  # the feature stage's worker processes are up
            reached = len(_children(proc.pid)) > 0
        elif stage == "converting":  # the converter's child has loaded TensorFlow
            reached = any("libtensorflow_framework" in _maps(c) for c in _children(proc.pid))
        else:  # the converted network is mapped: inference is running
            reached = ".tflite" in _maps(proc.pid)
        time.sleep(0.005)
    assert reached, f"the run ended before its {stage} stage was seen"
    os.killpg(proc.pid, signal.SIGINT)
    rc, err = _finish(proc)
    assert rc != 0 and "interrupted" in err, (rc, err)
    assert _session_members(proc.pid) == []
