"""CNN backbones for embeddings: EfficientNet-Lite0 offline by default, any ``keras.applications`` model by name.

A :class:`BackboneSpec` is plain data (picklable, hashable, part of the cache key); :func:`load_backbone` turns it
into a :class:`Backbone` that embeds uint8 RGB batches into L2-normalised vectors. Keras is imported only here,
and only when a backbone is actually loaded: a hash-only audit never pays TensorFlow's start-up.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import sys
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import SplitauditError, invalid_parameter

DEFAULT_BACKBONE = "efficientnet_lite0"
NONE = "none"

# name -> (keras.applications class, module holding its preprocess_input)
KERAS_APPLICATIONS: dict[str, tuple[str, str]] = {
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2"),
    "mobilenet_v3_small": ("MobileNetV3Small", "mobilenet_v3"),
    "mobilenet_v3_large": ("MobileNetV3Large", "mobilenet_v3"),
    "efficientnet_b0": ("EfficientNetB0", "efficientnet"),
    "efficientnet_b1": ("EfficientNetB1", "efficientnet"),
    "efficientnet_b2": ("EfficientNetB2", "efficientnet"),
    "efficientnet_b3": ("EfficientNetB3", "efficientnet"),
    "efficientnet_v2_b0": ("EfficientNetV2B0", "efficientnet_v2"),
    "efficientnet_v2_s": ("EfficientNetV2S", "efficientnet_v2"),
    "resnet50": ("ResNet50", "resnet"),
    "resnet50_v2": ("ResNet50V2", "resnet_v2"),
    "densenet121": ("DenseNet121", "densenet"),
    "convnext_tiny": ("ConvNeXtTiny", "convnext"),
    "inception_v3": ("InceptionV3", "inception_v3"),
    "xception": ("Xception", "xception"),
    "vgg16": ("VGG16", "vgg16"),
}
BACKBONES = (DEFAULT_BACKBONE, *sorted(KERAS_APPLICATIONS), NONE)


#: How the converted (LiteRT) network stores its weights; see :mod:`.litert` for the measurements behind the default.
QUANTIZATIONS = ("float32", "float16", "int8")
DEFAULT_QUANTIZATION = "float32"


@dataclass(frozen=True)
class BackboneSpec:
    """Which network, which weights (``None``: the default for that network), the input side in pixels, and the
    quantization of the converted network."""

    name: str = DEFAULT_BACKBONE
    weights: str | None = None
    image_size: int = 224
    quantization: str = DEFAULT_QUANTIZATION

    def __post_init__(self) -> None:
        if self.name not in BACKBONES:
            raise invalid_parameter("backbone", list(BACKBONES), self.name)
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or not 32 <= self.image_size <= 1024:
            raise invalid_parameter("image_size", "an int in [32, 1024]", self.image_size)
        if self.weights is not None and self.weights != "imagenet" and not os.path.isfile(self.weights):
            raise invalid_parameter("weights", "'imagenet' or the path of an existing weights file", self.weights)
        if self.quantization not in QUANTIZATIONS:
            raise invalid_parameter("quantization", list(QUANTIZATIONS), self.quantization)

    @property
    def enabled(self) -> bool:
        return self.name != NONE

    @cached_property
    def identity(self) -> str:
        """What the embeddings depend on: network, weights (by content digest for local files) and input size."""
        weights = self.weights or "default"
        if self.weights and self.weights != "imagenet":
            weights = "sha256:" + _file_digest(self.weights)[:16]
        # float32 conversion reproduces the Keras numbers (cosine 1.0000), so it keeps the Keras identity: caches and
        # reports made before the LiteRT path stay valid. A quantized network is another model.
        quant = "" if self.quantization == "float32" else f":{self.quantization}"
        return f"{self.name}:{weights}:{self.image_size}{quant}:v1"


def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _keras() -> Any:
    """Import Keras (and its TensorFlow backend) once, without TensorFlow's start-up chatter on stderr."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    # oneDNN made CNN inference 1.6-1.75x faster on these CPUs where a TF build leaves it off.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _quiet_stderr():
            import keras
    except ImportError as exc:
        raise SplitauditError(
            "embeddings need Keras with a backend (pip install tensorflow, or the complete pip install splitaudit); "
            "or run with --backbone none (hash and pixel evidence only, as the splitaudit-hash hook does)"
        ) from exc
    return keras


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """Send file descriptor 2 to /dev/null for a moment.

    TensorFlow's C++ runtime prints absl and oneDNN banners while it loads, before any logging setting applies;
    they would break our one-line error messages and clutter reports. Python exceptions are unaffected.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Backbone:
    """A loaded network: ``embed(uint8 N×S×S×3) -> float32 N×D``, rows L2-normalised."""

    def __init__(self, spec: BackboneSpec, model: Any, preprocess: Any, affine: tuple[float, float] | None = None,
                 tensor_preprocess: Any = None) -> None:
        self.spec = spec
        self.model = model
        self._preprocess = preprocess
        # ``affine`` = (scale, offset) is the preprocessing as x * scale + offset, when it has that form;
        # ``tensor_preprocess`` is the same preprocessing on (TensorFlow) tensors otherwise.
        self._affine = affine
        self._tensor_preprocess = tensor_preprocess
        self.dim = int(np.prod(model.outputs[0].shape[1:]))
        # The network alone on preprocessed float input (what benchmarks call the raw forward pass).
        self._forward = self._compile()
        # uint8 in, L2-normalised vectors out, all in one graph: normalising 32x224x224x3 floats in NumPy and
        # copying them into TensorFlow cost ~12% of the forward pass on CPU.
        self._fused = self._compile_fused() if affine is not None else None

    def graph(self, x: Any, normalize: bool = True) -> Any:
        """uint8 images (a TensorFlow tensor) -> vectors (L2-normalised if ``normalize``), traceable by
        ``tf.function``: what the fused Keras path and (unnormalised) the LiteRT conversion (:mod:`.litert`) run."""
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        if self._affine is not None:
            x = x * self._affine[0] + self._affine[1]
        elif self._tensor_preprocess is not None:
            x = self._tensor_preprocess(x)
        y = self.model(x, training=False)
        y = tf.reshape(y, [-1, self.dim])  # a static width: the converted model's output shape says D
        return tf.math.l2_normalize(y, axis=1, epsilon=1e-24) if normalize else y

    def _compile(self) -> Any:
        keras = _keras()
        backend = keras.backend.backend()
        model = self.model
        if backend == "tensorflow":
            import tensorflow as tf

            # A tf.function call beats model.predict (no per-call callbacks/data adapters); no XLA: 5-6x slower on CPU.
            fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            return lambda x: fn(tf.convert_to_tensor(x)).numpy()
        if backend == "jax":
            import jax

            state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
            jitted = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
            return lambda x: np.asarray(jitted(state[0], state[1], x))
        return lambda x: np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))

    def _compile_fused(self) -> Any:
        if _keras().backend.backend() != "tensorflow":
            return None
        import tensorflow as tf

        fn = tf.function(self.graph, reduce_retracing=True)
        return lambda x: fn(tf.convert_to_tensor(x, dtype=tf.uint8)).numpy()

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed uint8 RGB images (N×S×S×3); rows come back L2-normalised."""
        if self._fused is not None:
            return np.asarray(self._fused(np.ascontiguousarray(images, dtype=np.uint8)), dtype=np.float32)
        x = self._preprocess(images)
        out = np.asarray(self._forward(x), dtype=np.float32).reshape(len(images), -1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


@functools.lru_cache(maxsize=2)
def load_backbone(spec: BackboneSpec) -> Backbone:
    """Load the network and its weights, or raise a :class:`SplitauditError` saying how to supply them.

    Kept per process (specs are immutable): a second audit in one session reuses the compiled network.
    TensorFlow's device set-up chatter (e.g. 'failed call to cuInit' on machines without a GPU) is silenced.
    """
    with _quiet_stderr():
        return _load_backbone(spec)


def _load_backbone(spec: BackboneSpec) -> Backbone:
    if not spec.enabled:
        raise SplitauditError("no backbone: embeddings are turned off (--backbone none)")
    size = spec.image_size
    if spec.name == DEFAULT_BACKBONE:
        from .efficientnet_lite import MEAN_RGB, STD_RGB, load_efficientnet_lite0, preprocess

        _keras()
        try:
            model = load_efficientnet_lite0(include_top=False, weights_path=spec.weights, input_shape=(size, size, 3))
        except FileNotFoundError as exc:
            raise SplitauditError(str(exc)) from exc
        except ValueError as exc:
            raise SplitauditError(f"cannot load EfficientNet-Lite0 weights: {exc}") from exc
        # (x/255 - mean)/std with mean 127/255 and std 128/255: x/128 - 127/128 (exact in float32).
        affine = (1.0 / (255.0 * STD_RGB[0]), -MEAN_RGB[0] / STD_RGB[0])
        return Backbone(spec, model, preprocess, affine=affine)

    keras = _keras()
    cls_name, module = KERAS_APPLICATIONS[spec.name]
    cls = getattr(keras.applications, cls_name)
    prep = getattr(getattr(keras.applications, module), "preprocess_input")
    weights = spec.weights or "imagenet"
    try:
        # Keras prints download progress on stdout, which must stay clean for --format json.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "input_shape is not 224": a choice we make on purpose
            model = cls(include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg")
    except Exception as exc:  # keras raises bare Exception for a failed download
        hint = (
            f"download the {cls_name} 'notop' ImageNet weights on a machine with internet and pass --weights PATH, "
            f"or use the offline default --backbone {DEFAULT_BACKBONE}"
        )
        raise SplitauditError(f"cannot load {weights!r} weights for {spec.name}: {str(exc).splitlines()[0][:200]}; {hint}") from exc
    return Backbone(spec, model, lambda x: prep(np.asarray(x, dtype=np.float32)), tensor_preprocess=prep)
