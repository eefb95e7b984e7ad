"""The user's own model: load it, feed it their images the way it evidently expects, diagnose BatchNorm and scale.

Input scale: we try the pixel ranges networks are usually trained on ([0, 1], [-1, 1], [0, 255]) and keep the one
the model scores best on in inference mode (unless the caller says which). A model without a Rescaling or
Normalization layer that scores best on raw [0, 255] pixels was trained on unnormalised inputs: flagged.

BatchNorm: for every BatchNormalization layer, its input's batch statistics on the user's training images are
compared with its moving averages (the mean shift in units of the moving standard deviation, and the variance
ratio). Large differences mean inference mode normalises with statistics the data does not have.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..errors import SplitauditError, invalid_parameter
from .modes import OutputKind, evaluate

SCALES = {"0-1": (1 / 255.0, 0.0), "-1-1": (1 / 127.5, -1.0), "0-255": (1.0, 0.0)}
#: A BatchNorm layer lags when its moving mean is this many moving standard deviations off the batch mean, or its
#: moving variance this factor off the batch variance (median over channels).
BN_SHIFT = 0.5
BN_VAR_FACTOR = 2.0
SCALE_SAMPLE = 512


@dataclass(frozen=True)
class BatchNormLayer:
    """One BatchNorm layer's moving statistics against the batch statistics of the user's training images."""

    name: str
    momentum: float
    mean_shift: float  # median over channels of |batch mean - moving mean| / moving std
    variance_ratio: float  # median over channels of batch variance / moving variance
    lagging: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "momentum": self.momentum, "mean_shift": self.mean_shift,
                "variance_ratio": self.variance_ratio, "lagging": self.lagging}


@dataclass(frozen=True)
class InputScale:
    """Which pixel range the model was evidently trained on, and whether that is a problem."""

    chosen: str
    evident: str
    accuracy_by_scale: tuple[tuple[str, float], ...]
    normalises_itself: bool  # a Rescaling/Normalization layer before the first weighted layer
    flagged: bool
    message: str
    batchnorm_fit: tuple[tuple[str, float], ...] = ()  # scale -> residual of the first BatchNorm's moving statistics

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "evident": self.evident, "accuracy_by_scale": dict(self.accuracy_by_scale),
                "normalises_itself": self.normalises_itself, "flagged": self.flagged, "message": self.message,
                "batchnorm_fit": dict(self.batchnorm_fit)}


@dataclass(frozen=True)
class ModelDiagnosis:
    path: str
    input_shape: tuple[int, ...]
    output_kind: str
    input_scale: InputScale
    batchnorm: tuple[BatchNormLayer, ...]
    optimizer_steps: int | None
    groups: tuple[tuple[str, int], ...]  # layer group -> number of layers with a training mode
    regularizers: tuple[tuple[str, str, float], ...] = ()  # (layer, kind, strength)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "input_shape": list(self.input_shape), "output_kind": self.output_kind,
                "input_scale": self.input_scale.to_dict(), "batchnorm": [b.to_dict() for b in self.batchnorm],
                "optimizer_steps": self.optimizer_steps, "layer_groups": dict(self.groups),
                "regularizers": [list(r) for r in self.regularizers]}


def load_model(path: str | os.PathLike[str]) -> Any:
    from ..features.embeddings.backbones import _keras, _quiet_stderr

    keras = _keras()
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise invalid_parameter("model", "the path of a saved Keras model (.keras or .h5)", p)
    try:
        with _quiet_stderr():
            return keras.models.load_model(p, compile=True, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, OSError, TypeError... for a bad file
        raise SplitauditError(f"cannot load Keras model {p!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc


def input_shape(model: Any) -> tuple[int, int, int]:
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else ()
    if len(shape) != 3 or shape[-1] not in (1, 3) or not all(isinstance(s, int) for s in shape):
        raise SplitauditError(f"the model's input must be an image batch (H, W, 1 or 3) with a fixed size; got {shape}")
    return shape  # type: ignore[return-value]


def output_kind(model: Any, classes: int) -> OutputKind:
    """How to score the outputs, from the compiled loss (else softmax/sigmoid of the last layer)."""
    units = int(model.outputs[0].shape[-1])
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else type(loss).__name__ if loss is not None else ""
    from_logits = bool(getattr(loss, "from_logits", False)) if not isinstance(loss, str) else False
    if loss is None or not name:
        act = getattr(model.layers[-1], "activation", None)
        from_logits = getattr(act, "__name__", "") not in ("softmax", "sigmoid")
    if units == 1:
        if classes != 2:
            raise SplitauditError(f"the model has one output unit but the data has {classes} classes")
        return OutputKind("binary", from_logits)
    if units != classes:
        raise SplitauditError(f"the model has {units} outputs but the data has {classes} classes")
    return OutputKind("sparse", from_logits)


def load_images(records: list[Any], arrays: dict, shape: tuple[int, int, int], max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N×H×W×C at the model's input size (as compute.load_rgb resizes), and the mask of decodable rows."""
    from ..features.embeddings.compute import load_rgb

    h, w, c = shape
    out = np.zeros((len(records), h, w, c), np.uint8)
    ok = np.zeros(len(records), bool)
    for i, r in enumerate(records):
        px = arrays[r.split][r.array_index] if r.array_index >= 0 else None
        rgb = load_rgb(r.path, px, max(h, w), max_pixels=max_pixels)
        if rgb is None:
            continue
        if h != w:
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
        out[i] = np.asarray(Image.fromarray(rgb).convert("L"))[..., None] if c == 1 else rgb
        ok[i] = True
    return out, ok


