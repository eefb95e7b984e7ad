"""Leak-free split suggestions: which evaluation images to drop or move to the training split.

The rule (``docs/fix.md``):

1. Every cross-split leak links its images: exact, pixel and near duplicates, label conflicts, and every member of
   a group found in two splits (``group-leakage``). Copies inside one split link too, so a copy of a moved image
   never stays behind. Linked images form connected components. Which findings link is what their checks declared
   when they registered, not their names: pairs of a leak check (``leak=True``, ``display="pair"``) and every
   ``display="group"`` finding (a finding whose ``data`` names a ``group`` stands for all of that group's images).
2. A component that spans two or more splits is leaked. Its *home* is the earliest split it reaches (the training
   split whenever it has a member there); every member outside the home split must leave its split, together.
3. Per component, the members either **move** to the home split (same relative path; ``__from-SPLIT`` is added to
   the name on a clash) or are **dropped**. Components whose images carry different labels are dropped (a moved
   copy would teach the wrong label); components whose cross-split links are all byte- or pixel-identical copies
   (their evidence says so) are dropped (a moved copy would only duplicate a training image); the others move,
   unless that would push the home split's class proportions further than ``tolerance`` from the original and
   dropping stays closer (greedy, largest component first). ``prefer="drop"`` drops everything instead.

Nothing is written here: :func:`~splitaudit.fix.apply.apply_plan` copies a plan into a new tree.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..checks.registry import Check, all_checks, display_of
from ..errors import SplitauditError
from ..features import decode
from ..features.table import is_image_name
from ..options import DEFAULT_TOLERANCE, FIX, Options, build_options
from ..report.model import AuditReport, Finding
from ..scan import Dataset

if TYPE_CHECKING:
    from ..run import Progress

KEEP, MOVE, DROP = "keep", "move", "drop"
#: Files the audit could not read as images (unreadable-images errors and warnings, not animations): left out of the
#: planned dataset, so the copy passes ``check``; the originals stay where they are.
EXCLUDE = "exclude"
#: Actions whose file is not part of the planned dataset.
LEFT_OUT = (DROP, EXCLUDE)


def links(check: Check) -> bool:
    """Do the check's findings link images the plan keeps together? Cross-split copies (the pairs of a leak
    check) and groups (copies inside a split, copies with conflicting labels, a group in two splits) do."""
    return check.display == "group" or (check.display == "pair" and check.leak)


def plan_checks() -> list[Check]:
    """The checks a plan runs: those that link images, and the per-image ones (unreadable files, which do not
    count in a split's class proportions)."""
    return [c for c in all_checks().values() if links(c) or c.display == "image"]


@dataclass(frozen=True)
class PlannedFile:
    """One scanned file and what the plan does with it (``to_split``/``to_path`` are ``None`` when dropped)."""

    split: str
    path: str
    label: str | None
    group: str | None
    source: str | None
    size: int
    mtime_ns: int
    action: str = KEEP
    to_split: str | None = None
    to_path: str | None = None
    component: int = -1
    reason: str = ""


@dataclass(frozen=True)
class ClassShift:
    """One split's class counts before and after the plan, and the largest change of a class's share."""

    split: str
    before: tuple[tuple[str, int], ...]
    after: tuple[tuple[str, int], ...]
    deviation: float

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "before": dict(self.before), "after": dict(self.after), "deviation": round(self.deviation, 6)}


