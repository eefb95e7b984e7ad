"""The copy stage's candidate search at scale: exhaustive in the PCA space vs the IVF cells of
:class:`splitaudit.neighbors.candidates.PcaCells` (twenty-second session, issue #15).

    python benchmarks/copy_search.py --n 1000000 [--cache DIR] [--queries 20000] [--copies 3000]

On ``scale.py``'s real thumbnails (run ``scale.py data --n N`` first): for each pixel view, the training split's
valid rows are the base and a sample of the eval split the queries, searched for the POOL best (PCA space, then
re-ranked with the full view, as ``_search`` does) both ways in one run. Printed per view: seconds each way (the
cells' making included) and their ratio, recall@50/@6/@1 of the cells' answer against the exhaustive one, and for
planted copies of sampled base rows (shifts, zoom, rotation, a grade, JPEG) how often the source is among a copy's
6 best each way.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TRANSFORMS = ("shift1", "shift2", "zoom5", "rot4", "grade", "jpeg50")


def transformed(t: np.ndarray, kind: str) -> np.ndarray:
    import cv2

    t = t.astype(np.float32)
    s = t.shape[1]
    m = {"shift1": np.float32([[1, 0, 1], [0, 1, 0]]), "shift2": np.float32([[1, 0, 2], [0, 1, -1]]),
         "zoom5": cv2.getRotationMatrix2D((s / 2, s / 2), 0, 1.05), "rot4": cv2.getRotationMatrix2D((s / 2, s / 2), 4, 1.0)}.get(kind)
    if m is not None:
        t = np.stack([cv2.warpAffine(x, m, (s, s), borderMode=cv2.BORDER_REFLECT) for x in t])
    if kind == "grade":
        t = 255 * (np.clip(t * 1.15 - 10, 0, 255) / 255) ** 0.8
    if kind == "jpeg50":
        t = np.stack([cv2.imdecode(cv2.imencode(".jpg", np.clip(x, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])[1],
                                   cv2.IMREAD_UNCHANGED) for x in t])
    return np.clip(t, 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--cache", default=None, help="feature cache folder (kept between runs; default: a temporary one)")
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--copies", type=int, default=3_000)
    ap.add_argument("--views", nargs="+", default=["pixels", "coarse", "content", "spectrum"])
    ap.add_argument("--nprobes", default="", help="also search the cells visiting these many of them (comma-separated: "
                    "the share a larger base would use; default: only the built-in count)")
    ap.add_argument("--nlist-factor", type=float, default=1.0,
                    help="cells made: this times the built-in 2 sqrt(n) (finer cells at the same n, as a larger base has)")
    args = ap.parse_args()
    if args.nlist_factor != 1.0:
        from splitaudit.neighbors import dense

        built_nlist = dense.ivf_nlist
        dense.ivf_nlist = lambda n: int(built_nlist(n) * args.nlist_factor)  # read by PcaCells when made

    import tempfile

    import scale
    from splitaudit.neighbors import candidates as cd
    from splitaudit.neighbors.blank import near_blank
    from splitaudit.options import Options
    from splitaudit.run import open_run

    with tempfile.TemporaryDirectory() as tmp, open_run(
            [], manifest=scale.manifest(args.n), options=Options(backbone="none", cache_dir=args.cache or tmp)) as ctx:
        thumbs, have = ctx.thumbnails
        f = ctx.features
        valid = f.ok & have & ~near_blank(f["spread"], f.ok)
        s = ctx.split_index
        base_r, query_r = np.flatnonzero(valid & (s == 0)), np.flatnonzero(valid & (s == 1))
        rng = np.random.default_rng(0)
        query_r = np.sort(rng.choice(query_r, min(len(query_r), args.queries), replace=False))
        src = np.sort(rng.choice(len(base_r), args.copies, replace=False))
        planted = {k: transformed(np.asarray(thumbs[base_r[src]]), k) for k in TRANSFORMS}
        print(f"# n={args.n}: base {len(base_r)} rows, {len(query_r)} queries, {args.copies} planted copies a transform",
              flush=True)
        for view in args.views:
            base = cd._view_rows(thumbs, None, view, base_r, False)[0]
            q = cd._view_rows(thumbs, None, view, query_r, False)[0]
            copies = [cd.view_vectors(planted[k], (view,), mirror=False)[view][0] for k in TRANSFORMS]
            t = time.perf_counter()
            exact = cd._search(base, [q, *copies], cd.POOL, reduce_above=0, cells=None) if len(base) < cd.IVF_FROM else None
            if exact is None:  # above IVF_FROM `_search` would make cells itself: the exhaustive path forced
                keep, cd.IVF_FROM = cd.IVF_FROM, 10**12
                try:
                    exact = cd._search(base, [q, *copies], cd.POOL, reduce_above=0)
                finally:
                    cd.IVF_FROM = keep
            te = time.perf_counter() - t
            t = time.perf_counter()
            cells = cd.PcaCells(base)
            tc_make = time.perf_counter() - t
            approx = cd._search(base, [q, *copies], cd.POOL, reduce_above=0, cells=cells)
            tc = time.perf_counter() - t
            e, a = exact[0][1], approx[0][1]
            rec = {k: float(np.mean([len(np.intersect1d(x[:k], y[:k])) / k for x, y in zip(a, e)])) for k in (50, 6, 1)}
            print(f"{view:9s} exhaustive {te:6.1f} s  cells {tc:6.1f} s (making {tc_make:.1f} s, nlist {cells.index.nlist}, "
                  f"nprobe {cells.index.nprobe})  {te / tc:.2f}x  cells' recall against exhaustive: @50 {rec[50]:.4f} "
                  f"@6 {rec[6]:.4f} @1 {rec[1]:.4f}")
            # both against the exact top 6 of the full view (every base row), on a sample of the queries
            some = rng.choice(len(q), min(len(q), 2000), replace=False)
            truth = cd._knn_blas(q[some], np.ascontiguousarray(base, dtype=np.float32), 6)[1]
            r6 = lambda ids: float(np.mean([len(np.intersect1d(x[:6], y)) / 6 for x, y in zip(ids[some], truth)]))  # noqa: E731
            print(f"          recall@6 against exact full-view search ({len(some)} queries): exhaustive PCA {r6(e):.4f}, "
                  f"cells {r6(a):.4f}")
            hit = lambda ids: float(np.mean((ids[:, :6] == src[:, None]).any(axis=1)))  # noqa: E731
            row = []
            for j, k in enumerate(TRANSFORMS):
                row.append(f"{k} {hit(exact[j + 1][1]):.3f}/{hit(approx[j + 1][1]):.3f}")
            print("          source in a copy's best 6, exhaustive/cells: " + "  ".join(row), flush=True)
            built = cells.index.nprobe
            for nprobe in [int(x) for x in args.nprobes.split(",") if x]:
                cells.index.nprobe = nprobe
                t = time.perf_counter()
                fewer = cd._search(base, [q, *copies], cd.POOL, reduce_above=0, cells=cells)
                tf = time.perf_counter() - t
                got = fewer[0][1]
                r = {k: float(np.mean([len(np.intersect1d(x[:k], y[:k])) / k for x, y in zip(got, e)])) for k in (6, 1)}
                mean_copy = float(np.mean([hit(fewer[j + 1][1]) for j in range(len(TRANSFORMS))]))
                print(f"          nprobe {nprobe:4d} ({nprobe / cells.index.nlist:.2%} of the cells): {tf:6.1f} s "
                      f"(search only), recall against exhaustive @6 {r[6]:.4f} @1 {r[1]:.4f}, source in a copy's best 6 "
                      f"(mean over transforms) {mean_copy:.3f} (exhaustive "
                      f"{np.mean([hit(exact[j + 1][1]) for j in range(len(TRANSFORMS))]):.3f}): "
                      + " ".join(f"{k} {hit(fewer[j + 1][1]):.3f}" for j, k in enumerate(TRANSFORMS)), flush=True)
            cells.index.nprobe = built


if __name__ == "__main__":
    main()
