"""Which converted network and which input side: fidelity, candidate recall and speed in one run.

Run:  python benchmarks/embedding_runtime.py [--sources 20] [--sizes 224,192,160,128] [--skip-keras]

A smaller equivalent of ``benchmarks/embedding_quality.py`` for the choices of the LiteRT path (issue #16):

* Images: the photo tiles and transformed copies of ``benchmarks/hash_thresholds.py`` (one layout; ``--sources``
  tiles get a copy per transform). Base = all tiles, queries = the copies (as a later split).
* Fidelity: cosine between each image's vector from the Keras float32 network (the reference) and from the
  converted network, at 224 px, for float32 / float16 / int8 (int8 calibrated on the bundled photos).
* Candidate recall: the tool's dense candidate rule (``neighbors.dense.dense_candidates`` with the default
  ``min_cosine``, ``max_ratio`` and ``k``) -- the share of copies whose source is a candidate, over the transforms
  the embedding stage is meant to catch (``hash_thresholds.UNCATCHABLE`` left out), and the candidates that are not
  a planted pair, per configuration and input side.
* Speed: images/s of the forward pass alone (decoded images, the tool's inference batch) for each configuration.

Numbers are printed, nothing asserted. The machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hash_thresholds as ht  # noqa: E402

from splitaudit.features.embeddings.backbones import BackboneSpec, load_backbone  # noqa: E402
from splitaudit.features.embeddings.compute import inference_batch, load_rgb  # noqa: E402
from splitaudit.features.embeddings.litert import load_lite_backbone  # noqa: E402
from splitaudit.neighbors.dense import dense_candidates  # noqa: E402
from splitaudit.neighbors.thresholds import DEFAULT_MAX_RATIO, DEFAULT_MIN_SIMILARITY, EMBED_K  # noqa: E402


def embed_all(backbone: object, images: np.ndarray, step: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = np.concatenate([backbone.embed(images[s : s + step]) for s in range(0, len(images), step)])  # type: ignore[attr-defined]
    dt = time.perf_counter() - t0
    # the tool stores float16 and renormalises: do the same
    out = out.astype(np.float16).astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12), len(images) / dt


def recall(emb: np.ndarray, n_base: int, src: np.ndarray, catchable: np.ndarray) -> tuple[float, int]:
    split = np.r_[np.zeros(n_base, np.int64), np.ones(len(emb) - n_base, np.int64)]
    a, b, _, _ = dense_candidates(emb, np.ones(len(emb), bool), split, 2, k=EMBED_K, min_cosine=DEFAULT_MIN_SIMILARITY,
                                  max_ratio=DEFAULT_MAX_RATIO)
    found = set(zip(a.tolist(), (b - n_base).tolist()))
    hit = np.array([(int(s), q) in found for q, s in enumerate(src)])
    false = sum(1 for x, q in found if src[q] != x)
    return float(hit[catchable].mean()), false


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", type=int, default=20)
    ap.add_argument("--sizes", default="224,192,160,128")
    ap.add_argument("--skip-keras", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} cores")
    with tempfile.TemporaryDirectory(prefix="emb-runtime-") as tmp:
        tiles, _, colour, _ = ht.make_photo_tiles(os.path.join(tmp, "tiles"), ht.SEED, False)
        os.makedirs(os.path.join(tmp, "copies"))
        copies, src, tid = ht.make_copies(os.path.join(tmp, "copies"), tiles, colour, args.sources, "jpeg90", ht.SEED)
        catchable = np.isin(tid, [k for k, t in enumerate(ht.TRANSFORMS) if t.family not in ht.UNCATCHABLE])
        paths = tiles + copies
        print(f"{len(tiles)} tiles, {len(copies)} copies ({int(catchable.sum())} of catchable transforms)\n")
        ref = None
        print(f"{'side':>5} {'network':10} {'img/s':>7} {'cos min':>8} {'cos p1':>8} {'cos mean':>9} {'recall':>7} {'false':>6}")
        for size in sizes:
            images = np.stack([load_rgb(p, None, size) for p in paths])
            step = inference_batch(size)
            configs = ["float32", "float16", "int8"] if size == 224 else ["float32"]
            if size == 224 and not args.skip_keras:
                ref, speed = embed_all(load_backbone(BackboneSpec(image_size=size)), images, 32)
                r, false = recall(ref, len(tiles), src, catchable)
                print(f"{size:>5} {'keras':10} {speed:7.1f} {'(reference)':>27} {r:7.3f} {false:6d}", flush=True)
            for q in configs:
                emb, speed = embed_all(load_lite_backbone(BackboneSpec(image_size=size, quantization=q)), images, step)
                r, false = recall(emb, len(tiles), src, catchable)
                if ref is not None and size == 224:
                    cos = (emb * ref).sum(1)
                    fid = f"{cos.min():8.4f} {np.percentile(cos, 1):8.4f} {cos.mean():9.5f}"
                else:
                    fid = f"{'-':>8} {'-':>8} {'-':>9}"
                print(f"{size:>5} {'litert-' + q[-2:] if q != 'int8' else 'litert-i8':10} {speed:7.1f} {fid} {r:7.3f} {false:6d}",
                      flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
