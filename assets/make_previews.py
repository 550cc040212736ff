"""Regenerate the files under assets/ from simgen's own code.

    python assets/make_previews.py            # all of it (about a minute on one core)
    python assets/make_previews.py --check    # exit 1 if assets/meshes/*.obj differ from what simgen generates now

Writes
  assets/meshes/<name>.obj       the procedural meshes, exactly as simgen.assets writes them into its cache
  assets/previews/textures.png   the first entries of the default texture banks (bank_seed 0): object kinds,
                                 ground kinds (tileable, 512 px, shown downscaled and as 2x2 repeats) and die atlases
  assets/previews/assets.png     every built-in asset rendered alone with PyBullet's TinyRenderer

Nothing here is read by simgen at run time: simgen draws its meshes and textures in its cache folder
($SIMGEN_CACHE, default ~/.cache/simgen). These are copies for people to look at.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
MESHES = HERE / "meshes"
PREVIEWS = HERE / "previews"
BG = (245, 245, 245)
INK = (40, 40, 40)


def write_meshes() -> list[Path]:
    from simgen.assets import PROCEDURAL_MESHES

    MESHES.mkdir(exist_ok=True)
    out = []
    for name, make in PROCEDURAL_MESHES.items():
        path = MESHES / f"{name}.obj"
        path.write_text(make().obj_text())
        out.append(path)
    return out


def check_meshes() -> list[str]:
    """Names whose shipped copy differs from what simgen generates now."""
    from simgen.assets import PROCEDURAL_MESHES

    return [n for n, make in PROCEDURAL_MESHES.items()
            if not (MESHES / f"{n}.obj").is_file() or (MESHES / f"{n}.obj").read_text() != make().obj_text()]


# ------------------------------------------------------------------------------------------ drawing
def label(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45, thick: int = 1) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, INK, thick, cv2.LINE_AA)


def sheet(rows: list[tuple[str, str, list[np.ndarray]]], label_w: int = 150, gap: int = 6, title: str = "") -> np.ndarray:
    """Rows of (name, note, RGB tiles) on a light background; tiles in a row may differ in width."""
    top = 34 if title else gap
    width = label_w + max(sum(t.shape[1] + gap for t in tiles) for _, _, tiles in rows) + gap
    height = top + sum(max(t.shape[0] for t in tiles) + gap for _, _, tiles in rows)
    img = np.full((height, width, 3), BG, np.uint8)
    if title:
        label(img, title, (gap, 22), 0.6, 1)
    y = top
    for name, note, tiles in rows:
        h = max(t.shape[0] for t in tiles)
        label(img, name, (gap, y + h // 2), 0.55, 1)
        if note:
            label(img, note, (gap, y + h // 2 + 18), 0.38)
        x = label_w
        for t in tiles:
            img[y:y + t.shape[0], x:x + t.shape[1]] = t
            x += t.shape[1] + gap
        y += h + gap
    return img


def textures_sheet(per_kind: int = 4, cell: int = 112) -> np.ndarray:
    from simgen.textures import GRAPHIC_KINDS, KINDS, TILE_M, DEFAULT_TILE_M, make_texture, texture_seed
    from simgen.scenes import dice

    def bank(kind: str, i: int, size: int, tileable: bool) -> np.ndarray:
        # exactly bank entry kind/i of simgen.textures.bank_texture with bank_seed 0
        return make_texture(kind, np.random.default_rng(texture_seed(0, kind, i, size, tileable)), size, tileable)

    area = lambda im, s: cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA)  # noqa: E731
    rows: list[tuple[str, str, list[np.ndarray]]] = []
    for kind in GRAPHIC_KINDS:
        rows.append((f"object: {kind}", "128 px, stretched", [area(bank(kind, i, 128, False), cell) for i in range(per_kind)]))
    for kind in KINDS:
        tiles = [area(bank(kind, i, 512, True), cell) for i in range(per_kind)]
        # one more: the first entry repeated 2x2 (as the renderer repeats it), to show it is periodic
        tiles.append(area(np.tile(bank(kind, 0, 512, True), (2, 2, 1)), cell))
        rows.append((f"ground: {kind}", f"{TILE_M.get(kind, DEFAULT_TILE_M):g} m per repeat", tiles))
    dice_tex = dice.textures(0, n=2 * per_kind)  # bank "dice", entries dice/0.. (bank_seed 0)
    atlases = [cv2.cvtColor(cv2.imread(str(dice_tex[f"dice/{i}"])), cv2.COLOR_BGR2RGB) for i in range(2 * per_kind)]
    h = cell
    w = int(round(h * 1.5))
    rows.append(("dice atlas", "faces 1 2 3 / 4 5 6", [cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA) for a in atlases[:per_kind]]))
    rows.append(("", "", [cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA) for a in atlases[per_kind:]]))
    return sheet(rows, title="simgen texture banks (bank_seed 0): first entries of each kind; ground row ends with entry 0 tiled 2x2")


def _look_at(eye, target, up=(0, 0, 1)):
    import pybullet as p

    return p.computeViewMatrix(list(eye), list(target), list(up))


def render_asset(name: str, textures: dict[str, Path], size: int = 176) -> np.ndarray:
    """One built-in asset alone on a grey floor, seen from 35 degrees above the horizon."""
    import pybullet as p

    from simgen.assets import baked_obj, resolve, scaled_urdf

    a = resolve(name)
    c = p.connect(p.DIRECT)
    try:
        if a.kind == "urdf":
            p.loadURDF(str(scaled_urdf(a.path, 1.0)), [0, 0, 0], useFixedBase=True, physicsClientId=c)
        else:
            tex = textures.get(name)
            mesh = baked_obj(a.path, tex, (1.0, 1.0, 1.0))
            vs = p.createVisualShape(p.GEOM_MESH, fileName=str(mesh), rgbaColor=[1, 1, 1, 1] if tex else [0.85, 0.55, 0.3, 1],
                                     physicsClientId=c)
            p.createMultiBody(0, -1, vs, [0, 0, 0], physicsClientId=c)
        lo, hi = a.points.min(axis=0), a.points.max(axis=0)
        centre, radius = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) / 2
        if name != "plane":  # a floor under it, for a sense of up
            fl = p.createVisualShape(p.GEOM_BOX, halfExtents=[4 * radius, 4 * radius, 0.001], rgbaColor=[0.72, 0.72, 0.72, 1],
                                     physicsClientId=c)
            p.createMultiBody(0, -1, fl, [centre[0], centre[1], lo[2] - 0.0011], physicsClientId=c)
        az, el = np.radians(35.0), np.radians(35.0)
        d = 3.0 * radius
        eye = centre + d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        proj = p.computeProjectionMatrixFOV(45, 1.0, 0.01 * radius, 20 * radius)
        _, _, rgba, _, _ = p.getCameraImage(size, size, _look_at(eye, centre), proj, lightDirection=[1, 0.5, 2],
                                            lightAmbientCoeff=0.55, lightDiffuseCoeff=0.5, lightSpecularCoeff=0.1, shadow=0,
                                            renderer=p.ER_TINY_RENDERER, physicsClientId=c)
        return np.asarray(rgba, np.uint8).reshape(size, size, 4)[..., :3].copy()
    finally:
        p.disconnect(c)


def assets_sheet() -> np.ndarray:
    from simgen.assets import PROCEDURAL_MESHES, PYBULLET_MODELS
    from simgen.scenes import dice
    from simgen.textures import bank_texture

    textures = {"die": dice.textures(0, n=1)["dice/0"], "die_round": dice.textures(0, n=2)["dice/1"],
                "box": bank_texture("checker", 0, 1, 128, False), "can": bank_texture("stripes", 0, 2, 128, False),
                "sphere": bank_texture("checker", 0, 0, 128, False), "plane": bank_texture("wood", 0, 0, 512, True)}
    tiles = []
    for name in [*PROCEDURAL_MESHES, *PYBULLET_MODELS]:
        img = render_asset(name, textures)
        kind = "procedural" if name in PROCEDURAL_MESHES else "pybullet_data"
        img = np.vstack([np.full((20, img.shape[1], 3), BG, np.uint8), img])  # a caption band above the render
        label(img, f"{name} ({kind})", (4, 14), 0.42)
        tiles.append(img)
    per_row = 5
    rows = [("", "", tiles[k:k + per_row]) for k in range(0, len(tiles), per_row)]
    return sheet(rows, label_w=6, title="simgen built-in assets (procedural ones with a bank texture; pybullet_data with their own look)")


def save_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    path.write_bytes(buf.tobytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only compare assets/meshes/ with what simgen generates now")
    a = ap.parse_args()
    if a.check:
        stale = check_meshes()
        print("assets/meshes up to date" if not stale else f"stale: {', '.join(stale)}; run python assets/make_previews.py")
        return 1 if stale else 0
    with tempfile.TemporaryDirectory(prefix="simgen-previews-") as cache:
        os.environ["SIMGEN_CACHE"] = cache  # textures and baked meshes go to a throwaway cache, not the user's
        for path in write_meshes():
            print(f"{path.relative_to(HERE.parent)}  {path.stat().st_size / 1024:.1f} KiB")
        for name, img in (("textures.png", textures_sheet()), ("assets.png", assets_sheet())):
            save_png(PREVIEWS / name, img)
            print(f"assets/previews/{name}  {img.shape[1]}x{img.shape[0]}  {(PREVIEWS / name).stat().st_size / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
