"""Copies saved after TensorFlow's colour jitter, as a Keras user's augmented images land in a validation folder.

    OMP_NUM_THREADS=1 python benchmarks/colour_jitter.py [--sides 32,112]

The photo suite's sources (`copy_suites.photo_suite`, 150 sources) with copies recoloured by `tf.image`:
``adjust_hue`` (delta in [-0.1, 0.1], up to 36 degrees), ``adjust_saturation`` (factor in [0.6, 1.6]), and the four
of a colour-jitter augmentation (hue, saturation, ``adjust_brightness`` delta in [-0.1, 0.1], ``adjust_contrast``
factor in [0.8, 1.2]), alone and after a shift, a mirror, a zoom or a crop. Each side runs twice through the copy
stage: with the HSV-value reading (the default) and on the luma alone (``verify.VALUE_FROM`` out of reach), printing
recall per transform and the eval images flagged that hold no planted copy. Never tuned on (thirty-second session).
Needs TensorFlow (the test dependencies).
"""
import argparse
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import copy_suites  # noqa: E402
from copy_suites import Spec, photo_suite  # noqa: E402

TRANSFORMS = {
    "tf hue": Spec(colour="tf-hue"),
    "tf saturation": Spec(colour="tf-saturation"),
    "tf jitter": Spec(colour="tf-jitter"),
    "tf jitter + shift 1": Spec(colour="tf-jitter", shift=1),
    "tf jitter + mirror": Spec(colour="tf-jitter", mirror=True),
    "tf jitter + zoom 5%": Spec(colour="tf-jitter", zoom=1.05),
    "tf hue + crop 10%": Spec(colour="tf-hue", crop=0.1, crop_pos=(1.0, 0.0)),
}


def tf_recolour(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``img`` recoloured by ``tf.image`` as ``kind`` says (see the module docstring)."""
    import tensorflow as tf

    x = tf.convert_to_tensor(img.astype(np.float32) / 255.0)
    if kind in ("tf-jitter", "tf-hue"):
        x = tf.image.adjust_hue(x, float(rng.uniform(-0.1, 0.1)))
    if kind in ("tf-jitter", "tf-saturation"):
        x = tf.image.adjust_saturation(x, float(rng.uniform(0.6, 1.6)))
    if kind == "tf-jitter":
        x = tf.image.adjust_brightness(x, float(rng.uniform(-0.1, 0.1)))
        x = tf.image.adjust_contrast(x, float(rng.uniform(0.8, 1.2)))
    return np.clip(np.round(255 * x.numpy()), 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sides", default="32,112")
    ap.add_argument("--sources", type=int, default=150)
    args = ap.parse_args()
    base = copy_suites.recolour
    copy_suites.recolour = lambda img, kind, rng: (tf_recolour(img, kind, rng) if kind.startswith("tf-")
                                                    else base(img, kind, rng))

    from splitaudit.api import run_checks
    from splitaudit.neighbors import verify
    from splitaudit.options import CHECK, build_options
    from splitaudit.run import open_run

    default = verify.VALUE_FROM
    for side in (int(s) for s in args.sides.split(",")):
        suite = photo_suite(side, args.sources, transforms=TRANSFORMS)
        tr, ev = np.flatnonzero(suite.split == 0), np.flatnonzero(suite.split == 1)
        index = np.concatenate([tr, ev])  # record -> suite index
        with_copy = {b for _, b, _ in suite.planted}
        print(f"== {side}-px photos: {len(tr)} train, {len(ev)} eval, {len(suite.planted)} planted ==")
        for label, value_from in (("value and luma (default)", default), ("luma alone", 2.0)):
            verify.VALUE_FROM = value_from
            opts = build_options(CHECK, "audit", None, dict(
                cache=False, backbone="efficientnet_lite0",
                select=("exact-duplicates", "pixel-duplicates", "near-duplicates", "similar-images")))
            with open_run((suite.images[tr], suite.images[ev]), options=opts, timings={}) as ctx:
                run_checks(ctx, timings={})
                m = ctx.computed_copies()
            flagged = {int(index[b]) for b, c in zip(m.b, m.copy) if c}
            per = collections.defaultdict(list)
            for _, b, name in suite.planted:
                per[name].append(b in flagged)
            recall = np.mean([x for v in per.values() for x in v])
            print(f"  {label}: recall {recall:.3f}; eval images flagged that hold no planted copy: "
                  f"{len(flagged - with_copy)} of {len(ev) - len(with_copy)}")
            print("    " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in per.items()))
        verify.VALUE_FROM = default


if __name__ == "__main__":
    main()
