"""Peak RSS of storing the copy stage's answer in the cache (``FeatureCache.put_arrays``), on a kept cache.

    python benchmarks/cache_blob_memory.py CACHE_DIR     # e.g. the folder of rss_steps.py --cache

The arrays are read back from the blob ``copies:*`` of CACHE_DIR, then stored in a fresh cache; the line gives the
arrays' size, the blob's size, the seconds, and the high-water mark's rise over the RSS before the store (VmHWM reset
through /proc/self/clear_refs).
"""

from __future__ import annotations

import ctypes
import io
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from splitaudit.features.cache import SCHEMA_VERSION, FeatureCache  # noqa: E402


def _mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024


def main() -> None:
    db = sqlite3.connect(Path(sys.argv[1]) / f"cache-v{SCHEMA_VERSION}.sqlite3")
    key, blob = db.execute("SELECT key, value FROM blobs WHERE key LIKE 'copies:%'").fetchone()
    db.close()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    del blob
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with tempfile.TemporaryDirectory() as folder, FeatureCache(folder) as cache:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before, t0 = _mb("VmRSS"), time.perf_counter()
        cache.put_arrays(key, arrays)
        seconds, peak = time.perf_counter() - t0, _mb("VmHWM")
        (size,) = sqlite3.connect(cache.path).execute("SELECT length(value) FROM blobs").fetchone()
    print(f"arrays {sum(a.nbytes for a in arrays.values()) / 2**20:.1f} MiB ({len(arrays)}), blob {size / 2**20:.1f} MiB,"
          f" {seconds:.2f} s, RSS {before:.0f} MiB -> peak {peak:.0f} MiB (+{peak - before:.0f})")


if __name__ == "__main__":
    main()
