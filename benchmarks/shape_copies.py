"""Copies cut to another shape than their source (issue #11), audited from a user's folders.

    python benchmarks/shape_copies.py W H DIR      # e.g. 160 120 /tmp/shapes; writes DIR (replaced)

Train: 4:3 regions (120 x 90 source pixels) of the bundled photos on a grid with gaps, resized to W x H, PNG.
Eval: copies cut square (from the centre or a side), 16:9, 3:4, square then shrunk to 0.6 and JPEG q75, or the
whole region re-encoded (the control); hard negatives: square windows from the gaps beside the regions (the same
photo, no training pixels); distinct regions of mixed shapes. All eval images JPEG. Prints recall per kind of copy,
false pairs, and for each copy missed whether its source was its best registered partner. Set ``BB=none`` for a
hash-only run.
"""
import os, sys, shutil, numpy as np
from PIL import Image
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import copy_suites as cs
import splitaudit
W, H = int(sys.argv[1]), int(sys.argv[2]); root = sys.argv[3]
RW, RH = 120, 90  # a region in source pixels
shutil.rmtree(root, ignore_errors=True); os.makedirs(f"{root}/train/a"); os.makedirs(f"{root}/val/a")
rng = np.random.default_rng(3)
regs = []
for name, kind in cs.PHOTO_SOURCES:
    p = cs.load_photo(name, kind); h, w = p.shape[:2]
    for y in range(0, h - RH + 1, RH):
        for x in range(0, w - 2 * RW + 1, 2 * RW):  # a gap of RW right of each region
            if p[y : y + RH, x : x + RW].std() > 12:
                regs.append((p, x, y))
order = rng.permutation(len(regs)); regs = [regs[i] for i in order]
def cut(p, x, y, dx, dy, cw, ch):
    return Image.fromarray(np.ascontiguousarray(p[y + dy : y + dy + ch, x + dx : x + dx + cw]))
truth, hard = {}, {}
kinds = ["square centre", "square side", "16:9", "portrait 3:4", "square centre, 0.6x, q75", "re-encoded"]
n_train = int(len(regs) * 0.7)
f = W / RW
for i, (p, x, y) in enumerate(regs):
    if i < n_train:
        cut(p, x, y, 0, 0, RW, RH).resize((W, H), Image.Resampling.LANCZOS).save(f"{root}/train/a/t{i:04d}.png")
    else:  # distinct eval regions of mixed shapes
        cw, ch = [(RW, RH), (RH, RH), (RW, 68)][i % 3]
        cut(p, x, y, 0, 0, cw, ch).resize((int(cw * f), int(ch * f)), Image.Resampling.LANCZOS).save(f"{root}/val/a/d{i:04d}.jpg", quality=90)
    if i < min(n_train, 180):
        k = kinds[i % len(kinds)]
        box = {"square centre": (15, 0, 90, 90), "square side": (0, 0, 90, 90), "16:9": (0, 11, 120, 68),
               "portrait 3:4": (26, 0, 68, 90), "square centre, 0.6x, q75": (15, 0, 90, 90), "re-encoded": (0, 0, 120, 90)}[k]
        c = cut(p, x, y, *box)
        s = 0.6 if "0.6x" in k else 1.0
        c.resize((max(8, int(c.width * f * s)), max(8, int(c.height * f * s))), Image.Resampling.LANCZOS).save(
            f"{root}/val/a/c{i:04d}.jpg", quality=75 if "q75" in k else 90)
        truth[f"c{i:04d}.jpg"] = (f"t{i:04d}.png", k)
        if x + 2 * RW <= p.shape[1]:  # a square window from the gap right of the region
            cut(p, x, y, RW + 15, 0, 90, 90).resize((int(90 * f), int(90 * f)), Image.Resampling.LANCZOS).save(
                f"{root}/val/a/h{i:04d}.jpg", quality=90)
            hard[f"h{i:04d}.jpg"] = f"t{i:04d}.png"
rep = splitaudit.audit(f"{root}/train", f"{root}/val", cache=False, backbone=os.environ.get("BB", "efficientnet_lite0"),
                       select=("exact-duplicates", "pixel-duplicates", "near-duplicates", "similar-images"))
found, sim, false, hardf = set(), set(), [], 0
for fi in rep.findings:
    if len(fi.images) != 2: continue
    a, b = (os.path.basename(im.path) for im in fi.images)
    if truth.get(b, (None,))[0] == a: (sim if fi.check == "similar-images" else found).add(b)
    elif fi.check != "similar-images":
        false.append((a, b, fi.check)); hardf += hard.get(b) == a
n_ev = len(os.listdir(f"{root}/val/a"))
for k in kinds:
    names = [n for n, (_, kk) in truth.items() if kk == k]
    print(f"  {k:26s} found {sum(n in found for n in names)}/{len(names)} (+{sum(n in sim for n in names)} similar)")
print(f"{W}x{H}: {n_train} train, {n_ev} eval; recall {len(found)}/{len(truth)} = {len(found)/len(truth):.3f}; false pairs {len(false)} "
      f"({1e3*len(false)/n_ev:.2f} per 1k eval), of them hard negatives {hardf}/{len(hard)}")
print("  false:", false[:8])
print("  calibration:", {k: round(v, 4) for k, v in rep.copies.get("calibration", {}).items() if k in ("copy_cut", "similar_cut")})
best = next(iter(rep.copies.get("best", {}).values()), [])
bb = {os.path.basename(e["path"]): e for e in best}
miss = [n for n in truth if n not in found]
right = [n for n in miss if os.path.basename(bb[n].get("partner") or "") == truth[n][0]]
print(f"  missed {len(miss)}: best partner is the source for {len(right)} (scores {[round(bb[n]['score'], 3) for n in right][:10]} cuts {[round(bb[n]['cut'], 3) for n in right][:10]})")
print("   others' best:", [(n, os.path.basename(bb[n].get('partner') or ''), bb[n]['score']) for n in miss if n not in right][:6])
