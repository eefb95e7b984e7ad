"""Scale figures for docs/scale.md: the Ray engine's overhead, the driver's memory, and search at 1M x 100k.

    python benchmarks/scale.py data --n 1000000            # small JPEGs under /tmp/sa-scale (crops of real photos)
    python benchmarks/scale.py engines --n 20000 [--embed]  # cold run, local pool vs Ray, one ratio per stage
    python benchmarks/scale.py engines --folder /tmp/splitaudit-peers/photos-2000 --embed --rounds 2  # A B A B
    python benchmarks/scale.py hashstage --n 20000 --rounds 2  # the hash stage alone, local vs Ray, A B A B
    python benchmarks/scale.py rss --n 100000 --engine local [--json out.json]  # peak driver RSS of a hash-only check
    python benchmarks/scale.py cli --n 1000000 [--engine ray] [--json out.json]  # the same through the CLI's process
    python benchmarks/scale.py search --base 1000000 --queries 100000 --dim 256   # dense
    python benchmarks/scale.py binary --base 1000000 --queries 100000   # Hamming radius search, flat vs MIH

Every figure comes from one run on the machine it ran on; ratios, not absolute times, are what carry over.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("SPLITAUDIT_SCALE_DATA", "/tmp/sa-scale"))
PER_FOLDER = 1000


def _photos() -> list[np.ndarray]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import PHOTO_NAMES, _load_photo

    return [_load_photo(n) for n in PHOTO_NAMES]


def _write_range(args: tuple[int, int, int]) -> None:
    from PIL import Image

    start, stop, seed = args
    photos = _photos()
    rng = np.random.default_rng(seed)
    for i in range(start, stop):
        p = photos[i % len(photos)]
        side = int(rng.integers(24, 49))
        y, x = int(rng.integers(0, p.shape[0] - side)), int(rng.integers(0, p.shape[1] - side))
        tile = p[y : y + side, x : x + side]
        if tile.ndim == 2:
            tile = np.stack([tile] * 3, axis=-1)
        folder = DATA / "images" / f"{i // PER_FOLDER:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(tile[..., :3])).save(buf, "JPEG", quality=int(rng.integers(70, 96)))
        (folder / f"{i:07d}.jpg").write_bytes(buf.getvalue())


def make_data(n: int) -> None:
    """``n`` small JPEG crops (24-48 px) of the test photos; one manifest per size: 90% train, 10% val."""
    from concurrent.futures import ProcessPoolExecutor

    have = sum(1 for _ in (DATA / "images").glob("*/*.jpg")) if (DATA / "images").exists() else 0
    t0 = time.perf_counter()
    if have < n:
        chunks = [(s, min(n, s + 10_000), s) for s in range(have - have % 10_000, n, 10_000)]
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_write_range, chunks))
    print(f"{n} images ready in {DATA} ({time.perf_counter() - t0:.0f} s)")


def manifest(n: int) -> Path:
    path = DATA / f"manifest-{n}.csv"
    if not path.exists():
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "split"])
            for i in range(n):
                w.writerow([f"images/{i // PER_FOLDER:05d}/{i:07d}.jpg", str(i % 8), "val" if i % 10 == 9 else "train"])
    return path


HASH_CHECKS = ["exact-duplicates", "pixel-duplicates", "near-duplicates"]


def _audit(n: int, engine: str, backbone: str = "none", cache_dir: str | None = None, folder: Path | None = None,
           select: list[str] | None = None, on_stage: Callable[[str, int, int], None] | None = None,
           ) -> tuple[float, str, dict[str, float]]:
    """A cold check (fresh cache): wall seconds, the JSON report, and seconds per stage (from a stage's first
    progress event to the next stage's first one)."""
    import splitaudit

    first: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        first.setdefault(stage, time.perf_counter())
        if on_stage is not None:
            on_stage(stage, done, total)

    source: dict = {"manifest": manifest(n)} if folder is None else {}
    splits = [folder / "train", folder / "val"] if folder is not None else []
    extra = {"verify": False} if backbone != "none" else {}  # embeddings and their search, not the copy verifier
    with tempfile.TemporaryDirectory(prefix="sa-cache-") as fresh:  # a cold run: an empty cache, removed after
        t0 = time.perf_counter()
        report = splitaudit.audit(*splits, **source, backbone=backbone, engine=engine, select=select or HASH_CHECKS,
                                  cache_dir=cache_dir or fresh, progress=progress, **extra)
        end = time.perf_counter()
    marks = sorted(first.items(), key=lambda kv: kv[1]) + [("end", end)]
    stages = {k: round(marks[i + 1][1] - t, 2) for i, (k, t) in enumerate(marks[:-1])}
    return end - t0, report.to_json(), stages


def _audit_elsewhere(n: int, backbone: str, folder: Path | None, select: list[str]) -> tuple[float, str, dict[str, float]]:
    """:func:`_audit` on the local engine in a fresh Python process (the report as its SHA-256)."""
    import subprocess

    cmd = [sys.executable, __file__, "engines", "--n", str(n), "--one", json.dumps([backbone, select]),
           *(["--folder", str(folder)] if folder is not None else [])]
    got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    return got["seconds"], got["sha"], got["stages_s"]


def start_ray() -> float:
    """Start a local Ray runtime and wait until it is ready (its prepared workers and Ray Data's own actors, which
    ``connect`` starts without waiting): seconds. Timed runs then start on a ready runtime, and nothing of its start
    runs beside the local pool's runs (it would slow them)."""
    import ray

    from splitaudit.features import ray_engine

    t0 = time.perf_counter()
    ray_engine.connect(None)
    ray.get(list(ray_engine._preparing))
    for name, space in (("datasets_stats_actor", "_dataset_stats_actor"), ("AutoscalingCoordinator", "AutoscalingCoordinator"),
                        ("ActorLocationTracker", "ActorLocationTracker")):
        try:
            ray.get(ray.get_actor(name, namespace=space).__ray_ready__.remote())
        except ValueError:  # not made at start (an older tree): the first execution makes it
            pass
    return time.perf_counter() - t0


def engines(n: int, embed: bool, folder: Path | None = None, rounds: int = 1, skip_hash: bool = False) -> None:
    """Cold runs (fresh cache) of the same check, local pool and Ray interleaved (A B A B, ``rounds`` times); the Ray
    runtime is started first and its start-up reported apart (a cluster is started once and serves many runs).
    ``folder`` (``train/`` and ``val/`` inside, e.g. a benchmarks/peers.py photo set) replaces the manifest of
    small images. With ``embed`` the embedding run checks ``similar-images`` with efficientnet_lite0 (verifier off);
    the network is converted once before anything is timed."""

    if folder is not None:
        n = sum(1 for _ in folder.glob("*/*.jpg"))
    if embed:
        from splitaudit.features.embeddings.backbones import BackboneSpec
        from splitaudit.features.embeddings.litert import ensure_model

        os.environ.setdefault("SPLITAUDIT_MODEL_DIR", str(Path(tempfile.gettempdir()) / "splitaudit-peers-models"))
        ensure_model(BackboneSpec(image_size=224), Path(os.environ["SPLITAUDIT_MODEL_DIR"]))
    startup = start_ray()
    print(json.dumps({"ray_startup_s": round(startup, 1), "load": os.getloadavg()}), flush=True)
    runs = ([] if skip_hash else [("none", HASH_CHECKS)]) + ([("efficientnet_lite0", ["similar-images"])] if embed else [])
    for backbone, select in runs:
        times: dict[str, list[float]] = {"local": [], "ray": []}
        reports: dict[str, set[str]] = {"local": set(), "ray": set()}
        for r in range(rounds):
            for engine in ("local", "ray"):
                if engine == "local":  # a fresh process: with Ray's threads in this one the pool would be threads
                    t, js, stages = _audit_elsewhere(n, backbone, folder, select)
                else:
                    t, js, stages = _audit(n, engine, backbone, folder=folder, select=select)
                    js = hashlib.sha256(js.encode()).hexdigest()
                times[engine].append(t)
                reports[engine].add(js)
                print(json.dumps({"n": n, "backbone": backbone, "round": r, "engine": engine, "seconds": round(t, 1),
                                  "stages_s": stages, "load": os.getloadavg()[0]}), flush=True)
        print(json.dumps({"n": n, "backbone": backbone, "rounds": rounds,
                          "local_s": [round(t, 1) for t in times["local"]], "ray_s": [round(t, 1) for t in times["ray"]],
                          "ray_over_local_sum": round(sum(times["ray"]) / sum(times["local"]), 3),
                          "ray_over_local_best": round(min(times["ray"]) / min(times["local"]), 3),
                          "ray_startup_s": round(startup, 1),
                          "identical_json": len(reports["local"] | reports["ray"]) == 1}), flush=True)


@dataclass(frozen=True)
class _Canned:
    """A batch function that does no work: the hash stage's output columns for as many rows as it is given (the
    engines' own cost per row, without decoding)."""

    out: dict

    def __call__(self, batch: dict) -> dict:
        m = len(batch["path"])
        return {k: v[:m].copy() for k, v in self.out.items()}


def _hash_once(n: int, engine_name: str, work: bool) -> dict:
    """One timed hash stage (``work``) or no-work pass of ``n`` rows on an engine, in this process."""
    from splitaudit.features.engine import Engine
    from splitaudit.features.extract import HashOptions
    from splitaudit.features.table import _Extract, batch_columns, compute_features
    from splitaudit.scan import scan

    dataset = scan(None, manifest=manifest(n))
    engine = Engine(engine_name)
    if work:
        c0, t0 = time.process_time(), time.perf_counter()
        table = compute_features(dataset, cache=None, engine=engine)
        t, cpu = time.perf_counter() - t0, time.process_time() - c0
        digest = hashlib.sha256()
        for k in ("digest", "pixel_digest", "phash", "dhash", "status", "width", "height"):
            digest.update(repr(table[k].tolist()).encode())
        return {"seconds": round(t, 2), "driver_cpu_s": round(cpu, 2), "columns_sha": digest.hexdigest()[:16]}
    sample = _Extract(HashOptions())(batch_columns(dataset.records[:64], {}))
    canned = _Canned({k: np.concatenate([v] * 16) for k, v in sample.items()})
    cols = batch_columns(dataset.records, {})
    c0, t0 = time.process_time(), time.perf_counter()
    engine.map(canned, cols)
    t, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": round(t, 2), "driver_cpu_s": round(cpu, 2), "us_per_row": round(t / n * 1e6, 1)}


def hash_stage(n: int, rounds: int) -> None:
    """The hash stage alone (``compute_features``, no cache), local pool and Ray interleaved (A B A B): wall seconds
    and the driver's CPU seconds per run, the output columns compared; then the engines' own cost per row with a
    batch function that does no work (``_Canned``: the same output columns, no decoding). The local runs are each
    a fresh process that never imports Ray, as the CLI runs them (in a process with Ray's threads the pool would
    be threads, not forked workers)."""
    import subprocess

    def local(work: bool) -> dict:
        cmd = [sys.executable, __file__, "hashstage", "--n", str(n), "--one", "local" if work else "local-nowork"]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])

    print(json.dumps({"n": n, "ray_startup_s": round(start_ray(), 1), "load": os.getloadavg()}), flush=True)
    for work in (True, False):
        times: dict[str, list[float]] = {"local": [], "ray": []}
        shas = set()
        for r in range(rounds):
            for name in ("local", "ray"):
                got = local(work) if name == "local" else _hash_once(n, "ray", work)
                times[name].append(got["seconds"])
                shas.add(got.get("columns_sha"))
                print(json.dumps({"work": work, "round": r, "engine": name, **got, "load": os.getloadavg()[0]}), flush=True)
        print(json.dumps({"n": n, "work": work, "ray_over_local": [round(b / a, 3) for a, b in zip(times["local"], times["ray"])],
                          "sum_ratio": round(sum(times["ray"]) / sum(times["local"]), 3),
                          **({"identical_columns": len(shas) == 1} if work else {})}), flush=True)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024


