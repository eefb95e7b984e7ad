"""Peak RSS of the copy stage (``neighbors.verify.find_copies``) step by step, on inputs saved once.

    python benchmarks/copy_stage_memory.py dump /tmp/sa-scale/manifest-100000.csv CACHE in100k.npz  # or DATA (train/, val/)
    python benchmarks/copy_stage_memory.py run in100k.npz --save out.npz [--pool]  # this tree (PYTHONPATH decides)
    python benchmarks/copy_stage_memory.py same out-before.npz out-after.npz  # every array of the answer equal?

``dump`` runs a hash-only check's features, thumbnails and hash pairs (cached in CACHE) and saves what the check
hands to ``find_copies``. ``run`` calls ``find_copies`` as the check does, and prints for each step (the candidate
search, the calibration and its screen and registration, the screen, the registration) its seconds and its peak RSS:
the kernel's high-water mark (VmHWM), reset at each step's start through ``/proc/self/clear_refs`` (no sampling
thread), and the RSS at every step boundary. Run two revisions on the same file and compare with ``same``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def dump(source: str, cache: str, out: str) -> None:
    from splitaudit.checks.context import AuditContext
    from splitaudit.features import FeatureCache
    from splitaudit.neighbors.blank import near_blank
    from splitaudit.neighbors.thresholds import HASH_COLLISION_RATE
    from splitaudit.options import Options
    from splitaudit.scan import scan

    ds = scan(manifest=source) if source.endswith(".csv") else scan([f"{source}/train", f"{source}/val"])
    ctx = AuditContext(ds, Options(backbone="none"), cache=FeatureCache(cache))
    f = ctx.features
    thumbs, have_thumb = ctx.thumbnails
    hp = ctx.hash_pairs()
    valid = f.ok & have_thumb & ~near_blank(f["spread"], f.ok)
    np.savez(out, thumbs=thumbs, split_index=ctx.split_index, valid=valid, hash_a=hp.a, hash_b=hp.b,
             trust=ctx.hash_collision_rate() <= HASH_COLLISION_RATE)
    print(out, thumbs.shape, int(valid.sum()), "valid,", len(hp.a), "hash pairs")


def run(inputs: str, save: str | None, pool: bool = False) -> None:
    from contextlib import nullcontext

    from splitaudit.features.workers import local_pool
    from splitaudit.neighbors import calibrate, candidates, verify

    peaks: dict[str, float] = {}
    secs: dict[str, float] = {}
    label = ["inputs"]
    trace: list[str] = []

    def switch(new: str) -> None:
        trace.append(f"{label[0]} -> {new}: {_mb('VmRSS'):.0f} MiB")
        peaks[label[0]] = max(peaks.get(label[0], 0.0), _mb("VmHWM"))
        _reset_peak()
        label[0] = new

    def wrap(module, name: str) -> None:  # type: ignore[no-untyped-def]
        fn = getattr(module, name)

        def labelled(*a, **k):  # type: ignore[no-untyped-def]
            outer = label[0]
            switch(name if outer == "find_copies" else f"{outer}>{name}")
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                secs[label[0]] = secs.get(label[0], 0.0) + time.perf_counter() - t0
                switch(outer)

        setattr(module, name, labelled)

    for name in ("screen", "screen_outward", "verify_pairs", "still_agreement"):
        wrap(verify, name)
    wrap(calibrate, "calibrate")
    wrap(candidates, "candidate_pairs")
    d = np.load(inputs)
    before = _mb("VmRSS")
    switch("find_copies")
    t0 = time.perf_counter()
    with (local_pool(None) if pool else nullcontext()) as workers:
        m = verify.find_copies(d["thumbs"], d["split_index"], valid=d["valid"], hash_a=d["hash_a"], hash_b=d["hash_b"],
                               trust_hashes=bool(d["trust"]), pool=workers)
    wall = time.perf_counter() - t0
    switch("after")
    print(json.dumps({"images": len(d["split_index"]), "rss_before_mib": round(before), "wall_s": round(wall, 1),
                      "candidates": len(m), "copies": int(m.copy.sum()),
                      "peak_mib": {k: round(v) for k, v in peaks.items()},
                      "seconds": {k: round(v, 1) for k, v in secs.items()}}, indent=1))
    print("\n".join(trace))
    if save:
        np.savez(save, **{k: np.asarray(v) for k, v in m.to_arrays().items()})


def same(first: str, second: str) -> int:
    a, b = np.load(first, allow_pickle=True), np.load(second, allow_pickle=True)
    bad = [k for k in sorted(set(a.files) | set(b.files))
           if k not in a.files or k not in b.files or a[k].shape != b[k].shape
           or not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind in "fc")]
    print(f"{len(a.files)} arrays: " + ("identical" if not bad else f"different: {', '.join(bad)}"))
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("dump")
    p.add_argument("source")
    p.add_argument("cache")
    p.add_argument("out")
    p = sub.add_parser("run")
    p.add_argument("inputs")
    p.add_argument("--save")
    p.add_argument("--pool", action="store_true", help="as a check runs it: with the worker pool (tiny images use it; "
                                                         "the peaks above count this process only)")
    p = sub.add_parser("same")
    p.add_argument("first")
    p.add_argument("second")
    a = ap.parse_args()
    if a.what == "dump":
        dump(a.source, a.cache, a.out)
    elif a.what == "run":
        run(a.inputs, a.save, a.pool)
    else:
        return same(a.first, a.second)
    return 0


if __name__ == "__main__":
    sys.exit(main())
