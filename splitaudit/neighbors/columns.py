"""A base for this stage's results: frozen dataclasses whose fields are aligned NumPy columns (one row a pair).

They select rows by mask and round-trip through plain arrays, which is how the run's cache stores them (an npz of
plain arrays, nothing executable).
"""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

import numpy as np

C = TypeVar("C", bound="Columns")


class Columns:
    """Mixin for ``@dataclass(frozen=True)`` classes whose every field is a column of the same length."""

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))  # type: ignore[arg-type]

    def select(self: C, mask: np.ndarray) -> C:
        return type(self)(*(getattr(self, f.name)[mask] for f in fields(self)))  # type: ignore[arg-type]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_arrays(cls: type[C], arrays: dict[str, np.ndarray]) -> C | None:
        """The columns back from :meth:`to_arrays`, or ``None`` when ``arrays`` is not of this shape."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        if not all(n in arrays for n in names) or len({len(arrays[n]) for n in names}) > 1:
            return None
        return cls(*(arrays[n] for n in names))
