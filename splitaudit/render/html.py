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
from . import originals as _originals
from .html_app import CSS as _CSS
from .html_app import JS as _JS

if TYPE_CHECKING:
    from ..explain.report import ExplainReport
    from ..options import Options

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
    return None if value is None else thumbnail_uri(_originals.as_image(value), side)


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


def histogram_chart(h: Mapping[str, Any], *, title: str) -> str:
    """Per split, the share of its images in each bin (``{"edges", "counts": {split: [...]}, "scale"}``): one
    outlined step curve per split on common bins, so a shift between splits is seen as two humps."""
    edges = [float(e) for e in h.get("edges") or ()]
    counts = {str(k): [int(c) for c in v] for k, v in (h.get("counts") or {}).items() if sum(v)}
    if len(edges) < 2 or not counts:
        return ""
    nb = len(edges) - 1
    shares = {k: [c / sum(v) for c in v] for k, v in counts.items()}
    peak = max(max(v) for v in shares.values()) or 1.0
    left, top, pw, ph = 8, 30, 300, 90
    width, height = left + pw + 12, top + ph + 30
    bw = pw / nb
    out = [f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">'
           f'<text x="{left}" y="13" font-size="12" font-weight="600">{_e(title)}</text>']
    x = left
    for k, name in enumerate(shares):  # legend
        color = _PALETTE[k % len(_PALETTE)]
        out.append(f'<rect x="{x}" y="18" width="10" height="8" fill="{color}"/>'
                   f'<text x="{x + 13}" y="26" font-size="10">{_e(name)}</text>')
        x += 22 + 6 * len(name)
    base = top + ph
    for k, (name, v) in enumerate(shares.items()):
        color = _PALETTE[k % len(_PALETTE)]
        pts = [f"{left:.1f},{base}"]
        for i, share in enumerate(v):
            y = base - share / peak * ph
            pts += [f"{left + i * bw:.1f},{y:.1f}", f"{left + (i + 1) * bw:.1f},{y:.1f}"]
        pts.append(f"{left + pw:.1f},{base}")
        tip = ", ".join(f"{c}" for c in counts[name])
        out.append(f'<polygon points="{" ".join(pts)}" fill="{color}" fill-opacity="0.18" stroke="{color}" '
                   f'stroke-width="1.5"><title>{_e(name)}: images per bin {_e(tip)}</title></polygon>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{base}" y2="{base}" stroke="#999"/>')
    scale = " (log scale)" if h.get("scale") == "log" else ""
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        value = edges[round(frac * nb)]
        out.append(f'<text x="{left + frac * pw:.1f}" y="{base + 13}" font-size="10" text-anchor="{anchor}">{_e(_num(value))}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{base + 26}" font-size="10" text-anchor="middle" fill="#666">'
               f'share of each split&#39;s images per bin{_e(scale)}</text></svg>')
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


def _unplotted(key: Any) -> bool:
    """Test bookkeeping, never drawn as a bar: p-values and degrees of freedom (their size is no effect size)."""
    k = str(key).lower()
    return k in ("p", "dof", "df", "degrees_of_freedom") or k.startswith("p_value") or k.endswith("p_value")


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
    plotted = [r for r in rows if not _unplotted(r)]
    all_values = [v for c in cols for r, v in data[c].items() if r in plotted]
    if (len(cols) <= len(_PALETTE) and 2 <= len(plotted) <= MAX_CHART_CLASSES and not any(_unplotted(c) for c in cols)
            and _chartable(all_values)):
        chart = grouped_chart([(c, {r: v for r, v in data[c].items() if r in plotted}) for c in cols], normalise=False, title=title)
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
            plotted = {str(k): float(v) for k, v in value.items() if not _unplotted(k)}
            if 2 <= len(plotted) <= 60 and _chartable(plotted.values()):
                chart = bar_chart(plotted, title=chart_title)
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

_JS_HASH = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
#: No network loads of any kind: only inline styles, data: images and the one script, pinned by its hash.
CSP = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{_JS_HASH}'; "
       "base-uri 'none'; form-action 'none'")
#: With ``--html-originals link``: images may also come from the report's own origin (the files beside it), never
#: from anywhere else.
CSP_LINKED = CSP.replace("img-src data:", "img-src data: 'self' file:")


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
        # Pairs first (their images are the enlarged view's, indices 0..), then groups, then the examples table
        # and image findings name (the images most unlike train, the drifted ones).
        for f in (*found.pairs, *(f for _, fs in found.groups for f in fs[:MAX_GROUPS]), *found.images, *found.others):
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


