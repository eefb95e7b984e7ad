"""Where a Ray hash stage's time goes: every batch's start, end and CPU time on the workers, local pool vs Ray.

    python benchmarks/ray_timeline.py 20000 2      # N images of benchmarks/scale.py data, rounds (Ray, then local)

A wrapper around the hash stage's batch function records each batch's wall and CPU time and its worker; the
summary gives how busy the two slots were, the gaps between batches inside a Ray task and between tasks, and how
long before the first batch started (the workers' start-up). The local runs are a fresh process (see scale.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Timed:
    fn: object

    def __call__(self, b: dict) -> dict:
        t0, c0 = time.time(), time.process_time()
        out = dict(self.fn(b))  # type: ignore[operator]
        m = len(b["path"])
        out["_t0"], out["_t1"] = np.full(m, t0), np.full(m, time.time())
        out["_cpu"], out["_pid"] = np.full(m, time.process_time() - c0), np.full(m, os.getpid())
        return out


def run(engine: str, n: int) -> None:
    from splitaudit.features.engine import Engine
    from splitaudit.features.extract import HashOptions, warm_up
    from splitaudit.features.ray_engine import batches_per_block
    from splitaudit.features.table import _Extract, batch_columns
    from splitaudit.scan import scan

    ds = scan(None, manifest=f"{os.environ.get('SPLITAUDIT_SCALE_DATA', '/tmp/sa-scale')}/manifest-{n}.csv")
    cols = batch_columns(ds.records, {})
    t0 = time.time()
    out = Engine(engine).map(Timed(_Extract(HashOptions())), cols, preload=("scipy.fft",), setup=warm_up)
    t1 = time.time()
    first = np.r_[True, np.diff(out["_t0"]) != 0]
    bt0, bt1, cpu, pid = (out[k][first] for k in ("_t0", "_t1", "_cpu", "_pid"))
    block_rows = 64 * batches_per_block(n, 64, False, 2) if engine == "ray" else 64
    block = np.flatnonzero(first) // block_rows
    inside, between = [], []
    for p in set(pid.tolist()):
        sel = np.flatnonzero(pid == p)
        sel = sel[np.argsort(bt0[sel])]
        gap = bt0[sel][1:] - bt1[sel][:-1]
        same = block[sel][1:] == block[sel][:-1]
        inside += gap[same].tolist()
        between += gap[~same].tolist()
    ts = np.arange(bt0.min(), bt1.max(), 0.01)
    running = ((bt0[None, :] <= ts[:, None]) & (bt1[None, :] > ts[:, None])).sum(axis=1)
    busy = float((bt1 - bt0).sum())
    print(json.dumps({"engine": engine, "wall_s": round(t1 - t0, 2), "batches": int(first.sum()), "workers": len(set(pid.tolist())),
                      "workers_busy": round(busy / (2 * (t1 - t0)), 3), "first_batch_after_s": round(float(bt0.min() - t0), 2),
                      "ms_per_batch_wall": round(1000 * busy / first.sum(), 1), "ms_per_batch_cpu": round(1000 * float(cpu.sum()) / first.sum(), 1),
                      "gap_in_task_ms": round(1000 * float(np.mean(inside or [0])), 1),
                      "gap_between_tasks_ms": round(1000 * float(np.mean(between or [0])), 1),
                      "both_slots_busy": round(float((running >= 2).mean()), 3), "load": os.getloadavg()[0]}), flush=True)


def main() -> None:
    n = int(sys.argv[1])
    if len(sys.argv) > 2 and sys.argv[2] == "local":
        run("local", n)
        return
    from splitaudit.features.ray_engine import connect

    connect(None)
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 2):
        run("ray", n)
        print(subprocess.run([sys.executable, __file__, str(n), "local"], capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
