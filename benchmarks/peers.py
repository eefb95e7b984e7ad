"""splitaudit against its peers (fastdup, imagededup, CleanVision), interleaved, on the same real-photo sets.

Run:  python benchmarks/peers.py [--sets 2000,20000] [--peers fastdup,imagededup,cleanvision] [--rounds 2]
                                 [--small 60000] [--workdir DIR] [--venvs DIR] [--setup-only] [--skip-stage]
                                 [--stage-only]

Installs nothing into the project's environment: each peer gets its own venv (``--venvs``, default
``~/.cache/splitaudit-bench/venvs``; built once, reused), from its PyPI release. A peer that fails to install or to
run is reported as such and the others go on.

1. Data: ``--sets`` folders of 256-px JPEGs (quality 80-95), ``train/`` and ``val/`` (80/20): random square crops
   (30-100% of the side) of the photos bundled with scikit-image and scikit-learn, flipped half the time, with
   brightness and contrast within 10%; 2% of ``val`` are re-encoded, slightly resized copies of ``train`` images.
   Every tool reads the same folder (the peers recursively, splitaudit as ``check train val``).
2. Each peer runs against splitaudit interleaved, A B A B (``--rounds`` rounds), as whole processes from a cold
   cache: fastdup's default run (its bundled ONNX embedding model) against the default check (embeddings), and
   imagededup's PHash and CleanVision's exact + near duplicates against the hash-only check (``--backbone none``).
   Printed: images/s (images / wall seconds, best of the rounds), the ratio, and the peak resident memory of the
   whole process tree (the sum of every process's RSS, and of PSS, sampled every 50 ms).
3. Unless ``--skip-stage``: the embedding stage (``compute.embed_rows``: decode, resize, inference) against the raw
   interpreter's forward pass over the same images, already decoded, in this process.
4. Unless ``--small 0``: a cold default check of ``--small`` 32-px images (wall time and peak RSS).

The converted network is built before anything is timed (its one-time cost is printed apart): it is a per-install
cost, like a peer's bundled model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import venv
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(tempfile.gettempdir()) / "splitaudit-peers-models"
SEED = 20261203
SIDE = 256

# Each driver runs in the peer's venv as ``python -c DRIVER DATA_ROOT WORK_DIR`` and prints one JSON line.
FASTDUP = """
import json, sys, fastdup
fd = fastdup.create(work_dir=sys.argv[2], input_dir=sys.argv[1])
fd.run(overwrite=True, verbose=False)
print(json.dumps({"similar_pairs": int(len(fd.similarity()))}))
"""
IMAGEDEDUP = """
import json, sys
from imagededup.methods import PHash
found = PHash(verbose=False).find_duplicates(image_dir=sys.argv[1], recursive=True)
print(json.dumps({"images": len(found), "with_duplicates": sum(1 for v in found.values() if v)}))
"""
CLEANVISION = """
import json, sys
from cleanvision import Imagelab
lab = Imagelab(data_path=sys.argv[1])
lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}})
print(json.dumps({k: int(v) for k, v in lab.issue_summary.set_index("issue_type")["num_images"].items()}))
"""
PEERS = {
    "fastdup": (["fastdup==2.54"], FASTDUP, "default"),
    "imagededup": (["imagededup==0.3.3.post2"], IMAGEDEDUP, "hash-only"),
    "cleanvision": (["cleanvision==0.3.7"], CLEANVISION, "hash-only"),
}
# Telemetry and update checks off (there is no network here anyway).
QUIET_ENV = {"SENTRY_OPT_OUT": "1", "FASTDUP_TELEMETRY": "0", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}


# ------------------------------------------------------------------------------------------------ data


def sample_photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "motorcycle_left")
    photos = list(load_sample_images().images)
    for n in names:
        try:
            photos.append(np.asarray(Image.fromarray(getattr(skimage.data, n)()).convert("RGB")))
        except Exception:  # noqa: BLE001 - a sample that needs a download (pooch) is skipped
            pass
    return photos


def make_set(root: Path, n: int, side: int = SIDE) -> Path:
    """``n`` JPEGs of ``side`` px in ``root/train`` and ``root/val`` (reused when complete)."""
    marker = root / "COMPLETE"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(SEED + n + side)
    photos = [Image.fromarray(p) for p in sample_photos()]
    n_train = int(n * 0.8)
    train_images: list[Path] = []
    for i in range(n):
        split = "train" if i < n_train else "val"
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        if split == "val" and rng.random() < 0.02 and train_images:  # a planted copy of a train image
            src = Image.open(train_images[int(rng.integers(len(train_images)))]).convert("RGB")
            s = int(side * rng.uniform(0.85, 1.0))
            im = src.resize((s, s), Image.Resampling.BILINEAR).resize((side, side), Image.Resampling.BILINEAR)
        else:
            photo = photos[int(rng.integers(len(photos)))]
            w, h = photo.size
            s = int(min(w, h) * rng.uniform(0.3, 1.0))
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            im = photo.crop((x, y, x + s, y + s)).resize((side, side), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.9, 1.1))
            im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.9, 1.1))
        path = folder / f"{split}_{i:06d}.jpg"
        im.save(path, "JPEG", quality=int(rng.integers(80, 96)))
        if split == "train":
            train_images.append(path)
    marker.write_text(str(n))
    return root


# ------------------------------------------------------------------------------------------------ processes


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, summed over ``pid`` and all its descendants. RSS counts a page shared by forked
    workers once per process (the issue's measure, "all processes counted"); PSS splits it between them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    rss = pss = 0
    todo = [pid]

    def cmdline(p: int) -> bytes:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                return fh.read()
        except OSError:
            return b""

    while todo:
        p = todo.pop()
        kids = children.get(p, [])
        if kids:
            mine = cmdline(p)
            # A child still showing its parent's command line is a subprocess between (v)fork and exec: it shares
            # the parent's pages, and counting them again put one sample of a 20k check at 651 MiB (twice its 325).
            # Python programs here never fork to work (processes are fresh interpreters).
            kids = [k for k in kids if cmdline(k) != mine]
        todo.extend(kids)
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return rss, pss


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 3600) -> dict:
    """Run ``cmd``; wall seconds, peak RSS of its process tree (MiB), exit status and its last stdout line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    peak = peak_pss = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_pss
        while not stop.is_set():
            rss, pss = tree_memory(proc.pid)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return {"wall": wall, "peak_mib": peak / 2**20, "peak_pss_mib": peak_pss / 2**20, "rc": proc.returncode, "out": lines[-1][:300] if lines else "",
            "err": err.strip().splitlines()[-1][:300] if err.strip() else ""}


