"""`simgen fit`: randomization ranges fitted to a real COCO folder, written as a render config overlay.

Method: calibrate by rendering. Camera and sensor settings do not map 1:1 onto what one measures in an
image (a blur's effect on the Laplacian variance depends on the content; JPEG removes noise), so the fit
renders small calibration sets of the scene as configured, with the sensor effects it fits at neutral values,
measures them with the report's own statistics (``simgen.report.props``), and solves for the settings that
move them onto the real set. Three calibration renders (``fit``): as configured, at a first estimate, and at
the fitted framing:

- camera distance: first from each real image's median object size (size x distance / focal length is
  measured per calibration image); then corrected by matching the real size percentiles against a
  calibration rendered at that estimate (like with like: small objects lose pixels to rasterization);
  FOV is kept as configured; tilt is not fitted (boxes do not pin it);
- objects per image: real count percentiles / the share of placed objects the calibration labelled;
- brightness, contrast, noise, blur: the last calibration's images go through the sensor model itself
  (``simgen.sensor.apply_sensor``, then the writer's JPEG at the real quality) over a grid of each
  setting; the setting whose response matches each real percentile (p25-p75) spans the range;
- JPEG quality: straight from the real files' quantisation tables;
- box convention: square real boxes while the calibration's tight boxes are not -> ``labels.box: square``;
  real boxes sitting further outside the objects' edges than tight ones (the report's box-edge margins) ->
  ``labels.box_pad_px``, the annotators' padding, in px of the render size the overlay is for (the real
  photos' margins are measured on the photos resized to it, see ``box_looseness``).

Ranges cover the real percentiles ``quantiles`` (default 5th-95th) widened by ``margin``: the aim is
coverage of the real set, not a copy of it. Plain Python: the CLI (Hydra) hands in a composed dict.
"""
from __future__ import annotations

import copy
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .dists import dist
from .errors import ConfigError, DatasetError

USAGE = "simgen fit data.real=<dir> scene=<name> out=<overlay.yaml>"
MAX_CALIB_SIDE = 640      # calibration renders at the real size, long side capped here (render cost grows with pixels)
CURVE_IMAGES = 48         # calibration images pushed through the sensor grids (cost: 54 grid points x this many)
JPEG_MARGIN = 3           # quality units added on each side of the real JPEG range
SQUARE_TOL_PX = 1.0       # |w - h| at or below this: a square box
SQUARE_SHARE = 0.9        # real boxes that must be square to call it the annotators' convention...
CALIB_SQUARE_MAX = 0.5    # ...while at most this share of the calibration's tight boxes is square
CORE = (25.0, 75.0)       # real percentiles the sensor effects are matched on (see _sensor_curves)
BLUR_MIN = 0.15           # Gaussian sigma (px) below which a blur makes no visible difference
PAD_MIN_PX = 0.5          # measured padding below this is not written (the edge measure's own spread)
MIN_MARGIN_BOXES = 20     # box-edge margins measured on fewer boxes are too noisy to correct sizes with
BRIGHTNESS_GRID = tuple(round(float(x), 6) for x in np.geomspace(0.4, 2.5, 13))  # 1.0 is the 7th point
CONTRAST_GRID = BRIGHTNESS_GRID
NOISE_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
BLUR_GRID = (0.0, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0)
FIT_ONLY_KEYS = ("data", "fit")  # keys of conf/fit.yaml that are not render keys
NEUTRAL = {"noise_std": 0.0, "blur_probability": 0.0, "brightness": 1.0, "contrast": 1.0}  # the fitted effects, off


@dataclass(frozen=True)
class FitOptions:
    calibration_images: int = 48
    quantiles: tuple[float, float] = (5.0, 95.0)
    margin: float = 0.1  # share of each value added on each side of a range
    seed: int = 0
    progress: bool = True
    run: Path | None = None  # a run trained on synthetic only: box padding measured by the boxes it draws on the real photos


@dataclass(frozen=True)
class Key:
    """One fitted overlay key, with the real statistic it came from (written as a comment above it).
    ``value`` None: not fitted; only the comment is written, in the key's place."""

    path: tuple[str, ...]
    value: Any
    source: str


# ---------------------------------------------------------------- small numeric helpers
def _q(x: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(x, np.float64), p))


def _widen(lo: float, hi: float, margin: float, floor: float = 0.0, ceil: float = math.inf, nd: int = 3) -> list[float]:
    """[lo, hi] grown by ``margin`` of each end's value, clipped, rounded."""
    a, b = max(floor, lo * (1 - margin)), min(ceil, hi * (1 + margin))
    return [round(a, nd), round(max(a, b), nd)]


def _fmt(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}"


def _stat_text(x: Sequence[float], opts: FitOptions, nd: int = 2) -> str:
    lo, hi = opts.quantiles
    return f"p{lo:g} {_fmt(_q(x, lo), nd)}, median {_fmt(_q(x, 50), nd)}, p{hi:g} {_fmt(_q(x, hi), nd)}"


# ---------------------------------------------------------------- measuring a side
@dataclass(frozen=True)
class Labels:
    """Label statistics of one side: per image labelled count and median object size, and the box shapes."""

    counts: np.ndarray  # labelled objects per image
    sizes: np.ndarray  # per image: median over objects of (longer box side - 2 * shrink) / image height; nan without objects
    square_share: float  # boxes with |w - h| <= SQUARE_TOL_PX
    n_boxes: int
    classes: Counter


def label_stats(side, shrink_px: float = 0.0, shrink_side: float | None = None) -> Labels:
    """The longer box side is used (not sqrt(w h)) so that square and tight boxes of one object agree;
    ``shrink_px`` removes a measured looseness of the annotators' boxes from each side. It is given in px of an
    image whose shorter side is ``shrink_side`` and scaled to each image's own size (None: px of every image)."""
    from .report.props import boxes_by_image, image_size, label_values

    sizes, squares, classes = [], [], Counter()
    for image_id, boxes in boxes_by_image(side).items():
        W, H = image_size(side, side.images_by_id[image_id])
        shrink = shrink_px * min(W, H) / shrink_side if shrink_side else shrink_px
        per = [(max(w, h) - 2 * shrink) / H for _, (_, _, w, h), _ in boxes]
        sizes.append(float(np.median(per)) if per else math.nan)
        squares += [abs(w - h) <= SQUARE_TOL_PX for _, (_, _, w, h), _ in boxes]
        classes.update(name for name, _, _ in boxes)
    counts = np.array(label_values(side)["objects_per_image"], np.float64)
    return Labels(counts, np.array(sizes, np.float64), float(np.mean(squares)) if squares else 0.0, len(squares), classes)


def pixel_stats(side, progress: bool) -> dict[str, list]:
    """Per-image statistics of the report (props.image_statistics: long side shrunk to 512 px, cached)."""
    from tqdm import tqdm

    from .report.props import image_statistics

    out: dict[str, list] = {k: [] for k in ("brightness", "contrast", "sharpness", "noise_sigma", "jpeg_quality", "format", "size")}
    for image_id in tqdm(side.image_ids, desc=f"measure {side.name}", unit="img", leave=False, disable=not progress):
        st = image_statistics(side.image_path(image_id))
        for k in out:
            out[k].append(st[k])
    return out


def shorter_side(side) -> int:
    """The shorter side (px) of the side's most common image size."""
    from .report.props import image_size

    W, H = Counter(image_size(side, side.images_by_id[i]) for i in side.image_ids).most_common(1)[0][0]
    return min(W, H)


def looseness(real: list[dict[str, float]], calib: list[dict[str, float]]) -> float | None:
    """How many px the real boxes sit further outside their objects than tight boxes do: the report's box-tightness
    measure (20%-trimmed mean of each box's median side margin, real less calibration), from margins measured at one
    image size (:func:`edge_margins`); None when fewer than MIN_MARGIN_BOXES boxes have measurable edges on a side."""
    from .report.props import _margin_check

    if min(len(real), len(calib)) < MIN_MARGIN_BOXES:
        return None
    data = _margin_check(real, calib, 0.0)[1]  # same trimmed-mean aggregation as the report
    return float(data["real_trimmed_mean_px"] - data["synthetic_trimmed_mean_px"])


