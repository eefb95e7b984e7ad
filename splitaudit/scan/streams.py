"""Streamed inputs: ``tf.data`` datasets (TFDS splits are ``tf.data`` datasets), Hugging Face ``datasets`` and lists of
PIL images.

A streamed split is read once, element by element (a batched ``tf.data`` dataset batch by batch), and every image is
written to a temporary folder as an encoded file: lossless PNG for pixels, or the original bytes where the source
holds encoded images (a Hugging Face ``Image`` column, a ``tf.string`` of JPEG bytes). The rest of the pipeline then
reads those files like any folder, so memory stays bounded by one batch and the feature cache finds unchanged images
by their content on the next run. The folder (a :class:`SpillStore`) is removed when the run ends.

Records are named by their position in the stream (``#000123.png``) and keep their label: a class name where the
source knows it (a ``ClassLabel`` column, ``image_dataset_from_directory``'s ``class_names``), else the label value.
TensorFlow and ``datasets`` are never imported here: a source can only be one of theirs if its library is loaded.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InvalidParameterError, SplitauditError, invalid_parameter
from .arrays import normalise_pixels
from .folders import group_of
from .records import ImageRecord

#: What ``audit`` accepts as one split, for error messages.
ACCEPTED = ("a folder, an (x, y) tuple of arrays, an x array, a tf.data.Dataset (TFDS splits included), "
            "a datasets.Dataset with an Image column, or a list of PIL images (or of (image, label) pairs)")

#: Hugging Face / TFDS column names tried, in order, for the label.
LABEL_KEYS = ("label", "labels")
#: Dict keys tried first for the image of a ``tf.data`` element (TFDS uses ``image``).
IMAGE_KEYS = ("image", "img", "images", "pixel_values", "x")
#: Encoded images written as they are (the features stage reads these formats); others are decoded and re-encoded.
_KEEP_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
#: PNG with light compression: the files live for one run, so writing speed matters more than their size.
_PNG_LEVEL = 1


class SpillStore:
    """One temporary folder for the encoded images of a run's streamed splits; :meth:`close` removes it."""

    def __init__(self, parent: str | None = None) -> None:
        self._parent = parent
        self._root: str | None = None
        self._count = 0

    def folder(self, split: str) -> str:
        """A new, empty folder for ``split`` (the temporary root is made on first use)."""
        if self._root is None:
            self._root = tempfile.mkdtemp(prefix="splitaudit-stream-", dir=self._parent)
        self._count += 1
        # Numbered, not named after the split: a split may be called "." or "..".
        path = os.path.join(self._root, f"{self._count}-{split}" if split.strip(".") else str(self._count))
        os.makedirs(path)
        return path

    def close(self) -> None:
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> SpillStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Stream:
    """A recognised streamed source: ``kind`` names it in reports (``tf.data``, ``datasets``, ``PIL``); ``items``
    yields ``(image, label)`` per element, an image being pixels (uint8 H×W×C), a PIL image or encoded bytes."""

    kind: str
    source: Any
    label_names: tuple[str, ...] | None = None

    def length(self) -> int:
        """The number of elements if the source knows it cheaply, else 0."""
        if self.kind == "tf.data":
            n = int(self.source.cardinality())
            batch = self.source.element_spec
            # A batched dataset counts batches, not images: its image count is unknown until read.
            return n if n >= 0 and not _tf_layout_is_batched(batch) else 0
        try:
            return len(self.source[0] if isinstance(self.source, tuple) else self.source)
        except TypeError:  # a datasets.IterableDataset
            return 0

    def items(self, split: str) -> Iterator[tuple[Any, Any]]:
        if self.kind == "tf.data":
            return _tf_items(self.source, split)
        if self.kind == "datasets":
            return _hf_items(self.source, split)
        return _pil_items(self.source)


def as_stream(source: Any) -> Stream | None:
    """The :class:`Stream` behind ``source``, or ``None`` when it is no streamed input (a folder or arrays)."""
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        if isinstance(source, tf.data.Dataset):
            return Stream("tf.data", source, _tf_class_names(source))
        if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], tf.data.Dataset) \
                and type(source[1]).__name__ == "DatasetInfo":
            # tfds.load(..., with_info=True) returns (ds, info): the info names the classes.
            return Stream("tf.data", source[0], _info_label_names(source[1]) or _tf_class_names(source[0]))
    hf = sys.modules.get("datasets")
    if hf is not None and isinstance(source, (hf.Dataset, hf.IterableDataset)):
        return Stream("datasets", source, _hf_label_names(source))
    if _is_pil_list(source):
        return Stream("PIL", source)
    return None


