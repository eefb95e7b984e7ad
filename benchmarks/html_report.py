"""Size and opening time of the HTML report for 10k cross-split pairs, in headless Chromium.

1. Writes ``--images`` real JPEGs (128-px crops of the photos bundled with scikit-image and scikit-learn) into
   ``train/<class>/`` and ``val/<class>/`` and builds a synthetic :class:`~splitaudit.AuditReport` with ``--pairs``
   cross-split pair findings between them (exact, pixel and near duplicates with their evidence), plus
   within-split groups and label conflicts, as the real checks would report them.
2. Renders it with :func:`splitaudit.render.html.render_html` (default thumbnail cap) and prints the render time
   and the file size.
3. Opens it with ``chromium --headless --dump-dom`` once (the DOM after the page's script has drawn the first page
   of pairs: rows are counted), then times ``--screenshot`` of it (loaded, script run, painted) and, in the same
   run, of a trivial page; prints the best of ``--repeats`` wall times of each and the difference, which is the
   cost of our page. Nothing is asserted here: ``tests/test_render_html.py`` checks the
   targets stated in ``docs/report.md``.

Usage::

    python benchmarks/html_report.py [--pairs 10000] [--images 8000] [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from splitaudit.options import DEFAULT_HTML_EMBED_MIB
from splitaudit.report.model import AuditReport, Evidence, Finding, ImageRef, Severity, SplitSummary, Verdict

SEED = 20241123
SIDE = 128
CLASSES = 20
#: Targets stated in docs/report.md (checked by tests/test_render_html.py): the page without its embedded
#: originals, which have their own cap (``--html-embed-mib``).
TARGET_MIB = 12.0
TARGET_OPEN_S = 5.0  # extra seconds over a trivial page, in the same run


def photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_image

    out = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    out += [getattr(skimage.data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")]
    return [p if p.ndim == 3 else np.stack([p] * 3, -1) for p in out]


def write_images(root: Path, n: int, *, seed: int = SEED) -> list[tuple[str, str, str]]:
    """``n`` JPEG crops split half/half into train and val; returns (split, relpath, label) per file."""
    rng = np.random.default_rng(seed)
    pics = photos()
    files = []
    for k in range(n):
        split = "train" if k % 2 == 0 else "val"
        label = f"class_{k % CLASSES:02d}"
        rel = f"{label}/img_{k:05d}.jpg"
        path = root / split / rel
        files.append((split, rel, label))
        if path.exists():
            continue
        p = pics[k % len(pics)]
        h, w = p.shape[:2]
        y, x = int(rng.integers(0, h - SIDE)), int(rng.integers(0, w - SIDE))
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(p[y : y + SIDE, x : x + SIDE]).save(path, "JPEG", quality=88)
    return files


def synthetic_report(root: Path, *, pairs: int = 10_000, images: int = 8000, seed: int = SEED) -> AuditReport:
    """A report over real files in ``root`` with ``pairs`` cross-split pairs (and some groups), as checks make them."""
    files = write_images(root, images, seed=seed)
    rng = np.random.default_rng(seed + 1)
    train = [ImageRef(s, p, lab) for s, p, lab in files if s == "train"]
    val = [ImageRef(s, p, lab) for s, p, lab in files if s == "val"]
    findings = []
    kinds = (("exact-duplicates", "exact", "an exact copy"), ("pixel-duplicates", "identical-pixels", "a pixel-identical copy"),
             ("near-duplicates", "near-duplicate", "a near-duplicate"))
    seen = set()
    while len(findings) < pairs:
        a, b = train[int(rng.integers(len(train)))], val[int(rng.integers(len(val)))]
        if (a, b) in seen:
            continue
        seen.add((a, b))
        check, category, words = kinds[int(rng.integers(3))]
        ph, dh = int(rng.integers(0, 7)), int(rng.integers(0, 12))
        ev = [Evidence("phash", ph), Evidence("dhash", dh)]
        if category == "exact":
            ev += [Evidence("bytes", 0), Evidence("pixels", 0)]
        elif category == "identical-pixels":
            ev += [Evidence("pixels", 0)]
        findings.append(Finding(check, Severity.ERROR, f"{b.split}/{b.path} is {words} of {a.split}/{a.path}", (a, b), category, tuple(ev)))
    for g in range(200):  # within-split groups
        members = tuple(train[(g * 7 + j) % len(train)] for j in range(3))
        findings.append(Finding("within-split-duplicates", Severity.WARNING, f"3 copies (near-duplicate) inside split train: "
                                + ", ".join(m.path for m in members), members, "near-duplicate", data={"size": 3, "max_phash": 4}))
    for g in range(50):  # label conflicts
        a, b = train[g], val[(g + 1) % len(val)]
        b = ImageRef(b.split, b.path, "class_other")
        findings.append(Finding("label-conflicts", Severity.ERROR, f"copies of one image carry labels {a.label!r} and 'class_other'",
                                (a, b), data={"labels": {a.label: 1, "class_other": 1}}))
    findings.sort(key=Finding.sort_key)
    counts = {"error": sum(f.severity == Severity.ERROR for f in findings), "warning": 200, "info": 0}
    splits = tuple(
        SplitSummary(name, str(root / name), images // 2, images // 2, 0, 0,
                     tuple((f"class_{c:02d}", images // 2 // CLASSES) for c in range(CLASSES)), 0.0 if name == "train" else 0.5)
        for name in ("train", "val")
    )
    verdict = Verdict(True, Severity.ERROR, tuple(counts.items()), f"{counts['error']} finding(s) at or above error", 0)
    return AuditReport(splits, tuple(findings), verdict, (("exact-duplicates", {}), ("near-duplicates", {})))


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def dump_dom(page: Path, *, profile: Path, timeout: float = 120, screenshot: Path | None = None) -> tuple[float, str]:
    """Wall time of ``chromium --headless --dump-dom`` on ``page`` (the DOM after its scripts ran) and the DOM; with
    ``screenshot``, of ``--screenshot`` instead (loaded, scripts run, painted), and no DOM. Opening times use
    screenshots: dumping serialises the whole DOM to a pipe, which for a page with 16 MiB of embedded originals
    costs seconds that no reader of the page waits for."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    what = f"--screenshot={screenshot}" if screenshot is not None else "--dump-dom"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", f"--user-data-dir={profile}", what, page.resolve().as_uri()]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"chromium failed ({r.returncode}): {r.stderr[-500:]}")
    return wall, r.stdout


