"""Learning curves as SVG (hand-written, no plotting library) or PNG (Pillow): for people and for #6's HTML report.

Two panels (accuracy, loss). Each shows the training curve as logged, the same curve shifted half an epoch to the
left (a running average describes the weights of mid-epoch), validation, and for probes the training set measured
at each epoch's end in inference mode: the curve validation should be compared with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from ..errors import SplitauditError

W, H = 960, 380
PANEL_W, PANEL_H = 380, 250
MARGIN_L, MARGIN_T, GAP = 60, 76, 100
COLORS = {"train": "#1f77b4", "train, shifted -1/2 epoch": "#1f77b4", "val": "#d62728", "train, epoch end (inference)": "#2ca02c"}


@dataclass(frozen=True)
class Series:
    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    dashed: bool = False


def panels(report: Any) -> list[tuple[str, list[Series]]]:
    """(title, series) for the accuracy and the loss panel, from the user's history or the primary probe."""
    out: list[tuple[str, list[Series]]] = []
    h = report.history
    epochs = report.main.epochs if h is None else ()
    for metric in ("accuracy", "loss"):
        series: list[Series] = []
        if h is not None:
            pair = h.pair(metric)
            if not pair:
                continue
            t, v = pair
        elif epochs:
            t = tuple(e.reported_accuracy if metric == "accuracy" else e.reported_loss for e in epochs)
            v = tuple(e.val_accuracy if metric == "accuracy" else e.val_loss + e.penalty for e in epochs)
            inf = tuple(e.train_inference[0] if metric == "accuracy" else e.train_inference[1] + e.penalty for e in epochs)
            series.append(Series("train, epoch end (inference)", tuple(float(i + 1) for i in range(len(inf))), inf))
        else:
            continue
        xs = tuple(float(i + 1) for i in range(len(t)))
        series[:0] = [Series("train", xs, tuple(t)), Series("train, shifted -1/2 epoch", tuple(x - 0.5 for x in xs), tuple(t), True),
                      Series("val", tuple(float(i + 1) for i in range(len(v))), tuple(v))]
        title = f"{metric} ({'history' if h is not None else report.primary})"
        out.append((title, series))
    return out


def _legend(ox: float, i: int) -> tuple[float, float]:
    """Two legend entries per row above the panel."""
    return ox + (i % 2) * (PANEL_W / 2), MARGIN_T - 40 + (i // 2) * 15


def _frame(series: list[Series]) -> tuple[float, float, float, float]:
    xs = [x for s in series for x in s.xs] or [0.0, 1.0]
    ys = [y for s in series for y in s.ys] or [0.0, 1.0]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    pad = (y1 - y0) * 0.05
    return x0, x1, y0 - pad, y1 + pad


def _mapper(ox: float, frame: tuple[float, float, float, float]) -> Any:
    x0, x1, y0, y1 = frame
    return lambda x, y: (ox + (x - x0) / (x1 - x0) * PANEL_W, MARGIN_T + PANEL_H - (y - y0) / (y1 - y0) * PANEL_H)


def render_svg(report: Any) -> str:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">',
             f'<rect width="{W}" height="{H}" fill="white"/>']
    for k, (title, series) in enumerate(panels(report)):
        ox = MARGIN_L + k * (PANEL_W + GAP)
        frame = _frame(series)
        to = _mapper(ox, frame)
        parts.append(f'<text x="{ox}" y="{MARGIN_T - 56}" font-size="13" font-weight="bold">{escape(title)}</text>')
        parts.append(f'<rect x="{ox}" y="{MARGIN_T}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>')
        for j in range(5):
            yv = frame[2] + (frame[3] - frame[2]) * j / 4
            _, py = to(frame[0], yv)
            parts.append(f'<text x="{ox - 6}" y="{py + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
        for e in range(int(frame[0]) if frame[0] >= 1 else 1, int(frame[1]) + 1):
            px, _ = to(e, frame[2])
            parts.append(f'<text x="{px:.1f}" y="{MARGIN_T + PANEL_H + 14}" text-anchor="middle">{e}</text>')
        parts.append(f'<text x="{ox + PANEL_W / 2}" y="{MARGIN_T + PANEL_H + 30}" text-anchor="middle">epoch</text>')
        for i, s in enumerate(series):
            pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in (to(x, y) for x, y in zip(s.xs, s.ys)))
            dash = ' stroke-dasharray="5,4"' if s.dashed else ""
            color = COLORS.get(s.label, "#555")
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{dash}><title>{escape(s.label)}</title></polyline>')
            lx, ly = _legend(ox, i)
            parts.append(f'<line x1="{lx:.1f}" y1="{ly}" x2="{lx + 16:.1f}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>')
            parts.append(f'<text x="{lx + 20:.1f}" y="{ly + 4}" font-size="9">{escape(s.label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def render_png(report: Any, path: str) -> None:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    for k, (title, series) in enumerate(panels(report)):
        ox = MARGIN_L + k * (PANEL_W + GAP)
        frame = _frame(series)
        to = _mapper(ox, frame)
        d.text((ox, MARGIN_T - 62), title, fill="black")
        d.rectangle((ox, MARGIN_T, ox + PANEL_W, MARGIN_T + PANEL_H), outline="#999999")
        for j in range(5):
            yv = frame[2] + (frame[3] - frame[2]) * j / 4
            _, py = to(frame[0], yv)
            d.text((ox - 40, py - 5), f"{yv:.3g}", fill="black")
        for e in range(int(frame[0]) if frame[0] >= 1 else 1, int(frame[1]) + 1):
            px, _ = to(e, frame[2])
            d.text((px - 3, MARGIN_T + PANEL_H + 6), str(e), fill="black")
        d.text((ox + PANEL_W / 2 - 15, MARGIN_T + PANEL_H + 22), "epoch", fill="black")
        for i, s in enumerate(series):
            color = COLORS.get(s.label, "#555555")
            pts = [to(x, y) for x, y in zip(s.xs, s.ys)]
            if s.dashed:
                for a, b in zip(pts, pts[1:]):  # dashes: every other tenth of each segment
                    for t in range(0, 10, 2):
                        p = (a[0] + (b[0] - a[0]) * t / 10, a[1] + (b[1] - a[1]) * t / 10)
                        q = (a[0] + (b[0] - a[0]) * (t + 1) / 10, a[1] + (b[1] - a[1]) * (t + 1) / 10)
                        d.line([p, q], fill=color, width=2)
            elif len(pts) > 1:
                d.line(pts, fill=color, width=2)
            else:
                d.ellipse((pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2), fill=color)
            lx, ly = _legend(ox, i)
            d.line([(lx, ly), (lx + 14, ly)], fill=color, width=2)
            d.text((lx + 18, ly - 5), s.label, fill="black")
    im.save(path, "PNG")


def write_plot(report: Any, path: str | os.PathLike[str]) -> None:
    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    if ext not in (".svg", ".png"):
        raise SplitauditError(f"cannot plot to {p!r}: the file name must end in .svg or .png")
    try:
        if ext == ".svg":
            with open(p, "w", encoding="utf-8") as fh:
                fh.write(render_svg(report))
        else:
            render_png(report, p)
    except OSError as exc:
        raise SplitauditError(f"cannot write {p!r}: {exc.strerror or exc}") from exc