def scaled(images: np.ndarray, scale: str) -> np.ndarray:
    mul, add = SCALES[scale]
    return images.astype(np.float32) * np.float32(mul) + np.float32(add)


def _normalises_itself(model: Any) -> bool:
    from .modes import leaf_layers

    for layer in leaf_layers(model):
        name = type(layer).__name__
        if name in ("Rescaling", "Normalization"):
            return True
        if layer.weights and name not in ("BatchNormalization",):
            return False  # the first weighted layer sees whatever it was fed
    return False


def _single_input(model: Any) -> Any:
    """The model's input tensor (not a one-element list: Keras warns when called with a bare tensor then)."""
    inputs = model.inputs
    return inputs[0] if isinstance(inputs, (list, tuple)) and len(inputs) == 1 else inputs


def _first_batchnorm_fit(model: Any, images: np.ndarray) -> dict[str, float]:
    """How well the first BatchNorm layer's moving statistics fit the data at each scale (relative residual).

    From its initial state (mean 0, variance 1) a moving average after training on inputs with batch statistics
    (mu, var) is (a * mu, 1 - a + a * var) for some a in [0, 1] (a = 1 - momentum^steps). We fit a for each
    candidate scale and keep the residual: the scale the model was trained on fits, the others do not. This works
    where accuracy cannot tell (lagging averages make inference mode fail at every scale, and training mode is
    blind to the input scale behind a convolution and BatchNorm).
    """
    import keras

    from .modes import leaf_layers

    bn = next((layer for layer in leaf_layers(model) if "BatchNormalization" in type(layer).__name__), None)
    if bn is None:
        return {}
    try:
        upto = keras.Model(_single_input(model), bn.input)
    except Exception:  # the layer sits in a nested model: not reachable from the outer inputs
        return {}
    mm = np.asarray(bn.moving_mean, np.float64)
    mv = np.asarray(bn.moving_variance, np.float64)
    r = np.concatenate([mm, mv - 1.0])
    axis = bn.axis if isinstance(bn.axis, int) else bn.axis[0]
    out = {}
    for s in SCALES:
        a = np.asarray(upto(scaled(images, s), training=False), np.float64)
        a = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
        u = np.concatenate([a.mean(axis=0), a.var(axis=0) - 1.0])
        k = float(np.clip(r @ u / max(u @ u, 1e-12), 0.0, 1.0))
        out[s] = float(np.linalg.norm(r - k * u) / max(np.linalg.norm(r), 1e-12))
    return out