def box_looseness(real, calib, progress: bool, side_px: float | None = None) -> float | None:
    """:func:`looseness` in px of the render the overlay is for: both sides measured at a shorter side of ``side_px``
    (None: the calibration's, which is rendered at that size). The annotators pad a few px around 35-50 px dice in
    ~640 px photos; a render of the same framing at 320 px draws the dice at half the px, and the same habit is half
    the px there. Comparing margins of 640-px photos with those of 320-px renders would double the padding."""
    from .report.model import ReportContext
    from .report.props import edge_margins

    side_px = side_px or shorter_side(calib)
    ctx = ReportContext(real=real, synthetic=calib, out=Path(tempfile.gettempdir()), progress=progress)
    return looseness(edge_margins(real, ctx, side_px), edge_margins(calib, ctx, side_px))


def camera_of(im: dict) -> tuple[float, float]:
    """(fy / image height, distance from the camera to the ground plane along its optical axis) of one
    rendered image, from its COCO record (K and world_to_camera, OpenCV axes). The sampler puts the look-at
    target on the ground (z = 0), so this is exactly the drawn scene.camera.distance."""
    K, M = np.asarray(im["K"], np.float64), np.asarray(im["world_to_camera"], np.float64)
    R, t = M[:3, :3], M[:3, 3]
    centre, axis = -R.T @ t, R[2]  # optical axis (camera +z) in world coordinates
    return float(K[1, 1] / im["height"]), float(centre[2] / -axis[2])


# ---------------------------------------------------------------- sensor response curves
@dataclass(frozen=True)
class Chain:
    """Sensor settings for one point of a response curve (the render pipeline's order: colour, blur, noise, JPEG)."""

    brightness: float = 1.0
    contrast: float = 1.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg: int | None = None
    chroma: float = 1.0  # share of the noise per channel (the render's mean noise_chroma): grey grain reads stronger in luma


def respond(images: list[np.ndarray], chain: Chain, key: str, seed: int, levels: Sequence[float]) -> np.ndarray:
    """Percentiles ``levels`` of statistic ``key`` over ``images`` (RGB uint8) after the sensor model with
    ``chain``, measured as the report measures a file: JPEG-decoded, shrunk to 512 px, props.colour_stats."""
    import cv2

    from .report.props import colour_stats, downscale
    from .sensor import apply_sensor
    from .types import Sensor
    from .writers.coco import encode_image

    s = Sensor(noise_std=chain.noise, blur_sigma=chain.blur, brightness=chain.brightness, contrast=chain.contrast,
               noise_chroma=chain.chroma)
    vals = []
    for k, rgb in enumerate(images):
        out = apply_sensor(rgb, s, np.random.default_rng([seed, k]))  # same noise per image along a curve: smooth curves
        if chain.jpeg is not None:
            bgr = cv2.imdecode(np.frombuffer(encode_image(out, "jpg", chain.jpeg), np.uint8), cv2.IMREAD_COLOR)
        else:
            bgr = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
        vals.append(colour_stats(downscale(bgr)[0])[key])
    return np.percentile(vals, levels)


def curve(images: list[np.ndarray], grid: Sequence[float], make: Callable[[float], Chain], key: str, seed: int,
          levels: Sequence[float], bar) -> np.ndarray:
    """Response of the calibration set over ``grid``: one row per setting, one column per percentile level."""
    out = []
    for x in grid:
        out.append(respond(images, make(x), key, seed, levels))
        bar.update(1)
    return np.array(out)


def invert(grid: Sequence[float], response: np.ndarray, target: float) -> tuple[float, bool]:
    """The setting whose response equals ``target`` (linear between grid points), and whether the target lies
    beyond the curve's reach (then the nearest grid end). The response is made monotone first: a curve that is
    noisy or saturates must still invert."""
    g, r = np.asarray(grid, np.float64), np.asarray(response, np.float64)
    sign = 1.0 if r[-1] >= r[0] else -1.0
    r = np.maximum.accumulate(sign * r) + np.arange(len(r)) * 1e-9  # strictly increasing for np.interp
    t = sign * float(target)
    return float(np.interp(t, r, g)), bool(t < r[0] or t > r[-1])


@dataclass(frozen=True)
class Matched:
    """A sensor setting matched percentile by percentile: calibration percentile p after the setting equals the
    real percentile p. The sensor model cannot narrow a distribution, only shift and stretch it, so a range
    spanning the settings of every level covers the real set without stacking the scene's own spread on top."""

    levels: np.ndarray
    settings: np.ndarray  # one per level
    beyond: float  # share of levels the grid cannot reach

    def at(self, level: float) -> float:
        return float(np.interp(level, self.levels, self.settings))


def match(grid: Sequence[float], response: np.ndarray, real: Sequence[float], levels: np.ndarray) -> Matched:
    targets = np.percentile(np.asarray(real, np.float64), levels)
    got = [invert(grid, response[:, j], t) for j, t in enumerate(targets)]
    return Matched(levels, np.array([s for s, _ in got]), float(np.mean([b for _, b in got])))


def _reach(m: Matched, what: str) -> str:
    return f"; {m.beyond:.0%} of the matched percentiles lie beyond what {what} can reach here (clipped)" if m.beyond > 0 else ""


def _levels_text(row: np.ndarray, levels: np.ndarray, opts: FitOptions) -> str:
    """A response row (values at ``levels``) as "p5 a, median b, p95 c"."""
    lo, hi = opts.quantiles
    v = [float(np.interp(x, levels, row)) for x in (lo, 50, hi)]
    return f"p{lo:g} {v[0]:.2f}, median {v[1]:.2f}, p{hi:g} {v[2]:.2f}"


def _narrower(real: Sequence[float], row: np.ndarray, levels: np.ndarray) -> str:
    """A note when the real set's middle half is much narrower than the calibration's: a sensor gain shifts and
    stretches, it cannot narrow; the scene's grounds and lights set that spread."""
    r = _q(real, 75) - _q(real, 25)
    c = float(np.interp(75, levels, row) - np.interp(25, levels, row))
    if r >= 0.5 * c:
        return ""
    return (f"; the real set is much narrower (p25-p75 spread {r:.1f} vs {c:.1f} in the renders): the scene's grounds and "
            "lights set that spread, not the sensor, so the range is the median's setting widened by the real relative spread")


def _levels(opts: FitOptions) -> np.ndarray:
    lo, hi = opts.quantiles
    return np.unique(np.r_[np.linspace(lo, hi, 19), 50.0])


# ---------------------------------------------------------------- the fit
def _calibration_size(render: dict, real) -> tuple[int, int]:
    """The render's width/height when given, else the real set's most common size, long side capped."""
    from .report.props import image_size

    W, H = Counter(image_size(real, real.images_by_id[i]) for i in real.image_ids).most_common(1)[0][0]
    w, h = render.get("width"), render.get("height")
    if w and h:
        return int(w), int(h)
    s = min(1.0, MAX_CALIB_SIDE / max(W, H))
    if w:
        return int(w), max(16, round(int(w) * H / W))
    if h:
        return max(16, round(int(h) * W / H)), int(h)
    return max(16, round(W * s)), max(16, round(H * s))


