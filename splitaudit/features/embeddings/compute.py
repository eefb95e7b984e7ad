"""Embeddings of a dataset: decode and resize in threads while the network runs, cache by content digest.

``EmbedBatch`` is the unit of work in Ray Data's callable-class form (the model is loaded once per worker, then
called on batches of records). Locally, :func:`iter_embedded` runs it in this process on threads with a bounded
read-ahead: the converted network in *lanes* (each thread decodes its batch and runs it through an interpreter of
its own), the Keras network here while threads decode ahead. Pillow and the interpreter release the GIL, and memory
stays at a few batches whatever the dataset size. On the Ray engine the same object runs in an actor pool
(:mod:`splitaudit.features.engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ...errors import invalid_parameter
from ...memory import release_freed_memory
from ...progress import LOAD_MODEL, staged
from .. import decode
from ..extract import DEFAULT_MAX_PIXELS, _read
from .backbones import BackboneSpec, load_backbone

if TYPE_CHECKING:
    from ..engine import Engine

Progress = Callable[[int], None]


def auto_image_size(widths: np.ndarray, heights: np.ndarray) -> int:
    """Input side for the network: twice the median side, rounded up to 32, between 64 and :data:`MAX_AUTO_SIDE`.

    A 32-px image blown up to 224 costs 49x the compute and adds no detail the network can use. Photos stop at 128:
    with the copy verifier's pixel views beside it, the embeddings at 128 px found as many copies end to end as at
    224 (0.931 against 0.926 on 256-px photos, 0.944 against 0.937 on 128-px ones, the same false pairs) at a third
    of the network's compute (docs/performance.md, seventh session).
    """
    if len(widths) == 0:
        return MAX_AUTO_SIDE
    side = float(np.median(np.maximum(widths, heights)))
    return int(min(MAX_AUTO_SIDE, max(64, 32 * np.ceil(2 * side / 32))))


#: The largest side :func:`auto_image_size` picks (``--image-size`` sets any other).
MAX_AUTO_SIDE = 128


def decoded_batch(batch: dict[str, np.ndarray], size: int, max_pixels: int,
                  convert: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each record of a batch (columns ``path``, ``pixels``) as :func:`load_rgb` decodes it at ``size``, turned
    by ``convert`` into a (size, size) uint8 image: (n, size, size) uint8 and the ok mask (not ok: undecodable)."""
    n = len(batch["path"])
    pixels = batch.get("pixels", np.full(n, None, dtype=object))
    out = np.zeros((n, size, size), np.uint8)
    ok = np.zeros(n, bool)
    for i in range(n):
        rgb = load_rgb(batch["path"][i], pixels[i], size, max_pixels=max_pixels)
        if rgb is not None:
            out[i], ok[i] = convert(rgb), True
    return out, ok


