"""Peak RSS of one calibration-shaped neighbour search on a base in a file, by step (synthetic unit vectors).

    python benchmarks/search_memory.py --n 900000      # the training rows of 1M images

The calibration's search (``candidates.pairs_within``): N base rows of 256 numbers in a ``SpilledRows`` file, 400
sampled queries as is and mirrored, ``csls_knn`` (the PCA path above 2e8 base x query pairs). Each line is
``[event, RSS now MiB, the peak since the line before MiB]`` (VmHWM reset through /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scale  # noqa: E402
from splitaudit.memory import SpilledRows  # noqa: E402
from splitaudit.neighbors import candidates  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=270_000)
    a = ap.parse_args()
    rows: list[tuple] = []

    def mark(event: str) -> None:
        rows.append((event, round(scale._status_mb("VmRSS")), round(scale._status_mb("VmHWM"))))
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    def wrap(name: str) -> None:
        fn = getattr(candidates, name)

        def step(*args, **kw):  # type: ignore[no-untyped-def]
            mark("enter " + name)
            try:
                return fn(*args, **kw)
            finally:
                mark("exit " + name)

        setattr(candidates, name, step)

    for name in ("_search", "base_hubness", "_project", "_csls_best"):
        wrap(name)
    base = SpilledRows((a.n, 256), np.float32)
    rng = np.random.default_rng(0)
    for s in range(0, a.n, 8192):
        x = rng.normal(size=(min(8192, a.n - s), 256)).astype(np.float32)
        base.write(s, x / np.linalg.norm(x, axis=1, keepdims=True))
    q = base[np.sort(rng.choice(a.n, 400, replace=False))]
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    mark("start")
    candidates.csls_knn(base, q, candidates.PIXEL_K + 1, mirrored_queries=q[:, ::-1].copy())
    mark("end")
    base.close()
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
