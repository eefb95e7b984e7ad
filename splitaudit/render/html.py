"""The curator's report: one self-contained HTML file (``--format html``).

Everything is inside the file: thumbnails are ``data:`` URIs made here with Pillow, charts are inline SVG drawn
here, the one script is inline and allowed by its hash in a Content-Security-Policy that forbids every network
load (``default-src 'none'``), so the page works offline and as a CI artifact and cannot leak a request even if
an image or a name were hostile. Every file name, label and message is HTML-escaped in Python or written with
``textContent`` in the script, never parsed as markup.

Cross-split pairs live in a compact JSON blob; the script renders one page of them at a time (filter, sort,
paginate), so 10k pairs stay usable. Thumbnails are embedded for at most ``max_thumbnails`` distinct images (most
severe findings first); the rest show their names and evidence only. See ``docs/report.md``.

The page is built from small section functions, one per part (header and verdict, pairs, one per group check,
image findings, classes, distribution, explain, other findings, run). Which section shows a finding is what its
check declared when it registered (``display``: pair, group, image or table), never its name.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, features

from ..checks.registry import all_checks, display_of
from ..errors import invalid_parameter
from ..features import decode
from ..features.extract import DEFAULT_MAX_PIXELS
from ..report.model import AuditReport, Evidence, Finding, ImageRef

if TYPE_CHECKING:
    from ..explain.report import ExplainReport

#: Longest side of an embedded thumbnail, in pixels.
THUMB_SIDE = 96
#: Distinct images that get an embedded thumbnail (about 2-4 KB each as WebP): bounds the file size and the time
#: spent decoding, whatever the number of findings. Images past the cap are listed by name and evidence.
DEFAULT_MAX_THUMBNAILS = 2000
#: Pairs drawn per page by the script.
PAGE_SIZE = 50
#: Groups (within-split duplicates, label conflicts, group leakage) drawn in full; the rest are counted.
MAX_GROUPS = 300
#: Classes drawn in the class-distribution chart (the most frequent); the table below it lists all of them.
MAX_CHART_CLASSES = 40
#: Pairs listed as text for browsers with scripts off.
NOSCRIPT_PAIRS = 100

ImageLoader = Callable[[ImageRef], Any]

_THUMB_FORMAT = "WEBP" if features.check("webp") else "JPEG"  # WebP is ~30% smaller at this size
_THUMB_MIME = "image/webp" if _THUMB_FORMAT == "WEBP" else "image/jpeg"
_MAX_FILE_BYTES = 64 * 1024 * 1024  # never read a huge file just for a 96-px preview
_PALETTE = ("#3b6fb6", "#e0822f", "#3f9a5a", "#b8473f", "#7d5ab5", "#8c6d3f", "#c760a6", "#6b6b6b")


# -- thumbnails ----------------------------------------------------------------------------------------------------


def thumbnail_uri(im: Image.Image, side: int = THUMB_SIDE) -> str:
    """A decoded image as a ``data:`` URI no larger than ``side`` pixels on its longest side."""
    im = decode.to_rgb(im)
    im.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    if _THUMB_FORMAT == "WEBP":
        im.save(buf, "WEBP", quality=70, method=4)
    else:
        im.save(buf, "JPEG", quality=75, optimize=True)
    return f"data:{_THUMB_MIME};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_of_file(path: str, side: int = THUMB_SIDE, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Thumbnail of an image file with the pipeline's safe decoder (format from magic bytes, bombs refused
    before any pixel is decoded), or ``None`` when it is not a readable image."""
    try:
        fh, size = decode.open_regular(path)  # never a FIFO or a device: a thumbnail must not block the report
        with fh:
            if size > _MAX_FILE_BYTES:
                return None
            data = fh.read()
        fmt = decode.sniff(data[:16])
        if fmt is None:
            return None
        im = decode.open_image(data, fmt, max_pixels=max_pixels)
        if fmt == "JPEG":
            im.draft("RGB", (side, side))  # DCT scaling: decode at 1/2..1/8 size, far cheaper than a full decode
        return thumbnail_uri(decode.load(im, draft_size=None), side)
    except (decode.DecodeFailure, OSError, ValueError):
        return None


def _thumbnail_of_value(value: Any, side: int) -> str | None:
    """What an ``image_loader`` returned (PIL image, H×W[×C] array in uint8 or [0, 1], or None) as a thumbnail."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return thumbnail_uri(value, side)
    a = np.asarray(value)
    if a.dtype != np.uint8:
        scale = 255.0 if a.size and float(a.max()) <= 1.0 else 1.0
        a = np.clip(np.rint(a.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return thumbnail_uri(Image.fromarray(a), side)


def image_file(report: AuditReport, ref: ImageRef) -> str | None:
    """The file behind ``ref`` (its split's root joined with its path), or ``None`` for in-memory arrays."""
    for s in report.splits:
        if s.name == ref.split:
            return None if s.root.startswith("<array") else os.path.join(s.root, ref.path)
    return None


def make_thumbnails(report: AuditReport, refs: Sequence[ImageRef], *, side: int = THUMB_SIDE,
                    image_loader: ImageLoader | None = None) -> list[str | None]:
    """One thumbnail (or ``None``) per ref, decoded on a few threads (Pillow releases the GIL while decoding)."""

    def one(ref: ImageRef) -> str | None:
        if image_loader is not None:
            try:
                return _thumbnail_of_value(image_loader(ref), side)
            except Exception:  # a user callback failing on one image must not cost the whole report
                return None
        path = image_file(report, ref)
        return thumbnail_of_file(path, side) if path else None

    if not refs:
        return []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, refs))


