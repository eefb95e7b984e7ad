"""Streamed inputs keep memory at one batch: spill a tf.data split larger than the memory it may use.

A ``tf.data`` generator yields N real photo crops (scikit-image / scikit-learn samples, 128x128 RGB, never held as
one array); ``scan`` writes each to the run's temporary folder. Prints the peak resident-memory growth of the spill
against the split's decoded size, and the spill's throughput. Usage: ``python benchmarks/stream_memory.py [N]``.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(n: int) -> None:
    import skimage.data
    import tensorflow as tf
    from sklearn.datasets import load_sample_image

    from splitaudit.scan import SpillStore, scan

    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg"), skimage.data.astronaut(),
              skimage.data.coffee(), skimage.data.chelsea()]

    def crops():
        rng = np.random.default_rng(0)
        for i in range(n):
            p = photos[i % len(photos)]
            y, x = rng.integers(0, p.shape[0] - 128), rng.integers(0, p.shape[1] - 128)
            yield p[y:y + 128, x:x + 128], i % 5

    sig = (tf.TensorSpec((128, 128, 3), tf.uint8), tf.TensorSpec((), tf.int64))
    train = tf.data.Dataset.from_generator(crops, output_signature=sig).batch(64)
    val = tf.data.Dataset.from_generator(crops, output_signature=sig).take(64).batch(64)
    next(iter(val))  # TensorFlow's own start-up allocations are not the spill's
    before = peak_mib()
    t0 = time.perf_counter()
    with SpillStore() as store:
        ds = scan([train, val], spill=store)
        seconds = time.perf_counter() - t0
    grown = peak_mib() - before
    decoded = n * 128 * 128 * 3 / 2**20
    print(f"{len(ds.records)} images spilled in {seconds:.1f} s ({len(ds.records) / seconds:.0f} images/s)")
    print(f"split decoded: {decoded:.0f} MiB; peak memory growth while spilling: {grown:.0f} MiB "
          f"({grown / decoded:.2f} of the decoded split)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
