"""What a dense user mesh (a scan, a CAD export) costs per object, from every point vs from its hull's vertices,
side by side in one run (interleaved over repeats: the machine is shared and noisy).

    python benchmarks/dense_mesh.py [--rings 300 --segments 400] [--repeats 5] [--images 16]

Writes a bumpy, non-convex sphere OBJ of rings x segments vertices (300 x 400: 120k points, 240k triangles),
then times, per object:
  - physics: a body built from the OBJ file (PyBullet parses it again for each body) vs from the asset's
    collision hull (what simgen does), and checks both give the same AABB;
  - labels: projecting every point vs the hull's vertices for the amodal outline (what simgen does), and
    checks both give the same outline area;
and finally renders --images images of it with `simgen render` and prints the manifest's per-stage timings.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_blob(path: Path, rings: int, segments: int) -> Path:
    th, ph = np.linspace(0, np.pi, rings + 1), np.linspace(0, 2 * np.pi, segments, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    r = 0.03 * (1 + 0.2 * np.sin(5 * P) * np.sin(T))
    v = np.stack([r * np.sin(T) * np.cos(P), r * np.sin(T) * np.sin(P), r * np.cos(T)], -1).reshape(-1, 3)
    with open(path, "w") as f:
        f.write("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in v))
        for i in range(rings):
            for j in range(segments):
                a, b, c, d = (i * segments + j, i * segments + (j + 1) % segments, (i + 1) * segments + j,
                              (i + 1) * segments + (j + 1) % segments)
                f.write(f"f {a + 1} {c + 1} {d + 1}\nf {a + 1} {d + 1} {b + 1}\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rings", type=int, default=300)
    ap.add_argument("--segments", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=16)
    a = ap.parse_args()

    import cv2
    import pybullet as p

    from simgen import assets
    from simgen.annotate import project

    tmp = Path(tempfile.mkdtemp(prefix="simgen-dense-"))
    mesh = write_blob(tmp / "blob.obj", a.rings, a.segments)
    t = time.perf_counter()
    asset = assets.resolve(str(mesh))
    hull = asset.collision_hull
    print(f"{mesh.name}: {len(asset.points)} points, {len(asset.triangles)} triangles; hull {len(asset.hull_points)} vertices "
          f"(found once per process in {time.perf_counter() - t:.2f} s)")

    c = p.connect(p.DIRECT)
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    R, tvec = np.eye(3), np.array([0.0, 0.0, 0.5])
    ms = {"physics: body from the OBJ file": [], "physics: body from the collision hull": [],
          "labels: outline from every point": [], "labels: outline from the hull's vertices": []}
    boxes, areas = {}, {}
    for _ in range(a.repeats):
        for name, kw in (("file", {"fileName": str(mesh), "collisionFramePosition": [-o for o in asset.offset]}),
                         ("hull", {"vertices": hull.tolist()})):
            t = time.perf_counter()
            body = p.createMultiBody(0.1, p.createCollisionShape(p.GEOM_MESH, physicsClientId=c, **kw), physicsClientId=c)
            ms["physics: body from the OBJ file" if name == "file" else "physics: body from the collision hull"].append(time.perf_counter() - t)
            boxes[name] = np.array(p.getAABB(body, physicsClientId=c))
            p.resetSimulation(physicsClientId=c)
        for name, pts in (("every", asset.points), ("hull", asset.hull_points)):
            t = time.perf_counter()
            uv = project(pts, R, tvec, K)
            areas[name] = cv2.contourArea(cv2.convexHull(uv.astype(np.float32)))
            ms["labels: outline from every point" if name == "every" else "labels: outline from the hull's vertices"].append(time.perf_counter() - t)
    p.disconnect(c)
    med = {k: 1e3 * float(np.median(v)) for k, v in ms.items()}
    for k, v in med.items():
        print(f"{k:42s} {v:9.2f} ms per object")
    print(f"physics ratio: {med['physics: body from the OBJ file'] / med['physics: body from the collision hull']:.1f}x faster from the hull; "
          f"AABBs differ by at most {np.abs(boxes['file'] - boxes['hull']).max() * 1e3:.3f} mm")
    lab = med["labels: outline from every point"] / med["labels: outline from the hull's vertices"]
    print(f"labels ratio: {lab:.1f}x faster from the hull; "
          f"outline areas {areas['every']:.1f} vs {areas['hull']:.1f} px²")

    out = tmp / "ds"
    cmd = [sys.executable, "-m", "simgen.cli", "render", "scene=custom", "~scene.objects.box",
           f"+scene.objects.blob={{asset: {mesh}, scale: [0.8, 1.2], count: [1, 3]}}", f"n_images={a.images}", f"out={out}",
           "width=320", "height=240", "progress=false"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    m = json.loads((out / "manifest.json").read_text())
    print(f"simgen render, {a.images} images of 1-3 blobs: {time.perf_counter() - t:.1f} s incl. start-up; per image "
          + ", ".join(f"{k} {v:.0f}" for k, v in m["timings_ms"].items()) + f"; {m['n_annotations']} annotations")


if __name__ == "__main__":
    main()