@dataclass(frozen=True)
class FixPlan:
    """The suggested fix: every file with its action, and each split's class shift. Apply with :func:`apply_plan`."""

    splits: tuple[str, ...]
    roots: tuple[str, ...]
    kinds: tuple[str, ...]
    files: tuple[PlannedFile, ...]
    shifts: tuple[ClassShift, ...]
    components: int
    tolerance: float
    prefer: str

    @property
    def changes(self) -> tuple[PlannedFile, ...]:
        """Files that move or are dropped, by component."""
        order = {n: k for k, n in enumerate(self.splits)}
        return tuple(sorted((f for f in self.files if f.action != KEEP), key=lambda f: (f.component, order[f.split], f.path)))

    @property
    def moved(self) -> int:
        return sum(1 for f in self.files if f.action == MOVE)

    @property
    def dropped(self) -> int:
        return sum(1 for f in self.files if f.action == DROP)

    @property
    def excluded(self) -> int:
        """Unreadable files left out of the planned dataset."""
        return sum(1 for f in self.files if f.action == EXCLUDE)

    @property
    def max_deviation(self) -> float:
        return max((s.deviation for s in self.shifts), default=0.0)

    def to_csv(self) -> str:
        """The changes as CSV: ``action,split,path,label,to_split,to_path,component,reason``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["action", "split", "path", "label", "to_split", "to_path", "component", "reason"])
        for f in self.changes:
            w.writerow([f.action, f.split, f.path, f.label or "", f.to_split or "", f.to_path or "", f.component, f.reason])
        return buf.getvalue()

    def to_manifest(self, base_dir: str | os.PathLike[str] = ".") -> str:
        """The planned dataset as a ``splitaudit check --manifest`` CSV pointing at the original files (paths
        relative to ``base_dir``, the folder the manifest will live in): nothing needs to be copied to audit it."""
        if any(f.source is None for f in self.files):
            raise SplitauditError("in-memory arrays have no files (nor do streamed datasets): a manifest cannot point at them")
        base = os.path.abspath(os.fspath(base_dir))
        groups = any(f.group is not None for f in self.files)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "label", "split", *(["group"] if groups else [])])
        order = {n: k for k, n in enumerate(self.splits)}
        kept = sorted((f for f in self.files if f.action not in LEFT_OUT), key=lambda f: (order[f.to_split or f.split], f.to_path or f.path))
        for f in kept:
            src = os.path.abspath(f.source or "")
            rel = os.path.relpath(src, base) if os.path.splitdrive(src)[0] == os.path.splitdrive(base)[0] else src
            w.writerow([rel.replace(os.sep, "/"), f.label or "", f.to_split, *([f.group or ""] if groups else [])])
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {
            "splits": list(self.splits),
            "components": self.components,
            "moved": self.moved,
            "dropped": self.dropped,
            "excluded": self.excluded,
            "tolerance": self.tolerance,
            "prefer": self.prefer,
            "shifts": [s.to_dict() for s in self.shifts],
            "changes": [{"action": f.action, "split": f.split, "path": f.path, "label": f.label, "to_split": f.to_split,
                         "to_path": f.to_path, "component": f.component, "reason": f.reason} for f in self.changes],
        }

    def summary(self) -> str:
        """A few lines for people: counts, per-split class shift, then every change."""
        lines = [f"{self.components} leaked component(s): move {self.moved} image(s), drop {self.dropped} "
                 f"(move tolerance {self.tolerance:.1%} of class share)"
                 + (f"; leave out {self.excluded} unreadable file(s)" if self.excluded else "")]
        for s in self.shifts:
            lines.append(f"  {s.split:12} {sum(c for _, c in s.before):7d} -> {sum(c for _, c in s.after):7d} images, "
                         f"largest class-share change {s.deviation:.2%}")
        for f in self.changes:
            if f.action == MOVE:
                lines.append(f"  move {f.split}/{f.path} -> {f.to_split}/{f.to_path}  ({f.reason})")
            else:
                lines.append(f"  {f.action} {f.split}/{f.path}  ({f.reason})")
        return "\n".join(lines) + "\n"


def deviation(counts: Mapping[str, int], original: Mapping[str, int]) -> float:
    """Largest absolute change of one class's share between ``original`` and ``counts`` (0 to 1)."""
    n_new, n_old = sum(counts.values()), sum(original.values())
    if n_old == 0:
        return 0.0
    if n_new == 0:
        return 1.0
    return max(abs(counts.get(c, 0) / n_new - original.get(c, 0) / n_old) for c in set(counts) | set(original))


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, items: Iterable[int]) -> None:
        items = list(items)
        for y in items[1:]:
            a, b = self.find(items[0]), self.find(y)
            if a != b:
                self.parent[max(a, b)] = min(a, b)


