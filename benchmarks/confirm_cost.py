"""CPU-seconds of the pixel confirmation of hash matches (``neighbors.confirm.confirm_pairs``) on a check's own pairs.

    python benchmarks/confirm_cost.py dump DATA CACHE pairs.npz       # a check on DATA (train/, val/), cached in CACHE
    python benchmarks/confirm_cost.py run DATA pairs.npz [--pairs N] [--workers W] [--processes] [--save out.npz]
    python benchmarks/confirm_cost.py same a.npz b.npz                # every NCC and mirror flag equal?

``dump`` runs a default check on DATA (a warm CACHE makes it quick; a cold one runs the whole check) with the
confirmation recomputed, and saves the pairs it confirms (the hash matches whose embeddings disagree) with its
answers. ``run`` replays ``confirm_pairs`` on those pairs (the first N in the confirmation's own pair order: its
caches see the same locality), as the check calls it, and prints its user and system CPU-seconds, wall seconds,
how many thumbnails, views and mirrors' own crops it made (the caches of ``confirm_pairs``), and whether every
answer equals the dumped one (and how far apart they are).
``--processes``: as the check runs it from ``confirm.WORKERS_FROM`` pairs on, on ``--workers`` worker processes
(``confirm.confirm_on_workers``; their CPU is not in this process's figures: wall time and the answers only).
For an A/B of two trees, run it with ``PYTHONPATH`` set to each, interleaved (A B A B).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _folders(data: str) -> list[str]:
    return [os.path.join(data, "train"), os.path.join(data, "val")]


def dump(data: str, cache: str, out: str) -> None:
    import splitaudit
    from splitaudit.checks import context as C

    stored = C.AuditContext.stored
    confirm = C.AuditContext._confirm

    def recomputed(self, key, inputs, fn, load):  # type: ignore[no-untyped-def]
        if (key[0] if isinstance(key, tuple) else key) == "confirm":
            return self.memo(key, fn)
        return stored(self, key, inputs, fn, load)

    def saved(self, a, b):  # type: ignore[no-untyped-def]
        c = confirm(self, a, b)
        if len(a) > 1000:  # the hash matches' confirmation, not the few embedding candidates'
            np.savez(out, a=a, b=b, ncc=c.ncc, flipped=c.flipped)
            print(out, len(a), "pairs", flush=True)
        return c

    C.AuditContext.stored = recomputed  # type: ignore[method-assign]
    C.AuditContext._confirm = saved  # type: ignore[method-assign]
    splitaudit.audit(*_folders(data), cache_dir=cache)


def run(data: str, pairs: str, n: int | None, workers: int, save: str | None, processes: bool = False) -> None:
    from splitaudit.checks.context import AuditContext
    from splitaudit.neighbors.confirm import confirm_pairs, pair_order, record_thumbnails
    from splitaudit.options import Options
    from splitaudit.scan import scan

    d = np.load(pairs)
    a, b, ncc, flipped = d["a"], d["b"], d["ncc"], d["flipped"]
    if n is not None and n < len(a):
        keep = pair_order(a, b)[:n]
        a, b, ncc, flipped = a[keep], b[keep], ncc[keep], flipped[keep]
    ds = scan(_folders(data))
    thumb = record_thumbnails(ds, max_pixels=AuditContext(ds, Options()).hash_options.max_pixels)
    caches: list = []
    t0, w0 = os.times(), time.perf_counter()
    if processes:
        from splitaudit.neighbors.confirm import confirm_on_workers

        got = confirm_on_workers(ds, a, b, max_pixels=AuditContext(ds, Options()).hash_options.max_pixels, workers=workers)
    else:
        got = confirm_pairs(a, b, thumb, caches=caches, workers=workers)
    t1, wall = os.times(), time.perf_counter() - w0
    same = np.array_equal(got.ncc, ncc, equal_nan=True) and np.array_equal(got.flipped, flipped)
    # a tree whose sums run in another order (the thirty-fourth session's exact means) differs in float32 rounding
    apart = np.abs(got.ncc - ncc)
    apart = float(np.nanmax(apart)) if np.isfinite(apart).any() else 0.0
    print(f"{len(a)} pairs, {len(np.unique(np.concatenate([a, b])))} images, workers {workers}: "
          f"user {t1.user - t0.user:.1f} s, system {t1.system - t0.system:.1f} s, wall {wall:.1f} s; "
          f"made (thumbnails, views, mirrors' own crops) {[c.made for c in caches]}; answers as dumped: {same} "
          f"(largest NCC difference {apart:.1e}, {int(np.count_nonzero(got.flipped != flipped))} mirror flags apart)")
    if save:
        np.savez(save, ncc=got.ncc, flipped=got.flipped)


def same(first: str, second: str) -> int:
    x, y = np.load(first), np.load(second)
    ok = np.array_equal(x["ncc"], y["ncc"], equal_nan=True) and np.array_equal(x["flipped"], y["flipped"])
    print("IDENTICAL" if ok else "DIFFERENT")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("data")
    d.add_argument("cache")
    d.add_argument("out")
    r = sub.add_parser("run")
    r.add_argument("data")
    r.add_argument("pairs")
    r.add_argument("--pairs", dest="n", type=int, default=None)
    r.add_argument("--workers", type=int, default=1)
    r.add_argument("--save")
    r.add_argument("--processes", action="store_true")
    s = sub.add_parser("same")
    s.add_argument("first")
    s.add_argument("second")
    args = p.parse_args()
    if args.cmd == "dump":
        dump(args.data, args.cache, args.out)
    elif args.cmd == "run":
        run(args.data, args.pairs, args.n, args.workers, args.save, args.processes)
    else:
        return same(args.first, args.second)
    return 0


if __name__ == "__main__":
    sys.exit(main())
