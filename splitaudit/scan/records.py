"""What the scan stage produces: one immutable record per file (or array row), grouped by split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    records: tuple[ImageRecord, ...]
    problems: tuple[ScanProblem, ...] = ()
    # In-memory pixel arrays by split name (uint8, N×H×W×C), for records with array_index >= 0.
    arrays: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits)

    def __len__(self) -> int:
        return len(self.records)