def _is_image(record: Any, unreadable: set[tuple[str, str]]) -> bool:
    """Does the report count this file as an image (for class counts)? Unreadable files are findings; files with
    non-image names count only when their magic bytes say image (as the features stage decides)."""
    if (record.split, record.relpath) in unreadable:
        return False
    if record.path is None or is_image_name(record.relpath):
        return True
    try:
        fh, _ = decode.open_regular(record.path)  # never a FIFO or device: those block or never end
        with fh:
            return decode.sniff(fh.read(16)) is not None
    except (decode.DecodeFailure, OSError):
        return False


def build_plan(dataset: Dataset, report: AuditReport, *, tolerance: float = DEFAULT_TOLERANCE, prefer: str = "move") -> FixPlan:
    """The plan for ``dataset`` from the findings of ``report`` (an audit of that same dataset)."""
    checked = Options(tolerance=tolerance, prefer=prefer)  # the one place these are validated
    tolerance, prefer = checked.tolerance, checked.prefer
    records = dataset.records
    names = dataset.split_names
    order = {n: k for k, n in enumerate(names)}
    at = {(r.split, r.relpath): i for i, r in enumerate(records)}
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.group is not None:
            by_group[r.group].append(i)

    def members(f: Finding) -> list[int]:
        if isinstance(f.data.get("group"), str):  # a group finding lists a few examples; every member links
            return by_group.get(f.data["group"], [])
        idx = [at.get((ref.split, ref.path)) for ref in f.images]
        missing = [ref for ref, i in zip(f.images, idx) if i is None]
        if missing:
            raise SplitauditError(f"the report names {missing[0].split}/{missing[0].path}, which the scan did not find: "
                                  "build the plan from a report of the same dataset")
        return [i for i in idx if i is not None]

    known = all_checks()
    uf = _Union(len(records))
    linked: set[int] = set()
    checks_of: dict[int, set[str]] = defaultdict(set)  # member -> checks that linked it to another split
    similar: set[int] = set()  # members of a cross-split link that is not an identical copy
    for f in report.findings:
        check = known.get(f.check)
        if check is None or not links(check):
            continue
        m = members(f)
        if len(m) < 2:
            continue
        uf.union(m)
        linked.update(m)
        if len({records[i].split for i in m}) < 2:
            continue  # copies inside one split extend a leaked component but never make one, nor explain it
        identical = any(e.identical for e in f.evidence)
        for i in m:
            checks_of[i].add(f.check)
            if not identical:
                similar.add(i)

    comps: dict[int, list[int]] = defaultdict(list)
    for i in sorted(linked):
        comps[uf.find(i)].append(i)
    leaked = [sorted(c) for c in comps.values() if len({records[i].split for i in c}) > 1]
    home_of = {c[0]: min((records[i].split for i in c), key=order.__getitem__) for c in leaked}
    # Largest first (by members that must leave), so big components claim the proportion budget first.
    leaked.sort(key=lambda c: (-sum(1 for i in c if records[i].split != home_of[c[0]]), c[0]))

    unreadable = {(f.images[0].split, f.images[0].path) for f in report.findings if f.images and display_of(f.check) == "image"}
    before = {s.name: Counter(dict(s.classes)) for s in report.splits}
    for n in names:
        before.setdefault(n, Counter())
    # Every member outside its component's home split leaves that split whatever we decide: remove them first,
    # then decide move vs drop against the home split's counts.
    current = {n: Counter(c) for n, c in before.items()}
    plans: list[tuple[list[int], str]] = []
    for comp in leaked:
        home = home_of[comp[0]]
        movers = [i for i in comp if records[i].split != home]
        for i in movers:
            r = records[i]
            if r.label is not None and _is_image(r, unreadable):
                current[r.split][r.label] -= 1
        plans.append((movers, home))

    taken = {(r.split, r.relpath) for r in records}
    actions: dict[int, tuple[str, str | None, str | None, int, str]] = {}
    for k, (comp, (movers, home)) in enumerate(zip(leaked, plans)):
        checks = set().union(*(checks_of[i] for i in comp))
        labels = {records[i].label for i in comp if records[i].label is not None}
        gained = Counter(records[i].label for i in movers if records[i].label is not None and _is_image(records[i], unreadable))
        how = ", ".join(sorted(checks))
        if prefer == "drop":
            action, reason = DROP, f"{how}; prefer drop"
        elif len(labels) > 1:
            action, reason = DROP, f"{how}; copies carry different labels"
        elif not any(i in similar for i in comp):
            action, reason = DROP, f"{how}; identical copy of a {home} image"
        else:
            dev_move = deviation(current[home] + gained, before[home])
            dev_drop = deviation(current[home], before[home])
            if dev_move <= tolerance or dev_move <= dev_drop:
                action, reason = MOVE, how
            else:
                action, reason = DROP, f"{how}; moving would shift {home} class shares by {dev_move:.1%}"
        if action == MOVE:
            current[home] += gained
        for i in movers:
            r = records[i]
            to_path = None
            if action == MOVE:
                to_path = r.relpath
                if (home, to_path) in taken:
                    stem, ext = posixpath.splitext(r.relpath)
                    n = 1
                    to_path = f"{stem}__from-{r.split}{ext}"
                    while (home, to_path) in taken:
                        n += 1
                        to_path = f"{stem}__from-{r.split}-{n}{ext}"
                taken.add((home, to_path))
            actions[i] = (action, home if action == MOVE else None, to_path, k, reason)

    # Files that are no image the audit could read are left out, or the planned dataset would fail check again.
    for f in report.findings:
        if f.images and display_of(f.check) == "image" and f.data.get("status") != "animated":
            i = at.get((f.images[0].split, f.images[0].path))
            if i is not None and i not in actions:
                actions[i] = (EXCLUDE, None, None, -1, f"unreadable-images: {f.data.get('status', 'unreadable')}")

    files = []
    # Streamed splits' files are temporary copies, gone after the run: like arrays, they have no source to copy.
    streamed = {sp.name for sp in dataset.splits if sp.kind == "stream"}
    for i, r in enumerate(records):
        if i in actions:
            action, to_split, to_path, comp_id, reason = actions[i]
        else:
            action, to_split, to_path, comp_id, reason = KEEP, r.split, r.relpath, -1, ""
        files.append(PlannedFile(r.split, r.relpath, r.label, r.group, None if r.split in streamed else r.path, r.size, r.mtime_ns,
                                 action, to_split, to_path, comp_id, reason))
    shifts = tuple(
        ClassShift(n, tuple(sorted((c, v) for c, v in before[n].items() if v > 0)),
                   tuple(sorted((c, v) for c, v in current[n].items() if v > 0)), deviation(+current[n], before[n]))
        for n in names
    )
    return FixPlan(names, tuple(s.root for s in dataset.splits), tuple(s.kind for s in dataset.splits), tuple(files),
                   shifts, len(leaked), float(tolerance), prefer)


