"""The crop search of the 60k set's copy stage (``candidates.cross_pairs(..., ("crops",))``) timed alone, for an A/B
of thread policies (issue #16): wall and process CPU seconds, and its answer saved to compare.

    python benchmarks/copy_stage_memory.py dump /tmp/splitaudit-peers/small-60000 CACHE in60k.npz
    PYTHONPATH=TREE python benchmarks/search_threads.py in60k.npz 0 out.npz    # 0: faiss's OpenMP as it is; N: N threads
"""
import sys, time, numpy as np, faiss
from splitaudit.neighbors import candidates as K
d = np.load(sys.argv[1]); thumbs = d["thumbs"]; s = d["split_index"]; valid = d["valid"]
rows_v = np.flatnonzero(valid)
base, query = rows_v[s[valid] == 0], rows_v[s[valid] == 1]
nt = int(sys.argv[2])
if nt: faiss.omp_set_num_threads(nt)
print("faiss omp", faiss.omp_get_max_threads())
t = time.perf_counter(); c = time.process_time()
out = K.cross_pairs(thumbs, base, query, K.CROSS_K, ("crops",))
print("crops", f"{time.perf_counter()-t:.1f} s wall {time.process_time()-c:.1f} cpu", flush=True)
np.savez(sys.argv[3], *[np.asarray(x) for x in out[0][1:]])