def rss(n: int, engine: str, json_out: Path | None = None) -> None:
    """Peak RSS of this (driver) process over a cold hash-only check of ``n`` images (pool workers excluded), and
    per stage: its seconds, the RSS when it started and its peak. No sampling thread (a second thread makes the
    pool run threads instead of forked workers): the kernel's high-water mark (VmHWM) is read at each stage's
    start and reset there (``/proc/self/clear_refs``), so each stage's peak is its own."""

    def reset_peak() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    order: list[str] = []
    at_start: dict[str, float] = {}
    peak: dict[str, float] = {}

    def on_stage(stage: str, done: int, total: int) -> None:
        if stage not in at_start:
            if order:
                peak[order[-1]] = _status_mb("VmHWM")
            at_start[stage] = _status_mb("VmRSS")
            order.append(stage)
            reset_peak()
            print(json.dumps({"stage": stage, "rss_mb": round(at_start[stage]), "load": os.getloadavg()[0],
                              "utc": time.strftime("%H:%M:%S", time.gmtime())}), flush=True)

    reset_peak()
    t, report, times = _audit(n, engine, on_stage=on_stage)
    peak[order[-1]] = _status_mb("VmHWM")  # the last stage, up to the end of the report
    if json_out is not None:  # after the last peak is read: the report, to compare two revisions byte for byte
        json_out.write_text(report)
    per_stage = {s: {"s": times.get(s), "rss_start_mb": round(at_start[s]), "rss_peak_mb": round(peak[s])}
                 for s in order}
    print(json.dumps({"n": n, "engine": engine, "seconds": round(t, 1),
                      "peak_driver_rss_mb": round(max(peak.values())), "stages": per_stage,
                      "load": os.getloadavg()}), flush=True)