def _head(title: str, csp: str = CSP) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
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
    '<label>decision <select id="f-decision"><option value="">all</option><option value="undecided">undecided</option>'
    '<option value="same">same shot</option><option value="notcopy">not a copy</option><option value="accept">accept</option>'
    '</select></label>'
    '<label>file name <input id="f-search" type="search" placeholder="filter by name"></label>'
    '<button id="prev" type="button">&larr; previous</button><button id="next" type="button">next &rarr;</button>'
    '<span id="pairs-status" class="muted"></span></div>'
    '<table class="grid" id="pairs-table"><thead><tr><th>#</th><th>earlier split</th><th>later split</th>'
    '<th>finding</th><th>evidence</th><th>decision</th><th>id</th></tr></thead><tbody id="pairs-body"></tbody></table>'
)

#: The triage bar: decision count, exports and the keys.
_TRIAGE = (
    '<div class="triage"><b id="triage-status"></b>'
    '<button id="x-baseline" type="button">export baseline (.json)</button>'
    '<button id="x-csv" type="button">export decisions (.csv)</button>'
    '<button id="x-clear" type="button">clear decisions</button>'
    '<span class="keys"><kbd>j</kbd>/<kbd>k</kbd> or <kbd>&darr;</kbd>/<kbd>&uarr;</kbd> move, <kbd>Enter</kbd> or a click '
    'enlarges, <kbd>1</kbd> same shot, <kbd>2</kbd> not a copy, <kbd>3</kbd> accept (then the next pair), '
    '<kbd>s</kbd>/<kbd>d</kbd>/<kbd>b</kbd> side by side / difference / blink, <kbd>f</kbd> fit or 1:1 pixels, <kbd>Esc</kbd> closes</span>'
    '</div><p class="muted">Decisions stay in this browser (per report). The baseline accepts the pairs marked '
    '<i>not a copy</i> or <i>accept</i> and what this report&rsquo;s baseline already accepted (unless now marked '
    '<i>same shot</i>): <code>splitaudit check &hellip; --baseline splitaudit-baseline.json</code>. The CSV lists every '
    'pair with its decision.</p>'
)

#: The enlarged view (filled by the script).
_VIEWER = (
    '<div id="viewer" hidden role="dialog" aria-label="pair"><div class="bar">'
    '<button id="v-prev" type="button">&larr;</button><button id="v-next" type="button">&rarr;</button>'
    '<span id="v-title"></span><code id="v-names"></code><span id="v-dec"></span>'
    '<button id="v-side" type="button">side by side</button><button id="v-diff" type="button">difference</button>'
    '<button id="v-blink" type="button">blink</button><button id="v-fit" type="button">fit</button>'
    '<button id="v-close" type="button">close (Esc)</button></div><div id="v-stage"></div></div>'
)


def _pairs_section(pairs: Sequence[Finding], gallery: _Gallery, originals: _originals.Originals) -> str:
    """The controls and an empty table the script fills from the JSON blob; a text list for scripts off."""
    out = f'<h2 id="pairs">Cross-split pairs ({len(pairs)})</h2>'
    if not pairs:
        return out + '<p class="muted">No images are shared between splits.</p>'
    out += _TRIAGE + f'<p class="muted" id="originals-note">{_e(originals.note())}</p>' + _PAIR_CONTROLS + _VIEWER
    out += (f"<noscript><p>Scripts are off: the first {min(len(pairs), NOSCRIPT_PAIRS)} of {len(pairs)} pairs as text.</p><ol>"
            + "".join(f"<li>{_e(f.severity.label)} {_e(f.message)} ({_e(Evidence.describe_all(f.evidence))})</li>"
                      for f in pairs[:NOSCRIPT_PAIRS])
            + "</ol></noscript>")
    if len(gallery.refs) > gallery.cap:
        out += (f'<p class="muted">Thumbnails are embedded for the first {gallery.cap} of {len(gallery.refs)} images '
                "(most severe findings first); the others show their names and evidence.</p>")
    return out


_REGISTRATION_KEYS = ("score", "scale", "angle", "dx", "dy")


