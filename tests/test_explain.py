"""splitaudit explain on real images (scikit-learn's digits written as PNG files) and real Keras training.

Each scenario trains a small model with fixed seeds, saves it and its log the way a user would, and checks that
the decomposition adds up to the reported gap and names the cause the scenario was built to have.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
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

    report = splitaudit.explain(train, val, model=tmp_path / "model.keras", history=log, epochs=4)
    print(_report(report))
    assert_adds_up(report)
    m = report.subject("model").accuracy
    assert m.gap > 0
    assert report.dominant in ("dropout", "timing")
    assert m.term("dropout") > 0 and m.term("timing") + m.term("dropout") > abs(m.causes()["data"])
    assert m.causes()["data"] < 0  # at the same weights, in inference mode, train is above val
    assert abs(m.term("reproduction")) < 0.01  # explain feeds the model what it was trained on
    assert report.model is not None and report.model.input_scale.chosen == "0-255" and not report.model.input_scale.flagged