def calibration_config(render: dict, size: tuple[int, int], opts: FitOptions, out: Path):
    """The render config of a calibration set: the given scene and randomization, PNG, and the sensor effects the
    fit solves for at neutral values. The other sensor effects (saturation, lens effects...) stay as configured:
    the render will apply them under the fitted ones, so the fit must see them too."""
    from .config import render_config

    d = copy.deepcopy({k: v for k, v in render.items() if k not in FIT_ONLY_KEYS and k != "hydra"})
    d.update(n_images=opts.calibration_images, seed=opts.seed, out=str(out), width=size[0], height=size[1], image_format="png",
             overwrite=False, progress=opts.progress, shard={"index": 0, "count": 1}, writer="coco")
    sensor = d.setdefault("randomization", {}).setdefault("sensor", {})
    sensor.update(NEUTRAL)
    # Tight, unpadded boxes: the box convention and padding are measured against them (box_key, pad_key).
    d.setdefault("labels", {}).update(box="tight", box_pad_px=0.0)
    return render_config(d)


def load_real(real_dir: Path):
    from .report.build import load_side

    real = load_side("real", Path(real_dir))
    if not any(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in real.doc["annotations"]):
        raise DatasetError(f"`{Path(real_dir) / 'annotations.json'}` has no boxes; the fit needs labelled objects to size and count them.")
    return real


def _scene_categories(path: Path) -> list[str]:
    """The categories a scene file in conf/scene names (``categories``, else its object groups'), without composing it."""
    import yaml

    try:
        d = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    objs = d.get("objects") if isinstance(d, dict) else None
    cats = d.get("categories") or ([g.get("category", k) if isinstance(g, dict) else k for k, g in objs.items()]
                                   if isinstance(objs, dict) else [])
    return [str(c) for c in cats]


def check_categories(real, cfg, render: dict) -> str | None:
    """The scene's categories against the real set's: the warning to print, None when the sets are the same. None shared:
    the counts and sizes are fitted to other objects. A warning, not an error: a real set labelled with one class (say
    "die") against a scene whose labeler names top faces shares no name and is still a fair fit of sizes and counts.
    Some shared: count_keys fits per-category counts for the shared ones only, and the real objects of other categories
    still count toward them."""
    scene = list(dict.fromkeys(cfg.scene.categories))
    names = list(dict.fromkeys(c["name"] for c in real.doc["categories"]))
    where = real.root / "annotations.json"
    if not set(scene) & set(names):
        from .cli import conf_dir

        fits = [p.stem for p in sorted((conf_dir() / "scene").glob("*.yaml"))
                if p.stem != cfg.scene.name and set(_scene_categories(p)) & set(names)]
        objs = (render.get("scene") or {}).get("objects")
        groups = list(objs) if isinstance(objs, dict) else []
        rename = (f", or name the scene's objects after the real categories (e.g. +scene.objects.{groups[0] if groups else '<group>'}"
                  f".category={names[0] if names else '<name>'})") if cfg.scene.labeler == "category" else ""
        return (f"none of the categories of scene={cfg.scene.name} ({', '.join(scene)}) is in `{where}` "
                f"({', '.join(names) or 'no categories'}): the sizes and counts below are fitted to other objects; if they are "
                f"not the same objects, pick the scene whose categories match "
                f"({'scene=' + ', scene='.join(fits) if fits else 'e.g. scene=custom with your objects'}){rename}.")
    only_scene, only_real = [c for c in scene if c not in names], [c for c in names if c not in scene]
    if not only_scene and not only_real:
        return None
    parts = ([f"scene={cfg.scene.name} categories {', '.join(only_scene)} are not in `{where}` (their counts are not fitted)"]
             if only_scene else []) + ([f"real categories {', '.join(only_real)} are not in scene={cfg.scene.name} (their objects "
                                         "still count toward the fitted counts)"] if only_real else [])
    return "; ".join(parts) + "; pick the scene whose categories match, or name its objects after the real categories."


def fit(real_dir: Path, render: dict, opts: FitOptions = FitOptions(), log: Callable[[str], None] = print) -> dict:
    """Fit the randomization ranges of ``render`` (a composed render config dict: scene, randomization, ...)
    to the real COCO folder ``real_dir``. Returns {"keys": [Key], "overlay": nested dict, "notes": [...],
    "meta": {...}}; :func:`write_overlay` writes it. Raises ConfigError/DatasetError before rendering anything.

    Three calibration renders: as configured, for a first distance and count; at that first estimate, to match
    object sizes like with like (small objects lose a pixel or so to rasterization); at the fitted distance and
    counts, for the pixel statistics, which depend on the framing (a camera twice as far sees more ground and
    more aliased texture), and for the share of placed objects that end up labelled there."""
    real = load_real(real_dir)
    trained = synthetic_only_checkpoint(opts.run) if opts.run is not None else None  # refused before any render
    size = _calibration_size(render, real)
    with tempfile.TemporaryDirectory(prefix="simgen-fit-") as tmp:
        cfg = calibration_config(render, size, opts, Path(tmp) / "geometry")  # validated before any work
        mismatch = check_categories(real, cfg, render)  # said before any render
        if mismatch:
            print(f"simgen: warning: {mismatch}", file=sys.stderr)
        log(f"fit: measuring {len(real.image_ids)} real images in {real_dir}")
        real_px = pixel_stats(real, opts.progress)
        calib = calibrate(cfg, "1/3, as configured: object size and count", log)
        real_labels, box, loose = real_boxes(real, calib, opts)  # box: the convention and padding keys
        sizes = size_keys(real_labels, calib, cfg, loose, opts)
        framed = with_keys(render, [*sizes, *count_keys(real_labels, calib, cfg, render, opts)])
        cfg = calibration_config(framed, size, opts, Path(tmp) / "refine")
        calib = calibrate(cfg, "2/3, at the first estimate: object size and count, like with like", log)
        # The pixel calibration is framed at the best estimates, without the margin: its content (how many dice,
        # how large) should be the real set's, not the wider range the overlay will cover.
        exact = replace(opts, margin=0.0)
        best = [refine_distance(real_labels, calib, sizes[0], loose, exact), *count_keys(real_labels, calib, cfg, framed, exact)]
        sizes[0] = refine_distance(real_labels, calib, sizes[0], loose, opts)
        framed = with_keys(render, [*sizes, *best])
        cfg = calibration_config(framed, size, opts, Path(tmp) / "pixels")
        calib = calibrate(cfg, "3/3, at the fitted distance and counts: pixel statistics", log)
        keys = [Key(("scene", "name"), cfg.scene.name, f"scene the ranges were fitted for (selects scene={cfg.scene.name})"),
                *sizes, *count_keys(real_labels, calib, cfg, framed, opts),
                Key(("width",), cfg.width, f"the size the sensor settings were calibrated at (noise and blur look different at "
                    f"another size; real images are mostly {Counter(real_px['size']).most_common(1)[0][0]})"),
                Key(("height",), cfg.height, ""), *sensor_keys(real_px, calib, cfg, opts), *box]
        if trained is not None:  # the detector's measure replaces the edge measure (kept in the comment)
            keys = [k for k in keys if k.path != ("labels", "box_pad_px")] + [run_pad_key(trained, real_dir, box[1], log, size)]
    notes = ["not fitted: colours, textures, grounds and lights (the scene's own ranges are kept; the sensor gain below "
             "carries any overall brightness difference), saturation.", *([f"warning: {mismatch}"] if mismatch else [])]
    meta = {"real": str(real_dir), "n_images": len(real.image_ids), "n_boxes": len(real.doc["annotations"]),
            "scene": cfg.scene.name, "calibration": {"images": opts.calibration_images, "width": size[0], "height": size[1]},
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "simgen_version": _version(),
            "quantiles": list(opts.quantiles), "margin": opts.margin,
            "real_size": Counter(real_px["size"]).most_common(1)[0][0]}
    return {"keys": keys, "overlay": nest(keys), "notes": notes, "meta": meta}


def calibrate(cfg, what: str, log: Callable[[str], None]):
    """Render one calibration set (tqdm progress from the render code) and load it like a report side."""
    from .report.build import load_side
    from .run import quiet_stdout, render_dataset

    log(f"fit: calibration {what}: {cfg.n_images} images at {cfg.width}x{cfg.height}, fitted sensor effects off")
    with quiet_stdout((1, 2)):
        import pybullet  # noqa: F401  (prints its build time on import)
    render_dataset(cfg, log=lambda m: None)
    return load_side("calibration", cfg.out)


