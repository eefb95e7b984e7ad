"""Walk split folders in the Keras ``image_dataset_from_directory`` layout (or flat folders).

Files are not opened here: whether a file is an image is decided from its magic bytes by the features stage, so an
unchanged dataset costs one ``stat`` per file. The walk is sorted (deterministic on every file system), follows
directory symlinks but never enters the same directory twice (loops are safe), and skips hidden entries such as
``.git`` or ``.DS_Store``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from .records import ImageRecord, ScanProblem


def walk_split(name: str, root: str, *, group_pattern: re.Pattern[str] | None = None) -> tuple[list[ImageRecord], list[ScanProblem]]:
    """List every visible file below ``root`` as a record of split ``name``."""
    records: list[ImageRecord] = []
    problems: list[ScanProblem] = []
    root_abs = os.path.abspath(root)
    append = records.append  # this loop runs once per file: an unchanged re-check of 100k files is ~0.5 s of it
    for relpath, label, entry_path, st in _walk(root_abs, name, problems):
        append(ImageRecord(
            split=name,
            relpath=relpath,
            path=entry_path,
            label=label,
            group=group_of(relpath, group_pattern) if group_pattern is not None else None,
            size=st.st_size if st else -1,
            mtime_ns=st.st_mtime_ns if st else 0,
            inode=st.st_ino if st else 0,
            ctime_ns=st.st_ctime_ns if st else 0,
        ))
    return records, problems


def group_of(relpath: str, pattern: re.Pattern[str] | None) -> str | None:
    """The group id of a path: the first capture group of ``pattern`` (or the whole match), else ``None``."""
    if pattern is None:
        return None
    m = pattern.search(relpath)
    if m is None:
        return None
    return m.group(1) if pattern.groups else m.group(0)


def readable(name: str) -> str:
    """A file name as text every output accepts: bytes that are not UTF-8 (which Python holds as surrogate escapes,
    and which UTF-8 files, SQLite and JSON consumers reject) become ``\\xNN``. The record's ``path`` keeps the real
    name for reading; ``relpath`` and labels, which reports show, use this form."""
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _walk(root: str, split: str, problems: list[ScanProblem]) -> Iterator[tuple[str, str | None, str, os.stat_result | None]]:
    """Yield ``(relpath, label, path, stat)`` per file. Keras layout: the first folder below the root is the class;
    files directly in the root have no label."""
    seen: set[tuple[int, int]] = set()
    # Stack of (folder, its relpath prefix ending in "/" or "", the label of files inside it).
    stack: list[tuple[str, str, str | None]] = [(root, "", None)]
    try:
        st = os.stat(root)
        seen.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    while stack:
        directory, prefix, label = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problems.append(ScanProblem(split, prefix.rstrip("/") or ".", f"cannot list folder: {exc.strerror or exc}"))
            continue
        subdirs: list[tuple[str, str, str | None]] = []
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks; answered from the directory listing for plain folders
            except OSError:
                is_dir = False
            if is_dir:
                rel = prefix + readable(name)
                try:
                    st = entry.stat()
                except OSError as exc:
                    problems.append(ScanProblem(split, rel, f"cannot stat folder: {exc.strerror or exc}"))
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    # A symlink back into a folder we already walk: listing it again would loop or double-count.
                    problems.append(ScanProblem(split, rel, "symlink to a folder already scanned; skipped"))
                    continue
                seen.add(key)
                subdirs.append((entry.path, rel + "/", label if label is not None else readable(name)))
                continue
            try:
                st = entry.stat()
            except OSError:
                st = None  # broken symlink or vanished file: the features stage reports it as unreadable
            yield prefix + readable(name), label, entry.path, st
        # Depth-first in name order: push in reverse so the smallest name is walked first.
        stack.extend(reversed(subdirs))
