"""splitaudit explain on real images (scikit-learn's digits written as PNG files) and real Keras training.

Each scenario trains a small model with fixed seeds, saves it and its log the way a user would, and checks that
the decomposition adds up to the reported gap and names the cause the scenario was built to have.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import splitaudit
from splitaudit.errors import SplitauditError
from splitaudit.explain import parse_history
from splitaudit.explain.decompose import CAUSES, TERMS, decompose
from splitaudit.explain.history import diagnose_curves, shifted_train

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")

TOL = 1e-6


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * (255 / 16)).round().astype(np.uint8), d.target


def write_split(root: Path, x: np.ndarray, labels: list[str], names: list[str] | None = None) -> Path:
    """One PNG per image under ``root/<label>/``."""
    for i, (img, label) in enumerate(zip(x, labels)):
        p = root / label / (names[i] if names else f"img_{i:04d}.png")
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(p)
    return root


def read_split(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Back from disk the way a user's pipeline reads it (classes in sorted order, like image_dataset_from_directory)."""
    classes = sorted(p.name for p in root.iterdir())
    xs, ys = [], []
    for k, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            xs.append(np.asarray(Image.open(f)))
            ys.append(k)
    return np.stack(xs)[..., None].astype(np.float32), np.asarray(ys), classes


def assert_adds_up(report: splitaudit.explain.ExplainReport) -> None:
    for s in report.subjects:
        for d in (s.accuracy, s.loss):
            assert [t.name for t in d.terms] == list(TERMS)
            assert abs(d.total - d.gap) < TOL, (s.name, d.metric, d.total, d.gap)
            assert abs(sum(d.causes().values()) - d.gap) < TOL
            # the chain is continuous: every term starts where the previous one ended
            assert d.terms[0].start == d.reported_train and d.terms[-1].end == d.reported_val
            for a, b in zip(d.terms, d.terms[1:]):
                assert a.end == b.start


def test_decomposition_telescopes_and_picks_the_largest_cause() -> None:
    modes = [("training", 0.70), ("dropout", 0.80), ("noise", 0.80), ("batchnorm", 0.82), ("other", 0.82)]
    d = decompose("accuracy", modes=modes, val=0.79, val_clean=0.78, difficulty=0.01, reported_train=0.65)
    values = {t.name: t.value for t in d.terms}
    assert values["timing"] == pytest.approx(0.05) and values["dropout"] == pytest.approx(0.10)
    assert values["batchnorm"] == pytest.approx(0.02) and values["leakage"] == pytest.approx(0.01)
    assert values["difficulty"] == pytest.approx(0.01) and values["generalization"] == pytest.approx(-0.05)
    assert d.gap == pytest.approx(0.14) and abs(d.total - d.gap) < 1e-12
    assert d.dominant == "dropout" and set(d.causes()) == set(CAUSES)
    # a loss whose validation value excludes the penalty: the penalty becomes a term of its own
    loss = decompose("loss", modes=[(n, 1 - v) for n, v in modes], val=0.3, val_clean=0.3, difficulty=0.0,
                     reported_train=0.5, reported_val=0.31, penalty=0.2, val_includes_penalty=False)
    assert dict((t.name, t.value) for t in loss.terms)["penalty"] == pytest.approx(-0.2)
    assert abs(loss.total - loss.gap) < 1e-12 and loss.gap == pytest.approx(-0.19)


def _split_digits(digits: tuple[np.ndarray, np.ndarray], tmp: Path, n_train: int, n_val: int, seed: int = 0) -> tuple[Path, Path]:
    x, y = digits
    order = np.random.default_rng(seed).permutation(len(x))
    tr, va = order[:n_train], order[n_train : n_train + n_val]
    return (write_split(tmp / "train", x[tr], [str(v) for v in y[tr]]),
            write_split(tmp / "val", x[va], [str(v) for v in y[va]]))


def _report(report: splitaudit.explain.ExplainReport) -> str:
    lines = [report.summary]
    for s in report.subjects:
        lines.append(f"{s.name}: gap {s.accuracy.gap:+.4f} " + " ".join(f"{t.name}={t.value:+.4f}" for t in s.accuracy.terms))
    lines += [f"{d.code}: {d.message}" for d in report.diagnoses]
    return "\n".join(lines)


