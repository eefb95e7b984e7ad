"""Frozen result types: findings with their evidence, what a check returns, per-split summaries, the policy a
verdict is decided under, the verdict and the report.

``AuditReport.to_dict()`` is the JSON document (documented in ``docs/json-schema.md``): every list is sorted, floats
are rounded, and nothing run-dependent (timings, cache hits) is included, so two runs over the same data give
byte-identical JSON.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import invalid_parameter

JSON_SCHEMA_VERSION = 1


class Severity(enum.IntEnum):
    """How bad a finding is; ``--fail-on`` compares against it."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    # Printed as its name ("error"), not its number, also in f-strings (IntEnum would format it as an int).
    def __str__(self) -> str:
        return self.label

    def __format__(self, spec: str) -> str:
        return format(self.label, spec)

    @classmethod
    def parse(cls, value: str | Severity, *, name: str = "severity") -> Severity:
        if isinstance(value, Severity):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            raise invalid_parameter(name, [s.label for s in cls], value) from None


@dataclass(frozen=True, order=True)
class ImageRef:
    """One image as reports name it: its split, its path relative to the split root, and its label."""

    split: str
    path: str
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "path": self.path, "label": self.label}


@dataclass(frozen=True, order=True)
class Evidence:
    """One stage's observation about a pair: ``stage`` is bytes, pixels, phash, dhash, embedding or ncc.

    ``distance`` is a Hamming distance for hashes, 0 for identical bytes or pixels, and ``1 - similarity`` for
    ``embedding`` (cosine of the CNN embeddings) and ``ncc`` (aligned pixel correlation), whose raw value is in
    ``similarity``; ``flipped`` says the match was between one image and the other's mirror image.
    """

    stage: str
    distance: float
    flipped: bool = False
    similarity: float | None = None

    @property
    def identical(self) -> bool:
        """The stage saw the same content: identical bytes or identical decoded pixels."""
        return self.stage in ("bytes", "pixels")

    def describe(self) -> str:
        """The observation in words, as text reports show it: ``same bytes``, ``phash 4 mirrored``, ``cosine 0.981``."""
        if self.identical:
            return f"same {self.stage}"
        mirrored = " mirrored" if self.flipped else ""
        if self.similarity is not None:
            name = "cosine" if self.stage == "embedding" else self.stage
            return f"{name} {self.similarity:.3f}{mirrored}"
        return f"{self.stage} {self.distance:g}{mirrored}"

    @staticmethod
    def describe_all(evidence: Iterable[Evidence]) -> str:
        """Several observations on one line, in the given order (empty when there are none)."""
        return ", ".join(e.describe() for e in evidence)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "distance": _clean(self.distance), "flipped": self.flipped,
                "similarity": _clean(self.similarity)}


@dataclass(frozen=True)
class Finding:
    """One problem a check found.

    ``images`` are the images involved (for a cross-split pair: the earlier split's image first), ``category``
    sorts pair findings by how sure we are (``exact``, ``identical-pixels``, ``near-duplicate``,
    ``very-similar``), and ``data``
    holds check-specific facts (counts, p-values) as JSON-ready values. ``accepted``: a baseline lists this
    finding (``splitaudit.report.baseline``); it is reported but does not count towards the verdict.
    """

    check: str
    severity: Severity
    message: str
    images: tuple[ImageRef, ...] = ()
    category: str | None = None
    evidence: tuple[Evidence, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    accepted: bool = False

    @property
    def id(self) -> str:
        """A stable identifier (check + images): what a baseline file records to accept a finding."""
        key = json.dumps([self.check, self.category, [i.to_dict() for i in self.images]], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def sort_key(self) -> tuple[Any, ...]:
        return (-self.severity, self.check, self.images, self.message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "check": self.check,
            "severity": self.severity.label,
            "message": self.message,
            "category": self.category,
            "images": [i.to_dict() for i in self.images],
            "evidence": [e.to_dict() for e in sorted(self.evidence)],
            # JSON schema 1 marks an accepted finding inside its data.
            "data": _clean({**self.data, "baseline": "accepted"} if self.accepted else dict(self.data)),
        }


@dataclass(frozen=True)
class CheckResult:
    """What a check returns: its findings, and the tables it measured for the report's ``distribution`` object
    (section name -> JSON-ready value; empty for most checks), whether or not anything was flagged."""

    findings: tuple[Finding, ...] = ()
    tables: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", tuple(self.findings))
        object.__setattr__(self, "tables", MappingProxyType(dict(self.tables)))


@dataclass(frozen=True)
class SplitSummary:
    """Counts for one split. ``leak_fraction`` is the share of its images with a copy in an earlier split."""

    name: str
    root: str
    files: int
    images: int
    unreadable: int
    skipped: int
    classes: tuple[tuple[str, int], ...] = ()
    leak_fraction: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": self.root,
            "files": self.files,
            "images": self.images,
            "unreadable": self.unreadable,
            "skipped": self.skipped,
            "classes": {k: v for k, v in self.classes},
            "leak_fraction": _clean(self.leak_fraction),
        }


@dataclass(frozen=True)
class Policy:
    """What fails a run: a finding at or above ``fail_on`` that no baseline accepted, except copy findings of the
    ``leak_checks`` while every split's leak fraction is at most ``max_leak_fraction``. See
    :func:`splitaudit.report.verdict.decide`."""

    fail_on: Severity = Severity.ERROR
    max_leak_fraction: float = 0.0
    leak_checks: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "fail_on", Severity.parse(self.fail_on, name="fail_on"))
        m = self.max_leak_fraction
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m <= 1:
            raise invalid_parameter("max_leak_fraction", "a float in [0, 1]", m)
        object.__setattr__(self, "max_leak_fraction", float(m))
        object.__setattr__(self, "leak_checks", frozenset(self.leak_checks))


