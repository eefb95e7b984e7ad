"""``splitaudit`` command line. It only calls the public API; our own error type becomes exit code 2.

Exit codes (like ruff): 0 clean, 1 findings at or above ``--fail-on``, 2 usage, config or internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from . import __version__
from .api import audit
from .config import Config, load_config
from .errors import SplitauditError, invalid_parameter
from .options import CHECK, EXPLAIN, FIX, Invocation, Options, settings
from .progress import Progress
from .render.escape import printable
from .report.model import Severity

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and still exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"splitaudit: error: {message} (see '{self.prog} --help')\n")


def _add_settings(parser: argparse.ArgumentParser, cls: type, command: str) -> None:
    """One flag per field of ``cls`` that applies to ``command`` (see :mod:`splitaudit.options`). Every flag
    defaults to ``None`` so that an unset flag leaves the config value or the field's default in place."""
    for f, spec in settings(cls, command):
        if spec.flag is None:
            continue
        shown = f.default.label if isinstance(f.default, Severity) else f.default
        default = f" (default: {shown})" if shown is not None and not isinstance(shown, bool) else ""
        if spec.parse is None:  # a switch: --no-X turns a default-on setting off
            parser.add_argument(spec.flag, dest=f.name, action="store_const", const=not spec.flag.startswith("--no-"),
                                default=None, help=spec.help)
        else:
            parser.add_argument(spec.flag, dest=f.name, type=spec.parse, choices=spec.choices, metavar=spec.metavar,
                                default=None, help=spec.help + default)


def _resolve(cls: type, command: str, args: argparse.Namespace, config: Config) -> dict[str, Any]:
    """Field values of ``cls`` for ``command``: a flag wins over ``[tool.splitaudit]``, which wins over the default."""
    values = config.settings(cls, command)
    for f, _ in settings(cls, command):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return values


