"""What the scan stage produces: one immutable record per file (or array row), grouped by split."""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload


@dataclass(frozen=True)
class SplitSpec:
    """One split as the user named it.

    ``root`` is the folder (or manifest folder) as given; ``kind`` is ``"folder"``, ``"manifest"`` or ``"array"``.
    """

    name: str
    root: str
    kind: str = "folder"


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One candidate image, before anything has been read from it (slotted: a run holds one per image, 1M at scale,
    and an instance dictionary cost ~50 bytes each).

    ``relpath`` is the POSIX path relative to the split root (``x[12]`` for array rows) and is what reports show;
    ``path`` is the absolute file to read (``None`` for array rows). The stat fields (size, mtime, ctime, inode)
    feed the cache's fast path.
    """

    split: str
    relpath: str
    path: str | None
    label: str | None = None
    group: str | None = None
    size: int = -1
    mtime_ns: int = 0
    inode: int = 0
    ctime_ns: int = 0
    array_index: int = -1


_NO_PATH, _OWN_PATH = -1, -2
_INT64 = (-(2**63), 2**63 - 1)


class RecordTable(Sequence[ImageRecord]):
    """The records of a data set held as columns: an :class:`ImageRecord` per index, made when it is read (by index,
    slice or iteration), equal to the one given.

    A run holds its records through every stage; as objects each is ~420 bytes (the record, its path and relative
    path, four stat integers: ~0.4 GB at 1M images), as columns ~90: the relative paths' UTF-8 in one buffer, the
    path as a per-split prefix of the relative path, the split, label and group as codes, the integers in arrays.
    A record that does not fit that form (a path that does not end with its relative path, an integer beyond 64
    bits, a value of another type) is kept as it is."""

    __slots__ = ("_n", "_text", "_ends", "_split", "_path", "_label", "_group", "_ints", "_values", "_odd")

    def __init__(self, records: Iterable[ImageRecord] = ()) -> None:
        text, ends = bytearray(), array("q")
        codes = {name: array("i") for name in ("split", "path", "label", "group")}
        ints = array("q")
        values: dict[str, list[Any]] = {name: [] for name in codes}
        known: dict[str, dict[tuple[type, Any], int]] = {name: {} for name in codes}
        odd: dict[int, ImageRecord] = {}

        def code(name: str, value: Any) -> int:
            key = (type(value), value)
            got = known[name].get(key)
            if got is None:
                got = known[name][key] = len(values[name])
                values[name].append(value)
            return got

        n = 0
        for r in records:
            numbers = (r.size, r.mtime_ns, r.inode, r.ctime_ns, r.array_index)
            path = r.path
            plain = (type(r.relpath) is str and type(r.split) is str and all(type(v) is int and _INT64[0] <= v <= _INT64[1]
                                                                              for v in numbers)
                     and (path is None or (type(path) is str and r.relpath != "" and path.endswith(r.relpath))))
            try:
                label, group = code("label", r.label), code("group", r.group)
            except TypeError:  # an unhashable label or group
                plain = False
            if not plain:
                odd[n] = r
                label = group = 0
                codes["split"].append(0)
                codes["path"].append(_NO_PATH)
                ints.extend((0, 0, 0, 0, 0))
            else:
                text += r.relpath.encode("utf-8", "surrogatepass")  # any str, lone surrogates too, decodes back
                codes["split"].append(code("split", r.split))
                codes["path"].append(_NO_PATH if path is None else code("path", path[: len(path) - len(r.relpath)]))
                ints.extend(numbers)
            ends.append(len(text))
            codes["label"].append(label)
            codes["group"].append(group)
            n += 1
        self._n, self._text, self._ends, self._ints, self._odd = n, bytes(text), ends, ints, odd
        self._split, self._path, self._label, self._group = codes["split"], codes["path"], codes["label"], codes["group"]
        self._values = tuple(tuple(values[name]) for name in ("split", "path", "label", "group"))

    def __len__(self) -> int:
        return self._n

    def _record(self, i: int) -> ImageRecord:
        odd = self._odd.get(i)
        if odd is not None:
            return odd
        ends = self._ends
        relpath = self._text[ends[i - 1] if i else 0 : ends[i]].decode("utf-8", "surrogatepass")
        p = self._path[i]
        splits, prefixes, labels, groups = self._values
        # positional, in the field order: ~20% less time than by keyword
        return ImageRecord(splits[self._split[i]], relpath, None if p == _NO_PATH else prefixes[p] + relpath,
                           labels[self._label[i]], groups[self._group[i]], *self._ints[5 * i : 5 * i + 5])

    @overload
    def __getitem__(self, index: int) -> ImageRecord: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[ImageRecord, ...]: ...

    def __getitem__(self, index: int | slice) -> ImageRecord | tuple[ImageRecord, ...]:
        if isinstance(index, slice):  # a slice of a tuple is a tuple: the same here
            return tuple(self._record(i) for i in range(*index.indices(self._n)))
        i = operator.index(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("record index out of range")
        return self._record(i)

    def __iter__(self) -> Iterator[ImageRecord]:
        return map(self._record, range(self._n))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (RecordTable, tuple)):  # as a tuple of records compares
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"RecordTable({len(self)} records)"


@dataclass(frozen=True)
class ScanProblem:
    """Something under a split root that could not even be listed (unreadable folder, symlink loop)."""

    split: str
    relpath: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    """The scan result: splits in the user's order, records in deterministic scan order."""

    splits: tuple[SplitSpec, ...]
    records: Sequence[ImageRecord]  # a RecordTable (given as any sequence of records: taken over into one)
    problems: tuple[ScanProblem, ...] = ()
    # In-memory pixel arrays by split name (uint8, N×H×W×C), for records with array_index >= 0.
    arrays: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.records, RecordTable):
            object.__setattr__(self, "records", RecordTable(self.records))

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits)

    def __len__(self) -> int:
        return len(self.records)
