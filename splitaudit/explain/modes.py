"""Evaluate a Keras model with chosen layer groups in training mode: the measurements every decomposition uses.

Keras decides per call whether a layer runs in training mode. To split the gap between "training mode" and
"inference mode" into dropout, noise/augmentation and BatchNorm shares we switch *only* those layers to training
mode (the rest stay in inference mode) and measure; the shares then telescope exactly. BatchNorm layers update
their moving statistics when called in training mode, so every pass restores the non-trainable variables after.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Layer groups whose behaviour differs between training and inference, in the order they are switched off.
GROUPS = ("dropout", "noise", "batchnorm", "other")

_NOISE = {"GaussianNoise", "MixUp", "CutMix", "AugMix", "RandAugment", "Solarization", "Equalization"}


def layer_group(layer: Any) -> str | None:
    """Which group a leaf layer belongs to (``None``: it behaves the same in both modes)."""
    name = type(layer).__name__
    if "Dropout" in name:  # Dropout, SpatialDropout1D/2D/3D, AlphaDropout, GaussianDropout
        return "dropout"
    if name in _NOISE or name.startswith("Random"):  # GaussianNoise and the augmentation layers (RandomFlip...)
        return "noise"
    if "BatchNormalization" in name:
        return "batchnorm"
    if type(layer).__module__.startswith("keras."):
        # Built-in layers such as Dense and Conv2D accept `training` but ignore it; recurrent layers use it for
        # their internal dropout.
        if getattr(layer, "dropout", 0) or getattr(layer, "recurrent_dropout", 0):
            return "dropout"
        return None
    if getattr(layer, "_call_has_training_arg", False):
        return "other"  # a custom layer: it may behave differently, measure it
    return None


def leaf_layers(model: Any) -> list[Any]:
    """Every layer without sub-layers, nested models included (their layers are what training mode changes)."""
    out: list[Any] = []
    seen: set[int] = set()

    def walk(layer: Any) -> None:
        children = list(getattr(layer, "layers", None) or getattr(layer, "_layers", None) or [])
        if not children:
            if id(layer) not in seen:
                seen.add(id(layer))
                out.append(layer)
            return
        for child in children:
            walk(child)

    for child in getattr(model, "layers", []):
        walk(child)
    return out


def layers_by_group(model: Any) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {g: [] for g in GROUPS}
    for layer in leaf_layers(model):
        g = layer_group(layer)
        if g is not None:
            groups[g].append(layer)
    return groups


@contextlib.contextmanager
def forced_training(layers: Sequence[Any]) -> Iterator[None]:
    """Run ``layers`` in training mode whatever the model call says; put everything back afterwards."""
    patched = []
    try:
        for layer in layers:
            original = type(layer).call.__get__(layer)

            @functools.wraps(original)
            def call(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
                kwargs["training"] = True
                return __original(*args, **kwargs)

            # object.__setattr__: Keras' attribute tracking must not see a new attribute on the layer.
            object.__setattr__(layer, "call", call)
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


@dataclass(frozen=True)
class OutputKind:
    """How the model's outputs are scored: ``sparse`` (class index), ``onehot`` or ``binary``; logits or probabilities."""

    kind: str = "sparse"
    from_logits: bool = False


def per_sample(outputs: np.ndarray, y: np.ndarray, out: OutputKind) -> tuple[np.ndarray, np.ndarray]:
    """(correct 0/1, cross-entropy) per sample, as Keras' accuracy and crossentropy losses compute them."""
    import keras

    o = np.asarray(outputs, dtype=np.float32)
    if out.kind == "binary":
        o = o.reshape(len(o), -1)[:, 0]
        loss = keras.losses.binary_crossentropy(y.astype(np.float32)[:, None], o[:, None], from_logits=out.from_logits)
        pred = (o > 0) if out.from_logits else (o > 0.5)
        return (pred.astype(np.int64) == y).astype(np.float64), np.asarray(loss, np.float64).reshape(-1)
    o = o.reshape(len(o), -1)
    loss = keras.losses.sparse_categorical_crossentropy(y, o, from_logits=out.from_logits)
    return (o.argmax(axis=1) == y).astype(np.float64), np.asarray(loss, np.float64).reshape(-1)


@dataclass(frozen=True)
class Pass:
    """One evaluation of a split: mean accuracy, mean data loss (no penalty), and per-image values."""

    accuracy: float
    loss: float
    correct: np.ndarray
    losses: np.ndarray


def penalty(model: Any) -> float:
    """The L1/L2 penalty Keras adds to the loss (``model.losses``) at the current weights."""
    import keras

    return float(sum(float(keras.ops.convert_to_numpy(v)) for v in model.losses)) if model.losses else 0.0


