"""Peak RSS per check of a cold check of ``scale.py``'s images, in process (twenty-first session, issue #15).

    python benchmarks/end_steps.py 300000 [--select image-properties ...]

Like ``rss_steps.py`` (the kernel's high-water mark read and reset at each mark, two malloc heaps as the CLI's
process), with every check selected (or those of ``--select``) and marks around each check's run, ``copy_summary``,
``build_report`` and ``to_json``, and (twenty-ninth session) around the per-image stages (``compute_per_image``,
``compute_properties``) and the feature cache's look-ups and writes of their vectors, whose many calls are summed
up in one ``agg`` row each: where the end of a large check peaks. Rows: (event, RSS now MiB, peak of the segment
that just ended MiB, seconds).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import scale  # noqa: E402
from splitaudit.memory import limit_arenas  # noqa: E402

limit_arenas()
from splitaudit import api  # noqa: E402
from splitaudit.checks import all_checks, registry  # noqa: E402
from splitaudit.features import cache as cache_mod  # noqa: E402
from splitaudit.features import per_image, properties  # noqa: E402
from splitaudit.report import model  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("n", type=int)
ap.add_argument("--select", nargs="*", help="the checks to run (default: all)")
args = ap.parse_args()
rows, t0 = [], time.perf_counter()


def mark(ev):
    rows.append((ev, round(scale._status_mb("VmRSS")), round(scale._status_mb("VmHWM")), round(time.perf_counter() - t0, 1)))
    open("/proc/self/clear_refs", "w").write("5")


orig = registry.Check.run


def run(self, ctx, params):
    mark("enter " + self.name)
    try:
        return orig(self, ctx, params)
    finally:
        mark("exit " + self.name)


registry.Check.run = run


def wrap(owner, name, label=None):
    f = getattr(owner, name)

    def g(*a, **k):
        mark("enter " + (label or name))
        try:
            return f(*a, **k)
        finally:
            mark("exit " + (label or name))

    setattr(owner, name, g)


for owner, name in ((api, "build_report"), (api, "copy_summary"), (model.AuditReport, "to_json"),
                    (per_image, "compute_per_image"), (properties, "compute_properties")):
    wrap(owner, name)
for name in ("vectors_for", "store_vectors"):
    wrap(cache_mod.FeatureCache, name, "FeatureCache." + name)
seen = set()


def on_stage(stage, done, total):
    if stage not in seen:
        seen.add(stage)
        mark("stage " + stage)


scale._audit(args.n, "local", on_stage=on_stage, select=args.select or sorted(all_checks()))
mark("end")
agg = {}
for r in rows:
    if "FeatureCache." in r[0]:
        a = agg.setdefault(r[0], [0, 0, 0])
        a[0], a[1], a[2] = a[0] + 1, max(a[1], r[2]), r[1]
        continue
    print(r)
for k, (calls, peak, last) in agg.items():
    print("agg", k, "calls", calls, "max segment peak", peak, "last rss", last)