def stream_records(split: str, stream: Stream, store: SpillStore, *, group_pattern: re.Pattern[str] | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> list[ImageRecord]:
    """Write every element of ``stream`` into ``store`` and return one record per element, in stream order.
    ``progress(f"read {split}", done, total)`` follows it (``total`` 0 when the stream does not know its length)."""
    folder = store.folder(split)
    records: list[ImageRecord] = []
    pending: list[tuple[int, Any, Any]] = []
    total = stream.length()

    def flush() -> None:
        records.extend(pool.map(lambda e: _write(split, folder, e, stream, group_pattern), pending))
        pending.clear()
        if progress is not None:
            progress(f"read {split}", len(records), max(total, len(records)) if total else 0)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        # Elements are encoded a chunk at a time (Pillow's PNG encoder releases the GIL): memory stays one chunk.
        for image, label in stream.items(split):
            pending.append((len(records) + len(pending), image, label))
            if len(pending) >= 64:
                flush()
        flush()
    return records


def _write(split: str, folder: str, element: tuple[int, Any, Any], stream: Stream,
           group_pattern: re.Pattern[str] | None) -> ImageRecord:
    index, image, label = element
    if isinstance(image, str):  # a Hugging Face image stored as a local file: read in place, nothing copied
        data, suffix, path = None, os.path.splitext(image)[1].lower() or ".png", image
    else:
        data, suffix = _encode(image, split)
        path = os.path.join(folder, f"{index:06d}{suffix}")
        with open(path, "wb") as fh:
            fh.write(data)
    relpath = f"#{index:06d}{suffix}"
    # size -1: a streamed file's stat means nothing next run, so the cache keys it by content only.
    return ImageRecord(split=split, relpath=relpath, path=path, label=_label(label, stream.label_names),
                       group=group_of(relpath, group_pattern) if group_pattern is not None else None)


def _encode(image: Any, split: str) -> tuple[bytes, str]:
    """Encoded bytes and their file suffix: bytes in a format we read are kept as they are; pixels and other
    formats become PNG; bytes nobody can decode are kept too (under ``.png``), so the audit reports them."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        from ..features.decode import sniff

        fmt = sniff(data[:16])
        if fmt in _KEEP_FORMATS:
            return data, _KEEP_FORMATS[fmt]
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return _png(im), ".png"
        except Exception:  # noqa: BLE001 - any decoder error: the features stage reports the row as unreadable
            return data, ".png"
    if isinstance(image, Image.Image):
        return _png(image), ".png"
    return _png(_pixels_image(image, split)), ".png"


def _png(im: Image.Image) -> bytes:
    if im.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=_PNG_LEVEL)
    return buf.getvalue()


def _pixels_image(pixels: Any, split: str) -> Image.Image:
    a = normalise_pixels(np.asarray(pixels)[None], name=split)[0]  # one H×W[×C] image, uint8
    return Image.fromarray(a[..., 0], "L") if a.shape[-1] == 1 else Image.fromarray(np.ascontiguousarray(a), "RGB")


def _label(value: Any, names: Sequence[str] | None) -> str | None:
    """A label as text: a class name where the index has one; one-hot rows become their argmax."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return value
    a = np.asarray(value)
    if a.ndim == 1 and a.size == 1:
        a = a[0]
    elif a.ndim == 1:
        a = np.asarray(a.argmax())
    if a.ndim != 0:
        raise invalid_parameter("label", "a scalar, a one-hot row or a string", f"a label of shape {a.shape}")
    v = a.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if names is not None and isinstance(v, int) and 0 <= v < len(names):
        return names[v]
    return str(v)


# -- PIL lists -----------------------------------------------------------------------------------------------------


def _is_pil_list(source: Any) -> bool:
    """A list of PIL images, of ``(image, label)`` pairs, or an ``(images, labels)`` tuple whose images are PIL."""
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], (list, tuple)) and source[0]:
        return isinstance(source[0][0], Image.Image)
    if isinstance(source, list) and source:
        first = source[0]
        return isinstance(first, Image.Image) or (
            isinstance(first, tuple) and len(first) == 2 and isinstance(first[0], Image.Image))
    return False


