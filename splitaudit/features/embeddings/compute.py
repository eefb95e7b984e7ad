"""Embeddings of a dataset: decode and resize in threads while the network runs, cache by content digest.

``EmbedBatch`` is the unit of work in Ray Data's callable-class form (the model is loaded once per worker, then
called on batches of records). Locally, :func:`embed_rows` runs it in this process with a bounded read-ahead of
decoded batches on a thread pool: Pillow releases the GIL while decoding and resizing, so the CPU work overlaps
inference and memory stays at a few batches whatever the dataset size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .. import decode
from ..extract import DEFAULT_MAX_PIXELS, _read
from .backbones import Backbone, BackboneSpec, load_backbone

Progress = Callable[[int], None]


def auto_image_size(widths: np.ndarray, heights: np.ndarray) -> int:
    """Input side for the network: 224 for ordinary photos; small images (CIFAR, MNIST) at 2x, not upscaled to 224.

    A 32-px image blown up to 224 costs 49x the compute and adds no detail the network can use.
    """
    if len(widths) == 0:
        return 224
    side = float(np.median(np.maximum(widths, heights)))
    if side >= 160:
        return 224
    return int(min(224, max(64, 32 * np.ceil(2 * side / 32))))


def load_rgb(path: str | None, pixels: np.ndarray | None, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray | None:
    """The image as the network sees it (S×S×3 uint8, squashed, EXIF-oriented), or ``None`` if it cannot be decoded."""
    try:
        if pixels is not None:
            im = Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")
        else:
            data = _read(path)  # type: ignore[arg-type]
            fmt = decode.sniff(data[:16])
            if fmt is None:
                return None
            im = decode.open_image(data, fmt, max_pixels=max_pixels)
            if fmt == "JPEG":
                # Decode at the smallest DCT scale still >= the network input: resizing costs more than decoding.
                im.draft("RGB", (size, size))
            im = decode.load(im, draft_size=None)
        rgb = decode.to_rgb(im)
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0), dtype=np.uint8)
    except (decode.DecodeFailure, OSError, ValueError):
        return None


def mirror(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images[:, :, ::-1])


@dataclass
class EmbedBatch:
    """Embeds a batch of records (columns ``path``, ``pixels``); the backbone is loaded on first call."""

    spec: BackboneSpec
    max_pixels: int = DEFAULT_MAX_PIXELS
    _backbone: Backbone | None = field(default=None, repr=False)

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone(self.spec)
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
            out[ok] = self.backbone.embed(stack).astype(np.float16)
        return {"embedding": out, "embedded": ok}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.embed_decoded(*self.decode(batch))


#: Images per network call (the same batches locally and on Ray, so the same floats).
EMBED_BATCH = 32


def embed_rows(
    work: EmbedBatch,
    columns: dict[str, np.ndarray],
    *,
    batch_size: int = EMBED_BATCH,
    threads: int = 2,
    read_ahead: int = 3,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Run ``work`` over ``columns`` in batches, decoding up to ``read_ahead`` batches ahead on ``threads`` threads."""
    n = len(columns["path"])
    slices = [slice(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    outputs: list[dict[str, np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list[Future[tuple[np.ndarray, np.ndarray]]] = []
        it = iter(slices)

        def submit() -> None:
            s = next(it, None)
            if s is not None:
                pending.append(pool.submit(work.decode, {k: v[s] for k, v in columns.items()}))

        for _ in range(read_ahead):
            submit()
        while pending:
            stack, ok = pending.pop(0).result()
            submit()  # keep the read-ahead full while the network runs on this batch
            outputs.append(work.embed_decoded(stack, ok))
            if progress:
                progress(len(ok))
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
    engine: object | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Embeddings (float32, L2-normalised, n×D) for ``rows`` of ``records``; zero rows where decoding failed.

    Returns the matrix aligned with ``records``, a mask of rows that have an embedding, and the number computed
    (the rest came from the cache, keyed by content digest and ``spec.identity``). The misses are embedded on
    ``engine``: here with a decoding read-ahead, or on Ray actors (a GPU each where there are GPUs).
    """
    from ..engine import resolve_engine

    n = len(records)
    cached = cache.embeddings_for([digests[i] for i in rows], spec.identity) if cache is not None else {}
    todo = [i for i in rows if digests[i] not in cached]
    work = EmbedBatch(spec, max_pixels)
    dim = next(iter(cached.values())).shape[0] if cached else None
    computed: dict[str, np.ndarray] = {}
    if todo:
        cols = {"path": np.array([records[i].path for i in todo], dtype=object), "pixels": np.empty(len(todo), dtype=object)}
        for j, i in enumerate(todo):
            if records[i].array_index >= 0:
                cols["pixels"][j] = arrays[records[i].split][records[i].array_index]
        if progress and cached:
            progress(len(rows) - len(todo))
        computed = resolve_engine(engine).map_model(  # type: ignore[arg-type]
            work, cols, batch_size=EMBED_BATCH, progress=progress, local=lambda c: embed_rows(work, c, progress=progress))
        dim = computed["embedding"].shape[1]
        if cache is not None:
            keep = computed["embedded"]
            cache.store_embeddings([digests[i] for i, k in zip(todo, keep) if k], computed["embedding"][keep], spec.identity)
    matrix = np.zeros((n, dim or 1), dtype=np.float32)
    have = np.zeros(n, dtype=bool)
    for i in rows:
        v = cached.get(digests[i])
        if v is not None:
            matrix[i] = v
            have[i] = True
    if todo:
        idx = np.asarray(todo)
        matrix[idx] = computed["embedding"].astype(np.float32)
        have[idx] = computed["embedded"]
    # float16 storage loses ~1e-3 of norm: renormalise so inner products stay cosines.
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = np.where(norms > 0, matrix / np.maximum(norms, 1e-12), 0).astype(np.float32)
    return matrix, have, len(todo)