def test_heavy_dropout_convnet_is_explained_by_dropout_and_timing(digits, tmp_path: Path) -> None:
    """History shows val above train; at the final weights train is above val: dropout + timing, data near zero."""
    import keras
    from keras import layers

    train, val = _split_digits(digits, tmp_path, 700, 400)
    xt, yt, classes = read_split(train)
    xv, yv, _ = read_split(val)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Rescaling(1 / 255), layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.Flatten(), layers.Dropout(0.6), layers.Dense(64, activation="relu"), layers.Dropout(0.6),
        layers.Dense(len(classes), activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    log = tmp_path / "log.csv"
    model.fit(xt, yt, validation_data=(xv, yv), epochs=6, batch_size=32, verbose=0, callbacks=[keras.callbacks.CSVLogger(str(log))])
    model.save(tmp_path / "model.keras")
    with open(log) as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["val_accuracy"]) > float(rows[-1]["accuracy"])  # the surprise the user asks about
    at_end_train = model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"]
    at_end_val = model.evaluate(xv, yv, verbose=0, return_dict=True)["accuracy"]
    assert at_end_train > at_end_val  # ... while evaluating both at the end shows train above val

    report = splitaudit.explain(train, val, model=tmp_path / "model.keras", history=log, epochs=4)
    print(_report(report))
    assert_adds_up(report)
    m = report.subject("model").accuracy
    assert m.gap > 0
    assert report.dominant in ("dropout", "timing")
    assert m.term("dropout") > 0 and m.term("timing") + m.term("dropout") > abs(m.causes()["data"])
    # the data term is exactly what model.evaluate gives on the two splits
    assert m.causes()["data"] == pytest.approx(at_end_val - at_end_train, abs=1e-6)
    assert next(t.end for t in m.terms if t.name == "other") == pytest.approx(at_end_train, abs=1e-6)
    assert abs(m.term("reproduction")) < 0.01  # explain feeds the model what it was trained on
    assert report.model is not None and report.model.input_scale.chosen == "0-255" and not report.model.input_scale.flagged


