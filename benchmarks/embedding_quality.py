"""Measure how well CNN embeddings and the aligned-NCC confirmation separate copies from distinct images.

Run:  python benchmarks/embedding_quality.py  [--workers 2] [--layouts 2] [--copies 100] [--fmnist-train 10000]
                                              [--fmnist-tool-train 20000] [--skip-photos] [--skip-fmnist] [--seed N]

Deterministic (fixed seeds), no network; scratch files live in a temporary directory under /tmp.  About 10 minutes
on 2 cores: embedding ~7k photo tiles and ~60k Fashion-MNIST images (once here, once by the tool), aligned NCC of
~30k pairs, and the tool's own pair confirmation.  ``--fmnist-tool-train 60000`` gives the tool all the training
images, so that its recall is measured against every known test-train leak; that adds about 10 minutes.

The images are the ones ``benchmarks/hash_thresholds.py`` builds (imported, not copied): distinct tiles cut from the
photos bundled with scikit-image / scikit-learn (texture photos included: the hard negatives), Fashion-MNIST from
the Debian package ``dataset-fashion-mnist``, and its 36 transforms (re-encodes, resizes, crops, flips, rotations,
photometric edits, blur, text overlay).

Part A -- raw numbers, no decision rule.  Embeddings exactly as the tool computes them (EfficientNet-Lite0, the tool's
decode + squash + batch pipeline ``embed_rows``, float16 storage renormalised, input side from ``auto_image_size``
over the Part B dataset), aligned NCC with the tool's ``splitaudit.neighbors.confirm``:
  A1/A2  cosine and aligned NCC between each transformed copy and its source, per transform family and transform;
  A3     each distinct image's nearest other distinct image by cosine (photos: separately among tiles of the same
         photo and among tiles of other photos; within one tile layout), and the NCC of that pair;
  A4     the neighbourhood ratio (1 - cos_1) / (1 - cos_10) the tool uses (cos_k: k-th nearest distinct image; for a
         copy the base holds its source, for a distinct image the base is the other distinct images);
  A5     how candidate thresholds on cosine, ratio and NCC split copies from distinct images.
Part B -- end to end: ``splitaudit.audit(train, val)`` with ``backbone="none"`` (hashes only) and the default cascade.
  Photos: train = the copy sources + half of the other tiles of layout 0, val = the other half + one copy of every
  source per transform.  Fashion-MNIST: train = the first --fmnist-tool-train training images, test = the 10k test
  images + copies of 100 training images.  Recall per transform (a planted pair found by exact/pixel/near-duplicates; very-similar counted
  apart), false pairs (findings between images that are not a planted pair) per 10k val images, and for
  Fashion-MNIST the real test-vs-train leaks: ground truth = pairs whose mean absolute pixel difference (MAD) is at
  most 4 grey levels, found by brute force over all 10k x 60k pairs (an L2 prefilter by matrix product that cannot
  drop a true pair: MAD <= 4 implies L2^2 <= 255 * L1 <= 255 * 4 * 784; then the exact MAD).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hash_thresholds as ht  # noqa: E402  (the image and transform generators)

from splitaudit.features.embeddings.compute import auto_image_size, load_rgb  # noqa: E402
from splitaudit.neighbors.confirm import THUMB, aligned_ncc, thumbnail  # noqa: E402

SEED = ht.SEED
BACKBONE = "efficientnet_lite0"
DUP_CHECKS = ("exact-duplicates", "pixel-duplicates", "near-duplicates")
SIM_CHECK = "similar-images"
SELECT = [*DUP_CHECKS, SIM_CHECK]
GT_MAD = 4.0  # Fashion-MNIST ground truth: a train image within 4 grey levels of mean absolute difference

try:  # the tool's current rule (being tuned: read it, never assume it)
    from splitaudit.neighbors import thresholds as _ctx

    TOOL_RULE = {k: getattr(_ctx, k, None) for k in ("EMBED_K", "DEFAULT_MIN_SIMILARITY", "DEFAULT_MAX_RATIO", "DEFAULT_MIN_NCC",
                                                      "DEFAULT_MAX_PHASH", "DEFAULT_MAX_DHASH")}
except Exception:  # noqa: BLE001
    TOOL_RULE = {}
K = int(TOOL_RULE.get("EMBED_K") or 10)


# ------------------------------------------------------------------------------------------------ helpers


def q(x: np.ndarray, p: float, fmt: str = "{:.3f}") -> str:
    return fmt.format(np.percentile(x, p)) if len(x) else "-"


def tick(label: str, t0: float) -> None:
    print(f"  [{time.perf_counter() - t0:6.1f}s] {label}", flush=True)


def embed(paths: list[str], size: int) -> np.ndarray:
    """L2-normalised float32 embeddings, through the tool's own batch pipeline (decode threads, float16 storage)."""
    from splitaudit.features.embeddings.backbones import BackboneSpec
    from splitaudit.features.embeddings.compute import EmbedBatch, embed_rows

    work = EmbedBatch(BackboneSpec(BACKBONE, None, size))
    out = embed_rows(work, {"path": np.array(paths, dtype=object), "pixels": np.full(len(paths), None, dtype=object)})
    if not out["embedded"].all():
        sys.exit(f"{int((~out['embedded']).sum())} images failed to decode for embedding")
    m = out["embedding"].astype(np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def topk(Q: np.ndarray, B: np.ndarray, k: int, self_offset: int | None = None, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosines (descending) and ids of each query in B; ``self_offset``: query i is B[self_offset + i], skipped."""
    k = min(k, len(B) - (self_offset is not None))
    sims = np.empty((len(Q), k), np.float32)
    ids = np.empty((len(Q), k), np.int64)
    for s in range(0, len(Q), chunk):
        S = Q[s : s + chunk] @ B.T
        if self_offset is not None:
            r = np.arange(len(S))
            S[r, self_offset + s + r] = -np.inf
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        v = np.take_along_axis(S, part, axis=1)
        o = np.argsort(-v, axis=1, kind="stable")
        sims[s : s + chunk] = np.take_along_axis(v, o, axis=1)
        ids[s : s + chunk] = np.take_along_axis(part, o, axis=1)
    return sims, ids


def ratio_of(cos: np.ndarray, cos_k: np.ndarray) -> np.ndarray:
    """The tool's neighbourhood ratio: cosine distance over the distance to the k-th neighbour."""
    return (1.0 - cos) / np.maximum(1.0 - cos_k, 1e-6)


# NCC runs in a spawned process pool (started before TensorFlow loads); workers decode thumbnails themselves.
def _ncc_chunk(pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
    cache: dict[str, np.ndarray] = {}

    def th(p: str) -> np.ndarray:
        if p not in cache:
            cache[p] = thumbnail(load_rgb(p, None, THUMB))
        return cache[p]

    return [aligned_ncc(th(a), th(b)) for a, b in pairs]


def ncc_pairs(pool, paths: list[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Aligned NCC of pairs (paths[a[i]], paths[b[i]]); symmetric pairs computed once."""
    if len(a) == 0:
        return np.zeros(0)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keys, inv = np.unique(np.stack([lo, hi], 1), axis=0, return_inverse=True)
    jobs = [(paths[x], paths[y]) for x, y in keys]
    chunks = [jobs[i : i + 250] for i in range(0, len(jobs), 250)]
    res = [r for part in pool.map(_ncc_chunk, chunks) for r in part]
    return np.array([r[0] for r in res])[inv.ravel()]


def link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# ----------------------------------------------------------------------------------------------- Part A


class PartA:
    """Everything measured for one dataset: copies vs their source and distinct images vs their neighbours."""

    def __init__(self, name: str, tid: np.ndarray, cos_c: np.ndarray, ncc_c: np.ndarray, ratio_c: np.ndarray,
                 rank1: np.ndarray, groups: dict[str, tuple[np.ndarray, np.ndarray]], nn_cos: np.ndarray,
                 nn_ratio: np.ndarray, nn_ncc: np.ndarray, nn_other: np.ndarray | None, origin: np.ndarray | None = None) -> None:
        self.name, self.tid, self.cos_c, self.ncc_c, self.ratio_c, self.rank1 = name, tid, cos_c, ncc_c, ratio_c, rank1
        self.groups = groups  # label -> (NN cosine per image, NCC of that NN pair)
        self.nn_cos, self.nn_ratio, self.nn_ncc, self.nn_other = nn_cos, nn_ratio, nn_ncc, nn_other
        self.origin = origin  # photos: source photo of each distinct image


def measure_copies(E_base: np.ndarray, E_copy: np.ndarray, src: np.ndarray):
    """cos(copy, source), the tool's ratio with the source in the base, and whether the source is the nearest."""
    cos = np.einsum("ij,ij->i", E_copy, E_base[src])
    sims, _ = topk(E_copy, E_base, K)
    ratio = ratio_of(cos, sims[:, -1])
    rank1 = cos >= sims[:, 0] - 1e-6
    return cos, ratio, rank1


def part_a_photos(pool, layouts, copies, size: int, t0: float) -> PartA:
    """layouts: list of (paths, origin); copies: (paths, src, tid) of layout 0."""
    cpaths, src, tid = copies
    groups: dict[str, list] = {"same photo": [[], []], "other photos": [[], []]}
    nn_cos, nn_ratio, nn_ncc, nn_other, origins = [], [], [], [], []
    for li, (paths, origin) in enumerate(layouts):
        E = embed(paths, size)
        tick(f"photos: embedded layout {li} ({len(paths)} tiles) at {size}px", t0)
        org = np.asarray(origin)
        S = E @ E.T
        np.fill_diagonal(S, -np.inf)
        same = org[:, None] == org[None, :]
        Ss, So = np.where(same, S, -np.inf), np.where(same, -np.inf, S)
        nn_s, nn_o = Ss.argmax(1), So.argmax(1)
        has_s = np.isfinite(Ss.max(1))  # a photo with a single tile has no same-photo neighbour
        idx = np.arange(len(paths))
        sims, ids = topk(E, E, K, self_offset=0)
        # one NCC pass over every pair needed: same-photo NN, other-photo NN (the overall NN is one of them)
        a = np.concatenate([idx[has_s], idx])
        b = np.concatenate([nn_s[has_s], nn_o])
        n = ncc_pairs(pool, paths, a, b)
        ns, no = n[: has_s.sum()], n[has_s.sum() :]
        groups["same photo"][0].append(S[idx[has_s], nn_s[has_s]])
        groups["same photo"][1].append(ns)
        groups["other photos"][0].append(S[idx, nn_o])
        groups["other photos"][1].append(no)
        nn_is_same = same[idx, ids[:, 0]]
        ncc_full_s = np.full(len(paths), np.nan)
        ncc_full_s[has_s] = ns
        nn_cos.append(sims[:, 0])
        nn_ratio.append(ratio_of(sims[:, 0], sims[:, -1]))
        nn_ncc.append(np.where(nn_is_same, ncc_full_s, no))
        nn_other.append(~nn_is_same)
        origins.append(org)
        tick(f"photos: layout {li} neighbours and {len(a)} NN-pair NCCs", t0)
        if li == 0:
            Ec = embed(cpaths, size)
            tick(f"photos: embedded {len(cpaths)} copies", t0)
            cos_c, ratio_c, rank1 = measure_copies(E, Ec, src)
            ncc_c = ncc_pairs(pool, list(paths) + list(cpaths), len(paths) + np.arange(len(cpaths)), src)
            tick("photos: copy NCCs", t0)
    g = {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in groups.items()}
    return PartA("photos", tid, cos_c, ncc_c, ratio_c, rank1, g, np.concatenate(nn_cos), np.concatenate(nn_ratio),
                 np.concatenate(nn_ncc), np.concatenate(nn_other), np.concatenate(origins))


def part_a_fmnist(pool, paths: list[str], copies, size: int, t0: float) -> PartA:
    cpaths, src, tid = copies
    E = embed(paths, size)
    tick(f"Fashion-MNIST: embedded {len(paths)} distinct images at {size}px", t0)
    sims, ids = topk(E, E, K, self_offset=0)
    idx = np.arange(len(paths))
    n = ncc_pairs(pool, paths, idx, ids[:, 0])
    tick(f"Fashion-MNIST: neighbours and {len(idx)} NN-pair NCCs", t0)
    Ec = embed(cpaths, size)
    cos_c, ratio_c, rank1 = measure_copies(E, Ec, src)
    ncc_c = ncc_pairs(pool, list(paths) + list(cpaths), len(paths) + np.arange(len(cpaths)), src)
    tick(f"Fashion-MNIST: {len(cpaths)} copies embedded and confirmed", t0)
    return PartA("Fashion-MNIST", tid, cos_c, ncc_c, ratio_c, rank1, {"all distinct": (sims[:, 0], n)},
                 sims[:, 0], ratio_of(sims[:, 0], sims[:, -1]), n, None)


def print_part_a(r: PartA) -> None:
    T = ht.TRANSFORMS
    print(f"== A1/A2 {r.name}: copy vs its source, per transform family ==")
    print(f"  {'family':14s} {'n':>5s} | {'cos p50':>8s} {'p5':>6s} {'min':>6s} | {'NCC p50':>8s} {'p5':>6s} {'min':>6s} | "
          f"{'ratio p50':>9s} {'p95':>6s} {'max':>6s} | {'src is NN':>9s}")

    def row(label: str, m: np.ndarray) -> str:
        c, n, ra = r.cos_c[m], r.ncc_c[m], r.ratio_c[m]
        return (f"  {label:14s} {m.sum():5d} | {q(c, 50):>8s} {q(c, 5):>6s} {c.min():6.3f} | {q(n, 50):>8s} {q(n, 5):>6s} "
                f"{n.min():6.3f} | {q(ra, 50):>9s} {q(ra, 95):>6s} {ra.max():6.3f} | {100 * r.rank1[m].mean():8.1f}%")

    for f in ht.FAMILIES:
        m = np.isin(r.tid, [k for k, t in enumerate(T) if t.family == f])
        if m.any():
            print(row(f, m))
    print(row("ALL", np.ones(len(r.tid), bool)))
    print()
    print(f"== A1/A2 {r.name}: per transform ==")
    print(f"  {'transform':20s} {'n':>4s} | {'cos p50':>8s} {'p5':>6s} | {'NCC p50':>8s} {'p5':>6s} | {'ratio p50':>9s} {'p95':>6s}")
    for k, t in enumerate(T):
        m = r.tid == k
        if not m.any():
            continue
        c, n, ra = r.cos_c[m], r.ncc_c[m], r.ratio_c[m]
        print(f"  {t.name:20s} {m.sum():4d} | {q(c, 50):>8s} {q(c, 5):>6s} | {q(n, 50):>8s} {q(n, 5):>6s} | "
              f"{q(ra, 50):>9s} {q(ra, 95):>6s}")
    print()
    print(f"== A3 {r.name}: nearest other distinct image by cosine, and the aligned NCC of that pair ==")
    print(f"  {'nearest among':14s} {'N':>6s} | {'cos p50':>8s} {'p95':>6s} {'p99':>6s} {'p99.9':>6s} {'max':>6s} | "
          f"{'NCC p50':>8s} {'p95':>6s} {'p99':>6s} {'max':>6s}")
    for label, (c, n) in r.groups.items():
        print(f"  {label:14s} {len(c):6d} | {q(c, 50):>8s} {q(c, 95):>6s} {q(c, 99):>6s} {q(c, 99.9):>6s} {c.max():6.3f} | "
              f"{q(n, 50):>8s} {q(n, 95):>6s} {q(n, 99):>6s} {n.max():6.3f}")
    print()
    print(f"== A4 {r.name}: neighbourhood ratio (1 - cos_1) / (1 - cos_{K}) ==")
    print(f"  {'queries':34s} {'N':>6s} {'min':>6s} {'p0.1':>6s} {'p1':>6s} {'p5':>6s} {'p50':>6s} {'p95':>6s} {'p99':>6s} {'max':>6s}")
    rows = [("copies (cos_1 := their source)", r.ratio_c), ("distinct images (nearest other)", r.nn_ratio)]
    if r.nn_other is not None:
        rows.append(("  distinct, NN from another photo", r.nn_ratio[r.nn_other]))
    for label, x in rows:
        print(f"  {label:34s} {len(x):6d} {x.min():6.3f} " + " ".join(f"{q(x, p):>6s}" for p in (0.1, 1, 5, 50, 95, 99)) + f" {x.max():6.3f}")
    print()


def print_separation(r: PartA, calibrated: dict | None = None) -> None:
    """Share of copies passing a rule vs how many distinct images have a nearest neighbour passing it."""
    catch = np.isin(r.tid, [k for k, t in enumerate(ht.TRANSFORMS) if t.family not in ht.UNCATCHABLE])
    # distinct images: the rule applied to each image's nearest neighbour (cos_1, its ratio, the NCC of that pair)
    rules = [(f"cos >= {t:.2f}", r.cos_c >= t, r.nn_cos >= t) for t in (0.75, 0.80, 0.85, 0.90, 0.93, 0.95, 0.97)]
    rules += [(f"ratio <= {t:.2f}", r.ratio_c <= t, r.nn_ratio <= t) for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)]
    rules += [(f"NCC >= {t:.2f}", r.ncc_c >= t, r.nn_ncc >= t) for t in (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.99)]
    for c_, ra, n_ in ((0.75, 0.5, 0.9), (0.75, 0.5, 0.85), (0.85, 0.5, 0.9), (0.75, 0.3, 0.9), (0.0, 0.5, 0.9), (0.0, 0.7, 0.85),
                       (0.0, 0.5, 0.95), (0.0, 0.3, 0.95), (0.0, 0.5, 0.97), (0.0, 0.7, 0.99), (0.0, 1e9, 0.99), (0.9, 0.7, 0.97)):
        rules.append((" & ".join(x for x in (f"cos>={c_:.2f}" if c_ else "", f"ratio<={ra:.1f}" if ra < 1e9 else "", f"NCC>={n_:.2f}") if x),
                      (r.cos_c >= c_) & (r.ratio_c <= ra) & (r.ncc_c >= n_),
                      (r.nn_cos >= c_) & (r.nn_ratio <= ra) & (r.nn_ncc >= n_)))
    tr = TOOL_RULE
    tool_rows = []
    if all(tr.get(k) is not None for k in ("DEFAULT_MIN_SIMILARITY", "DEFAULT_MAX_RATIO", "DEFAULT_MIN_NCC")):
        c_, ra, n_ = tr["DEFAULT_MIN_SIMILARITY"], tr["DEFAULT_MAX_RATIO"], tr["DEFAULT_MIN_NCC"]
        tool_rows.append(("defaults", c_, ra, n_))
        cal = calibrated or {}
        if cal.get("similarity_threshold") is not None and cal.get("ncc_threshold") is not None:
            tool_rows.append(("calibrated", cal["similarity_threshold"], ra, cal["ncc_threshold"]))
    for label, c_, ra, n_ in tool_rows:
        rules.append((f"tool {label}: cos>={c_:.3f} & r<={ra:g} & NCC>={n_:.3f}", (r.cos_c >= c_) & (r.ratio_c <= ra) & (r.ncc_c >= n_),
                      (r.nn_cos >= c_) & (r.nn_ratio <= ra) & (r.nn_ncc >= n_)))
    N = len(r.nn_cos)
    print(f"== A5 {r.name}: what a rule keeps -- copies vs distinct images whose nearest neighbour passes it ==")
    other = r.nn_other is not None
    print(f"  {'rule':48s} {'copies':>7s} {'catchable':>9s} | {'distinct':>8s} {'per 10k':>8s}" + (f" {'NN other photo':>15s}" if other else ""))
    for label, c, d in rules:
        line = f"  {label:48s} {100 * c.mean():6.1f}% {100 * c[catch].mean():8.1f}% | {int(d.sum()):8d} {1e4 * d.mean():8.1f}"
        if other:
            line += f" {int((d & r.nn_other).sum()):15d}"
        print(line)
    print(f"  ('distinct': of {N} distinct images, how many have a nearest neighbour that passes: one false pair each, as a"
          f" query; 'catchable' leaves out {', '.join(ht.UNCATCHABLE)})")
    if r.origin is not None:
        tot = dict(zip(*np.unique(r.origin, return_counts=True)))
        for label, c_, ra, n_ in tool_rows:
            d = (r.nn_cos >= c_) & (r.nn_ratio <= ra) & (r.nn_ncc >= n_)
            names, counts = np.unique(r.origin[d], return_counts=True)
            order = np.argsort(-counts, kind="stable")
            print(f"  distinct images passing 'tool {label}', by source photo (passing / tiles): "
                  + (", ".join(f"{names[i]} {counts[i]}/{tot[names[i]]}" for i in order) or "none"))
    print()


# ----------------------------------------------------------------------------------------------- Part B


def run_tool(train: str, val: str, cache: str, workers: int, t0: float) -> dict[str, object]:
    import splitaudit

    out = {}
    for bb in ("none", BACKBONE):
        t = time.perf_counter()
        rep = splitaudit.audit(train, val, backbone=bb, cache_dir=cache, select=SELECT, workers=workers)
        pairs: dict[str, set[tuple[str, str]]] = {"dup": set(), "sim": set()}
        ev: dict[tuple[str, str], tuple] = {}
        for f in rep.findings:
            if f.check not in SELECT or len(f.images) != 2:
                continue
            a, b = f.images
            key = (a.path, b.path) if a.split == os.path.basename(train) else (b.path, a.path)
            pairs["dup" if f.check in DUP_CHECKS else "sim"].add(key)
            ev[key] = (f.check, f.evidence)
        out[bb] = (pairs, ev, dict(getattr(rep, "embeddings", {}) or {}))
        steps = ", ".join(f"{k} {v:.0f}s" for k, v in getattr(rep, "timings", {}).items() if v >= 0.5)
        tick(f"audit backbone={bb}: {len(pairs['dup'])} duplicate pairs, {len(pairs['sim'])} very-similar pairs "
             f"({time.perf_counter() - t:.0f}s: {steps})", t0)
        if out[bb][2]:
            e = out[bb][2]
            print("    tool's embedding summary: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                          for k, v in e.items() if k != "null_cosine")
                  + "; null cosine " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in (e.get("null_cosine") or {}).items()), flush=True)
    return out


def ev_str(e) -> str:
    check, evidence = e
    parts = []
    for x in evidence:
        if x.stage in ("phash", "dhash"):
            parts.append(f"{x.stage} {int(x.distance)}{'m' if x.flipped else ''}")
        elif x.stage in ("embedding", "ncc"):
            parts.append(f"{'cos' if x.stage == 'embedding' else 'ncc'} {x.similarity:.3f}")
        else:
            parts.append(x.stage)
    return f"{check}: " + ", ".join(parts)


def print_recall(name: str, runs, planted: dict[tuple[str, str], int], n_sources: np.ndarray) -> None:
    T = ht.TRANSFORMS
    print(f"== B {name}: recall of planted copies per transform (%) ==")
    print("  dup = found by exact/pixel/near-duplicates; sim = only as very-similar (warning); hashes only = backbone none")
    print(f"  {'transform':20s} {'n':>4s} | {'hashes only':>11s} | {'cascade dup':>11s} {'+ sim':>6s} {'dup+sim':>8s}")
    keys = np.array(list(planted.keys()), dtype=object)
    tid = np.array(list(planted.values()))
    found = {}
    for bb, (pairs, _, _) in runs.items():
        found[bb, "dup"] = np.array([k in pairs["dup"] for k in map(tuple, keys)])
        found[bb, "sim"] = np.array([k in pairs["sim"] for k in map(tuple, keys)])
    rows = []
    for k, t in enumerate(T):
        m = tid == k
        if not m.any():
            continue
        h, d, s = found["none", "dup"][m].mean(), found[BACKBONE, "dup"][m].mean(), found[BACKBONE, "sim"][m].mean()
        rows.append((t.family, h, d, s))
        print(f"  {t.name:20s} {m.sum():4d} | {100 * h:11.1f} | {100 * d:11.1f} {100 * s:6.1f} {100 * (d + s):8.1f}")
    for label, sel in (("OVERALL (mean)", [True] * len(rows)), ("catchable (mean)", [r[0] not in ht.UNCATCHABLE for r in rows])):
        arr = np.array([r[1:] for r, ok in zip(rows, sel) if ok])
        h, d, s = arr.mean(0)
        print(f"  {label:20s} {'':4s} | {100 * h:11.1f} | {100 * d:11.1f} {100 * s:6.1f} {100 * (d + s):8.1f}")
    print()


def print_false(name: str, runs, planted: set[tuple[str, str]], n_val: int, classify, show: int = 8) -> None:
    """classify(train_path, val_path) -> a label for a non-planted pair."""
    print(f"== B {name}: false pairs (findings between images that are not a planted pair), {n_val} val images ==")
    labels: list[str] = []
    counts: dict[tuple[str, str, str], int] = {}
    examples: dict[str, list] = {}
    for bb, (pairs, ev, _) in runs.items():
        for kind in ("dup", "sim"):
            for key in sorted(pairs[kind] - planted):
                lab = classify(*key)
                if lab not in labels:
                    labels.append(lab)
                counts[bb, kind, lab] = counts.get((bb, kind, lab), 0) + 1
                if bb == BACKBONE:
                    examples.setdefault(kind, []).append((key, ev[key]))
    cols = [("none", "dup"), (BACKBONE, "dup"), (BACKBONE, "sim")]
    print(f"  {'pair kind':42s} | {'hashes dup':>10s} | {'cascade dup':>11s} {'sim':>6s}")
    tot = {c: 0 for c in cols}
    for lab in sorted(labels):
        vals = [counts.get((*c, lab), 0) for c in cols]
        for c, v in zip(cols, vals):
            tot[c] += v
        print(f"  {lab:42s} | {vals[0]:10d} | {vals[1]:11d} {vals[2]:6d}")
    print(f"  {'TOTAL':42s} | {tot[cols[0]]:10d} | {tot[cols[1]]:11d} {tot[cols[2]]:6d}")
    print(f"  {'TOTAL per 10k val images':42s} | {1e4 * tot[cols[0]] / n_val:10.1f} | {1e4 * tot[cols[1]] / n_val:11.1f} "
          f"{1e4 * tot[cols[2]] / n_val:6.1f}")
    for kind in ("dup", "sim"):
        ex = examples.get(kind, [])
        if ex:
            print(f"  cascade false {kind} pairs, first {min(show, len(ex))} of {len(ex)}:")
            for (a, b), e in ex[:show]:
                print(f"    train/{a} ~ val/{b}: {ev_str(e)}")
    print()


# ----------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--layouts", type=int, default=2, help="photo tile layouts for Part A (Part B uses layout 0)")
    ap.add_argument("--copies", type=int, default=100, help="photo tiles (of layout 0) that get the transformed copies")
    ap.add_argument("--fmnist-train", type=int, default=10000, help="Part A: first N training images (+ all 10k test)")
    ap.add_argument("--fmnist-copies", type=int, default=100)
    ap.add_argument("--fmnist-tool-train", type=int, default=20000,
                    help="Part B: first N training images given to the tool (60000: all, ~10 more minutes)")
    ap.add_argument("--skip-photos", action="store_true")
    ap.add_argument("--skip-fmnist", action="store_true")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    t0 = time.perf_counter()
    pool = mp.get_context("spawn").Pool(args.workers)  # before TensorFlow loads: workers stay light
    print("tool rule read from splitaudit.neighbors.thresholds: " + (", ".join(f"{k}={v}" for k, v in TOOL_RULE.items()) or "(unavailable)"))
    print(f"Part A uses k = {K} for the neighbourhood ratio.\n")

    with tempfile.TemporaryDirectory(prefix="embedding_quality_", dir="/tmp") as root:
        if not args.skip_photos:
            photos(pool, root, args, t0)
        if not args.skip_fmnist:
            fmnist(pool, root, args, t0)
        tick("done; removing the scratch files", t0)
    pool.close()
    pool.join()
    print(f"total {time.perf_counter() - t0:.0f}s")


def photos(pool, root: str, args, t0: float) -> None:
    layouts = []
    for li in range(args.layouts):
        d = os.path.join(root, f"photos{li}")
        paths, origin, colour, _ = ht.make_photo_tiles(d, args.seed + 1000 * li, verbose=li == 0)
        layouts.append((paths, origin, colour))
    paths0, origin0, colour0 = layouts[0]
    cpaths, src, tid = ht.make_copies(os.path.join(root, "photos0"), paths0, colour0, args.copies, "jpeg90", args.seed)
    tick(f"photos: {args.layouts} layouts of {', '.join(str(len(p)) for p, _, _ in layouts)} tiles; {len(cpaths)} copies "
         f"of {len(np.unique(src))} tiles of layout 0", t0)

    # Part B folders: train = copy sources + half of the other tiles, val = the other half + the copies
    rng = np.random.default_rng(args.seed + 7)
    sources = np.unique(src)
    rest = np.setdiff1d(np.arange(len(paths0)), sources)
    rest = rest[rng.permutation(len(rest))]
    train_idx = np.sort(np.concatenate([sources, rest[: len(rest) // 2]]))
    val_idx = np.sort(rest[len(rest) // 2 :])
    tr_dir, va_dir = os.path.join(root, "pb_photos", "train"), os.path.join(root, "pb_photos", "val")
    os.makedirs(tr_dir)
    os.makedirs(va_dir)
    rel = lambda p: os.path.basename(p)  # noqa: E731
    for i in train_idx:
        link(paths0[i], os.path.join(tr_dir, rel(paths0[i])))
    for i in val_idx:
        link(paths0[i], os.path.join(va_dir, rel(paths0[i])))
    for p in cpaths:
        link(p, os.path.join(va_dir, rel(p)))
    sizes = [Image.open(os.path.join(d, f)).size for d in (tr_dir, va_dir) for f in os.listdir(d)]
    size = auto_image_size(np.array([s[0] for s in sizes]), np.array([s[1] for s in sizes]))
    print(f"photos: embedding input side {size}px (auto_image_size over the Part B train+val images, as the tool picks it)\n")

    runs = run_tool(tr_dir, va_dir, os.path.join(root, "cache_photos"), args.workers, t0)  # first: A5 shows its calibration
    r = part_a_photos(pool, [(p, o) for p, o, _ in layouts], (cpaths, src, tid), size, t0)
    print()
    print_part_a(r)
    print_separation(r, runs[BACKBONE][2])
    planted = {(rel(paths0[s]), rel(c)): int(k) for c, s, k in zip(cpaths, src, tid)}
    origin_of = {rel(p): o for p, o in zip(paths0, origin0)}
    copy_src = {rel(c): rel(paths0[s]) for c, s in zip(cpaths, src)}
    n_val = len(val_idx) + len(cpaths)
    print(f"photos Part B: train {len(train_idx)} tiles, val {len(val_idx)} distinct tiles + {len(cpaths)} copies of "
          f"{len(sources)} train tiles\n")
    print_recall("photos", runs, planted, sources)

    def classify(a: str, b: str) -> str:
        if b in copy_src:  # a copy matched to a train tile that is not its source
            s = copy_src[b]
            return "copy ~ other tile, same photo as its source" if origin_of[s] == origin_of[a] else "copy ~ tile of another photo"
        return "distinct tile ~ tile of the same photo" if origin_of[a] == origin_of[b] else "distinct tile ~ tile of another photo"

    print_false("photos", runs, set(planted), n_val, classify)


def fmnist(pool, root: str, args, t0: float) -> None:
    tr_path = os.path.join(ht.FMNIST_DIR, "train-images-idx3-ubyte.gz")
    te_path = os.path.join(ht.FMNIST_DIR, "t10k-images-idx3-ubyte.gz")
    if not (os.path.exists(tr_path) and os.path.exists(te_path)):
        print(f"Fashion-MNIST not found in {ht.FMNIST_DIR}: `apt-get install dataset-fashion-mnist`. Skipping.\n")
        return
    xtr_all = ht.read_idx_images(tr_path)
    xtr = xtr_all[: args.fmnist_tool_train]
    xte = ht.read_idx_images(te_path)
    tr_dir, te_dir = os.path.join(root, "pb_fmnist", "train"), os.path.join(root, "pb_fmnist", "test")
    os.makedirs(tr_dir)
    os.makedirs(te_dir)
    trp = [os.path.join(tr_dir, f"tr_{i:05d}.png") for i in range(len(xtr))]
    tep = [os.path.join(te_dir, f"te_{i:05d}.png") for i in range(len(xte))]
    for a, p in zip(xtr, trp):
        ht.save(ht.to_pil(a), p, "png")
    for a, p in zip(xte, tep):
        ht.save(ht.to_pil(a), p, "png")
    n_sub = min(args.fmnist_train, len(xtr))
    cpaths, src, tid = ht.make_copies(te_dir, trp[:n_sub], [False] * n_sub, args.fmnist_copies, "png", args.seed)
    tick(f"Fashion-MNIST: wrote {len(trp)} train + {len(tep)} test PNGs, {len(cpaths)} copies of {len(np.unique(src))} "
         f"of the first {n_sub} train images (into the test folder)", t0)
    sizes = [Image.open(p).size for p in trp[:2000] + tep[:2000] + cpaths]
    size = auto_image_size(np.array([s[0] for s in sizes]), np.array([s[1] for s in sizes]))
    print(f"Fashion-MNIST: embedding input side {size}px (auto_image_size, as the tool picks it)\n")

    runs = run_tool(tr_dir, te_dir, os.path.join(root, "cache_fmnist"), args.workers, t0)  # first: A5 shows its calibration
    # Part A: distinct = first n_sub train images + all test images
    r = part_a_fmnist(pool, trp[:n_sub] + tep, (cpaths, src, tid), size, t0)
    print()
    print_part_a(r)
    print_separation(r, runs[BACKBONE][2])

    # ground truth: every test image's train images within GT_MAD of mean absolute difference
    A, B = xte.reshape(len(xte), -1), xtr_all.reshape(len(xtr_all), -1)
    Af, Bf = A.astype(np.float32), B.astype(np.float32)
    na, nb = (Af * Af).sum(1), (Bf * Bf).sum(1)
    lim = 255.0 * GT_MAD * A.shape[1] * 1.001 + 1.0  # MAD <= m  =>  L1 <= m*784  =>  L2^2 <= 255 * L1
    qi_l, bj_l = [], []
    for s in range(0, len(Af), 1000):
        d2 = na[s : s + 1000, None] + nb[None] - 2.0 * (Af[s : s + 1000] @ Bf.T)
        qi, bj = np.nonzero(d2 <= lim)
        qi_l.append(qi + s)
        bj_l.append(bj)
    qi, bj = np.concatenate(qi_l), np.concatenate(bj_l)
    mad = np.abs(A[qi].astype(np.int16) - B[bj]).mean(1) if len(qi) else np.zeros(0)
    keep = mad <= GT_MAD
    gt_all = sorted(zip(qi[keep].tolist(), bj[keep].tolist(), mad[keep].tolist()), key=lambda x: (x[2], x[0], x[1]))
    tick(f"Fashion-MNIST ground truth over all {len(xte)} x {len(xtr_all)} pairs: {len(qi)} prefilter candidates, "
         f"{len(gt_all)} test-train pairs with MAD <= {GT_MAD:g} ({len({g[0] for g in gt_all})} test images)", t0)
    gt = [g for g in gt_all if g[1] < len(xtr)]  # the pairs the tool can see (its train may be a subset)
    rel = os.path.basename
    planted = {(rel(trp[s]), rel(c)): int(k) for c, s, k in zip(cpaths, src, tid)}
    n_val = len(tep) + len(cpaths)
    print(f"Fashion-MNIST Part B: train {len(trp)} images, test {len(tep)} images + {len(cpaths)} copies of "
          f"{len(np.unique(src))} train images\n")
    print_recall("Fashion-MNIST", runs, planted, np.unique(src))

    def pair_mad(a: str, b: str) -> float | None:
        if not (a.startswith("tr_") and b.startswith("te_")):
            return None
        return float(np.abs(xtr[int(a[3:8])].astype(np.int16) - xte[int(b[3:8])]).mean())

    copy_src = {rel(c): int(s) for c, s in zip(cpaths, src)}

    def classify(a: str, b: str) -> str:
        m = pair_mad(a, b)
        if m is None:
            sm = float(np.abs(xtr[int(a[3:8])].astype(np.int16) - xtr[copy_src[b]]).mean())
            return f"copy ~ train image within MAD {GT_MAD:g} of its source" if sm <= GT_MAD else "copy ~ other train image"
        return f"test ~ train, MAD <= {GT_MAD:g} (a real leak)" if m <= GT_MAD else f"test ~ train, MAD > {GT_MAD:g}"

    print_false("Fashion-MNIST", runs, set(planted), n_val, classify, show=5)
    tick("Fashion-MNIST Part B tables", t0)

    bins = [1, 2, 4, 8, 16, 32, 64, 256]
    print("== B Fashion-MNIST: test images the tool flags against train (planted copies left out), and the mean absolute "
          "pixel difference (MAD, grey levels) of each flagged pair ==")
    print(f"  {'run / kind':22s} {'images':>6s} {'pairs':>6s} {'MAD p50':>7s} | " + " ".join(f"{'<=' + str(b):>6s}" for b in bins))
    for bb, (pairs, _, _) in runs.items():
        for kind in ("dup", "sim"):
            if bb == "none" and kind == "sim":
                continue
            ps = [(a, b) for a, b in pairs[kind] if b.startswith("te_") and a.startswith("tr_")]
            m = np.array([pair_mad(a, b) for a, b in ps])
            hist = np.histogram(m, bins=[-1, *bins])[0] if len(m) else np.zeros(len(bins), int)
            label = f"{'hashes' if bb == 'none' else 'cascade'} {kind}"
            print(f"  {label:22s} {len({b for _, b in ps}):6d} {len(ps):6d} {q(m, 50, '{:.1f}'):>7s} | "
                  + " ".join(f"{h:6d}" for h in hist))
    print()

    print(f"== B Fashion-MNIST: recall against the ground truth: over all {len(xtr_all)} train images {len(gt_all)} test-train "
          f"pairs have MAD <= {GT_MAD:g} ({len({g[0] for g in gt_all})} test images); with the tool's {len(xtr)} train images "
          f"{len(gt)} pairs ({len({g[0] for g in gt})} test images) ==")
    gt_img = {g[0] for g in gt}
    for bb, (pairs, _, _) in runs.items():
        for kind in ("dup", "dup+sim"):
            if bb == "none" and kind != "dup":
                continue
            found = pairs["dup"] | (pairs["sim"] if kind == "dup+sim" else set())
            hit = [(f"tr_{j:05d}.png", f"te_{i:05d}.png") in found for i, j, _ in gt]
            img = {i for (i, _, _), h in zip(gt, hit) if h}
            print(f"  {'hashes' if bb == 'none' else 'cascade'} {kind:8s}: pairs {sum(hit)}/{len(gt)}, test images "
                  f"{len(img)}/{len(gt_img)}")
    print(f"  {'test':>10s} {'train':>10s} {'MAD':>5s} | {'hashes':>9s} | {'cascade':40s}")
    for i, j, m in gt:
        key = (f"tr_{j:05d}.png", f"te_{i:05d}.png")
        h = "dup" if key in runs["none"][0]["dup"] else "-"
        pairs, ev, _ = runs[BACKBONE]
        c = ev_str(ev[key]) if key in ev else "-"
        print(f"  {f'te_{i:05d}':>10s} {f'tr_{j:05d}':>10s} {m:5.2f} | {h:>9s} | {c}")
    print()


if __name__ == "__main__":
    main()