def with_keys(render: dict, keys: Sequence[Key]) -> dict:
    """A copy of the render dict with the fitted values set."""
    d = copy.deepcopy(render)
    for k in keys:
        if k.value is None or k.path == ("scene", "name"):
            continue
        node = d
        for p in k.path[:-1]:
            node = node.setdefault(p, {})
        node[k.path[-1]] = copy.deepcopy(k.value)
    return d


def _version() -> str:
    from . import __version__

    return __version__


def real_boxes(real, calib, opts: FitOptions) -> tuple[Labels, list[Key], float | None]:
    """The real label statistics with box looseness removed, the box-convention and padding keys, and the looseness
    (px of the real photos' most common size). The calibration is rendered at the size the overlay is for, so the
    padding key is in its px (the real photos are measured resized to it); the real boxes are shrunk in their own px."""
    cal = label_stats(calib)
    square = label_stats(real).square_share >= SQUARE_SHARE and cal.square_share <= CALIB_SQUARE_MAX
    at = shorter_side(calib)
    loose = box_looseness(real, calib, opts.progress, at)  # px at the render size
    labels = label_stats(real, shrink_px=max(0.0, loose) if loose is not None else 0.0, shrink_side=at)
    pad = pad_key(loose, square_growth(calib) if square else 0.0, at, shorter_side(real))
    return labels, [box_key(labels, cal, square), pad], (loose * shorter_side(real) / at if loose is not None else None)


def square_growth(calib) -> float:
    """Mean px per box side that growing the calibration's tight boxes to squares adds: (longer - shorter) / 4
    (half the difference on each of the two shorter sides, averaged over four sides)."""
    from .report.props import boxes_by_image

    g = [(max(w, h) - min(w, h)) / 4 for boxes in boxes_by_image(calib).values() for _, (_, _, w, h), _ in boxes]
    return float(np.mean(g)) if g else 0.0


def pad_key(loose: float | None, square: float, side_px: float | None = None, real_side: float | None = None) -> Key:
    """``labels.box_pad_px`` from the measured looseness: how far the real boxes' sides sit outside the objects'
    edges beyond where tight boxes sit (the report's box-edge margins), less what squaring them adds already.
    Both in px of the render the overlay is for (shorter side ``side_px``; :func:`box_looseness` measures the real
    photos resized to it); ``real_side``, the photos' shorter side, only for the comment."""
    k = ("labels", "box_pad_px")
    if loose is None:
        return Key(k, None, f"labels.box_pad_px not set: fewer than {MIN_MARGIN_BOXES} boxes with measurable edges on a side")
    at = (f" at the render size (the real photos measured resized from a shorter side of {real_side:g} to {side_px:g} px; "
          f"~{loose * real_side / side_px:.1f} px at theirs)" if side_px and real_side and side_px != real_side else "")
    pad = round(loose - square, 1)
    if pad < PAD_MIN_PX:
        return Key(k, None, f"labels.box_pad_px not set: real boxes sit {loose:.1f} px further outside their objects than tight "
                   f"boxes{at}" + (f", {square:.1f} of it from squaring" if square else "") + f"; under {PAD_MIN_PX:g} px is within "
                   "the measure's noise")
    return Key(k, pad, f"real boxes sit {loose:.1f} px further outside their objects' edges than tight boxes{at} (trimmed mean of "
               "the report's box-edge margins)" + (f", {square:.1f} of it from squaring" if square else "")
               + ": a detector trained on tighter boxes draws them smaller than the annotators did")


def size_keys(real: Labels, calib, cfg, loose: float | None, opts: FitOptions) -> list[Key]:
    """First estimate of the camera distance from object size: size/H = k * (fy/H) / distance, with k (the
    objects' size at unit distance and focal length, incl. their scale and pose spread) measured per calibration
    image. Small objects lose a pixel or so to rasterization, so :func:`refine_distance` corrects this estimate
    with a second calibration rendered at it."""
    cal = label_stats(calib)
    cams = [camera_of(calib.images_by_id[i]) for i in calib.image_ids]
    ok = np.isfinite(cal.sizes) & (cal.sizes > 0)
    if not ok.any():
        raise DatasetError(f"the calibration render of scene={cfg.scene.name} labelled no objects; check the scene's camera and counts.")
    k = float(np.median([s * d / f for s, (f, d), good in zip(cal.sizes, cams, ok) if good]))
    f_ref = float(np.median([f for f, _ in cams]))
    d = f_ref * k / _sizes(real)  # the distance each real image implies, at the calibration's median focal length
    lo, hi = opts.quantiles
    cam = cfg.scene.camera
    keys = [Key(("scene", "camera", "distance"), {"loguniform": _widen(_q(d, lo), _q(d, hi), opts.margin, floor=cam.near * 1.5)},
                f"first estimate: distance per real image {_stat_text(d, opts, 3)} m")]
    if cam.K is None:
        keys.append(Key(("scene", "camera", "fov_deg"), _range_of(render_value(cfg, ("scene", "camera", "fov_deg"))),
                        "kept as configured: the distance above is solved at this field of view"))
    keys.append(Key(("scene", "camera", "tilt_deg"), None,
                    "tilt_deg not fitted: box sizes and positions alone do not pin the camera tilt (a few objects per image "
                    "whose sizes vary more than the perspective changes them), so the scene's range is kept"))
    return keys


def _sizes(labels: Labels) -> np.ndarray:
    return labels.sizes[np.isfinite(labels.sizes) & (labels.sizes > 0)]


def refine_distance(real: Labels, calib, first: Key, loose: float | None, opts: FitOptions) -> Key:
    """Match object sizes percentile by percentile against a calibration rendered at the first estimate [a, b]:
    the near end makes the largest objects, so a' = a * calib p_hi / real p_hi and b' = b * calib p_lo / real p_lo.
    Comparing like with like (same pixel sizes) removes the rasterization bias, and matching the spread keeps the
    FOV, scale and pose variation (which the render adds again) from widening the range twice."""
    (a, b), s_c, s_r = first.value["loguniform"], _sizes(label_stats(calib)), _sizes(real)
    if not len(s_c):
        return first
    lo, hi = opts.quantiles
    ends = sorted([a * _q(s_c, hi) / _q(s_r, hi), b * _q(s_c, lo) / _q(s_r, lo)])
    shrink = f" (real boxes shrunk by {loose:.1f} px per side: they sit that much looser than tight boxes)" if loose and loose > 0 else ""
    return Key(first.path, {"loguniform": _widen(ends[0], ends[1], opts.margin, floor=a * 0.1)},
               f"real median object size per image (longer box side / image height, %): {_stat_text(100 * s_r, opts, 1)}{shrink}; "
               f"a calibration at distance [{a:.3f}, {b:.3f}] m ({first.source}) gave {_stat_text(100 * s_c, opts, 1)} -> "
               f"distance [{ends[0]:.3f}, {ends[1]:.3f}] m matches the real p{lo:g} and p{hi:g}; log-uniform, because size goes as "
               f"1 / distance: a uniform distance would put the median size below the real one")


def render_value(cfg, path: tuple[str, ...]) -> Any:
    v: Any = cfg.resolved
    for p in path:
        v = v[p]
    return v


