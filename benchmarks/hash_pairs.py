"""The hash-pair search on real hashes: the index ``multi_index.plan`` chooses against the exhaustive scan.

    python benchmarks/hash_pairs.py --cache DIR [--methods auto,flat] [--shards 10]

``DIR`` is a feature cache a run kept (e.g. ``benchmarks/copy_search.py``'s or ``rss_steps.py --cache``'s, of
``scale.py``'s images): the hashes of every decoded image in it are searched as ``check`` searches them (pHash <= 6,
dHash <= 12, as is and mirrored), once per method, one after the other in this process; each run prints its
seconds, the pairs found and the process's peak RSS so far. ``--shards K``: the base sharded into a 1-in-K split and
the rest, as the Ray engine shards by split (run here one after the other). The methods must find the same pairs.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from splitaudit.neighbors.binary import choose_index, hash_pairs  # noqa: E402
from splitaudit.neighbors.multi_index import plan  # noqa: E402


def load(cache: Path) -> dict[str, np.ndarray]:
    """The four hash columns of every decoded image in the cache's SQLite file (read-only)."""
    files = sorted(cache.glob("cache-v*.sqlite3"))
    if not files:
        raise SystemExit(f"no cache-v*.sqlite3 in {cache}")
    db = sqlite3.connect(f"file:{files[-1]}?mode=ro", uri=True)
    rows = db.execute("SELECT phash, dhash, phash_flip, dhash_flip FROM features WHERE status = 'ok'").fetchall()
    a = np.array(rows, dtype=np.int64).view(np.uint64)
    return {"phash": a[:, 0].copy(), "dhash": a[:, 1].copy(), "phash_flip": a[:, 2].copy(), "dhash_flip": a[:, 3].copy()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--methods", default="auto,flat")
    ap.add_argument("--shards", type=int, default=0)
    a = ap.parse_args()
    h = load(a.cache)
    n = len(h["phash"])
    t0 = time.perf_counter()
    parts = plan(h["phash"], 6)
    print(json.dumps({"images": n, "plan": parts, "plan_s": round(time.perf_counter() - t0, 2),
                      "chosen": choose_index(h["phash"], 6)}), flush=True)
    kw = {"shards": (np.arange(n) % a.shards == 0).astype(np.int64)} if a.shards else {}
    found = {}
    for method in a.methods.split(","):
        t0 = time.perf_counter()
        hp = hash_pairs(h["phash"], h["dhash"], h["phash_flip"], h["dhash_flip"], np.ones(n, bool), max_phash=6,
                        max_dhash=12, method=method, **kw)
        found[method] = hp.to_arrays()
        print(json.dumps({"method": method, "sharded": bool(a.shards), "seconds": round(time.perf_counter() - t0, 1),
                          "pairs": len(hp), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                          "load": round(__import__("os").getloadavg()[0], 2)}), flush=True)
    first = next(iter(found.values()))
    same = all(all(np.array_equal(first[k], other[k]) for k in first) for other in found.values())
    print(json.dumps({"identical_pairs": same}), flush=True)


if __name__ == "__main__":
    main()
