"""The backbone as a LiteRT (TensorFlow Lite) flatbuffer, run with XNNPACK: the fast, small embedding path.

The Keras network (:mod:`.backbones`) is the reference; it is converted once, offline, with TensorFlow's converter
into a model that takes uint8 RGB batches and returns L2-normalised vectors (preprocessing and normalisation are in
the graph). The conversion runs in a child process, so the process that embeds never imports TensorFlow: it loads
the ``ai-edge-litert`` interpreter (about 10 MiB) instead of TensorFlow (about 600 MiB and a thread pool that makes
forking later pool workers unsafe). The file is kept under the cache folder, keyed by the weights'
digest, the converter's version, the quantization and the input side, and written atomically.

Runtime: ``ai_edge_litert.interpreter.Interpreter`` (LiteRT, the successor of ``tf.lite.Interpreter``, which warns
that it will be removed); ``tf.lite.Interpreter`` only where the LiteRT package is missing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import SplitauditError
from .backbones import DEFAULT_BACKBONE, BackboneSpec, _file_digest, _quiet_stderr

log = logging.getLogger("splitaudit")

# The quantization (``BackboneSpec.quantization``) defaults to float32 by measurement (docs/performance.md): it keeps
# the Keras numbers (cosine 1.0000); float16 halves the file (cosine >= 0.9999) but is no faster on CPUs without
# native fp16 (XNNPACK widens the weights at load); int8 fell to cosine 0.92 on real photos, below the 0.99 bar.
MODEL_DIR_ENV = "SPLITAUDIT_MODEL_DIR"
FORMAT = "litert-v2"  # bump when the converted graph changes (inputs, fused ops)


def model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where converted models live: ``$SPLITAUDIT_MODEL_DIR``, else ``models/`` in the cache folder."""
    if os.environ.get(MODEL_DIR_ENV):
        return Path(os.environ[MODEL_DIR_ENV])
    if cache_dir is None:
        from ..cache import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "models"


def _weights_identity(spec: BackboneSpec) -> str:
    """What the weights are, by content: the .pth file's digest for the default network, else the local file's."""
    if spec.weights is not None and spec.weights != "imagenet":
        return "sha256:" + _file_digest(spec.weights)
    if spec.name == DEFAULT_BACKBONE:
        from .efficientnet_lite import find_weights_file

        try:
            return "sha256:" + _file_digest(find_weights_file())
        except FileNotFoundError as exc:
            raise SplitauditError(str(exc)) from exc
    return "keras-imagenet:" + _version("keras")  # Keras' own download, named by the Keras release


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def model_key(spec: BackboneSpec) -> str:
    """The converted file's name: network, side, quantization and a digest of everything the file depends on."""
    quantization = spec.quantization
    parts = [FORMAT, spec.name, str(spec.image_size), quantization, _weights_identity(spec), "tensorflow=" + _version("tensorflow")]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"{spec.name}-{spec.image_size}-{quantization}-{digest}.tflite"


def ensure_model(spec: BackboneSpec, directory: str | os.PathLike[str] | None = None) -> Path:
    """The converted model's path, converting it first (in a child process, 15-40 s) if it is not cached."""
    folder = Path(directory) if directory is not None else model_dir()
    path = folder / model_key(spec)
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(folder)
    except OSError:  # a read-only cache folder: convert into a private temporary folder instead
        folder = Path(tempfile.gettempdir()) / f"splitaudit-models-{os.getuid() if hasattr(os, 'getuid') else 0}"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / path.name
        if path.is_file():
            return path
    log.info("converting %s to LiteRT (%s), once: %s", spec.name, spec.quantization, path)
    root = str(Path(__file__).resolve().parents[3])  # the folder holding the splitaudit package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    args = json.dumps({"name": spec.name, "weights": spec.weights, "image_size": spec.image_size,
                       "quantization": spec.quantization, "out": str(path)})
    # A child process: TensorFlow's memory and threads end with it. Interrupted, subprocess.run kills and reaps it.
    done = subprocess.run([sys.executable, "-m", __name__, args], env=env, capture_output=True, text=True)
    if done.returncode != 0 or not path.is_file():
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise SplitauditError(last.removeprefix("splitaudit: error: "))
    return path