def _range_of(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def _expected(dist_, n: int = 4096) -> float:
    """Mean of a config distribution, by drawing (any form dists.dist accepts)."""
    rng = np.random.default_rng(0)
    return float(np.mean([float(dist_.sample(rng)) for _ in range(n)]))


def count_keys(real: Labels, calib, cfg, render: dict, opts: FitOptions) -> list[Key]:
    """Placed objects per image = labelled per image / the share of placed objects the calibration labelled
    (the rest fell outside the frame, were hidden, or fell off). Several groups: split by their real share."""
    cal = label_stats(calib)
    groups = cfg.scene.objects
    total = getattr(cfg.scene, "objects_total", None)
    placed = _expected(total) if total is not None else sum(_expected(g.count) for g in groups)
    share = min(1.0, max(0.2, float(np.mean(cal.counts)) / placed)) if placed > 0 else 1.0
    lo_q, hi_q = opts.quantiles
    lo = max(0, math.floor(_q(real.counts, lo_q) * (1 - opts.margin) / share))
    hi = max(lo, 1, math.ceil(_q(real.counts, hi_q) * (1 + opts.margin) / share))
    text = (f"real objects per image: {_stat_text(real.counts, opts, 1)}; the calibration labelled {share:.0%} of the objects it "
            f"placed (the rest outside the frame, hidden or fallen off), so placed = labelled / {share:.2f}")
    if total is not None:
        return [Key(("scene", "objects_total"), [lo, hi], text)]
    names = list((render.get("scene") or {}).get("objects") or {})
    if len(names) != len(groups):  # objects given as a list: no stable key to write
        return [Key(("scene", "objects"), None, "objects per image not fitted: scene.objects is not a mapping")]
    folded = {str(c).casefold(): k for c, k in real.classes.items()}  # `Mug` in the photos' labels is the scene's `mug`
    matched = {n: folded[str(g.category).casefold()] for n, g in zip(names, groups) if str(g.category).casefold() in folded}
    if not matched:  # categories come from a labeler (dice: the top face), or other names: share by configured counts
        matched = {n: _expected(g.count) for n, g in zip(names, groups)}
        how = "split by the configured counts" if len(names) > 1 else ""
        tot = sum(matched.values()) or 1.0
    else:
        # each matched group gets its share of ALL real objects: renormalising over the matched ones put every real
        # object on the few classes whose names matched (one of six matched: 100% of the count on it)
        how = "split by the real class shares"
        tot = float(sum(real.classes.values())) or 1.0
        lacking = sorted(c for c in real.classes if str(c).casefold() not in {str(g.category).casefold() for g in groups})
        if lacking:
            text += (f"; real classes the scene lacks ({', '.join(map(str, lacking))}: "
                     f"{sum(real.classes[c] for c in lacking) / tot:.0%} of the real objects) are not placed")
    keys = []
    for n, g in zip(names, groups):
        if n not in matched:
            keys.append(Key(("scene", "objects", n, "count"), None, f"{n}: count not fitted (category `{g.category}` is not in the real set)"))
            continue
        p = matched[n] / tot
        keys.append(Key(("scene", "objects", n, "count"), [math.floor(lo * p), max(1, math.ceil(hi * p))],
                        text + (f"; {how}: {p:.0%}" if how else "")))
    return keys


def synthetic_only_checkpoint(run: Path) -> Path:
    """The folder of a `simgen train` run, or the first arm of a `simgen utility` run, that saw no real image."""
    import json

    run = Path(run)
    folders = [run] if (run / "checkpoint.pt").is_file() else sorted(p.parent for p in run.glob("**/checkpoint.pt"))
    for f in folders:
        try:
            seen = json.loads((f / "provenance.json").read_text()).get("sources_seen") or {}
        except (OSError, ValueError):
            continue
        if seen.get("real", 1) == 0 and seen.get("synthetic", 0) > 0:
            return f
    raise ConfigError(f"fit.run `{run}` holds no run trained on synthetic images only (checkpoint.pt with provenance.json): pass the "
                      "output folder of `simgen train` without data.real, or of `simgen utility` with its TSTR arm.")


def box_pads(gt: np.ndarray, pred: np.ndarray, scores: np.ndarray, min_score: float = 0.3, min_iou: float = 0.5) -> list[float]:
    """Per matched pair (each real box with its best-overlapping prediction of score >= min_score, IoU >= min_iou):
    how many px per side the real box is larger, ((w + h) real - (w + h) predicted) / 4. Boxes xyxy."""
    import torch
    from torchvision.ops import box_iou

    pred = pred[scores >= min_score]
    if len(gt) == 0 or len(pred) == 0:
        return []
    iou, j = box_iou(torch.as_tensor(gt, dtype=torch.float32), torch.as_tensor(pred, dtype=torch.float32)).max(1)
    side = lambda b: (b[:, 2] - b[:, 0]) + (b[:, 3] - b[:, 1])  # noqa: E731
    d = (side(np.asarray(gt, np.float64)) - side(np.asarray(pred, np.float64)[j.numpy()])) / 4
    return [float(x) for x in d[iou.numpy() >= min_iou]]


def detector_pad(pads: Sequence[float], sides: Sequence[float], base: float, base_side: float | None,
                 side_px: float | None) -> tuple[float, list[float]]:
    """The annotators' padding in px of an image whose shorter side is ``side_px`` (None: px as measured), from
    ``pads`` (px per side the real boxes are larger than the detector's, each measured in a photo whose shorter side
    is in ``sides``) and ``base``, the padding of the detector's training data (px at its shorter side
    ``base_side``; None: taken as is). Both scale with the image: the detector resizes photos and training renders
    alike, so a pad it learnt at 640 px is twice the px in a 1280-px photo, and half in a 320-px render.
    Returns (padding, the pads scaled)."""
    if side_px is None:
        return base + float(np.median(pads)), [float(p) for p in pads]
    scaled = [float(p) * side_px / s for p, s in zip(pads, sides)]
    return base * (side_px / base_side if base_side else 1.0) + float(np.median(scaled)), scaled


def run_pad_key(folder: Path, real_dir: Path, edge: Key, log: Callable[[str], None], size: tuple[int, int] | None = None) -> Key:
    """``labels.box_pad_px`` measured by a detector trained on synthetic labels: on the real photos, the median of how
    much larger the annotators' boxes are than the boxes it draws (which match the synthetic labels it learnt), added
    to the padding its training data already had. The edge measure (``pad_key``) compares box sides with image edges;
    this one asks the question that matters for training, what box a model learns to draw for a real object.
    In px of a render of ``size`` (the overlay's width, height; None: of the real photos), see :func:`detector_pad`."""
    import json

    import torch

    from .data import CocoDataset
    from .train.engine import eval_transforms, predict
    from .train.models import model_from_run

    model, cfg, prov = model_from_run(folder)
    base, base_side = 0.0, None
    for d in prov.get("datasets", {}).get("synthetic", []):
        try:
            c = json.loads((Path(d["path"]) / "manifest.json").read_text())["config"]
            base = float(c["labels"].get("box_pad_px", 0.0))
            base_side = min(int(c["width"]), int(c["height"])) if c.get("width") and c.get("height") else None
        except (OSError, ValueError, KeyError, TypeError):
            pass
    log(f"fit: box padding from {folder}: its boxes on {real_dir}")
    ds = CocoDataset(real_dir, transforms=eval_transforms(), masks=False, ignore_unknown=True)
    with torch.inference_mode():
        preds = predict(model, ds, torch.device("cpu"), input_size=cfg.input_size, max_size=cfg.max_size)
    pads: list[float] = []
    sides: list[float] = []
    for i in range(len(ds)):
        img, t = ds[i]
        p = preds[int(t["image_id"])]
        got = box_pads(np.asarray(t["boxes"], np.float64).reshape(-1, 4), p["boxes"].numpy(), p["scores"].numpy())
        pads += got
        sides += [float(min(img.shape[-2:]))] * len(got)
    k = ("labels", "box_pad_px")
    edge_txt = f"; the edge measure said {edge.value} px" if edge.value is not None else ""
    if len(pads) < MIN_MARGIN_BOXES:
        return Key(k, None, f"labels.box_pad_px not set: only {len(pads)} real boxes matched a box of {folder} (IoU >= 0.5){edge_txt}")
    side_px = float(min(size)) if size else None
    total, scaled = detector_pad(pads, sides, base, base_side, side_px)
    med = float(np.median(scaled))
    pad = round(max(0.0, total), 1)
    at = ""
    if side_px is not None and (any(s != side_px for s in sides) or (base_side and base_side != side_px)):
        at = (f" (px at the {size[0]}x{size[1]} render: the photos' px scaled by {side_px:g} / their shorter side"
              + (f", the training renders' by {side_px:g} / {base_side:g}" if base_side and base_side != side_px else "") + ")")
    return Key(k, pad if pad >= PAD_MIN_PX else None,
               f"the detector in {folder}, trained on synthetic boxes padded {base:g} px"
               + (f" in renders of shorter side {base_side:g} px" if base_side and side_px and base_side != side_px else "")
               + f", draws real objects {med:.1f} px per side smaller than the annotators (median of {len(pads)} matched boxes, "
               f"IQR {np.percentile(scaled, 25):.1f} to {np.percentile(scaled, 75):.1f}){at}{edge_txt}")


def box_key(real: Labels, cal: Labels, square: bool) -> Key:
    if square:
        return Key(("labels", "box"), "square", f"{real.square_share:.0%} of {real.n_boxes} real boxes are square within {SQUARE_TOL_PX:g} px, "
                   f"but only {cal.square_share:.0%} of the calibration's tight boxes: the annotators drew squares")
    return Key(("labels", "box"), None, f"labels.box not set: {real.square_share:.0%} of real boxes are square within {SQUARE_TOL_PX:g} px "
               f"(calibration {cal.square_share:.0%}), no sign of a square-box convention; tight boxes (the default) fit")


def sensor_keys(real_px: dict, calib, cfg, opts: FitOptions) -> list[Key]:
    """JPEG from the quantisation tables; brightness, contrast, noise and blur matched through response curves."""
    import cv2
    from tqdm import tqdm

    from .report.props import load_bgr

    S = ("randomization", "sensor")
    keys = [Key((*S, "enabled"), True, "the fitted sensor ranges below need the sensor model on")]
    q = [v for v in real_px["jpeg_quality"] if v is not None]
    jpeg = None
    if len(q) >= len(real_px["jpeg_quality"]) / 2:
        lo_q, hi_q = opts.quantiles
        rng_ = [max(1, math.floor(_q(q, lo_q)) - JPEG_MARGIN), min(100, math.ceil(_q(q, hi_q)) + JPEG_MARGIN)]
        keys.append(Key((*S, "jpeg_quality"), rng_, f"real JPEG quality (IJG-equivalent, from the quantisation tables): {_stat_text(q, opts, 0)}, "
                        f"+-{JPEG_MARGIN}"))
        jpeg = int(round(_q(q, 50)))
    else:
        keys.append(Key(("image_format",), "png", f"{1 - len(q) / len(real_px['jpeg_quality']):.0%} of the real images are not JPEG"))
    images = [cv2.cvtColor(load_bgr(calib.image_path(i)), cv2.COLOR_BGR2RGB) for i in calib.image_ids[:CURVE_IMAGES]]
    n = len(BRIGHTNESS_GRID) + len(CONTRAST_GRID) + 2 * len(NOISE_GRID) + len(BLUR_GRID)
    with tqdm(total=n, desc="sensor response", unit="pt", leave=False, disable=not opts.progress) as bar:
        keys += _sensor_curves(images, real_px, jpeg, _expected(getattr(cfg.randomization.sensor, "noise_chroma", dist(1.0))), opts, bar)
    return keys


def settings_span(m: Matched, grid: Sequence[float], margin: float, sel: np.ndarray | None = None) -> list[float]:
    """The range of the settings matched at every level (or those in ``sel``), widened by ``margin`` and kept
    inside the grid: never beyond what was measured."""
    s = m.settings if sel is None else m.settings[sel]
    return _widen(float(s.min()), float(s.max()), margin, floor=grid[0], ceil=grid[-1])


def gain_range(m: Matched, grid: Sequence[float], real: Sequence[float], row: np.ndarray, levels: np.ndarray,
               margin: float) -> list[float]:
    """The range to draw a brightness or contrast gain from.

    A gain drawn at random is blind to the image it scales. When the real middle half is much narrower than
    the renders' (the scene's grounds and lights set the spread, ``row`` is the renders' statistic at
    ``levels`` with the gain at 1), spanning the settings matched at every percentile stacks a wide gain on
    a wide scene: a bright render gets the gain matched for a dark one and washes out (on dice, TSTR found
    far fewer real dice with it; docs/fit.md). Then only the central shift is the sensor's: the median's
    setting, widened by the real set's own relative spread (at least 5%)."""
    if not _narrower(real, row, levels):
        return settings_span(m, grid, margin)
    mid = m.at(50)
    half = max(0.05, (_q(real, 75) - _q(real, 25)) / (2 * max(abs(_q(real, 50)), 1e-9)))
    return _widen(mid * (1 - half), mid * (1 + half), margin, floor=grid[0], ceil=grid[-1])


def _sensor_curves(images: list[np.ndarray], real_px: dict, jpeg: int | None, chroma: float, opts: FitOptions, bar) -> list[Key]:
    """Brightness, then contrast at the median gain, then noise, blur and noise again (blur hides noise, noise
    adds Laplacian variance): each curve holds the others at their median fitted setting."""
    S, seed, L = ("randomization", "sensor"), opts.seed, _levels(opts)
    # Matched on the middle half of the real set only: the tails of these statistics are set by content (a tray
    # or none, a striped ground reads as noise and as sharpness), which the scene's own randomization spreads
    # in the render as well; 25-50 images put the tails' percentiles on one or two images each.
    core = (L >= CORE[0]) & (L <= CORE[1])
    txt = lambda key: _stat_text(real_px[key], opts)  # noqa: E731

    def rng_of(m: Matched) -> str:
        lv = f"p{m.levels[0]:g} to p{m.levels[-1]:g}"
        return f"{lv}: {m.settings.min():.2f} to {m.settings.max():.2f} (median {m.at(50):.2f})"

    def span(m: Matched, grid: Sequence[float], sel: np.ndarray | None = None) -> list[float]:
        return settings_span(m, grid, opts.margin, sel)

    def gain_span(m: Matched, grid: Sequence[float], key: str, row: np.ndarray) -> list[float]:
        return gain_range(m, grid, real_px[key], row, L, opts.margin)

    def run(grid, make, key, sel: np.ndarray = np.ones(len(L), bool)) -> tuple[np.ndarray, Matched]:
        r = curve(images, grid, make, key, seed, L, bar)
        return r, match(grid, r[:, sel], real_px[key], L[sel])

    rb, b = run(BRIGHTNESS_GRID, lambda x: Chain(brightness=x), "brightness", core)
    rc, c = run(CONTRAST_GRID, lambda x: Chain(brightness=b.at(50), contrast=x), "contrast", core)
    bm, cm = b.at(50), c.at(50)
    _, n = run(NOISE_GRID, lambda x: Chain(bm, cm, 0.0, x, jpeg, chroma), "noise_sigma", core)
    rs, s = run(BLUR_GRID, lambda x: Chain(bm, cm, x, n.at(50), jpeg, chroma), "sharpness", core)
    soft = s.settings > BLUR_MIN
    typical = s.at(50) if soft.mean() >= 0.5 else 0.0  # the blur the median image sees
    rn, n = run(NOISE_GRID, lambda x: Chain(bm, cm, typical, x, jpeg, chroma), "noise_sigma", core)
    keys = [
        Key((*S, "brightness"), gain_span(b, BRIGHTNESS_GRID, "brightness", rb[list(BRIGHTNESS_GRID).index(1.0)]), f"real brightness (mean L*): {txt('brightness')}; calibration "
            f"(fitted effects off): {_levels_text(rb[list(BRIGHTNESS_GRID).index(1.0)], L, opts)} -> gain matching each "
            f"percentile {rng_of(b)}{_reach(b, 'the gain')}{_narrower(real_px['brightness'], rb[list(BRIGHTNESS_GRID).index(1.0)], L)}"),
        Key((*S, "contrast"), gain_span(c, CONTRAST_GRID, "contrast", rc[int(np.argmin(np.abs(np.log(CONTRAST_GRID))))]), f"real contrast (std L*): {txt('contrast')}; at gain {bm:.2f} -> contrast "
            f"factor matching each percentile {rng_of(c)}{_reach(c, 'the contrast factor')}"
            f"{_narrower(real_px['contrast'], rc[int(np.argmin(np.abs(np.log(CONTRAST_GRID))))], L)}"),
        Key((*S, "noise_std"), span(n, NOISE_GRID), f"real noise (Immerkaer sigma): {txt('noise_sigma')}; calibration with no "
            f"added noise: {_levels_text(rn[0], L, opts)} -> added noise std matching each percentile {rng_of(n)}{_reach(n, 'added noise')}"),
        Key((*S, "blur_probability"), float(min(1.0, math.ceil(soft.mean() * 20) / 20)),
            f"real sharpness (Laplacian variance): {txt('sharpness')}; calibration unblurred: {_levels_text(rs[0], L, opts)}; "
            f"{soft.mean():.0%} of the matched percentiles need a blur (sigma > {BLUR_MIN:g} px){_reach(s, 'the blur')}"),
    ]
    if soft.any():
        keys.append(Key((*S, "blur_sigma"), span(s, BLUR_GRID, soft), f"blur sigma (px) matching the softer percentiles: "
                        f"{s.settings[soft].min():.2f} to {s.settings[soft].max():.2f}"))
    return keys


# ---------------------------------------------------------------- the overlay file
def nest(keys: Sequence[Key]) -> dict:
    """The overlay as a nested mapping (keys with a value only)."""
    out: dict = {}
    for k in keys:
        if k.value is None:
            continue
        node = out
        for p in k.path[:-1]:
            node = node.setdefault(p, {})
        node[k.path[-1]] = k.value
    return out


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # a distribution form, e.g. {loguniform: [a, b]}
        return "{" + ", ".join(f"{k}: {_yaml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, float):
        return repr(round(v, 4))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", v) and v.lower() not in ("true", "false", "null", "yes", "no", "on", "off", "y", "n"):
        return v
    import json

    return json.dumps(v)


def _emit(tree: dict, indent: int) -> list[str]:
    pad, lines = " " * indent, []
    for name, node in tree.items():
        if isinstance(node, Key):
            lines += [f"{pad}# {line}" for line in _wrap(node.source, 110 - indent)] if node.source else []
            if node.value is not None:
                lines.append(f"{pad}{name}: {_yaml_value(node.value)}")
        elif any(k.value is not None for k in _leaves(node)):
            lines.append(f"{pad}{name}:")
            lines += _emit(node, indent + 2)
        else:  # only comments below: a bare `name:` would read as null
            lines += _emit(node, indent)
    return lines


def _leaves(tree: dict) -> list[Key]:
    return [x for v in tree.values() for x in ([v] if isinstance(v, Key) else _leaves(v))]


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, max(40, width)) or [""]


def overlay_text(result: dict) -> str:
    """The overlay file: a header saying what it was fitted from, then each key under the real statistic it came from."""
    tree: dict = {}
    for k in result["keys"]:
        node = tree
        for p in k.path[:-1]:
            node = node.setdefault(p, {})
        node[k.path[-1]] = k
    m = result["meta"]
    lo, hi = m["quantiles"]
    cal = m["calibration"]
    head = [f"simgen fit overlay for scene={m['scene']}, fitted {m['created_utc']} by simgen {m['simgen_version']}",
            f"real: {m['real']} ({m['n_images']} images, mostly {m['real_size']}, {m['n_boxes']} boxes)",
            f"calibration: 3 x {cal['images']} images of scene={m['scene']} rendered at {cal['width']}x{cal['height']} with the fitted sensor effects off, "
            "measured with the statistics of `simgen report`",
            f"distance, count and JPEG ranges cover the real p{lo:g}-p{hi:g} widened by {m['margin']:.0%} of each end (JPEG "
            f"quality by +-{JPEG_MARGIN}); sensor effects match the real p{CORE[0]:g}-p{CORE[1]:g}, widened the same way",
            *([f"command: {m['command']} (render with the same scene overrides: the ranges are fitted to that scene)"] if m.get("command") else []),
            "use: simgen render overlay=<this file> [key=value ...]   (command-line overrides win over this file)",
            *result["notes"]]
    lines = [f"# {line}" for h in head for line in _wrap(h, 110)]
    return "\n".join([*lines, "", *_emit(tree, 0)]) + "\n"


def check_out(out: Any, overwrite: bool) -> Path:
    """The overlay path: a .yaml/.yml file, refused when it exists unless overwrite (checked before any work)."""
    if not out:
        raise ConfigError(f"out is required: the overlay file to write; {USAGE}")
    path = Path(str(out))
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"out={path} must end in .yaml or .yml (the overlay is a YAML config file); e.g. out=fits/{path.stem or 'real'}.yaml")
    if path.is_dir():
        raise ConfigError(f"out={path} is a folder; give a file path such as out={path / 'fit.yaml'}")
    if path.exists() and not overwrite:
        raise ConfigError(f"out={path} already exists; choose another file or pass overwrite=true to replace it.")
    return path


