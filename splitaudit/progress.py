"""Progress of a run, by named stage: ``progress(stage, done, total)`` (``total`` 0: size unknown, a spinner).

The run's reporter (``audit(progress=...)``) is passed down explicitly where a stage counts items (hashing,
embedding, measuring). Stages deep inside a step that takes no reporter (loading the model) announce themselves
through :func:`stage` / :func:`staged`, which reach the reporter of the run in progress (:func:`reporting`, set by
:func:`splitaudit.run.open_run`; a context variable, so concurrent runs in threads keep theirs).

Stage names, in pipeline order: see :data:`STAGES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Progress = Callable[[str, int, int], None]

SCAN, HASH, LOAD_MODEL, EMBED = "scanning files", "hashing images", "loading model", "embedding images"
SEARCH, VERIFY, CHECKS, MEASURE = "searching neighbours", "verifying pairs", "running checks", "measuring images"
THUMBNAILS = "making thumbnails"
#: Every stage an audit reports, in the order they first start (embedding stages only with a backbone; thumbnails
#: only with the copy verifier; measuring only when a distribution check asks for image properties).
STAGES = (SCAN, HASH, LOAD_MODEL, EMBED, THUMBNAILS, SEARCH, VERIFY, CHECKS, MEASURE)

_reporter: ContextVar[Progress | None] = ContextVar("splitaudit_progress", default=None)


@contextmanager
def reporting(progress: Progress | None) -> Iterator[None]:
    """Make ``progress`` the reporter :func:`stage` reaches for the duration of the block."""
    token = _reporter.set(progress)
    try:
        yield
    finally:
        _reporter.reset(token)


def stage(name: str, done: int = 0, total: int = 0) -> None:
    """Report ``done`` of ``total`` for stage ``name`` to the current run's reporter, if any."""
    progress = _reporter.get()
    if progress is not None:
        progress(name, done, total)


@contextmanager
def staged(name: str, total: int = 0) -> Iterator[None]:
    """Announce stage ``name`` when the block starts and report it complete when it ends."""
    total = total or 1
    stage(name, 0, total)
    yield
    stage(name, total, total)