# -- small helpers -------------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    return str(value)


def _script_json(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``</script>``, ``<!--`` or line separators can end or confuse it."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _svg_img(svg: str, alt: str) -> str:
    """Embed SVG produced elsewhere as an image: scripts in an <img> SVG never run, and CSP allows data: images."""
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<img class="plot" src="{uri}" alt="{_e(alt)}">'


def is_pair(f: Finding) -> bool:
    """A cross-split pair finding: its check displays pairs, and it names two images in two splits."""
    return display_of(f.check) == "pair" and len(f.images) == 2 and f.images[0].split != f.images[1].split


def _closeness(f: Finding) -> float:
    """Sort key for "closest first": same bytes, same pixels, hash distance, then embedding/NCC dissimilarity."""
    stages = {e.stage: e for e in f.evidence}
    if "bytes" in stages:
        return 0.0
    if "pixels" in stages:
        return 0.5
    key = 1.0 + sum(stages[s].distance for s in ("phash", "dhash") if s in stages)
    for s in ("ncc", "embedding"):
        if s in stages:
            key += 100.0 * stages[s].distance
    return round(key, 4)


# -- charts --------------------------------------------------------------------------------------------------------


def grouped_chart(columns: Sequence[tuple[str, Mapping[str, float]]], *, normalise: bool, title: str,
                  max_rows: int = MAX_CHART_CLASSES) -> str:
    """Grouped horizontal bars (inline SVG, escaped text): per row key, one bar per column (split).

    ``normalise``: bars are each column's share of its total (class counts); otherwise raw non-negative values on
    one common scale.
    """
    totals: Counter[str] = Counter()
    for _, values in columns:
        for k, v in values.items():
            totals[k] += abs(float(v))
    if not totals:
        return ""
    rows = sorted(totals, key=lambda c: (-totals[c], c))[:max_rows]
    rows.sort()
    n = len(columns)
    bar, gap, label_w, plot_w, top = 11, 8, 170, 360, 28
    group_h = n * bar + gap
    height = top + len(rows) * group_h + 6
    width = label_w + plot_w + 110
    sums = [sum(float(v) for v in c.values()) or 1.0 for _, c in columns]
    peak = max((float(v) for _, c in columns for v in c.values()), default=0.0) or 1.0
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">']
    x = label_w
    for k, (name, _) in enumerate(columns):  # legend
        color = _PALETTE[k % len(_PALETTE)]
        out.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 14}" y="15" font-size="11">{_e(name)}</text>')
        x += 24 + 7 * len(name)
    for i, row in enumerate(rows):
        y0 = top + i * group_h
        shown = row if len(row) <= 26 else row[:25] + "\u2026"
        out.append(f'<text x="{label_w - 6}" y="{y0 + n * bar / 2 + 4:.1f}" font-size="11" text-anchor="end">'
                   f'<title>{_e(row)}</title>{_e(shown)}</text>')
        for k, (name, values) in enumerate(columns):
            value = float(values.get(row, 0))
            if normalise:
                frac = value / sums[k]
                text = f"{_num(values.get(row, 0))} ({frac:.1%})"
            else:
                frac = value / peak
                text = _num(values.get(row, 0))
            w = max(0.0, frac * plot_w)
            y = y0 + k * bar
            out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar - 2}" fill="{_PALETTE[k % len(_PALETTE)]}">'
                       f'<title>{_e(name)} / {_e(row)}: {_e(text)}</title></rect>'
                       f'<text x="{label_w + w + 4:.1f}" y="{y + bar - 3}" font-size="9">{_e(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def class_chart(splits: Sequence[tuple[str, Mapping[str, int]]], *, max_classes: int = MAX_CHART_CLASSES) -> str:
    """Per class, each split's share of its images."""
    return grouped_chart(splits, normalise=True, title="class distribution per split", max_rows=max_classes)