@dataclass(frozen=True)
class Verdict:
    """Pass or fail, and why, as decided by ``fail_on`` and ``max_leak_fraction``."""

    failed: bool
    fail_on: Severity
    counts: tuple[tuple[str, int], ...]
    reason: str
    tolerated: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "failed": self.failed,
            "fail_on": self.fail_on.label,
            "counts": dict(self.counts),
            "reason": self.reason,
            "tolerated_leak_findings": self.tolerated,
        }


class LazyRows(Sequence):
    """A long list of the report (a dictionary per image) whose items are made when read, from arrays: the JSON
    writer (:meth:`AuditReport.write_json`) cleans and writes them one at a time; ``to_dict`` makes them a list."""

    __slots__ = ()


@dataclass(frozen=True, eq=False)
class BestCopies(LazyRows):
    """``copies.best`` of one split: each evaluation image's best copy score (``None`` without candidates), the cut
    it was held to and its partner (``"split/path"``, ``None`` without one), in record order. A dictionary per image
    made at once held ~40 MiB from the checks' end to the report's at 1M images (100k eval images; issue #15); the
    arrays hold 40 bytes an image, the strings being the records' own."""

    paths: Any  # object array: each image's path in its split
    scores: Any  # float array, NaN where the image had no candidate
    cuts: Any  # float array
    partner_splits: Any  # object array: the partner's split, None without a partner
    partner_paths: Any  # object array

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        score, split = float(self.scores[i]), self.partner_splits[i]
        return {"path": self.paths[i], "score": None if score != score else round(score, 4),
                "cut": round(float(self.cuts[i]), 4),
                "partner": f"{split}/{self.partner_paths[i]}" if split is not None else None}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(self.__getitem__, range(len(self)))


@dataclass(frozen=True)
class AuditReport:
    """The result of :func:`splitaudit.audit`: splits, findings (sorted, most severe first) and the verdict."""

    splits: tuple[SplitSummary, ...]
    findings: tuple[Finding, ...]
    verdict: Verdict
    checks: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    embeddings: Mapping[str, Any] = field(default_factory=dict, compare=False)
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)
    cache: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: Distribution tables by section (``classes``, ``properties``, ``distinguishability``, ``difficulty``,
    #: ``separability``, ``leak_impact``): what the distribution checks measured, flagged or not.
    distribution: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: The policy ``verdict`` was decided under (re-deciding with a baseline uses it again).
    policy: Policy = Policy()
    #: The copy verifier's calibration and every evaluation image's best copy score (empty when it did not run).
    copies: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def failed(self) -> bool:
        return self.verdict.failed

    def by_check(self, check: str) -> list[Finding]:
        """Findings of one check, in report order."""
        return [f for f in self.findings if f.check == check]

    def to_dict(self) -> dict[str, Any]:
        return self._document([f.to_dict() for f in self.findings])

    def _document(self, findings: Any, lazy: bool = False) -> dict[str, Any]:
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "verdict": self.verdict.to_dict(),
            "splits": [s.to_dict() for s in self.splits],
            "checks": {name: _clean(dict(params)) for name, params in self.checks},
            "embeddings": _clean(dict(self.embeddings)) or None,
            "copies": _clean(dict(self.copies), lazy) or None,
            "distribution": _clean(dict(self.distribution)),
            "findings": findings,
        }

    def to_json(self) -> str:
        return indented_json(self.to_dict())

    def write_json(self, fh: Any) -> None:
        """:meth:`to_json`'s text written to the text file ``fh`` a few MB at a time (:func:`write_indented_json`),
        each finding's dictionary made as it is written, not all of them first (a 1M-image check has 45,817; issue
        #15)."""
        write_indented_json(self._document(_Each(self.findings, Finding.to_dict), lazy=True), fh)

    def _repr_html_(self) -> str:
        """Jupyter shows a report as the curator's HTML page (one self-contained document). Without embedded
        originals: a notebook keeps its outputs, and megabytes of them per report would bloat it."""
        from ..options import Options
        from ..render.html import render_html

        return render_html(self, options=Options(html_originals="none"))


