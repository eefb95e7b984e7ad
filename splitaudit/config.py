"""``[tool.splitaudit]`` in the nearest ``pyproject.toml``: read, validated, paths made absolute.

Keys use dashes, like the CLI flags they default (``fail-on = "warning"``); check parameters live in sub-tables,
``[tool.splitaudit.checks.near-duplicates] max-phash = 8``. An unknown key is an error that names it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError

# key -> (accepted types, description used in error messages)
KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "splits": ((list, dict), "a list of folders or a table name = folder"),
    "manifest": ((str,), "a path to a CSV manifest"),
    "group-by": ((str,), "a regular expression"),
    "select": ((list,), "a list of check names"),
    "ignore": ((list,), "a list of check names"),
    "fail-on": ((str,), "'error', 'warning' or 'info'"),
    "exit-zero": ((bool,), "true or false"),
    "max-leak-fraction": ((float, int), "a number in [0, 1]"),
    "format": ((str,), "an output format name"),
    "output": ((str,), "a file path"),
    "cache-dir": ((str,), "a folder path"),
    "no-cache": ((bool,), "true or false"),
    "workers": ((int,), "an integer >= 1"),
    "draft": ((bool,), "true or false"),
    "max-pixels": ((int,), "an integer >= 1"),
    "backbone": ((str,), "a backbone name (see splitaudit check --help)"),
    "weights": ((str,), "a weights file path"),
    "image-size": ((int,), "an integer number of pixels"),
    "checks": ((dict,), "a table of check name = table of parameters"),
    "baseline": ((str,), "a path to a baseline file (splitaudit check --write-baseline)"),
    "engine": ((str,), "'local' or 'ray'"),
    "ray-address": ((str,), "a Ray cluster address (host:port, 'auto' or ray://host:port)"),
}
_PATH_KEYS = ("manifest", "output", "cache-dir", "weights", "baseline")


@dataclass(frozen=True)
class Config:
    """Validated settings and where they came from (``path`` is ``None`` when no config file was found)."""

    values: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def find_pyproject(start: str | os.PathLike[str] = ".") -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` that has a ``[tool.splitaudit]`` table."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = _read(candidate)
            except ConfigError:
                raise
            if "splitaudit" in data.get("tool", {}):
                return candidate
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def load_config(path: str | os.PathLike[str] | None = None, *, start: str | os.PathLike[str] = ".") -> Config:
    """Load ``[tool.splitaudit]`` from ``path`` (a pyproject.toml) or the nearest one above ``start``."""
    file = Path(path) if path is not None else find_pyproject(start)
    if file is None:
        return Config()
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} does not exist")
    table = _read(file).get("tool", {}).get("splitaudit", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [tool.splitaudit] must be a table")
    return Config(validate(table, file), file)


def validate(table: dict[str, Any], file: Path) -> dict[str, Any]:
    """Check every key and type; resolve paths relative to the config file's folder."""
    base = file.parent
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise ConfigError(
                f"{file}: unknown key {key!r} in [tool.splitaudit]; known keys are {{{', '.join(repr(k) for k in sorted(KEYS))}}}"
            )
        types, desc = KEYS[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"{file}: [tool.splitaudit] {key!r} must be {desc}. Got {value!r} instead.")
        if key in _PATH_KEYS:
            value = str(base / value)
        elif key == "splits":
            items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
            resolved = []
            for name, folder in items:
                if not isinstance(folder, str):
                    raise ConfigError(f"{file}: [tool.splitaudit] 'splits' entries must be folder paths. Got {folder!r} instead.")
                resolved.append((name, str(base / folder)))
            value = resolved
        elif key in ("select", "ignore"):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{file}: [tool.splitaudit] {key!r} must be a list of check names. Got {value!r} instead.")
        elif key == "checks":
            for name, params in value.items():
                if not isinstance(params, dict):
                    raise ConfigError(f"{file}: [tool.splitaudit.checks.{name}] must be a table of parameters. Got {params!r} instead.")
        out[key] = value
    return out
