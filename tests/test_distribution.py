"""The distribution audit on planted situations built from real images (issue #4).

Images: scikit-learn's handwritten digits (1,797 real scans, 8x8, 10 classes), drawn as dark ink on light paper
at 32x32 and written as PNG files; real EfficientNet-Lite0 embeddings at 64 px; real scikit-learn probes. Each
test builds one situation and asserts that the right check fires and names the right class or property; the clean
random split asserts that no distribution check reports anything at its defaults. Expected values are derived
from the planted situation, never copied from a run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import splitaudit
from splitaudit import Severity

DISTRIBUTION = ["class-balance", "image-properties", "split-distinguishability", "difficulty", "separability", "leak-impact"]
PAPER, INK = 235, 35  # grey levels: a real scan's range, with headroom so darkening never clips
VAL_SHARE = 0.25


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(32x32 uint8 images, labels as strings, raw 8x8 pixels as floats)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ink = d.images / 16.0
    small = (PAPER - ink * (PAPER - INK)).round().astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BILINEAR)) for a in small])
    return big, d.target.astype(str), d.data


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: the same images (by content) are embedded once, whatever split they land in."""
    return tmp_path_factory.mktemp("distribution-cache")


def random_val(n: int, seed: int = 7) -> np.ndarray:
    mask = np.zeros(n, bool)
    mask[np.random.default_rng(seed).permutation(n)[: round(n * VAL_SHARE)]] = True
    return mask


def write(root: Path, images: np.ndarray, labels: np.ndarray, is_val: np.ndarray, *, names: np.ndarray | None = None) -> tuple[Path, Path]:
    """train/<label>/<i>.png and val/<label>/<i>.png; returns the two split folders."""
    for i, (im, label, v) in enumerate(zip(images, labels, is_val)):
        p = root / ("val" if v else "train") / str(label) / f"{names[i] if names is not None else i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(p)
    return root / "train", root / "val"


def audit(splits: tuple[Path, Path], cache: Path, **kw: object) -> splitaudit.AuditReport:
    kw.setdefault("select", DISTRIBUTION)
    return splitaudit.audit(*splits, cache_dir=cache, image_size=64, workers=1, **kw)


def show(report: splitaudit.AuditReport) -> str:
    return "\n".join(f"{f.severity.label} {f.check}: {f.message}" for f in report.findings)


def test_clean_random_split_has_no_distribution_findings(tmp_path: Path, digits, cache: Path) -> None:
    x, y, _ = digits
    splits = write(tmp_path, x, y, random_val(len(y)))
    report = audit(splits, cache)
    assert [f for f in report.findings if f.check in DISTRIBUTION] == [], show(report)
    d = report.distribution
    # Every table was measured (nothing was flagged because nothing differs, not because nothing ran).
    assert set(d) == {"classes", "properties", "distinguishability", "difficulty", "separability", "leak_impact"}
    n_val = int(random_val(len(y)).sum())
    assert sum(d["classes"]["counts"]["val"].values()) == n_val
    assert 0.35 < d["distinguishability"]["val"]["embeddings"]["auc"] < 0.65
    assert d["separability"]["accuracy"] > d["separability"]["chance"] + 0.5  # digits are learnable
    # Deterministic: a second run (everything from the cache) gives byte-identical JSON, distribution included.
    again = audit(splits, cache)
    assert again.to_json() == report.to_json()
    doc = json.loads(report.to_json())
    assert doc["distribution"]["classes"]["counts"]["train"] == {c: int(((y == c) & ~random_val(len(y))).sum()) for c in sorted(set(y))}


