"""The HTML report as a curator's triage tool (issue #14 item 5), in Python and in a real headless Chromium.

In the browser, a small DevTools client (``tests/cdp.py``, over ``--remote-debugging-pipe``) presses the keys a
curator presses, clicks the export buttons and receives the downloads; the exported baseline is then given to
``splitaudit check --baseline``. Skipped only where chromium is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import splitaudit
from splitaudit.options import Options
from splitaudit.render.html import CSP, CSP_LINKED, registration_of, render_html
from splitaudit.render.originals import relative_url
from splitaudit.report.baseline import load_baseline
from splitaudit.report.model import AuditReport, Finding, ImageRef, Severity, SplitSummary, Verdict

from conftest import Planted, save

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")


def blob(page: str, ident: str) -> Any:
    m = re.search(rf'<script type="application/json" id="{ident}">(.*?)</script>', page, re.S)
    return None if m is None else json.loads(m.group(1))


def section(page: str, anchor: str, until: str) -> str:
    return page.split(f'id="{anchor}"', 1)[1].split(f'id="{until}"', 1)[0]


def cross_pairs(report: AuditReport) -> list[Finding]:
    return [f for f in report.findings if f.category and len(f.images) == 2 and f.images[0].split != f.images[1].split]


# -- originals: embedded byte for byte up to the caps, or linked -----------------------------------------------------


def test_originals_are_embedded_byte_for_byte_within_the_caps(planted: Planted) -> None:
    # One large original (a 300x200 photo crop) to be downscaled: above the pixel cap set below.
    big = Image.open(planted.split("train") / "cat" / "cat_00.jpg").convert("RGB").resize((300, 200))
    save(planted.split("train") / "cat" / "big.png", big, "PNG")
    save(planted.split("val") / "cat" / "big_copy.png", big, "PNG")
    report = splitaudit.audit(*planted.splits, backbone="none")
    pairs = cross_pairs(report)
    page = render_html(report, options=Options(html_max_pixels=40_000))
    data, full = blob(page, "sa-data"), blob(page, "sa-full")
    n = len({(r.split, r.path) for f in pairs for r in f.images})
    assert len(full) == n and all(full)  # every pair image, nothing else
    for k, item in enumerate(full):
        split, path = data["splits"][data["images"][k][0]], data["images"][k][1]
        src, w, h, ow, oh, how = item
        raw = base64.b64decode(src.split(",", 1)[1])
        file = planted.split(split) / path
        if path.startswith("cat/big"):
            assert how == "downscaled" and (ow, oh) == (300, 200) and w * h <= 40_000 and w / h == pytest.approx(1.5, rel=0.02)
            assert Image.open(io.BytesIO(raw)).size == (w, h)
        else:  # the file itself, whatever its format (JPEG, PNG, WebP)
            assert how == "file" and raw == file.read_bytes() and Image.open(file).size == (w, h) == (ow, oh)
    assert "2 larger than 40,000 pixels were downscaled" in page

    # The total cap: embedding stops at the first image past it, and the page says how many are embedded.
    one = len(blob(render_html(report), "sa-full")[0][0])  # the first image as embedded at the default pixel cap
    capped = render_html(report, options=Options(html_embed_mib=(one + 10) / 2**20))
    assert sum(1 for o in blob(capped, "sa-full") if o) == 1
    assert f"Originals are embedded for 1 of {n} images" in capped
    # none: no blob at all, and the page says the view shows thumbnails
    without = render_html(report, options=Options(html_originals="none"))
    assert blob(without, "sa-full") is None and "no originals were embedded or linked" in without
    assert len(without) < len(capped) < len(page)


def test_linked_originals_are_relative_to_the_report_and_quoted(planted: Planted, tmp_path: Path) -> None:
    save(planted.split("train") / "cat" / "a #?%b.jpg", (planted.split("train") / "cat" / "cat_06.jpg").read_bytes())
    save(planted.split("val") / "cat" / "a #?%b.jpg", (planted.split("train") / "cat" / "cat_06.jpg").read_bytes())
    report = splitaudit.audit(*planted.splits, backbone="none")
    page = render_html(report, options=Options(html_originals="link"), output=planted.root / "report.html")
    data, full = blob(page, "sa-data"), blob(page, "sa-full")
    urls = {data["splits"][data["images"][k][0]] + "/" + data["images"][k][1]: item[0] for k, item in enumerate(full)}
    assert urls["train/temple/temple_00.jpg"] == "train/temple/temple_00.jpg"
    assert urls["val/cat/a #?%b.jpg"] == "val/cat/a%20%23%3F%25b.jpg"  # never a fragment, query or scheme
    assert all(item[5] == "linked" for item in full)
    assert f'content="{CSP_LINKED.replace(chr(39), "&#x27;")}"' in page and "img-src data: 'self' file:" in CSP_LINKED
    assert relative_url(str(planted.split("val") / "x.jpg"), str(tmp_path / "reports")).startswith("../data/val/")
    # Embedding keeps the strict policy: data: images only.
    assert f'content="{CSP.replace(chr(39), "&#x27;")}"' in render_html(report)


def test_registration_is_read_only_when_well_formed() -> None:
    good = {"score": 0.9, "mirrored": True, "scale": 1.1, "angle": -4.0, "dx": 0.02, "dy": -0.01}
    f = Finding("near-duplicates", Severity.ERROR, "m", (ImageRef("train", "a"), ImageRef("val", "b")), "near-duplicate",
                data={"registration": good})
    assert registration_of(f) == good
    for bad in ({**good, "scale": 0}, {**good, "angle": float("nan")}, {"score": 1.0}, "rotated", None):
        assert registration_of(dataclasses.replace(f, data={"registration": bad})) is None


# -- the distribution section: plots, not nested tables ---------------------------------------------------------------


def _digits_with_dark_val(root: Path, n: int = 240) -> tuple[Path, Path]:
    """scikit-learn's real digit scans at 32 px; a quarter of them in val, darkened by 30 grey levels and saved as
    BMP instead of PNG."""
    from sklearn.datasets import load_digits

    d = load_digits()
    small = (235 - d.images[:n] / 16.0 * 200).round().astype(np.uint8)
    rng = np.random.default_rng(3)
    is_val = np.zeros(n, bool)
    is_val[rng.permutation(n)[: n // 4]] = True
    for i in range(n):
        im = np.asarray(Image.fromarray(small[i]).resize((32, 32), Image.Resampling.BILINEAR)).astype(np.int16)
        if is_val[i]:
            im -= 30
        # val also in another file format (BMP): a categorical drift
        p = root / ("val" if is_val[i] else "train") / str(d.target[i]) / f"{i:04d}.{'bmp' if is_val[i] else 'png'}"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im.astype(np.uint8)).save(p)
    return root / "train", root / "val"


def test_drifted_properties_are_histograms_per_split_with_example_thumbnails(tmp_path: Path) -> None:
    train, val = _digits_with_dark_val(tmp_path / "digits")
    report = splitaudit.audit(train, val, backbone="none", select=["image-properties", "class-balance"])
    drifted = [f for f in report.by_check("image-properties") if f.data["kind"] == "numeric" and f.data["class"] is None]
    assert {"brightness", "file_size"} <= {f.data["property"] for f in drifted}  # darker, and BMP files are larger
    hist = report.distribution["properties"]["histograms"]["brightness"]
    assert set(hist["counts"]) == {"train", "val"} and len(hist["edges"]) == len(hist["counts"]["val"]) + 1
    assert sum(hist["counts"]["val"]) == sum(1 for _ in val.rglob("*.bmp"))
    page = render_html(report)
    dist = section(page, "distribution", "explain")
    svgs = re.findall(r'<svg class="hist"[^>]*aria-label="([^"]*)"', dist)
    assert svgs == [f.data["property"].replace("_", " ") for f in drifted]  # one histogram per drifted property
    first = dist.split('<svg class="hist"', 1)[1].split("</svg>", 1)[0]
    assert first.count("<polygon") == 2 and "<title>train: images per bin" in first and "<title>val: images per bin" in first
    # the finding's example images (the darkest val images) as thumbnails beside the plot
    names = re.findall(r"<code>([^<]*)</code>", dist.split('<div class="drift">', 1)[1].split('<div class="drift">', 1)[0])
    assert names == [f"{r.split}/{r.path}" for r in drifted[0].images] and 'class="th" data-t=' in dist
    # the format change as each split's shares
    assert 'aria-label="format: share of images"' in dist
    # flat tables only (no key/value tables nested in tables), and no chart of p-values or degrees of freedom
    assert 'class="kv"' not in dist and "<table" in dist
    labels = re.findall(r'aria-label="([^"]*)"', page)
    assert not [x for x in labels if "p_value" in x or "dof" in x or "p-value" in x]
    svg_text = " ".join(re.findall(r"<svg.*?</svg>", page, re.S))
    assert "p_value" not in svg_text and ">dof<" not in svg_text


# -- in the browser: a scripted triage ----------------------------------------------------------------------------


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "splitaudit", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def _non_blank(png: bytes, min_colours: int = 200) -> np.ndarray:
    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert im.std() > 10 and len(np.unique(im.reshape(-1, 3), axis=0)) > min_colours
    return im


@needs_chromium
def test_scripted_triage_downloads_a_baseline_that_check_accepts(planted: Planted, tmp_path: Path) -> None:
    from cdp import Browser
    from test_render_html import CanaryProxy

    splits = [str(p) for p in planted.splits]
    out = tmp_path / "report.html"
    r = _cli("check", *splits, "--backbone", "none", "--format", "html", "--output", str(out))
    assert r.returncode == 1, r.stderr  # the planted leaks fail
    report = splitaudit.audit(*planted.splits, backbone="none")
    pairs = cross_pairs(report)
    assert len(pairs) == 8
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with CanaryProxy() as proxy, Browser(CHROMIUM or "chromium", tmp_path / "profile", downloads=downloads, size=(1280, 1000),
                                         extra=(f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>")) as b:
        b.open(out.as_uri())
        # The DOM has the pairs: one row per pair, in report order, with the report's finding ids.
        ids = b.js("Array.prototype.map.call(document.querySelectorAll('#pairs-body tr'), function (t) {"
                   "return t.lastChild.textContent; })")
        assert ids == [f.id for f in pairs]
        assert b.js("document.querySelector('tr.sel').getAttribute('data-row')") == "0"
        b.key("j")
        b.key("ArrowDown")
        b.key("k")
        assert b.js("document.querySelector('tr.sel').getAttribute('data-row')") == "1"
        _non_blank(b.screenshot())

        # Enter: the pair side by side at full resolution (the files' own pixel sizes).
        b.key("Enter")
        assert b.js("document.getElementById('viewer').hidden") is False
        b.until("Array.prototype.every.call(document.querySelectorAll('#v-stage img'), function (i) {"
                "return i.complete && i.naturalWidth > 0; })")
        shown = b.js("Array.prototype.map.call(document.querySelectorAll('#v-stage img'), function (i) {"
                     "return [i.alt, i.naturalWidth, i.naturalHeight]; })")
        a, c = pairs[1].images
        assert [s[0] for s in shown] == [f"{a.split}/{a.path}", f"{c.split}/{c.path}"]
        for (name, w, h) in shown:
            assert Image.open(planted.root / name).size == (w, h)
        _non_blank(b.screenshot())
        # d: the difference view (b blended over a), b: blink, s: back; Esc closes.
        b.key("d")
        assert b.js("document.getElementById('v-stage').getAttribute('data-mode')") == "diff"
        assert b.js("getComputedStyle(document.querySelector('#v-stage img.b')).mixBlendMode") == "difference"
        b.key("b")
        assert b.js("document.getElementById('v-stage').getAttribute('data-mode')") == "blink"
        b.key("s")
        b.key("Escape")
        assert b.js("document.getElementById('viewer').hidden") is True

        # Decisions: 2 (not a copy) on pair 1, then 3 (accept) and 1 (same shot) on the pairs that follow.
        b.key("2")
        b.key("3")
        b.key("1")
        decided = {pairs[1].id: "not a copy", pairs[2].id: "accept", pairs[3].id: "same shot"}
        assert b.js("document.getElementById('triage-status').textContent") == f"3 of {len(pairs)} pairs decided"
        # A click on a decision button works too, and they survive a reload (kept in the browser).
        b.click("tr[data-row='5'] button[data-decision='accept']")
        decided[pairs[5].id] = "accept"
        b.until("document.querySelector(\"tr[data-row='5']\").getAttribute('data-decision') === 'accept'")
        # Chromium hands a page's storage writes to its browser process asynchronously: on a loaded machine a
        # reload at once read none of the four (once in a full run); reopened until they show, within the timeout
        want, deadline = f"4 of {len(pairs)} pairs decided", time.monotonic() + b.timeout
        while True:
            b.open(out.as_uri())
            status = b.js("document.getElementById('triage-status').textContent")
            if status == want or time.monotonic() > deadline:
                break
        assert status == want
        assert b.js("document.querySelectorAll('tr[data-decision]').length") == 4

        baseline = b.download("#x-baseline", downloads, "splitaudit-baseline.json")
        table = b.download("#x-csv", downloads, "splitaudit-decisions.csv")

    assert proxy.page_hosts() == set(), proxy.server.lines  # the whole triage, exports included, asked no one
    accepted = {k for k, v in decided.items() if v != "same shot"}
    assert load_baseline(baseline).ids == accepted
    rows = list(csv.DictReader(table.read_text(encoding="utf-8").splitlines()))
    assert [r["id"] for r in rows] == [f.id for f in pairs]
    assert {r["id"]: r["decision"] for r in rows if r["decision"]} == decided
    assert all(r["path_b"] == f.images[1].path for r, f in zip(rows, pairs))

    # The baseline is what `check --baseline` reads: exactly those pairs are accepted, the others still fail.
    r = _cli("check", *splits, "--backbone", "none", "--baseline", str(baseline), "--format", "json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    got = {f["id"] for f in doc["findings"] if f["data"].get("baseline") == "accepted"}
    assert got == accepted


def _registered_copy(a: Image.Image, *, k: float, angle: float, d: tuple[float, float]) -> Image.Image:
    """b with x_b = k R(angle) (x_a - c - d*L) + c: each pixel of b samples a at R(-angle)(x_b - c)/k + c + d*L."""
    side = a.size[0]
    c = (side / 2, side / 2)
    t = math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    m = [[cos / k, sin / k], [-sin / k, cos / k]]  # R(-angle) / k in y-down pixel coordinates
    off = [c[0] + d[0] * side - (m[0][0] * c[0] + m[0][1] * c[1]), c[1] + d[1] * side - (m[1][0] * c[0] + m[1][1] * c[1])]
    return a.transform(a.size, Image.Transform.AFFINE, (m[0][0], m[0][1], off[0], m[1][0], m[1][1], off[1]),
                       resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


@needs_chromium
@pytest.mark.parametrize("mirrored", [False, True])
def test_difference_view_applies_the_registration(photos: dict[str, np.ndarray], tmp_path: Path, mirrored: bool) -> None:
    """A copy rotated, scaled and shifted by a known registration: drawn with it, the difference is dark; drawn
    without it (the same page minus the registration), it is not. Mirrored: the registration holds for b's mirror
    image (b is flipped first)."""
    from cdp import Browser

    a = Image.fromarray(photos["astronaut"][40:296, 120:376])  # 256x256 of a real photo
    geometry = {"score": 0.97, "mirrored": mirrored, "scale": 1.15, "angle": 12.0, "dx": 0.04, "dy": -0.03}
    b = _registered_copy(a, k=geometry["scale"], angle=geometry["angle"], d=(geometry["dx"], geometry["dy"]))
    if mirrored:
        b = b.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    save(tmp_path / "train" / "x" / "a.png", a, "PNG")
    save(tmp_path / "val" / "x" / "b.png", b, "PNG")
    f = Finding("near-duplicates", Severity.ERROR, "val/x/b.png is a near-duplicate of train/x/a.png",
                (ImageRef("train", "x/a.png", "x"), ImageRef("val", "x/b.png", "x")), "near-duplicate",
                data={"registration": geometry})
    splits = tuple(SplitSummary(s, str(tmp_path / s), 1, 1, 0, 0, (("x", 1),)) for s in ("train", "val"))
    report = AuditReport(splits, (f,), Verdict(True, Severity.ERROR, (("error", 1),), "1 finding"))

    def darkness(finding: Finding, name: str) -> float:
        page = tmp_path / name
        page.write_text(render_html(dataclasses.replace(report, findings=(finding,))), encoding="utf-8")
        with Browser(CHROMIUM or "chromium", tmp_path / f"profile-{name}", size=(1000, 900)) as br:
            br.open(page.as_uri())
            br.key("Enter")
            br.key("d")
            br.until("Array.prototype.every.call(document.querySelectorAll('#v-stage img'), function (i) {"
                     "return i.complete && i.naturalWidth > 0; })")
            box = br.js("(function () { var r = document.querySelector('#v-stage .stack').getBoundingClientRect();"
                        "return [r.left, r.top, r.width]; })()")
            shot = br.call("Page.captureScreenshot", session=True, format="png",
                           clip={"x": box[0], "y": box[1], "width": box[2], "height": box[2], "scale": 1})
        im = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("L"), dtype=np.float64)
        m = im.shape[0] // 5  # the middle, where b covers a whatever the transform
        return float(im[m:-m, m:-m].mean())

    registered = darkness(f, "registered.html")
    unregistered = darkness(dataclasses.replace(f, data={}), "unregistered.html")
    print(f"difference view mean grey: registered {registered:.1f}, unregistered {unregistered:.1f}")
    assert registered < 12 and unregistered > 3 * registered, (registered, unregistered)


@needs_chromium
def test_linked_originals_open_from_a_report_next_to_the_data(planted: Planted, tmp_path: Path) -> None:
    """The linked files load under the page's policy (``file:`` allowed for images, nothing else)."""
    from cdp import Browser

    report = splitaudit.audit(*planted.splits, backbone="none")
    page = planted.root / "report.html"
    page.write_text(render_html(report, options=Options(html_originals="link"), output=page), encoding="utf-8")
    with Browser(CHROMIUM or "chromium", tmp_path / "profile") as b:
        b.open(page.as_uri())
        b.key("Enter")
        b.until("Array.prototype.every.call(document.querySelectorAll('#v-stage img'), function (i) {"
                "return i.complete && i.naturalWidth > 0; })")
        srcs = b.js("Array.prototype.map.call(document.querySelectorAll('#v-stage img'), function (i) { return i.src; })")
    a, c = cross_pairs(report)[0].images
    assert srcs == [(planted.split(a.split) / a.path).as_uri(), (planted.split(c.split) / c.path).as_uri()]