def write_overlay(result: dict, path: Path, overwrite: bool = False) -> Path:
    """Write the overlay atomically (a temporary file in the same folder, then rename): a reader never sees half a file."""
    import yaml

    text = overlay_text(result)
    if yaml.safe_load(text) != result["overlay"]:  # the hand-made YAML must read back as the fitted values
        raise RuntimeError("overlay text does not read back as the fitted values; this is a bug in simgen.fit")
    path = check_out(path, overwrite)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write out={path} ({e.strerror or e}); choose a folder you can write to.") from None
    return path


# ---------------------------------------------------------------- `simgen render overlay=<file>`
DIST_FORMS = {"uniform", "loguniform", "randint", "choice", "normal"}


def load_overlay(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"overlay `{path}` not found; give the path of a YAML file such as one written by `{USAGE}`.")
    class UniqueKeys(yaml.SafeLoader):
        """A key given twice in one mapping is refused: YAML keeps the last silently, so an edit above a forgotten
        line of the same key did nothing."""

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: the loader flattens it (not a key of its own)
                continue
            key = loader.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ConfigError(f"overlay `{path}` line {key_node.start_mark.line + 1}: a key must be a name, got a "
                                  f"{type(key).__name__}; write the keys of a render config (e.g. `scene:`).")
            if key in seen:
                raise ConfigError(f"overlay `{path}` line {key_node.start_mark.line + 1}: key `{key}` is given twice in one "
                                  "mapping (YAML would keep the last silently); keep one.")
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        d = yaml.load(path.read_text(), Loader=UniqueKeys)  # noqa: S506  (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(getattr(e, "problem_mark", None), "line", None)
        raise ConfigError(f"overlay `{path}` is not valid YAML" + (f" (line {where + 1})" if where is not None else "")
                          + "; fix it or write it again with `simgen fit`.") from None
    if not isinstance(d, dict):
        raise ConfigError(f"overlay `{path}` must be a mapping of render keys, e.g. `scene: {{camera: {{distance: [0.3, 0.5]}}}}`.")
    return d


