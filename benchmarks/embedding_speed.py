"""Throughput of the embeddings stage: the backbone's raw forward pass against the tool's end-to-end runner.

Run:  python benchmarks/embedding_speed.py [--images 1000] [--size 224] [--jpeg-side 256] [--small-images 4000]
                                           [--repeats 2] [--sweep-images 512] [--threads 1,2,3]
                                           [--batches 16,32,64] [--small-batches 32,64,128,256] [--device]
                                           [--quick] [--workdir DIR]

Everything is measured in one run on one machine and printed as figures and ratios; nothing is asserted on time.

1. Builds ``--images`` real-sized JPEGs (256x256, quality 90; random crops, at a random scale of 0.5-1.5, of the
   photos bundled with scikit-image / scikit-learn; fixed seed) in a temporary folder, and ``--small-images``
   CIFAR-like 32x32 PNGs (random regions of the same photos).
2. Photos at ``--size`` px (224 by default):
   * decode + resize alone, one thread: ``compute.load_rgb(path, None, size)`` over every file;
   * the backbone's raw forward throughput: ``Backbone._forward`` (the compiled forward, output fetched as numpy)
     on batches that were decoded, resized and normalised (``Backbone._preprocess``) beforehand, after warm-up;
   * end to end: ``compute.embed_rows(EmbedBatch(spec), {"path": ..., "pixels": None...}, ...)`` over the same
     files (decode + resize on a thread pool ahead of inference + forward + L2 normalisation), after warm-up;
     first at the package defaults, then for threads 1/2/3 x batch_size 16/32/64 (``--threads``, ``--batches``),
     then read_ahead 1/2/3/6 at the default threads and batch size.
   Ratio = end-to-end images/s / raw images/s (target >= 0.9).
3. The 32-px case: 32x32 PNGs at ``image_size=64`` (what ``auto_image_size`` picks for CIFAR-sized images), the
   same figures, its sweep over batch sizes 32/64/128/256 (``--small-batches``).

The machine may be shared: decode, raw forward, Backbone.embed and end to end are run in turn, ``--repeats`` rounds;
each rate is the best pass, each ratio the median of the per-round ratios (the two passes of a round see the same
background load), and the CPU time other processes used meanwhile is printed (Linux). The sweep (threads x
batch_size, then read_ahead) runs on the first ``--sweep-images`` files, each cell paired with a raw-forward pass at
the same batch size; the 32-px case gets the same sweep. The ceiling printed for the ratio assumes the forward keeps
all cores busy: decoding then has to take its CPU time from the forward.

Backends: imports nothing from TensorFlow directly, only splitaudit, keras, numpy and PIL (scikit-image and
scikit-learn only for the source photos; without them the images are synthetic and the run says so), so it also
runs with ``KERAS_BACKEND=jax`` where TensorFlow is not installed; it prints ``keras.backend.backend()`` and the
devices (``--device``: TensorFlow's ``tf.config.list_physical_devices()`` under the TF backend, ``jax.devices()``
under JAX).
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from splitaudit.features.embeddings import compute
from splitaudit.features.embeddings.backbones import BackboneSpec, load_backbone
from splitaudit.features.embeddings.compute import EmbedBatch, embed_rows, load_rgb

SEED = 20240611
JPEG_QUALITY = 90
SMALL_SIDE = 32
SMALL_IMAGE_SIZE = 64  # compute.auto_image_size for 32-px images
THREADS = (1, 2, 3)
BATCHES = (16, 32, 64)  # the photos' sweep (224 px)
SMALL_BATCHES = (32, 64, 128, 256)  # the 32-px case's sweep (64 px): per-call overhead weighs more there
READ_AHEADS = (1, 2, 3, 6)
_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera",
                   "retina", "coins", "moon", "grass", "gravel", "brick", "clock", "cell")


def embed_rows_defaults() -> dict[str, int]:
    """The package's current embed_rows defaults (read, never assumed: they are being tuned)."""
    sig = inspect.signature(embed_rows)
    return {k: sig.parameters[k].default for k in ("batch_size", "threads", "read_ahead") if k in sig.parameters}