def registration_of(f: Finding) -> dict[str, Any] | None:
    """The copy verifier's registration of b onto a (``data["registration"]``), when present and well formed:
    ``{score, mirrored, scale, angle (degrees), dx, dy (fractions of the side)}``."""
    g = f.data.get("registration") if isinstance(f.data, Mapping) else None
    if not isinstance(g, Mapping):
        return None
    try:
        out: dict[str, Any] = {k: float(g[k]) for k in _REGISTRATION_KEYS}
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in out.values()) or out["scale"] <= 0:
        return None
    out["mirrored"] = bool(g.get("mirrored", False))
    return out


def _report_key(pair_ids: Sequence[str]) -> str:
    """Names this report's decisions in the browser's storage: the same pairs, the same decisions."""
    return hashlib.sha256(",".join(pair_ids).encode()).hexdigest()[:16]


def _pairs_data(report: AuditReport, pairs: Sequence[Finding], gallery: _Gallery, page_size: int) -> dict[str, Any]:
    """The JSON blob the script draws the pairs table from."""
    split_index = {s.name: k for k, s in enumerate(report.splits)}
    ids = [f.id for f in pairs]  # a hash each: computed once
    pair_ids = set(ids)
    return {
        "splits": [s.name for s in report.splits],
        "images": [[split_index.get(r.split, 0), r.path, r.label, gallery.thumb_of[k]] for k, r in enumerate(gallery.refs)],
        "thumbs": list(gallery.uris),
        # [check, category, severity, image a, image b, evidence, closeness, accepted, id, message, registration,
        #  mirrored]
        "pairs": [[f.check, f.category, f.severity.label, gallery.at(f.images[0]), gallery.at(f.images[1]),
                   Evidence.describe_all(f.evidence), _closeness(f), 1 if f.accepted else 0, fid, f.message,
                   registration_of(f), 1 if any(e.flipped for e in f.evidence) else 0] for f, fid in zip(pairs, ids)],
        # What the report's baseline already accepted besides the pairs: kept by the exported baseline.
        "accepted": [[f.id, f.check, f.severity.label, [f"{i.split}/{i.path}" for i in f.images], f.message]
                     for f in report.findings if f.accepted and f.id not in pair_ids],
        "key": _report_key(ids),
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


def _findings_table(anchor: str, heading: str, findings: Sequence[Finding], *, with_images: bool,
                    gallery: _Gallery | None = None) -> str:
    """Findings as table rows: severity, check, (files, or example thumbnails with ``gallery``,) message, facts,
    id."""
    out = f'<h2 id="{anchor}">{heading} ({len(findings)})</h2>'
    if not findings:
        return out + '<p class="muted">None.</p>'
    examples = gallery is not None and any(f.images for f in findings)
    head = ("<th>severity</th><th>check</th>" + ("<th>file</th>" if with_images else "")
            + ("<th>examples</th>" if examples else "") + "<th>message</th><th>facts</th><th>id</th>")
    rows = []
    for f in findings:
        css, severity = _status(f)
        files = "".join(f"<code>{_e(r.split)}/{_e(r.path)}</code> " for r in f.images)
        shown = f'<div class="examples">{"".join(gallery.figure(r) for r in f.images)}</div>' if examples and gallery else ""
        facts = _facts(f)
        rows.append(f'<tr class="{css}"><td>{severity}</td><td>{_e(f.check)}</td>' + (f"<td>{files}</td>" if with_images else "")
                    + (f"<td>{shown}</td>" if examples else "")
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


def _fmt_value(v: Any) -> str:
    return _e(_num(_plain(v))) if v is not None else "&ndash;"


def _flat_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain table; cells are HTML already escaped by the caller."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (f'<table class="grid"><thead><tr>{"".join(f"<th>{_e(h)}</th>" for h in head)}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _examples(refs: Sequence[ImageRef], gallery: _Gallery, caption: str) -> str:
    if not refs:
        return ""
    return (f'<div><div class="muted">{_e(caption)}</div><div class="examples">'
            + "".join(gallery.figure(r) for r in refs) + "</div></div>")


def _drift_html(props: Mapping[str, Any], findings: Sequence[Finding], gallery: _Gallery) -> str:
    """Each drifted numeric property (a finding naming ``property`` and ``split``): a histogram per split and the
    finding's example images; then the medians of every property as one table."""
    if "medians" not in props:
        raise KeyError("medians")
    out = "<h3>Image properties</h3>"
    histograms = props.get("histograms") or {}
    by_class = props.get("class_histograms") or {}
    drifted = [f for f in findings if isinstance(f.data.get("property"), str) and f.data.get("kind") == "numeric"]
    shown = 0
    for f in drifted:
        prop, split, label = f.data["property"], f.data.get("split"), f.data.get("class")
        h = (by_class.get(split, {}).get(label, {}).get(prop) if label is not None else histograms.get(prop))
        if not isinstance(h, Mapping) or not h.get("edges"):
            continue
        name = prop.replace("_", " ") + (f" in class {label}" if label is not None else "")
        chart = histogram_chart(h, title=name)
        direction = f.data.get("direction")
        caption = f"{split} images at the {'low' if direction == 'lower' else 'high'} end of {prop.replace('_', ' ')}"
        out += (f'<div class="drift">{chart}<div><div>{_e(f.message.split(". A model", 1)[0].rstrip("."))}.</div>'
                f'{_examples(f.images, gallery, caption)}</div></div>')
        shown += 1
    categorical = [f for f in findings if f.data.get("kind") == "categorical" and isinstance(f.data.get("train"), Mapping)]
    train = next(iter(props["medians"]), "train")  # splits in report order: train first
    for f in categorical:
        chart = grouped_chart([(str(train), f.data["train"]), (str(f.data.get("split")), f.data.get("eval") or {})],
                              normalise=False, title=f"{f.data.get('property')}: share of images")
        out += (f'<div class="drift">{chart}<div><div>{_e(f.message.split(". ", 1)[0].rstrip("."))}.</div>'
                f'{_examples(f.images, gallery, "examples")}</div></div>')
        shown += 1
    if not shown:
        out += '<p class="muted">No property differs between train and an evaluation split.</p>'
    medians = props.get("medians") or {}
    if medians:
        splits = list(medians)
        names = sorted({p for m in medians.values() if isinstance(m, Mapping) for p in m})
        flagged = {(f.data.get("property"), f.data.get("split")) for f in drifted if f.data.get("class") is None}
        rows = []
        for p in names:
            mark = " (drifted)" if any((p, sp) in flagged for sp in splits) else ""
            rows.append([f"<b>{_e(p)}</b>{_e(mark)}" if mark else _e(p),
                         *(_fmt_value((medians.get(sp) or {}).get(p)) for sp in splits)])
        out += "<p>Median of each property per split:</p>" + _flat_table(["property", *splits], rows)
    return out


def _distinguishability_html(table: Mapping[str, Any], findings: Sequence[Finding], gallery: _Gallery) -> str:
    """ROC AUC of telling each evaluation split from train, and the images most unlike train."""
    rows = []
    for split, kinds in table.items():
        for kind, r in (kinds or {}).items():
            ci = r.get("ci") or [None, None]
            rows.append([_e(split), _e(kind), _fmt_value(r.get("auc")), f"{_fmt_value(ci[0])} &ndash; {_fmt_value(ci[1])}",
                         _fmt_value(r.get("n_train")), _fmt_value(r.get("n_eval"))])
    out = ("<h3>Distinguishability (adversarial validation)</h3><p class=\"muted\">ROC AUC of a classifier telling each "
           "split from train (0.5 = same distribution).</p>"
           + _flat_table(["split", "features", "ROC AUC", "95% CI", "train images", "split images"], rows))
    for f in findings:
        if f.images and isinstance(f.data.get("features"), str):
            out += _examples(f.images, gallery, f"most unlike train by {f.data['features']} ({f.data.get('split')})")
    return out


def _difficulty_html(table: Mapping[str, Any], findings: Sequence[Finding], gallery: _Gallery) -> str:
    """Probe difficulty per split and per class, as flat tables, and the example images."""
    rows, class_rows = [], []
    for split, r in table.items():
        if not isinstance(r, Mapping):
            continue
        rows.append([_e(split), _fmt_value(r.get("p_easier")), _fmt_value(r.get("accuracy_train")),
                     _fmt_value(r.get("accuracy_eval")), _fmt_value(r.get("mean_loss_train")), _fmt_value(r.get("mean_loss_eval"))])
        for c, cr in (r.get("by_class") or {}).items():
            class_rows.append([_e(split), _e(c), _fmt_value(cr.get("p_easier")), _fmt_value(cr.get("accuracy_train")),
                               _fmt_value(cr.get("accuracy_eval"))])
    out = ("<h3>Difficulty</h3><p class=\"muted\">P(easier): the chance a split image has a lower probe loss than a train "
           "image (0.5 = equally difficult).</p>"
           + _flat_table(["split", "P(easier)", "accuracy train", "accuracy split", "mean loss train", "mean loss split"], rows))
    if class_rows:
        out += "<p>Per class:</p>" + _flat_table(["split", "class", "P(easier)", "accuracy train", "accuracy split"], class_rows)
    for f in findings:
        if f.images:
            out += _examples(f.images, gallery, f"examples: {f.category or f.check}")
    return out


def _classes_table_html(table: Mapping[str, Any], findings: Sequence[Finding], gallery: _Gallery) -> str:
    """Class imbalance and the association of class with split (the counts are in the class section)."""
    imbalance = table.get("imbalance") or {}
    tests = table.get("tests") or {}
    rows = [[_e(sp), _fmt_value(imbalance.get(sp)), _fmt_value((tests.get(sp) or {}).get("cramers_v"))] for sp in imbalance]
    return ('<h3>Class balance</h3><p class="muted">Imbalance: largest over smallest class; Cram&eacute;r&rsquo;s V: '
            'how much the class mix depends on the split (0 = not at all). Counts and shares: see '
            '<a href="#classes">Class distribution</a>.</p>' + _flat_table(["split", "imbalance", "Cramér's V vs train"], rows))


def _separability_html(table: Mapping[str, Any], findings: Sequence[Finding], gallery: _Gallery) -> str:
    ci = table.get("ci") or [None, None]
    out = (f"<h3>Class separability</h3><p>Probe accuracy {_fmt_value(table.get('accuracy'))} (95% CI {_fmt_value(ci[0])} "
           f"&ndash; {_fmt_value(ci[1])}; chance {_fmt_value(table.get('chance'))}) over {_fmt_value(table.get('classes'))} classes.</p>")
    pairs = [p for p in table.get("confused_pairs") or () if isinstance(p, Mapping)]
    if pairs:
        out += "<p>Most confused class pairs:</p>" + _flat_table(
            ["classes", "confusion", "pair accuracy", "images"],
            ([_e(" / ".join(str(c) for c in p.get("classes") or ())), _fmt_value(p.get("confusion")),
              _fmt_value(p.get("pair_accuracy")), _fmt_value(p.get("n"))] for p in pairs))
    return out


def _leak_impact_html(table: Mapping[str, Any], findings: Sequence[Finding], gallery: _Gallery) -> str:
    keys = ("accuracy", "accuracy_on_leaked", "accuracy_without_leaked", "inflation", "leaked", "n")
    rows = [[_e(sp), *(_fmt_value((r or {}).get(k)) for k in keys)] for sp, r in table.items() if isinstance(r, Mapping)]
    return ("<h3>Leak impact</h3><p class=\"muted\">Probe accuracy on each split with and without its leaked images.</p>"
            + _flat_table(["split", "accuracy", "on leaked", "without leaked", "inflation", "leaked", "images"], rows))


#: Distribution tables drawn by a purpose-made function (keyed by their table name, in this order); others are
#: drawn generically.
_DISTRIBUTION_DRAWN = {"properties": _drift_html, "distinguishability": _distinguishability_html, "difficulty": _difficulty_html,
                       "separability": _separability_html, "leak_impact": _leak_impact_html, "classes": _classes_table_html}


def _distribution_section(report: AuditReport, found: _Findings, gallery: _Gallery) -> str:
    """What the table checks measured (``report.distribution``): drifted properties as histograms per split, the
    distinguishability and difficulty tables with their example images, the other tables generically (never a
    chart of p-values or degrees of freedom)."""
    out = '<h2 id="distribution">Distribution: property drift, distinguishability, difficulty</h2>'
    dist = report.distribution
    if not dist:
        return out + '<p class="muted">Not part of this report.</p>'
    drawn = set()
    for key, fn in _DISTRIBUTION_DRAWN.items():
        value = dist.get(key)
        if not isinstance(value, Mapping):
            continue
        try:
            out += fn(value, [f for f in found.others if _owns(f, key)], gallery)
            drawn.add(key)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError):
            pass  # not the shape this version's check writes (an older report): drawn generically below
    rest = {k: v for k, v in dist.items() if k not in drawn}
    if rest:
        out += f'<h3>Other tables</h3><div class="scroll">{render_value(rest)}</div>'
    return out


def _owns(f: Finding, table: str) -> bool:
    """A finding speaks about a distribution table when its data carry that table's keys."""
    d = f.data
    if table == "properties":
        return "property" in d and "kind" in d
    if table == "distinguishability":
        return "auc" in d and "features" in d
    if table == "difficulty":
        return "p_easier" in d or ("scope" in d and "direction" in d)
    return False


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


def _footer(data: Mapping[str, Any], originals: _originals.Originals) -> str:
    # imported at call time: splitaudit/__init__ may still be importing when this module loads
    from .. import __version__

    # The originals have their own blob, parsed the first time a pair is enlarged: megabytes of base64 would
    # otherwise be parsed before the first page of pairs is drawn.
    full = [o.to_json() if o is not None else None for o in originals.items]
    return (f"<footer>splitaudit {_e(__version__)} &middot; self-contained report: no network requests "
            "(Content-Security-Policy <code>default-src 'none'</code>)</footer>"
            f'<script type="application/json" id="sa-data">{_script_json(data)}</script>'
            + (f'<script type="application/json" id="sa-full">{_script_json(full)}</script>' if any(full) else "")
            + f"<script>{_JS}</script></body></html>\n")


def render_html(
    report: AuditReport,
    *,
    explain: ExplainReport | None = None,
    max_thumbnails: int = DEFAULT_MAX_THUMBNAILS,
    thumb_side: int = THUMB_SIDE,
    page_size: int = PAGE_SIZE,
    image_loader: ImageLoader | None = None,
    title: str = "splitaudit report",
    options: Options | None = None,
    output: str | os.PathLike[str] | None = None,
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
    options:
        Its ``html_originals``, ``html_embed_mib`` and ``html_max_pixels`` say how the enlarged pair view gets
        the originals (defaults: :class:`~splitaudit.options.Options`'s).
    output:
        Where the page will be written: ``html_originals="link"`` links the originals relative to its folder
        (the working directory when ``None``).
    """
    if isinstance(max_thumbnails, bool) or not isinstance(max_thumbnails, int) or max_thumbnails < 0:
        raise invalid_parameter("max_thumbnails", "an int >= 0", max_thumbnails)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise invalid_parameter("page_size", "an int >= 1", page_size)
    if isinstance(thumb_side, bool) or not isinstance(thumb_side, int) or not 16 <= thumb_side <= 512:
        raise invalid_parameter("thumb_side", "an int in [16, 512]", thumb_side)

    if options is None:
        from ..options import Options

        options = Options()
    found = _Findings.of(report)
    gallery = _Gallery.of(report, found, cap=max_thumbnails, side=thumb_side, image_loader=image_loader)
    originals = _pair_originals(report, found, gallery, options, output, image_loader)
    sections = [
        _splits_section(report),
        _pairs_section(found.pairs, gallery, originals),
        *(_group_section(check, findings, gallery) for check, findings in found.groups),
        _findings_table("images", "Image findings", found.images, with_images=True),
        _classes_section(report),
        _distribution_section(report, found, gallery),
        _explain_section(explain),
        _findings_table("other", "Other findings", found.others, with_images=False, gallery=gallery),
        _run_section(report),
    ]
    csp = CSP_LINKED if options.html_originals == "link" else CSP
    return (_head(title, csp) + _header(report, found, gallery, title) + "<main>" + "".join(sections) + "</main>"
            + _footer(_pairs_data(report, found.pairs, gallery, page_size), originals))


def _pair_originals(report: AuditReport, found: _Findings, gallery: _Gallery, options: Options,
                    output: str | os.PathLike[str] | None, image_loader: ImageLoader | None) -> _originals.Originals:
    """The originals of the images the pairs name (the gallery's first images), as ``options`` asks."""
    n = len({(r.split, r.path) for f in found.pairs for r in f.images})
    refs = gallery.refs[:n]
    mode = options.html_originals
    if image_loader is not None and mode == "link":
        mode = "none"  # in-memory images have no file to link to
    loader = None if image_loader is None else (lambda k: image_loader(refs[k]))
    start = os.path.dirname(os.path.abspath(os.fspath(output))) if output is not None else os.getcwd()
    return _originals.collect([image_file(report, r) for r in refs], mode=mode,
                              budget_bytes=int(options.html_embed_mib * 2**20), max_pixels=options.html_max_pixels,
                              link_from=start, loader=loader)
