"""The terminal view of an :class:`ExplainReport`: a decomposition table that adds up, the cause, the advice."""

from __future__ import annotations

import io
from typing import Any

from .decompose import DEFINITIONS, TERMS

ORDER = ("timing", "penalty", "dropout", "noise", "batchnorm", "other", "data", "reproduction")


def print_explain(report: Any, console: Any) -> None:
    from rich.table import Table

    d = report.data
    console.print(f"[bold]splitaudit explain[/bold] {d.train} ({d.train_images} images) vs {d.val} ({d.val_images} images), "
                  f"{len(d.classes)} classes; probes on {d.features}", highlight=False)
    main = report.main
    acc, loss = main.accuracy, main.loss
    t = Table(title=f"val - train, {main.name} (train as {acc.train_source})", title_justify="left")
    t.add_column("term")
    t.add_column("accuracy", justify="right")
    t.add_column("loss", justify="right")
    t.add_column("measured as", overflow="fold")
    t.add_row("train (reported)", f"{acc.reported_train:.4f}", f"{loss.reported_train:.4f}", "")
    for name in TERMS:
        a, lo = acc.term(name), loss.term(name)
        if name in ("noise", "other", "penalty", "reproduction") and a == 0 and lo == 0:
            continue  # groups the model does not have: exactly zero, left out of the table to keep it short
        mark = " *" if name == acc.dominant or (acc.dominant == "data" and name == acc.dominant_data_term) else ""
        t.add_row(f"  {name}{mark}", f"{a:+.4f}", f"{lo:+.4f}", DEFINITIONS[name])
    t.add_row("[bold]sum = reported gap[/bold]", f"[bold]{acc.total:+.4f}[/bold]", f"[bold]{loss.total:+.4f}[/bold]",
              f"val {acc.reported_val:.4f} / {loss.reported_val:.4f} - train {acc.reported_train:.4f} / {loss.reported_train:.4f}")
    console.print(t)
    if main.penalty > 0 and loss.term("penalty") == 0:
        share = main.penalty / loss.reported_train if loss.reported_train > 0 else 0.0
        console.print(f"The L1/L2 penalty ({main.penalty:.4g}, {share:.0%} of the reported training loss) is in both "
                      "reported losses, so it adds nothing to the loss gap.", highlight=False)
    if len(report.subjects) > 1:
        s = Table(title="accuracy gap by cause, every subject", title_justify="left")
        s.add_column("subject")
        s.add_column("gap", justify="right")
        for c in ORDER:
            s.add_column(c, justify="right")
        for sub in report.subjects:
            causes = sub.accuracy.causes()
            s.add_row(sub.name, f"{sub.accuracy.gap:+.4f}", *(f"{causes[c]:+.4f}" for c in ORDER))
        console.print(s)
    if main.per_epoch:
        e = Table(title=f"val - train accuracy at every epoch, {main.name} (the tool's probe)", title_justify="left")
        e.add_column("epoch", justify="right")
        e.add_column("gap", justify="right")
        for c in ORDER:
            e.add_column(c, justify="right")
        for g in main.per_epoch:
            causes = g.accuracy.causes()
            e.add_row(str(g.epoch), f"{g.accuracy.gap:+.4f}", *(f"{causes[c]:+.4f}" for c in ORDER))
        console.print(e)
    from rich.text import Text

    from ..render.escape import printable
    from ..render.terminal import print_wrapped

    print_wrapped(console, Text(""), Text(printable(report.summary), style="bold"))  # plain text: never read as markup
    console.print(f"(seed {report.seed}; headline metric: {report.metric})", highlight=False)
    # Hanging indents: a long diagnosis wraps under its own text, not under the dash.
    other = [c for c in report.curves if c.code in ("val-above-train", "half-epoch-shift")]
    if report.diagnoses or other:
        console.print("[bold]Diagnoses[/bold]")
        for code, message in [(dg.code, dg.message) for dg in report.diagnoses] + [(c.code, c.message) for c in other]:
            print_wrapped(console, Text("  - "), Text(printable(f"{code}: {message}")))
    if report.advice:
        console.print("[bold]Advice[/bold]")
        for a in report.advice:
            print_wrapped(console, Text("  - "), Text(printable(a)))


def render_text(report: Any, width: int = 120) -> str:
    from rich.console import Console

    buf = io.StringIO()
    print_explain(report, Console(file=buf, width=width, no_color=True, highlight=False))
    return buf.getvalue()
