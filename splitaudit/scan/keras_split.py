"""Keras' own split of one folder: the files ``keras.utils.image_dataset_from_directory(directory,
validation_split=F, subset="training" / "validation", seed=N)`` puts in each subset, without importing Keras.

This reproduces Keras 3's ``dataset_utils.index_directory`` and ``get_training_or_validation_split`` exactly: class
folders are the sorted, non-hidden sub-folders; each is walked with ``os.walk`` (symlinked sub-folders not followed),
roots sorted, files sorted, kept when their lower-cased name ends with one of Keras' image extensions; the paths and
labels are shuffled by ``numpy.random.RandomState(seed)`` (one generator each, as Keras does); the last
``int(F * n)`` files are the validation subset and the others the training subset. ``tests/test_inputs.py`` compares
the result with Keras' ``file_paths``.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import SplitauditError
from .folders import group_of, readable
from .records import ImageRecord, SplitSpec

#: ``keras.src.utils.image_dataset_utils.ALLOWLIST_FORMATS``: files with other endings are not in either subset.
KERAS_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
#: The split names of the two subsets (Keras' ``subset="training"`` and ``subset="validation"``).
TRAIN, VAL = "train", "val"


def keras_index(directory: str, seed: int) -> tuple[list[str], np.ndarray, list[str]]:
    """``(file_paths, labels, class_names)`` in Keras' shuffled order, paths joined onto ``directory`` as given."""
    class_names = [d for d in sorted(os.listdir(directory))
                   if os.path.isdir(os.path.join(directory, d)) and not d.startswith(".")]
    filenames: list[str] = []
    labels_list: list[int] = []
    for index, subdir in enumerate(class_names):
        top = os.path.join(directory, subdir)
        for root, _, files in sorted(os.walk(top), key=lambda x: x[0]):
            for fname in sorted(files):
                if fname.lower().endswith(KERAS_FORMATS):
                    filenames.append(os.path.join(subdir, os.path.relpath(os.path.join(root, fname), top)))
                    labels_list.append(index)
    file_paths = [os.path.join(directory, f) for f in filenames]
    labels = np.asarray(labels_list, dtype="int32")
    np.random.RandomState(seed).shuffle(file_paths)
    np.random.RandomState(seed).shuffle(labels)
    return file_paths, labels, class_names


def keras_subsets(directory: str, validation_split: float, seed: int, *,
                  group_pattern: re.Pattern[str] | None = None) -> tuple[list[SplitSpec], list[ImageRecord]]:
    """The training and validation subsets of ``directory`` as splits ``train`` and ``val`` (Keras' order)."""
    if not os.path.isdir(directory):
        raise SplitauditError(f"{directory!r} is not a folder")
    file_paths, labels, class_names = keras_index(directory, seed)
    n_val = int(validation_split * len(file_paths))
    if n_val == 0:
        # Keras' samples[:-0] would give an empty training subset: nothing to audit either way.
        raise SplitauditError(f"validation_split={validation_split:g} of the {len(file_paths)} image file(s) in "
                              f"{directory!r} is 0 files: Keras' validation subset would be empty (its training "
                              "subset too); use a larger fraction or more images")
    records: list[ImageRecord] = []
    for split, paths, labs in ((TRAIN, file_paths[:-n_val], labels[:-n_val]), (VAL, file_paths[-n_val:], labels[-n_val:])):
        for path, label in zip(paths, labs.tolist()):
            relpath = readable(os.path.relpath(path, directory).replace(os.sep, "/"))
            try:
                st: os.stat_result | None = os.stat(path)
            except OSError:
                st = None  # vanished or a broken link: the features stage reports it as unreadable
            records.append(ImageRecord(
                split=split, relpath=relpath, path=os.path.abspath(path), label=readable(class_names[label]),
                group=group_of(relpath, group_pattern) if group_pattern is not None else None,
                size=st.st_size if st else -1, mtime_ns=st.st_mtime_ns if st else 0,
                inode=st.st_ino if st else 0, ctime_ns=st.st_ctime_ns if st else 0))
    return [SplitSpec(TRAIN, directory, "subset"), SplitSpec(VAL, directory, "subset")], records
