"""Giving freed memory back to the operating system between stages."""

from __future__ import annotations

import ctypes
import sys


def release_freed_memory() -> None:
    """Hand freed buffers back to the OS (glibc keeps them otherwise, one heap per thread that allocated): the
    network's, and a neighbour stage's working arrays, so the later stages start from what is still in use."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