def measure(workdir: Path, *, pairs: int, images: int, repeats: int) -> dict[str, float]:
    from splitaudit.render.html import render_html

    report = synthetic_report(workdir / "data", pairs=pairs, images=images)
    t0 = time.perf_counter()
    text = render_html(report)
    render_s = time.perf_counter() - t0
    page = workdir / "report.html"
    page.write_text(text, encoding="utf-8")
    trivial = workdir / "trivial.html"
    trivial.write_text("<!DOCTYPE html><html><body><p>trivial</p></body></html>\n", encoding="utf-8")
    profile = workdir / "profile"
    times: dict[str, list[float]] = {"report": [], "trivial": []}
    rows = dump_dom(page, profile=profile)[1].count(" data-pair=\"")
    for _ in range(repeats):
        for name, p in (("trivial", trivial), ("report", page)):
            wall, _ = dump_dom(p, profile=profile, screenshot=workdir / "shot.png")
            times[name].append(wall)
    # The embedded originals (issue #14: the enlarged pair view) are bounded by their own cap, --html-embed-mib;
    # the size target is for the rest of the page.
    full = text.split('id="sa-full">', 1)[1].split("</script>", 1)[0] if 'id="sa-full">' in text else ""
    originals_mib = len(full.encode("utf-8")) / 2**20
    return {
        "pairs": float(pairs),
        "findings": float(len(report.findings)),
        "render_s": render_s,
        "size_mib": page.stat().st_size / 2**20,
        "originals_mib": originals_mib,
        "size_without_originals_mib": page.stat().st_size / 2**20 - originals_mib,
        "open_report_s": min(times["report"]),
        "open_trivial_s": min(times["trivial"]),
        "open_extra_s": min(times["report"]) - min(times["trivial"]),
        "rows_drawn": float(rows),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--images", type=int, default=8000, help="image files written (half train, half val)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, help="keep scratch data here (reused when present)")
    args = ap.parse_args(argv)
    if chromium() is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="splitaudit-html-bench-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        m = measure(workdir, pairs=args.pairs, images=args.images, repeats=args.repeats)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"pairs: {m['pairs']:.0f} (findings: {m['findings']:.0f}); first page drawn: {m['rows_drawn']:.0f} rows")
    print(f"render: {m['render_s']:.2f} s; file size: {m['size_mib']:.2f} MiB, of which embedded originals "
          f"{m['originals_mib']:.2f} MiB (cap {DEFAULT_HTML_EMBED_MIB:g} MiB) and the rest {m['size_without_originals_mib']:.2f} MiB "
          f"(target <= {TARGET_MIB} MiB)")
    print(f"open (chromium --headless --screenshot, best of {args.repeats}): report {m['open_report_s']:.2f} s, "
          f"trivial page {m['open_trivial_s']:.2f} s, extra {m['open_extra_s']:.2f} s (target <= {TARGET_OPEN_S} s)")
    print(f"cpu count: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