def hydra_literal(v: Any) -> str:
    """``v`` in Hydra's override grammar (strings quoted, so a value never turns into a sweep or a number)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_literal(x)}" for k, x in v.items()) + "}"
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_dist_form(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and set(v) - {"p"} <= DIST_FORMS


def overlay_overrides(d: dict, base: dict, is_group: Callable[[str], bool], prefix: str = "") -> list[str]:
    """Hydra overrides that set every value of the overlay ``d`` on top of the composed config ``base``.
    Mappings merge key by key where ``base`` has a mapping too; any other value (a list, a number, a
    distribution form such as {uniform: [a, b]}) replaces what is there: ``~key`` first when that is a mapping,
    which Hydra would otherwise try to merge, then ``++key=value`` (set or add). A string at a top-level config
    group (``randomization: none``) selects that group's option."""
    out: list[str] = []
    for k, v in d.items():
        key, here = f"{prefix}{k}", base.get(k) if isinstance(base, dict) else None
        if isinstance(v, dict) and not _is_dist_form(v) and (here is None or (isinstance(here, dict) and not _is_dist_form(here))):
            out += overlay_overrides(v, here or {}, is_group, key + ".")
        elif not prefix and isinstance(v, str) and is_group(k):
            out.append(f"{k}={v}")
        else:
            out += [f"~{key}"] * (isinstance(here, dict) or (isinstance(here, list) and isinstance(v, dict)))
            out.append(f"++{key}={hydra_literal(v)}")
    return out


