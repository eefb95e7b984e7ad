"""End-to-end copy detection: ``splitaudit.audit`` on the copy suites, with and without the verifier (issue #11).

Run:  python benchmarks/copy_check.py [--suite tiny|photo|fmnist|all] [--backbone none|efficientnet_lite0]
                                      [--fmnist-train N] [--fmnist-test N] [--photo-side N]
                                      [--transforms standard|extra|colour] [--files DIR [--aspect A] [--resize-from F]]
                                      [--seeds 0,1,2]

The suites are those of ``benchmarks/copy_suites.py`` (real photos cut into 32-px and 128-px regions with planted
re-cropped / re-graded / framed / mirrored copies and hard negatives; Fashion-MNIST with planted copies and its
ground truth). Each is given to :func:`splitaudit.audit` as arrays (train, eval), once with the copy verifier and
once with ``verify=False`` (hashes and embeddings only), in one run. Printed per suite and mode: recall of the planted
copies as ``near-duplicates`` errors (overall, per transform, worst transform), eval images wrongly reported per
1,000 eval images (a pair that is neither planted nor a known copy), hard negatives reported, Fashion-MNIST's
ground truth found, and the wall time of the audit. Deterministic data; times are from one run on a shared machine.

``--seeds``: the verifier's run again at each further seed (``audit(seed=...)``: the copy calibration's samples),
its recall and false pairs printed per seed with their mean. The calibration's draw alone moves a suite's recall by up
to 1-2 points (docs/copies.md, twenty-sixth session): a difference between two commits smaller than that spread, at
one seed, is not evidence.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from copy_suites import COLOUR2_TRANSFORMS, COLOUR_TRANSFORMS, Suite, extra_transforms, fmnist_suite, photo_suite  # noqa: E402


def _cpu() -> float:
    """CPU-seconds of this process and its finished children (user + system): on shared cores, what compares."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


#: ``--image-size``: the backbone's input side (0: the tool's automatic choice).
IMAGE_SIZE = 0
#: The copy stage's keypoints (``--no-keypoints``: off, as ``splitaudit check --no-keypoints``).
KEYPOINTS = True
#: False pairs printed per run (``--false-pairs``): each as "train A ~ eval B" (suite indices) with its evidence.
FALSE_PAIRS = 5
#: ``--seeds``: the calibration seeds of the verifier's runs (the first one's run is printed in full).
SEEDS = (0,)
#: ``--files``: (folder, aspect, smallest resize factor): the suite written as a user's folders (under
#: folder/copy-check-files) and read from there.
FILES: tuple[str, float, float] | None = None


def write_folders(suite: Suite, root: str, aspect: float, resize_from: float,
                  seed: int = 7) -> tuple[str, str, list[str]]:
    """The suite as a user's folders: every image squashed to ``aspect`` (width / height, as photos are not square),
    train as PNG, eval images (copies and distinct ones alike) resized by a factor drawn from [resize_from, 1] and
    saved as JPEG of quality 75-94, as a re-export makes them. Returns the two folders and each record's file name
    (in suite order)."""
    import shutil

    from PIL import Image

    rng = np.random.default_rng(seed)
    root = os.path.join(root, "copy-check-files")  # its own folder under the one given: only that is replaced
    shutil.rmtree(root, ignore_errors=True)
    tr, ev = os.path.join(root, "train", "a"), os.path.join(root, "val", "a")
    os.makedirs(tr)
    os.makedirs(ev)
    side = suite.images.shape[1]
    w, h = int(round(side * aspect)), side
    names = []
    for i, im in enumerate(suite.images):
        img = Image.fromarray(im).resize((w, h), Image.Resampling.LANCZOS)
        if suite.split[i] == 0:
            name = f"{i:05d}.png"
            img.save(os.path.join(tr, name))
        else:
            f = rng.uniform(resize_from, 1.0)
            img = img.resize((max(8, int(round(w * f))), max(8, int(round(h * f)))), Image.Resampling.BICUBIC)
            name = f"{i:05d}.jpg"
            img.save(os.path.join(ev, name), quality=int(rng.integers(75, 95)))
        names.append(name)
    return os.path.dirname(tr), os.path.dirname(ev), names


