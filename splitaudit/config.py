"""``[tool.splitaudit]`` in the nearest ``pyproject.toml``: read, validated, paths made absolute.

Keys use dashes, like the CLI flags they default (``fail-on = "warning"``); check parameters live in sub-tables,
``[tool.splitaudit.checks.near-duplicates] max-phash = 8``. An unknown key is an error that names it. The keys,
their types and the commands they apply to come from the fields of :class:`splitaudit.options.Options` and
:class:`~splitaudit.options.Invocation`; values are validated by ``Options`` itself.
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
from .options import Invocation, Options, Setting, settings


def _keys() -> dict[str, tuple[str, Setting]]:
    """Config key -> (field name, its Setting), from the declarations in :mod:`splitaudit.options`."""
    return {spec.key: (f.name, spec) for cls in (Options, Invocation) for f, spec in settings(cls) if spec.key}


KEYS = _keys()


@dataclass(frozen=True)
class Config:
    """Validated settings and where they came from (``path`` is ``None`` when no config file was found)."""

    values: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def settings(self, cls: type, command: str) -> dict[str, Any]:
        """The configured fields of ``cls`` (``Options`` or ``Invocation``) that apply to ``command``, by field name
        (``no-cache = true`` becomes ``cache=False``)."""
        out = {}
        for f, spec in settings(cls, command):
            if spec.key in self.values:
                value = self.values[spec.key]
                out[f.name] = (not value) if spec.key.startswith("no-") else value
        return out


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
    from .features.decode import DecodeFailure, open_regular

    try:
        fh, _ = open_regular(str(path))  # a FIFO or device named pyproject.toml must not block the run
        with fh:
            return tomllib.load(fh)
    except DecodeFailure as exc:
        raise ConfigError(f"cannot read {path}: {exc.reason}") from exc
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
        what = "is not a regular file" if file.exists() else "does not exist"
        raise ConfigError(f"config file {str(file)!r} {what}")
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
        spec = KEYS[key][1]
        types, desc = spec.types, spec.desc
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"{file}: [tool.splitaudit] {key!r} must be {desc}. Got {value!r} instead.")
        if spec.path:
            value = str(base / value)
        elif key == "splits":
            items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
            resolved = []
            for name, folder in items:
                if not isinstance(folder, str):
                    raise ConfigError(f"{file}: [tool.splitaudit] 'splits' entries must be folder paths. Got {folder!r} instead.")
                resolved.append((name, str(base / folder)))
            value = tuple(resolved)
        elif key in ("select", "ignore"):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{file}: [tool.splitaudit] {key!r} must be a list of check names. Got {value!r} instead.")
            value = tuple(value)
        elif key == "checks":
            for name, params in value.items():
                if not isinstance(params, dict):
                    raise ConfigError(f"{file}: [tool.splitaudit.checks.{name}] must be a table of parameters. Got {params!r} instead.")
        out[key] = value
    return out
