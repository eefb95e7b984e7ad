"""Read a CSV manifest (``path,label,split`` and an optional ``group`` column) into records."""

from __future__ import annotations

import csv
import os
import stat
import re

from ..errors import SplitauditError
from .folders import group_of
from .records import ImageRecord, SplitSpec

REQUIRED_COLUMNS = ("path", "label", "split")
#: A split of one of these names (any case) is the training split, the first, wherever its rows appear: the other
#: splits are compared with the first one, and a shuffled manifest whose first row is a validation image made the
#: validation split the training one.
TRAINING_NAMES = ("train", "training")
#: Distinct texts shared between records at most (groups may be as many as the rows: then only the first ones).
SHARED_MAX = 100_000


def _regular_fd(path: str) -> int:
    """A descriptor of ``path`` if it is a regular file (a FIFO would block the read forever, a device never end)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SplitauditError(f"manifest {path!r} is not a regular file")
    return fd


def read_manifest(manifest: str | os.PathLike[str], *, group_pattern: re.Pattern[str] | None = None) -> tuple[list[SplitSpec], list[ImageRecord]]:
    """Records for every row; paths are relative to the manifest's folder. Splits keep first-appearance order, but
    for a split named as :data:`TRAINING_NAMES` are, which comes first."""
    manifest = os.fspath(manifest)
    base = os.path.dirname(os.path.abspath(manifest))
    splits: dict[str, SplitSpec] = {}
    records: list[ImageRecord] = []
    # Rows are read one at a time (a list of 1M row dicts held ~400 MB beside the records), and the few distinct
    # split, label and group texts are shared by every record that has them (~100 bytes a record less).
    shared: dict[str, str] = {}
    try:
        with open(_regular_fd(manifest), newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise SplitauditError(
                    f"manifest {manifest!r} lacks column(s) {', '.join(missing)}; "
                    f"expected a header with {', '.join(REQUIRED_COLUMNS)} (and optionally group), got {columns}"
                )
            for lineno, row in enumerate(reader, start=2):
                records.append(_record(manifest, base, lineno, row, splits, shared, group_pattern))
    except OSError as exc:
        raise SplitauditError(f"cannot read manifest {manifest!r}: {exc.strerror or exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise SplitauditError(f"manifest {manifest!r} is not valid CSV: {exc}") from exc
    training = [name for name in splits if name.lower() in TRAINING_NAMES]
    if len(training) == 1:
        splits = {training[0]: splits[training[0]], **splits}
    # Group records by split in that order so every later stage sees contiguous splits.
    order = {name: i for i, name in enumerate(splits)}
    records.sort(key=lambda r: order[r.split])
    return list(splits.values()), records


def _record(manifest: str, base: str, lineno: int, row: dict, splits: dict[str, SplitSpec], shared: dict[str, str],
            group_pattern: re.Pattern[str] | None) -> ImageRecord:
    """One manifest row's record (its split registered in ``splits``; repeated texts taken from ``shared``)."""
    row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
    rel, split = row["path"], row["split"]
    if not rel or not split:
        raise SplitauditError(f"manifest {manifest!r} line {lineno}: empty path or split")
    split = shared.setdefault(split, split)
    splits.setdefault(split, SplitSpec(split, os.path.dirname(manifest) or ".", "manifest"))
    path = rel if os.path.isabs(rel) else os.path.join(base, rel)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    relposix = rel.replace(os.sep, "/")
    label = row["label"] or None
    group = row.get("group") or group_of(relposix, group_pattern)
    return ImageRecord(
        split=split,
        relpath=relposix,
        path=path,
        label=shared.setdefault(label, label) if label is not None else None,
        group=shared.setdefault(group, group) if group is not None and len(shared) < SHARED_MAX else group,
        size=st.st_size if st else -1,
        mtime_ns=st.st_mtime_ns if st else 0,
        inode=st.st_ino if st else 0,
        ctime_ns=st.st_ctime_ns if st else 0,
    )
