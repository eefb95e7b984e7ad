"""Resident memory of the copy stage (``neighbors.verify.find_copies``) by step, on a warm feature cache.

Run:  python benchmarks/verifier_memory.py DATA CACHE [--save OUT.npz]

``DATA`` holds ``train/`` and ``val/`` (e.g. ``benchmarks/peers.py``'s photo set), ``CACHE`` a feature cache a
default check of it filled (``benchmarks/check_memory.py --cache CACHE``): features, thumbnails and embeddings are
read back, then ``find_copies`` runs as the check runs it, while a thread samples this process's RSS every 20 ms.
Printed: the RSS before the stage and the peak inside each step (calibration, screen, registration; the label
``find_copies`` alone covers the pixel views and the candidate search). ``--save`` writes the stage's arrays, to
check that a change leaves every answer bit-identical (compare two files with ``numpy.array_equal``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np

from splitaudit.checks.context import AuditContext
from splitaudit.features import FeatureCache
from splitaudit.neighbors import calibrate, verify
from splitaudit.neighbors.blank import near_blank
from splitaudit.neighbors.thresholds import HASH_COLLISION_RATE
from splitaudit.options import Options
from splitaudit.scan import scan

MIB = 2**20


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / MIB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("cache")
    ap.add_argument("--save")
    args = ap.parse_args(argv)
    label, peaks = ["inputs"], {}

    def sample() -> None:
        while True:
            peaks[label[0]] = max(peaks.get(label[0], 0.0), rss_mib())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()

    def step(module, name: str) -> None:  # type: ignore[no-untyped-def]
        fn = getattr(module, name)

        def labelled(*a, **k):  # type: ignore[no-untyped-def]
            outer = label[0]
            label[0] = f"{outer}>{name}"
            try:
                return fn(*a, **k)
            finally:
                label[0] = outer

        setattr(module, name, labelled)

    for name in ("screen", "verify_pairs", "select"):
        step(verify, name)
    step(calibrate, "calibrate")
    ds = scan([f"{args.data}/train", f"{args.data}/val"])
    ctx = AuditContext(ds, Options(), cache=FeatureCache(args.cache))
    f = ctx.features
    thumbs, have_thumb = ctx.thumbnails
    emb, have = ctx.embeddings
    hp = ctx.hash_pairs()
    valid = f.ok & have_thumb & ~near_blank(f["spread"], f.ok)
    before = rss_mib()
    label[0] = "find_copies"
    t0 = time.perf_counter()
    m = verify.find_copies(thumbs, ctx.split_index, valid=valid, embeddings=emb if emb.shape[1] else None,
                           have_embedding=have, hash_a=hp.a, hash_b=hp.b,
                           trust_hashes=ctx.hash_collision_rate() <= HASH_COLLISION_RATE)
    label[0] = "after"
    time.sleep(0.1)
    print(f"{len(ds.records)} images, thumbnails {thumbs.shape}, embeddings {emb.shape}; find_copies "
          f"{time.perf_counter() - t0:.0f} s, {len(m)} candidates, {int(m.copy.sum())} copies; RSS before {before:.0f} MiB")
    for name, peak in peaks.items():
        print(f"  {name:40} {peak:6.0f} MiB")
    if args.save:
        np.savez(args.save, **{k: np.asarray(v) for k, v in m.to_arrays().items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
