"""CPU-seconds of the copy stage per step, and its outputs saved for an A/B of two commits (issues #11, #16).

Run:  python benchmarks/copy_cost.py --suite tiny|photo|fmnist20k [--save OUT.npz]
      python benchmarks/copy_cost.py --compare A.npz B.npz

``find_copies`` runs on one suite of ``benchmarks/copy_suites.py`` (with its hash pairs, one thread: CPU-seconds
are what compare on shared cores), each step timed by wrapping the functions it calls (nested steps, such as the
calibration's own screen and registration, are listed under their caller). ``--save`` writes every per-pair column,
each record's best score and partner, and the calibration; ``--compare`` says whether two such files are
identical and, if not, how far apart they are. For an A/B, run it from each worktree with ``PYTHONPATH`` set to it,
interleaved (A B A B).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: (module, function) pairs timed; find_copies and calibrate look them up at call time.
STEPS = (("verify", "screen"), ("verify", "verify_pairs"), ("verify", "still_agreement"), ("calibrate", "calibrate"),
         ("candidates", "candidate_pairs"), ("candidates", "view_vectors"), ("candidates", "pairs_within"),
         ("calibrate", "positive_scores"), ("candidates", "cross_pairs"), ("candidates", "crop_hypotheses"))


def suite_arrays(name: str):  # type: ignore[no-untyped-def]
    """(thumbnails, split, hash pairs a, b) of a suite, as copy_suites.py's ``measure`` gives them to the stage."""
    import cv2

    from copy_suites import fmnist_suite, hash_view, photo_suite

    if name == "fmnist20k":
        made = fmnist_suite(20000, 100, n_test=2000)
        if made is None:
            sys.exit("Fashion-MNIST not found: `apt-get install -y dataset-fashion-mnist`")
        s, thumb = made[0], 32
    else:
        s, thumb = photo_suite(32 if name == "tiny" else 128, 150), 32 if name == "tiny" else 64
    images = s.images
    if images.shape[1] != thumb:
        images = np.stack([cv2.resize(im, (thumb, thumb), interpolation=cv2.INTER_AREA) for im in images])
    ha, hb = hash_view(s.images)
    return images, s.split, ha, hb


def timed(name: str, save: str | None) -> None:
    import importlib

    from splitaudit.neighbors import verify

    images, split, ha, hb = suite_arrays(name)
    stack: list[str] = []
    spent: dict[str, float] = {}

    def wrap(mod, fn: str) -> None:  # type: ignore[no-untyped-def]
        f = getattr(mod, fn)

        @functools.wraps(f)
        def g(*a, **k):  # type: ignore[no-untyped-def]
            stack.append(fn)
            label, t0 = "/".join(stack), time.process_time()
            try:
                return f(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - t0
                stack.pop()

        setattr(mod, fn, g)

    for mod, fn in STEPS:
        wrap(importlib.import_module(f"splitaudit.neighbors.{mod}"), fn)
    t0, w0 = time.process_time(), time.perf_counter()
    m = verify.find_copies(images, split, hash_a=ha, hash_b=hb, workers=1)
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    print(f"{name}: find_copies {cpu:.1f} CPU-s ({wall:.1f} s wall), {len(m)} candidates, {int(m.registered.sum())} "
          f"registered, {int(m.copy.sum())} copies, {int(m.similar.sum())} similar")
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(spent.items())))
    if save:
        np.savez(save, **m.pairs(), best_score=m.best_score, best_partner=m.best_partner,
                 **{f"cal_{k}": np.asarray(v) for k, v in m.calibration.__dict__.items()})


def compare(a_path: str, b_path: str) -> bool:
    """Print how two saved outputs differ; True when identical."""
    a, b = np.load(a_path), np.load(b_path)
    if not (np.array_equal(a["a"], b["a"]) and np.array_equal(a["b"], b["b"])):
        ka, kb = set(zip(a["a"].tolist(), a["b"].tolist())), set(zip(b["a"].tolist(), b["b"].tolist()))
        print(f"candidate pairs differ: {len(ka - kb)} only in A, {len(kb - ka)} only in B")
        return False
    same = True
    for k in a.files:
        x, y = a[k], b[k]
        if np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            continue
        same = False
        if x.dtype.kind == "f":
            print(f"{k}: max |diff| {np.nanmax(np.abs(x - y)):.3g}")
        else:
            print(f"{k}: {int(np.sum(x != y))} rows differ")
    print(f"copies {int(a['copy'].sum())} / {int(b['copy'].sum())}, similar {int(a['similar'].sum())} / "
          f"{int(b['similar'].sum())}: " + ("IDENTICAL" if same else "DIFFERENT"))
    return same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("tiny", "photo", "fmnist20k"), default="tiny")
    ap.add_argument("--save", help="write the stage's outputs here (.npz)")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two saved outputs instead")
    args = ap.parse_args()
    if args.compare:
        sys.exit(0 if compare(*args.compare) else 1)
    timed(args.suite, args.save)


if __name__ == "__main__":
    main()