def load_rgb(path: str | None, pixels: np.ndarray | None, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray | None:
    """The image as the network sees it (S×S×3 uint8, squashed, EXIF-oriented), or ``None`` if it cannot be decoded."""
    im = load_image(path, pixels, size, max_pixels=max_pixels)
    return None if im is None else np.asarray(im, dtype=np.uint8)


def load_image(path: str | None, pixels: np.ndarray | None, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS
               ) -> Image.Image | None:
    """:func:`load_rgb`'s image as a Pillow RGB image (for a caller that goes on in Pillow: no array round trip)."""
    try:
        if pixels is not None:
            im = Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")
        else:
            data = _read(path)  # type: ignore[arg-type]
            fmt = decode.sniff(data[:16])
            if fmt is None:
                return None
            # a small plain JPEG (no EXIF: upright) straight through libjpeg, the same pixels as the path below
            quick = decode.quick_jpeg(data, "RGB", size, max_pixels) if fmt == "JPEG" else None
            if quick is not None:
                im = quick
            else:
                im = decode.open_image(data, fmt, max_pixels=max_pixels)
                if fmt == "JPEG":
                    # Decode at the smallest DCT scale still >= the network input: resizing costs more than decoding.
                    im.draft("RGB", (size, size))
                im = decode.load(im, draft_size=None)
        rgb = decode.to_rgb(im)
        if rgb.size == (size, size):  # a photo the DCT scale already brought to the input: resize would only copy it
            return rgb
        return rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    except (decode.DecodeFailure, OSError, ValueError):
        return None


def mirror(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images[:, :, ::-1])


RUNTIMES = ("litert", "keras")


@dataclass
class EmbedBatch:
    """Embeds a batch of records (columns ``path``, ``pixels``); the backbone is loaded on first call.

    Plain data until then, and pickled without the loaded network, so Ray or a process pool can ship it to workers
    (each loads its own copy). ``runtime``: the converted LiteRT network (default) or the Keras reference;
    ``model_dir``: where converted networks are kept (default: ``models/`` in the cache folder).
    """

    spec: BackboneSpec
    max_pixels: int = DEFAULT_MAX_PIXELS
    runtime: str = "litert"
    model_dir: str | None = None
    threads: int | None = None
    _backbone: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise invalid_parameter("runtime", list(RUNTIMES), self.runtime)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_backbone": None}

    @property
    def backbone(self) -> Any:
        """An object with ``embed(uint8 N×S×S×3) -> float32 N×D`` and ``dim``."""
        if self._backbone is None:
            if self.runtime == "keras":
                self._backbone = load_backbone(self.spec)
            else:
                from .litert import load_lite_backbone

                self._backbone = load_lite_backbone(self.spec, self.model_dir, self.threads)
        return self._backbone

    def decode(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Decoded S×S×3 images of the rows that decode, and the mask of those rows."""
        size = self.spec.image_size
        paths = batch["path"]
        pixels = batch.get("pixels", np.full(len(paths), None, dtype=object))
        images = [load_rgb(paths[i], pixels[i], size, max_pixels=self.max_pixels) for i in range(len(paths))]
        ok = np.array([im is not None for im in images], dtype=bool)
        stack = np.stack([im for im in images if im is not None]) if ok.any() else np.zeros((0, size, size, 3), np.uint8)
        return stack, ok

    def embed_decoded(self, stack: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
        out = np.zeros((len(ok), self.backbone.dim), dtype=np.float16)
        if len(stack):
            step = inference_batch(self.spec.image_size)
            vectors = [self.backbone.embed(stack[s : s + step]) for s in range(0, len(stack), step)]
            out[ok] = np.concatenate(vectors).astype(np.float16)
        return {"embedding": out, "embedded": ok}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.embed_decoded(*self.decode(batch))

    @property
    def gpu(self) -> bool:
        """Whether a GPU helps (an engine gives each worker one): Keras runs on one; LiteRT (XNNPACK) on CPUs."""
        return self.runtime == "keras"


#: Images per network call (the same batches locally and on Ray, so the same floats).
EMBED_BATCH = 32


def inference_batch(size: int) -> int:
    """Images per forward pass: about 64k input pixels (1 at 224 px, 16 at 64 px, 64 at 32 px).

    Measured with XNNPACK on 2 cores (docs/performance.md): at 224 px one image per call is as fast as 8 or 32
    (the activations of one image already fill the caches) and 32 would hold ~230 MiB of activations; at 64 px 16
    per call was 1.4x faster than 4 and 2.8x faster than 1, and 32 or 64 no faster.
    """
    return int(min(64, max(1, 2 ** round(np.log2(65536 / (size * size))))))


#: At most this many lanes (interpreters side by side: ~35 MiB each); more cores give each lane more threads.
MAX_LANES = 4


def lanes(work: EmbedBatch, cores: int) -> list[EmbedBatch]:
    """Copies of ``work`` to run side by side on ``cores`` cores, each loading its own interpreter with ``cores //
    lanes`` threads (the first is ``work`` itself when its thread count already is that). One lane for the Keras
    runtime (one model, on a GPU where there is one) or one core.

    Why lanes: XNNPACK splits each layer over its threads, which wait for each other (spinning) after every layer,
    and a decoding thread takes their core meanwhile. Whole batches side by side, each decoded and embedded by one
    thread, do not wait: 877 -> 1,050 img/s for 128-px photos and 3,300 -> 3,800 img/s for 64-px ones on 2 cores
    (docs/performance.md), the same vectors bit for bit (an interpreter's answer does not depend on its threads)."""
    if work.runtime != "litert" or cores < 2:
        return [work]
    n = min(cores, MAX_LANES)
    per = cores // n
    first = work if work.threads == per else replace(work, threads=per, _backbone=None)
    return [first] + [replace(first, _backbone=None) for _ in range(n - 1)]


def lane_threads(cores: int) -> int:
    """The interpreter threads of each of :func:`lanes`' copies on ``cores`` cores."""
    return max(1, cores // min(max(cores, 1), MAX_LANES))


def iter_embedded(
    work: EmbedBatch,
    columns: dict[str, np.ndarray],
    *,
    batch_size: int = EMBED_BATCH,
    threads: int | None = None,
    read_ahead: int = 3,
) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """``work`` over ``columns`` batch by batch, in order, as (rows, output), on ``threads`` threads (default: one
    per core). The converted network runs in :func:`lanes`: each thread decodes a batch and embeds it on a copy of
    ``work`` of its own, ``threads + read_ahead - 1`` batches in flight. The Keras network runs here, while up to
    ``read_ahead`` batches are decoded ahead on the threads. Memory holds a few batches whatever the dataset size."""
    from ..runner import default_workers

    threads = default_workers() if threads is None else max(1, int(threads))
    n = len(columns["path"])
    slices = iter([slice(s, min(n, s + batch_size)) for s in range(0, n, batch_size)])
    copies = lanes(work, threads)
    if len(copies) > 1:
        copies[0].backbone  # loaded (converted if need be) once, before the lanes load their own copies of the file
    free: SimpleQueue[EmbedBatch] = SimpleQueue()
    for lane in copies:
        free.put(lane)

    def whole(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        lane = free.get()  # as many threads as lanes: one is always free
        try:
            return lane(batch)
        finally:
            free.put(lane)

    task: Callable[[dict[str, np.ndarray]], Any] = whole if len(copies) > 1 else work.decode
    ahead = read_ahead + len(copies) - 1 if len(copies) > 1 else read_ahead
    with ThreadPoolExecutor(max_workers=len(copies) if len(copies) > 1 else threads) as pool:
        pending: list[tuple[slice, Future[Any]]] = []

        def submit() -> None:
            s = next(slices, None)
            if s is not None:
                pending.append((s, pool.submit(task, {k: v[s] for k, v in columns.items()})))

        try:
            for _ in range(ahead):
                submit()
            while pending:
                s, future = pending.pop(0)
                got = future.result()
                submit()  # keep the read-ahead full while this batch is handed on
                yield s, (got if len(copies) > 1 else work.embed_decoded(*got))
        finally:  # interrupted or abandoned: drop the queued batches instead of finishing them
            for _, future in pending:
                future.cancel()


def embed_rows(
    work: EmbedBatch,
    columns: dict[str, np.ndarray],
    *,
    batch_size: int = EMBED_BATCH,
    threads: int | None = None,
    read_ahead: int = 3,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Run ``work`` over ``columns`` in batches (see :func:`iter_embedded`) and concatenate the outputs."""
    outputs: list[dict[str, np.ndarray]] = []
    for _, out in iter_embedded(work, columns, batch_size=batch_size, threads=threads, read_ahead=read_ahead):
        outputs.append(out)
        if progress:
            progress(len(out["embedded"]))
    if not outputs:
        return {"embedding": np.zeros((0, 0), np.float16), "embedded": np.zeros(0, bool)}
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def embed_dataset(
    records: Sequence,
    arrays: dict,
    rows: Sequence[int],
    digests: Sequence[bytes],
    spec: BackboneSpec,
    *,
    cache: object | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Embeddings (float32, L2-normalised, n×D) for ``rows`` of ``records``; zero rows where decoding failed.

    Returns the matrix aligned with ``records``, a mask of rows that have an embedding, and the number computed
    (the rest came from the cache, keyed by content digest and ``spec.identity``). Vectors go straight into the
    one n×D matrix (and to the cache batch by batch): no second copy of the dataset's vectors is ever held. The
    misses are embedded on ``engine`` (:class:`~splitaudit.features.engine.Engine`; default: here, in
    :func:`iter_embedded`'s lanes) by the same batch function: on Ray, in actors that load the backbone once each.
    """
    from ..engine import resolve_engine
    from .litert import model_dir

    n = len(records)
    cached = cache.embeddings_for([digests[i] for i in rows], spec.identity) if cache is not None else {}
    todo = [i for i in rows if digests[i] not in cached]
    engine = resolve_engine(engine)
    # On a cluster each actor holds one CPU, so its interpreter gets one thread (not one per core of its machine);
    # here the interpreter is the first of iter_embedded's lanes, with a lane's threads.
    from ..runner import default_workers

    work = EmbedBatch(spec, max_pixels, model_dir=str(model_dir(getattr(cache, "directory", None))),
                      threads=1 if engine.distributed else lane_threads(default_workers()))
    if todo:
        with staged(LOAD_MODEL):  # seconds before the first batch: say so
            dim = work.backbone.dim
    else:
        dim = next(iter(cached.values())).shape[0] if cached else 1
    if progress:  # the stage starts now, with what the cache answered
        progress(len(rows) - len(todo))
    matrix = np.zeros((n, dim), dtype=np.float32)
    have = np.zeros(n, dtype=bool)
    for i in rows:
        v = cached.get(digests[i])
        if v is not None:
            matrix[i] = v
            have[i] = True
    del cached
    if todo:
        cols = {"path": np.empty(len(todo), dtype=object), "pixels": np.empty(len(todo), dtype=object)}
        for j, i in enumerate(todo):
            r = records[i]  # read once: a RecordTable makes the record when read
            cols["path"][j] = r.path
            if r.array_index >= 0:
                cols["pixels"][j] = arrays[r.split][r.array_index]
        idx = np.asarray(todo)
        unstored: list[int] = []  # rows computed, not yet written to the cache (written ~1k at a time)

        def store() -> None:
            if cache is not None and unstored:
                cache.store_embeddings([digests[i] for i in unstored], matrix[unstored].astype(np.float16), spec.identity)
            unstored.clear()

        batches = engine.iter_model(work, cols, batch_size=EMBED_BATCH,
                                                    local=lambda c: iter_embedded(work, c, batch_size=EMBED_BATCH))
        for s, out in batches:  # s: the batch's positions in todo (a slice here; any order on a cluster)
            ok = out["embedded"]
            matrix[idx[s]] = out["embedding"]  # float16 -> float32: the same numbers a warm run reads from the cache
            have[idx[s]] = ok
            unstored.extend(idx[s][ok].tolist())
            if len(unstored) >= 1024:
                store()
            if progress:
                progress(len(ok))
        store()
    # float16 storage loses ~1e-3 of norm: renormalise so inner products stay cosines (in place, a block at a time).
    for start in range(0, n, 4096):
        block = matrix[start : start + 4096]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block[...] = np.where(norms > 0, block / np.maximum(norms, 1e-12), 0)
    del work
    release_freed_memory()
    return matrix, have, len(todo)