def test_darker_val_is_named_by_image_properties(tmp_path: Path, digits, cache: Path) -> None:
    x, y, _ = digits
    is_val = random_val(len(y))
    dark = x.copy()
    dark[is_val] -= 30  # darker paper and ink, same contrast (no clipping: ink is at 35)
    splits = write(tmp_path, dark, y, is_val)
    # Image properties need no embeddings: this runs with --backbone none (and so without TensorFlow).
    report = audit(splits, cache, backbone="none")
    found = report.by_check("image-properties")
    assert found, show(report)
    top = min(found, key=lambda f: f.data["rank"])
    assert top.data["property"] == "brightness" and top.data["direction"] == "lower" and top.data["class"] is None
    assert "darker" in top.message and top.severity is Severity.WARNING
    assert top.data["median_eval"] - top.data["median_train"] == pytest.approx(-30, abs=1.5)
    lo, hi = top.data["median_difference_ci"]
    assert lo <= -28 and hi < 0
    # Contrast, sharpness and entropy are unchanged by a uniform shift: not reported.
    assert not [f for f in found if f.data["property"] in ("contrast", "sharpness", "entropy")], show(report)
    assert all(i.split == "val" for i in top.images)
    assert not report.failed  # warnings do not fail the default verdict


def test_val_missing_a_class_is_named(tmp_path: Path, digits, cache: Path) -> None:
    x, y, _ = digits
    is_val = random_val(len(y))
    keep = ~(is_val & (y == "7"))
    splits = write(tmp_path, x[keep], y[keep], is_val[keep], names=np.flatnonzero(keep))
    report = audit(splits, cache)
    missing = [f for f in report.by_check("class-balance") if f.data["kind"] == "missing-in-eval"]
    assert len(missing) == 1 and missing[0].data["classes"] == ["7"], show(report)
    assert report.distribution["classes"]["counts"]["val"]["7"] == 0
    assert report.distribution["classes"]["ratios"]["val"]["7"] == 0