def test_batchnorm_on_raw_pixels_same_data_is_explained_by_batchnorm(digits, tmp_path: Path) -> None:
    """train == val, BatchNorm (momentum 0.99), few steps, [0, 255] inputs: val far below train; BatchNorm's term."""
    import keras
    from keras import layers

    x, y = digits
    idx = np.random.default_rng(2).permutation(len(x))[:600]
    labels = [str(v) for v in y[idx]]
    train = write_split(tmp_path / "train", x[idx], labels)
    val = write_split(tmp_path / "val", x[idx], labels)  # the very same images
    xt, yt, classes = read_split(train)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(16, 3, padding="same"), layers.BatchNormalization(momentum=0.99), layers.ReLU(),
        layers.Conv2D(32, 3, padding="same"), layers.BatchNormalization(momentum=0.99), layers.ReLU(),
        layers.GlobalAveragePooling2D(), layers.Dense(len(classes), activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(xt, yt, validation_data=(xt, yt), epochs=4, batch_size=200, verbose=0)  # 3 steps per epoch
    model.save(tmp_path / "model.keras")
    (tmp_path / "history.json").write_text(json.dumps(h.history))
    assert h.history["val_accuracy"][-1] < h.history["accuracy"][-1] - 0.2  # val far below train on the same data

    report = splitaudit.explain(train, val, model=tmp_path / "model.keras", history=tmp_path / "history.json", epochs=4)
    print(_report(report))
    assert_adds_up(report)
    m = report.subject("model").accuracy
    assert report.dominant == "batchnorm"
    assert m.term("batchnorm") < 0 and abs(m.causes()["data"]) < 1e-9  # the same images: no data term at all
    assert report.data.leaked_share == 1.0
    scale = report.diagnosis("input-scale")
    assert scale is not None and "[0, 255]" in scale.message and report.model.input_scale.evident == "0-255"
    assert report.diagnosis("batchnorm-lag") is not None
    assert report.model.batchnorm[0].lagging
    assert report.diagnosis("over-regularization") is None  # BatchNorm is not a regularizer that holds it back
    # train == val: nothing to remove; the advice says so, and every line carries its number.
    assert report.leak is not None and report.leak.same_split and report.leak.effect is None
    assert not any(a.startswith("Remove the") for a in report.advice)
    assert any(a.startswith("Validation is the training set: hold out images") for a in report.advice)
    assert all(a.endswith("]") and "[" in a for a in report.advice)


def test_two_classes_from_the_same_images_are_named_as_not_separable(digits, tmp_path: Path) -> None:
    """Classes 'left' and 'right' are random halves of one pool of images: curves at chance, the pair named."""
    x, y = digits
    order = np.random.default_rng(3).permutation(len(x))[:480]
    names = ["left" if i % 2 else "right" for i in range(len(order))]
    train = write_split(tmp_path / "train", x[order[:320]], names[:320])
    val = write_split(tmp_path / "val", x[order[320:]], names[320:])

    report = splitaudit.explain(train, val, epochs=4)
    print(_report(report))
    assert_adds_up(report)
    pair = report.diagnosis("not-separable")
    assert pair is not None and pair.data["classes"] == ["left", "right"]
    # The pair is the explanation: it leads the headline and the advice, with no "more data, augmentation".
    assert report.headline == "not-separable"
    assert report.summary.startswith("Classes 'left' and 'right' cannot be told apart (a held-out probe separates them in")
    assert report.advice[0].startswith("Check the labels of classes 'left' and 'right', or merge them.")
    assert not any("augmentation" in a for a in report.advice)
    chance = report.diagnosis("chance-level")
    assert chance is not None and "validation" in chance.data["curves"]
    for e in report.main.epochs:  # the regularized probe's validation curve hovers at chance
        assert abs(e.val_accuracy - 0.5) < 0.15


def _easiness(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Held-out probability of the true class from a pixel logistic regression: high = easy (independent of explain)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        p = cross_val_predict(LogisticRegression(max_iter=500), x.reshape(len(x), -1) / 255.0, y, cv=5, method="predict_proba")
    return p[np.arange(len(y)), y]


def test_val_drawn_from_the_easiest_images_is_explained_by_the_data(digits, tmp_path: Path) -> None:
    """A small model trained on the hardest images, validated on the easiest: val above train at the same weights."""
    import keras
    from keras import layers

    x, y = digits
    order = np.argsort(-_easiness(x, y), kind="stable")
    va, tr = order[:250], order[-500:]  # validation: the 250 easiest images; training: the 500 hardest
    train = write_split(tmp_path / "train", x[tr], [str(v) for v in y[tr]])
    val = write_split(tmp_path / "val", x[va], [str(v) for v in y[va]])
    xt, yt, classes = read_split(train)
    xv, yv, _ = read_split(val)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Rescaling(1 / 255), layers.Flatten(),
                              layers.Dense(len(classes), activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(xt, yt, validation_data=(xv, yv), epochs=5, batch_size=32, verbose=0)
    model.save(tmp_path / "model.keras")

    report = splitaudit.explain(train, val, model=tmp_path / "model.keras", history=h.history, epochs=3)
    print(_report(report))
    assert_adds_up(report)
    m = report.main.accuracy
    assert m.causes()["data"] > 0  # val above train at the same weights, in inference mode
    assert report.dominant == "data" and m.dominant_data_term == "difficulty"
    assert report.diagnosis("easier-val") is not None and report.data.difficulty_accuracy > 0.02
    assert "easier" in report.summary


def test_val_with_copies_of_training_images_is_explained_by_leakage(digits, tmp_path: Path) -> None:
    x, y = digits
    order = np.random.default_rng(5).permutation(len(x))
    tr, fresh = order[:600], order[600:750]
    copies = tr[:150]  # half of val copies training images byte for byte
    train = write_split(tmp_path / "train", x[tr], [str(v) for v in y[tr]])
    va = np.concatenate([copies, fresh])
    val = write_split(tmp_path / "val", x[va], [str(v) for v in y[va]], [f"v_{i:04d}.png" for i in range(len(va))])

    report = splitaudit.explain(train, val, epochs=4)
    print(_report(report))
    assert_adds_up(report)
    assert report.data.leaked_share >= 0.5
    assert report.diagnosis("leakage") is not None
    for s in report.subjects:
        assert s.accuracy.term("leakage") > 0  # the copies score like training images: they lift val
    assert report.main.accuracy.causes()["data"] != 0 and "copy a training image" in report.diagnosis("leakage").message


def test_over_regularized_model_is_named(digits, tmp_path: Path) -> None:
    import keras
    from keras import layers

    train, val = _split_digits(digits, tmp_path, 600, 300, seed=6)
    xt, yt, classes = read_split(train)
    xv, yv, _ = read_split(val)
    keras.utils.set_random_seed(0)
    strong = keras.regularizers.L2(1.0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Rescaling(1 / 255), layers.Flatten(),
        layers.Dense(64, activation="relu", kernel_regularizer=strong), layers.Dropout(0.5),
        layers.Dense(len(classes), activation="softmax", kernel_regularizer=strong),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(xt, yt, validation_data=(xv, yv), epochs=6, batch_size=32, verbose=0)
    model.save(tmp_path / "model.keras")

    report = splitaudit.explain(train, val, model=tmp_path / "model.keras", history=h.history, epochs=3)
    print(_report(report))
    assert_adds_up(report)
    over = report.diagnosis("over-regularization")
    assert over is not None and over.data["subject"] == "model"
    assert over.data["train_accuracy"] < report.subject("plain-probe").train_accuracy - 0.15
    assert "over-regularization" in report.summary
    assert any("Lower the regularization" in a for a in report.advice)
    assert [r[1:] for r in over.data["regularizers"]] == [["L2", 1.0], ["dropout", 0.5], ["L2", 1.0]]


def test_cli_explain_json_text_and_plots(digits, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from splitaudit.cli import main

    train, val = _split_digits(digits, tmp_path, 300, 150, seed=7)
    out = tmp_path / "report.json"
    code = main(["explain", str(train), str(val), "--epochs", "2", "--format", "json", "--output", str(out),
                 "--plot", str(tmp_path / "curves.svg")])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 2 and doc["primary"] == "regularized-probe"
    assert doc["data"]["train_images"] == 300 and doc["data"]["val_images"] == 150
    main_subject = next(s for s in doc["subjects"] if s["name"] == doc["primary"])
    terms = main_subject["accuracy"]["terms"]
    assert abs(sum(t["value"] for t in terms) - main_subject["accuracy"]["gap"]) < 1e-4  # adds up after rounding
    assert doc["dominant"] == main_subject["accuracy"]["dominant"] and doc["summary"]
    assert len(main_subject["epochs"]) == 2
    svg = (tmp_path / "curves.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 8 and "train, shifted -1/2 epoch" in svg

    # the same run again (features and embeddings now cached): byte-identical JSON
    again = tmp_path / "again.json"
    html = tmp_path / "report.html"
    assert main(["explain", str(train), str(val), "--epochs", "2", "--format", "json", "-o", str(again),
                 "--html", str(html)]) == 0
    assert again.read_text() == out.read_text()
    # The curator's report carries the decomposition and its learning curves (half-epoch-shifted train curve).
    page = html.read_text()
    assert 'id="explain"' in page and "Not part of this report" not in page and "mean_shifted_gap" in page
    import base64
    import re

    plot = re.search(r'id="explain".*?src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page, re.S)
    assert plot is not None and "train, shifted -1/2 epoch" in base64.b64decode(plot.group(1)).decode()

    capsys.readouterr()
    assert main(["explain", str(train), str(val), "--epochs", "2", "--plot", str(tmp_path / "curves.png")]) == 0
    text = capsys.readouterr().out
    assert "sum = reported gap" in text and "Advice" in text and "timing" in text
    with Image.open(tmp_path / "curves.png") as im:
        assert im.size == (960, 380) and len(im.convert("RGB").getcolors(1 << 20)) > 3


def test_cli_explain_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from splitaudit.cli import main

    assert main(["explain", str(tmp_path / "missing"), str(tmp_path / "val")]) == 2
    err = capsys.readouterr().err  # progress lines ("splitaudit explain: scanning files"), then one error line
    errors = [line for line in err.splitlines() if not line.startswith("splitaudit explain: ")]
    assert len(errors) == 1 and errors[0].startswith("splitaudit: error:") and err.endswith("\n")
    with pytest.raises(SplitauditError, match="'epochs'"):
        splitaudit.explain(tmp_path, tmp_path, epochs=0)
    with pytest.raises(SplitauditError, match="input_scale"):
        splitaudit.explain(tmp_path, tmp_path, input_scale="0-100")


def test_history_from_csvlogger_and_json_agree_and_curves_are_read(digits, tmp_path: Path) -> None:
    import keras
    from keras import layers

    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8)), layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    log = tmp_path / "log.csv"
    h = model.fit(x[:300] / 255, y[:300], validation_data=(x[300:400] / 255, y[300:400]), epochs=3, verbose=0,
                  callbacks=[keras.callbacks.CSVLogger(str(log))])
    (tmp_path / "h.json").write_text(json.dumps(h.history))
    from_csv, from_json, from_dict = parse_history(log), parse_history(tmp_path / "h.json"), parse_history(h.history)
    assert from_csv.accuracy_key == "accuracy" and from_csv.epochs == 3
    for name in ("accuracy", "loss", "val_accuracy", "val_loss"):
        assert from_csv.get(name) == pytest.approx(from_json.get(name), rel=1e-6)
        assert from_dict.get(name) == from_json.get(name)
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,accuracy\n0,abc\n")
    with pytest.raises(SplitauditError, match="not a number"):
        parse_history(bad)
    with pytest.raises(SplitauditError, match="no 'loss'"):
        parse_history({"accuracy": [0.5]})

    # curve findings on hand-made curves, each built to show exactly one thing
    over = parse_history({"loss": [1.0, 0.6, 0.4, 0.3, 0.2], "val_loss": [1.0, 0.7, 0.6, 0.7, 0.8]})
    found = {c.code: c for c in diagnose_curves(over)}
    assert found["overfitting"].data["best_epoch"] == 3
    flat = parse_history({"loss": [1, 0.8, 0.6, 0.5, 0.4], "val_loss": [1, 0.9, 0.85, 0.85, 0.85],
                          "accuracy": [0.5, 0.6, 0.7, 0.8, 0.9], "val_accuracy": [0.5, 0.7, 0.75, 0.751, 0.752]})
    codes = {c.code for c in diagnose_curves(flat)}
    assert "val-plateau" in codes and "overfitting" not in codes
    chance = parse_history({"loss": [0.69] * 4, "val_loss": [0.69] * 4, "accuracy": [0.5, 0.52, 0.49, 0.51],
                            "val_accuracy": [0.5, 0.48, 0.51, 0.5]})
    c = {c.code: c for c in diagnose_curves(chance, chance=0.5, val_size=400)}
    assert c["chance-level"].data["curves"] == ["training", "validation"]
    # the running average lags: shifting it half an epoch closes the gap on a steadily improving model
    rising = parse_history({"loss": [1, 0.8, 0.6, 0.4], "val_loss": [0.9, 0.7, 0.5, 0.3],
                            "accuracy": [0.6, 0.7, 0.8, 0.9], "val_accuracy": [0.65, 0.75, 0.85, 0.95]})
    shift = {c.code: c for c in diagnose_curves(rising)}["half-epoch-shift"]
    assert shifted_train((0.6, 0.7, 0.8, 0.9)) == pytest.approx([0.65, 0.75, 0.85])
    assert shift.data["mean_gap"] == pytest.approx(0.05) and shift.data["mean_shifted_gap"] == pytest.approx(0.0, abs=1e-12)


def test_a_model_with_the_wrong_number_of_outputs_is_refused_before_any_training(digits, tmp_path: Path) -> None:
    import keras
    from keras import layers

    train, val = _split_digits(digits, tmp_path, 100, 50, seed=8)
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "three.keras")
    with pytest.raises(SplitauditError, match="3 outputs but the data has 10 classes"):
        splitaudit.explain(train, val, model=tmp_path / "three.keras", backbone="none")
    (tmp_path / "junk.keras").write_bytes(b"not a model")
    with pytest.raises(SplitauditError, match="cannot load Keras model"):
        splitaudit.explain(train, val, model=tmp_path / "junk.keras", backbone="none")


def test_forced_training_mode_equals_keras_training_mode_and_restores_moving_statistics(digits) -> None:
    import keras
    from keras import layers

    from splitaudit.explain.modes import GROUPS, OutputKind, evaluate, layers_by_group, mode_passes

    x, y = digits
    xf = x[:128, ..., None].astype("float32")  # raw [0, 255]: moving statistics far from the batch's
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Flatten(), layers.Dense(16), layers.BatchNormalization(),
                              layers.ReLU(), layers.Dense(10, activation="softmax")])
    groups = layers_by_group(model)
    assert [len(groups[g]) for g in GROUPS] == [0, 0, 1, 0]
    before = [np.array(v.numpy()) for v in model.non_trainable_variables]
    forced = evaluate(model, xf, y[:128], OutputKind(), training=[layer for g in GROUPS for layer in groups[g]], batch_size=128)
    for v, b in zip(model.non_trainable_variables, before):
        assert np.array_equal(v.numpy(), b)  # the training-mode pass left BatchNorm's moving averages alone
    reference = keras.losses.sparse_categorical_crossentropy(y[:128], model(xf, training=True))
    assert np.allclose(np.sort(forced.losses), np.sort(np.asarray(reference)), atol=1e-5)
    passes = dict(mode_passes(model, xf, y[:128], OutputKind(), batch_size=128))
    plain = evaluate(model, xf, y[:128], OutputKind())
    assert passes["other"].loss == plain.loss and passes["training"].loss == pytest.approx(forced.loss)
    assert passes["dropout"] is passes["training"]  # no dropout layer: the step repeats, its term is exactly 0
