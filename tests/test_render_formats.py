"""Markdown (pull-request comment), SARIF and GitHub workflow annotations, on real audits of real files."""

from __future__ import annotations

import html.parser
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from markdown_it import MarkdownIt  # CommonMark + tables, as GitHub renders comments (markdown-it-py ships with rich)

import splitaudit
from splitaudit.render import RENDERERS
from splitaudit.render.github import render_github
from splitaudit.render.markdown import TOP_FINDINGS, render_markdown
from splitaudit.render.sarif import render_sarif, sarif_document
from splitaudit.report.model import AuditReport, BestCopies, Evidence, Finding, ImageRef, Severity, SplitSummary, Verdict, _clean

from conftest import Planted, save

EVIL = "<script>alert(1)</script>.png"
INJECT = "x\n::error file=evil.py::injected, @owner #1.jpg"  # a newline in a file name would start a second command


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "splitaudit", *args, "--backbone", "none"], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def hostile(planted: Planted) -> AuditReport:
    """The planted leaks plus two more whose file names are hostile (HTML payload, workflow-command injection)."""
    src = planted.split("train") / "cat" / "cat_06.jpg"
    save(planted.split("val") / EVIL, src.read_bytes())
    save(planted.split("val") / "cat" / INJECT, (planted.split("train") / "cat" / "cat_07.jpg").read_bytes())
    return splitaudit.audit(*planted.splits, backbone="none")