def expand_overlay(args: list[str], is_group: Callable[[str], bool], is_option: Callable[[str, str], bool],
                   compose: Callable[[list[str]], dict]) -> list[str]:
    """Replace ``overlay=<file>`` in a render command line by the overlay's overrides, placed before every other
    argument so that explicit command-line overrides, applied later, win. ``scene.name`` in the overlay selects
    the scene (``scene=<name>``), and a different ``scene=`` on the command line is refused. ``compose`` returns
    the config composed from group selections alone: what the overlay's values land on."""
    found = [a for a in args if a.lstrip("+").startswith("overlay=")]
    if not found:
        return args
    if len(found) > 1:
        raise ConfigError("overlay= is given more than once; merge the files into one, or pass the extra keys as overrides.")
    value = found[0].split("=", 1)[1].strip().strip("'\"")
    if not value:
        raise ConfigError(f"overlay= needs a file, e.g. overlay=fits/real.yaml (write one with `{USAGE}`).")
    d = copy.deepcopy(load_overlay(Path(value)))
    _check_overlay_keys(d, value)
    rest = [a for a in args if a is not found[0]]
    scene = d.get("scene", {}).pop("name", None) if isinstance(d.get("scene"), dict) else None
    head = []
    if scene is not None:
        given = [a.split("=", 1)[1] for a in rest if a.split("=", 1)[0].lstrip("+") == "scene"]
        if given and given[-1] != scene:
            raise ConfigError(f"overlay `{value}` was fitted for scene={scene}, but the command line says scene={given[-1]}; "
                              f"drop scene= or fit again with `simgen fit ... scene={given[-1]}`.")
        if not given and is_option("scene", str(scene)):
            head.append(f"scene={scene}")
    flags, rest = _split_flags(rest)
    groups = [a for a in [*head, *rest] if "=" in a and not a.startswith(("~", "hydra")) and "," not in a
              and "." not in a.split("=", 1)[0] and is_group(a.split("=", 1)[0].lstrip("+"))]
    return [*flags, *head, *overlay_overrides(d, compose(groups), is_group), *rest]


def blame_overlay(message: str, file: str, typed: tuple[str, ...] = ()) -> str:
    """``message`` with the overlay named where the key it is about was set there (an overlay's typo was reported as
    if the user had typed the override): a leaf the overlay sets that no key typed on the command line (``typed``)
    replaced."""
    import re

    try:
        d = load_overlay(Path(file))
    except ConfigError:
        return message
    paths: set[str] = set()

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif where and not any(where == t or where.startswith(t + ".") for t in typed):
            paths.add(where)

    walk(d, "")
    keys = [m.lstrip("+~").split("=")[0] for m in re.findall(r"`([^`]+)`", message)]
    named = [k for k in keys if "." in k and any(p == k or p.startswith(k + ".") for p in paths)]
    named += [p for p in paths if "." in p and re.search(rf"(?<![\w.]){re.escape(p)}(?![\w])", message)]
    return f"{message.rstrip('.')} (set in overlay `{file}`)." if named else message


def _check_overlay_keys(d: object, file: str, where: str = "") -> None:
    """An overlay's keys become command-line overrides, and Hydra keys are plain ASCII words: a group named with a space
    or an accent ("coffee mug:") failed with a quoting error about an override the user never typed."""
    if not isinstance(d, dict):
        return
    for k, v in d.items():
        name = str(k)
        allowed = "_-." if not where else "_-"  # a top-level `scene.camera.distance:` is a path; a group `mug.v2:` is not
        if not all(c.isascii() and (c.isalnum() or c in allowed) for c in name):
            raise ConfigError(f"overlay `{file}`: key `{name}`{f' under {where}' if where else ''} is not a plain ASCII word, which "
                              f"config keys must be; name the group plainly (e.g. `mygroup:`) and give the category its own name "
                              f"inside it: `category: \"{name}\"`.")
        _check_overlay_keys(v, file, f"{where}.{name}" if where else name)


# Hydra's options that take a value (`--cfg job`); the overrides must stay one run of positionals after them
VALUE_OPTIONS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                 "--experimental-rerun", "--info", "-i"}


def _split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(options with their values, overrides), each in order: argparse refuses overrides on both sides of an option."""
    flags, rest = [], []
    for a in args:
        takes_value = bool(flags) and flags[-1] in VALUE_OPTIONS and "=" not in a and not a.startswith(("-", "~", "+"))
        (flags if a.startswith("-") or takes_value else rest).append(a)
    return flags, rest


# ---------------------------------------------------------------- `simgen fit` task (a composed dict in)
def fit_options(d: dict) -> FitOptions:
    from .config import SEED_MAX, Fields

    f = Fields(d.get("fit"), "fit", ("calibration_images", "quantiles", "margin", "seed", "run"))
    q = f.get("quantiles", [5, 95])
    if not (isinstance(q, (list, tuple)) and len(q) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in q)
            and 0 <= q[0] < q[1] <= 100):
        raise ConfigError(f"fit.quantiles must be two percentiles 0 <= low < high <= 100, got {q!r}; e.g. fit.quantiles=[5,95]")
    return FitOptions(calibration_images=f.integer("calibration_images", 48, lo=8, hi=10000),  # type: ignore[arg-type]
                      quantiles=(float(q[0]), float(q[1])), margin=f.number("margin", 0.1, lo=0, hi=1),  # type: ignore[arg-type]
                      seed=f.integer("seed", 0, lo=0, hi=SEED_MAX), progress=bool(d.get("progress", True)),  # type: ignore[arg-type]
                      run=_run_dir(f.get("run", None)))


def _run_dir(v) -> Path | None:
    if v is None or str(v).lower() in ("none", "null", ""):
        return None
    if not Path(str(v)).is_dir():
        raise ConfigError(f"fit.run `{v}` is not a folder; pass the output folder of a `simgen train` or `simgen utility` run "
                          "trained on synthetic images only, or fit.run=null")
    return Path(str(v))


def fit_task(d: dict) -> None:
    """`simgen fit`: check every input first (nothing is written on a bad one), fit, write the overlay, say what changed."""
    real = (d.get("data") or {}).get("real")
    if not real:
        raise ConfigError(f"data.real is required: the folder of real photos with annotations.json; {USAGE}")
    from .config import check_bool

    overwrite = check_bool(d.get("overwrite", False), "overwrite", True)
    out = check_out(d.get("out"), overwrite)
    opts = fit_options(d)
    result = fit(Path(str(real)), {k: v for k, v in d.items() if k not in ("out", "overwrite")}, opts,
                 log=lambda msg: print(msg, file=sys.stderr))
    result["meta"]["command"] = " ".join(["simgen fit", *sys.argv[1:]])  # the CLI set sys.argv to ["simgen fit", *args]
    path = write_overlay(result, out, overwrite)
    for k in result["keys"]:
        if k.value is not None and k.path != ("scene", "name"):
            print(f"  {'.'.join(k.path)}: {_yaml_value(k.value)}", file=sys.stderr)
    print(f"{path}  (render with: simgen render overlay={path})")
