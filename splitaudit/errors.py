"""Our own exception types.

Every problem the user can fix (bad arguments, bad config, missing folders, a check that crashed) is raised as a
:class:`SplitauditError`; the CLI turns exactly that type into exit code 2 with a one-line reason. Parameter
errors share one message shape, modelled on scikit-learn's: name the parameter, the allowed values, and what was
given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class SplitauditError(Exception):
    """Base class for every error splitaudit raises on purpose (CLI exit code 2)."""


class InvalidParameterError(SplitauditError, ValueError):
    """A parameter (argument, config key or check option) has a value we do not accept."""

    def with_message(self, message: str) -> InvalidParameterError:
        """The same error type with a more specific message (e.g. for an unknown key)."""
        return InvalidParameterError(message)


class ConfigError(SplitauditError):
    """The ``[tool.splitaudit]`` table or a config file is malformed."""


class CheckError(SplitauditError):
    """A registered check raised: a bug or bad input, never silently skipped."""

    def __init__(self, check: str, cause: BaseException) -> None:
        super().__init__(f"check {check!r} failed: {type(cause).__name__}: {cause}")
        self.check = check
        self.__cause__ = cause


def invalid_parameter(name: str, allowed: str | Iterable[Any], got: Any, *, where: str = "") -> InvalidParameterError:
    """Build the one error shape we use for bad values.

    ``allowed`` is either a phrase ("a float in [0, 1]") or an iterable of accepted values.
    """
    if not isinstance(allowed, str):
        allowed = "one of {" + ", ".join(repr(v) for v in sorted(allowed, key=str)) + "}"
    place = f" of {where}" if where else ""
    return InvalidParameterError(f"The {name!r} parameter{place} must be {allowed}. Got {got!r} instead.")