def test_val_drawn_from_easy_images_is_easier(tmp_path: Path, digits, cache: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    x, y, raw = digits
    # "Easy" is decided independently of splitaudit: out-of-fold confidence of a pixel-level classifier.
    proba = cross_val_predict(LogisticRegression(max_iter=2000), raw, y, cv=5, method="predict_proba")
    classes = np.unique(y)
    p_true = proba[np.arange(len(y)), np.searchsorted(classes, y)]
    is_val = np.zeros(len(y), bool)
    for c in classes:  # per class, the easiest quarter: val keeps train's class mix
        idx = np.flatnonzero(y == c)
        is_val[idx[np.argsort(-p_true[idx], kind="stable")][: round(len(idx) * VAL_SHARE)]] = True
    splits = write(tmp_path, x, y, is_val)
    report = audit(splits, cache)
    overall = [f for f in report.by_check("difficulty") if f.data["scope"] == "overall"]
    assert len(overall) == 1 and overall[0].data["direction"] == "easier", show(report)
    f = overall[0]
    assert f.data["p_easier"] > 0.6 and f.data["accuracy_eval"] > f.data["accuracy_train"]
    assert "easier" in f.message and "95% CI" in f.message
    assert not [g for g in report.by_check("difficulty") if g.data["direction"] == "harder"], show(report)
    per_class = [g for g in report.by_check("difficulty") if g.data["scope"] == "classes"]
    # The classes named are real classes, each with val easier than train.
    for g in per_class:
        assert set(g.data["classes"]) <= set(classes)
        assert all(r["p_easier"] > 0.5 for r in g.data["by_class"].values())


def test_two_classes_of_the_same_images_are_at_chance(tmp_path: Path, digits, cache: Path) -> None:
    x, y, _ = digits
    y2 = y.astype(object).copy()
    threes = np.flatnonzero(y == "3")
    y2[threes[np.random.default_rng(3).permutation(len(threes))[: len(threes) // 2]]] = "3b"  # same kind of images, two names
    splits = write(tmp_path, x, y2.astype(str), random_val(len(y)))
    report = audit(splits, cache)
    pairs = [f for f in report.by_check("separability") if f.data["scope"] == "pair"]
    assert [sorted(f.data["classes"]) for f in pairs] == [["3", "3b"]], show(report)
    assert pairs[0].data["ci"][0] < 0.5 < pairs[0].data["ci"][1] or pairs[0].data["pair_accuracy"] < 0.7
    assert "cannot be told apart" in pairs[0].message
    top = report.distribution["separability"]["confused_pairs"][0]
    assert sorted(top["classes"]) == ["3", "3b"]


def test_leaked_copies_inflate_val_accuracy(tmp_path: Path, digits, cache: Path) -> None:
    x, y, _ = digits
    is_val = random_val(len(y))
    splits = write(tmp_path, x, y, is_val)
    train_idx = np.flatnonzero(~is_val)
    copied = np.random.default_rng(5).choice(train_idx, 150, replace=False)
    for i in copied:  # exact copies of training images planted in val
        (splits[1] / y[i] / f"copy_{i:05d}.png").write_bytes((splits[0] / y[i] / f"{i:05d}.png").read_bytes())
    report = audit(splits, cache, select=[*DISTRIBUTION, "exact-duplicates"])
    (f,) = report.by_check("leak-impact")
    assert f.data["split"] == "val" and f.data["copies"] >= 150
    assert f.data["accuracy_on_leaked"] > f.data["accuracy_without_leaked"]
    assert f.data["inflation"] == pytest.approx(f.data["accuracy"] - f.data["accuracy_without_leaked"])
    assert f.data["ci"][0] > 0 and f.data["p_value"] < 0.001 and "points" in f.message
    assert len(report.by_check("exact-duplicates")) >= 150


def test_properties_are_cached_and_bad_files_never_raise(tmp_path: Path, digits) -> None:
    from splitaudit.checks import AuditContext
    from splitaudit.options import Options
    from splitaudit.features import FeatureCache
    from splitaudit.features.properties import MEASURED, properties_batch
    from splitaudit.scan import scan

    x, y, _ = digits
    splits = write(tmp_path / "d", x[:60], y[:60], random_val(60))
    source = next(iter(sorted(splits[0].rglob("*.png"))))
    (splits[1] / "0").mkdir(parents=True, exist_ok=True)
    (splits[1] / "0" / "truncated.png").write_bytes(source.read_bytes()[:60])
    counts = []
    for _ in range(2):
        with FeatureCache(tmp_path / "cache") as store:
            ctx = AuditContext(scan(list(splits)), Options(backbone="none"), cache=store)
            props = ctx.properties
            counts.append(ctx.properties_computed)
    assert counts[0] == 60 and counts[1] == 0  # the truncated file is not decoded, hence not measured
    bad = [i for i, r in enumerate(ctx.dataset.records) if r.relpath.endswith("truncated.png")]
    assert np.isnan(props["brightness"][bad]).all()
    out = properties_batch({"path": np.array([str(splits[1] / "0" / "truncated.png"), str(tmp_path / "missing.png")], dtype=object)})
    assert set(out) == set(MEASURED) and all(np.isnan(v).all() for v in out.values())


def test_checks_import_no_scipy_stats_or_sklearn() -> None:
    code = ("import sys, splitaudit.checks; from splitaudit.checks import all_checks; all_checks(); "
            "print(sorted(m for m in ('scipy.stats', 'sklearn', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_numpy_statistics_agree_with_scipy_and_sklearn(digits) -> None:
    from scipy import stats
    from sklearn.linear_model import LogisticRegression

    from splitaudit.checks._twosample import fisher_exact, ks_2samp, logistic_fit, mann_whitney, midranks, wasserstein

    x, y, raw = digits
    brightness = x.reshape(len(x), -1).mean(axis=1)
    a, b = brightness[y == "1"], brightness[y == "7"]  # real samples with ties
    d, p = ks_2samp(a, b)
    ref = stats.ks_2samp(a, b)
    assert d == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue, rel=0.5, abs=1e-12)
    d2, p2 = ks_2samp(a[:40], a[40:80])
    assert d2 == pytest.approx(stats.ks_2samp(a[:40], a[40:80]).statistic) and p2 > 0.01
    assert wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(a, b))
    assert np.array_equal(midranks(np.round(a)), stats.rankdata(np.round(a)))
    for table in ([[3, 40], [12, 30]], [[0, 25], [9, 16]], [[50, 950], [80, 920]]):
        assert fisher_exact(np.array(table)) == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-6)
    u, p = mann_whitney(a, b)
    ref = stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
    assert u == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue, rel=1e-6)
    feats = (raw[:, ::5] - raw[:, ::5].mean(0)) / (raw[:, ::5].std(0) + 1e-9)
    target = y == "3"
    w, c = logistic_fit(feats, target)
    sk = LogisticRegression(C=1.0, class_weight="balanced", tol=1e-10, max_iter=10_000).fit(feats, target)
    assert np.allclose(w, sk.coef_[0], atol=1e-3) and c == pytest.approx(sk.intercept_[0], abs=1e-3)


def test_shift_inside_one_class_and_a_format_change_are_named(tmp_path: Path, digits, cache: Path) -> None:
    x, y, _ = digits
    is_val = random_val(len(y))
    dark5 = x.copy()
    dark5[is_val & (y == "5")] -= 30  # only val's fives are darker: too few to move val as a whole
    report = audit(write(tmp_path / "class", dark5, y, is_val), cache, backbone="none", select=["image-properties"])
    found = report.by_check("image-properties")
    assert [(f.data["property"], f.data["class"], f.data["direction"]) for f in found] == [("brightness", "5", "lower")], show(report)
    assert all(i.label == "5" and i.split == "val" for i in found[0].images)

    # Same pixels, another encoding: val as lossless WebP instead of PNG.
    root = tmp_path / "format"
    keep = np.flatnonzero(~is_val)
    train, val = write(root, x[keep], y[keep], np.zeros(len(keep), bool), names=keep)[0], root / "val"
    for i in np.flatnonzero(is_val):
        p = val / y[i] / f"{i:05d}.webp"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(p, "WEBP", lossless=True)
    report = audit((train, val), cache, backbone="none", select=["image-properties"])
    fmt = [f for f in report.by_check("image-properties") if f.data["property"] == "format"]
    assert len(fmt) == 1 and fmt[0].data["eval"] == {"PNG": 0.0, "WEBP": 1.0}, show(report)
    # WebP has no grey mode (the files decode as RGB): reported too. The pixels are the same: no appearance finding.
    assert {f.data["property"] for f in report.by_check("image-properties")} <= {"format", "mode", "file_size"}, show(report)


def test_property_matrix_is_made_for_the_rows_asked(tmp_path: Path, digits) -> None:
    """The probes' standardised properties, made per row set, are the rows of one matrix: z-scores over the usable
    images with their squares, unknown values filled, any subset and order the same rows."""
    from splitaudit.checks import AuditContext
    from splitaudit.checks._probe import property_features
    from splitaudit.options import Options
    from splitaudit.scan import scan

    x, y, _ = digits
    splits = write(tmp_path / "d", x[:80], y[:80], random_val(80))
    source = next(iter(sorted(splits[0].rglob("*.png"))))
    (splits[1] / "0" / "truncated.png").write_bytes(source.read_bytes()[:60])
    ctx = AuditContext(scan(list(splits)), Options(backbone="none"))
    matrix, have = property_features(ctx)
    n = len(ctx.dataset.records)
    whole = matrix[np.arange(n)]
    assert whole.shape == matrix.shape and whole.shape[1] >= 8 and have.sum() == n - 1
    assert np.isfinite(whole).all()  # the undecodable file's row is filled, not NaN
    z = whole[have][:, 0::2]
    assert np.allclose(z.mean(axis=0), 0, atol=1e-9) and np.allclose(z.std(axis=0), 1)
    assert np.array_equal(whole[:, 1::2], whole[:, 0::2] ** 2)
    rows = np.random.default_rng(0).permutation(n)[:17]
    assert np.array_equal(matrix[rows], whole[rows])
