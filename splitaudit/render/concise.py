"""``--format concise``: one line per finding, as ruff and compilers print them, then the verdict (the hook's output).

``data/val/cat/x.jpg: near-duplicate of train/cat/y.jpg (phash 2, dhash 8) [near-duplicates]``: the file (the
finding's last image, the later split's copy, relative to the working directory so editors and terminals open it),
what is wrong with it, the evidence, and the check (control characters escaped, see :mod:`.escape`). Findings below ``--fail-on`` or accepted in a baseline say so in
the brackets. Findings about no single file start with the check's name.
"""

from __future__ import annotations

from ..report.model import AuditReport, Evidence, Finding
from .escape import printable
from .sarif import artifact_path

_SUBJECT_GLUE = (" is an ", " is a ", ": ", " ")


def _predicate(f: Finding) -> str:
    """The message without its subject: ``"val/x.jpg is a near-duplicate of train/y.jpg"`` -> ``"near-duplicate of
    train/y.jpg"`` (the line already starts with the file)."""
    ref = f.images[-1]
    subject = f"{ref.split}/{ref.path}"
    if f.message.startswith(subject):
        rest = f.message[len(subject):]
        for glue in _SUBJECT_GLUE:
            if rest.startswith(glue):
                return rest[len(glue):]
    return f.message


def concise_line(report: AuditReport, f: Finding) -> str:
    """One finding as one line (control characters made visible, whitespace runs collapsed)."""
    ev = Evidence.describe_all(f.evidence)
    text = _predicate(f) if f.images else f.message
    tags = [f.check]
    if f.accepted:
        tags.append("accepted in baseline")
    elif f.severity < report.policy.fail_on:
        tags.append(f.severity.label)
    where = artifact_path(report, f.images[-1]) if f.images else f.check
    line = f"{where}: {text}" + (f" ({ev})" if ev else "") + f" [{', '.join(tags)}]"
    return printable(line)


def render_concise(report: AuditReport) -> str:
    lines = [concise_line(report, f) for f in report.findings]
    v = report.verdict
    lines.append(("FAIL " if v.failed else "PASS ") + printable(" ".join(v.reason.split())))
    return "\n".join(lines) + "\n"