def peer_python(name: str, venvs: Path) -> Path | str:
    """The peer's venv python (built once), or an error message."""
    folder = venvs / name
    py = folder / "bin" / "python"
    if (folder / "READY").exists():
        return py
    shutil.rmtree(folder, ignore_errors=True)
    venv.EnvBuilder(with_pip=True).create(folder)
    pkgs = PEERS[name][0]
    log = folder / "install.log"
    with open(log, "w") as fh:
        r = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", *pkgs], stdout=fh,
                           stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        return f"pip install {' '.join(pkgs)} failed: {' | '.join(tail)}"
    (folder / "READY").write_text(" ".join(pkgs))
    return py


def splitaudit_cmd(data: Path, mode: str, cache: Path) -> list[str]:
    cmd = [sys.executable, "-m", "splitaudit", "check", str(data / "train"), str(data / "val"), "--format", "json",
           "--output", str(cache / "report.json"), "--cache-dir", str(cache), "--exit-zero"]
    return cmd + (["--backbone", "none"] if mode == "hash-only" else [])


def project_env() -> dict[str, str]:
    # Every run gets a fresh --cache-dir (cold features and embeddings) but the one converted network, built once.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "SPLITAUDIT_MODEL_DIR": str(MODEL_DIR)}


def count_images(data: Path) -> int:
    return sum(1 for _ in data.glob("*/*.jpg")) + sum(1 for _ in data.glob("*/*.png"))


# ------------------------------------------------------------------------------------------------ parts


#: The network's input side for the photo sets: compute.auto_image_size of 256-px photos.
PHOTO_SIDE = 128


def warm_model(size: int) -> float:
    """Convert the default network for ``size`` px if needed (the one-time per-install cost); seconds taken."""
    from splitaudit.features.embeddings.backbones import BackboneSpec
    from splitaudit.features.embeddings.litert import ensure_model

    t0 = time.perf_counter()
    ensure_model(BackboneSpec(image_size=size), MODEL_DIR)
    return time.perf_counter() - t0


def compare(data: Path, peers: list[str], venvs: Path, rounds: int, scratch: Path) -> list[dict]:
    n = count_images(data)
    rows = []
    for name in peers:
        py = peer_python(name, venvs)
        _, driver, mode = PEERS[name]
        row: dict = {"set": n, "peer": name, "mode": mode, "peer_runs": [], "ours_runs": []}
        for r in range(rounds):  # A B A B
            if isinstance(py, Path):
                work = scratch / f"{name}-{r}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                res = run_measured([str(py), "-c", driver, str(data), str(work)], {**os.environ, **QUIET_ENV})
                shutil.rmtree(work, ignore_errors=True)
                row["peer_runs"].append(res)
            cache = scratch / f"ours-{name}-{r}"
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True)
            row["ours_runs"].append(run_measured(splitaudit_cmd(data, mode, cache), project_env()))
            shutil.rmtree(cache, ignore_errors=True)
        if not isinstance(py, Path):
            row["peer_error"] = py
        rows.append(row)
        print_row(row, n)
    return rows


def best(runs: list[dict]) -> dict | None:
    ok = [r for r in runs if r["rc"] == 0]
    return min(ok, key=lambda r: r["wall"]) if ok else None


