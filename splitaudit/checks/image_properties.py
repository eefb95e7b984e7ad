"""image-properties: how the images of each evaluation split differ from train in size, format and appearance.

Compared per property, every evaluation split against train: width, height, aspect ratio, file size, brightness,
contrast, saturation, sharpness and entropy with a two-sample Kolmogorov-Smirnov test (the effect size is the KS
statistic D, the largest gap between the two cumulative distributions, plus the Wasserstein distance in units of
train's standard deviation); mode (channels), file format and the share of near-blank images with a chi-square or
Fisher test and the total variation distance. A property is reported when its Bonferroni-corrected p-value is
below ``alpha`` *and* its effect reaches the threshold (``min_ks``, ``min_tvd``, ``min_blank``): with thousands of
images tiny, harmless differences are significant, so significance alone never reports. Reported properties are
ranked by effect; for each, the classes that shift most are named, and a property that differs only inside one
class is reported for that class. Thresholds and their measurement: docs/distribution.md.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..report.model import CheckResult, Finding, Severity
from ._probe import SEED, property_columns
from ._stats import chi2_contingency
from ._twosample import fisher_exact, ks_2samp, wasserstein
from .context import AuditContext
from .registry import register

NUMERIC = ("brightness", "contrast", "saturation", "sharpness", "entropy", "width", "height", "aspect", "file_size")
#: Spread is multiplicative for these: the Wasserstein shift is measured on log(1 + value).
LOG_SCALE = frozenset({"width", "height", "aspect", "file_size", "sharpness"})
#: How each property reads when the evaluation split is (lower, higher) than train.
WORDS = {
    "brightness": ("darker", "brighter"), "contrast": ("lower in contrast", "higher in contrast"),
    "saturation": ("less saturated", "more saturated"), "sharpness": ("blurrier", "sharper"),
    "entropy": ("less detailed (lower grey-level entropy)", "more detailed (higher grey-level entropy)"),
    "width": ("narrower", "wider"), "height": ("shorter", "taller"),
    "aspect": ("taller in shape (lower width/height)", "wider in shape (higher width/height)"),
    "file_size": ("smaller on disk", "larger on disk"),
}
EXAMPLES = 3
#: Bins of the per-split histograms stored in the tables (the HTML report plots those of the drifted properties).
BINS = 24


@register("image-properties", summary="Image size, format, mode, brightness, contrast, saturation, sharpness, entropy and blank images that differ between train and an evaluation split (KS/chi-square with effect sizes).", display="table")
def image_properties(
    ctx: AuditContext,
    *,
    alpha: float = 0.001,
    min_ks: float = 0.1,
    min_tvd: float = 0.1,
    min_blank: float = 0.02,
    min_images: int = 20,
    min_class_images: int = 10,
    max_findings: int = 10,
) -> CheckResult:
    names = ctx.dataset.split_names
    if len(names) < 2:
        return CheckResult()
    from ..features.properties import BLANK_STD

    s = ctx.split_index
    f = ctx.features
    ok = f.ok
    cols = property_columns(ctx)
    # Integer class codes (-1 = unlabelled): comparing 100k object labels per class and property cost 0.25 s.
    class_names = sorted({r.label for r in ctx.dataset.records if r.label is not None})
    code_of = {c: i for i, c in enumerate(class_names)}
    codes = np.fromiter((code_of.get(r.label, -1) if r.label is not None else -1 for r in ctx.dataset.records),
                        dtype=np.int64, count=len(ctx.dataset.records))
    train = ok & (s == 0)
    blank = ok & (cols["contrast"] < BLANK_STD)
    # the blank category as references to two strings (8 bytes a row): as text, 36 bytes a row, copied per split
    cats = {"mode": f["mode"], "format": f["format"], "blank": np.array(["not blank", "blank"], dtype=object)[blank.astype(np.intp)]}
    m = (len(NUMERIC) + len(cats)) * (len(names) - 1)  # Bonferroni: every overall test of the run
    summary: dict = {"medians": {}, "blank_fraction": {}, "modes": {}, "formats": {}, "tests": {}}
    splits_rows = {name: ok & (s == k) for k, name in enumerate(names)}
    summary["histograms"] = {p: _histogram(cols[p], splits_rows, p) for p in NUMERIC}
    class_histograms: dict[str, dict] = {}  # {evaluation split: {class: {property: histogram}}}, flagged ones only
    for k, name in enumerate(names):
        rows = ok & (s == k)
        summary["medians"][name] = {p: _median(cols[p][rows]) for p in NUMERIC}
        summary["blank_fraction"][name] = float(blank[rows].sum() / rows.sum()) if rows.any() else None
        summary["modes"][name] = _counts(f["mode"][rows])
        summary["formats"][name] = _counts(f["format"][rows])
    findings: list[Finding] = []
    for k, other in enumerate(names[1:], start=1):
        ev = ok & (s == k)
        if train.sum() < min_images or ev.sum() < min_images:
            continue
        ranked: list[tuple[float, Finding]] = []
        in_split = np.bincount(codes[ev & (codes >= 0)], minlength=len(class_names)) + np.bincount(codes[train & (codes >= 0)], minlength=len(class_names))
        members = {class_names[j]: (train & (codes == j), ev & (codes == j)) for j in np.flatnonzero(in_split)}
        tests: dict = {}
        flagged_numeric: set[str] = set()
        for prop in NUMERIC:
            tested = _finite_ks(cols[prop][train], cols[prop][ev], min_images)
            if tested is None:
                continue
            a, b, d, p_raw = tested
            p = min(1.0, p_raw * m)
            shift = _shift(a, b, prop)
            tests[prop] = {"ks": d, "p_value": p, "shift_sd": shift, "median_train": _median(a), "median_eval": _median(b)}
            if p < alpha and d >= min_ks:
                flagged_numeric.add(prop)
                by_class = _by_class(cols[prop], members, min_class_images)
                ranked.append((d, _numeric_finding(ctx, prop, a, b, d, p, m, shift, other, names[0], ev, cols[prop], by_class)))
        for cat, values in cats.items():
            ta, tb = _counts(values[train]), _counts(values[ev])
            keys = sorted(set(ta) | set(tb))
            if len(keys) < 2:
                continue
            table = np.array([[ta.get(x, 0) for x in keys], [tb.get(x, 0) for x in keys]], dtype=np.float64)
            pa, pb = table[0] / table[0].sum(), table[1] / table[1].sum()
            tvd = float(0.5 * np.abs(pa - pb).sum())
            if table.shape[1] == 2:
                p_raw = fisher_exact(table)
            else:
                p_raw = chi2_contingency(table)[1]
            p = min(1.0, p_raw * m)
            tests[cat] = {"tvd": tvd, "p_value": p}
            threshold = min_blank if cat == "blank" else min_tvd
            if p < alpha and tvd >= threshold:
                ranked.append((tvd, _categorical_finding(ctx, cat, keys, table, tvd, p, m, other, names[0], ev, values)))
        # A property that does not differ overall can still differ inside one class (e.g. only val's cats are dark).
        mc = max(1, len(NUMERIC) * len(members) * (len(names) - 1))
        for prop in NUMERIC:
            if prop in flagged_numeric or prop not in tests:
                continue
            for c, (ia, ib) in members.items():
                tested = _finite_ks(cols[prop][ia], cols[prop][ib], min_class_images)
                if tested is None:
                    continue
                a, b, d, p_raw = tested
                p = min(1.0, p_raw * mc)
                if p < alpha and d >= min_ks:
                    shift = _shift(a, b, prop)
                    class_histograms.setdefault(other, {}).setdefault(c, {})[prop] = _histogram(cols[prop], {names[0]: ia, other: ib}, prop)
                    ranked.append((d, _numeric_finding(ctx, prop, a, b, d, p, mc, shift, other, names[0], ib, cols[prop], {}, label=c)))
        summary["tests"][other] = tests
        ranked.sort(key=lambda t: (-t[0], t[1].message))
        for rank, (_, finding) in enumerate(ranked[:max_findings], start=1):
            findings.append(Finding(finding.check, finding.severity, finding.message, finding.images, finding.category,
                                    finding.evidence, {**finding.data, "rank": rank}))
    if class_histograms:
        summary["class_histograms"] = class_histograms
    return CheckResult(tuple(findings), {"properties": summary})


def _histogram(col: np.ndarray, rows: dict[str, np.ndarray], prop: str) -> dict:
    """Counts per split over common bin edges (log-spaced where spread is multiplicative), for plotting."""
    finite = np.isfinite(col)
    pooled = col[finite & np.logical_or.reduce(list(rows.values()))]
    if not len(pooled):
        return {"scale": "linear", "edges": [], "counts": {}}
    lo, hi = float(pooled.min()), float(pooled.max())
    log = prop in LOG_SCALE and lo >= 0 and hi > lo
    if hi <= lo:
        edges = np.array([lo - 0.5, hi + 0.5])
    elif log:
        edges = np.expm1(np.linspace(np.log1p(lo), np.log1p(hi), BINS + 1))
    else:
        edges = np.linspace(lo, hi, BINS + 1)
    counts = {name: [int(c) for c in np.histogram(col[r & finite], bins=edges)[0]] for name, r in rows.items()}
    return {"scale": "log" if log else "linear", "edges": [float(e) for e in edges], "counts": counts}


def _median(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else None


def _counts(values: np.ndarray) -> dict[str, int]:
    """Each value's count, by its text, in text order. Counted as they are: made into one text array and sorted,
    a million values were two copies of 4 bytes a character each (~70 MB for the blank column at 1M images)."""
    counts: dict[str, int] = {}
    for value, c in Counter(values.tolist()).items():
        counts[str(value)] = counts.get(str(value), 0) + c
    return {k: counts[k] for k in sorted(counts)}


def _finite_ks(x: np.ndarray, y: np.ndarray, min_n: int) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """The finite values of both samples and their KS statistic and p-value; ``None`` when either has fewer than
    ``min_n`` (too few to test)."""
    a, b = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(a) < min_n or len(b) < min_n:
        return None
    d, p = ks_2samp(a, b)
    return a, b, d, p


def _shift_words(shift: float, train: str) -> str:
    """The shift in words: its size in ``train``'s spread, or that ``train`` has (almost) no spread to compare with
    (a property every training image shares, such as one image size, gives a capped, meaningless ratio)."""
    if shift >= 100.0:
        return f"every {train} image has nearly the same value, so any difference is new to a model trained on it"
    if shift >= 10:
        return f"the difference is {shift:.0f} times the spread of {train}'s values"
    return f"the difference is {shift:.2g} times the spread (standard deviation) of {train}'s values"


def _shift(a: np.ndarray, b: np.ndarray, prop: str) -> float:
    """Wasserstein distance between the two samples in units of train's standard deviation (log scale where
    spread is multiplicative); capped at 100 when train does not vary at all."""
    t = (lambda v: np.log1p(np.maximum(v, 0))) if prop in LOG_SCALE else (lambda v: v)
    ta, tb = t(a), t(b)
    w = float(wasserstein(ta, tb))
    sd = float(ta.std())
    return min(100.0, w / sd) if sd > 1e-12 else (0.0 if w <= 1e-12 else 100.0)


def _by_class(col: np.ndarray, members: dict[str, tuple[np.ndarray, np.ndarray]], min_n: int) -> dict[str, float]:
    """KS statistic of each class with enough images on both sides, largest first."""
    out: dict[str, float] = {}
    for c, (ia, ib) in members.items():
        a, b = col[ia], col[ib]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if len(a) >= min_n and len(b) >= min_n:
            out[c] = ks_2samp(a, b)[0]
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _median_ci(a: np.ndarray, b: np.ndarray, resamples: int = 200) -> tuple[float, float]:
    """95% bootstrap interval of median(b) - median(a) (fixed seed)."""
    rng = np.random.default_rng(SEED)
    diffs = np.array([np.median(rng.choice(b, len(b))) - np.median(rng.choice(a, len(a))) for _ in range(resamples)])
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _numeric_finding(ctx: AuditContext, prop: str, a: np.ndarray, b: np.ndarray, d: float, p: float, tests: int, shift: float,
                     other: str, train: str, ev: np.ndarray, col: np.ndarray, by_class: dict[str, float],
                     label: str | None = None) -> Finding:
    ma, mb = float(np.median(a)), float(np.median(b))
    lo, hi = _median_ci(a, b)
    # Direction from the medians, or from the means when medians tie (discrete properties such as width).
    lower = (mb < ma) if mb != ma else (float(b.mean()) < float(a.mean()))
    word = WORDS[prop][0 if lower else 1]
    rows = np.flatnonzero(ev & np.isfinite(col))
    order = rows[np.argsort(col[rows] if lower else -col[rows], kind="stable")][:EXAMPLES]
    who = f"{other} images of class {label!r}" if label is not None else f"{other} images"
    base = f"{train}'s {label!r} images" if label is not None else train
    name = prop.replace("_", " ")
    top = [c for c, v in by_class.items() if v >= d][:3] if by_class else []
    classes = f"; most shifted classes: {', '.join(repr(c) for c in top)}" if top else ""
    message = (f"{who} are {word} than {base}: median {name} {_fmt(mb)} against {_fmt(ma)} (difference "
               f"{mb - ma:+.3g}, 95% CI {lo:+.3g} to {hi:+.3g}); {_shift_words(shift, train)}{classes}. A model is scored "
               f"on {name} it did not learn from, so part of the {train}/{other} gap is this shift, not overfitting "
               f"(KS D={d:.2f}, p={p:.1e} after Bonferroni over {tests} tests)")
    data = {"split": other, "kind": "numeric", "property": prop, "class": label, "ks": d, "p_value": p,
            "shift_sd": shift, "median_train": ma, "median_eval": mb, "median_difference_ci": [lo, hi],
            "direction": "lower" if lower else "higher", "n_train": len(a), "n_eval": len(b), "by_class": by_class}
    category = f"{other}/{prop}" + (f"/{label}" if label is not None else "")
    return Finding("image-properties", Severity.WARNING, message, tuple(ctx.ref(i) for i in order), category, (), data)


def _categorical_finding(ctx: AuditContext, cat: str, keys: list[str], table: np.ndarray, tvd: float, p: float,
                         tests: int, other: str, train: str, ev: np.ndarray, values: np.ndarray) -> Finding:
    pa, pb = table[0] / table[0].sum(), table[1] / table[1].sum()
    j = int(np.argmax(np.abs(pb - pa)))
    key = keys[j]
    what = {"mode": "image mode (channels)", "format": "file format", "blank": "near-blank images"}[cat]
    if cat == "blank":
        j = keys.index("blank")
        key = "blank"
        lo, hi = _diff_ci(pa[j], pb[j], int(table[0].sum()), int(table[1].sum()))
        head = (f"{other} has {pb[j]:.1%} near-blank images, {train} {pa[j]:.1%} (difference {pb[j] - pa[j]:+.1%}, 95% CI "
                f"{lo:+.1%} to {hi:+.1%})")
        why = "blank images carry no class evidence, so they cap accuracy on the split that has more of them"
    else:
        head = (f"{what} differs between {train} and {other}: {key!r} is {pa[j]:.0%} of {train} but {pb[j]:.0%} of {other} "
                f"(total variation {tvd:.2f})")
        why = "a network can key on encoding or channel artefacts, which then do not transfer"
    rows = np.flatnonzero(ev & (values == key)) if (pb[j] > pa[j]) else np.zeros(0, np.int64)
    message = f"{head}; p={p:.1e} (Bonferroni over {tests} tests). {why[0].upper()}{why[1:]}"
    data = {"split": other, "kind": "categorical", "property": cat, "tvd": tvd, "p_value": p,
            "train": {k: float(v) for k, v in zip(keys, pa)}, "eval": {k: float(v) for k, v in zip(keys, pb)}}
    return Finding("image-properties", Severity.WARNING, message, tuple(ctx.ref(i) for i in rows[:EXAMPLES]), f"{other}/{cat}", (), data)


def _diff_ci(pa: float, pb: float, na: int, nb: int) -> tuple[float, float]:
    """Wald 95% interval of pb - pa."""
    se = math.sqrt(pa * (1 - pa) / max(na, 1) + pb * (1 - pb) / max(nb, 1))
    return pb - pa - 1.96 * se, pb - pa + 1.96 * se
