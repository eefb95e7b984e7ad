"""The embedding stage with the real EfficientNet-Lite0 weights: copies the hashes miss, calibration, no floods."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import splitaudit

from conftest import Planted, save, tiles_of

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")


def _photo_dataset(root: Path, photos: dict) -> tuple[Path, Path]:
    """train/val of 128-px tiles from six photos (one class each), distinct by construction."""
    for cls in ("astronaut", "coffee", "chelsea", "rocket", "china", "flower"):
        tiles = tiles_of(photos[cls], 128, 8, step=136)
        for i, t in enumerate(tiles[:6]):
            save(root / "train" / cls / f"{cls}_{i}.jpg", t)
        for i, t in enumerate(tiles[6:8]):
            save(root / "val" / cls / f"{cls}_v{i}.jpg", t)
    return root / "train", root / "val"


def _cropped_recompressed(src: Path) -> Image.Image:
    """15% off two sides, shrunk to 100 px, re-encoded at quality 40: a copy perceptual hashes do not recognise."""
    im = Image.open(src)
    w, h = im.size
    return im.crop((int(0.15 * w), int(0.15 * h), w, h)).resize((100, 100), Image.Resampling.BICUBIC)


def test_copy_missed_by_hashes_is_found_by_the_embedding_stage(tmp_path: Path, photos: dict) -> None:
    train, val = _photo_dataset(tmp_path, photos)
    save(val / "coffee" / "copy_cropped.jpg", _cropped_recompressed(train / "coffee" / "coffee_2.jpg"), quality=40)
    hashes = splitaudit.audit(train, val, backbone="none", verify=False)
    assert not [f for f in hashes.findings if "copy_cropped.jpg" in f.message]
    cascade = splitaudit.audit(train, val)
    found = [f for f in cascade.findings if f.check == "near-duplicates"]
    assert [(f.images[0].path, f.images[1].path) for f in found] == [("coffee/coffee_2.jpg", "coffee/copy_cropped.jpg")]
    ev = {e.stage: e for e in found[0].evidence}
    assert ev["phash"].distance > 6  # the hashes disagree: only the embedding cascade can find it
    assert ev["embedding"].similarity > 0.85 and ev["ncc"].similarity >= 0.9
    assert cascade.by_check("similar-images") == []


def test_distinct_photos_give_no_pairs_with_embeddings(tmp_path: Path, photos: dict) -> None:
    train, val = _photo_dataset(tmp_path, photos)
    report = splitaudit.audit(train, val)
    pairs = [f for f in report.findings if len(f.images) == 2]
    assert pairs == [], [f.message for f in pairs]


def test_uniform_dataset_gives_no_flood(photos: dict) -> None:
    """scikit-learn's digits: 1,797 8x8 greys, every image alike; hashes alone would pair hundreds."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images * (255 / 16)).round().astype(np.uint8)
    y = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    tr, va = order[:1400], order[1400:]
    x_val, y_val = x[va].copy(), y[va].copy()
    x_val[:3] = x[tr[:3]]  # three real leaks
    y_val[:3] = y[tr[:3]]
    hash_only = splitaudit.audit((x[tr], y[tr]), (x_val, y_val), backbone="none", verify=False,
                                 select=["near-duplicates", "exact-duplicates"])
    # without embeddings the copy verifier decides the hash matches of a dataset whose images hash alike
    verified_only = splitaudit.audit((x[tr], y[tr]), (x_val, y_val), backbone="none", select=["near-duplicates", "exact-duplicates"])
    flagged_none = {f.images[1].path for f in verified_only.findings}
    assert {"x[0]", "x[1]", "x[2]"} <= flagged_none and len(flagged_none) <= 3 + 0.01 * len(va), sorted(flagged_none)
    report = splitaudit.audit((x[tr], y[tr]), (x_val, y_val), select=["near-duplicates", "exact-duplicates", "similar-images"])
    flagged = {f.images[1].path for f in report.findings if f.check != "similar-images"}
    warned = {f.images[1].path for f in report.findings if f.check == "similar-images"}
    assert {"x[0]", "x[1]", "x[2]"} <= flagged
    # hashes alone flood this dataset; the cascade keeps the errors to the leaks plus a handful (3 more here, each a
    # digit drawn alike by one hand, 6-10 grey levels apart on average), and the similar-images warnings to as few
    assert len(hash_only.findings) > 50
    assert len(flagged) <= 3 + 0.01 * len(va), sorted(flagged)
    assert len(warned - flagged) <= 0.01 * len(va), sorted(warned)


def test_embeddings_are_cached_and_the_network_not_loaded_again(planted: Planted) -> None:
    code = (
        "import sys, splitaudit; r = splitaudit.audit(*sys.argv[1:]); "
        "print(int('ai_edge_litert' in sys.modules), int('tensorflow' in sys.modules), len(r.findings))"
    )
    run = lambda: subprocess.run([sys.executable, "-c", code, *map(str, planted.splits)], capture_output=True, text=True, check=True).stdout.split()  # noqa: E731
    first, second = run(), run()
    # The first run embeds with the converted network (converted in a child process: TensorFlow never loads in the
    # auditing process); the second reads every vector from the cache and loads no network at all.
    assert first[:2] == ["1", "0"] and second[:2] == ["0", "0"], (first, second)
    assert first[2] == second[2]


