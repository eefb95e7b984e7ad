"""The command line: exit codes 0/1/2, byte-identical JSON, select/ignore, exit-zero, output files, config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from splitaudit.cli import main

from conftest import Planted


def run(*args: str, cwd: Path | None = None, embeddings: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; hash evidence only unless ``embeddings`` (the cascade has its own tests)."""
    extra = ["--backbone", "none"] if args[:1] == ("check",) and not embeddings else []
    return subprocess.run([sys.executable, "-m", "splitaudit", *args, *extra], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_exit_codes_clean_findings_and_errors(clean: Planted, planted: Planted, tmp_path: Path) -> None:
    assert main(["check", "--backbone", "none", *map(str, clean.splits), "--quiet"]) == 0
    assert main(["check", "--backbone", "none", *map(str, planted.splits), "--quiet"]) == 1
    assert main(["check", "--backbone", "none", *map(str, planted.splits), "--quiet", "--exit-zero"]) == 0
    assert main(["check", "--backbone", "none", str(planted.split("train")), str(tmp_path / "missing")]) == 2


def test_usage_errors_are_one_line_exit_2(planted: Planted) -> None:
    for args in (["check", "--fail-on", "fatal", str(planted.split("train"))],
                 ["check", *map(str, planted.splits), "--select", "no-such-check"],
                 ["check", *map(str, planted.splits), "--max-leak-fraction", "2"],
                 ["check"],
                 ["check", "--split", "broken", str(planted.split("train"))]):
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("splitaudit: error:"), r.stderr
        assert "Traceback" not in r.stderr


def test_parameter_errors_name_parameter_allowed_values_and_input(planted: Planted) -> None:
    r = run("check", *map(str, planted.splits), "--select", "no-such-check")
    assert "The 'select' parameter must be one of {" in r.stderr and "'near-duplicates'" in r.stderr and "Got 'no-such-check' instead." in r.stderr


def test_json_is_byte_identical_across_runs_and_complete(planted: Planted, tmp_path: Path) -> None:
    a = run("check", *map(str, planted.splits), "--format", "json", "--cache-dir", str(tmp_path / "c1"))
    b = run("check", *map(str, planted.splits), "--format", "json", "--no-cache")
    assert a.returncode == b.returncode == 1
    assert a.stdout == b.stdout
    doc = json.loads(a.stdout)
    assert doc["schema_version"] == 1 and doc["verdict"]["failed"] is True
    assert list(doc) == sorted(doc)
    pair = next(f for f in doc["findings"] if f["check"] == "near-duplicates")
    assert set(pair) == {"id", "check", "severity", "message", "category", "images", "evidence", "data"}
    assert [set(i) for i in pair["images"]] == [{"split", "path", "label"}] * 2
    assert {e["stage"] for e in pair["evidence"]} >= {"phash", "dhash"}
    # the JSON written to a file (in chunks) is the text written to standard output
    out = tmp_path / "report.json"
    c = run("check", *map(str, planted.splits), "--format", "json", "--no-cache", "--output", str(out))
    assert c.returncode == 1 and c.stdout == "" and out.read_text(encoding="utf-8") == a.stdout
    # written beside its place and moved there: nothing else is left, and the file has a new file's usual mode
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["report.json"]
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    # a file that was there keeps its mode; a link is written through, not replaced by a file
    out.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(out)
    out.write_text("old\n", encoding="utf-8")
    e = run("check", *map(str, planted.splits), "--format", "json", "--no-cache", "--output", str(link))
    assert e.returncode == 1 and link.is_symlink() and out.read_text(encoding="utf-8") == a.stdout
    assert out.stat().st_mode & 0o777 == 0o640
    link.unlink()
    out.write_text("old\n", encoding="utf-8")
    f = run("check", *map(str, planted.splits), "--format", "json", "--no-cache", "--output", str(out))
    assert f.returncode == 1 and out.read_text(encoding="utf-8") == a.stdout and out.stat().st_mode & 0o777 == 0o640
    # a write that fails midway (the file size limit, EFBIG; Python ignores SIGXFSZ): a one-line error, exit 2,
    # the report that was there kept and no partial file left
    import resource

    out.write_text("an earlier report\n", encoding="utf-8")
    limited = subprocess.run([sys.executable, "-m", "splitaudit", "check", *map(str, planted.splits), "--backbone", "none",
                              "--format", "json", "--no-cache", "--output", str(out)], capture_output=True, text=True,
                             timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)))
    assert limited.returncode == 2, limited.stderr
    assert limited.stderr.splitlines()[-1].startswith("splitaudit: error: cannot write"), limited.stderr
    assert out.read_text(encoding="utf-8") == "an earlier report\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["report.json"]


