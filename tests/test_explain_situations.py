"""splitaudit explain on the situations of issue #12, each built from real images the way users hit them.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (skipped without it), digits from
scikit-learn. Models are small and train for one to three epochs: the point is what explain says about them.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_explain import assert_adds_up, write_split

import splitaudit
from splitaudit.errors import SplitauditError
from splitaudit.explain import parse_history
from splitaudit.explain.history import diagnose_curves
from splitaudit.explain.leak import leak_effect

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")

FASHION = Path("/usr/share/datasets/fashion-mnist")
PROBE_CURVES = "the tool's regularized probe (not your model)"


@pytest.fixture(scope="module")
def fashion() -> tuple[np.ndarray, np.ndarray]:
    images, labels = FASHION / "t10k-images-idx3-ubyte.gz", FASHION / "t10k-labels-idx1-ubyte.gz"
    if not images.exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    with gzip.open(images) as fh:
        x = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels) as fh:
        y = np.frombuffer(fh.read(), np.uint8, offset=8)
    return x, y


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * (255 / 16)).round().astype(np.uint8), d.target


def _fashion_model(seed: int = 0) -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), layers.Rescaling(1 / 255), layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dropout(0.5), layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _labels(y: np.ndarray) -> list[str]:
    return [str(v) for v in y]


def _numbered(advice: tuple[str, ...]) -> None:
    """Every advice line ends with the measured number that triggered it, in brackets."""
    for line in advice:
        m = re.search(r"\[(.+)\]$", line)
        assert m is not None and re.search(r"\d", m.group(1)), line


def test_two_model_runs_give_byte_identical_json(fashion, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dropout CNN: the training-mode passes draw dropout masks; two runs (different global RNG states) agree."""
    import tensorflow as tf

    from splitaudit.cli import main

    x, y = fashion
    train = write_split(tmp_path / "train", x[:300], _labels(y[:300]))
    val = write_split(tmp_path / "val", x[300:450], _labels(y[300:450]))
    model = _fashion_model()
    h = model.fit(x[:300, ..., None], y[:300], validation_data=(x[300:450, ..., None], y[300:450]), epochs=2,
                  batch_size=32, verbose=0)
    model.save(tmp_path / "model.keras")
    (tmp_path / "h.json").write_text(json.dumps(h.history))
    outs = []
    for k in (1, 2):
        random.seed(k)  # what a fresh process would have: different global states everywhere
        np.random.seed(k)
        tf.random.set_seed(k)
        out = tmp_path / f"run{k}.json"
        assert main(["explain", str(train), str(val), "--model", str(tmp_path / "model.keras"), "--history",
                     str(tmp_path / "h.json"), "--backbone", "none", "--epochs", "2", "--no-cache", "--format", "json",
                     "-o", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    doc = json.loads(outs[0])
    assert doc["seed"] == 0 and doc["metric"] == "both" and doc["schema_version"] == 2
    m = next(s for s in doc["subjects"] if s["name"] == "model")
    assert m["accuracy"]["terms"][2]["name"] == "dropout" and m["accuracy"]["terms"][2]["value"] != 0  # masks were drawn
    err = capsys.readouterr().err
    assert "splitaudit explain: training probes" in err and "splitaudit explain: evaluating the model" in err


def _noisy_copies(fashion: tuple[np.ndarray, np.ndarray], root: Path, n_train: int, n_fresh: int, n_copies: int) -> tuple[Path, Path]:
    """Validation: fresh test images plus light-noise copies of training images (the copies' originals are in train)."""
    x, y = fashion
    rng = np.random.default_rng(4)
    tr = np.arange(n_train)
    fresh = np.arange(n_train, n_train + n_fresh)
    src = rng.choice(tr, n_copies, replace=False)
    noisy = np.clip(x[src].astype(np.int16) + rng.normal(0, 6, x[src].shape).round().astype(np.int16), 0, 255).astype(np.uint8)
    train = write_split(root / "train", x[tr], _labels(y[tr]))
    vx = np.concatenate([x[fresh], noisy])
    vy = np.concatenate([y[fresh], y[src]])
    val = write_split(root / "val", vx, _labels(vy), [f"v_{i:04d}.png" for i in range(len(vx))])
    return train, val


def test_noisy_copies_in_validation_lift_it_with_an_interval_above_zero(fashion, tmp_path: Path) -> None:
    """100 of 300 validation images are light-noise copies of training images: a model that fits its training set
    scores them like training images, so they lift validation accuracy; measured with the model, and by inheritance
    without it. Hash matches alone (no backbone, no verifier) are possible copies: no advice to remove them."""
    import keras
    from keras import layers

    train, val = _noisy_copies(fashion, tmp_path, 600, 200, 100)
    x, y = fashion
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Rescaling(1 / 255), layers.Flatten(),
                              layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(x[:600, ..., None], y[:600], epochs=15, batch_size=32, verbose=0)  # fits its training set
    model.save(tmp_path / "model.keras")

    with_model = splitaudit.explain(train, val, model=tmp_path / "model.keras", history=h.history, epochs=2,
                                    cache_dir=tmp_path / "cache")
    assert_adds_up(with_model)
    leak = with_model.leak
    # The duplicate checks find most of the noisy copies, and nothing else (copies are named v_0200.png onwards).
    assert leak is not None and leak.method == "model" and leak.copies >= 60 and leak.verified == leak.copies
    assert all(int(p.split("_")[-1][:4]) >= 200 for p in with_model.data.leaked_val)
    assert leak.sign == "+" and leak.low > 0 and leak.copies_accuracy > leak.clean_accuracy
    assert leak.effect == pytest.approx(with_model.subject("model").accuracy.term("leakage"), abs=1e-9)
    msg = with_model.diagnosis("leakage").message
    assert "they add" in msg and "95% interval" in msg and "your model's score on the copies" in msg
    assert any(a.startswith(f"Remove the {leak.verified} validation images verified as copies") for a in with_model.advice)
    _numbered(with_model.advice)

    probes_only = splitaudit.explain(train, val, epochs=2, cache_dir=tmp_path / "cache")
    inherited = probes_only.leak
    assert inherited is not None and inherited.method == "inherited" and inherited.sign == "+" and inherited.low > 0
    assert "scored as the tool's regularized probe scores its training original" in probes_only.diagnosis("leakage").message

    # Hash matches alone (no backbone, no copy verifier) are possible copies, not verified ones.
    hashes_only = splitaudit.explain(train, val, epochs=1, backbone="none", verify=False, cache_dir=tmp_path / "cache")
    assert hashes_only.leak is not None and hashes_only.leak.verified == 0
    assert "none is verified (hash matches only" in hashes_only.diagnosis("leakage").message
    assert not any(a.startswith("Remove the") for a in hashes_only.advice)


def test_a_leak_effect_the_data_do_not_support_has_no_sign() -> None:
    """Three copies, all right, among 250 images 90% right: the interval spans 0, so no sign is reported."""
    few = leak_effect(np.ones(3), np.r_[np.ones(222), np.zeros(25)], verified=3, same_split=False, method="model",
                      measured_by="your model")
    assert few.low < 0 < few.high and few.sign == "not measurable" and "not measurable" in few.describe()
    many = leak_effect(np.ones(120), np.r_[np.ones(300), np.zeros(80)], verified=120, same_split=False, method="model",
                       measured_by="your model")
    assert many.sign == "+" and many.low > 0 and many.effect == pytest.approx(120 / 500 * (1 - 300 / 380))


def test_a_model_for_other_inputs_is_refused_with_one_line(fashion, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model that takes 32x32x3, fed 28x28 grey images: scoring at chance once resized, it is refused (exit 2)."""
    import keras
    from keras import layers

    from splitaudit.cli import main

    x, y = fashion
    train = write_split(tmp_path / "train", x[:200], _labels(y[:200]))
    val = write_split(tmp_path / "val", x[200:300], _labels(y[200:300]))
    keras.utils.set_random_seed(0)
    other = keras.Sequential([keras.Input((32, 32, 3)), layers.Rescaling(1 / 255), layers.Conv2D(4, 3, activation="relu"),
                              layers.GlobalAveragePooling2D(), layers.Dense(10, activation="softmax")])
    other.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    other.save(tmp_path / "cifar.keras")  # as trained on something else: it knows nothing of these images
    with pytest.raises(SplitauditError, match="the model takes 32x32x3 inputs but the images are 28x28 grey"):
        splitaudit.explain(train, val, model=tmp_path / "cifar.keras", backbone="none", epochs=1, cache=False)
    assert main(["explain", str(train), str(val), "--model", str(tmp_path / "cifar.keras"), "--backbone", "none",
                 "--no-cache"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("splitaudit explain:")]
    assert len(err) == 1 and err[0].startswith("splitaudit: error: the model takes 32x32x3") and "chance" in err[0]


def test_a_validation_only_class_leads_and_a_loss_only_history_says_what_is_missing(digits, tmp_path: Path) -> None:
    x, y = digits
    order = np.random.default_rng(9).permutation(len(x))
    tr = order[:400][y[order[:400]] != 9]  # no '9' in training
    va = order[400:600]
    train = write_split(tmp_path / "train", x[tr], _labels(y[tr]))
    val = write_split(tmp_path / "val", x[va], _labels(y[va]))
    history = {"loss": [1.2, 0.8, 0.6, 0.5, 0.4], "val_loss": [1.1, 0.9, 0.95, 1.0, 1.1]}  # without metrics=["accuracy"]

    report = splitaudit.explain(train, val, history=history, epochs=2, backbone="none", cache=False)
    assert_adds_up(report)
    n9 = int((y[va] == 9).sum())
    only = report.diagnosis("val-only-class")
    assert only is not None and only.data == {"classes": ["9"], "images": n9, "share": n9 / len(va)}
    assert report.headline == "val-only-class"
    assert report.summary.startswith(f"{n9} validation images ({n9 / len(va):.1%}) belong to 1 class(es) with no training image ('9')")
    assert report.advice[0].startswith("Put images of the validation-only classes into the training split")
    missing = report.diagnosis("history-incomplete")
    assert missing is not None and missing.data["missing"] == ["accuracy", "val_accuracy"]
    assert "lacks accuracy, val_accuracy (found: loss, val_loss)" in missing.message
    assert [c.code for c in report.curves] == ["overfitting"] and report.curves[0].message.startswith("your history: ")
    _numbered(report.advice)


def test_the_loss_question_gets_a_loss_headline_and_every_epoch_is_decomposed(digits, tmp_path: Path) -> None:
    x, y = digits
    order = np.random.default_rng(10).permutation(len(x))
    train = write_split(tmp_path / "train", x[order[:500]], _labels(y[order[:500]]))
    val = write_split(tmp_path / "val", x[order[500:700]], _labels(y[order[500:700]]))

    report = splitaudit.explain(train, val, epochs=3, backbone="none", cache=False, metric="loss")
    assert report.metric == "loss" and report.to_dict()["metric"] == "loss"
    assert "validation loss is" in report.summary and "validation accuracy is" not in report.summary
    assert report.summary.startswith("The tool's regularized-probe (not your model): validation loss")
    main = report.main
    assert [g.epoch for g in main.per_epoch] == [1, 2, 3]
    for g, e in zip(main.per_epoch, main.epochs):
        for d in (g.accuracy, g.loss):
            assert abs(d.total - d.gap) < 1e-9
        assert g.accuracy.reported_train == e.reported_accuracy and g.accuracy.reported_val == e.val_accuracy
    assert main.per_epoch[-1].accuracy.terms == main.accuracy.terms  # the last epoch is the headline's decomposition
    first = main.per_epoch[0].accuracy
    one = report.diagnosis("epoch-1")
    assert (one is not None) == (first.gap > 0)
    if one is not None:  # validation starts above training: timing and regularization, measured
        c = first.causes()
        assert one.data["timing"] == c["timing"] and one.data["data"] == c["data"]
    assert report.curves and all(c.message.startswith(PROBE_CURVES) for c in report.curves)
    with pytest.raises(SplitauditError, match="'metric'"):
        splitaudit.explain(train, val, metric="f1")


def test_chance_level_needs_a_curve_at_chance() -> None:
    """0.30 accuracy with chance 0.11 is learning something, even on a small validation set."""
    h = parse_history({"loss": [2.2, 2.0, 1.9], "val_loss": [2.2, 2.1, 2.0], "accuracy": [0.2, 0.27, 0.3],
                       "val_accuracy": [0.22, 0.26, 0.3]})
    assert "chance-level" not in {c.code for c in diagnose_curves(h, chance=0.11, val_size=20, train_size=60)}
    flat = parse_history({"loss": [2.3] * 3, "val_loss": [2.3] * 3, "accuracy": [0.11, 0.12, 0.11], "val_accuracy": [0.1, 0.12, 0.11]})
    found = {c.code: c for c in diagnose_curves(flat, chance=0.11, val_size=500, train_size=3000, owner="your history")}
    assert found["chance-level"].data["curves"] == ["training", "validation"]
    assert found["chance-level"].message.startswith("your history: training and validation accuracy never rises")


def test_epoch_one_is_read_from_the_users_curves_when_only_final_weights_exist() -> None:
    """Validation starts above training at epoch 1: the running average's lag (timing) is estimated from the curves."""
    h = parse_history({"loss": [1.0, 0.6, 0.5], "val_loss": [0.7, 0.55, 0.5], "accuracy": [0.6, 0.8, 0.85],
                       "val_accuracy": [0.72, 0.82, 0.84]})
    one = {c.code: c for c in diagnose_curves(h, owner="your history")}["epoch-1"]
    assert one.data["gap"] == pytest.approx(0.12) and one.data["timing"] == pytest.approx(0.1)
    assert one.data["rest"] == pytest.approx(0.02) and one.message.startswith("your history: validation accuracy starts")