def input_scale(model: Any, images: np.ndarray, y: np.ndarray, out: OutputKind, requested: str) -> InputScale:
    """Judge the pixel range the model was trained on: by accuracy in inference mode where it tells the scales
    apart, else by how well the first BatchNorm layer's moving statistics fit each scale."""
    if requested != "auto" and requested not in SCALES:
        raise invalid_parameter("input_scale", ["auto", *SCALES], requested)
    idx = np.random.default_rng(0).permutation(len(images))[:SCALE_SAMPLE]
    accs = tuple((s, evaluate(model, scaled(images[idx], s), y[idx], out).accuracy) for s in SCALES)
    own = _normalises_itself(model)
    ranked = sorted((a for _, a in accs), reverse=True)
    best = ranked[0]
    fit = _first_batchnorm_fit(model, images[idx])
    # Ties (within a point): prefer what the model's own layers imply, then the usual [0, 1].
    prefer = ["0-255", "0-1", "-1-1"] if own else ["0-1", "-1-1", "0-255"]
    if ranked[0] - ranked[1] < 0.05 and fit:
        evident = min(SCALES, key=lambda s: (fit[s], prefer.index(s)))
        how = "its first BatchNorm layer's moving statistics fit that scale best"
    else:
        evident = next(s for s in prefer if dict(accs)[s] >= best - 0.01)
        how = "it scores best on it"
    chosen = evident if requested == "auto" else requested
    rng = "[" + ("-1, 1" if evident == "-1-1" else evident.replace("-", ", ")) + "]"
    flagged, message = False, f"inputs in {rng}, as the model evidently expects ({how})"
    if evident == "0-255" and not own:
        flagged = True
        message = (f"unnormalised inputs: the model was trained on raw [0, 255] pixels ({how}) and has no "
                   "Rescaling/Normalization layer; scale inputs to [0, 1] (Rescaling(1/255)) and retrain")
    elif own and evident != "0-255":
        flagged = True
        message = f"double normalisation: the model has a Rescaling/Normalization layer yet expects inputs already in {rng}"
    if requested != "auto" and dict(accs)[requested] < best - 0.05:
        flagged = True
        message = f"input scale mismatch: fed {requested} but the model scores {best - dict(accs)[requested]:.3f} better on {evident}"
    return InputScale(chosen, evident, accs, own, flagged, message, tuple(sorted(fit.items())))


def batchnorm_layers(model: Any, x: np.ndarray) -> tuple[BatchNormLayer, ...]:
    """Moving vs batch statistics of every top-level-reachable BatchNorm layer, on (a sample of) ``x``."""
    import keras

    from .modes import leaf_layers

    bns = [layer for layer in leaf_layers(model) if "BatchNormalization" in type(layer).__name__]
    if not bns:
        return ()
    try:
        probe = keras.Model(_single_input(model), [layer.input for layer in bns])
        acts = probe(x[:SCALE_SAMPLE], training=False)
    except Exception:  # nested sub-models: their layers' inputs are not reachable from the outer graph
        return ()
    acts = acts if isinstance(acts, (list, tuple)) else [acts]
    out = []
    for layer, a in zip(bns, acts):
        a = np.asarray(a, np.float64)
        axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
        a = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
        mean, var = a.mean(axis=0), a.var(axis=0)
        mm = np.asarray(layer.moving_mean, np.float64)
        mv = np.asarray(layer.moving_variance, np.float64)
        shift = float(np.median(np.abs(mean - mm) / np.sqrt(mv + layer.epsilon)))
        ratio = float(np.median((var + layer.epsilon) / (mv + layer.epsilon)))
        lag = shift > BN_SHIFT or abs(math.log(max(ratio, 1e-12))) > math.log(BN_VAR_FACTOR)
        out.append(BatchNormLayer(layer.name, float(layer.momentum), shift, ratio, lag))
    return tuple(out)


def regularizers(model: Any) -> tuple[tuple[str, str, float], ...]:
    """(layer, kind, strength) of every regularizer: dropout rates, noise deviations, L1/L2 factors."""
    from .modes import leaf_layers

    out: list[tuple[str, str, float]] = []
    for layer in leaf_layers(model):
        name = type(layer).__name__
        if "Dropout" in name and getattr(layer, "rate", 0):
            out.append((layer.name, "dropout", float(layer.rate)))
        if name == "GaussianNoise" and getattr(layer, "stddev", 0):
            out.append((layer.name, "noise", float(layer.stddev)))
        for attr in ("kernel_regularizer", "bias_regularizer", "activity_regularizer"):
            reg = getattr(layer, attr, None)
            cfg = reg.get_config() if reg is not None and hasattr(reg, "get_config") else {}
            for k in ("l1", "l2"):
                if cfg.get(k):
                    out.append((layer.name, k.upper(), float(cfg[k])))
    return tuple(out)


def describe_regularizers(regs: tuple[tuple[str, str, float], ...]) -> str:
    """'L2 up to 1 on 2 layers, dropout up to 0.5 on 1 layer' (or 'no regularizers')."""
    parts = []
    for kind in ("L1", "L2", "dropout", "noise"):
        values = [v for _, k, v in regs if k == kind]
        if values:
            n = len({layer for layer, k, _ in regs if k == kind})
            parts.append(f"{kind} up to {max(values):g} on {n} layer{'s' if n > 1 else ''}")
    return ", ".join(parts) or "no regularizers"


def optimizer_steps(model: Any) -> int | None:
    opt = getattr(model, "optimizer", None)
    it = getattr(opt, "iterations", None)
    try:
        return int(np.asarray(it)) if it is not None else None
    except (TypeError, ValueError):
        return None
