"""Peak RSS per check of a cold check of ``scale.py``'s images, in process (twenty-first session, issue #15).

    python benchmarks/end_steps.py 300000

Like ``rss_steps.py`` (the kernel's high-water mark read and reset at each mark, two malloc heaps as the CLI's
process), with every check selected and marks around each check's run, ``copy_summary``, ``build_report`` and
``to_json``: where the end of a large check peaks. Rows: (event, RSS now MiB, peak of the segment that just ended
MiB, seconds).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import scale  # noqa: E402
from splitaudit.memory import limit_arenas
limit_arenas()
from splitaudit.checks import registry, context
from splitaudit import api
from splitaudit.report import model
n = int(sys.argv[1])
rows, t0 = [], time.perf_counter()
def mark(ev):
    rows.append((ev, round(scale._status_mb("VmRSS")), round(scale._status_mb("VmHWM")), round(time.perf_counter() - t0, 1)))
    open("/proc/self/clear_refs", "w").write("5")
orig = registry.Check.run
def run(self, ctx, params):
    mark("enter " + self.name)
    try: return orig(self, ctx, params)
    finally: mark("exit " + self.name)
registry.Check.run = run
for mod, name in ((api, "build_report"), (api, "copy_summary"), (model.AuditReport, "to_json")):
    f = getattr(mod, name)
    def make(f, name):
        def g(*a, **k):
            mark("enter " + name)
            try: return f(*a, **k)
            finally: mark("exit " + name)
        return g
    setattr(mod, name, make(f, name))
def on_stage(stage, done, total):
    if not rows or rows[-1][0] != "stage " + stage: 
        if stage not in [r[0][6:] for r in rows if r[0].startswith("stage ")]: mark("stage " + stage)
from splitaudit.checks import all_checks
scale._audit(n, "local", on_stage=on_stage, select=sorted(all_checks()))
mark("end")
for r in rows: print(r)
