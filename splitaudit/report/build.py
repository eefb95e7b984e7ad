"""Stage 5: assemble the checks' results into a report with per-split counts and a verdict."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..features import decode
from ..features.table import FeatureTable, is_skipped
from ..scan.records import Dataset
from .baseline import Baseline, accept
from .model import AuditReport, CheckResult, Finding, Policy, SplitSummary
from .verdict import decide, leak_fractions


def build_report(
    dataset: Dataset,
    features: FeatureTable,
    checks: Sequence[tuple[str, Mapping[str, Any], CheckResult]],
    policy: Policy,
    *,
    embeddings: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    cache: Mapping[str, Any] | None = None,
    baseline: Baseline | None = None,
    copies: Mapping[str, Any] | None = None,
) -> AuditReport:
    """The report of one run: ``checks`` are (name, parameters, result) in the order they ran, ``embeddings`` the
    backbone and calibrated thresholds (empty when off), ``cache`` the run's cache statistics, ``copies`` the copy
    verifier's calibration and best score per evaluation image (empty when it did not run).

    Findings listed in ``baseline`` are marked accepted and do not count towards the verdict.
    """
    files: Counter[str] = Counter()
    images: Counter[str] = Counter()
    unreadable: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    classes: dict[str, Counter[str]] = {n: Counter() for n in dataset.split_names}
    for i, r in enumerate(dataset.records):
        files[r.split] += 1
        status = features["status"][i]
        if status == decode.OK:
            images[r.split] += 1
            if r.label is not None:
                classes[r.split][r.label] += 1
        elif is_skipped(status, r.relpath):
            skipped[r.split] += 1
        else:
            unreadable[r.split] += 1

    found = [f for _, _, result in checks for f in result.findings]
    ordered = tuple(sorted(accept(found, baseline), key=Finding.sort_key))
    leaks = [x for x in ordered if x.check in policy.leak_checks]
    fractions = leak_fractions(dataset.split_names, images, leaks)
    splits = tuple(
        SplitSummary(
            name=s.name, root=s.root, files=files[s.name], images=images[s.name], unreadable=unreadable[s.name],
            skipped=skipped[s.name], classes=tuple(sorted(classes[s.name].items())), leak_fraction=fractions[s.name],
        )
        for s in dataset.splits
    )
    return AuditReport(splits, ordered, decide(ordered, policy, fractions), tuple((name, params) for name, params, _ in checks),
                       dict(embeddings or {}), dict(timings or {}), dict(cache or {}),
                       distribution=distribution_tables(checks), policy=policy, copies=dict(copies or {}))


def distribution_tables(checks: Sequence[tuple[str, Mapping[str, Any], CheckResult]]) -> dict[str, Any]:
    """The checks' tables by section (class counts, property medians, AUCs, probe accuracy), sorted; empty when no
    check measured any. See docs/json-schema.md."""
    tables: dict[str, Any] = {}
    for name, _, result in checks:
        for section, table in result.tables.items():
            if section in tables:
                raise RuntimeError(f"check {name!r} returned the table {section!r} another check already returned")
            tables[section] = table
    return dict(sorted(tables.items()))
