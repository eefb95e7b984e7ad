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
