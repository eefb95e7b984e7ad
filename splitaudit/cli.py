"""``splitaudit`` command line. It only calls the public API; our own error type becomes exit code 2.

Exit codes (like ruff): 0 clean, 1 findings at or above ``--fail-on``, 2 usage, config or internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .api import audit
from .config import Config, load_config
from .errors import SplitauditError, invalid_parameter
from .features.embeddings.backbones import DEFAULT_BACKBONE
from .report.model import Severity

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and still exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"splitaudit: error: {message} (see '{self.prog} --help')\n")


def _csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    from .render import RENDERERS

    parser = _Parser(prog="splitaudit", description="Audit image dataset splits for leakage and mismatches.")
    parser.add_argument("--version", action="version", version=f"splitaudit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    check = sub.add_parser("check", help="audit splits and print a verdict (exit 1 on findings)",
                           description="Audit splits (training split first) for leakage and mismatches.")
    check.add_argument("paths", nargs="*", metavar="SPLIT", help="split folders, training split first (default: [tool.splitaudit] splits)")
    check.add_argument("--split", action="append", default=[], metavar="NAME=PATH", help="a split with an explicit name (repeatable)")
    check.add_argument("--manifest", metavar="CSV", help="CSV with path,label,split[,group] columns instead of folders")
    check.add_argument("--group-by", metavar="REGEX", help="regex on relative paths; its first group names the image's group")
    check.add_argument("--select", type=_csv_list, metavar="CHECKS", help="comma-separated checks to run (default: all)")
    check.add_argument("--ignore", type=_csv_list, metavar="CHECKS", help="comma-separated checks to skip")
    check.add_argument("--fail-on", choices=[s.label for s in Severity], help="lowest severity that fails (default: error)")
    check.add_argument("--exit-zero", action="store_true", default=None, help="exit 0 even when findings fail the verdict")
    check.add_argument("--max-leak-fraction", type=float, metavar="F", help="tolerated share of copied images per split (default: 0)")
    check.add_argument("--format", choices=sorted(RENDERERS), help="output format (default: terminal)")
    check.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of standard output")
    check.add_argument("--cache-dir", metavar="DIR", help="cache folder (default: $SPLITAUDIT_CACHE_DIR or ~/.cache/splitaudit)")
    check.add_argument("--no-cache", action="store_true", default=None, help="neither read nor write the cache")
    check.add_argument("--workers", type=int, metavar="N", help="decoding processes (default: one per core)")
    check.add_argument("--backbone", metavar="NAME", help="CNN for embeddings: efficientnet_lite0 (default, offline), a keras.applications name (e.g. mobilenet_v3_small), or none")
    check.add_argument("--weights", metavar="PATH", help="local weights file for --backbone")
    check.add_argument("--image-size", type=int, metavar="PX", help="network input side (default: 224 for photos, 2x the median side for small images)")
    check.add_argument("--engine", choices=["local", "ray"], help="where images are decoded and embedded: local process pool (default) or a Ray cluster")
    check.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join with --engine ray (default: start a local Ray runtime)")
    check.add_argument("--config", metavar="PYPROJECT", help="read [tool.splitaudit] from this file instead of the nearest pyproject.toml")
    check.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line (terminal format)")
    check.add_argument("--baseline", metavar="FILE", help="accept the findings listed in FILE (reported, but not failing)")
    check.add_argument("--write-baseline", metavar="FILE", help="write every current finding to FILE as accepted, then report with it")

    sub.add_parser("checks", help="list the available checks and their parameters")

    ex = sub.add_parser("explain", help="why does validation score better (or worse) than training? measure each cause",
                        description="Train small probes on the splits (and evaluate --model) and decompose the val - train gap "
                                    "exactly into timing, regularization/mode, BatchNorm and data terms. Diagnostic: exit 0.")
    ex.add_argument("train", metavar="TRAIN", help="training split folder (train/<class>/...)")
    ex.add_argument("val", metavar="VAL", help="validation split folder")
    ex.add_argument("--model", metavar="FILE", help="your saved Keras model (model.keras), evaluated at its final weights")
    ex.add_argument("--history", metavar="FILE", help="your training log: a CSVLogger CSV or a JSON dump of History.history")
    ex.add_argument("--epochs", type=int, default=8, metavar="N", help="epochs per probe (default: 8)")
    ex.add_argument("--batch-size", type=int, default=32, metavar="N", help="probe and training-mode batch size (default: 32)")
    ex.add_argument("--input-scale", default="auto", choices=["auto", "0-1", "-1-1", "0-255"], help="pixel range fed to --model (default: auto)")
    ex.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    ex.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of standard output")
    ex.add_argument("--plot", metavar="FILE", help="write learning curves to FILE (.svg or .png)")
    ex.add_argument("--html", metavar="FILE", help="also audit the two splits and write the curator's HTML report, with this "
                                                   "decomposition and its learning curves, to FILE")
    ex.add_argument("--backbone", default=DEFAULT_BACKBONE, metavar="NAME", help="CNN for the probes' embeddings, or none (16x16 pixels)")
    ex.add_argument("--weights", metavar="PATH", help="local weights file for --backbone")
    ex.add_argument("--cache-dir", metavar="DIR", help="cache folder (default: $SPLITAUDIT_CACHE_DIR or ~/.cache/splitaudit)")
    ex.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")

    fix = sub.add_parser("fix", help="plan (and optionally copy) a leak-free split: which val/test images to drop or move to train",
                         description="Plan which evaluation images to drop or move to the training split so no leak remains. "
                                     "Nothing is changed unless --apply --to DIR, which copies into a new tree.")
    fix.add_argument("paths", nargs="*", metavar="SPLIT", help="split folders, training split first (default: [tool.splitaudit] splits)")
    fix.add_argument("--split", action="append", default=[], metavar="NAME=PATH", help="a split with an explicit name (repeatable)")
    fix.add_argument("--input-manifest", metavar="CSV", help="CSV with path,label,split[,group] columns instead of folders")
    fix.add_argument("--group-by", metavar="REGEX", help="regex on relative paths; its first group names the image's group")
    fix.add_argument("--tolerance", type=float, metavar="F", help="largest class-share change a move may cause in the training split (default: 0.02)")
    fix.add_argument("--prefer", choices=["move", "drop"], help="move leaked images to train when proportions allow (default) or always drop them")
    fix.add_argument("--output", "-o", metavar="CSV", help="write the changes (action,split,path,...) as CSV")
    fix.add_argument("--manifest", metavar="CSV", help="write the planned dataset as a manifest pointing at the original files")
    fix.add_argument("--apply", action="store_true", help="copy the planned dataset into --to DIR (the originals are never modified)")
    fix.add_argument("--to", metavar="DIR", help="new, empty folder for --apply")
    fix.add_argument("--backbone", metavar="NAME", help="CNN for embeddings (default: efficientnet_lite0), or none")
    fix.add_argument("--weights", metavar="PATH", help="local weights file for --backbone")
    fix.add_argument("--image-size", type=int, metavar="PX", help="network input side")
    fix.add_argument("--cache-dir", metavar="DIR", help="cache folder")
    fix.add_argument("--no-cache", action="store_true", default=None, help="neither read nor write the cache")
    fix.add_argument("--workers", type=int, metavar="N", help="decoding processes (default: one per core)")
    fix.add_argument("--config", metavar="PYPROJECT", help="read [tool.splitaudit] from this file instead of the nearest pyproject.toml")
    return parser


def _pick(args: argparse.Namespace, config: Config, name: str, default: Any = None) -> Any:
    value = getattr(args, name.replace("-", "_"), None)
    return value if value is not None else config.get(name, default)


def _splits(args: argparse.Namespace, config: Config) -> Any:
    if args.paths or args.split:
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
        return named
    configured = config.get("splits")
    if configured:
        named = {}
        for name, path in configured:
            named[name or os.path.basename(os.path.normpath(path))] = path
        return named
    return None


def _run_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .render import RENDERERS, print_report

    config = load_config(args.config)
    splits = _splits(args, config)
    manifest = _pick(args, config, "manifest")
    if splits is None and manifest is None:
        raise SplitauditError("no splits given: pass folders (splitaudit check train/ val/), --manifest, or set [tool.splitaudit] splits")
    fmt = _pick(args, config, "format", "terminal")
    if fmt not in RENDERERS:
        raise invalid_parameter("format", sorted(RENDERERS), fmt)
    output = _pick(args, config, "output")
    interactive = sys.stderr.isatty() and not args.quiet
    err = Console(stderr=True)

    progress_ctx = None
    if interactive:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        progress_ctx = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                console=err, transient=True)
    task: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if progress_ctx is None or total < 200:
            return
        if stage not in task:
            task[stage] = progress_ctx.add_task(stage, total=total)
        progress_ctx.update(task[stage], completed=done)

    kwargs = dict(
        manifest=manifest,
        group_by=_pick(args, config, "group-by"),
        select=_pick(args, config, "select"),
        ignore=_pick(args, config, "ignore"),
        check_options=config.get("checks"),
        fail_on=_pick(args, config, "fail-on", "error"),
        max_leak_fraction=_pick(args, config, "max-leak-fraction", 0.0),
        progress=progress,
        engine=_pick(args, config, "engine", "local"),
        ray_address=_pick(args, config, "ray-address"),
        **_pipeline_options(args, config),
    )
    if not args.write_baseline:
        kwargs["baseline"] = _pick(args, config, "baseline")
    if progress_ctx is not None:
        with progress_ctx:
            report = audit(splits, **kwargs) if splits is not None else audit(**kwargs)
    else:
        report = audit(splits, **kwargs) if splits is not None else audit(**kwargs)
    if args.write_baseline:
        from .baseline import apply_baseline, write_baseline

        n = write_baseline(report, args.write_baseline)
        report = apply_baseline(report, [f.id for f in report.findings], max_leak_fraction=kwargs["max_leak_fraction"])
        print(f"wrote {n} accepted finding(s) to {args.write_baseline}", file=sys.stderr)

    if output:
        text = RENDERERS[fmt](report)
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise SplitauditError(f"cannot write {output!r}: {exc.strerror or exc}") from exc
        print(("FAIL " if report.failed else "PASS ") + report.verdict.reason, file=sys.stderr)
    elif fmt == "terminal":
        console = Console()
        if args.quiet:
            console.print(("FAIL " if report.failed else "PASS ") + report.verdict.reason, markup=False, highlight=False, soft_wrap=True)
        else:
            print_report(report, console)
    else:
        sys.stdout.write(RENDERERS[fmt](report))
    if report.failed and not _pick(args, config, "exit-zero", False):
        return EXIT_FINDINGS
    return EXIT_CLEAN


def _pipeline_options(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    """The scan/features/embeddings settings ``check`` and ``fix`` share (flags win over ``[tool.splitaudit]``)."""
    options: dict[str, Any] = dict(
        cache=not _pick(args, config, "no-cache", False),
        cache_dir=_pick(args, config, "cache-dir"),
        workers=_pick(args, config, "workers"),
        draft=config.get("draft", True),
        backbone=_pick(args, config, "backbone", DEFAULT_BACKBONE),
        weights=_pick(args, config, "weights"),
        image_size=_pick(args, config, "image-size"),
    )
    if config.get("max-pixels") is not None:
        options["max_pixels"] = config.get("max-pixels")
    return options


def _run_fix(args: argparse.Namespace) -> int:
    from .fix import DEFAULT_TOLERANCE, apply_plan, plan_fix

    if args.apply != bool(args.to):
        raise SplitauditError("--apply and --to DIR go together: --apply --to DIR copies the fixed dataset into DIR")
    config = load_config(args.config)
    splits = _splits(args, config)
    manifest = args.input_manifest or (config.get("manifest") if splits is None else None)
    if splits is None and manifest is None:
        raise SplitauditError("no splits given: pass folders (splitaudit fix train/ val/), --input-manifest, or set [tool.splitaudit] splits")
    kwargs = dict(
        manifest=manifest,
        group_by=_pick(args, config, "group-by"),
        tolerance=args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE,
        prefer=args.prefer or "move",
        check_options=config.get("checks"),
        **_pipeline_options(args, config),
    )
    plan = plan_fix(splits, **kwargs) if splits is not None else plan_fix(**kwargs)
    for path, text in ((args.output, plan.to_csv), (args.manifest, None)):
        if not path:
            continue
        try:
            content = text() if text else plan.to_manifest(os.path.dirname(os.path.abspath(path)))
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(content)
        except OSError as exc:
            raise SplitauditError(f"cannot write {path!r}: {exc.strerror or exc}") from exc
    sys.stdout.write(plan.summary())
    if args.apply:
        done = apply_plan(plan, to=args.to)
        print(f"copied {done.copied} file(s) into {done.target} ({done.dropped} dropped); manifest: {done.manifest}")
    return EXIT_CLEAN


def _run_explain(args: argparse.Namespace) -> int:
    from .explain import explain
    from .explain.render import render_text

    report = explain(args.train, args.val, model=args.model, history=args.history, epochs=args.epochs,
                     batch_size=args.batch_size, input_scale=args.input_scale, backbone=args.backbone,
                     weights=args.weights, cache=not args.no_cache, cache_dir=args.cache_dir)
    if args.plot:
        report.plot(args.plot)
    if args.html:
        from .api import audit
        from .render.html import render_html

        # Same cache and backbone: the audit reuses the features and embeddings explain just computed.
        audited = audit(args.train, args.val, backbone=args.backbone, weights=args.weights, cache=not args.no_cache,
                        cache_dir=args.cache_dir)
        try:
            with open(args.html, "w", encoding="utf-8") as fh:
                fh.write(render_html(audited, explain=report))
        except OSError as exc:
            raise SplitauditError(f"cannot write {args.html!r}: {exc.strerror or exc}") from exc
    text = report.to_json() if args.format == "json" else render_text(report)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise SplitauditError(f"cannot write {args.output!r}: {exc.strerror or exc}") from exc
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
        return EXIT_ERROR
    except Exception as exc:  # a bug of ours: still one line and exit 2, with the traceback on request
        if os.environ.get("SPLITAUDIT_DEBUG"):
            raise
        print(f"splitaudit: internal error: {type(exc).__name__}: {exc} (set SPLITAUDIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