def build_parser() -> argparse.ArgumentParser:
    from .render import RENDERERS

    parser = _Parser(prog="splitaudit", description="Audit image dataset splits for leakage and mismatches.")
    parser.add_argument("--version", action="version", version=f"splitaudit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    config_help = "read [tool.splitaudit] from this file instead of the nearest pyproject.toml"

    check = sub.add_parser("check", help="audit splits and print a verdict (exit 1 on findings)",
                           description="Audit splits (training split first) for leakage and mismatches.")
    check.add_argument("paths", nargs="*", metavar="SPLIT", help="split folders, training split first (default: [tool.splitaudit] splits)")
    check.add_argument("--split", action="append", default=[], metavar="NAME=PATH", help="a split with an explicit name (repeatable)")
    _add_settings(check, Invocation, CHECK)
    check.add_argument("--format", choices=sorted(RENDERERS), help="output format (default: terminal)")
    check.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of standard output")
    _add_settings(check, Options, CHECK)
    check.add_argument("--config", metavar="PYPROJECT", help=config_help)
    check.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr; with the terminal format, print only the verdict line")
    check.add_argument("--write-baseline", metavar="FILE", help="write every current finding to FILE as accepted, then report with it")

    sub.add_parser("checks", help="list the available checks and their parameters")

    ex = sub.add_parser("explain", help="why does validation score better (or worse) than training? measure each cause",
                        description="Train small probes on the splits (and evaluate --model) and decompose the val - train gap "
                                    "exactly into timing, regularization/mode, BatchNorm and data terms. Diagnostic: exit 0.")
    ex.add_argument("train", metavar="TRAIN", help="training split folder (train/<class>/...)")
    ex.add_argument("val", metavar="VAL", help="validation split folder")
    ex.add_argument("--model", metavar="FILE", help="your saved Keras model (model.keras), evaluated at its final weights")
    ex.add_argument("--history", metavar="FILE", help="your training log: a CSVLogger CSV or a JSON dump of History.history")
    ex.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    ex.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of standard output")
    ex.add_argument("--plot", metavar="FILE", help="write learning curves to FILE (.svg or .png)")
    ex.add_argument("--html", metavar="FILE", help="also audit the two splits and write the curator's HTML report, with this "
                                                   "decomposition and its learning curves, to FILE")
    _add_settings(ex, Options, EXPLAIN)
    ex.add_argument("--config", metavar="PYPROJECT", help=config_help)

    fix = sub.add_parser("fix", help="plan (and optionally copy) a leak-free split: which val/test images to drop or move to train",
                         description="Plan which evaluation images to drop or move to the training split so no leak remains. "
                                     "Nothing is changed unless --apply --to DIR, which copies into a new tree.")
    fix.add_argument("paths", nargs="*", metavar="SPLIT", help="split folders, training split first (default: [tool.splitaudit] splits)")
    fix.add_argument("--split", action="append", default=[], metavar="NAME=PATH", help="a split with an explicit name (repeatable)")
    _add_settings(fix, Invocation, FIX)
    fix.add_argument("--output", "-o", metavar="CSV", help="write the changes (action,split,path,...) as CSV")
    fix.add_argument("--write-manifest", metavar="CSV", help="write the planned dataset as a manifest pointing at the original files")
    fix.add_argument("--apply", action="store_true", help="copy the planned dataset into --to DIR (the originals are never modified)")
    fix.add_argument("--to", metavar="DIR", help="new, empty folder for --apply")
    _add_settings(fix, Options, FIX)
    fix.add_argument("--config", metavar="PYPROJECT", help=config_help)
    return parser


def _inputs(args: argparse.Namespace, config: Config, command: str) -> tuple[Any, str | None]:
    """``(splits, manifest)``: the command line's when it names any input, else ``[tool.splitaudit]``'s."""
    if args.paths or args.split or args.manifest:
        named: dict[str, str] = {}
        for p in args.paths:
            name = os.path.basename(os.path.normpath(p))
            if name in named:
                raise SplitauditError(f"two splits are named {name!r}; name them with --split NAME=PATH")
            named[name] = p
        for item in args.split:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise invalid_parameter("--split", "NAME=PATH", item)
            if name in named:
                raise SplitauditError(f"two splits are named {name!r}")
            named[name] = path
        return named or None, args.manifest
    configured = config.settings(Invocation, command)
    splits = {name or os.path.basename(os.path.normpath(path)): path for name, path in configured.get("splits") or ()}
    manifest = configured.get("manifest")
    if not splits and manifest is None:
        raise SplitauditError(f"no splits given: pass folders (splitaudit {command} train/ val/), --manifest, or set "
                              "[tool.splitaudit] splits")
    return splits or None, manifest


def _write(path: str, text: str, *, newline: str | None = None) -> None:
    try:
        with open(path, "w", encoding="utf-8", newline=newline) as fh:
            fh.write(text)
    except OSError as exc:
        raise SplitauditError(f"cannot write {path!r}: {exc.strerror or exc}") from exc


def _write_json(path: str | None, report: Any) -> None:
    """The report's JSON written to ``path`` (None: standard output) a few MB at a time, each finding made as it is
    written (:meth:`~splitaudit.report.model.AuditReport.write_json`): a 1M-image check's report is 71 MB of text,
    and the whole string and the findings' dictionaries were held at its end (issue #15). A regular file is written
    beside its place and moved there when complete: a failure midway leaves the file that was there. Where nothing
    can be made beside it (a link, a device, a pipe, a writable file in a read-only folder) it is written in place."""
    if path is None:
        report.write_json(sys.stdout)
        return
    import stat
    import tempfile

    try:
        part = None
        # a new file, or a regular one (not a link, a device or a pipe, which are written in place)
        if not os.path.lexists(path) or (os.path.isfile(path) and not os.path.islink(path)):
            with contextlib.suppress(OSError):  # none may be made beside it (a writable file in a read-only folder)
                fd, part = tempfile.mkstemp(prefix=".splitaudit-", suffix=".part", dir=os.path.dirname(os.path.abspath(path)))
        if part is None:
            with open(path, "w", encoding="utf-8") as fh:
                report.write_json(fh)
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                if os.path.exists(path):  # the mode the file had, as writing into it kept it
                    mode = stat.S_IMODE(os.stat(path).st_mode)
                else:  # the mode open() gives a new file, not mkstemp's 0600
                    mode = os.umask(0)
                    os.umask(mode)
                    mode = 0o666 & ~mode
                os.fchmod(fd, mode)
                report.write_json(fh)
            os.replace(part, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part)
            raise
    except OSError as exc:
        raise SplitauditError(f"cannot write {path!r}: {exc.strerror or exc}") from exc


def _run_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .render import RENDERERS, print_report, render

    config = load_config(args.config)
    splits, manifest = _inputs(args, config, CHECK)
    invocation = Invocation(**_resolve(Invocation, CHECK, args, config))
    fmt = invocation.format or "terminal"
    if fmt not in RENDERERS:
        raise invalid_parameter("format", sorted(RENDERERS), fmt)
    options = Options(**_resolve(Options, CHECK, args, config))
    if args.write_baseline:
        options = options.replace(baseline=None)
    sources = (splits,) if splits is not None else ()
    with _progress(CHECK, quiet=args.quiet) as progress:
        report = audit(*sources, manifest=manifest, options=options, progress=progress)
    if args.write_baseline:
        from .report.baseline import apply_baseline, write_baseline

        n = write_baseline(report, args.write_baseline)
        report = apply_baseline(report, [f.id for f in report.findings])  # re-decided under the report's policy
        print(f"wrote {n} accepted finding(s) to {args.write_baseline}", file=sys.stderr)

    if invocation.output:
        if fmt == "json":
            _write_json(invocation.output, report)
        else:
            _write(invocation.output, render(fmt, report, options=options, output=invocation.output))
        print(("FAIL " if report.failed else "PASS ") + report.verdict.reason, file=sys.stderr)
    elif fmt == "terminal":
        console = Console()
        if args.quiet:
            console.print(("FAIL " if report.failed else "PASS ") + report.verdict.reason, markup=False, highlight=False, soft_wrap=True)
        else:
            print_report(report, console)
    elif fmt == "json":
        _write_json(None, report)
    else:
        sys.stdout.write(render(fmt, report, options=options))
    if report.failed and not invocation.exit_zero:
        return EXIT_FINDINGS
    return EXIT_CLEAN


def _run_fix(args: argparse.Namespace) -> int:
    from .fix import apply_plan, plan_fix

    if args.apply != bool(args.to):
        raise SplitauditError("--apply and --to DIR go together: --apply --to DIR copies the fixed dataset into DIR")
    config = load_config(args.config)
    splits, manifest = _inputs(args, config, FIX)
    options = Options(**_resolve(Options, FIX, args, config))
    with _progress(FIX, quiet=False) as progress:
        plan = plan_fix(*((splits,) if splits is not None else ()), manifest=manifest, options=options, progress=progress)
    if args.output:
        _write(args.output, plan.to_csv(), newline="")
    if args.write_manifest:
        _write(args.write_manifest, plan.to_manifest(os.path.dirname(os.path.abspath(args.write_manifest))), newline="")
    sys.stdout.write(plan.summary())
    if args.apply:
        done = apply_plan(plan, to=args.to)
        left_out = f", {done.excluded} unreadable left out" if done.excluded else ""
        print(f"copied {done.copied} file(s) into {done.target} ({done.dropped} dropped{left_out}); manifest: {done.manifest}")
    return EXIT_CLEAN


@contextlib.contextmanager
def _progress(command: str, *, quiet: bool) -> Iterator[Progress | None]:
    """Stage progress on stderr from the first second: on a terminal a live line per stage (spinner, bar, count,
    elapsed time; gone when the run ends); elsewhere (CI logs, pre-commit) plain lines; with ``quiet`` nothing."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield _line_progress(command)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bars

    bars = Bars(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True)
    tasks: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(printable(stage), total=total or None)
        bars.update(tasks[stage], completed=done, total=total or None)

    with bars:
        yield progress


def _line_progress(command: str) -> Progress:
    """Plain progress lines on stderr (``splitaudit check: hashing images: 10/40``): each stage when it starts,
    then at every quarter of it; a stage of unknown size once, by name."""
    seen: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        quarter = 4 * done // total if total > 0 else 0
        if seen.get(stage, -1) >= quarter:
            return
        seen[stage] = quarter
        print(f"splitaudit {command}: {stage}: {done}/{total}" if total > 0 else f"splitaudit {command}: {stage}",
              file=sys.stderr, flush=True)

    return progress


def _run_explain(args: argparse.Namespace) -> int:
    from .explain import explain
    from .explain.render import render_text
    from .native_logs import native_logs_filtered

    config = load_config(args.config)
    options = Options(**_resolve(Options, EXPLAIN, args, config))
    with native_logs_filtered():  # TensorFlow's CUDA/oneDNN chatter, not ours
        with _progress(EXPLAIN, quiet=False) as progress:
            report = explain(args.train, args.val, model=args.model, history=args.history, options=options, progress=progress)
        if args.plot:
            report.plot(args.plot)
        if args.html:
            from .render.html import render_html

            # Same options: the audit reuses the features and embeddings explain just computed.
            audited = audit(args.train, args.val, options=options)
            _write(args.html, render_html(audited, explain=report, options=options, output=args.html))
    text = report.to_json() if args.format == "json" else render_text(report)
    if args.output:
        _write(args.output, text)
        print(report.summary, file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_CLEAN  # explain is diagnostic: a gap is not a failure


def _list_checks() -> int:
    from .checks import all_checks

    for name, check in all_checks().items():
        params = ", ".join(f"{p.replace('_', '-')}={v!r}" for p, v in check.params.items())
        print(f"{name:26} {check.summary}" + (f"\n{'':26} parameters: {params}" if params else ""))
    return EXIT_CLEAN


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``splitaudit`` script; returns the exit code."""
    from .memory import limit_arenas

    # This process is ours: its threads share two malloc heaps. glibc gives each thread its own (up to 8 per core),
    # and the copy stage's threads (the calibration beside the eval images' registration) left freed working
    # arrays in theirs: a 20k-photo check peaked at 522 MiB against 459 with two heaps (docs/performance.md).
    limit_arenas()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return _run_check(args)
        if args.command == "checks":
            return _list_checks()
        if args.command == "explain":
            return _run_explain(args)
        if args.command == "fix":
            return _run_fix(args)
        parser.print_help()
        return EXIT_ERROR
    except SplitauditError as exc:
        print(f"splitaudit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("splitaudit: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells expect
    except BrokenPipeError:
        # The reader went away (`splitaudit checks | head`): not an error of ours. Point stdout at /dev/null so the
        # interpreter's final flush stays quiet, and exit as a process killed by SIGPIPE would (128 + 13), so a
        # pipeline under `set -o pipefail` never reads a cut-short run as a pass.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug of ours: still one line and exit 2, with the traceback on request
        if os.environ.get("SPLITAUDIT_DEBUG"):
            raise
        print(f"splitaudit: internal error: {type(exc).__name__}: {exc} (set SPLITAUDIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
