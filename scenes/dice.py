"""Dice scene logic: procedural pip textures and the label that only scene state can give, the
number of pips on the face that points up once the die has settled."""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from simgen.annotate import quat_to_matrix
from simgen.assets import DIE_FACES
from simgen.sensor import LUMA
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


@dataclass(frozen=True)
class Finish:
    """What a die's plastic adds to its painted colours (all off by default).

    - ``fade``: a second colour the body fades into across each face (two-tone "gradient" dice);
    - ``ghost``: opacity of the pips of the opposite face seen through translucent plastic, mirrored and blurred;
    - ``glint``: chance per face of a specular glint: a soft white streak, baked in (TinyRenderer's specular term
      lights a flat face evenly, so it cannot draw the small highlights of glossy plastic).
    """

    fade: np.ndarray | None = None
    ghost: float = 0.0
    glint: float = 0.0


def atlas(body: np.ndarray, pip: np.ndarray, rng: np.random.Generator, cell: int = 64, second: np.ndarray | None = None,
          finish: Finish = Finish(), finish_rng: np.random.Generator | None = None, spread: float = 1.0,
          pip_scale: float = 1.0) -> np.ndarray:
    """3x2 atlas: face value v in column (v-1)%3, row (v-1)//3 (see simgen.assets._cube). With ``second``, each face is
    a swirl of ``body`` and ``second`` (marbled plastic, as many real dice are), a new swirl per face. ``finish`` draws
    from ``finish_rng`` only, so a look without one is the same whatever the finishes of the others. ``spread`` moves
    the pips towards (< 1) or away from (> 1) the face centre and ``pip_scale`` sizes them, as dice makers differ; the
    radius is capped so that neighbouring pips never touch."""
    frng = finish_rng if finish_rng is not None else np.random.default_rng(0)
    img = np.zeros((2 * cell, 3 * cell, 3), np.float32)
    yy, xx = (np.mgrid[0:cell, 0:cell] + 0.5) / cell
    # Darken towards the face border: reads as the rounded edge of a real die under top light.
    edge = np.minimum.reduce([xx, 1 - xx, yy, 1 - yy])
    shade = 0.72 + 0.28 * np.clip(edge / 0.12, 0, 1) ** 0.6
    pip_r = min(rng.uniform(0.075, 0.1) * pip_scale, 0.1 * spread)  # 6's pips are 0.25 * spread apart: >= 2.5 radii

    def at(u: float, w: float) -> tuple[float, float]:
        return 0.5 + (u - 0.5) * spread, 0.5 + (w - 0.5) * spread
    for v, spots in PIPS.items():
        col, row = (v - 1) % 3, (v - 1) // 3
        face = np.broadcast_to(body, (cell, cell, 3)).astype(np.float32).copy()
        if second is not None:
            t = swirl(rng, cell)[..., None]
            face = face * (1 - t) + np.asarray(second, np.float32) * t
        if finish.fade is not None:  # a linear fade at a random angle, body at one side, the fade colour at the other
            angle, steep = frng.uniform(0, 2 * np.pi), frng.uniform(1.0, 2.0)
            t = np.clip(((xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle)) * steep + 0.5, 0, 1)[..., None]
            face = face * (1 - t) + np.asarray(finish.fade, np.float32) * t
        face *= shade[..., None]
        if finish.ghost > 0:  # the far face's pips through the plastic: mirrored, blurred, faint
            for u, w in (at(u, w) for u, w in PIPS[7 - v]):
                d = np.hypot(xx - (1 - u), yy - (1 - w))
                a = finish.ghost * np.clip((1.3 * pip_r - d) * cell / 4, 0, 1)[..., None]
                face = face * (1 - a) + pip * a
        for u, w in (at(u, w) for u, w in spots):
            d = np.hypot(xx - u, yy - (1 - w))
            a = np.clip((pip_r - d) * cell / 1.5, 0, 1)[..., None]  # anti-aliased pip
            face = face * (1 - a) + pip * a
        if frng.random() < finish.glint:
            face = glint(face, frng)
        img[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = face
    return np.clip(img, 0, 255).astype(np.uint8)


def glint(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft white streak where a light source reflects off glossy plastic: an ellipse, often near an edge (where a
    rounded die turns its surface towards the light), blurred, at part opacity."""
    cell = face.shape[0]
    mask = np.zeros((cell, cell), np.float32)
    centre = rng.uniform(0.1, 0.9, 2) * cell
    if rng.random() < 0.6:  # along an edge
        side = int(rng.integers(4))
        centre[side % 2] = (0.08 if side < 2 else 0.92) * cell
    axes = (max(1, int(rng.uniform(0.06, 0.2) * cell)), max(1, int(rng.uniform(0.02, 0.06) * cell)))
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.02 * cell))[..., None] * rng.uniform(0.45, 0.9)
    return face * (1 - mask) + 255.0 * mask


def swirl(rng: np.random.Generator, cell: int) -> np.ndarray:
    """Share of the second colour (0..1) over one face: two octaves of smooth noise, domain-warped into the streaks of
    marbled resin, through a soft threshold (sharp veins to broad clouds, mostly one colour to half and half)."""
    def smooth(k: int) -> np.ndarray:
        return cv2.resize(rng.random((k, k)).astype(np.float32), (cell, cell), interpolation=cv2.INTER_CUBIC)

    base = smooth(int(rng.integers(3, 6))) + 0.5 * smooth(int(rng.integers(7, 12)))
    warp = rng.uniform(0.1, 0.35) * cell
    grid = np.mgrid[0:cell, 0:cell].astype(np.float32)
    mx = grid[1] + (smooth(4) - 0.5) * 2 * warp
    my = grid[0] + (smooth(4) - 0.5) * 2 * warp
    f = cv2.remap(base, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-6)
    return 1.0 / (1.0 + np.exp(-(f - rng.uniform(0.35, 0.65)) * rng.uniform(6, 25)))


# Pip paints other than white and black, as dice sets come: red (the commonest), gold, blue, green.
PIP_PAINTS = [(0.85, 0.1, 0.1), (0.9, 0.7, 0.15), (0.15, 0.35, 0.85), (0.1, 0.6, 0.25)]


def luma(rgb: np.ndarray) -> float:
    return float(np.dot(rgb, LUMA))


def colour(rng: np.random.Generator, greys: list[tuple[float, tuple[float, float]]], saturation: tuple[float, float],
           value: tuple[float, float]) -> np.ndarray:
    """An RGB colour (0..1): grey of the value range of the first ``(cumulative share, value range)`` the draw falls
    under, else a random hue with saturation and value in these ranges."""
    k = rng.random()
    for cut, (lo, hi) in greys:
        if k < cut:
            return np.array(colorsys.hsv_to_rgb(0, 0, rng.uniform(lo, hi)))
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value)))


def textures(seed: int, n: int = 192) -> dict[str, Path]:
    """A fixed bank of die looks: body colour (often saturated, sometimes white/black), a third of them marbled (a swirl
    of the body colour with black, white or another hue), and pips white on dark bodies, black on light ones, or
    (a third of the time) painted red, gold, blue or green where that still stands out from the body. Finishes on top:
    about 12% fade into a second hue, 15% are translucent (the far face's pips show through), a third have glints; every
    look has its own pip size and spacing."""
    out = {}
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        body = colour(rng, [(0.15, (0.85, 1.0)), (0.3, (0.03, 0.25))], (0.5, 1.0), (0.35, 1.0))
        # marbled: swirled with black (40%), white (30%) or another hue
        second = colour(rng, [(0.4, (0.03, 0.2)), (0.7, (0.8, 1.0))], (0.4, 1.0), (0.3, 1.0)) if rng.random() < 0.35 else None
        tone = luma(body) if second is None else 0.5 * (luma(body) + luma(second))
        pip = np.array([0.05, 0.05, 0.05]) if tone > 0.55 else np.array([0.97, 0.97, 0.97])
        if rng.random() < 0.35:
            paint = np.array(PIP_PAINTS[int(rng.integers(len(PIP_PAINTS)))]) * rng.uniform(0.8, 1.1)
            if abs(luma(paint) - tone) > 0.2 or np.abs(paint - body).max() > 0.5:
                pip = np.clip(paint, 0, 1)
        # Finishes draw from their own stream, so the colours above stay what they were before finishes existed.
        frng = np.random.default_rng(np.random.SeedSequence([seed, 8, i]))
        fade = None
        if frng.random() < 0.12:  # a fade colour the pips still stand out from
            for _ in range(8):
                fade = colour(frng, [], (0.6, 1.0), (0.3, 1.0))
                if abs(luma(fade) - luma(pip)) > 0.3:
                    break
            fade = fade * 255
        # translucent: tinted clear plastic, never a pale opaque-looking body (ghost pips on white read as extra pips)
        ghost = float(frng.uniform(0.15, 0.35)) if frng.random() < 0.15 and tone < 0.7 else 0.0
        shine = float(frng.uniform(0.3, 0.7)) if frng.random() < 0.35 else 0.0
        spread, pip_scale = float(frng.uniform(0.88, 1.12)), float(frng.uniform(0.85, 1.2))  # pip layouts of other makers
        out[f"dice/{i}"] = save_png(atlas(body * 255, pip * 255, rng, second=None if second is None else second * 255,
                                          finish=Finish(fade, ghost, shine), finish_rng=frng, spread=spread, pip_scale=pip_scale), stem="dice")
    return out
