"""Turn in-memory arrays, the way Keras users hold them, into records.

Accepts ``x`` shaped ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)``, either uint8 or float in ``[0, 1]``
(float data in ``[0, 255]`` is accepted too), and labels as integers, strings, one-hot rows or ``(N, 1)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import invalid_parameter
from .records import ImageRecord


def normalise_pixels(x: Any, *, name: str) -> np.ndarray:
    """Return uint8 ``N×H×W×C`` (C = 1 or 3) without copying when already in that form."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as exc:  # e.g. a list of images of different sizes
        raise invalid_parameter(name, "an image array (images of one size; pass differently sized images as a list "
                                "of PIL images or a tf.data / datasets.Dataset)", f"{type(x).__name__} ({exc})") from exc
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise invalid_parameter(name, "an image array shaped (N, H, W), (N, H, W, 1) or (N, H, W, 3)", f"array of shape {x.shape}")
    if x.shape[-1] == 4:
        x = x[..., :3]
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        hi = float(np.nanmax(x)) if x.size else 0.0
        lo = float(np.nanmin(x)) if x.size else 0.0
        if lo < 0 or hi > 255:
            raise invalid_parameter(name, "pixel values in [0, 1] or [0, 255]", f"values in [{lo:g}, {hi:g}]")
        # Float images in [0, 1] (keras.datasets after /255) are scaled back; anything larger is already 0-255.
        scale = 255.0 if np.issubdtype(x.dtype, np.floating) and hi <= 1.0 else 1.0
        return np.clip(np.rint(x.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    raise invalid_parameter(name, "a numeric image array", f"dtype {x.dtype}")


def normalise_labels(y: Any, n: int, *, name: str) -> list[str | None]:
    """Labels as strings (one-hot rows become their argmax)."""
    if y is None:
        return [None] * n
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        y = y.argmax(axis=1)
    if y.ndim != 1 or len(y) != n:
        raise invalid_parameter(name, f"{n} labels (one per image)", f"labels of shape {y.shape}")
    return [str(v) for v in y.tolist()]


def array_records(split: str, x: Any, y: Any = None) -> tuple[np.ndarray, list[ImageRecord]]:
    """Records (one per row) and the normalised pixel array for split ``split``."""
    pixels = normalise_pixels(x, name=f"{split}.x")
    labels = normalise_labels(y, len(pixels), name=f"{split}.y")
    records = [
        ImageRecord(split=split, relpath=f"x[{i}]", path=None, label=labels[i], array_index=i)
        for i in range(len(pixels))
    ]
    return pixels, records
