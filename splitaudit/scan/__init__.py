"""Stage 1 of the pipeline: find the images of every split (folders, a CSV manifest, in-memory arrays, or streamed
``tf.data`` / Hugging Face / PIL inputs written once to a temporary folder; see :mod:`.streams`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from ..errors import SplitauditError, invalid_parameter
from .arrays import array_records
from .folders import walk_split
from .keras_split import keras_subsets
from .manifest import read_manifest
from .records import Dataset, ImageRecord, ScanProblem, SplitSpec
from .streams import ACCEPTED, SpillStore, as_stream, stream_records

__all__ = ["Dataset", "ImageRecord", "ScanProblem", "SplitSpec", "SpillStore", "scan", "compile_group_pattern"]

SplitInput = Union[str, "os.PathLike[str]", tuple, Any]
_ARRAY_NAMES = ("train", "val", "test")


def compile_group_pattern(group_by: str | None) -> re.Pattern[str] | None:
    """Compile ``--group-by``; a bad pattern is a parameter error, not a traceback."""
    if group_by is None:
        return None
    try:
        return re.compile(group_by)
    except re.error as exc:
        raise invalid_parameter("group_by", "a valid regular expression", group_by) from exc


def scan(
    splits: Mapping[str, SplitInput] | Sequence[SplitInput] | None = None,
    *,
    manifest: str | os.PathLike[str] | None = None,
    group_by: str | None = None,
    spill: SpillStore | None = None,
    validation_split: float | None = None,
    seed: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Dataset:
    """List the records of every split.

    Parameters
    ----------
    splits:
        Either a mapping ``{name: source}`` or a sequence of sources. A source is a folder path (named after its
        folder), an ``(x, y)`` tuple or an ``x`` array, a ``tf.data.Dataset``, a ``datasets.Dataset`` or a list of
        PIL images (named ``train``, ``val``, ``test`` by position; a ``datasets.DatasetDict`` is a mapping).
    manifest:
        A CSV file with ``path,label,split`` (and optionally ``group``) columns; exclusive with ``splits``.
    group_by:
        A regular expression applied to each path relative to its split root; its first capture group (or whole
        match) is the record's group, used by the group-leakage check.
    spill:
        Where streamed inputs are written (required for them; :func:`splitaudit.run.open_run` passes one and
        removes it when the run ends).
    validation_split, seed:
        Split one folder as ``keras.utils.image_dataset_from_directory(folder, validation_split=...,
        subset="training"/"validation", seed=...)`` does, into splits ``train`` and ``val`` (see
        :mod:`.keras_split`).
    progress:
        Called as ``progress(stage, done, total)`` while streamed inputs are read.
    """
    pattern = compile_group_pattern(group_by)
    if manifest is not None:
        if splits:
            raise SplitauditError("give either split folders/arrays or a manifest, not both")
        specs, records = read_manifest(manifest, group_pattern=pattern)
        if len(specs) < 2:
            # One split cannot leak into another: a gate on such a manifest would always pass.
            raise SplitauditError(f"manifest {os.fspath(manifest)!r} names {len(specs)} split(s) "
                                  f"({', '.join(s.name for s in specs) or 'none'}); at least two are needed (e.g. train and val)")
        return Dataset(tuple(specs), tuple(records))

    named = _name_sources(splits)
    if validation_split is not None:
        if len(named) != 1 or not _is_path(named[0][1]):
            raise invalid_parameter("splits", "one folder when validation_split is set (Keras splits it into train "
                                    "and val)", [n for n, _ in named])
        if seed is None:
            raise invalid_parameter("seed", "an int when validation_split is set (Keras needs the seed that "
                                    "image_dataset_from_directory got)", seed)
        specs, records = keras_subsets(os.fspath(named[0][1]), validation_split, seed, group_pattern=pattern)
        return Dataset(tuple(specs), tuple(records))
    if len(named) < 2:
        raise invalid_parameter("splits", "at least two splits (e.g. train/ val/)", [n for n, _ in named])
    specs: list[SplitSpec] = []
    records: list[ImageRecord] = []
    problems: list[ScanProblem] = []
    arrays: dict[str, Any] = {}
    refuse_overlaps([(name, os.fspath(source)) for name, source in named if _is_path(source)])
    for name, source in named:
        if _is_path(source):
            root = os.fspath(source)
            if not os.path.isdir(root):
                raise SplitauditError(f"split {name!r}: {root!r} is not a folder")
            recs, probs = walk_split(name, root, group_pattern=pattern)
            specs.append(SplitSpec(name, root, "folder"))
            records.extend(recs)
            problems.extend(probs)
        elif (stream := as_stream(source)) is not None:
            if spill is None:
                raise SplitauditError(f"split {name!r}: a streamed input ({stream.kind}) needs a run to hold its images; "
                                      "use splitaudit.audit() or splitaudit.run.open_run()")
            records.extend(stream_records(name, stream, spill, group_pattern=pattern, progress=progress))
            specs.append(SplitSpec(name, f"<{stream.kind} {name}>", "stream"))
        else:
            x, y = _array_source(name, source)
            pixels, recs = array_records(name, x, y)
            arrays[name] = pixels
            specs.append(SplitSpec(name, f"<array {name}>", "array"))
            records.extend(recs)
    return Dataset(tuple(specs), tuple(records), tuple(problems), arrays)


def refuse_overlaps(folders: list[tuple[str, str]]) -> None:
    """Refuse split folders that contain one another (``check data data/val``): every file of the inner split would
    be audited twice, under two labels, as a 'leak' of itself. Links are resolved first."""
    real = [(name, os.path.realpath(root)) for name, root in folders]
    for i, (a, ra) in enumerate(real):
        for b, rb in real[i + 1 :]:
            if ra == rb or rb.startswith(os.path.join(ra, "")) or ra.startswith(os.path.join(rb, "")):
                outer, inner = (a, b) if len(ra) <= len(rb) else (b, a)
                raise SplitauditError(
                    f"splits {outer!r} and {inner!r} overlap: {inner!r} ({dict(real)[inner]}) is "
                    + ("the same folder as" if ra == rb else "inside") + f" {outer!r} ({dict(real)[outer]}); "
                    "give disjoint folders (e.g. data/train data/val)")


def _array_source(name: str, source: Any) -> tuple[Any, Any]:
    """``(x, y)`` of an array split; anything that is no array-like is refused with the accepted inputs."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise invalid_parameter(name, "an (x, y) tuple", f"a tuple of {len(source)} items")
        x, y = source
    else:
        x, y = source, None
    if not (isinstance(x, (list, tuple)) or hasattr(x, "__array__") or hasattr(x, "__array_interface__")):
        raise invalid_parameter(name, ACCEPTED, f"a {type(x).__module__}.{type(x).__qualname__}")
    return x, y


def _is_path(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


def _name_sources(splits: Mapping[str, SplitInput] | Sequence[SplitInput] | None) -> list[tuple[str, SplitInput]]:
    if splits is None:
        return []
    if isinstance(splits, Mapping):
        named = [(str(k), v) for k, v in splits.items()]
    else:
        named = []
        for i, source in enumerate(splits):
            if _is_path(source):
                name = os.path.basename(os.path.normpath(os.fspath(source))) or f"split{i}"
            else:
                name = _ARRAY_NAMES[i] if i < len(_ARRAY_NAMES) else f"split{i}"
            named.append((name, source))
    seen: set[str] = set()
    for name, _ in named:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise invalid_parameter("split name", "letters, digits, '.', '_' or '-'", name)
        if name in seen:
            raise SplitauditError(f"two splits are named {name!r}; name them with --split NAME=PATH")
        seen.add(name)
    return named
