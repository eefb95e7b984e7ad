"""splitaudit's build backend: setuptools', plus one choice of dependencies for the pre-commit hash hook.

pre-commit installs a hook's repository with ``pip install . <additional_dependencies>`` and nothing else, and pip
cannot leave a default dependency out. So the ``splitaudit-hash`` hook passes
``--config-settings=splitaudit-dependencies=hash``: this backend hands the choice to ``setup.py`` (through the
environment of this build process), which then leaves out TensorFlow, LiteRT and the backbone weights. Every other
build (``pip install splitaudit``, ``python -m build``) gets the complete dependencies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Iterator

from setuptools import build_meta as _setuptools
from setuptools.build_meta import build_sdist, get_requires_for_build_sdist, prepare_metadata_for_build_editable  # noqa: F401

KEY = "splitaudit-dependencies"
CHOICES = ("full", "hash")


@contextmanager
def _chosen(config_settings: Mapping[str, Any] | None) -> Iterator[dict[str, Any] | None]:
    """Set ``SPLITAUDIT_DEPENDENCIES`` for ``setup.py`` from ``config_settings`` (the rest goes on to setuptools)."""
    rest = dict(config_settings or {})
    choice = rest.pop(KEY, "full")
    if isinstance(choice, list):
        choice = choice[-1]
    if choice not in CHOICES:
        raise ValueError(f"--config-settings {KEY} must be one of {CHOICES}, got {choice!r}")
    before = os.environ.get("SPLITAUDIT_DEPENDENCIES")
    os.environ["SPLITAUDIT_DEPENDENCIES"] = choice
    try:
        yield rest or None
    finally:
        if before is None:
            del os.environ["SPLITAUDIT_DEPENDENCIES"]
        else:
            os.environ["SPLITAUDIT_DEPENDENCIES"] = before


def get_requires_for_build_wheel(config_settings=None):  # type: ignore[no-untyped-def]
    with _chosen(config_settings) as rest:
        return _setuptools.get_requires_for_build_wheel(rest)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):  # type: ignore[no-untyped-def]
    with _chosen(config_settings) as rest:
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, rest)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    with _chosen(config_settings) as rest:
        return _setuptools.build_wheel(wheel_directory, rest, metadata_directory)


def get_requires_for_build_editable(config_settings=None):  # type: ignore[no-untyped-def]
    with _chosen(config_settings) as rest:
        return _setuptools.get_requires_for_build_editable(rest)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    with _chosen(config_settings) as rest:
        return _setuptools.build_editable(wheel_directory, rest, metadata_directory)