class _Html(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.code: list[str] = []
        self._code = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        self._code = tag == "code"

    def handle_endtag(self, tag: str) -> None:
        self._code = False

    def handle_data(self, data: str) -> None:
        if self._code:
            self.code.append(data)


def test_markdown_is_compact_and_renders_names_as_text(hostile: AuditReport) -> None:
    text = render_markdown(hostile)
    assert text.startswith("### splitaudit: \u274c FAIL\n")
    counts = dict(hostile.verdict.counts)
    assert f"**{counts['error']}** errors" in text
    assert f"**Top findings** ({TOP_FINDINGS} of {len(hostile.findings)}):" in text
    assert text.count("\n- **") == TOP_FINDINGS and f"and {len(hostile.findings) - TOP_FINDINGS} more" in text
    assert "`val/temple/copy_exact.jpg` (temple) \u2194 `train/temple/temple_00.jpg` (temple)" in text

    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    doc = _Html()
    doc.feed(rendered)
    assert "script" not in doc.tags and "img" not in doc.tags
    assert {"table", "ul", "code"} <= set(doc.tags)
    assert f"val/{EVIL}" in doc.code  # the payload is code text, never an element


def test_markdown_escapes_free_text_and_stays_small() -> None:
    refs = [ImageRef("val", f"c/{k}.jpg", "c") for k in range(3000)]
    findings = tuple(Finding("near-duplicates", Severity.ERROR, "m", (ImageRef("train", "c/0.jpg", "c"), r), "near-duplicate",
                             (Evidence("phash", 2), Evidence("dhash", 3))) for r in refs)
    findings += (Finding("class-balance", Severity.WARNING, "class <img src=x onerror=alert(1)> | *only* in @val", ()),)
    report = AuditReport((SplitSummary("train", "t", 1, 1, 0, 0), SplitSummary("val", "v", 3000, 3000, 0, 0)), findings,
                         Verdict(True, Severity.ERROR, (("error", 3000), ("warning", 1), ("info", 0)), "3000 finding(s)"))
    text = render_markdown(report)  # 3001 findings: the default comment lists 10 and counts the rest
    assert len(text) < 4000 and text.count("\n- **") == TOP_FINDINGS and "and 2991 more" in text
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(render_markdown(report, top=3001))
    assert "<img" not in rendered and "&lt;img src=x onerror=alert(1)&gt;" in rendered and "<em>" not in rendered


def test_sarif_document(hostile: AuditReport, planted: Planted) -> None:
    doc = sarif_document(hostile, cwd=str(planted.root))
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    (run_,) = doc["runs"]
    rules = run_["tool"]["driver"]["rules"]
    assert run_["tool"]["driver"]["name"] == "splitaudit"
    assert [r["id"] for r in rules][: len(hostile.checks)] == [name for name, _ in hostile.checks]
    results = run_["results"]
    assert len(results) == len(hostile.findings)
    for res, f in zip(results, hostile.findings):
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"] == f.check
        assert res["level"] == {"error": "error", "warning": "warning", "info": "note"}[f.severity.label]
        assert res["partialFingerprints"]["splitauditFindingId/v1"] == f.id
        if f.images:
            uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            path = f"{f.images[-1].split}/{f.images[-1].path}"
            assert uri == quote(path, safe="/")  # relative to cwd (the data root here), percent-encoded
            assert (planted.root / unquote(uri)).is_file()
    assert any("%3Cscript%3Ealert%281%29%3C/script%3E.png" in json.dumps(r.get("locations", [])) for r in results)
    exact = next(r for r in results if r["message"]["text"].startswith("val/temple/copy_exact.jpg"))
    assert exact["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "train/temple/temple_00.jpg"
    assert "suppressions" not in exact
    accepted = splitaudit.audit(*planted.splits, backbone="none", baseline=[hostile.findings[0].id])
    first = sarif_document(accepted)["runs"][0]["results"][0]
    assert first["suppressions"] == [{"justification": "accepted in the splitaudit baseline", "kind": "external", "status": "accepted"}]
    assert render_sarif(hostile) == render_sarif(hostile) and json.loads(render_sarif(hostile))["version"] == "2.1.0"


def test_github_annotations_cannot_be_injected(hostile: AuditReport) -> None:
    text = render_github(hostile)
    lines = text.splitlines()
    assert len(lines) == len(hostile.findings) + 1 and lines[-1].startswith("FAIL ")
    assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines[:-1])
    assert not any(line.startswith("::error file=evil.py") for line in lines)
    hit = next(line for line in lines if "injected" in line)
    # Control characters are written as visible escapes (issue #13), then runner-escaped.
    assert "x\\n%3A%3Aerror file=evil.py%3A%3Ainjected%2C @owner #1.jpg" in hit  # the file= property
    assert "x\\n::error file=evil.py::injected, @owner #1.jpg" in hit  # the message
    exact = next(line for line in lines if "copy_exact.jpg is an exact copy" in line)
    assert exact.startswith("::error file=") and "/val/temple/copy_exact.jpg,title=splitaudit exact-duplicates::" in exact
    accepted = splitaudit.audit(*[Path(s.root) for s in hostile.splits], backbone="none", baseline=[hostile.findings[0].id])
    first = render_github(accepted).splitlines()[0]
    assert first.startswith("::notice ") and "(accepted in baseline)" in first


def test_cli_formats(planted: Planted, tmp_path: Path) -> None:
    assert {"terminal", "concise", "json", "html", "markdown", "sarif", "github"} <= set(RENDERERS)
    r = run("check", "train", "val", "test", "--format", "sarif", cwd=planted.root)
    assert r.returncode == 1 and json.loads(r.stdout)["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].startswith(("val/", "test/"))
    r = run("check", "train", "val", "test", "--format", "github", cwd=planted.root)
    assert r.returncode == 1 and r.stdout.startswith("::error file=") and r.stdout.splitlines()[-1].startswith("FAIL 8 finding(s)")
    r = run("check", "train", "val", "test", "--format", "markdown", cwd=planted.root)
    assert r.returncode == 1 and r.stdout.startswith("### splitaudit:")
    out = tmp_path / "report.html"
    r = run("check", "train", "val", "test", "--format", "html", "--output", str(out), cwd=planted.root)
    assert r.returncode == 1 and r.stdout == "" and r.stderr.splitlines()[-1].startswith("FAIL")  # after progress lines
    assert out.read_text().startswith("<!DOCTYPE html>") and 'id="n-pairs">8<' in out.read_text()
    r = run("check", "train", "val", "--format", "pdf", cwd=planted.root)
    assert r.returncode == 2 and "'github'" in r.stderr and "'html'" in r.stderr


def test_evidence_formats_itself_the_same_in_every_text_format(planted: Planted) -> None:
    assert Evidence("bytes", 0).describe() == "same bytes" and Evidence("pixels", 0, True).describe() == "same pixels"
    assert Evidence("phash", 4, True).describe() == "phash 4 mirrored" and Evidence("dhash", 0).describe() == "dhash 0"
    assert Evidence("embedding", 1 - 0.98125, False, 0.98125).describe() == "cosine 0.981"
    assert Evidence("ncc", 0.07, True, 0.93).describe() == "ncc 0.930 mirrored"
    assert Evidence.describe_all(()) == ""
    report = splitaudit.audit(*planted.splits, backbone="none")
    pairs = [f for f in report.findings if f.evidence]
    assert pairs
    texts = {name: render(report) for name, render in RENDERERS.items() if name != "json"}
    for f in pairs:
        line = Evidence.describe_all(f.evidence)
        assert line.startswith("same ") or "phash " in line
        for name in ("terminal", "github", "html"):
            assert line in texts[name], name


def test_csv_has_one_row_per_pair_with_every_evidence_value(planted: Planted, tmp_path: Path) -> None:
    import csv
    import io
    import shutil

    import splitaudit
    from splitaudit.render import render_csv

    # A file name that a spreadsheet would run as a formula stays data.
    src = planted.split("train") / "coffee" / "coffee_03.jpg"
    (planted.split("val") / "=SUM(1)").mkdir()
    shutil.copyfile(src, planted.split("val") / "=SUM(1)" / "x.jpg")
    report = splitaudit.audit(*planted.splits, backbone="none")
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    pairs = [f for f in report.findings if f.check in ("exact-duplicates", "pixel-duplicates", "near-duplicates")]
    assert len(rows) == len(pairs) > 0
    assert [r["id"] for r in rows] == [f.id for f in pairs]
    by_path = {r["path_b"]: r for r in rows}
    formula = by_path["'=SUM(1)/x.jpg"]
    assert (formula["check"], formula["bytes_distance"], formula["path_a"], formula["label_b"]) == (
        "exact-duplicates", "0", "coffee/coffee_03.jpg", "'=SUM(1)")
    mirrored = by_path["cat/copy_mirrored.jpg"]
    assert mirrored["mirrored"] == "1" and int(mirrored["phash_distance"]) <= 6 and mirrored["bytes_distance"] == ""


def test_report_json_is_json_dumps_text_written_piece_by_piece(hostile: AuditReport, planted: Planted) -> None:
    # to_json streams the encoder's pieces into one buffer (json.dumps with indent joins a list of all of them:
    # +76 MiB at 20k photos): the text must be json.dumps's to the byte
    from splitaudit.report.model import indented_json

    for report in (hostile, splitaudit.audit(*planted.splits, backbone="none")):
        doc = report.to_dict()
        assert report.to_json() == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    odd = {"é\u2028\"x\"": [float("nan"), float("inf"), -0.0, 1e-300, 2**70, True, None, {}, [], ""],
           "b": {"z": [[]], "a": {"\x00": "😀"}}, "a": 0.1 + 0.2}
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    odder = {"t": (1, (2.5, ()), [{}]), "keys": [{3: "int", -1: "ints"}, {2.5: "float", float("nan"): "nan"},
                                                 {True: "t", False: "f"}, {None: "n"}], "-inf": -float("inf"),
             "deep": [[[[{"k": [None, False, Level.HIGH, Name("s\n\t\u00e9")]}]]]], "big": -(2**100), "tiny": 5e-324,
             "e": [1e16, 1e22, 123456789.0, -1.5e-7]}
    for doc in (odd, odder, {"x": odder, "y": [odd, odder]}, [odder], 0.0, None, True, "é"):
        assert indented_json(doc) == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert indented_json([]) == "[]\n" and indented_json("s") == '"s"\n'
    with pytest.raises(TypeError):
        indented_json({"a": object()})


def test_report_json_written_in_chunks_is_the_same_text(hostile: AuditReport, planted: Planted) -> None:
    # the CLI streams the JSON to its file a few MB at a time (a 1M-image check's report is 71 MB): whatever the
    # chunk, the file holds to_json's text, and a chunk smaller than the text means several writes
    import io

    from splitaudit.report.model import indented_json, write_indented_json

    class Counted(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            Counted.writes += 1
            return super().write(text)

    docs = [r.to_dict() for r in (hostile, splitaudit.audit(*planted.splits, backbone="none"))]
    docs += [{"é\u2028": [float("nan"), (1, ()), {}, [[]], {3: None}]}, [], "s", 0.5]
    for doc in docs:
        whole = indented_json(doc)
        for chunk in (1, 97, 1 << 22):
            Counted.writes = 0
            fh = Counted()
            write_indented_json(doc, fh, chunk=chunk)
            assert fh.getvalue() == whole, chunk
            if chunk == 97 and len(whole) > 10 * chunk and whole.count("[\n") > 1:
                assert Counted.writes > 2, (Counted.writes, len(whole))
    report = splitaudit.audit(*planted.splits, backbone="none")
    fh = io.StringIO()
    report.write_json(fh)
    assert fh.getvalue() == report.to_json()
    # ... with each eval image's best copy made as it is written (a dictionary per image, 100k at 1M images)
    best = report.copies["best"]
    assert best and all(isinstance(rows, BestCopies) and len(rows) > 0 for rows in best.values())
    listed = json.loads(fh.getvalue())["copies"]["best"]
    assert listed == {split: [_clean(row) for row in rows] for split, rows in best.items()}
    assert any(row["partner"] is not None for rows in listed.values() for row in rows)