def run(suite: Suite, backbone: str, verify: bool, gt: list | None, seed: int = 0) -> dict:
    import splitaudit

    tr = np.flatnonzero(suite.split == 0)
    ev = np.flatnonzero(suite.split == 1)
    pos_tr = {int(i): k for k, i in enumerate(tr)}
    pos_ev = {int(i): k for k, i in enumerate(ev)}
    inputs: tuple = (suite.images[tr], suite.images[ev])
    if FILES is not None:
        *inputs, names = write_folders(suite, *FILES)
        record = {n: i for i, n in enumerate(names)}
    t0, c0 = time.perf_counter(), _cpu()
    report = splitaudit.audit(*inputs, cache=False, backbone=backbone, verify=verify, keypoints=KEYPOINTS, seed=seed,
                              **({"image_size": IMAGE_SIZE} if IMAGE_SIZE and backbone != "none" else {}),
                              select=("exact-duplicates", "pixel-duplicates", "near-duplicates", "similar-images"))
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    found: set[tuple[int, int]] = set()
    similar: set[tuple[int, int]] = set()
    score: dict[tuple[int, int], float] = {}
    why: dict[tuple[int, int], str] = {}
    for f in report.findings:
        if len(f.images) != 2 or f.category is None:
            continue
        if FILES is not None:  # file names are the records' suite indices
            key = tuple(record[os.path.basename(im.path)] for im in f.images)
        else:
            a, b = (int(im.path[2:-1]) for im in f.images)
            key = (int(tr[a]), int(ev[b]))
        (similar if f.check == "similar-images" else found).add(key)
        score[key] = next((e.similarity for e in f.evidence if e.stage == "copy"), float("nan"))
        if f.check != "similar-images":
            why[key] = (f"{f.check}: " + ", ".join(f"{e.stage} {e.similarity}" for e in f.evidence)
                        + f"; registration {f.data.get('registration', {})}")
    planted = {(a, b) for a, b, _ in suite.planted}
    known = planted | set(suite.known)
    # an eval copy is found with any of its true partners (its source, or the source's twin inside train)
    hit = {b for a, b in found if (a, b) in known}
    by_name: dict[str, list[bool]] = {}
    for a, b, name in suite.planted:
        by_name.setdefault(name, []).append(b in hit)
    false = {b for a, b in found if (a, b) not in known}
    # each eval image's own copy cut (by its crowding), in record order of the one eval split
    best = next(iter(report.copies.get("best", {}).values()), [])
    cut = {int(ev[k]): e["cut"] for k, e in enumerate(best)}
    # why the false pairs were reported: the copy score alone, or a hash match (trusted, or in the similar band)
    by_score = sum(1 for a, b in found if (a, b) not in known and score[(a, b)] >= cut.get(b, 2.0))
    false_sim = {b for a, b in similar if (a, b) not in known}
    hard = sum((a, b) in found for a, b, _ in suite.hard)
    out = {"wall": wall, "cpu": cpu, "recall": np.mean([x for v in by_name.values() for x in v]) if by_name else float("nan"),
           "per": {k: float(np.mean(v)) for k, v in by_name.items()}, "false": 1e3 * len(false) / len(ev),
           "false_sim": 1e3 * len(false_sim) / len(ev), "false_by_score": by_score, "hard": hard, "n_hard": len(suite.hard),
           "copies": report.copies,
           "false_why": [f"train {a} ~ eval {b}: {why[(a, b)]}" for a, b in sorted(found) if (a, b) not in known][:FALSE_PAIRS]}
    if gt is not None:
        out["gt"] = sum((j, i) in found for i, j, _ in gt), len(gt)
        # the target counts test images: each with at least one of its train duplicates found
        out["gt_images"] = len({i for i, j, _ in gt if (j, i) in found}), len({i for i, _, _ in gt})
    del pos_tr, pos_ev
    return out