def _pil_items(source: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(source, tuple):
        images, labels = source
        labels = list(labels) if labels is not None else [None] * len(images)
        if len(labels) != len(images):
            raise invalid_parameter("labels", f"{len(images)} labels (one per image)", f"{len(labels)} labels")
        pairs: Iterable[tuple[Any, Any]] = zip(images, labels)
    else:
        pairs = (e if isinstance(e, tuple) else (e, None) for e in source)
    for i, (image, label) in enumerate(pairs):
        if not isinstance(image, Image.Image):
            raise invalid_parameter(f"images[{i}]", "a PIL image (like the first element)", type(image).__name__)
        yield image, label


# -- tf.data -------------------------------------------------------------------------------------------------------


def _tf_class_names(ds: Any) -> tuple[str, ...] | None:
    names = getattr(ds, "class_names", None)  # set by keras.utils.image_dataset_from_directory
    return tuple(str(n) for n in names) if names else None


def _info_label_names(info: Any) -> tuple[str, ...] | None:
    try:
        names = info.features["label"].names
    except Exception:  # noqa: BLE001 - no label feature, or not a tfds DatasetInfo
        return None
    return tuple(str(n) for n in names) if names else None


def _tf_layout(spec: Any, split: str) -> tuple[Any, Any, bool]:
    """``(image getter, label getter, batched)`` for an ``element_spec``."""
    import tensorflow as tf

    def pick_image(specs: Mapping[str, Any]) -> str:
        for key in IMAGE_KEYS:
            if key in specs:
                return key
        for key, s in specs.items():
            if isinstance(s, tf.TensorSpec) and s.shape.rank in (2, 3, 4) and s.dtype != tf.string:
                return key
        raise invalid_parameter(split, f"dict elements with an image key ({', '.join(IMAGE_KEYS)})",
                                f"keys {sorted(specs)}")

    if isinstance(spec, Mapping):
        image_key = pick_image(spec)
        label_key = next((k for k in LABEL_KEYS if k in spec), None)
        image_spec = spec[image_key]
        get_image = lambda e: e[image_key]  # noqa: E731
        get_label = (lambda e: e[label_key]) if label_key else (lambda e: None)  # noqa: E731
    elif isinstance(spec, tuple):
        if not spec or not isinstance(spec[0], (tf.TensorSpec, tf.RaggedTensorSpec)):
            raise invalid_parameter(split, "tf.data elements (image, label) or {'image': ..., 'label': ...}", str(spec))
        image_spec = spec[0]
        get_image = lambda e: e[0]  # noqa: E731
        get_label = (lambda e: e[1]) if len(spec) > 1 else (lambda e: None)  # noqa: E731
    elif isinstance(spec, (tf.TensorSpec, tf.RaggedTensorSpec)):
        image_spec = spec
        get_image, get_label = (lambda e: e), (lambda e: None)  # noqa: E731
    else:
        raise invalid_parameter(split, "tf.data elements (image, label) or {'image': ..., 'label': ...}", str(spec))
    shape = image_spec.shape
    if image_spec.dtype == tf.string:
        if shape.rank not in (0, 1):
            raise invalid_parameter(split, "encoded images as scalar strings", f"strings of shape {shape}")
        return get_image, get_label, shape.rank == 1
    rank, last = shape.rank, (shape[-1] if shape.rank else None)
    if rank == 4 or (rank == 3 and last not in (1, 3, 4)):
        return get_image, get_label, True
    if rank in (2, 3):
        return get_image, get_label, False
    raise invalid_parameter(split, "images shaped (H, W), (H, W, C) or batches (N, H, W[, C])", f"elements of shape {shape}")


def _tf_layout_is_batched(spec: Any) -> bool:
    try:
        return _tf_layout(spec, "split")[2]
    except InvalidParameterError:
        return False  # reported when the elements are read


def _tf_items(ds: Any, split: str) -> Iterator[tuple[Any, Any]]:
    import tensorflow as tf

    n = int(ds.cardinality())
    if n == int(tf.data.INFINITE_CARDINALITY):
        raise invalid_parameter(split, "a finite tf.data.Dataset", "an infinite one (.repeat() without a count)")
    get_image, get_label, batched = _tf_layout(ds.element_spec, split)
    for element in ds.as_numpy_iterator():
        images, labels = get_image(element), get_label(element)
        if not batched:
            yield images, labels
            continue
        if images.dtype.kind != "O" and images.dtype.kind != "S":
            images = normalise_pixels(images, name=split)  # one scale decision per batch, not per image
        for i in range(len(images)):
            yield images[i], None if labels is None else labels[i]


# -- Hugging Face datasets -----------------------------------------------------------------------------------------


def _hf_columns(ds: Any) -> tuple[str, str | None]:
    import datasets

    features = ds.features or {}
    image = next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    if image is None:
        raise invalid_parameter("datasets.Dataset", "a dataset with an Image column", f"columns {list(features)}")
    label = next((k for k in LABEL_KEYS if k in features), None)
    return image, label


def _hf_label_names(ds: Any) -> tuple[str, ...] | None:
    import datasets

    features = ds.features or {}
    label = next((k for k in LABEL_KEYS if k in features), None)
    if label is not None and isinstance(features[label], datasets.ClassLabel):
        return tuple(features[label].names)
    return None


def _hf_items(ds: Any, split: str) -> Iterator[tuple[Any, Any]]:
    import datasets

    image, label = _hf_columns(ds)
    # The encoded bytes (or the local file) as stored: nothing is decoded here, and a broken image stays a finding.
    raw = ds.select_columns([image] + ([label] if label else [])).cast_column(image, datasets.Image(decode=False))
    for batch in raw.iter(batch_size=64):
        labels = batch[label] if label else [None] * len(batch[image])
        for value, lab in zip(batch[image], labels):
            if value is None:
                yield b"", lab  # a missing image: an empty file, reported as unreadable
            elif value.get("bytes") is not None:
                yield value["bytes"], lab
            elif value.get("path") and os.path.isfile(value["path"]):
                yield os.path.abspath(value["path"]), lab
            else:
                raise SplitauditError(f"split {split!r}: an image of the datasets.Dataset has neither bytes nor a local "
                                      f"file ({value.get('path')!r})")
