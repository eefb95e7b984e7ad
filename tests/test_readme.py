"""The README's Quick start stays true: CI runs its test command verbatim, and the demo command audits the demo."""

from __future__ import annotations

import re
from pathlib import Path

import splitaudit

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_has_two_commands_and_ci_runs_the_second() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci


def test_demo_command_audits_the_bundled_demo_and_finds_its_plants() -> None:
    demo_cmd = _quick_start_commands()[0]
    folders = re.findall(r"fixtures/demo/\w+", demo_cmd)
    assert folders == ["fixtures/demo/train", "fixtures/demo/val", "fixtures/demo/test"]
    report = splitaudit.audit(*(ROOT / f for f in folders))
    assert report.failed  # the demo has planted leaks: command 1 exits 1
    planted = (ROOT / "fixtures" / "demo" / "PLANTED.md").read_text()
    flagged = {i.path.split("/")[-1] for f in report.findings for i in f.images}
    for name in re.findall(r"`?((?:leak|broken|dup)_\w+\.(?:jpg|png))`?", planted):
        assert name in flagged, name