def show(name: str, suite: Suite, backbone: str, gt: list | None = None) -> None:
    n_ev = int((suite.split == 1).sum())
    print(f"== {name}: {int((suite.split == 0).sum())} train, {n_ev} eval, {len(suite.planted)} planted, "
          f"{len(suite.hard)} hard negatives; backbone {backbone} ==")
    res = {v: run(suite, backbone, v, gt, SEEDS[0]) for v in (True, False)}
    for v, r in res.items():
        label = "verifier on " if v else "verifier off"
        worst = min(r["per"].items(), key=lambda kv: kv[1]) if r["per"] else ("-", float("nan"))
        extra = (f", ground truth {r['gt'][0]}/{r['gt'][1]} pairs, {r['gt_images'][0]}/{r['gt_images'][1]} images"
                 if "gt" in r else "")
        print(f"  {label}: recall {r['recall']:.3f} (worst: {worst[0]} {worst[1]:.2f}), false {r['false']:.2f} per 1k eval "
              f"({r['false_by_score']} pairs by the copy score alone) "
              f"(similar-band {r['false_sim']:.1f}), hard negatives reported {r['hard']}/{r['n_hard']}{extra}, "
              f"audit {r['wall']:.1f} s, {r['cpu']:.1f} CPU-s")
    on, off = res[True], res[False]
    if len(SEEDS) > 1:
        more = [on] + [run(suite, backbone, True, gt, s) for s in SEEDS[1:]]
        print(f"  verifier on, seeds {', '.join(map(str, SEEDS))}: recall "
              + " / ".join(f"{r['recall']:.3f}" for r in more) + f" (mean {np.mean([r['recall'] for r in more]):.3f}), "
              f"false " + " / ".join(f"{r['false']:.2f}" for r in more) + " per 1k eval, copy cut "
              + " / ".join(f"{r['copies'].get('calibration', {}).get('copy_cut', float('nan')):.4f}" for r in more))
    for line in on["false_why"]:
        print(f"    false pair (verifier on) {line}")
    print(f"  wall ratio on/off: {on['wall'] / off['wall']:.2f}; CPU ratio on/off: {on['cpu'] / off['cpu']:.2f}")
    cal = on["copies"].get("calibration", {})
    print("  calibration: " + ", ".join(f"{k}={v}" for k, v in cal.items()))
    print(f"  {'transform':34s} {'on':>5s} {'off':>5s}")
    for k in on["per"]:
        print(f"  {k:34s} {on['per'][k]:5.2f} {off['per'][k]:5.2f}")
    print()


def main() -> None:
    global IMAGE_SIZE, FILES, KEYPOINTS, FALSE_PAIRS, SEEDS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("tiny", "photo", "fmnist", "all"), default="all")
    ap.add_argument("--backbone", default="none")
    ap.add_argument("--sources", type=int, default=300)
    ap.add_argument("--fmnist-train", type=int, default=60000)
    ap.add_argument("--fmnist-copies", type=int, default=300)
    ap.add_argument("--fmnist-test", type=int, default=10000)
    ap.add_argument("--photo-side", type=int, default=128, help="side of the photo suite's images")
    ap.add_argument("--image-size", type=int, default=0, help="the backbone's input side (default: automatic)")
    ap.add_argument("--transforms", choices=("standard", "extra", "colour", "colour2"), default="standard",
                    help="the photo suites' copies: the standard list, the held-out-like extra one, or strong colour "
                    "changes (copy_suites.py)")
    ap.add_argument("--files", metavar="DIR", help="write the photo suites as folders under DIR/copy-check-files "
                    "(train PNG, eval JPEG resized; replaced on each run) and audit the folders")
    ap.add_argument("--aspect", type=float, default=1.0, help="with --files: the images' width / height")
    ap.add_argument("--no-keypoints", action="store_true", help="the copy stage without its keypoints")
    ap.add_argument("--resize-from", type=float, default=1.0, help="with --files: eval images resized by [this, 1]")
    ap.add_argument("--false-pairs", type=int, default=FALSE_PAIRS, help="false pairs printed per run (to review them)")
    ap.add_argument("--seeds", default="0", help="comma-separated calibration seeds of the verifier's runs")
    ap.add_argument("--contamination", type=float, default=0.03,
                    help="the photo suites: the share of training regions that also get a copy inside train")
    args = ap.parse_args()
    SEEDS = tuple(int(x) for x in args.seeds.split(","))
    IMAGE_SIZE = args.image_size
    FALSE_PAIRS = args.false_pairs
    KEYPOINTS = not args.no_keypoints
    if args.files:
        FILES = (args.files, args.aspect, args.resize_from)
    extra = lambda side: (extra_transforms(side) if args.transforms == "extra"  # noqa: E731
                          else COLOUR_TRANSFORMS if args.transforms == "colour"
                          else COLOUR2_TRANSFORMS if args.transforms == "colour2" else None)
    if args.suite in ("tiny", "all"):
        show("32-px photos", photo_suite(32, args.sources, transforms=extra(32), contamination=args.contamination),
             args.backbone)
    if args.suite in ("photo", "all"):
        show(f"{args.photo_side}-px photos", photo_suite(args.photo_side, args.sources, transforms=extra(args.photo_side),
                                                         contamination=args.contamination), args.backbone)
    if args.suite in ("fmnist", "all"):
        made = fmnist_suite(args.fmnist_train, args.fmnist_copies, args.fmnist_test)
        if made is None:
            print("Fashion-MNIST not found: `apt-get install -y dataset-fashion-mnist`. Skipped.")
        else:
            show("32-px Fashion-MNIST", made[0], args.backbone, made[1])


if __name__ == "__main__":
    main()