# ---------------------------------------------------------------------------------------------------- images


def load_photos() -> tuple[list[Image.Image], str]:
    """The bundled source photos (RGB), or synthetic ones where scikit-image / scikit-learn are missing."""
    photos: list[Image.Image] = []
    try:
        import skimage.data

        for name in _SKIMAGE_PHOTOS:
            photos.append(Image.fromarray(np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)).convert("RGB"))
        left, right, _ = skimage.data.stereo_motorcycle()
        photos += [Image.fromarray(np.asarray(a, dtype=np.uint8)).convert("RGB") for a in (left, right)]
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_image

        photos += [Image.fromarray(load_sample_image(n)).convert("RGB") for n in ("china.jpg", "flower.jpg")]
    except ImportError:
        pass
    if photos:
        return photos, f"{len(photos)} photos bundled with scikit-image / scikit-learn"
    # Fallback: smooth random colour fields with texture, so JPEG sizes are photo-like (not flat, not pure noise).
    rng = np.random.default_rng(SEED)
    for _ in range(8):
        low = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        a = np.asarray(Image.fromarray(low).resize((768, 768), Image.Resampling.BICUBIC), dtype=np.float32)
        a += rng.normal(0, 12, a.shape)
        photos.append(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)))
    return photos, "8 SYNTHETIC photos (scikit-image / scikit-learn not installed)"


def big_image(photos: list[Image.Image], i: int, side: int) -> Image.Image:
    """A side x side crop of a photo scaled by a random factor in [0.5, 1.5] (never below what covers the crop)."""
    rng = np.random.default_rng([SEED, 1, i])
    photo = photos[i % len(photos)]
    w, h = photo.size
    scale = max(float(rng.uniform(0.5, 1.5)), side / min(w, h))
    s = side / scale
    x, y = float(rng.uniform(0, w - s)), float(rng.uniform(0, h - s))
    im = photo.resize((side, side), Image.Resampling.BILINEAR, box=(x, y, x + s, y + s))
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else im


def small_image(photos: list[Image.Image], i: int) -> Image.Image:
    """A 32x32 thumbnail of a random square region (24-160 source px) of a photo: a CIFAR-like image."""
    rng = np.random.default_rng([SEED, 2, i])
    photo = photos[i % len(photos)]
    w, h = photo.size
    s = float(np.exp(rng.uniform(np.log(24), np.log(min(160, w, h)))))
    x, y = float(rng.uniform(0, w - s)), float(rng.uniform(0, h - s))
    return photo.resize((SMALL_SIDE, SMALL_SIDE), Image.Resampling.BILINEAR, box=(x, y, x + s, y + s))


def write_images(root: Path, n: int, make: Callable[[int], Image.Image], ext: str) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"img_{i:06d}.{ext}"
        if not p.exists():
            im = make(i)
            if ext == "jpg":
                im.save(p, "JPEG", quality=JPEG_QUALITY)
            else:
                im.save(p, "PNG")
        paths.append(str(p))
    return paths


# ---------------------------------------------------------------------------------------------------- timing