def _proc_status(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM and the resident size by kind (RssAnon, RssFile, RssShmem) of process ``pid`` in MiB (empty once
    it has gone)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def cli(n: int, json_out: Path | None = None, engine: str = "local") -> None:
    """Peak RSS of the CLI's own process (the driver: what a user runs, with its allocator settings) over a cold
    hash-only ``splitaudit check --manifest`` of ``n`` images (``--engine ray``: a local Ray runtime the CLI starts,
    its driver the CLI's process), per stage: at each stage's first progress line the
    process's high-water mark (VmHWM) is read, then reset (``/proc/PID/clear_refs``), so each stage's peak is its
    own; the last segment (from "measuring images") includes the later checks and the JSON report's writing. Pool
    workers are not counted (as ``rss``). Printed: one line per stage as it starts, then the run's JSON summary."""
    import subprocess
    import threading

    cache = tempfile.mkdtemp(prefix="sa-cli-cache-")
    out = json_out or Path(cache) / "report.json"
    cmd = [sys.executable, "-m", "splitaudit", "check", "--manifest", str(manifest(n)), "--backbone", "none",
           "--cache-dir", cache, "--format", "json", "--output", str(out), "--exit-zero", "--engine", engine]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE)
    stages: list[dict] = []

    def follow() -> None:  # reads the progress lines; a stage's first line closes the one before
        for raw in proc.stderr:  # type: ignore[union-attr]
            line = raw.decode(errors="replace").rstrip()
            parts = line.split(": ")
            stage = parts[1] if len(parts) >= 3 else line
            if any(s["stage"] == stage for s in stages):
                continue
            st = _proc_status(proc.pid)
            if stages:
                stages[-1]["peak_mib"] = round(st.get("VmHWM", 0))
            try:
                with open(f"/proc/{proc.pid}/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                pass
            # the resident size by kind: the heap, files' pages (libraries), shared memory (Ray's object store)
            stages.append({"stage": stage, "at_s": round(time.perf_counter() - t0, 1), "rss_mib": round(st.get("VmRSS", 0)),
                           **{k.lower().replace("rss", "") + "_mib": round(st.get(k, 0)) for k in ("RssAnon", "RssFile", "RssShmem")}})
            print(json.dumps(stages[-1]), flush=True)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    rc = proc.wait()
    reader.join()
    wall = time.perf_counter() - t0
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    peaks = [s["peak_mib"] for s in stages if "peak_mib" in s]
    print(json.dumps({"n": n, "engine": engine, "rc": rc, "seconds": round(wall, 1), "peak_cli_rss_mib": max(peaks, default=0),
                      "stages": stages, "load": os.getloadavg()}), flush=True)


def _clustered(n: int, dim: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    """Unit vectors around random cluster centres (a stand-in for CNN embeddings: dense clusters, a long tail)."""
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        c = centers[rng.integers(0, len(centers), m)]
        v = c + rng.standard_normal((m, dim), dtype=np.float32) * 0.6 / np.sqrt(dim)
        out[s : s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def search(n_base: int, n_query: int, dim: int, sample: int, k: int, methods: list[str]) -> None:
    """Dense search at ``n_base`` x ``n_query``: time of each method, recall@k against exact search on a
    sample of queries, and the sharded exact search (shards of the base merged) equal to the unsharded one."""
    from splitaudit.neighbors import dense

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20_000, dim)).astype(np.float32)
    base = _clustered(n_base, dim, rng, centers)
    queries = _clustered(n_query, dim, rng, centers)
    # Planted near-copies: the first 1% of queries are noisy copies of base rows.
    copies = rng.choice(n_base, n_query // 100, replace=False)
    noisy = base[copies] + rng.standard_normal((len(copies), dim), dtype=np.float32) * 0.05 / np.sqrt(dim)
    queries[: len(copies)] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    probe = np.sort(rng.choice(n_query, sample, replace=False))
    t0 = time.perf_counter()
    _, exact_ids = _exact(base, queries[probe], k)
    t_sample = time.perf_counter() - t0
    print(json.dumps({"search": "exact sample", "queries": sample, "seconds": round(t_sample, 1),
                      "projected_full_exact_s": round(t_sample * n_query / sample)}))
    for method in methods:
        if method == "pca" and dim <= dense.PCA_DIM:
            continue
        t0 = time.perf_counter()
        index = dense.build_index(base, method=method, queries=n_query)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        if dense._is_ivfpq(index):  # what knn() does: candidates from the codes, re-ranked with the full vectors
            _, cand = index.search(queries, dense.RERANK * k)
            _, ids = dense.rerank(base, queries, cand, k)
        else:
            _, ids = index.search(queries, k)
        t_search = time.perf_counter() - t0
        recall = np.mean([len(set(ids[j]) & set(exact_ids[i])) / k for i, j in enumerate(probe)])
        found = np.mean(ids[: len(copies), 0] == copies)
        print(json.dumps({"search": method, "base": n_base, "queries": n_query, "dim": dim, "build_s": round(t_build, 1),
                          "search_s": round(t_search, 1), f"recall@{k}": round(float(recall), 4),
                          "planted_copies_top1": round(float(found), 4)}))
        del index


def binary(n_base: int, n_query: int, methods: list[str], max_phash: int, max_dhash: int, sample: int) -> None:
    """The hash search at ``n_base`` x ``n_query`` as ``check`` runs it: every code (base and queries) searched
    against all of them, as is and mirrored, within the radii. ``flat`` is the exhaustive index (exact by
    construction), ``mih`` multi-index hashing; both unsharded (the local engine) and ``auto`` sharded by split
    (the Ray engine's tasks, run here one after another). Every method's pairs must equal the first one's; on
    ``sample`` query rows the chosen index is compared with the exhaustive scan match for match."""
    from splitaudit.neighbors.binary import choose_index, hash_pairs, shard_pairs

    rng = np.random.default_rng(0)
    n = n_base + n_query
    # Random 64-bit codes (real pHashes spread less evenly; choose_index falls back to flat where they pile up),
    # independent codes for the mirrored images, and 1% of the queries planted as copies of base rows: pHash within
    # max_phash bits, dHash within max_dhash bits.
    ph, dh, ph_f, dh_f = (rng.integers(0, 2**64, n, dtype=np.uint64) for _ in range(4))
    src = rng.choice(n_base, n_query // 100, replace=False)
    tgt = n_base + np.arange(len(src))

    def flips(m: int, most: int) -> np.ndarray:
        out = np.zeros(m, np.uint64)
        for j in range(m):
            for b in rng.choice(64, int(rng.integers(0, most + 1)), replace=False):
                out[j] |= np.uint64(1) << np.uint64(b)
        return out

    ph[tgt], dh[tgt] = ph[src] ^ flips(len(src), max_phash), dh[src] ^ flips(len(src), max_dhash)
    split = (np.arange(n) >= n_base).astype(np.int64)
    valid = np.ones(n, bool)
    print(json.dumps({"binary": "setup", "codes": n, "base": n_base, "queries": n_query, "max_phash": max_phash,
                      "max_dhash": max_dhash, "auto_choice_whole": choose_index(ph, max_phash),
                      "auto_choice_base_split": choose_index(ph[:n_base], max_phash)}), flush=True)
    first = None
    for method in methods:
        sharded = method.endswith("-sharded")
        t0 = time.perf_counter()
        pairs = hash_pairs(ph, dh, ph_f, dh_f, valid, max_phash=max_phash, max_dhash=max_dhash,
                           method=method.removesuffix("-sharded"), shards=split if sharded else None)
        t = time.perf_counter() - t0
        got = set(zip(pairs.a.tolist(), pairs.b.tolist()))
        recall = np.mean([(int(a), int(b)) in got for a, b in zip(src, tgt)])
        same = None
        if first is None:
            first = pairs
        else:
            same = all(np.array_equal(getattr(pairs, c), col) for c, col in first.to_arrays().items())
        print(json.dumps({"binary": method, "seconds": round(t, 1), "pairs": len(pairs),
                          "planted_recall": float(recall), "identical_to_first": same, "load": os.getloadavg()}),
              flush=True)
    if sample:
        # Recall against the exhaustive scan on a sample of query rows (every match of each, both orientations), and
        # the exhaustive scan's time for all rows projected from it (the auto time includes building its index).
        rows = np.union1d(tgt, rng.choice(n, sample, replace=False))  # the planted copies' rows and random ones
        out = {}
        for method in ("flat", "auto"):
            t0 = time.perf_counter()
            q, tg, dp, dd, fl = shard_pairs(ph, dh, ph_f, dh_f, rows, np.arange(n), max_phash, max_dhash, method)
            out[method] = (time.perf_counter() - t0, set(zip(q.tolist(), tg.tolist(), fl.tolist(), dp.tolist(), dd.tolist())))
        exact, approx = out["flat"][1], out["auto"][1]
        print(json.dumps({"binary": "sample vs exhaustive", "query_rows": len(rows), "flat_s": round(out["flat"][0], 1),
                          "auto_s": round(out["auto"][0], 1), "matches_exhaustive": len(exact),
                          "recall_vs_exhaustive": len(exact & approx) / max(1, len(exact)), "extra": len(approx - exact),
                          "projected_full_flat_s": round(out["flat"][0] * n / len(rows)), "load": os.getloadavg()}),
              flush=True)


def _exact(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index.search(queries, k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["data", "engines", "hashstage", "rss", "cli", "search", "binary"])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--engine", default="local", choices=["local", "ray"])
    ap.add_argument("--embed", action="store_true", help="also time the embedding stage (efficientnet_lite0)")
    ap.add_argument("--folder", type=Path, help="engines: a folder with train/ and val/ (e.g. a peers.py photo set)")
    ap.add_argument("--rounds", type=int, default=1, help="engines: interleaved local/Ray rounds")
    ap.add_argument("--skip-hash", action="store_true", help="engines: only the embedding runs (with --embed)")
    ap.add_argument("--one", help="hashstage: one run in this process (local, local-nowork, ray, ray-nowork); engines: [backbone, select] as JSON")
    ap.add_argument("--base", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--methods", default="ivfpq,pca", help="dense index methods to time (comma-separated)")
    ap.add_argument("--binary-methods", default="auto,auto-sharded",
                    help="binary index methods to time over all rows (flat, mih, auto; -sharded: one base per split)")
    ap.add_argument("--max-phash", type=int, default=6)
    ap.add_argument("--max-dhash", type=int, default=12)
    ap.add_argument("--json", type=Path, help="rss, cli: write the check's JSON report here")
    a = ap.parse_args()
    if a.what == "data":
        make_data(a.n)
    elif a.what == "engines" and a.one:
        backbone, select = json.loads(a.one)
        t, js, stages = _audit(a.n, "local", backbone, folder=a.folder, select=select)
        print(json.dumps({"seconds": t, "sha": hashlib.sha256(js.encode()).hexdigest(), "stages_s": stages}))
    elif a.what == "engines":
        engines(a.n, a.embed, a.folder, a.rounds, a.skip_hash)
    elif a.what == "hashstage" and a.one:
        print(json.dumps(_hash_once(a.n, a.one.removesuffix("-nowork"), not a.one.endswith("-nowork"))))
    elif a.what == "hashstage":
        hash_stage(a.n, a.rounds)
    elif a.what == "rss":
        rss(a.n, a.engine, a.json)
    elif a.what == "cli":
        cli(a.n, a.json, a.engine)
    elif a.what == "binary":
        binary(a.base, a.queries, [m for m in a.binary_methods.split(",") if m], a.max_phash, a.max_dhash, a.sample)
    else:
        search(a.base, a.queries, a.dim, a.sample, a.k, a.methods.split(","))


if __name__ == "__main__":
    main()
