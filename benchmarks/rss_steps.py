"""Peak driver RSS of a cold hash-only check per step of the copy stage (and per stage), on ``scale.py``'s images.

    python benchmarks/rss_steps.py --n 100000 [--json out.json] [--cache empty-folder] [--engine ray] [--arenas]

Like ``scale.py rss`` (no sampling thread: the kernel's high-water mark, VmHWM, read and reset through
``/proc/self/clear_refs``), but the mark is read and reset at every call and return of the copy stage's steps
(candidate searches, calibration, screen, registration, ...) and of the thumbnails' computation, so each line says
which step a peak was in: ``[segment that just ended, event, RSS now MiB, that segment's peak MiB, seconds,
thread]`` (the segment is the thread's own innermost step;
the peak is the process's since the last mark on any thread).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scale  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--json", type=Path, help="write the check's JSON report here")
    ap.add_argument("--engine", default="local", choices=("local", "ray"), help="ray: a local Ray runtime")
    ap.add_argument("--cache",
                    help="an empty folder to use as the cache and keep (default: a fresh one, removed after)")
    ap.add_argument("--arenas", action="store_true", help="two malloc heaps, as the CLI's process has them")
    a = ap.parse_args()
    if a.arenas:
        from splitaudit.memory import limit_arenas

        limit_arenas()

    from splitaudit.checks import context
    from splitaudit.features import per_image
    from splitaudit.neighbors import calibrate, candidates, verify

    rows, t0, local = [], time.perf_counter(), threading.local()

    def stack() -> list[str]:  # each thread's own steps (two threads run the copy stage's searches at once)
        if not hasattr(local, "steps"):
            local.steps = ["top"]
        return local.steps

    def mark(event: str) -> None:
        rss, peak = round(scale._status_mb("VmRSS")), round(scale._status_mb("VmHWM"))
        # the thread's name too: the calibration and the eval images' search run on two threads at once
        rows.append((stack()[-1], event, rss, peak, round(time.perf_counter() - t0, 1), threading.current_thread().name))
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    def wrap(module, name: str) -> None:  # type: ignore[no-untyped-def]
        fn = getattr(module, name)

        def step(*args, **kw):  # type: ignore[no-untyped-def]
            mark("enter " + name)
            stack().append(name)
            try:
                return fn(*args, **kw)
            finally:
                mark("exit " + name)
                stack().pop()

        setattr(module, name, step)

    wrap(context, "find_copies")
    for name in ("candidate_pairs", "cross_pairs", "csls_knn", "pairs_within"):
        wrap(candidates, name)
    for name in ("screen", "screen_outward", "widen", "verify_pairs", "still_agreement"):
        wrap(verify, name)
    wrap(calibrate, "calibrate")
    wrap(calibrate, "positive_scores")
    wrap(per_image, "compute_per_image")
    for name in ("confirm_pairs", "thumbnails", "merge_matches"):
        if hasattr(context, name):
            wrap(context, name)
    seen: set[str] = set()

    def on_stage(stage: str, done: int, total: int) -> None:
        if stage not in seen:
            seen.add(stage)
            mark("stage " + stage)

    _, report, _ = scale._audit(a.n, a.engine, on_stage=on_stage, cache_dir=a.cache)
    mark("end")
    for r in rows:
        print(json.dumps(r))
    if a.json is not None:
        a.json.write_text(report)


if __name__ == "__main__":
    main()
