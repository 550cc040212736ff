"""Dice scene logic: procedural pip textures and the label that only scene state can give, the
number of pips on the face that points up once the die has settled."""
from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np

from simgen.annotate import quat_to_matrix
from simgen.assets import DIE_FACES
from simgen.textures import save_png
from simgen.types import PlacedObject

NAMES = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
PIPS = {
    1: [(0.5, 0.5)],
    2: [(0.27, 0.27), (0.73, 0.73)],
    3: [(0.27, 0.27), (0.5, 0.5), (0.73, 0.73)],
    4: [(0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73)],
    5: [(0.27, 0.27), (0.73, 0.27), (0.5, 0.5), (0.27, 0.73), (0.73, 0.73)],
    6: [(0.27, 0.25), (0.73, 0.25), (0.27, 0.5), (0.73, 0.5), (0.27, 0.75), (0.73, 0.75)],
}


def top_face(orientation: tuple[float, float, float, float]) -> int:
    """Value of the face whose outward normal points most nearly up (+z) in the world."""
    R = quat_to_matrix(orientation)
    ups = {v: float((R @ np.asarray(n, float))[2]) for v, (n, _, _) in DIE_FACES.items()}
    return max(ups, key=ups.get)  # type: ignore[arg-type]


def top_face_label(obj: PlacedObject) -> str | None:
    """Scene labeler: a die's category is the name of its top face's pip count."""
    if obj.category is None:
        return None
    return NAMES[top_face(obj.orientation)]


def atlas(body: np.ndarray, pip: np.ndarray, rng: np.random.Generator, cell: int = 64) -> np.ndarray:
    """3x2 atlas: face value v in column (v-1)%3, row (v-1)//3 (see simgen.assets._cube)."""
    img = np.zeros((2 * cell, 3 * cell, 3), np.float32)
    yy, xx = (np.mgrid[0:cell, 0:cell] + 0.5) / cell
    # Darken towards the face border: reads as the rounded edge of a real die under top light.
    edge = np.minimum.reduce([xx, 1 - xx, yy, 1 - yy])
    shade = 0.72 + 0.28 * np.clip(edge / 0.12, 0, 1) ** 0.6
    marble = rng.random() < 0.2
    pip_r = rng.uniform(0.075, 0.1)
    for v, spots in PIPS.items():
        col, row = (v - 1) % 3, (v - 1) // 3
        face = np.broadcast_to(body, (cell, cell, 3)).astype(np.float32).copy()
        if marble:
            noise = cv2.resize(rng.random((6, 6)).astype(np.float32), (cell, cell), interpolation=cv2.INTER_CUBIC)
            face *= (0.75 + 0.5 * np.clip(noise, 0, 1))[..., None]
        face *= shade[..., None]
        for u, w in spots:
            d = np.hypot(xx - u, yy - (1 - w))
            a = np.clip((pip_r - d) * cell / 1.5, 0, 1)[..., None]  # anti-aliased pip
            face = face * (1 - a) + pip * a
        img[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = face
    return np.clip(img, 0, 255).astype(np.uint8)


def textures(seed: int, n: int = 32) -> dict[str, Path]:
    """A fixed bank of die looks: body colour (often saturated, sometimes white/black/marbled) and pips
    (white on dark bodies, black on light ones, now and then another colour)."""
    out = {}
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        kind = rng.random()
        if kind < 0.15:
            body = np.array(colorsys.hsv_to_rgb(0, 0, rng.uniform(0.85, 1.0)))
        elif kind < 0.25:
            body = np.array(colorsys.hsv_to_rgb(0, 0, rng.uniform(0.05, 0.25)))
        else:
            body = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.35, 1.0)))
        light = body.mean() > 0.55
        if rng.random() < 0.15:
            pip = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.5, 1.0)))
        else:
            pip = np.array([0.05, 0.05, 0.05]) if light else np.array([0.97, 0.97, 0.97])
        out[f"dice/{i}"] = save_png(atlas(body * 255, pip * 255, rng), stem="dice")
    return out
