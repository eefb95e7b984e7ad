"""Near-blank images: their own matching rule.

A solid-colour or almost uniform image has no structure for a perceptual hash to describe: its DCT and gradient
bits are noise around zero, so a black frame, a white page and a grey card all hash alike and would be reported as
copies of each other across splits. For such images only identical pixels count as a match.
"""

from __future__ import annotations

import numpy as np

#: Tonal spread (standard deviation of the 32x32 grey hash input, 0-255 levels) below which an image is near-blank:
#: a solid colour is 0, JPEG noise on it about 1, the least textured real photo tiles in our test data above 10.
BLANK_SPREAD = 3.0


def near_blank(spread: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Which rows are decoded, near-blank images."""
    return ok & (np.asarray(spread, dtype=np.float64) < BLANK_SPREAD)


def blank_rule(a: np.ndarray, b: np.ndarray, blank: np.ndarray, same_pixels: np.ndarray) -> np.ndarray:
    """Which pairs survive the rule: a pair involving a near-blank image is kept only when its pixels are identical
    (identical bytes imply identical pixels)."""
    if len(a) == 0:
        return np.zeros(0, dtype=bool)
    return ~(blank[a] | blank[b]) | same_pixels


def blank_pairs(blank_rows: np.ndarray, pixel_digests: np.ndarray, split_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a < b) of near-blank images with identical pixels, linear in their number.

    Near-blank images are left out of the hash search: there every blank image is within radius of every other, so
    k of them would make k² candidate pairs (a dark-sky photo cut into tiles gives tens of thousands). Here, within
    each group of identical pixels, members of one split are chained and every member of a later split is linked to
    the group's first member of the earliest split: enough to report each copy, and to connect each group.
    """
    groups: dict[bytes, list[int]] = {}
    for i in blank_rows.tolist():
        d = pixel_digests[i]
        if d:
            groups.setdefault(d, []).append(i)
    a: list[int] = []
    b: list[int] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda i: (split_index[i], i))
        anchor = members[0]
        for prev, cur in zip(members, members[1:]):
            same_split = split_index[prev] == split_index[cur]
            x = prev if same_split else anchor
            a.append(min(x, cur))
            b.append(max(x, cur))
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
