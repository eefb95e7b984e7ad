"""Native inputs (issue #14, items 2 and 3): ``tf.data`` datasets (TFDS splits are ``tf.data`` datasets), Hugging Face
``datasets.Dataset``, lists of PIL images, and Keras' own ``validation_split`` of one folder.

Everything is real: scikit-learn's digits and scikit-image's photographs as image files, real ``tf.data`` pipelines,
a ``datasets.Dataset`` built from real images, a TFDS ``ImageFolder`` built offline, and Keras'
``image_dataset_from_directory`` as the reference for its own split.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import splitaudit
from splitaudit.cli import main
from splitaudit.errors import InvalidParameterError, SplitauditError
from splitaudit.scan import scan

from conftest import tiles_of

FAST = {"backbone": "none", "workers": 1}


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's digits as PNGs in class folders (Keras' layout), with the things Keras' listing skips or keeps:
    a text file, a file at the root, a hidden class folder, an upper-case extension and a nested sub-folder."""
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("keras") / "digits"
    for i, (im, label) in enumerate(zip(d.images[:157], d.target[:157])):
        sub = root / str(label) / ("nested" if i % 11 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        name = f"{i:04d}.PNG" if i % 13 == 0 else f"{i:04d}.png"
        Image.fromarray((im * 16).clip(0, 255).astype(np.uint8)).resize((24, 24)).save(sub / name, "PNG")
    (root / "3" / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes((root / "3" / "0003.png").read_bytes())
    (root / ".cache").mkdir()
    (root / ".cache" / "0001.png").write_bytes((root / "1" / "0001.png").read_bytes())
    return root


# -- Keras' validation_split ---------------------------------------------------------------------------------------


@pytest.mark.tf
def test_validation_split_puts_exactly_keras_files_in_train_and_val(digits_folder: Path) -> None:
    import keras

    root = str(digits_folder)
    for fraction, seed in ((0.2, 1337), (0.35, 7)):
        ds = scan([root], validation_split=fraction, seed=seed)
        for split, subset in (("train", "training"), ("val", "validation")):
            ref = keras.utils.image_dataset_from_directory(root, validation_split=fraction, subset=subset, seed=seed,
                                                           image_size=(24, 24), verbose=False)
            mine = [r for r in ds.records if r.split == split]
            assert [os.path.join(root, r.relpath) for r in mine] == ref.file_paths, (fraction, seed, split)
            # The dataset reshuffles its elements on every pass; each file's class is its folder under the root.
            assert [r.label for r in mine] == [os.path.relpath(p, root).split(os.sep)[0] for p in ref.file_paths]
        assert {r.relpath for r in ds.records}.isdisjoint({"stray.png", "3/notes.txt", ".cache/0001.png"})


def test_validation_split_audits_from_the_command_line(digits_folder: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = main(["check", str(digits_folder), "--validation-split", "0.2", "--seed", "1337", "--backbone", "none",
               "--workers", "1", "--format", "json", "-o", str(out), "--exit-zero"])
    assert rc == 0
    doc = json.loads(out.read_text())
    n = len([p for p in digits_folder.rglob("*") if p.suffix.lower() == ".png" and p.parent != digits_folder
             and ".cache" not in p.parts])
    assert [(s["name"], s["files"]) for s in doc["splits"]] == [("train", n - int(0.2 * n)), ("val", int(0.2 * n))]
    # Keras requires the seed with validation_split; so do we (a usage error, exit 2, one line).
    capsys.readouterr()
    assert main(["check", str(digits_folder), "--validation-split", "0.2", "--backbone", "none"]) == 2
    err = capsys.readouterr().err
    assert "The 'seed' parameter must be an int when validation_split is set" in err and err.count("\n") == 1
    assert main(["check", str(digits_folder), str(digits_folder / "3"), "--validation-split", "0.2", "--seed", "1"]) == 2
    assert "one folder when validation_split is set" in capsys.readouterr().err
    with pytest.raises(InvalidParameterError, match="The 'validation_split' parameter must be None or a float in"):
        splitaudit.audit(digits_folder, validation_split=1.5, seed=1)
    with pytest.raises(SplitauditError, match="Keras' validation subset would be empty"):
        splitaudit.audit(digits_folder, validation_split=0.001, seed=1, **FAST)


# -- tf.data and TFDS ----------------------------------------------------------------------------------------------


def _digit_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron((d.images[:n] * 16).clip(0, 255), np.ones((3, 3))).astype(np.uint8)  # 24x24, real scans
    return x, d.target[:n]


@pytest.mark.tf
def test_tf_data_batched_tuples_and_unbatched_dicts_are_audited_by_element(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    x, y = _digit_arrays(150)
    # val: 30 held-out digits and one copy of training element 7 (as float in [0, 1], as after Rescaling).
    vx = np.concatenate([x[120:150], x[7:8]]).astype(np.float32) / 255.0
    vy = np.concatenate([y[120:150], y[7:8]])
    train = tf.data.Dataset.from_tensor_slices((x[:120, :, :, None], y[:120])).batch(32)
    val = tf.data.Dataset.from_tensor_slices({"image": vx[..., None], "label": vy})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the run's temporary copies go
    seen: dict[str, tuple[int, int]] = {}
    report = splitaudit.audit(train, val, progress=lambda stage, done, total: seen.__setitem__(stage, (done, total)),
                              **FAST)
    assert seen["read train"] == (120, 0) and seen["read val"] == (31, 31)  # a batched dataset's image count is unknown
    assert not list(tmp_path.glob("splitaudit-stream-*")), "the temporary copies outlive the run"
    assert [(s.name, s.files, s.root) for s in report.splits] == [("train", 120, "<tf.data train>"), ("val", 31, "<tf.data val>")]
    exact = [f for f in report.findings if f.check == "exact-duplicates"]
    assert [[(i.split, i.path, i.label) for i in f.images] for f in exact] == [
        [("train", "#000007.png", str(y[7])), ("val", "#000030.png", str(y[7]))]]


@pytest.mark.tf
def test_tf_data_is_read_while_it_streams_and_refused_when_infinite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    x, y = _digit_arrays(300)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    written_before: list[int] = []

    def gen():  # element 250 is produced only after the first elements are on disk: nothing is collected first
        for i in range(300):
            if i == 250:
                written_before.append(len(list(tmp_path.glob("splitaudit-stream-*/*-train/*.png"))))
            yield x[i], y[i]

    sig = (tf.TensorSpec((24, 24), tf.uint8), tf.TensorSpec((), tf.int64))
    train = tf.data.Dataset.from_generator(gen, output_signature=sig)
    val = tf.data.Dataset.from_tensor_slices((x[:10], y[:10])).batch(4)
    report = splitaudit.audit(train, val, select=["exact-duplicates"], **FAST)
    assert written_before and written_before[0] >= 128
    assert len([f for f in report.findings if f.check == "exact-duplicates"]) == 10
    with pytest.raises(InvalidParameterError, match="'train' parameter must be a finite tf.data.Dataset"):
        splitaudit.audit(train.repeat(), val, **FAST)
    with pytest.raises(InvalidParameterError, match="dict elements with an image key"):
        splitaudit.audit(tf.data.Dataset.from_tensor_slices({"a": np.zeros(3)}), val, **FAST)


@pytest.mark.tf
def test_keras_datasets_name_their_classes_and_keep_their_pixels(digits_folder: Path) -> None:
    import keras

    from splitaudit.scan import SpillStore

    kw = {"validation_split": 0.2, "seed": 5, "image_size": (24, 24), "color_mode": "grayscale", "shuffle": False,
          "verbose": False}
    train = keras.utils.image_dataset_from_directory(digits_folder, subset="training", **kw)
    val = keras.utils.image_dataset_from_directory(digits_folder, subset="validation", label_mode="categorical", **kw)
    with SpillStore() as store:  # what a run holds while it audits
        ds = scan([train, val], spill=store)
        for split, ref in (("train", train), ("val", val)):
            mine = [r for r in ds.records if r.split == split]
            assert [r.label for r in mine] == [os.path.relpath(p, digits_folder).split(os.sep)[0] for p in ref.file_paths]
            assert [r.relpath for r in mine[:2]] == ["#000000.png", "#000001.png"]
            # Keras' float32 batches in [0, 255] come back as the files' own pixels.
            for r, p in zip(mine[:5], ref.file_paths):
                assert np.array_equal(np.asarray(Image.open(r.path)), np.asarray(Image.open(p).convert("L")))


@pytest.mark.tf
def test_tfds_splits_built_offline_are_tf_data_datasets(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    tiles = {"cat": tiles_of(photos["chelsea"], 40, 8, step=48), "coffee": tiles_of(photos["coffee"], 48, 8, step=56)}
    for label, ims in tiles.items():
        for i, im in enumerate(ims):
            split = "train" if i < 6 else "test"
            (tmp_path / "data" / split / label).mkdir(parents=True, exist_ok=True)
            im.save(tmp_path / "data" / split / label / f"{i}.png")
    tiles["cat"][1].save(tmp_path / "data" / "test" / "cat" / "copy.png")  # a training tile, again in test
    builder = tfds.ImageFolder(str(tmp_path / "data"))
    train = builder.as_dataset(split="train", shuffle_files=False)
    test = builder.as_dataset(split="test", shuffle_files=False, as_supervised=True)
    report = splitaudit.audit({"train": (train, builder.info), "test": test}, select=["exact-duplicates"], **FAST)
    assert [s.files for s in report.splits] == [12, 5]
    (f,) = report.findings
    assert {i.label for i in f.images} == {"cat", "0"}  # the info names the classes; without it, the index


# -- Hugging Face datasets and PIL lists ---------------------------------------------------------------------------


def _jpeg(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_hugging_face_datasets_of_differently_sized_images(photos: dict[str, np.ndarray]) -> None:
    datasets = pytest.importorskip("datasets")
    cats = [_jpeg(t) for t in tiles_of(photos["chelsea"], 48, 6, step=52)]
    cups = [_jpeg(t) for t in tiles_of(photos["coffee"], 64, 6, step=70)]  # another size
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "coffee"])})
    train = datasets.Dataset.from_dict({"image": cats[:5] + cups[:5], "label": [0] * 5 + [1] * 5}, features=features)
    broken = {"bytes": b"\xff\xd8\xff\xe0 truncated jpeg", "path": None}
    test = datasets.Dataset.from_dict({"image": [cats[5], cups[5], cups[2], broken], "label": [0, 1, 1, 1]},
                                      features=features)
    report = splitaudit.audit(datasets.DatasetDict({"train": train, "test": test}), **FAST)
    assert [(s.name, s.files, s.root) for s in report.splits] == [("train", 10, "<datasets train>"), ("test", 4, "<datasets test>")]
    exact = [[(i.split, i.path, i.label) for i in f.images] for f in report.findings if f.check == "exact-duplicates"]
    assert exact == [[("train", "#000007.jpg", "coffee"), ("test", "#000002.jpg", "coffee")]]  # the JPEG bytes, kept
    unreadable = [f for f in report.findings if f.check == "unreadable-images"]
    assert [i.path for f in unreadable for i in f.images] == ["#000003.jpg"]
    streamed = splitaudit.audit(train, train.to_iterable_dataset(), select=["exact-duplicates"], **FAST)
    assert [s.files for s in streamed.splits] == [10, 10] and len(streamed.findings) == 10  # IterableDataset too
    with pytest.raises(InvalidParameterError, match="a dataset with an Image column"):
        splitaudit.audit(datasets.Dataset.from_dict({"text": ["a"]}), test, **FAST)


def test_lists_of_pil_images_with_or_without_labels(photos: dict[str, np.ndarray], tmp_path: Path) -> None:
    small = tiles_of(photos["astronaut"], 40, 6, step=44)
    large = tiles_of(photos["rocket"], 56, 6, step=60)
    train = [(im, "person") for im in small[:4]] + [(im, "rocket") for im in large[:4]]
    val = (small[4:] + large[4:] + [large[1].rotate(0)], ["person"] * 2 + ["rocket"] * 3)
    report = splitaudit.audit(train, val, **FAST)
    assert [(s.name, s.files) for s in report.splits] == [("train", 8), ("val", 5)]
    pairs = [[(i.split, i.path, i.label) for i in f.images] for f in report.findings if f.check == "exact-duplicates"]
    assert pairs == [[("train", "#000005.png", "rocket"), ("val", "#000004.png", "rocket")]]
    # A fix plan names the moves and drops; there are no files to copy (the temporary copies are gone).
    plan = splitaudit.plan_fix(train, val, **FAST)
    assert [(c.split, c.path) for c in plan.changes] == [("val", "#000004.png")]
    with pytest.raises(SplitauditError, match="nor do streamed datasets"):
        splitaudit.apply_plan(plan, to=tmp_path / "fixed")
    unlabelled = splitaudit.audit(small, large, select=["exact-duplicates"], **FAST)
    assert [s.files for s in unlabelled.splits] == [6, 6] and not unlabelled.findings


def test_unsupported_inputs_get_our_error_not_a_numpy_one(photos: dict[str, np.ndarray]) -> None:
    ragged = [np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)]
    with pytest.raises(InvalidParameterError, match="The 'train.x' parameter must be an image array"):
        splitaudit.audit(ragged, ragged, **FAST)
    with pytest.raises(InvalidParameterError, match="The 'train' parameter must be a folder, an \\(x, y\\) tuple"):
        splitaudit.audit((i for i in range(3)), np.zeros((2, 8, 8), np.uint8), **FAST)
    with pytest.raises(InvalidParameterError, match="The 'train' parameter must be an \\(x, y\\) tuple"):
        splitaudit.audit((np.zeros((2, 8, 8)), None, None), np.zeros((2, 8, 8), np.uint8), **FAST)
    mixed = [Image.fromarray(photos["coffee"][:32, :32]), np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(InvalidParameterError, match="The 'images\\[1\\]' parameter must be a PIL image"):
        splitaudit.audit(mixed, mixed, **FAST)


def test_the_library_imports_neither_tensorflow_nor_datasets_to_scan() -> None:
    code = ("import sys, numpy as np, splitaudit; from splitaudit.scan import scan;"
            "scan([np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8)]);"
            "print(sorted(m for m in ('tensorflow', 'datasets', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}).stdout
    assert out.strip() == "[]"