def _machine_busy() -> float | None:
    """CPU seconds all processes have spent busy so far (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            f = [int(v) for v in fh.readline().split()[1:]]
        return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        return None


class Pass:
    """One timed pass: wall seconds, this process's CPU seconds, and the other processes' CPU seconds."""

    def __init__(self, n: int, fn: Callable[[], object]) -> None:
        busy0, cpu0, t0 = _machine_busy(), time.process_time(), time.perf_counter()
        fn()
        self.wall = time.perf_counter() - t0
        self.cpu = time.process_time() - cpu0
        busy1 = _machine_busy()
        self.other = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - self.cpu)
        self.n = n

    @property
    def rate(self) -> float:
        return self.n / self.wall


def rounds(jobs: dict[str, tuple[int, Callable[[], object]]], repeats: int) -> dict[str, list[Pass]]:
    """Run the jobs in turn, ``repeats`` rounds: a ratio taken within a round sees the same background load."""
    out: dict[str, list[Pass]] = {k: [] for k in jobs}
    for _ in range(max(1, repeats)):
        for k, (n, fn) in jobs.items():
            out[k].append(Pass(n, fn))
    return out


def best(passes: list[Pass]) -> Pass:
    return min(passes, key=lambda p: p.wall)


def ratio(num: list[Pass], den: list[Pass]) -> float:
    """Median over rounds of rate(num) / rate(den) (each pair measured back to back)."""
    return float(np.median([a.rate / b.rate for a, b in zip(num, den)]))


def background(*groups: list[Pass]) -> str:
    ps = [p for g in groups for p in g if p.other is not None]
    if not ps:
        return "background load: unknown"
    return f"other processes used {sum(p.other for p in ps) / sum(p.wall for p in ps):.2f} cores meanwhile"


def batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Full batches only: the raw forward is timed at one input shape."""
    n = (len(x) // batch_size) * batch_size
    return [x[s:s + batch_size] for s in range(0, n, batch_size)]


def raw_job(forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int) -> tuple[int, Callable[[], None]]:
    """The compiled forward over pre-normalised batches (warmed up here: two calls at this batch shape)."""
    bs = batches(x, batch_size)
    for b in bs[:2]:
        np.asarray(forward(b))

    def run() -> None:
        for b in bs:
            np.asarray(forward(b))

    return len(bs) * batch_size, run


def columns(paths: list[str]) -> dict[str, np.ndarray]:
    return {"path": np.array(paths, dtype=object), "pixels": np.full(len(paths), None, dtype=object)}


def e2e_job(work: EmbedBatch, paths: list[str], **kw: int) -> tuple[int, Callable[[], None]]:
    """embed_rows over ``paths`` (warmed up here: one full batch + the last, partial, batch shape)."""
    bs = kw.get("batch_size", embed_rows_defaults().get("batch_size", 32))
    embed_rows(work, columns(paths[: bs + (len(paths) % bs)]), **kw)
    cols = columns(paths)

    def run() -> None:
        out = embed_rows(work, cols, **kw)
        if not out["embedded"].all():
            raise RuntimeError("some images did not embed")

    return len(paths), run


def decode_job(paths: list[str], size: int) -> tuple[int, Callable[[], None]]:
    def run() -> None:
        for p in paths:
            if load_rgb(p, None, size) is None:
                raise RuntimeError(f"{p} did not decode")

    return len(paths), run


# ---------------------------------------------------------------------------------------------------- report


def describe_backend(show_devices: bool) -> None:
    import keras

    backend = keras.backend.backend()
    print(f"keras {keras.__version__}, backend: {backend}")
    if backend == "jax":
        import jax

        print(f"  jax {jax.__version__} devices: {jax.devices()}")
    elif backend == "tensorflow" and show_devices:
        tf = sys.modules.get("tensorflow")  # already imported by keras: no import of our own
        if tf is not None:
            print(f"  tensorflow {tf.__version__} physical devices: {tf.config.list_physical_devices()}")
            print(f"  TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}")
    if show_devices:
        try:
            print(f"  keras.distribution.list_devices(): {keras.distribution.list_devices()}")
        except Exception as exc:  # noqa: BLE001 - informational only
            print(f"  keras.distribution.list_devices() failed: {exc}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " load average %.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    print(f"  CPU cores usable: {cores};{load}")


def fmt(p: Pass) -> str:
    return f"{p.rate:8.1f} img/s  ({1000 / p.rate:6.2f} ms/img, {p.cpu / p.wall:.2f} cores busy)"


def case(title: str, paths: list[str], image_size: int, args: argparse.Namespace, sweep: bool,
         threads: tuple[int, ...], batch_sizes: tuple[int, ...]) -> None:
    print(f"\n=== {title}: {len(paths)} files, network input {image_size}x{image_size} ===", flush=True)
    spec = BackboneSpec(image_size=image_size)
    t0 = time.perf_counter()
    backbone = load_backbone(spec)
    print(f"backbone {spec.name} loaded in {time.perf_counter() - t0:.1f}s (dim {backbone.dim})")
    defaults = embed_rows_defaults()
    bs0 = defaults.get("batch_size", 32)
    reps = args.repeats

    decoded = np.stack([load_rgb(p, None, image_size) for p in paths])
    x = backbone._preprocess(decoded)  # pre-normalised: the raw forward sees exactly what embed() would feed it
    work = EmbedBatch(spec, runtime="keras")  # the Keras path; benchmarks/peers.py measures the LiteRT stage
    embed_batches = batches(decoded, bs0)
    jobs = {
        "decode": decode_job(paths, image_size),
        "raw": raw_job(backbone._forward, x, 32),
        "embed": (len(embed_batches) * bs0, lambda: [backbone.embed(b) for b in embed_batches]),
        "e2e": e2e_job(work, paths),
    }
    r = rounds(jobs, reps)
    dec, raw, emb, e2e = best(r["decode"]), best(r["raw"]), best(r["embed"]), best(r["e2e"])
    print(f"best of {reps} rounds (decode, raw, embed, end-to-end measured in turn each round); "
          f"{background(*r.values())}")
    print(f"decode + resize alone (load_rgb, 1 thread):      {fmt(dec)}")
    print(f"raw forward (Backbone._forward), batch 32:       {fmt(raw)}")
    print(f"Backbone.embed on decoded batches of {bs0:<2d}:         {fmt(emb)}  preprocess + forward + L2, no decode")
    print(f"end to end, embed_rows defaults:                 {fmt(e2e)}  {defaults}")
    print(f"  RATIO end-to-end / raw forward: {ratio(r['e2e'], r['raw']):.3f} (median of per-round ratios; "
          f"best/best {e2e.rate / raw.rate:.3f})   target >= 0.9")
    print(f"  embed / raw: {ratio(r['embed'], r['raw']):.3f}   end-to-end / embed: {ratio(r['e2e'], r['embed']):.3f}")
    # CPU-bound ceiling: the forward needs raw.cpu/raw.n core-seconds per image, decoding dec.cpu/dec.n more.
    f_cpu, d_cpu = raw.cpu / raw.n, dec.cpu / dec.n
    print(f"  CPU per image: forward {1000 * f_cpu:.2f} core-ms, decode+resize {1000 * d_cpu:.2f} core-ms -> if the forward "
          f"already keeps every core busy, the ceiling is {f_cpu / (f_cpu + d_cpu):.3f}; "
          f"with no overlap at all: {1 / (1 + raw.rate / dec.rate):.3f}")
    if not sweep:
        return

    sub = paths[: args.sweep_images]
    xs = x[: len(sub)]
    ra0 = defaults.get("read_ahead", 3)
    print(f"\nsweep on the first {len(sub)} files, {reps} rounds each; cell: best end-to-end img/s "
          f"(median ratio to the raw forward at the same batch size, measured in the same rounds)")
    raws: dict[int, list[Pass]] = {b: [] for b in batch_sizes}
    print(f"{'threads':>8} | " + " | ".join(f"{'batch ' + str(b):>16}" for b in batch_sizes) + f"   (read_ahead={ra0})")
    for t in threads:
        cells = []
        for b in batch_sizes:
            rr = rounds({"raw": raw_job(backbone._forward, xs, b), "e2e": e2e_job(work, sub, threads=t, batch_size=b, read_ahead=ra0)}, reps)
            raws[b] += rr["raw"]
            cells.append(f"{best(rr['e2e']).rate:7.1f} ({ratio(rr['e2e'], rr['raw']):.3f})")
        print(f"{t:>8} | " + " | ".join(f"{c:>16}" for c in cells), flush=True)
    ref = best(raws[32] if 32 in raws else r["raw"]).rate
    print(f"{'raw fwd':>8} | " + " | ".join(f"{best(raws[b]).rate:7.1f} ({best(raws[b]).rate / ref:.3f})".rjust(16)
                                        for b in batch_sizes) + "   (raw forward img/s, best of the cell passes; ratio to batch 32)")

    t_def = defaults.get("threads", 2)
    print(f"\nend to end by read_ahead (threads={t_def}, batch_size={bs0}), first {len(sub)} files: "
          f"best img/s (median ratio to raw forward at batch {bs0})")
    for ra in READ_AHEADS:
        rr = rounds({"raw": raw_job(backbone._forward, xs, bs0), "e2e": e2e_job(work, sub, threads=t_def, batch_size=bs0, read_ahead=ra)}, reps)
        print(f"  read_ahead {ra}: {best(rr['e2e']).rate:7.1f} ({ratio(rr['e2e'], rr['raw']):.3f})   {background(*rr.values())}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="number of real-sized JPEGs (default 1000)")
    ap.add_argument("--size", type=int, default=224, help="network input side for the photos (default 224)")
    ap.add_argument("--jpeg-side", type=int, default=256, help="side of the generated JPEGs (default 256)")
    ap.add_argument("--small-images", type=int, default=4000, help="number of 32x32 PNGs (0: skip; default 4000)")
    ap.add_argument("--repeats", type=int, default=2, help="passes per figure, the best is kept (default 2)")
    ap.add_argument("--device", action="store_true", help="print the devices the backend uses")
    ap.add_argument("--quick", action="store_true", help="no threads/batch_size/read_ahead sweep")
    ap.add_argument("--sweep-images", type=int, default=512, help="files used by the sweep (default 512)")
    ints = lambda v: tuple(int(x) for x in v.split(","))  # noqa: E731
    ap.add_argument("--threads", type=ints, default=THREADS, help="sweep's decode threads (default 1,2,3)")
    ap.add_argument("--batches", type=ints, default=BATCHES, help="sweep's batch sizes, photos (default 16,32,64)")
    ap.add_argument("--small-batches", type=ints, default=SMALL_BATCHES, help="sweep's batch sizes, 32 px (default 32,64,128,256)")
    ap.add_argument("--workdir", help="keep the generated images here (reused when present) instead of a temp dir")
    args = ap.parse_args()

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="splitaudit-embspeed-"))
    try:
        t0 = time.perf_counter()
        photos, source = load_photos()
        big = write_images(root / f"jpeg{args.jpeg_side}", args.images, lambda i: big_image(photos, i, args.jpeg_side), "jpg")
        small = write_images(root / "png32", args.small_images, lambda i: small_image(photos, i), "png") if args.small_images else []
        mb = sum(os.path.getsize(p) for p in big) / 2**20
        print(f"images: {len(big)} JPEGs {args.jpeg_side}x{args.jpeg_side} q{JPEG_QUALITY} ({mb:.1f} MiB), "
              f"{len(small)} PNGs 32x32, from {source}; written in {time.perf_counter() - t0:.1f}s to {root}")

        # Load the backbone before describing the backend: splitaudit sets the TF environment (oneDNN) on import.
        load_backbone(BackboneSpec(image_size=args.size))
        describe_backend(args.device)
        print(f"embed_rows defaults: {embed_rows_defaults()}; compute module: {compute.__file__}")

        case(f"photos {args.jpeg_side}px JPEG", big, args.size, args, not args.quick, args.threads, args.batches)
        if small:
            case("CIFAR-like 32px PNG", small, SMALL_IMAGE_SIZE, args, not args.quick, args.threads, args.small_batches)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