def bar_chart(values: Mapping[str, float], *, title: str = "") -> str:
    """A small horizontal bar chart of ``{name: number}`` (negative values drawn left of zero)."""
    items = [(str(k), float(v)) for k, v in values.items()]
    if not items:
        return ""
    lo = min(0.0, *(v for _, v in items))
    hi = max(0.0, *(v for _, v in items))
    span = (hi - lo) or 1.0
    bar, label_w, plot_w = 14, 150, 260
    height = len(items) * bar + 8
    width = label_w + plot_w + 70
    zero = label_w + (0 - lo) / span * plot_w
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">']
    for i, (name, v) in enumerate(items):
        y = 4 + i * bar
        x0 = zero if v >= 0 else zero - (-v / span) * plot_w
        w = abs(v) / span * plot_w
        shown = name if len(name) <= 22 else name[:21] + "\u2026"
        out.append(f'<text x="{label_w - 6}" y="{y + 10}" font-size="10" text-anchor="end"><title>{_e(name)}</title>{_e(shown)}</text>'
                   f'<rect x="{x0:.1f}" y="{y}" width="{w:.1f}" height="{bar - 3}" fill="{_PALETTE[0]}"/>'
                   f'<text x="{max(x0 + w, zero) + 4:.1f}" y="{y + 10}" font-size="9">{_e(_num(v))}</text>')
    out.append(f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="0" y2="{height}" stroke="#999"/></svg>')
    return "".join(out)


# -- generic values (distribution results, explain results, finding data) ------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _chartable(values: Iterable[Any]) -> bool:
    """Bars only compare like with like: all counts (ints >= 0) or all shares in [0, 1]."""
    vals = [_plain(v) for v in values]
    return bool(vals) and (all(isinstance(v, int) and v >= 0 for v in vals) or all(0 <= float(v) <= 1 for v in vals))


def _is_matrix(value: Mapping[str, Any]) -> bool:
    """``{column: {row: number}}``, e.g. per-split class counts or per-split property medians."""
    return all(isinstance(v, Mapping) and v and all(_is_number(x) for x in v.values()) for v in value.values())


def _spark(value: float, peak: float) -> str:
    """A tiny bar in a table cell: one row's values across splits, on the row's own scale (drift at a glance)."""
    w = 0.0 if peak <= 0 else max(0.0, value / peak) * 60
    return (f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="62" height="8" aria-hidden="true">'
            f'<rect x="0" y="1" width="{w:.1f}" height="6" fill="{_PALETTE[0]}"/></svg>')


def _matrix_html(value: Mapping[str, Mapping[str, Any]], title: str) -> str:
    cols = [str(c) for c in value]
    rows: list[str] = []
    for inner in value.values():
        rows.extend(str(r) for r in inner if str(r) not in rows)
    data = {str(c): {str(r): _plain(x) for r, x in inner.items()} for c, inner in value.items()}
    head = "<th></th>" + "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        vals = [data[c].get(r) for c in cols]
        nums = [float(v) for v in vals if v is not None]
        peak = max(nums) if nums and min(nums) >= 0 else 0.0
        cells = "".join(
            "<td></td>" if v is None else f"<td>{_e(_num(v))}{_spark(float(v), peak) if peak > 0 else ''}</td>" for v in vals)
        body.append(f"<tr><th>{_e(r)}</th>{cells}</tr>")
    chart = ""
    all_values = [v for c in cols for v in data[c].values()]
    if len(cols) <= len(_PALETTE) and 2 <= len(rows) <= MAX_CHART_CLASSES and _chartable(all_values):
        chart = grouped_chart([(c, data[c]) for c in cols], normalise=False, title=title)
    return (f'<div class="kvwrap"><table class="grid matrix"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f"{chart}</div>")


def render_value(value: Any, *, depth: int = 0, chart_title: str = "") -> str:
    """Any JSON-like value as HTML: mappings as key/value tables (plus a bar chart when all values are numbers),
    lists of records as tables, SVG strings as images; everything escaped."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    if depth > 6:
        return f"<code>{_e(json.dumps(value, default=str)[:2000])}</code>"
    if value is None:
        return '<span class="muted">&mdash;</span>'
    if isinstance(value, str):
        if value.lstrip().startswith("<svg"):
            return _svg_img(value, chart_title or "plot")
        return _e(value)
    if _is_number(value) or isinstance(value, bool):
        return _e(_num(value.item() if hasattr(value, "item") else value))
    if isinstance(value, Mapping):
        if not value:
            return '<span class="muted">(empty)</span>'
        if _is_matrix(value):
            return _matrix_html(value, chart_title)
        if all(_is_number(v) for v in value.values()):
            head = "".join(f"<th>{_e(k)}</th>" for k in value)
            cells = "".join(f"<td>{_e(_num(_plain(v)))}</td>" for v in value.values())
            chart = ""
            if 2 <= len(value) <= 60 and _chartable(value.values()):
                chart = bar_chart({str(k): float(v) for k, v in value.items()}, title=chart_title)
            return f'<div class="kvwrap"><table class="grid"><thead><tr>{head}</tr></thead><tbody><tr>{cells}</tr></tbody></table>{chart}</div>'
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{render_value(v, depth=depth + 1, chart_title=str(k))}</td></tr>"
                       for k, v in value.items())
        return f'<table class="kv">{rows}</table>'
    if isinstance(value, (list, tuple)):
        if not value:
            return '<span class="muted">(none)</span>'
        if all(isinstance(v, Mapping) for v in value):
            cols: list[str] = []
            for v in value:
                cols.extend(str(k) for k in v if str(k) not in cols)
            head = "".join(f"<th>{_e(c)}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f"<td>{render_value(dict(v).get(c), depth=depth + 1)}</td>" for c in cols) + "</tr>"
                           for v in value[:500])
            more = f'<p class="muted">&hellip; and {len(value) - 500} more</p>' if len(value) > 500 else ""
            return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}'
        shown = ", ".join(render_value(v, depth=depth + 1) for v in value[:50])
        return shown + (f" &hellip; and {len(value) - 50} more" if len(value) > 50 else "")
    return _e(value)


# -- the page ------------------------------------------------------------------------------------------------------

_CSS = """
:root{--err:#b3261e;--warn:#a45c00;--ok:#1e7a3a;--line:#ddd;--muted:#666}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header,main{max-width:1280px;margin:0 auto;padding:0 20px}header{padding-top:16px}
h1{font-size:22px;margin:.2em 0}h2{font-size:18px;margin:1.6em 0 .5em;border-bottom:1px solid var(--line);padding-bottom:4px}
nav a{margin-right:12px}code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.verdict{font-size:18px;font-weight:600;padding:10px 14px;border-radius:6px;margin:10px 0}
.verdict.fail{background:#fbe9e7;color:var(--err)}.verdict.pass{background:#e6f4ea;color:var(--ok)}
.counts{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}.counts div{background:#fff;border:1px solid var(--line);border-radius:6px;padding:6px 12px}
.counts b{font-size:18px;display:block}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;color:var(--muted)}
figure.img{margin:0;display:inline-block;max-width:240px;vertical-align:top}figure.img img,span.th img{display:block;max-width:96px;max-height:96px;border:1px solid var(--line);background:#fff}
figcaption{font-size:12px}.label{background:#eef;border-radius:3px;padding:0 4px;font-size:12px}
.nothumb{width:96px;height:40px;border:1px dashed #bbb;color:#999;font-size:11px;display:flex;align-items:center;justify-content:center}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:8px 0}.controls label{font-size:12px;color:var(--muted)}
tr.sev-error td:nth-child(4) .sev{color:var(--err);font-weight:600}tr.sev-warning td:nth-child(4) .sev{color:var(--warn);font-weight:600}
tr.accepted{opacity:.6}.ev{font-size:12px}.id{font:11px ui-monospace,monospace;color:var(--muted)}
.muted{color:var(--muted)}.group{background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px;margin:6px 0}
.group .members{display:flex;flex-wrap:wrap;gap:10px;margin-top:6px}.kvwrap{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
table.kv th{font-weight:500}img.plot{max-width:100%;background:#fff;border:1px solid var(--line)}svg.spark{display:block;margin-top:2px}.scroll{overflow-x:auto;max-width:100%}svg.chart{background:#fff;border:1px solid var(--line)}
footer{max-width:1280px;margin:30px auto;padding:0 20px;color:var(--muted);font-size:12px}
"""

# The only script. Data come from the JSON blob and reach the DOM through textContent/setAttribute only.
_JS = r"""(function () {
"use strict";
var D = JSON.parse(document.getElementById("sa-data").textContent);
var S = D.splits, I = D.images, T = D.thumbs, P = D.pairs, PAGE = D.page;
function $(id) { return document.getElementById(id); }
function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function name(i) { return S[I[i][0]] + "/" + I[i][1]; }
function fig(i) {
  var im = I[i], f = el("figure", "img");
  if (im[3] >= 0) { var g = document.createElement("img"); g.src = T[im[3]]; g.alt = ""; f.appendChild(g); }
  else f.appendChild(el("div", "nothumb", "no thumbnail"));
  var c = el("figcaption");
  c.appendChild(el("code", null, name(i)));
  if (im[2] !== null) { c.appendChild(document.createTextNode(" ")); c.appendChild(el("span", "label", im[2])); }
  f.appendChild(c);
  return f;
}
Array.prototype.forEach.call(document.querySelectorAll("span.th[data-t]"), function (n) {
  var g = document.createElement("img"); g.src = T[+n.getAttribute("data-t")]; g.alt = ""; n.appendChild(g);
});
if (!$("pairs-body")) return;
function options(sel, values) {
  values.forEach(function (v) { var o = el("option", null, v); o.value = v; sel.appendChild(o); });
}
var checks = {}, cats = {}, pairsOf = {}, classes = {};
P.forEach(function (p) {
  checks[p[0]] = 1; cats[p[1]] = 1; pairsOf[S[I[p[3]][0]] + " \u2192 " + S[I[p[4]][0]]] = 1;
  if (I[p[3]][2] !== null) classes[I[p[3]][2]] = 1;
  if (I[p[4]][2] !== null) classes[I[p[4]][2]] = 1;
});
options($("f-check"), Object.keys(checks).sort());
options($("f-category"), Object.keys(cats).sort());
options($("f-pair"), Object.keys(pairsOf).sort());
options($("f-class"), Object.keys(classes).sort());
var rows = [], page = 0;
function apply() {
  var c = $("f-check").value, k = $("f-category").value, sp = $("f-pair").value, cl = $("f-class").value,
      st = $("f-status").value, q = $("f-search").value.toLowerCase(), so = $("f-sort").value;
  rows = [];
  for (var j = 0; j < P.length; j++) {
    var p = P[j], a = I[p[3]], b = I[p[4]];
    if (c && p[0] !== c) continue;
    if (k && p[1] !== k) continue;
    if (sp && S[a[0]] + " \u2192 " + S[b[0]] !== sp) continue;
    if (cl && a[2] !== cl && b[2] !== cl) continue;
    if (st === "new" && p[7]) continue;
    if (st === "accepted" && !p[7]) continue;
    if (q && (name(p[3]) + " " + name(p[4])).toLowerCase().indexOf(q) < 0) continue;
    rows.push(j);
  }
  if (so === "closest") rows.sort(function (x, y) { return P[x][6] - P[y][6] || x - y; });
  else if (so === "farthest") rows.sort(function (x, y) { return P[y][6] - P[x][6] || x - y; });
  else if (so === "path") rows.sort(function (x, y) { var u = name(P[x][4]), v = name(P[y][4]); return u < v ? -1 : u > v ? 1 : x - y; });
  page = 0;
  draw();
}
function draw() {
  var body = $("pairs-body"), n = rows.length, pages = Math.max(1, Math.ceil(n / PAGE));
  if (page >= pages) page = pages - 1;
  body.textContent = "";
  for (var r = page * PAGE; r < Math.min(n, (page + 1) * PAGE); r++) {
    var j = rows[r], p = P[j], tr = el("tr", p[7] ? "accepted" : "sev-" + p[2]);
    tr.setAttribute("data-pair", String(j));
    tr.appendChild(el("td", "num", j + 1));
    var ta = el("td"); ta.appendChild(fig(p[3])); tr.appendChild(ta);
    var tb = el("td"); tb.appendChild(fig(p[4])); tr.appendChild(tb);
    var td = el("td");
    td.appendChild(el("div", "sev", p[2] + (p[7] ? " (accepted)" : "")));
    td.appendChild(el("div", null, p[0]));
    td.appendChild(el("div", "muted", p[1]));
    tr.appendChild(td);
    tr.appendChild(el("td", "ev", p[5]));
    tr.appendChild(el("td", "id", p[8]));
    body.appendChild(tr);
  }
  $("pairs-status").textContent = n + " of " + P.length + " pairs \u00b7 page " + (page + 1) + " of " + pages;
  $("prev").disabled = page === 0;
  $("next").disabled = page >= pages - 1;
}
// The view lives in the URL fragment (#pairs?check=...&class=...&sort=closest&page=2): links to a filtered view
// can be shared, and fragment changes never leave the page.
var FIELDS = {check: "f-check", category: "f-category", splits: "f-pair", "class": "f-class", status: "f-status", sort: "f-sort", q: "f-search"};
function readHash() {
  var h = location.hash, i = h.indexOf("?"), out = {};
  if (h.slice(0, 6) !== "#pairs" || i < 0) return out;
  h.slice(i + 1).split("&").forEach(function (kv) {
    var j = kv.indexOf("=");
    if (j <= 0) return;
    try { out[decodeURIComponent(kv.slice(0, j))] = decodeURIComponent(kv.slice(j + 1).replace(/\+/g, " ")); } catch (e) { /* malformed: ignore */ }
  });
  return out;
}
function writeHash() {
  var parts = [];
  Object.keys(FIELDS).forEach(function (k) { var v = $(FIELDS[k]).value; if (v) parts.push(k + "=" + encodeURIComponent(v)); });
  if (page > 0) parts.push("page=" + (page + 1));
  try { history.replaceState(null, "", "#pairs" + (parts.length ? "?" + parts.join("&") : "")); } catch (e) { /* file: URLs may refuse */ }
}
Object.keys(FIELDS).forEach(function (k) {
  var el_ = $(FIELDS[k]);
  el_.addEventListener(k === "q" ? "input" : "change", function () { apply(); writeHash(); });
});
$("prev").addEventListener("click", function () { page -= 1; draw(); writeHash(); });
$("next").addEventListener("click", function () { page += 1; draw(); writeHash(); });
var init = readHash();
Object.keys(FIELDS).forEach(function (k) { if (init[k] !== undefined) $(FIELDS[k]).value = init[k]; });
apply();
if (init.page) { page = Math.max(0, (parseInt(init.page, 10) || 1) - 1); draw(); }
document.body.setAttribute("data-ready", "1");
})();"""

_JS_HASH = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
#: No network loads of any kind: only inline styles, data: images and the one script, pinned by its hash.
CSP = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{_JS_HASH}'; "
       "base-uri 'none'; form-action 'none'")


# -- sections: each returns its HTML; the page is their concatenation ---------------------------------------------


@dataclass(frozen=True)
class _Findings:
    """The report's findings by how their checks display them (see :data:`~splitaudit.checks.registry.DISPLAYS`)."""

    pairs: tuple[Finding, ...]
    groups: tuple[tuple[str, tuple[Finding, ...]], ...]  # one entry per group check, registry order
    images: tuple[Finding, ...]
    others: tuple[Finding, ...]  # table checks, and findings of checks no longer registered

    @classmethod
    def of(cls, report: AuditReport) -> _Findings:
        pairs: list[Finding] = []
        images: list[Finding] = []
        others: list[Finding] = []
        # Every group check gets its section, found or not (an empty section says the check looked).
        groups: dict[str, list[Finding]] = {name: [] for name, c in all_checks().items() if c.display == "group"}
        for f in report.findings:
            kind = display_of(f.check)
            if is_pair(f):
                pairs.append(f)
            elif kind == "group":
                groups.setdefault(f.check, []).append(f)
            elif kind == "image":
                images.append(f)
            else:
                others.append(f)
        return cls(tuple(pairs), tuple((n, tuple(fs)) for n, fs in groups.items()), tuple(images), tuple(others))


@dataclass(frozen=True)
class _Gallery:
    """Every image a pair or group names, by index; thumbnails for the first ``cap`` of them (report order)."""

    refs: tuple[ImageRef, ...]
    index: Mapping[tuple[str, str], int]
    thumb_of: tuple[int, ...]  # image index -> thumbnail index, -1 for none
    uris: tuple[str, ...]
    cap: int

    @classmethod
    def of(cls, report: AuditReport, found: _Findings, *, cap: int, side: int, image_loader: ImageLoader | None) -> _Gallery:
        index: dict[tuple[str, str], int] = {}
        refs: list[ImageRef] = []
        for f in (*found.pairs, *(f for _, fs in found.groups for f in fs[:MAX_GROUPS])):
            for ref in f.images:
                if (ref.split, ref.path) not in index:
                    index[(ref.split, ref.path)] = len(refs)
                    refs.append(ref)
        thumbs = make_thumbnails(report, refs[:cap], side=side, image_loader=image_loader)
        thumb_of: list[int] = []
        uris: list[str] = []
        for k in range(len(refs)):
            uri = thumbs[k] if k < len(thumbs) else None
            thumb_of.append(len(uris) if uri else -1)
            if uri:
                uris.append(uri)
        return cls(tuple(refs), index, tuple(thumb_of), tuple(uris), cap)

    def at(self, ref: ImageRef) -> int:
        return self.index[(ref.split, ref.path)]

    def figure(self, ref: ImageRef) -> str:
        k = self.index.get((ref.split, ref.path), -1)
        t = self.thumb_of[k] if k >= 0 else -1
        img = f'<span class="th" data-t="{t}"></span>' if t >= 0 else '<div class="nothumb">no thumbnail</div>'
        label = f' <span class="label">{_e(ref.label)}</span>' if ref.label is not None else ""
        return f'<figure class="img">{img}<figcaption><code>{_e(ref.split)}/{_e(ref.path)}</code>{label}</figcaption></figure>'


def _title(check: str) -> str:
    return check.replace("-", " ").capitalize()


def _status(f: Finding) -> tuple[str, str]:
    """(CSS class, severity text) of a finding, accepted ones marked."""
    accepted = f.accepted
    return ("accepted" if accepted else "sev-" + f.severity.label), _e(f.severity.label) + (" (accepted)" if accepted else "")


def _facts(f: Finding) -> dict[str, Any]:
    return {k: val for k, val in dict(f.data).items() if k != "baseline"}


def _head(title: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
            '<meta name="referrer" content="no-referrer"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>")


def _header(report: AuditReport, found: _Findings, gallery: _Gallery, title: str) -> str:
    """Title, navigation, verdict banner and the counts."""
    v = report.verdict
    counts = dict(v.counts)
    accepted = sum(1 for f in report.findings if f.accepted)
    nav = [("pairs", "cross-split pairs"), *((n, _title(n).lower()) for n, _ in found.groups), ("images", "image findings"),
           ("classes", "classes"), ("distribution", "distribution"), ("explain", "explain"), ("other", "other findings"),
           ("run", "run")]
    tiles = [(k, counts.get(k, 0), k) for k in ("error", "warning", "info")]
    tiles += [("accepted", accepted, "accepted (baseline)"), ("pairs", len(found.pairs), "cross-split pairs")]
    tiles += [(n, len(fs), _title(n).lower()) for n, fs in found.groups]
    tiles += [("images", len(found.images), "image findings"), ("thumbs", len(gallery.uris), f"thumbnails (cap {gallery.cap})")]
    return (f"<header><h1>{_e(title)}</h1><nav>" + "".join(f'<a href="#{_e(a)}">{_e(text)}</a>' for a, text in nav) + "</nav>"
            f'<div id="verdict" class="verdict {"fail" if v.failed else "pass"}">{"FAIL" if v.failed else "PASS"} {_e(v.reason)}</div>'
            '<div class="counts">' + "".join(f'<div><b id="n-{_e(k)}">{n}</b>{_e(text)}</div>' for k, n, text in tiles)
            + "</div></header>")


def _splits_section(report: AuditReport) -> str:
    rows = "".join(
        f"<tr><td>{_e(s.name)}</td><td><code>{_e(s.root)}</code></td><td>{s.files}</td><td>{s.images}</td>"
        f"<td>{s.unreadable}</td><td>{s.skipped}</td><td>{len(s.classes)}</td>"
        f"<td>{f'{s.leak_fraction:.1%}' if k else '&ndash;'}</td></tr>" for k, s in enumerate(report.splits))
    return ('<h2 id="splits">Splits</h2><table class="grid"><thead><tr><th>split</th><th>root</th><th>files</th><th>images</th>'
            "<th>unreadable</th><th>skipped</th><th>classes</th><th>copied from earlier splits</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


_PAIR_CONTROLS = (
    '<div class="controls">'
    '<label>check <select id="f-check"><option value="">all</option></select></label>'
    '<label>category <select id="f-category"><option value="">all</option></select></label>'
    '<label>splits <select id="f-pair"><option value="">all</option></select></label>'
    '<label>class <select id="f-class"><option value="">all</option></select></label>'
    '<label>status <select id="f-status"><option value="">all</option><option value="new">new</option>'
    '<option value="accepted">accepted</option></select></label>'
    '<label>sort <select id="f-sort"><option value="">severity</option><option value="closest">closest first</option>'
    '<option value="farthest">farthest first</option><option value="path">evaluation path</option></select></label>'
    '<label>file name <input id="f-search" type="search" placeholder="filter by name"></label>'
    '<button id="prev" type="button">&larr; previous</button><button id="next" type="button">next &rarr;</button>'
    '<span id="pairs-status" class="muted"></span></div>'
    '<table class="grid" id="pairs-table"><thead><tr><th>#</th><th>earlier split</th><th>later split</th>'
    '<th>finding</th><th>evidence</th><th>id</th></tr></thead><tbody id="pairs-body"></tbody></table>'
)


def _pairs_section(pairs: Sequence[Finding], gallery: _Gallery) -> str:
    """The controls and an empty table the script fills from the JSON blob; a text list for scripts off."""
    out = f'<h2 id="pairs">Cross-split pairs ({len(pairs)})</h2>'
    if not pairs:
        return out + '<p class="muted">No images are shared between splits.</p>'
    out += _PAIR_CONTROLS
    out += (f"<noscript><p>Scripts are off: the first {min(len(pairs), NOSCRIPT_PAIRS)} of {len(pairs)} pairs as text.</p><ol>"
            + "".join(f"<li>{_e(f.severity.label)} {_e(f.message)} ({_e(Evidence.describe_all(f.evidence))})</li>"
                      for f in pairs[:NOSCRIPT_PAIRS])
            + "</ol></noscript>")
    if len(gallery.refs) > gallery.cap:
        out += (f'<p class="muted">Thumbnails are embedded for the first {gallery.cap} of {len(gallery.refs)} images '
                "(most severe findings first); the others show their names and evidence.</p>")
    return out


def _pairs_data(report: AuditReport, pairs: Sequence[Finding], gallery: _Gallery, page_size: int) -> dict[str, Any]:
    """The JSON blob the script draws the pairs table from."""
    split_index = {s.name: k for k, s in enumerate(report.splits)}
    return {
        "splits": [s.name for s in report.splits],
        "images": [[split_index.get(r.split, 0), r.path, r.label, gallery.thumb_of[k]] for k, r in enumerate(gallery.refs)],
        "thumbs": list(gallery.uris),
        # [check, category, severity, image a, image b, evidence, closeness, accepted, id]
        "pairs": [[f.check, f.category, f.severity.label, gallery.at(f.images[0]), gallery.at(f.images[1]),
                   Evidence.describe_all(f.evidence), _closeness(f), 1 if f.accepted else 0, f.id] for f in pairs],
        "page": page_size,
    }


def _group_section(check: str, findings: Sequence[Finding], gallery: _Gallery) -> str:
    """One group check: each finding with its facts and every member's thumbnail."""
    known = all_checks().get(check)
    out = f'<h2 id="{_e(check)}">{_e(_title(check))} ({len(findings)})</h2>'
    if known is not None:
        out += f'<p class="muted">{_e(known.summary)}</p>'
    if not findings:
        return out + '<p class="muted">None found.</p>'
    for f in findings[:MAX_GROUPS]:
        css, severity = _status(f)
        facts = _facts(f)
        out += (f'<div class="group {css}"><div><b>{severity}</b> {_e(f.message)} <span class="id">{_e(f.id)}</span></div>'
                + (f"<div>{render_value(facts)}</div>" if facts else "")
                + '<div class="members">' + "".join(gallery.figure(r) for r in f.images) + "</div></div>")
    if len(findings) > MAX_GROUPS:
        out += f'<p class="muted">&hellip; and {len(findings) - MAX_GROUPS} more (see --format json).</p>'
    return out


def _findings_table(anchor: str, heading: str, findings: Sequence[Finding], *, with_images: bool) -> str:
    """Findings as table rows: severity, check, (files,) message, facts, id."""
    out = f'<h2 id="{anchor}">{heading} ({len(findings)})</h2>'
    if not findings:
        return out + '<p class="muted">None.</p>'
    head = "<th>severity</th><th>check</th>" + ("<th>file</th>" if with_images else "") + "<th>message</th><th>facts</th><th>id</th>"
    rows = []
    for f in findings:
        css, severity = _status(f)
        files = "".join(f"<code>{_e(r.split)}/{_e(r.path)}</code> " for r in f.images)
        facts = _facts(f)
        rows.append(f'<tr class="{css}"><td>{severity}</td><td>{_e(f.check)}</td>' + (f"<td>{files}</td>" if with_images else "")
                    + f'<td>{_e(f.message)}</td><td>{render_value(facts) if facts else ""}</td><td class="id">{_e(f.id)}</td></tr>')
    return out + f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _classes_section(report: AuditReport) -> str:
    out = '<h2 id="classes">Class distribution</h2>'
    labelled = [(s.name, dict(s.classes)) for s in report.splits if s.classes]
    if not labelled:
        return out + '<p class="muted">No labels (flat folders or unlabelled arrays).</p>'
    names = sorted({c for _, cl in labelled for c in cl})
    totals = {n: sum(cl.values()) or 1 for n, cl in labelled}
    rows = "".join(f"<tr><td>{_e(c)}</td>" + "".join(f"<td>{cl.get(c, 0)} ({cl.get(c, 0) / totals[n]:.1%})</td>" for n, cl in labelled)
                   + "</tr>" for c in names)
    return (out + class_chart(labelled) + '<table class="grid"><thead><tr><th>class</th>'
            + "".join(f"<th>{_e(n)}</th>" for n, _ in labelled) + f"</tr></thead><tbody>{rows}</tbody></table>")


def _distribution_section(report: AuditReport) -> str:
    """What the table checks measured (``report.distribution``), drawn generically."""
    out = '<h2 id="distribution">Distribution: property drift, distinguishability, difficulty</h2>'
    if not report.distribution:
        return out + '<p class="muted">Not part of this report.</p>'
    return out + f'<div class="scroll">{render_value(report.distribution)}</div>'


def _explain_section(explain: ExplainReport | None) -> str:
    """The ``splitaudit explain`` result: its learning curves (when it has any) and its data as tables."""
    out = '<h2 id="explain">Explain: metric decomposition and learning curves</h2>'
    if explain is None:
        return out + '<p class="muted">Not part of this report (run <code>splitaudit explain</code>).</p>'
    from ..explain.plots import panels, render_svg

    if panels(explain):
        out += f"<figure><figcaption>learning curves</figcaption>{_svg_img(render_svg(explain), 'learning curves')}</figure>"
    return out + f'<div class="scroll">{render_value(explain.to_dict())}</div>'


def _run_section(report: AuditReport) -> str:
    return '<h2 id="run">Run</h2>' + render_value({"checks": {name: dict(params) for name, params in report.checks},
                                                    "embeddings": dict(report.embeddings) or None})


def _footer(data: Mapping[str, Any]) -> str:
    # imported at call time: splitaudit/__init__ may still be importing when this module loads
    from .. import __version__

    return (f"<footer>splitaudit {_e(__version__)} &middot; self-contained report: no network requests "
            "(Content-Security-Policy <code>default-src 'none'</code>)</footer>"
            f'<script type="application/json" id="sa-data">{_script_json(data)}</script>'
            f"<script>{_JS}</script></body></html>\n")


def render_html(
    report: AuditReport,
    *,
    explain: ExplainReport | None = None,
    max_thumbnails: int = DEFAULT_MAX_THUMBNAILS,
    thumb_side: int = THUMB_SIDE,
    page_size: int = PAGE_SIZE,
    image_loader: ImageLoader | None = None,
    title: str = "splitaudit report",
) -> str:
    """The report as one self-contained HTML page.

    Parameters
    ----------
    explain:
        A :func:`splitaudit.explain` result, shown in its own section: its learning curves as an embedded SVG
        image (scripts in it never run) and its data as tables.
    max_thumbnails:
        Distinct images that get an embedded thumbnail, most severe findings first (0: none).
    image_loader:
        ``image_loader(ImageRef)`` -> PIL image or array, for reports on in-memory arrays (files are read from
        the split roots otherwise; array inputs without a loader get no thumbnails).
    """
    if isinstance(max_thumbnails, bool) or not isinstance(max_thumbnails, int) or max_thumbnails < 0:
        raise invalid_parameter("max_thumbnails", "an int >= 0", max_thumbnails)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise invalid_parameter("page_size", "an int >= 1", page_size)
    if isinstance(thumb_side, bool) or not isinstance(thumb_side, int) or not 16 <= thumb_side <= 512:
        raise invalid_parameter("thumb_side", "an int in [16, 512]", thumb_side)

    found = _Findings.of(report)
    gallery = _Gallery.of(report, found, cap=max_thumbnails, side=thumb_side, image_loader=image_loader)
    sections = [
        _splits_section(report),
        _pairs_section(found.pairs, gallery),
        *(_group_section(check, findings, gallery) for check, findings in found.groups),
        _findings_table("images", "Image findings", found.images, with_images=True),
        _classes_section(report),
        _distribution_section(report),
        _explain_section(explain),
        _findings_table("other", "Other findings", found.others, with_images=False),
        _run_section(report),
    ]
    return (_head(title) + _header(report, found, gallery, title) + "<main>" + "".join(sections) + "</main>"
            + _footer(_pairs_data(report, found.pairs, gallery, page_size)))