def convert(spec: BackboneSpec, out: Path) -> None:
    """Convert the Keras backbone to a LiteRT flatbuffer at ``out`` (atomically). Imports TensorFlow."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from .backbones import load_backbone

    backbone = load_backbone(spec)
    size = spec.image_size

    # Not normalised in the graph: LiteRT's L2_NORMALIZATION has an epsilon of 1e-6 that shrinks small vectors
    # (cosine 0.003 to Keras on a randomly initialised MobileNetV3); the host divides by the norm instead.
    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def embed(x: Any) -> Any:
        return backbone.graph(x, normalize=False)

    # Weights frozen into constants: left as resource variables (as Keras 3 keeps BatchNorm statistics in some
    # networks) the converted model reads uninitialised variables, and XNNPACK returns NaN without an error.
    frozen = convert_variables_to_constants_v2(embed.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if spec.quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif spec.quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([b] for b in calibration_images(size))
    blob = converter.convert()
    fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".part", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the model from other users of a shared cache
        os.replace(tmp, out)  # readers see the whole file or none
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def calibration_images(size: int, per_photo: int = 12, batch: int = 8) -> list[np.ndarray]:
    """Batches of real photos for int8 calibration: square crops of the scikit-image / scikit-learn samples."""
    from PIL import Image

    photos: list[np.ndarray] = []
    try:
        from sklearn.datasets import load_sample_images

        photos += list(load_sample_images().images)
    except ImportError:
        pass
    try:
        import skimage.data

        photos += [getattr(skimage.data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket")]
    except ImportError:
        pass
    if not photos:
        raise SplitauditError("int8 calibration needs scikit-learn or scikit-image sample photos")
    rng = np.random.default_rng(0)
    tiles = []
    for p in photos:
        im = Image.fromarray(p).convert("RGB")
        w, h = im.size
        for _ in range(per_photo):
            s = int(min(w, h) * rng.uniform(0.3, 1.0))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            tiles.append(np.asarray(im.crop((x, y, x + s, y + s)).resize((size, size), Image.Resampling.BILINEAR)))
    return [np.stack(tiles[i : i + batch]) for i in range(0, len(tiles), batch)]


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the LiteRT package has no wheel for this platform: TensorFlow's own (deprecated) copy
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with _quiet_stderr():
            import tensorflow as tf
        return tf.lite.Interpreter
    return Interpreter


class LiteBackbone:
    """A converted network: ``embed(uint8 N×S×S×3) -> float32 N×D``, rows L2-normalised, like :class:`Backbone`."""

    def __init__(self, spec: BackboneSpec, path: str | os.PathLike[str], threads: int | None = None) -> None:
        from ..runner import default_workers

        self.spec = spec
        self.path = Path(path)
        with _quiet_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." goes to fd 2
            self._interp = _interpreter_class()(model_path=str(path), num_threads=threads or default_workers())
            self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]["index"]
        out = self._interp.get_output_details()[0]
        self._output = out["index"]
        self.dim = int(out["shape"][-1])
        self._batch = int(self._interp.get_input_details()[0]["shape"][0])

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed uint8 RGB images (N×S×S×3); rows come back L2-normalised."""
        n = len(images)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        if n != self._batch:  # XNNPACK re-plans for a new batch size; the weights stay packed
            self._interp.resize_tensor_input(self._input, [n, *images.shape[1:]])
            self._interp.allocate_tensors()
            self._batch = n
        self._interp.set_tensor(self._input, np.ascontiguousarray(images, dtype=np.uint8))
        self._interp.invoke()
        out = np.array(self._interp.get_tensor(self._output), dtype=np.float32).reshape(n, -1)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_lite_backbone(spec: BackboneSpec, directory: str | os.PathLike[str] | None = None,
                       threads: int | None = None) -> LiteBackbone:
    """The converted network, ready to embed (converting it on first use)."""
    path = ensure_model(spec, directory)
    try:
        return LiteBackbone(spec, path, threads)
    except (RuntimeError, ValueError) as exc:  # a damaged file (a disk error, a foreign file under our name)
        log.warning("converted model %s is unreadable (%s); converting it again", path, exc)
        path.unlink(missing_ok=True)
        return LiteBackbone(spec, ensure_model(spec, directory), threads)


def _main(argv: list[str]) -> int:
    """Child-process entry point of :func:`ensure_model`: convert one model, errors as one line on stderr."""
    job = json.loads(argv[0])
    try:
        spec = BackboneSpec(job["name"], job["weights"], job["image_size"], job["quantization"])
        convert(spec, Path(job["out"]))
    except SplitauditError as exc:
        print(f"splitaudit: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        print(f"cannot convert {job['name']} to LiteRT: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover - run by ensure_model in a child process
    sys.exit(_main(sys.argv[1:]))