def test_output_file_and_select_ignore(planted: Planted, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    r = run("check", *map(str, planted.splits), "--format", "json", "--output", str(out), "--select", "exact-duplicates,near-duplicates")
    *progress, verdict = r.stderr.splitlines()  # progress lines (stderr is no terminal here), then the verdict
    assert r.returncode == 1 and r.stdout == "" and verdict.startswith("FAIL")
    assert progress and all(line.startswith("splitaudit check: ") for line in progress), progress
    doc = json.loads(out.read_text())
    assert {f["check"] for f in doc["findings"]} == {"exact-duplicates", "near-duplicates"}
    assert sorted(doc["checks"]) == ["exact-duplicates", "near-duplicates"]
    r = run("check", *map(str, planted.splits), "--ignore", "exact-duplicates,pixel-duplicates,near-duplicates,label-conflicts", "--quiet")
    assert r.returncode == 0, r.stdout


def test_fail_on_warning(planted: Planted) -> None:
    from conftest import save

    train = planted.split("train")
    save(train / "cat" / "dup.jpg", (train / "cat" / "cat_01.jpg").read_bytes())
    only_warnings = ["--select", "within-split-duplicates"]
    assert main(["check", "--backbone", "none", *map(str, planted.splits), *only_warnings, "-q"]) == 0
    assert main(["check", "--backbone", "none", *map(str, planted.splits), *only_warnings, "-q", "--fail-on", "warning"]) == 1


def test_named_splits_and_terminal_output(planted: Planted) -> None:
    r = run("check", "--split", f"fit={planted.split('train')}", "--split", f"holdout={planted.split('val')}")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert any("holdout/temple/copy_exact.jpg is an exact copy of fit/temple/temple_00.jpg" in line for line in lines)
    assert lines[-1].startswith("FAIL 4 finding(s) at or above error")


def test_config_from_pyproject(planted: Planted) -> None:
    (planted.root / "pyproject.toml").write_text(
        '[tool.splitaudit]\nsplits = ["train", "val", "test"]\nignore = ["near-duplicates"]\nformat = "json"\n\n'
        "[tool.splitaudit.checks.exact-duplicates]\nmax-matches-per-image = 1\n"
    )
    r = run("check", cwd=planted.root / "val")  # found by walking up from the working directory
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert "near-duplicates" not in doc["checks"]
    assert doc["checks"]["exact-duplicates"] == {"max_matches_per_image": 1}
    assert [s["name"] for s in doc["splits"]] == ["train", "val", "test"]


@pytest.mark.parametrize(
    "toml, message",
    [
        ('[tool.splitaudit]\nsplitz = ["a"]\n', "unknown key 'splitz' in [tool.splitaudit]"),
        ('[tool.splitaudit]\nfail-on = 3\n', "'fail-on' must be 'error', 'warning' or 'info'. Got 3 instead."),
        ('[tool.splitaudit.checks.near-duplicates]\nmax-phahs = 3\n', "has no parameter 'max-phahs'"),
        ('[tool.splitaudit.checks.near-duplicates]\nmax-phash = "8"\n', "'max_phash' parameter of check 'near-duplicates' must be of type int. Got '8' instead."),
        ('[tool.splitaudit.checks.no-such]\nx = 1\n', "The 'check_options' parameter must be keyed by check names"),
        ("[tool.splitaudit\n", "is not valid TOML"),
    ],
)
def test_bad_config_is_exit_2_naming_the_key(planted: Planted, toml: str, message: str) -> None:
    (planted.root / "pyproject.toml").write_text(toml)
    r = run("check", "train", "val", cwd=planted.root)
    assert r.returncode == 2, r.stdout
    assert message in r.stderr and r.stderr.count("\n") == 1


def test_checks_command_lists_parameters() -> None:
    r = run("checks")
    assert r.returncode == 0
    assert "near-duplicates" in r.stdout and "max-phash=" in r.stdout


def test_quiet_prints_exactly_one_line_even_when_piped(planted: Planted) -> None:
    r = run("check", *map(str, planted.splits), "--quiet")
    assert r.returncode == 1
    assert r.stdout.count("\n") == 1 and r.stdout.startswith("FAIL ")


def test_a_reader_that_goes_away_is_not_an_internal_error() -> None:
    """`splitaudit checks | head`: the pipe's reader is gone before we write (its end closed before we start, so the
    write always fails). No traceback, no 'internal error', and the exit status of a process killed by SIGPIPE."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([sys.executable, "-m", "splitaudit", "checks"], stdout=write_end, stderr=subprocess.PIPE,
                           text=True, timeout=300)
    finally:
        os.close(write_end)
    assert r.returncode == 141, r.stderr
    assert r.stderr == ""


def test_severity_prints_as_its_name_and_a_report_shows_itself_in_notebooks(planted: Planted) -> None:
    import splitaudit
    from splitaudit.report import Severity

    assert (str(Severity.ERROR), f"{Severity.WARNING}", f"{Severity.INFO:>6}") == ("error", "warning", "  info")
    report = splitaudit.audit(*planted.splits, backbone="none")
    html = report._repr_html_()
    assert html.lstrip().lower().startswith("<!doctype html") and "copy_exact.jpg" in html
    assert 'id="sa-full"' not in html and "no originals were embedded or linked" in html  # notebooks stay small
