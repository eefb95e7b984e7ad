"""What the keypoints' second opinion costs and finds in the copy stage (issue #11), on a user's folders.

    python benchmarks/keypoint_cost.py DIR [--rounds 2]      # DIR holds train/ and val/ (e.g. a peers.py set)

One process: the run is opened once (scan, features, thumbnails, embeddings: computed or read from a temporary
cache, not timed), then :func:`splitaudit.neighbors.verify.find_copies` runs on the context's own arrays with the key
images and without, interleaved A B A B, each timed in CPU-seconds (this process, all threads) and wall seconds.
Printed per run: copies found, pairs given a keypoint start, and the CPU ratio with / without. The copies found only
with keypoints are listed (record paths, score, transform) so that they can be looked at.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--show", type=int, default=10, help="copies found only with keypoints to list")
    a = ap.parse_args()

    from splitaudit.checks.context import shown_aspect
    from splitaudit.neighbors import keypoints
    from splitaudit.neighbors.blank import near_blank
    from splitaudit.neighbors.verify import find_copies
    from splitaudit.options import Options
    from splitaudit.run import open_run

    with tempfile.TemporaryDirectory() as cache:
        opts = Options(cache_dir=cache)
        splits = {"train": os.path.join(a.folder, "train"), "val": os.path.join(a.folder, "val")}
        with open_run((splits,), options=opts) as ctx:
            f = ctx.features
            thumbs, have_thumb = ctx.thumbnails
            emb, have = ctx.embeddings
            hp = ctx.hash_pairs()
            valid = f.ok & have_thumb & ~near_blank(f["spread"], f.ok)
            keys = ctx._keys(valid)
            started = []
            real = keypoints.keypoint_starts

            def counted(*args, **kw):  # type: ignore[no-untyped-def]
                out = real(*args, **kw)
                started.append((len(out[0]), int(out[0].sum())))
                return out

            keypoints.keypoint_starts = counted  # counts the pairs; the function itself runs unchanged
            found = {}
            for r in range(a.rounds):
                for label, k in (("without", None), ("with", keys)):
                    started.clear()
                    c0, t0 = _cpu(), time.perf_counter()
                    m = find_copies(thumbs, ctx.split_index, valid=valid, embeddings=emb if emb.shape[1] else None,
                                    have_embedding=have, hash_a=hp.a, hash_b=hp.b, trust_hashes=None,
                                    workers=opts.workers, aspect=shown_aspect(f), keys=k)
                    cpu, wall = _cpu() - c0, time.perf_counter() - t0
                    found[label] = {(int(x), int(y)): j for j, (x, y, c) in enumerate(zip(m.a, m.b, m.copy)) if c}
                    found[label + "-m"] = m
                    asked = sum(s[0] for s in started)
                    got = sum(s[1] for s in started)
                    print(f"round {r + 1} keypoints {label:7s}: {len(found[label])} copies, {cpu:.1f} CPU-s, "
                          f"{wall:.1f} s wall; {asked} pairs given to the keypoints, {got} with a start")
            n_eval = int((ctx.split_index > 0).sum())
            print(f"{len(ctx.split_index)} images, {n_eval} eval; copies with keypoints only: "
                  f"{len(set(found['with']) - set(found['without']))}, without only: "
                  f"{len(set(found['without']) - set(found['with']))}")
            m = found["with-m"]
            records = ctx.dataset.records
            for (x, y) in sorted(set(found["with"]) - set(found["without"]))[: a.show]:
                j = found["with"][(x, y)]
                print(f"  {os.path.basename(records[x].path)} ~ {os.path.basename(records[y].path)}: score "
                      f"{m.score[j]:.4f}, scale {m.scale[j]:.3f}, angle {m.angle[j]:.2f}, dx {m.dx[j]:.3f}, "
                      f"dy {m.dy[j]:.3f}, mirrored {bool(m.mirrored[j])}")


if __name__ == "__main__":
    main()