def test_keras_application_without_weights_is_a_clear_error(planted: Planted) -> None:
    r = subprocess.run([sys.executable, "-m", "splitaudit", "check", *map(str, planted.splits), "--backbone", "mobilenet_v3_small", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    # No internet here: Keras cannot fetch the ImageNet weights, and says how to supply them.
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "pass --weights PATH" in r.stderr and "efficientnet_lite0" in r.stderr


def test_keras_application_with_a_local_weights_file(planted: Planted, tmp_path: Path) -> None:
    import keras

    model = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(96, 96, 3), pooling="avg")
    weights = tmp_path / "mnv3.weights.h5"
    model.save_weights(weights)
    report = splitaudit.audit(*planted.splits, backbone="mobilenet_v3_small", weights=str(weights), image_size=96)
    ev = [e for f in report.by_check("exact-duplicates") for e in f.evidence if e.stage == "embedding"]
    assert ev and all(abs(e.similarity - 1.0) < 1e-3 for e in ev)


def test_unknown_backbone_is_a_parameter_error(planted: Planted) -> None:
    with pytest.raises(splitaudit.InvalidParameterError, match="The 'backbone' parameter must be one of"):
        splitaudit.audit(*planted.splits, backbone="resnet9000")


def test_json_with_embeddings_is_byte_identical_cold_and_warm(planted: Planted, tmp_path: Path) -> None:
    cold = splitaudit.audit(*planted.splits, cache_dir=tmp_path / "c")
    warm = splitaudit.audit(*planted.splits, cache_dir=tmp_path / "c")
    assert warm.cache["embedded"] == 0 and cold.cache["embedded"] > 0
    assert cold.to_json() == warm.to_json()
    # The calibration and the confirmed candidates were kept too: the warm run neither searched nor decoded again.
    import sqlite3

    from splitaudit.features.cache import SCHEMA_VERSION

    with sqlite3.connect(tmp_path / "c" / f"cache-v{SCHEMA_VERSION}.sqlite3") as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM blobs")]
    assert any(k.startswith("calibration:") for k in keys) and any(k.startswith("dense:") for k in keys)
    doc = cold.to_dict()["embeddings"]
    assert doc["backbone"].startswith("efficientnet_lite0:") and doc["image_size"] == 128  # 64-px tiles: 2x
    assert 0.85 <= doc["similarity_threshold"] <= 0.98 and doc["hashes_trusted"] is True


def test_lanes_embed_every_batch_in_order_with_the_vectors_of_one_interpreter(tmp_path: Path, photos: dict) -> None:
    """The converted network in lanes (each thread decodes and embeds whole batches on an interpreter of its own)
    gives the vectors of one interpreter, in the rows' order, and every lane does some of the work."""
    import os

    from splitaudit.features.embeddings.backbones import BackboneSpec
    from splitaudit.features.embeddings.compute import EmbedBatch, embed_rows, lanes

    train, _ = _photo_dataset(tmp_path, photos)
    paths = sorted(str(p) for p in train.rglob("*.jpg"))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    paths.insert(5, str(tmp_path / "broken.jpg"))  # a row that does not decode keeps its place
    cols = {"path": np.array(paths, dtype=object), "pixels": np.full(len(paths), None, dtype=object)}
    work = EmbedBatch(BackboneSpec(image_size=64), model_dir=os.environ["SPLITAUDIT_MODEL_DIR"], threads=1)
    one = embed_rows(work, cols, threads=1, batch_size=4)  # a single lane: this interpreter, batch after batch
    assert one["embedded"].sum() == len(paths) - 1 and not one["embedded"][5]

    copies = lanes(work, 3)
    assert copies[0] is work and len({id(c) for c in copies}) == 3 and all(c.threads == 1 for c in copies)
    assert lanes(EmbedBatch(BackboneSpec(image_size=64), runtime="keras"), 3)[0].runtime == "keras"
    assert len(lanes(EmbedBatch(BackboneSpec(image_size=64), runtime="keras"), 3)) == 1

    calls: dict[int, int] = {}
    import splitaudit.features.embeddings.compute as compute

    real = compute.EmbedBatch.__call__

    def counted(self, batch):  # type: ignore[no-untyped-def]
        calls[id(self)] = calls.get(id(self), 0) + 1
        return real(self, batch)

    compute.EmbedBatch.__call__ = counted  # type: ignore[method-assign]
    try:
        many = embed_rows(work, cols, threads=3, batch_size=2)
    finally:
        compute.EmbedBatch.__call__ = real  # type: ignore[method-assign]
    assert np.array_equal(many["embedded"], one["embedded"])
    assert np.array_equal(many["embedding"], one["embedding"])  # bit for bit, in the rows' order
    assert sum(calls.values()) == -(-len(paths) // 2) and len(calls) >= 2, calls