def print_row(row: dict, n: int) -> None:
    ours, peer = best(row["ours_runs"]), best(row["peer_runs"])
    o = f"{n / ours['wall']:7.1f} img/s {ours['peak_mib']:5.0f} MiB (PSS {ours['peak_pss_mib']:4.0f})" if ours else f"FAILED {row['ours_runs'][-1]['err']}"
    if peer is None:
        why = row.get("peer_error") or (row["peer_runs"][-1]["err"] if row["peer_runs"] else "not run")
        print(f"  {n:>6} {row['mode']:9} splitaudit {o} | {row['peer']}: FAILED ({why})", flush=True)
        return
    ratio = f"{peer['wall'] / ours['wall']:5.2f}x" if ours else "-"
    print(f"  {n:>6} {row['mode']:9} splitaudit {o} | {row['peer']:11} {n / peer['wall']:7.1f} img/s "
          f"{peer['peak_mib']:5.0f} MiB (PSS {peer['peak_pss_mib']:4.0f}) | splitaudit/peer throughput {ratio}", flush=True)


def stage_vs_raw(data: Path, limit: int = 1000) -> dict:
    """The embedding stage (decode + resize + inference, pipelined) against the raw forward pass on the same images."""
    from splitaudit.features.embeddings.backbones import BackboneSpec
    from splitaudit.features.embeddings.compute import EmbedBatch, embed_rows, inference_batch, load_rgb

    paths = sorted(str(p) for p in data.glob("*/*.jpg"))[:limit]
    spec = BackboneSpec(image_size=PHOTO_SIDE)
    work = EmbedBatch(spec, model_dir=str(MODEL_DIR))
    backbone = work.backbone
    images = np.stack([load_rgb(p, None, spec.image_size) for p in paths])
    step = inference_batch(spec.image_size)
    cols = {"path": np.array(paths, dtype=object), "pixels": np.full(len(paths), None, dtype=object)}
    embed_rows(work, {k: v[:64] for k, v in cols.items()})  # warm-up
    raw, stage = [], []
    for _ in range(2):  # interleaved
        t0 = time.perf_counter()
        for s in range(0, len(images), step):
            backbone.embed(images[s : s + step])
        raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        embed_rows(work, cols)
        stage.append(time.perf_counter() - t0)
    n = len(paths)
    return {"images": n, "raw_img_s": n / min(raw), "stage_img_s": n / min(stage), "ratio": min(raw) / min(stage)}


def small_check(root: Path, n: int, scratch: Path) -> dict:
    data = make_set(root, n, side=32)
    size = 64  # compute.auto_image_size for 32-px images
    conversion = warm_model(size)
    cache = scratch / "ours-small"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    res = run_measured(splitaudit_cmd(data, "default", cache), project_env())
    shutil.rmtree(cache, ignore_errors=True)
    return {**res, "images": count_images(data), "conversion_s": conversion}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="2000,20000", help="comma-separated set sizes")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--small", type=int, default=60000, help="images in the 32-px cold check (0: skip)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "splitaudit-peers")
    ap.add_argument("--venvs", type=Path, default=Path.home() / ".cache" / "splitaudit-bench" / "venvs")
    ap.add_argument("--setup-only", action="store_true", help="build the venvs and the data sets, measure nothing")
    ap.add_argument("--skip-stage", action="store_true")
    ap.add_argument("--stage-only", action="store_true", help="only the embedding stage against the raw forward pass")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    peers = [p for p in args.peers.split(",") if p]
    sizes = [int(s) for s in args.sets.split(",") if s]
    scratch = args.workdir / "scratch"
    print(f"cores: {len(os.sched_getaffinity(0))}; load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    for name in peers:
        py = peer_python(name, args.venvs)
        print(f"venv {name}: {py}", flush=True)
    sets = {n: make_set(args.workdir / f"photos-{n}", n) for n in sizes}
    if args.setup_only:
        return 0
    print(f"converting the default network for {PHOTO_SIDE} px (once per install): {warm_model(PHOTO_SIDE):.1f} s", flush=True)
    results: dict = {"load_start": os.getloadavg()[0], "rows": []}
    for n, data in ({} if args.stage_only else sets).items():
        print(f"\n{n} photos ({SIDE} px), cold caches, best of {args.rounds} interleaved rounds:", flush=True)
        results["rows"] += compare(data, peers, args.venvs, args.rounds, scratch)
    if not args.skip_stage and sets:
        st = stage_vs_raw(next(iter(sets.values())))
        results["stage"] = st
        print(f"\nembedding stage vs raw forward pass ({st['images']} images, {PHOTO_SIDE} px): stage {st['stage_img_s']:.1f} img/s, "
              f"raw {st['raw_img_s']:.1f} img/s, ratio {st['ratio']:.2f}", flush=True)
    if args.small and not args.stage_only:
        sm = small_check(args.workdir / f"small-{args.small}", args.small, scratch)
        results["small"] = sm
        print(f"\ncold default check of {sm['images']} 32-px images: {sm['wall']:.1f} s wall, peak {sm['peak_mib']:.0f} MiB "
          f"(PSS {sm['peak_pss_mib']:.0f}) "
              f"(rc {sm['rc']}; converting the 64-px network first took {sm['conversion_s']:.1f} s, not counted)", flush=True)
    results["load_end"] = os.getloadavg()[0]
    print(f"\nload average at end: {results['load_end']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