def plan_fix(
    *splits: Any,
    manifest: str | os.PathLike[str] | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
    **settings: Any,
) -> FixPlan:
    """Audit ``splits`` (as :func:`splitaudit.audit` takes them) and plan how to remove every leak.

    Only the leak checks run, with no cap on matches per image (so every link of a component is seen).
    ``options`` and ``settings`` are :class:`~splitaudit.options.Options` fields that apply to ``fix``
    (``tolerance``, ``prefer``, ``group_by``, ``check_options``, ``backbone``, ``cache_dir``, ``workers``...); the
    verdict settings of ``check`` (``select``, ``ignore``, ``baseline``...) are refused. Returns a
    :class:`FixPlan`; nothing is written until :func:`splitaudit.apply_plan`.
    """
    from ..api import run_checks
    from ..run import open_run

    opts = build_options(FIX, "plan_fix", options, settings).only(FIX)
    check_options = {k: dict(v) for k, v in (opts.check_options or {}).items()}
    selected = plan_checks()
    for check in selected:
        if check.display == "pair" and "max_matches_per_image" in check.params:
            # Pair checks keep a few closest matches per image; a plan needs every link.
            check_options.setdefault(check.name, {}).setdefault("max_matches_per_image", 1_000_000)
    audit_options = replace(opts, select=tuple(c.name for c in selected), check_options=check_options)
    with open_run(splits, manifest=manifest, options=audit_options, progress=progress) as ctx:
        report = run_checks(ctx)
        return build_plan(ctx.dataset, report, tolerance=opts.tolerance, prefer=opts.prefer)