def indented_json(document: Any) -> str:
    """``json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\\n"``, the same text, made faster and
    in less memory. With ``indent`` the standard library's encoder is its pure-Python one, a generator per nested value:
    the 60k-image check's 32 MB report took 5.1 s (issue #16). Here each value is written by one plain recursive call
    into one buffer (``json.dumps`` also joins a list of all its pieces: +76 MiB for an 11 MB report). Strings and
    floats are encoded by the very functions ``json`` uses (``encode_basestring``, ``float.__repr__``)."""
    import io

    out = io.StringIO()
    _indented(document, out.write, "\n")
    out.write("\n")
    return out.getvalue()


class _Each:
    """A list for :func:`write_indented_json` whose items are made as they are written: ``fn(item)`` for each of
    ``items``."""

    __slots__ = ("fn", "items")

    def __init__(self, items: Sequence[Any], fn: Any) -> None:
        self.items, self.fn = items, fn

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return map(self.fn, self.items)


#: Characters :func:`write_indented_json` gathers before it hands them to the file.
JSON_CHUNK = 1 << 22


def write_indented_json(document: Any, fh: Any, chunk: int = JSON_CHUNK) -> None:
    """Write :func:`indented_json`'s text of ``document`` to the text file ``fh``, never holding more than about
    ``chunk`` characters of it: a 1M-image check's report is 71 MB of text, and its buffer and the string made from
    it raised the check's peak by ~140 MB (issue #15). Gathered in a buffer and handed over at list items once it
    holds ``chunk`` characters: one file write per small piece would be several times slower."""
    import io

    out = io.StringIO()

    def flush() -> None:
        if out.tell() >= chunk:
            fh.write(out.getvalue())
            out.seek(0)
            out.truncate()

    _indented(document, out.write, "\n", flush)
    out.write("\n")
    fh.write(out.getvalue())


def _indented(o: Any, write: Any, newline: str, flush: Any = None) -> None:
    """Write ``o`` as ``json``'s encoder with ``indent=2, sort_keys=True, ensure_ascii=False`` does; ``newline`` is
    the line break and the indentation of ``o``'s own line; ``flush()`` is called after each list item."""
    if isinstance(o, str):
        write(_encode_string(o))
    elif o is None:
        write("null")
    elif o is True:
        write("true")
    elif o is False:
        write("false")
    elif isinstance(o, int):
        write(int.__repr__(o))
    elif isinstance(o, float):
        write(_float_text(o))
    elif isinstance(o, (list, tuple, _Each)):
        if not o:
            write("[]")
            return
        inner = newline + "  "
        write("[")
        sep = inner
        for v in o:
            write(sep)
            sep = "," + inner
            _indented(v, write, inner, flush)
            if flush is not None:
                flush()
        write(newline + "]")
    elif isinstance(o, dict):
        if not o:
            write("{}")
            return
        inner = newline + "  "
        write("{")
        sep = inner
        for k, v in sorted(o.items()):
            write(sep + _encode_string(_key_text(k)) + ": ")
            sep = "," + inner
            _indented(v, write, inner, flush)
        write(newline + "}")
    else:
        raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


_encode_string = json.encoder.encode_basestring  # type: ignore[attr-defined]  # (ensure_ascii=False: json's own)


def _float_text(o: float) -> str:
    if o != o:
        return "NaN"
    if o == float("inf"):
        return "Infinity"
    if o == -float("inf"):
        return "-Infinity"
    return float.__repr__(o)


def _key_text(k: Any) -> str:
    """A dict key as ``json`` writes it (its rules: strings, numbers, booleans and None only)."""
    if isinstance(k, str):
        return k
    if isinstance(k, float):
        return _float_text(k)
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    if isinstance(k, int):
        return int.__repr__(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


def _clean(value: Any, lazy: bool = False) -> Any:
    """JSON-ready and deterministic: floats rounded to 6 significant digits, tuples as lists, NumPy scalars unwrapped.
    ``lazy``: a :class:`LazyRows` stays lazy, each item cleaned as it is written (:func:`write_indented_json`)."""
    if isinstance(value, LazyRows):
        return _Each(value, _clean) if lazy else [_clean(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return {str(k): _clean(v, lazy) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, lazy) for v in value]
    return str(value)
