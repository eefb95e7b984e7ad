"""Cost of the per-image passes that decode every image again after the hash pass (issue #16).

Times, on the first ``--images`` image files of a folder (sorted; default 20000), in one process, in batches of 64
rows (the engine's batch size) and with the public batch functions the stages map over their pool:

- ``hash``: :func:`splitaudit.features.extract.extract_batch` (the hash pass, the yardstick);
- ``properties``: :func:`splitaudit.features.properties.properties_batch` (stage "measuring images");
- ``thumbnails``: :func:`splitaudit.features.thumbnails.thumbnails_batch` at the dataset's side;
- ``pixel-digests``: :func:`splitaudit.features.extract.pixel_digest_batch` (full-resolution digests);
- ``confirm``: what the confirm stage maps (``splitaudit.features.table._PixelDigests``): since issue #16 the
  digests plus the properties of tiny JPEGs from the same decode, which the properties stage then reads from the
  cache (:func:`~splitaudit.features.properties.digests_and_properties_batch`); before, ``pixel_digest_batch``.

Printed per pass: CPU seconds (``time.process_time``), wall seconds, microseconds of CPU per image and the CPU
ratio to the hash pass. Each figure is the best of ``--repeats`` runs; passes are interleaved within a repeat.

``--trees A B``: A/B comparison of two source trees (e.g. ``/work/main`` and a worktree): every (repeat, pass)
runs once per tree, alternately, each in a fresh ``python`` with ``PYTHONPATH`` set to the tree, so both meet
the same machine load; printed: both trees' figures and B's CPU as a fraction of A's.

Usage::

    python benchmarks/per_image_passes.py FOLDER [--images 20000] [--repeats 3] [--passes hash,properties,...]
                                          [--trees A B]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PASSES = ("hash", "properties", "thumbnails", "pixel-digests", "confirm")
BATCH = 64


def image_files(folder: str, limit: int) -> list[str]:
    """The first ``limit`` files under ``folder`` (recursively, sorted), the order the scan gives."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files))
    return sorted(found)[:limit]


def time_pass(name: str, paths: list[str]) -> dict[str, float]:
    """CPU and wall seconds of one pass over ``paths`` (in batches of :data:`BATCH`), with the current tree."""
    import numpy as np

    from splitaudit.features.extract import HashOptions, extract_batch, pixel_digest_batch, warm_up
    from splitaudit.features.properties import properties_batch
    from splitaudit.features.table import _PixelDigests
    from splitaudit.features.thumbnails import thumbnail_side, thumbnails_batch

    warm_up()
    batches = [{"path": np.array(paths[s : s + BATCH], dtype=object)} for s in range(0, len(paths), BATCH)]
    if name == "thumbnails":  # the side the run would pick, from the hash pass's sizes (not timed)
        sizes = [extract_batch(b) for b in batches[:4]]
        side = thumbnail_side(np.concatenate([s["width"] for s in sizes]), np.concatenate([s["height"] for s in sizes]))
    fn = {"hash": extract_batch, "properties": properties_batch, "pixel-digests": pixel_digest_batch,
          "thumbnails": lambda b: thumbnails_batch(b, side), "confirm": _PixelDigests(HashOptions())}[name]
    fn(batches[0])  # lazy imports, plans
    cpu, wall = time.process_time(), time.perf_counter()
    for b in batches:
        fn(b)
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}


def _child(tree: str, name: str, paths_file: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, __file__, "--child", name, "--paths-file", paths_file], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?")
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--passes", default=",".join(PASSES))
    p.add_argument("--trees", nargs=2, metavar=("A", "B"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--paths-file", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(time_pass(a.child, Path(a.paths_file).read_text().splitlines())))
        return
    if not a.folder:
        p.error("FOLDER is required")
    paths = image_files(a.folder, a.images)
    passes = [x for x in a.passes.split(",") if x]
    for x in passes:
        if x not in PASSES:
            p.error(f"unknown pass {x!r} (one of {', '.join(PASSES)})")
    trees = a.trees or [None]
    best: dict[tuple[str | None, str], dict[str, float]] = {}
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
        listing.write("\n".join(paths))
        listing.flush()
        for r in range(a.repeats):
            for name in passes:
                for tree in trees:
                    got = time_pass(name, paths) if tree is None else _child(tree, name, listing.name)
                    k = (tree, name)
                    best[k] = {m: min(best.get(k, got)[m], got[m]) for m in ("cpu", "wall")}
                    print(f"  repeat {r + 1} {name:<13} {tree or 'this tree'}: cpu {got['cpu']:.2f} s, wall {got['wall']:.2f} s",
                          flush=True)
    print(f"\n{len(paths)} images from {a.folder}, best of {a.repeats} (one process, batches of {BATCH})")
    for tree in trees:
        if tree is not None:
            print(f"\ntree {tree}")
        base = best.get((tree, "hash"))
        print(f"{'pass':<14} {'CPU s':>8} {'wall s':>8} {'us/image':>9} {'CPU / hash':>11}")
        for name in passes:
            b = best[(tree, name)]
            ratio = f"{b['cpu'] / base['cpu']:.2f}" if base else "-"
            print(f"{name:<14} {b['cpu']:>8.2f} {b['wall']:>8.2f} {1e6 * b['cpu'] / len(paths):>9.0f} {ratio:>11}")
    if a.trees:
        print("\nB / A (CPU): " + ", ".join(f"{n} {best[(trees[1], n)]['cpu'] / best[(trees[0], n)]['cpu']:.2f}"
                                          for n in passes))


if __name__ == "__main__":
    main()
