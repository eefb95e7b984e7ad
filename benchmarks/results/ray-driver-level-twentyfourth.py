"""Driver RSS by kind after the hash stage (compute_features) of N images, local vs Ray, before/after gc + trim."""
import gc, json, sys, time
sys.path.insert(0, "/work/main/benchmarks"); sys.path.insert(0, "/work/main")
import scale
n = int(sys.argv[1]); engine = sys.argv[2]
if len(sys.argv) > 3:
    from splitaudit.features import ray_engine; ray_engine.WINDOW = int(sys.argv[3])
def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k = line.split(":")[0]
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(line.split()[1]) // 1024
    return out
from splitaudit.features.engine import Engine
from splitaudit.features.table import compute_features
from splitaudit.scan import scan
from splitaudit.memory import release_freed_memory
print("start", status(), flush=True)
if engine == "ray":
    from splitaudit.features.ray_engine import connect
    connect(None); time.sleep(3)
    print("connected", status(), flush=True)
ds = scan(None, manifest=scale.manifest(n))
print("scanned", status(), flush=True)
t = time.perf_counter()
table = compute_features(ds, cache=None, engine=Engine(engine))
print("features", round(time.perf_counter() - t, 1), status(), flush=True)
gc.collect(); release_freed_memory()
print("trimmed", status(), flush=True)
cols = {k: table[k] for k in ("digest", "phash", "dhash", "status")}
import numpy as np
print("columns MB", round(sum(v.nbytes for v in cols.values()) / 2**20, 1), flush=True)
