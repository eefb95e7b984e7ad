"""Feedback from the first second: every stage of a run is named on stderr, as plain lines in logs and as live
spinners/bars on a terminal; --quiet says nothing."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

import splitaudit
from splitaudit.progress import CHECKS, EMBED, HASH, LOAD_MODEL, MEASURE, SCAN, SEARCH, STAGES, VERIFY

from conftest import Planted

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"splitaudit check: (?P<stage>[a-z ]+?)(?:: (?P<done>\d+)/(?P<total>\d+))?")


def _cli(*args: str, cache: Path) -> list[str]:
    return [sys.executable, "-m", "splitaudit", "check", "--cache-dir", str(cache), "--format", "concise", *args]


@pytest.mark.tf
def test_plain_lines_name_every_stage_in_order_when_stderr_is_not_a_terminal(planted: Planted, tmp_path: Path) -> None:
    r = subprocess.run(_cli(*map(str, planted.splits), cache=tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines  # nothing else on stderr: no TensorFlow chatter either
    order = list(dict.fromkeys(m["stage"] for m in parsed if m))
    assert order[:4] == [SCAN, HASH, LOAD_MODEL, EMBED], order
    assert {SEARCH, VERIFY, CHECKS, MEASURE} <= set(order) <= set(STAGES), order
    # Each counted stage starts at 0 and ends complete, whatever the dataset's size (here 64 images).
    for name in (HASH, EMBED, SEARCH, VERIFY, CHECKS):
        counts = [(int(m["done"]), int(m["total"])) for m in parsed if m and m["stage"] == name and m["done"]]
        assert counts[0][0] == 0 and counts[-1][0] == counts[-1][1] > 0, (name, counts)
    assert len(lines) < 60  # a line per stage and quarter, not per image

    # A warm re-run (nothing to embed) still names its stages, without loading the model.
    again = subprocess.run(_cli(*map(str, planted.splits), cache=tmp_path / "cache"), capture_output=True, text=True, timeout=600)
    stages = {m["stage"] for m in map(LINE.fullmatch, again.stderr.splitlines()) if m}
    assert {SCAN, HASH, EMBED, CHECKS} <= stages and LOAD_MODEL not in stages, again.stderr


def test_quiet_says_nothing_and_the_api_reports_through_its_callback(planted: Planted, tmp_path: Path) -> None:
    r = subprocess.run(_cli("--backbone", "none", "--quiet", *map(str, planted.splits), cache=tmp_path / "c"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and r.stderr == "", r.stderr
    seen: list[tuple[str, int, int]] = []
    splitaudit.audit(*planted.splits, backbone="none", progress=lambda *a: seen.append(a))
    names = list(dict.fromkeys(s for s, _, _ in seen))
    assert names[:2] == [SCAN, HASH] and {SEARCH, CHECKS} <= set(names) and LOAD_MODEL not in names, names
    assert all(0 <= done <= total or total == 0 for _, done, total in seen), seen


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_terminal_gets_live_stage_lines(planted: Planted, tmp_path: Path) -> None:
    """Through a real pseudo-terminal: rich draws a spinner line per stage (then clears them); stdout keeps the report."""
    master, slave = os.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(_cli("--backbone", "none", *map(str, planted.splits), cache=tmp_path / "c"),
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    drawn = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=300)
    os.close(master)
    assert proc.returncode == 1
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", drawn).decode("utf-8", "replace")
    for name in (SCAN, HASH, SEARCH, CHECKS):
        assert name in text, text[-2000:]
    assert "splitaudit check:" not in text  # live lines, not the log format
    assert b"near-duplicate of train/coffee/coffee_03.jpg" in out


@pytest.mark.tf
@pytest.mark.slow
def test_explain_keeps_tensorflows_native_logs_off_stderr_and_ours_on_it(planted: Planted, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "splitaudit", "explain", str(planted.split("train")), str(planted.split("val")),
                        "--epochs", "2", "--cache-dir", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=900, env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    # Only our progress lines: no absl banner, no "Could not find cuda drivers", no "failed call to cuInit".
    assert lines and all(line.startswith("splitaudit explain: ") for line in lines), lines
    assert "splitaudit explain: training probes" in r.stderr
    assert "Diagnoses" in r.stdout or "Advice" in r.stdout
    assert "[bold]" not in r.stdout  # the headline is styled, not printed as markup


def test_native_log_filter_drops_tensorflow_lines_and_forwards_the_rest(tmp_path: Path) -> None:
    """Through real descriptors: C-level writes to fd 2 in TF's log format vanish, other fd-2 lines and Python's
    sys.stderr come through."""
    code = (
        "import os, sys\n"
        "from splitaudit.native_logs import native_logs_filtered\n"
        "with native_logs_filtered():\n"
        "    os.write(2, b'I0000 00:00:1796301914.458961    5457 cudart_stub.cc:31] Could not find cuda drivers\\n')\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "    os.write(2, b'a native line of someone else\\n')\n"
        "    print('our message', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert sorted(r.stderr.splitlines()) == ["a native line of someone else", "after", "our message"], r.stderr
