"""Peak memory of one cold default check (embeddings on), all processes counted, stage by stage.

Run:  python benchmarks/check_memory.py [--images 20000] [--workdir DIR] [--backbone efficientnet_lite0]

The data is ``benchmarks/peers.py``'s photo set (256-px JPEG crops of the bundled scikit-image / scikit-learn
photos, 80/20 train/val, 2% planted copies; built once under ``--workdir``). The check runs in a child process
(``splitaudit.audit`` with a progress callback that names the stage), from a cold feature cache, with the converted
network already built (a per-install cost). Every 50 ms the sampler sums, over the child and all its descendants,
the resident size (RSS: a page shared by forked workers counts once per process, the issue's measure) and the
proportional size (PSS: shared pages split between their processes, the memory actually in use). Printed: the peak
of each per stage, the peak number of processes, and the largest single process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers

DRIVER = """
import sys, time
import splitaudit
t0 = time.perf_counter()
last = [None]
def progress(stage, done, total):
    if stage != last[0]:
        last[0] = stage
        print("STAGE", stage, flush=True)
report = splitaudit.audit(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3], backbone=sys.argv[4], progress=progress)
print("STAGE done", flush=True)
print("FINDINGS", len(report.findings), "WALL", round(time.perf_counter() - t0, 1), flush=True)
if len(sys.argv) > 5:
    open(sys.argv[5], "w").write(report.to_json())
"""


def process_sizes(pid: int) -> list[tuple[int, int, int]]:
    """(pid, RSS, PSS) in bytes of ``pid`` and each of its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    children.setdefault(int(fh.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        rss = pss = 0
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
        out.append((p, rss, pss))
    return out


def spy(pid: int) -> str:
    """``py-spy dump`` of ``pid`` (the Python stack running now), or why there is none."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        return subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"py-spy failed: {e}"


def measure(data: Path, cache: Path, backbone: str, *, dumps: bool = False, json_out: Path | None = None) -> dict:
    data, cache = data.absolute(), cache.absolute()  # not resolve(): links stay as given (the report names its roots)
    cmd = [sys.executable, "-c", DRIVER, str(data / "train"), str(data / "val"), str(cache), backbone]
    cmd += [str(json_out.absolute())] if json_out else []
    errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed below, after the child ends
    # run in this script's tree: "python -c" puts the working folder first on sys.path, ahead of PYTHONPATH, so a
    # run launched from another checkout would import that checkout's splitaudit
    proc = subprocess.Popen(cmd, env=peers.project_env(), stdout=subprocess.PIPE, stderr=errors, text=True,
                            start_new_session=True, cwd=peers.ROOT)
    stage = ["start"]
    lines: list[str] = []
    peaks: dict[str, dict[str, float]] = {}
    done = threading.Event()
    # With ``dumps``: the stack of the largest process each time the summed RSS passes its peak by 32 MiB.
    at_peak: list[tuple[str, float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("STAGE "):
                stage[0] = line.split(None, 1)[1].strip()

    def sample() -> None:
        while not done.is_set():
            sizes = process_sizes(proc.pid)
            if sizes:
                rss, pss = sum(s[1] for s in sizes), sum(s[2] for s in sizes)
                p = peaks.setdefault(stage[0], {"rss": 0, "pss": 0, "procs": 0, "largest": 0})
                p["rss"], p["pss"] = max(p["rss"], rss), max(p["pss"], pss)
                p["procs"] = max(p["procs"], len(sizes))
                p["largest"] = max(p["largest"], max(s[1] for s in sizes))
                if dumps and rss > (at_peak[-1][1] if at_peak else 0) + 32 * 2**20:
                    at_peak.append((stage[0], rss, spy(max(sizes, key=lambda s: s[1])[0])))
            done.wait(0.05)

    t0 = time.perf_counter()
    reader, sampler = threading.Thread(target=read, daemon=True), threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    reader.join()
    errors.seek(0)
    err = errors.read()
    errors.close()
    return {"rc": proc.returncode, "wall": wall, "peaks": peaks, "lines": lines, "err": err.strip().splitlines()[-3:],
            "dumps": at_peak}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "splitaudit-peers")
    ap.add_argument("--backbone", default="efficientnet_lite0", help='"none" for the hash-only check')
    ap.add_argument("--cache", type=Path, help="feature cache directory to use and keep (default: a fresh one, removed)")
    ap.add_argument("--dumps", action="store_true", help="print py-spy stacks of the largest process as the peak grows")
    ap.add_argument("--json", type=Path, help="write the check's JSON report here (to compare two trees' answers)")
    args = ap.parse_args(argv)
    data = peers.make_set(args.workdir / f"photos-{args.images}", args.images)
    if args.backbone != "none":
        print(f"converted network ready ({peers.warm_model(224):.1f} s)", flush=True)
    cache = args.cache or args.workdir / "scratch" / "memory-cache"
    if not args.cache:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"{peers.count_images(data)} photos, load average {os.getloadavg()[0]:.1f}", flush=True)
    res = measure(data, cache, args.backbone, dumps=args.dumps, json_out=args.json)
    if not args.cache:
        shutil.rmtree(cache, ignore_errors=True)
    mib = 2**20
    print(f"rc {res['rc']}, {res['wall']:.0f} s wall, load average {os.getloadavg()[0]:.1f}; {' '.join(res['lines'][-1:])}")
    print(f"{'stage':28} {'RSS summed':>10} {'PSS summed':>10} {'procs':>5} {'largest':>8}  (MiB)")
    for name, p in res["peaks"].items():
        print(f"{name[:28]:28} {p['rss'] / mib:10.0f} {p['pss'] / mib:10.0f} {p['procs']:5d} {p['largest'] / mib:8.0f}")
    top = max(res["peaks"].values(), key=lambda p: p["rss"]) if res["peaks"] else None
    if top:
        print(f"peak: {top['rss'] / mib:.0f} MiB RSS summed, {max(p['pss'] for p in res['peaks'].values()) / mib:.0f} MiB PSS summed")
    for name, rss, text in res["dumps"][-4:]:  # the last few: what held memory as it reached the peak
        frames = [ln.strip() for ln in text.splitlines() if ln.startswith("    ") and "(<string>" not in ln][:12]
        print(f"-- {rss / mib:.0f} MiB in {name}:", *frames, sep="\n   ")
    if res["rc"]:
        print("stderr:", *res["err"], sep="\n  ")
    return 0 if res["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
