"""GitHub Actions workflow commands (``--format github``): one ``::error``/``::warning``/``::notice`` line per finding.

Annotations point at the finding's last image (for a pair, the later split's copy) relative to the working
directory, so they attach to the file in the pull request. Messages and titles first have every control character
(ESC, BEL, all C0/C1) and undecodable byte written as a visible escape (:mod:`.escape`), then are escaped as the
runner requires (``%``, CR and LF everywhere; also ``:`` and ``,`` in properties), so a file name can neither inject
a second command nor reach the log viewer as a terminal sequence. Findings accepted
in a baseline become notices. The last line is the verdict, as plain log text.
"""

from __future__ import annotations

from ..report.model import AuditReport, Evidence, Severity
from .escape import printable
from .sarif import artifact_path

_COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(value: str) -> str:
    """A workflow-command message (after ``::``)."""
    return printable(value).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """A workflow-command property value (``file=``, ``title=``)."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def render_github(report: AuditReport) -> str:
    lines = []
    for f in report.findings:
        accepted = f.accepted
        command = "notice" if accepted else _COMMAND[f.severity]
        props = []
        if f.images:
            props.append("file=" + escape_property(artifact_path(report, f.images[-1])))
        title = f"splitaudit {f.check}" + (" (accepted in baseline)" if accepted else "")
        props.append("title=" + escape_property(title))
        ev = Evidence.describe_all(f.evidence)
        message = f.message + (f" [{ev}]" if ev else "") + f" (id {f.id})"
        lines.append(f"::{command} {','.join(props)}::{escape_data(message)}")
    v = report.verdict
    lines.append(("FAIL " if v.failed else "PASS ") + printable(" ".join(v.reason.split())))
    return "\n".join(lines) + "\n"
