"""A colour-fitted copy score against the grey one, on the copy suites (issue #11; tried in the twenty-first session,
not built).

    OMP_NUM_THREADS=1 python benchmarks/colour_fit.py colour|extra|standard [32|112]

The copy stage scores a registered pair by the NCC of the band-passed *grey* images. A colour change that is linear
in RGB (saturation, hue rotation, sepia, a cast) changes the grey image by a different linear mix of the source's
channels, so the grey score falls. The colour-fitted score regresses b's band-passed grey on a's three band-passed
channels over the same overlap (the multiple correlation R), at the registration ``find_copies`` found. Printed:
the quantiles of both scores for true and distinct registered pairs, and the share of planted pairs whose eval image
scores at or above cuts set by the distinct eval images' best scores (the same false-pair rate for both scores).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from copy_suites import COLOUR_TRANSFORMS, Suite, extra_transforms, photo_suite  # noqa: E402

from splitaudit.neighbors import register as R  # noqa: E402

#: Rows of pairs scored at once (the registration's own block).
BLOCK = 256
#: The gated variants: the colour-fitted score only where it beats the grey one by at least this much.
GATES = (0.01, 0.02, 0.04)


def colour_score(st: R._Stack, params: np.ndarray, channels: list[np.ndarray]) -> np.ndarray:
    """Per pair of ``st``: the multiple correlation of b's band-passed grey (sampled at ``params``) with a's three
    band-passed ``channels`` (P, S, S each) over the pair's overlap mask."""
    p = len(params)
    out = np.zeros(p)
    us = [st.cropped(c.reshape(p, -1)) for c in channels]
    for s0 in range(0, p, BLOCK):
        rows = slice(s0, min(p, s0 + BLOCK))
        mask, n, w = st._sample(rows, params[rows], st.mosaic)
        mf = mask.astype(np.float64)
        nn = np.maximum(n, 1)[:, None]
        u = np.stack([x[rows] for x in us], 1).astype(np.float64)  # (P, 3, pixels)
        v = w.astype(np.float64)
        uc = (u - ((u * mf[:, None]).sum(2) / nn)[:, :, None]) * mf[:, None]
        vc = (v - (v * mf).sum(1, keepdims=True) / nn) * mf
        cov = np.einsum("pih,pjh->pij", uc, uc)
        cov += np.eye(3)[None] * 1e-6 * np.trace(cov, axis1=1, axis2=2)[:, None, None]  # a grey a: equal channels
        r = np.einsum("pih,ph->pi", uc, vc)
        beta = np.linalg.solve(cov, r[:, :, None])[:, :, 0]
        r2 = np.einsum("pi,pi->p", beta, r) / np.maximum((vc * vc).sum(1), 1e-12)
        out[rows] = np.sqrt(np.clip(r2, 0, 1))
    return out


def scores(suite: Suite, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The registered pairs of ``find_copies`` on the suite (a, b), their grey and colour-fitted scores at the
    registration found (no resolution matching: the same for both), and the calibrated copy cut."""
    import cv2

    from splitaudit.neighbors.calibrate import calibrate
    from splitaudit.neighbors.candidates import view_vectors
    from splitaudit.neighbors.verify import find_copies

    rgb = suite.images
    if side > 48:  # photos: 64-px thumbnails, as the checks make them
        rgb = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im in rgb])
    grey = np.round(R.to_grey(rgb)).astype(np.uint8)
    cal = calibrate(grey, np.flatnonzero(suite.split == 0), vectors=view_vectors(grey))
    cm = find_copies(grey, suite.split, calibration=cal)
    reg = np.flatnonzero(cm.registered)
    ia, ib = cm.a[reg].astype(np.int64), cm.b[reg].astype(np.int64)
    prep = R.prepare(grey)
    chan = [R.prepare(np.ascontiguousarray(rgb[..., c])) for c in range(3)]
    side_w = prep.image.shape[1]
    params = np.column_stack([cm.scale[reg], cm.angle[reg], cm.dx[reg] * side_w, cm.dy[reg] * side_w])
    flipped = cm.mirrored[reg].astype(bool)
    b = prep.image[ib].copy()
    b[flipped] = b[flipped][:, :, ::-1]
    box_b = prep.box[ib].copy()
    box_b[flipped] = R.mirror_box(box_b[flipped], side_w)
    st = R._Stack(prep.image[ia], prep.box[ia], b, box_b)
    g_score, overlap = st.score(params)
    c_score = colour_score(st, params, [c.image[ia] for c in chan])
    c_score[R.too_far(params, side_w) | (overlap < R.MIN_OVERLAP)] = 0
    return ia, ib, g_score, c_score, float(cal.copy_cut)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("transforms", choices=("colour", "extra", "standard"))
    ap.add_argument("side", type=int, nargs="?", default=32, choices=(32, 112))
    a = ap.parse_args()
    transforms = {"colour": COLOUR_TRANSFORMS, "extra": extra_transforms(a.side), "standard": None}[a.transforms]
    suite = photo_suite(a.side, 150, transforms=transforms)
    ia, ib, g_score, c_score, cut = scores(suite, a.side)
    known = {(x, y) for x, y, _ in suite.planted} | set(suite.known)
    name = {(x, y): n for x, y, n in suite.planted}
    is_true = np.array([(int(x), int(y)) in known for x, y in zip(ia, ib)])
    print("pairs", len(ia), "true", is_true.sum(), "copy_cut", round(cut, 4))
    for lab, m in (("true", is_true), ("distinct", ~is_true)):
        for nm, sc in (("grey", g_score), ("colour", c_score)):
            q = np.quantile(sc[m], [0.05, 0.25, 0.5, 0.9, 0.99, 0.999]) if m.any() else []
            print(f"{lab:9s} {nm:7s}", np.round(q, 4), "max", round(float(sc[m].max()), 4))
    # each eval image's best score among its distinct pairs sets the cuts (their 99.5th, 99.9th percentiles, the
    # maximum); a planted copy counts at a cut when its eval image's best true pair reaches it
    gates = {f"gated {d}": np.where(c_score - g_score >= d, c_score, g_score) for d in GATES}
    for nm, sc in (("grey", g_score), ("colour", c_score), *gates.items()):
        best_distinct: dict[int, float] = {}
        best_true: dict[int, float] = {}
        for y, v, t in zip(ib.tolist(), sc.tolist(), is_true.tolist()):
            best = best_true if t else best_distinct
            best[y] = max(best.get(y, -1.0), v)
        d = np.array(sorted(best_distinct.values()))
        for c in (np.quantile(d, 0.995), np.quantile(d, 0.999), d.max()):
            rec = np.mean([best_true.get(y, -1) >= c for _, y, _ in suite.planted])
            print(f"{nm:10s} cut {c:.4f}: planted pairs at/above {rec:.3f}; distinct eval images at/above "
                  f"{np.mean(d >= c) * 1e3:.1f}/1k")
    per: dict[str, list[tuple[float, float]]] = {}
    for x, y, g, c in zip(ia, ib, g_score, c_score):
        if (int(x), int(y)) in name:
            per.setdefault(name[(int(x), int(y))], []).append((g, c))
    for n, v in per.items():
        w = np.array(v)
        print(f"  {n:32s} n={len(w):3d} grey p25 {np.quantile(w[:, 0], 0.25):.3f} p50 {np.median(w[:, 0]):.3f}  "
              f"colour p25 {np.quantile(w[:, 1], 0.25):.3f} p50 {np.median(w[:, 1]):.3f}")


if __name__ == "__main__":
    main()
