"""Make text safe to print: file names and messages are data, never terminal or CI commands.

A file name may hold CR/LF (which would start a new GitHub Actions workflow command), ESC (ANSI sequences that
recolour, move the cursor or retitle the terminal), BEL, other C0/C1 controls, Unicode bidi overrides (text that
reads differently from what it is), or bytes that are not UTF-8 (held by Python as surrogate escapes, which no
UTF-8 stream accepts). Each is written as a visible backslash escape, so the output stays one readable line and
the original name can still be recognised.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, lone surrogates (undecodable bytes), bidi embeddings/overrides/isolates, and the
# line/paragraph separators some terminals and log viewers treat as newlines.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character, bidi override and undecodable byte written as a backslash escape."""
    return _UNSAFE.sub(_escape, text)
