"""Golden tests of the terminal renderer: a real planted dataset (tests/conftest.py) with one finding of every
display kind (pairs, groups, an unreadable image, class-balance facts), audited with ``backbone="none"`` and
printed to a fixed-width rich Console, must give exactly the text in ``tests/golden/``.

The split roots are temporary folders, so they are renamed ``<data>/train``... before rendering (their length
would otherwise change the table layout); nothing else is normalised: timings and cache hits are not part of the
terminal report, and the run below audits twice (the second run from the cache) to show the text does not depend on
them.

After an intended change of the terminal output, regenerate the files and review their diff before committing::

    SPLITAUDIT_UPDATE_GOLDEN=1 pytest tests/test_render_golden.py
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import splitaudit
from splitaudit.checks.registry import display_of
from splitaudit.render.terminal import print_report

from conftest import Planted, save, tiles_of

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("SPLITAUDIT_UPDATE_GOLDEN") == "1"


def _plant_every_kind(ds: Planted, photos: dict[str, np.ndarray]) -> None:
    train = ds.split("train")
    save(train / "cat" / "dup.jpg", (train / "cat" / "cat_01.jpg").read_bytes())  # a group inside train
    save(ds.split("val") / "coffee" / "relabelled.jpg", (train / "flower" / "flower_04.jpg").read_bytes())  # label conflict
    save(ds.split("val") / "temple" / "broken.jpg", (train / "temple" / "temple_09.jpg").read_bytes()[:400])  # truncated
    for i, tile in enumerate(tiles_of(photos["rocket"], 64, 2)):  # a class only in test: class-balance facts
        save(ds.split("test") / "rocket" / f"rocket_{i}.jpg", tile)


def _portable(report: splitaudit.AuditReport, root: Path) -> splitaudit.AuditReport:
    splits = tuple(dataclasses.replace(s, root=f"<data>/{Path(s.root).relative_to(root).as_posix()}") for s in report.splits)
    return dataclasses.replace(report, splits=splits)


def _text(report: splitaudit.AuditReport, *, width: int, max_rows: int | None = None, wrap: bool | None = None) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None, highlight=False)
    print_report(report, console, **({} if max_rows is None else {"max_rows": max_rows}), wrap=wrap)
    return buf.getvalue()


def _compare(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run SPLITAUDIT_UPDATE_GOLDEN=1 pytest {Path(__file__).name}"
    expected = path.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "golden", "rendered"))
    assert text == expected, f"terminal output differs from {path.name} (regenerate only if intended):\n{diff}"


@pytest.fixture
def every_kind(planted: Planted, photos: dict[str, np.ndarray]) -> splitaudit.AuditReport:
    _plant_every_kind(planted, photos)
    first = splitaudit.audit(*planted.splits, backbone="none")
    again = splitaudit.audit(*planted.splits, backbone="none")  # from the cache: other timings, same text
    assert first.timings != again.timings or first.cache != again.cache
    assert _text(first, width=120) == _text(again, width=120)
    return _portable(first, planted.root)


def test_terminal_report_matches_golden(every_kind: splitaudit.AuditReport) -> None:
    kinds = {display_of(f.check) for f in every_kind.findings}
    assert kinds == {"pair", "group", "image", "table"}  # the golden file covers every display kind
    _compare("terminal_planted.txt", _text(every_kind, width=120))


def test_narrow_terminal_with_capped_rows_matches_golden(every_kind: splitaudit.AuditReport) -> None:
    # 72 columns: the splits table squeezes and folds its root column; findings wrap at spaces as on a terminal,
    # never mid-path. (The wide file is as a pipe or --output gets it: one line per finding.)
    _compare("terminal_planted_narrow.txt", _text(every_kind, width=72, max_rows=2, wrap=True))


def test_long_findings_wrap_at_spaces_under_their_text_and_never_break_a_path() -> None:
    from splitaudit.report.model import Evidence, Finding, ImageRef, SplitSummary, Verdict

    path = "val/" + "/".join(["a_rather_long_folder_name"] * 4) + "/image.jpg"
    prose = " ".join(["the medians differ by more than the spread of train's values"] * 3)
    f = Finding("image-properties", splitaudit.Severity.WARNING, f"{path}: {prose}", (ImageRef("val", path[4:]),),
                evidence=(Evidence("phash", 3), Evidence("ncc", 0.01, similarity=0.99)))
    report = splitaudit.AuditReport((SplitSummary("val", "<data>/val", 1, 1, 0, 0),), (f,),
                                    Verdict(False, splitaudit.Severity.ERROR, (), "no finding at or above error"))
    one = _text(report, width=60).splitlines()  # not a terminal: one line per finding, for grep
    assert f"  warning {path}: {prose}  (phash 3, ncc 0.990)" in one
    lines = _text(report, width=60, wrap=True).splitlines()
    start = lines.index("image-properties (1)") + 1
    body = lines[start:lines.index("", start)]
    assert body[0].startswith("  warning ") and all(line.startswith(" " * 10) for line in body[1:]), body
    assert path in "\n".join(body)  # whole, on one line (longer than the width, so alone there)
    assert all(len(line) <= 60 for line in body if path not in line), body
    assert " ".join(line.strip() for line in body).startswith(f"warning {path}: {prose}")
    legend = " ".join(lines[lines.index("", start) + 1:]).split("  FAIL")[0]
    assert "phash, dhash = differing bits" in legend and "ncc = pixel correlation" in legend and "cosine" not in legend
