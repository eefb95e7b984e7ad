"""The registry of checks. A check is a function ``(ctx, *, param=default, ...) -> list[Finding] | CheckResult``.

Its keyword-only parameters *are* its configuration: the registry reads names, defaults and types from the
signature, validates user options against them (unknown names, wrong types and values outside a declared
``Annotated[int, Range(0, 64)]`` range are errors naming the parameter; NaN and infinities never pass), and calls
the function.

The contract: a check returns what it found and stores nothing on the context. A check that only finds things
returns its list of findings; a check that also measures tables for the report's ``distribution`` object (class
counts, AUCs, probe accuracy) returns a :class:`~splitaudit.report.model.CheckResult` with both. Either way
:meth:`Check.run` gives a ``CheckResult``. Work several checks share (a fitted probe) goes through
``ctx.memo(key, fn)``, which only caches; results never travel through the context. A check that raises is
wrapped in :class:`~splitaudit.errors.CheckError`, never swallowed.

A check also declares how its findings are shown (``display``, one of :data:`DISPLAYS`), so renderers and the fix
planner work from that declaration and never from check names.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CheckError, SplitauditError, invalid_parameter
from ..report.model import CheckResult

if TYPE_CHECKING:
    from ..report.model import Finding
    from .context import AuditContext

CheckFn = Callable[..., "list[Finding] | CheckResult"]

#: How a check's findings are shown: ``pair`` (two copies in two splits, with evidence), ``group`` (images that
#: belong together: copies, a shared group id), ``image`` (one file each) or ``table`` (facts about a split or a
#: class, no images to look at).
DISPLAYS = ("pair", "group", "image", "table")


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric check parameter, declared as ``param: Annotated[int, Range(0, 64)] = 6``.
    ``None`` leaves a side open; ``open_low``/``open_high`` exclude the bound itself (``alpha`` in (0, 1))."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.open_high and value == self.high)))

    def __str__(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.open_low or self.low is None else '['}{lo}, {hi}{')' if self.open_high or self.high is None else ']'}"


#: Parameter types with their ranges, for check signatures (``max_phash: HashRadius = 6``).
HashRadius = typing.Annotated[int, Range(0, 64)]  # Hamming distance between two 64-bit hashes
Count = typing.Annotated[int, Range(1)]
Share = typing.Annotated[float, Range(0, 1)]
Alpha = typing.Annotated[float, Range(0, 1, open_low=True, open_high=True)]  # a significance level
Cosine = typing.Annotated[float, Range(-1, 1)]
NonNegative = typing.Annotated[float, Range(0)]


def _ranges(func: CheckFn) -> dict[str, Range]:
    """The :class:`Range` declared on each parameter of ``func`` (through ``typing.Annotated``)."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # an annotation that cannot be resolved: no ranges, the types still apply
        return {}
    return {name: next(m for m in hint.__metadata__ if isinstance(m, Range))
            for name, hint in hints.items()
            if hasattr(hint, "__metadata__") and any(isinstance(m, Range) for m in hint.__metadata__)}


@dataclass(frozen=True)
class Check:
    """A registered check: its name, one-line summary, function, how its findings are shown, and parameters."""

    name: str
    summary: str
    func: CheckFn
    leak: bool = False  # its findings are cross-split copies: they count toward --max-leak-fraction
    display: str = "table"  # one of DISPLAYS

    @property
    def params(self) -> dict[str, Any]:
        """Parameter name -> default value."""
        sig = inspect.signature(self.func)
        return {n: p.default for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def validate(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options with names normalised (``max-phash`` -> ``max_phash``) and types checked; defaults filled in."""
        defaults = self.params
        resolved = dict(defaults)
        for raw_name, value in options.items():
            name = raw_name.replace("-", "_")
            if name not in defaults:
                raise invalid_parameter(raw_name, sorted(defaults) or "no parameters", raw_name, where=f"check {self.name!r}").with_message(
                    f"Check {self.name!r} has no parameter {raw_name!r}; its parameters are "
                    + ("{" + ", ".join(repr(p) for p in sorted(defaults)) + "}" if defaults else "none")
                    + f". Got {raw_name!r} instead."
                )
            resolved[name] = _coerce(self.name, name, defaults[name], value, _ranges(self.func).get(name))
        return resolved

    def run(self, ctx: AuditContext, options: Mapping[str, Any]) -> CheckResult:
        """Validate ``options`` and run the check on ``ctx``: its findings and tables."""
        params = self.validate(options)
        try:
            out = self.func(ctx, **params)
        except SplitauditError:
            raise
        except Exception as exc:  # a crashing check is an error of the run, with the check named
            raise CheckError(self.name, exc) from exc
        return out if isinstance(out, CheckResult) else CheckResult(tuple(out))


def _coerce(check: str, name: str, default: Any, value: Any, allowed: Range | None = None) -> Any:
    kind = type(default)
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise invalid_parameter(name, f"of type {kind.__name__}", value, where=f"check {check!r}")
    if kind in (int, float):
        if kind is float and not math.isfinite(value):
            raise invalid_parameter(name, "a finite number", value, where=f"check {check!r}")
        if allowed is not None and value not in allowed:
            raise invalid_parameter(name, f"{'an' if kind is int else 'a'} {kind.__name__} in {allowed}", value, where=f"check {check!r}")
    return value


_REGISTRY: dict[str, Check] = {}


def register(name: str, *, summary: str, leak: bool = False, display: str = "table") -> Callable[[CheckFn], CheckFn]:
    """Decorator adding a check function to the registry under ``name``; ``display`` is one of :data:`DISPLAYS`."""
    if display not in DISPLAYS:
        raise invalid_parameter("display", DISPLAYS, display, where=f"check {name!r}")

    def deco(func: CheckFn) -> CheckFn:
        if name in _REGISTRY:
            raise RuntimeError(f"check {name!r} registered twice")
        ranges = _ranges(func)
        for p in inspect.signature(func).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
                raise RuntimeError(f"check {name!r}: parameter {p.name!r} needs a default")
            if p.name in ranges and p.default not in ranges[p.name]:
                raise RuntimeError(f"check {name!r}: default {p.default!r} of {p.name!r} is outside {ranges[p.name]}")
        _REGISTRY[name] = Check(name, summary, func, leak, display)
        return func

    return deco


def all_checks() -> dict[str, Check]:
    """Every registered check by name (importing the built-in check modules on first use)."""
    from . import builtin  # noqa: F401  (registers the built-in checks)

    return dict(sorted(_REGISTRY.items()))


def display_of(check: str) -> str:
    """How findings of the check named ``check`` are shown (``table`` for a name no check registered)."""
    from . import builtin  # noqa: F401  (registers the built-in checks)

    found = _REGISTRY.get(check)
    return found.display if found is not None else "table"


def resolve_selection(select: list[str] | None, ignore: list[str] | None) -> list[Check]:
    """The checks to run: ``select`` (default: all) minus ``ignore``, in registry order; unknown names are errors."""
    checks = all_checks()
    for param, names in (("select", select), ("ignore", ignore)):
        for n in names or ():
            if n not in checks and n != "ALL":
                raise invalid_parameter(param, sorted(checks), n)
    chosen = list(checks) if not select or "ALL" in select else [n for n in checks if n in set(select)]
    return [checks[n] for n in chosen if n not in set(ignore or ())]
