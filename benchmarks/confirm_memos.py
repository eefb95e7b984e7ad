"""The pixel confirmation's memos simulated on a check's own pairs: how many values each would make.

    python benchmarks/confirm_memos.py pairs.npz [--mib 48] [--shares 0.125,0.375,0.5]

``pairs.npz``: from ``benchmarks/confirm_cost.py dump``. Replays :func:`~splitaudit.neighbors.confirm.confirm_pairs`'
requests (a's views, b's, b's mirrored, pair by pair in :func:`~splitaudit.neighbors.confirm.pair_order`) against
its :class:`~splitaudit.neighbors.confirm.NextUseCache` memos and, for comparison, LRU memos
(:class:`~splitaudit.neighbors.confirm.ByteLRU`), with stand-ins of the values' sizes (no pixels: a second or so
for 90k pairs), without the helper threads. Prints the thumbnails, crop views (own and mirrors) and standardised
views made, and a CPU estimate from per-value costs measured on the 60k 32-px check (0.29 ms a thumbnail, 0.41 an
image's crop views, 0.17 a mirror's, 0.29 a standardisation).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from splitaudit.neighbors.confirm import ByteLRU, NextUseCache, next_uses, pair_order  # noqa: E402

COST_MS = {"thumbnails": 0.29, "own crop views": 0.41, "mirrors": 0.17, "standardised": 0.29}
SIZES = (96 * 96, 37 * 48 * 48, 37 * 48 * 48 * 4)  # bytes: thumbnail, crop views, standardised views


class _Sized:
    """A stand-in value of ``nbytes`` bytes."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def simulate(a: np.ndarray, b: np.ndarray, budget: int, shares: tuple[float, ...], future: bool) -> dict[str, float]:
    order = pair_order(a, b)
    codes = np.stack([2 * a[order], 2 * b[order], 2 * b[order] + 1], axis=1).ravel()
    next_view, next_image = next_uses(codes).tolist(), next_uses(codes // 2).tolist()
    memos = [NextUseCache(int(budget * s)) if future else ByteLRU(int(budget * s)) for s in shares]
    thumbs, crops, views = memos
    made = {"own crop views": 0, "mirrors": 0}

    def get(memo, key, make, nxt):  # type: ignore[no-untyped-def]
        return memo.get(key, make, nxt) if future else memo.get(key, make)

    def own() -> _Sized:
        made["own crop views"] += 1
        return _Sized(SIZES[1])

    def view(i: int, mirrored: bool, r: int) -> None:
        nv, ni = next_view[r], next_image[r]

        def crop() -> _Sized:
            get(thumbs, i, lambda: _Sized(SIZES[0]), ni)
            if not mirrored:
                return own()
            get(crops, (i, False), own, ni)
            made["mirrors"] += 1
            return _Sized(SIZES[1])

        get(views, (i, mirrored), lambda: (get(crops, (i, mirrored), crop, nv if mirrored else ni),
                                           _Sized(SIZES[2]))[1], nv)
        if future:  # as confirm_pairs touches them, after the request
            thumbs.touch(i, ni)
            crops.touch((i, False), ni)
            if mirrored:
                crops.touch((i, True), nv)

    for k, j in enumerate(order.tolist()):
        view(int(a[j]), False, 3 * k)
        view(int(b[j]), False, 3 * k + 1)
        view(int(b[j]), True, 3 * k + 2)
    out = {"thumbnails": thumbs.made, **made, "standardised": views.made}
    out["estimated CPU-s"] = round(sum(COST_MS[k] * out[k] for k in COST_MS) / 1e3, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs")
    p.add_argument("--mib", type=float, default=48)
    p.add_argument("--shares", default="0.125,0.375,0.5")
    args = p.parse_args()
    d = np.load(args.pairs)
    a, b = d["a"].astype(np.int64), d["b"].astype(np.int64)
    shares = tuple(float(x) for x in args.shares.split(","))
    distinct = len(np.unique(np.concatenate([a, b]))) + len(np.unique(b))
    print(f"{len(a)} pairs, {len(np.unique(np.concatenate([a, b])))} images, {distinct} distinct views, "
          f"{3 * len(a)} requests; memos of {args.mib} MiB, shares {shares}")
    for future in (False, True):
        print("next use" if future else "LRU     ", simulate(a, b, int(args.mib * 2**20), shares, future))


if __name__ == "__main__":
    main()
