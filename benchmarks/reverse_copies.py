"""Copies planted the other way round: the crop (or any transformed copy) in train, its source in eval.

    OMP_NUM_THREADS=1 python benchmarks/reverse_copies.py [--side 112] [--seeds 0,1,2]

The copy suites (`copy_check.py`) plant the eval image as the copy of a train image. This builds one subset of the
held-out-like suite (`--transforms extra`) in which each chosen source keeps one copy (the transforms spread over
the sources) and runs it both ways through `splitaudit.audit`, verifier on and off: forward = the source in train
and its copy in eval, reversed = the copy in train and the source in eval. Twins of the chosen sources are dropped
(they would find the source on their own); the neighbouring-crop hard negatives stay on the other side of their
source. About 9 copies per transform at 32 px and 4 at 112 px: read the totals, not single transforms.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import copy_check  # noqa: E402
from copy_suites import Suite, extra_transforms, photo_suite  # noqa: E402


def one_copy_each(full: Suite) -> tuple[list[int], dict[int, int], dict[int, tuple[int, str]]]:
    """(records kept, old index -> new, source -> (its one copy, transform)): each source keeps one copy, its twins
    inside train are dropped."""
    by_src: dict[int, list[tuple[int, str]]] = {}
    for a, b, n in full.planted:
        by_src.setdefault(a, []).append((b, n))
    drop = {t for (s, t) in full.known if s in by_src and full.split[t] == 0}
    pick = {}
    for j, s in enumerate(sorted(by_src)):
        cps = by_src[s]
        pick[s] = cps[j % len(cps)]
        drop.update(e for e, _ in cps if e != pick[s][0])
    keep = [i for i in range(len(full.images)) if i not in drop]
    return keep, {o: k for k, o in enumerate(keep)}, pick


def build(full: Suite, reverse: bool) -> Suite:
    """The subset, forward (copies in eval) or reversed (copies in train, sources in eval)."""
    keep, new, pick = one_copy_each(full)
    split = full.split[keep].copy()
    s = Suite(("reversed " if reverse else "forward ") + full.name, full.images[keep], split)
    for src, (b, n) in pick.items():
        if reverse:
            split[new[src]], split[new[b]] = 1, 0
            s.planted.append((new[b], new[src], n))
        else:
            s.planted.append((new[src], new[b], n))
    for a, h, kind in full.hard:
        if reverse:
            split[new[h]] = 0
            s.hard.append((new[h], new[a], kind))
        else:
            s.hard.append((new[a], new[h], kind))
    for a, b in full.known:  # copies inside train that stay there
        if a in new and b in new and full.split[a] == 0 and full.split[b] == 0:
            s.known.add((new[a], new[b]))
    s.split = split
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=112)
    ap.add_argument("--seeds", default="0", help="comma-separated calibration seeds (copy_check.py --seeds)")
    args = ap.parse_args()
    side = args.side
    copy_check.SEEDS = tuple(int(x) for x in args.seeds.split(","))
    full = photo_suite(side, 150, transforms=extra_transforms(side))
    for reverse in (False, True):
        suite = build(full, reverse)
        copy_check.show(suite.name, suite, "efficientnet_lite0")


if __name__ == "__main__":
    main()
