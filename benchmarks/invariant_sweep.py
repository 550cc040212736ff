"""Label invariants over many rendered scenes: do the labels say exactly what the renderer drew?

    python benchmarks/invariant_sweep.py                              # 2,000 scenes over dice, tabletop, custom
    python benchmarks/invariant_sweep.py --n 40 --scene dice --workers 1
    python benchmarks/invariant_sweep.py --n 600 --renderer egl labels.min_area_px=32

Renders ``--n`` images in all (split evenly over the ``--scene``s, each its own dataset) through the real pipeline
(``simgen.run.render_dataset``: workers, writer, COCO file), then checks

every annotation of annotations.json
  box      ``bbox`` is the tight box of its decoded RLE mask (pycocotools), and lies inside the image
  area     ``area`` is the mask's pixel count (and pycocotools' area of the RLE), >= labels.min_area_px
  mask     the RLE's size is the image's (height, width), which is the image file's; masks of one image are disjoint
  category ``category_id`` is one of the file's categories; ``image_id`` one of its images; ids unique; iscrowd 0
  visible  ``visible_fraction`` in (0, 1] and >= labels.min_visible_fraction
  amodal   the visible box lies inside ``bbox_amodal`` (the whole object's projected box), within --amodal-tol px

and, for every image of a sample (``--recheck``, evenly spaced), renders it again with ``simgen.pipeline.Generator``'s
own parts (same scene, view and renderer, keeping the frame that ``Generator.generate`` drops) and
  buffer   each annotation's mask is exactly that object's pixels in the renderer's instance buffer, its object a
           labelled one of the annotated category (the file says what the renderer drew)
  missed   nothing visible is missed: every labelled object with >= labels.min_area_px pixels in the instance buffer
           whose visible fraction, re-derived independently (its pixels over its whole silhouette rasterized from the
           mesh on a canvas large enough to hold it, occluders and image borders ignored), is above
           labels.min_visible_fraction * (1 + --margin) has an annotation.
           simgen's own visible_fraction takes hull area x a cached per-direction silhouette ratio for concave meshes
           (mug, duck, teddy), a few percent from exact, hence the margin; objects inside the margin are counted as
           "borderline", not violations.

Prints counts per scene and ends with ``violations: N``; exits 1 if N > 0. Renders into a temporary folder
(``--keep DIR`` keeps the datasets there). Extra ``key=value`` arguments are config overrides for every scene.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SCENES = ("dice", "tabletop", "custom")


def split(n: int, k: int) -> list[int]:
    return [n // k + (1 if j < n % k else 0) for j in range(k)]


def tight_box_xywh(mask):
    import numpy as np

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def check_dataset(out: Path, min_area: int, min_vis: float, amodal_tol: float, bad: Counter, examples: list, desc: str) -> dict:
    """Check every annotation of the COCO dataset at ``out``; count violations by kind into ``bad``."""
    import json

    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils
    from tqdm import tqdm

    doc = json.loads((out / "annotations.json").read_text())
    images = {im["id"]: im for im in doc["images"]}
    cats = {c["id"] for c in doc["categories"]}
    by_image = defaultdict(list)
    ids = Counter(a["id"] for a in doc["annotations"])

    def fail(kind: str, msg: str) -> None:
        bad[kind] += 1
        if len(examples) < 20:
            examples.append(f"{out.name}: {kind}: {msg}")

    for a in doc["annotations"]:
        if ids[a["id"]] > 1:
            fail("category", f"annotation id {a['id']} used {ids[a['id']]} times")
        if a["image_id"] not in images:
            fail("category", f"annotation {a['id']} names image {a['image_id']}, not in the file")
            continue
        by_image[a["image_id"]].append(a)
    n_ann = 0
    for image_id, im in tqdm(images.items(), desc=f"check {desc}", unit="img", dynamic_ncols=True):
        W, H = im["width"], im["height"]
        with Image.open(out / im["file_name"]) as f:
            if f.size != (W, H):
                fail("mask", f"image {im['file_name']} is {f.size}, the file says {(W, H)}")
        union = np.zeros((H, W), np.int32)
        for a in by_image.get(image_id, []):
            n_ann += 1
            where = f"image {image_id} annotation {a['id']}"
            if a["category_id"] not in cats:
                fail("category", f"{where}: category_id {a['category_id']} not in categories")
            if a.get("iscrowd", 0) != 0:
                fail("category", f"{where}: iscrowd {a.get('iscrowd')}")
            rle = a["segmentation"]
            if list(rle.get("size", [])) != [H, W]:
                fail("mask", f"{where}: RLE size {rle.get('size')} != image (h, w) {[H, W]}")
                continue
            m = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]})
            px = int(m.sum())
            union += m
            if px == 0:
                fail("area", f"{where}: empty mask")
                continue
            if a["area"] != px or int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()})) != px:
                fail("area", f"{where}: area {a['area']} != mask pixels {px}")
            if px < min_area:
                fail("area", f"{where}: {px} px < labels.min_area_px {min_area}")
            box = tight_box_xywh(m)
            if any(abs(x - y) > 1e-6 for x, y in zip(a["bbox"], box)):
                fail("box", f"{where}: bbox {a['bbox']} != tight box of its mask {box}")
            x, y, w, h = a["bbox"]
            if x < 0 or y < 0 or x + w > W + 1e-6 or y + h > H + 1e-6 or w <= 0 or h <= 0:
                fail("box", f"{where}: bbox {a['bbox']} outside the {W}x{H} image")
            v = a.get("visible_fraction")
            if not isinstance(v, (int, float)) or not 0 < v <= 1:
                fail("visible", f"{where}: visible_fraction {v} not in (0, 1]")
            elif v < min_vis - 5e-5:  # written rounded to 4 decimals
                fail("visible", f"{where}: visible_fraction {v} < labels.min_visible_fraction {min_vis}")
            am = a.get("bbox_amodal")
            if am is not None and (x < am[0] - amodal_tol or y < am[1] - amodal_tol or x + w > am[0] + am[2] + amodal_tol
                                   or y + h > am[1] + am[3] + amodal_tol):
                fail("amodal", f"{where}: bbox {[round(t, 1) for t in a['bbox']]} not inside bbox_amodal {am} (+-{amodal_tol} px)")
        if union.max(initial=0) > 1:
            fail("mask", f"image {image_id}: masks overlap on {int((union > 1).sum())} px")
    return {"images": len(images), "annotations": n_ann}


def silhouette_area(obj, R, t, K, W: int, H: int, cap: int = 6000) -> float | None:
    """Pixels of the object's whole projected silhouette (occluders and image borders ignored), rasterized from its
    mesh by simgen.annotate.amodal_mask on a canvas grown to hold all of it. None when it is bigger than ``cap``."""
    import math

    import numpy as np

    from simgen.annotate import amodal_box, amodal_mask

    box = amodal_box(obj, R, t, K)
    if box is None:
        return 0.0
    x0, y0, x1, y1 = box
    left, top = max(0, math.ceil(-x0) + 2), max(0, math.ceil(-y0) + 2)
    Wc, Hc = left + max(W, math.ceil(x1) + 2), top + max(H, math.ceil(y1) + 2)
    if Wc > cap or Hc > cap:
        return None
    K2 = np.array(K, float).copy()
    K2[0, 2] += left
    K2[1, 2] += top
    return float(amodal_mask(obj, R, t, K2, Wc, Hc).sum())


def recheck(cfg, out: Path, indices: list[int], margin: float, bad: Counter, examples: list, desc: str) -> dict:
    """Render ``indices`` again, keep the frame, and compare the instance buffer with the annotations on disk."""
    import json

    import numpy as np
    from pycocotools import mask as mask_utils
    from tqdm import tqdm

    from simgen.annotate import object_to_camera
    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout

    doc = json.loads((out / "annotations.json").read_text())
    cat_name = {c["id"]: c["name"] for c in doc["categories"]}
    anns = defaultdict(list)
    for a in doc["annotations"]:
        anns[a["image_id"] - 1].append(a)
    spec = cfg.labels
    stats = Counter()
    diffs: list[float] = []

    def fail(kind: str, msg: str) -> None:
        bad[kind] += 1
        if len(examples) < 20:
            examples.append(f"{out.name}: {kind}: {msg}")

    with quiet_stdout((1, 2)):
        gen = Generator(cfg)
    try:
        for i in tqdm(indices, desc=f"recheck {desc}", unit="img", dynamic_ncols=True):
            # Generator.generate(i) up to the frame it drops: same scene, view draw and renderer
            with quiet_stdout((1, 2)):
                drawn = gen.draw(i)
            state, frame = drawn.state, drawn.frame
            inst = frame.instance
            counts = np.bincount(inst[inst >= 0].ravel(), minlength=len(state.objects))
            stats["images"] += 1
            annotated = {}
            for a in anns.get(i, []):
                k = a.get("object_index")
                where = f"image {i} annotation {a['id']}"
                if k is None or not 0 <= k < len(state.objects):
                    fail("buffer", f"{where}: object_index {k} is not an object of the re-rendered scene")
                    continue
                obj = state.objects[k]
                if obj.category is None or obj.category != cat_name.get(a["category_id"]):
                    fail("buffer", f"{where}: object {k} is {obj.category!r} in the scene, {cat_name.get(a['category_id'])!r} in the file")
                m = mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}).astype(bool)
                if m.shape != inst.shape or not np.array_equal(m, inst == k):
                    diff = int((m != (inst == k)).sum()) if m.shape == inst.shape else -1
                    fail("buffer", f"{where}: mask differs from object {k}'s pixels in the instance buffer ({diff} px)")
                annotated[k] = a
            for k, obj in enumerate(state.objects):
                if obj.category is None:  # distractors: an annotation of one failed the category check above
                    continue
                stats["labelled objects"] += 1
                px = int(counts[k])
                if px == 0:
                    stats["not in view"] += 1
                    continue
                if px < spec.min_area_px:
                    stats["below min_area_px"] += 1
                    continue
                R, t = object_to_camera(obj, frame.world_to_cam)
                full = silhouette_area(obj, R, t, frame.camera.K, frame.camera.width, frame.camera.height)
                if full is None:
                    stats["silhouette too large to rasterize"] += 1
                    continue
                if full <= 0:  # visible pixels but no silhouette: the re-derivation cannot judge it
                    fail("missed", f"image {i}: object {k} has {px} px but its silhouette rasterizes to nothing")
                    continue
                frac = min(1.0, px / full)
                if k in annotated:
                    diffs.append(abs(frac - annotated[k]["visible_fraction"]))
                if frac >= spec.min_visible_fraction * (1 + margin):
                    stats["clearly visible"] += 1
                    if k not in annotated:
                        fail("missed", f"image {i}: object {k} ({obj.category}, {obj.sample.asset}) has {px} px, visible "
                                       f"fraction {frac:.3f} >= {spec.min_visible_fraction} but no annotation")
                elif frac >= spec.min_visible_fraction * (1 - margin):
                    stats["borderline"] += 1
                else:
                    stats["below min_visible_fraction"] += 1
    finally:
        with quiet_stdout((1, 2)):
            gen.close()
    if diffs:
        d = np.array(diffs)
        stats["visible_fraction |ours - simgen| median %"] = round(100 * float(np.median(d)), 2)
        stats["visible_fraction |ours - simgen| p99 %"] = round(100 * float(np.quantile(d, 0.99)), 2)
    return dict(stats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images in all, split evenly over the scenes (default 2000)")
    ap.add_argument("--scene", nargs="+", default=list(SCENES), help="scenes to sweep (default: dice tabletop custom)")
    ap.add_argument("--workers", default="auto", help="render processes (auto = usable cores)")
    ap.add_argument("--renderer", default="tiny", choices=["tiny", "egl", "auto"])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recheck", type=float, default=0.25, help="share of images re-rendered for the buffer/missed checks (0..1)")
    ap.add_argument("--margin", type=float, default=0.1, help="relative margin on min_visible_fraction for the missed check")
    ap.add_argument("--amodal-tol", type=float, default=2.0, help="pixels the visible box may pass bbox_amodal by")
    ap.add_argument("--keep", type=Path, default=None, help="render into this folder and keep it (default: a temporary folder)")
    ap.add_argument("overrides", nargs="*", help="config overrides for every scene, e.g. labels.min_area_px=32")
    a = ap.parse_args()

    from conftest import compose_dict

    from simgen.config import render_config
    from simgen.run import render_dataset

    root = a.keep or Path(tempfile.mkdtemp(prefix="simgen-invariants-"))
    root.mkdir(parents=True, exist_ok=True)
    bad_total: Counter = Counter()
    examples: list[str] = []
    rows = []
    try:
        for scene, n in zip(a.scene, split(a.n, len(a.scene))):
            if n == 0:
                continue
            cfg = render_config(compose_dict("render", [
                f"scene={scene}", f"n_images={n}", f"seed={a.seed}", f"out={root / scene}", f"width={a.width}", f"height={a.height}",
                f"workers={a.workers}", f"renderer={a.renderer}", "overwrite=true", "progress=true", *a.overrides]))
            t0 = time.perf_counter()
            render_dataset(cfg, log=lambda s: print(s, flush=True))
            render_s = time.perf_counter() - t0
            cfg = render_config(compose_dict("render", [  # the renderer the run resolved (auto), for the recheck
                f"scene={scene}", f"n_images={n}", f"seed={a.seed}", f"out={root / scene}", f"width={a.width}", f"height={a.height}",
                "workers=1", f"renderer={_resolved_renderer(root / scene, a.renderer)}", *a.overrides]))
            bad: Counter = Counter()
            counts = check_dataset(cfg.out, cfg.labels.min_area_px, cfg.labels.min_visible_fraction, a.amodal_tol, bad, examples, scene)
            k = max(0, min(n, round(a.recheck * n)))
            sample = sorted({int(j * n / k) for j in range(k)}) if k else []
            stats = recheck(cfg, cfg.out, sample, a.margin, bad, examples, scene) if sample else {}
            bad_total.update(bad)
            rows.append((scene, n, counts["annotations"], render_s, bad, stats))
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    kinds = ("box", "area", "mask", "category", "visible", "amodal", "buffer", "missed")
    print()
    print(f"{'scene':10} {'images':>6} {'anns':>6} {'img/s':>6} " + " ".join(f"{k:>8}" for k in kinds))
    for scene, n, n_ann, secs, bad, _ in rows:
        print(f"{scene:10} {n:>6} {n_ann:>6} {n / secs:>6.1f} " + " ".join(f"{bad[k]:>8}" for k in kinds))
    for scene, *_, stats in rows:
        if stats:
            print(f"{scene} recheck: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    for e in examples:
        print("  " + e)
    total = sum(bad_total.values())
    print(f"violations: {total}")
    return 1 if total else 0


def _resolved_renderer(out: Path, asked: str) -> str:
    """The renderer a finished dataset was rendered with (manifest.json), so the recheck uses the same one."""
    import json

    try:
        return json.loads((out / "manifest.json").read_text()).get("renderer") or asked
    except (OSError, ValueError):
        return asked


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
