"""Keep TensorFlow's native log noise off the terminal without hiding anything of ours (``splitaudit explain``).

TensorFlow's C++ runtime writes straight to file descriptor 2 (absl's "All log messages before
absl::InitializeLog()", "Could not find cuda drivers", "failed call to cuInit", CPU-feature and graph notes), at
import and again at the first operation on a device, and ``TF_CPP_MIN_LOG_LEVEL`` does not stop all of it.
:func:`native_logs_filtered` points descriptor 2 at a pipe whose reader drops lines in that format and forwards
everything else, while Python's ``sys.stderr`` keeps writing to the real stream, so our messages, progress lines
and warnings are untouched, in order, and still see a terminal when there is one. TensorFlow's Python logger
(tf.function retracing notes) is set to errors only. A user who sets ``TF_CPP_MIN_LOG_LEVEL`` gets everything.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: absl/TF native log lines: ``I0000 00:00:1796301693.956241   32127 cudart_stub.cc:31] ...`` and absl's banner;
#: also the second line of the CPU-feature note, which the runtime prints without a prefix.
NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)")


def _fileno(stream: object) -> int | None:
    try:
        return stream.fileno()  # type: ignore[attr-defined, no-any-return]
    except (AttributeError, OSError, ValueError):
        return None


def _forward(read_fd: int, out_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not NATIVE_LINE.match(line))
            if kept:
                os.write(out_fd, kept)
        if pending and not NATIVE_LINE.match(pending):
            os.write(out_fd, pending)


@contextmanager
def native_logs_filtered() -> Iterator[None]:
    """For the block: TensorFlow's native log lines dropped from descriptor 2, everything else kept."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:  # the user chose what to see
        yield
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (a GUI, a closed stream): nothing to filter
        yield
        return
    python_stderr = sys.stderr
    if _fileno(python_stderr) == 2:  # else Python's stderr is elsewhere already (a capture, a notebook): keep it
        sys.stderr = open(os.dup(saved), "w", buffering=1, encoding=getattr(python_stderr, "encoding", None) or "utf-8",
                          errors="backslashreplace")
    reader = threading.Thread(target=_forward, args=(read_fd, saved), name="splitaudit-native-logs", daemon=True)
    reader.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes our end of the pipe: the reader drains it and stops
        reader.join(timeout=5)  # a worker process still holding the pipe must not hang the exit
        if sys.stderr is not python_stderr:
            sys.stderr.close()
            sys.stderr = python_stderr
        if not reader.is_alive():
            os.close(saved)