def reseed(layers: Sequence[Any], seed: int) -> None:
    """Put every random layer's seed generator (dropout masks, noise, augmentation) in a state fixed by ``seed``.

    A loaded model's generators start from a seed drawn at load time (Keras draws it from Python's ``random``
    when the layer has none), so without this two runs draw different dropout masks.
    """
    for k, layer in enumerate(layers):
        gens = list(getattr(layer, "_seed_generators", None) or [])
        own = getattr(layer, "seed_generator", None)
        if own is not None and all(own is not g for g in gens):
            gens.append(own)
        for j, gen in enumerate(gens):
            state = getattr(gen, "state", None)
            if state is not None:
                value = np.asarray([(seed * 1_000_003 + k * 101 + j) % (2**31 - 1) + 1, 0])
                state.assign(value.astype(np.asarray(state.numpy()).dtype))


def _compiled(model: Any, training: Sequence[Any]) -> Any:
    """The model's forward pass with ``training`` layers forced on, as a TensorFlow graph kept on the model.

    Eager calls cost more than the small heads' arithmetic (94 batches x 3 passes per epoch); a graph per set of
    forced layers is traced once and reused every epoch (the weights are variables). It must be called inside
    ``forced_training(training)``: a retrace (a new batch shape) then sees the same forced layers.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda xb: model(xb, training=False)
    import tensorflow as tf

    cache = model.__dict__.get("_splitaudit_forward")
    if cache is None:
        cache = {}
        object.__setattr__(model, "_splitaudit_forward", cache)  # untracked: Keras must not see a new attribute
    key = tuple(sorted(id(layer) for layer in training))
    if key not in cache:
        cache[key] = tf.function(lambda xb: model(xb, training=False), reduce_retracing=True)
    return cache[key]


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, out: OutputKind, *, training: Sequence[Any] = (),
             batch_size: int = 32, seed: int = 0) -> Pass:
    """Score ``model`` on ``(x, y)`` with ``training`` layers in training mode (the rest in inference mode).

    In training mode BatchNorm normalises with each batch's statistics, so batches are the training batch size in
    a fixed shuffled order; the moving statistics it updates are restored afterwards. Random layers draw from
    generators reset from ``seed`` first (:func:`reseed`), so the same seed gives the same masks.
    """
    n = len(x)
    order = np.random.default_rng(seed).permutation(n) if training else np.arange(n)
    bs = batch_size if training else max(batch_size, 256)
    saved = [v.numpy() if hasattr(v, "numpy") else np.asarray(v) for v in model.non_trainable_variables] if training else None
    chunks = []
    try:
        if training:
            reseed(leaf_layers(model), seed)
        with forced_training(training):
            forward = _compiled(model, training)
            for s in range(0, n, bs):
                idx = order[s : s + bs]
                chunks.append((idx, np.asarray(forward(x[idx]))))
    finally:
        if saved is not None:
            for v, value in zip(model.non_trainable_variables, saved):
                v.assign(value)
    first = chunks[0][1]
    full = np.zeros((n, *first.shape[1:]), dtype=np.float32)
    for idx, o in chunks:
        full[idx] = o
    correct, losses = per_sample(full, y, out)
    return Pass(float(correct.mean()), float(losses.mean()), correct, losses)


def mode_passes(model: Any, x: np.ndarray, y: np.ndarray, out: OutputKind, *, batch_size: int = 32, seed: int = 0) -> list[tuple[str, Pass]]:
    """The telescoping chain on one split: all groups in training mode, then each group switched off in turn.

    Returns ``[("training", p0), ("dropout", p1), ("noise", p2), ("batchnorm", p3), ("other", p4)]`` where ``pk``
    has the first ``k`` groups in inference mode; ``p4`` is plain inference. Groups the model lacks repeat the
    previous pass instead of re-running it (their share is exactly zero).
    """
    groups = layers_by_group(model)
    result: list[tuple[str, Pass]] = []
    active = [layer for g in GROUPS for layer in groups[g]]
    prev = evaluate(model, x, y, out, training=active, batch_size=batch_size, seed=seed)
    result.append(("training", prev))
    for g in GROUPS:
        if groups[g]:
            active = [layer for layer in active if layer not in groups[g]]
            prev = evaluate(model, x, y, out, training=active, batch_size=batch_size, seed=seed)
        result.append((g, prev))
    return result


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed Python, NumPy, TensorFlow and Keras from ``seed`` and make TensorFlow's ops deterministic while inside.

    Op determinism is a process-wide TensorFlow switch: it is put back as it was on the way out.
    """
    import keras

    keras.utils.set_random_seed(seed)
    try:
        from tensorflow.python.framework import config as tf_config

        was = bool(tf_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):  # another backend or TensorFlow version: seeds only
        yield
        return
    if not was:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if not was:
            tf_config.disable_op_determinism()
