"""Stage 4: labels from scene state. Pure numpy/OpenCV: boxes and masks from the instance buffer,
visibility from the object's projected geometry, poses from the settled state."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from . import assets
from .config import LabelSpec
from .types import Frame, Instance, PlacedObject, SceneState


def quat_to_matrix(q: tuple[float, float, float, float]) -> np.ndarray:
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def object_to_camera(obj: PlacedObject, world_to_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R_wo = quat_to_matrix(obj.orientation)
    R = world_to_cam[:3, :3] @ R_wo
    t = world_to_cam[:3, :3] @ np.asarray(obj.position) + world_to_cam[:3, 3]
    return R, t


def file_frame_t(obj: PlacedObject, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The camera-frame position of the origin of the object's own file, for the pose written to the labels.

    simgen moves a user OBJ so that its bounding-box centre is the origin it simulates and draws about
    (:attr:`simgen.assets.Asset.offset`, mesh units); the labels' pose is the file's frame instead, so that
    ``K (R (scale * v) + t)`` projects the file's own vertices ``v`` (6D pose with the user's model, as BOP does)."""
    offset = assets.resolve(obj.sample.asset).offset
    if not any(offset):
        return t
    return np.asarray(t) - obj.sample.scale * (R @ np.asarray(offset, float))


def run_boxes(runs: tuple[np.ndarray, np.ndarray, np.ndarray], height: int, n: int) -> np.ndarray:
    """n x 4 float pixel xyxy of every id 0..n-1 from the runs of a column-major instance map (:attr:`Frame.runs`):
    :func:`tight_box` of each id's mask without a pass over the map per id. A run stays in one column, or else it
    crosses a column's end and so covers the bottom row of one column and the top row of the next. Rows of ids that
    are absent stay inverted (x0 > x1)."""
    starts, ends, values = runs
    keep = (values >= 0) & (values < n)
    s, e, v = starts[keep], ends[keep] - 1, values[keep]
    c0, c1 = s // height, e // height
    one = c0 == c1
    r0, r1 = np.where(one, s - c0 * height, 0), np.where(one, e - c1 * height, height - 1)
    box = np.empty((n, 4), np.int64)
    box[:, :2], box[:, 2:] = np.iinfo(np.int64).max, -1
    np.minimum.at(box[:, 0], v, c0)
    np.minimum.at(box[:, 1], v, r0)
    np.maximum.at(box[:, 2], v, c1)
    np.maximum.at(box[:, 3], v, r1)
    box[:, 2:] += 1
    return box.astype(float)


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Float pixel xyxy of a mask: pixel (r, c) covers [c, c+1) x [r, r+1).

    OpenCV's bounding rectangle of the non-zero pixels where the mask is one block of memory (C order, or F order as
    :func:`annotate`'s transposed masks are: read transposed, x and y swapped): one pass in C instead of two numpy
    reductions and their index lists (25 vs 59 us on a 640x480 mask)."""
    if mask.ndim == 2 and mask.dtype in (bool, np.uint8) and (mask.flags.c_contiguous or mask.flags.f_contiguous):
        if mask.flags.c_contiguous:
            x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
        else:
            y, x, h, w = cv2.boundingRect(mask.T.view(np.uint8))
        if w:  # else empty: the reductions below say so as they always did
            return float(x), float(y), float(x + w), float(y + h)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def square_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, float, float, float]:
    """``box`` grown to a square of its longer side about its centre, then clipped to the image.

    Some annotators draw squares around near-cubic objects (every box of dice-real-50 is square);
    a detector trained on tight boxes is then scored as a localisation error at high IoU."""
    x0, y0, x1, y1 = box
    half = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return max(0.0, cx - half), max(0.0, cy - half), min(float(width), cx + half), min(float(height), cy + half)


def pad_box(box: tuple[float, float, float, float], pad: float, width: int, height: int) -> tuple[float, float, float, float]:
    """``box`` grown by ``pad`` px on each side, then clipped to the image.

    Hand-drawn boxes sit a few pixels outside the object (measured on dice-real-50: ~3 px per side on 35-50 px
    dice); a detector trained on tight boxes then draws boxes ~13% smaller than the annotator's, which costs
    mAP at high IoU on their photos. ``simgen fit`` measures that padding on the real photos."""
    x0, y0, x1, y1 = box
    return max(0.0, x0 - pad), max(0.0, y0 - pad), min(float(width), x1 + pad), min(float(height), y1 + pad)


def _covered(tris: np.ndarray, W: int, H: int) -> int:
    """Pixels of a W x H canvas whose centres lie in at least one of ``tris`` (T x 3 x 2, canvas units)."""
    return int(coverage(tris, W, H).sum())


MAX_PAIRS = 1 << 21  # (triangle, pixel) pairs tested at once: bounds memory for big meshes close to the camera


def coverage(tris: np.ndarray, W: int, H: int) -> np.ndarray:
    """H x W bool: pixels whose centres lie in at least one of ``tris`` (T x 3 x 2, canvas units: pixel (r, c) covers
    [c, c+1) x [r, r+1), as the renderer samples them). Vectorized over every (triangle, candidate pixel) pair, in
    chunks of at most MAX_PAIRS pairs; unlike cv2.fillPoly (even-odd), overlapping triangles count once."""
    canvas = np.zeros((H, W), bool)
    if not len(tris):
        return canvas
    lo = np.clip(np.ceil(tris.min(axis=1) - 0.5), 0, [W, H]).astype(np.int64)
    hi = np.clip(np.floor(tris.max(axis=1) - 0.5), -1, [W - 1, H - 1]).astype(np.int64)
    w, h = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0), np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    n = w * h
    keep = n > 0
    tris, lo, w, n = tris[keep], lo[keep], w[keep], n[keep]
    start = 0
    while start < len(n):
        end = start + max(1, int(np.searchsorted(np.cumsum(n[start:]), MAX_PAIRS, side="right")))
        _cover(canvas, tris[start:end], lo[start:end], w[start:end], n[start:end])
        start = end
    return canvas


def _cover(canvas: np.ndarray, tris: np.ndarray, lo: np.ndarray, w: np.ndarray, n: np.ndarray) -> None:
    """Mark in ``canvas`` the pixels of each triangle's box (corner ``lo``, width ``w``, ``n`` pixels) inside it."""
    tri = np.repeat(np.arange(len(n)), n)
    local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    px = lo[tri, 0] + local % w[tri] + 0.5
    py = lo[tri, 1] + local // w[tri] + 0.5
    a, b, c = tris[tri, 0], tris[tri, 1], tris[tri, 2]

    def edge(p, q):
        return (q[:, 0] - p[:, 0]) * (py - p[:, 1]) - (q[:, 1] - p[:, 1]) * (px - p[:, 0])

    e0, e1, e2 = edge(a, b), edge(b, c), edge(c, a)
    inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
    canvas[(py[inside] - 0.5).astype(np.int64), (px[inside] - 0.5).astype(np.int64)] = True


def silhouette_area(tri: np.ndarray, max_side: int = 64) -> float:
    """Area of the union of 2D triangles (T x 3 x 2), in their own units, counted by pixel-centre
    sampling (unbiased at the boundary) on a canvas ``max_side`` pixels across its longer side
    (64: about 1% sampling noise)."""
    pts = tri.reshape(-1, 2)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    s = max_side / max(x1 - x0, y1 - y0, 1e-12)
    W, H = int(np.ceil((x1 - x0) * s)) + 1, int(np.ceil((y1 - y0) * s)) + 1
    return _covered((tri - np.array([x0, y0])) * s, W, H) / (s * s)


def _fibonacci_sphere(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5 ** 0.5) * k
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


VIEW_BINS = _fibonacci_sphere(512)  # ~9 degrees apart
_RATIO_CACHE: dict[tuple[str, int], float] = {}


def silhouette_hull_ratio(asset: assets.Asset, view_dir: np.ndarray) -> float:
    """Silhouette area over projected-hull area of a concave asset seen along ``view_dir`` (object
    frame). Orthographic, and taken at the nearest of 512 fixed directions, so each (asset, direction)
    is rasterized once per process and every image gets the same value whatever order it renders in.
    Area ratios are scale-invariant; for objects far smaller than their distance to the camera,
    perspective changes them little."""
    b = int(np.argmax(VIEW_BINS @ view_dir))
    key = (asset.key, b)
    r = _RATIO_CACHE.get(key)
    if r is None and asset.key not in _LOADED:
        _load_ratios(asset)
        r = _RATIO_CACHE.get(key)
    if r is None:
        d = VIEW_BINS[b]
        u = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
        u /= np.linalg.norm(u)
        basis = np.stack([u, np.cross(d, u)], axis=1)  # 3x2: the image plane of that direction
        hull_area = float(cv2.contourArea(cv2.convexHull((asset.hull_points @ basis).astype(np.float32))))
        r = 1.0 if hull_area <= 0 else min(1.0, silhouette_area(asset.triangles @ basis) / hull_area)
        _RATIO_CACHE[key] = r
        _DIRTY.add(asset.key)
    return r


# The ratios are a pure function of the mesh and the direction bin, but computing one costs 3-10 ms (a 4,000-triangle
# duck): 512 bins x 4 concave assets is ~15 s per process before the table is warm. They are kept on disk in the
# cache folder, per mesh content, so every later process (workers, resumed and repeated runs) starts warm.
_LOADED: dict[str, Path] = {}
_DIRTY: set[str] = set()


def _ratio_file(asset: assets.Asset) -> Path:
    import hashlib

    from .textures import cache_dir

    h = hashlib.sha1(np.ascontiguousarray(asset.triangles, np.float64).tobytes() + np.asarray(asset.points, np.float64).tobytes())
    return cache_dir() / "visibility" / f"{h.hexdigest()[:20]}-{len(VIEW_BINS)}.npy"


def warm(asset: assets.Asset) -> None:
    """Find an asset's outline points and read a concave asset's visibility table from the cache folder now (see
    :func:`warm_up` in simgen.pipeline)."""
    _ = asset.outline_points  # a cached property: found once, inherited by forked workers
    if not asset.convex and asset.key not in _LOADED:
        _load_ratios(asset)


def _load_ratios(asset: assets.Asset) -> None:
    path = _LOADED[asset.key] = _ratio_file(asset)
    try:
        table = np.load(path)
    except Exception:  # missing, empty or cut short (OSError, EOFError, ValueError): computed again
        return
    if table.shape == (len(VIEW_BINS),):
        for b in np.flatnonzero(np.isfinite(table)):
            _RATIO_CACHE.setdefault((asset.key, int(b)), float(table[b]))


def save_ratio_cache() -> None:
    """Write the ratios this process computed to the cache folder (merged with what other processes wrote there)."""
    import contextlib
    import io

    from .textures import atomic_write_bytes

    for key in list(_DIRTY):
        path = _LOADED.get(key)
        if path is None:
            continue
        try:
            table = np.load(path)
            if table.shape != (len(VIEW_BINS),):
                raise ValueError
        except (OSError, ValueError):
            table = np.full(len(VIEW_BINS), np.nan)
        for (k, b), r in _RATIO_CACHE.items():
            if k == key:
                table[b] = r
        buf = io.BytesIO()
        np.save(buf, table)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
        _DIRTY.discard(key)


NEAR_Z = 1e-4  # metres: points closer to (or behind) the camera plane have no projection


def project(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates (N x 2, OpenCV convention: integers at pixel centres) of object-frame ``points`` (metres)
    lying in front of the camera; points behind it are dropped."""
    cam = points @ R.T + t
    cam = cam[cam[:, 2] > NEAR_Z]
    f, cxy = np.array([K[0, 0], K[1, 1]]), np.array([K[0, 2], K[1, 2]])
    return (cam[:, :2] / cam[:, 2:3]) * f + cxy


def hull_uv(obj: PlacedObject, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates of the object's hull vertices in front of the camera: the outline's extremes and its convex
    hull lie among them. :func:`annotate` projects them once for both :func:`amodal_area` and :func:`amodal_box`."""
    return project(outline_of(obj, R, t), R, t, K)


def outline_of(obj: PlacedObject, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The object's points (object frame, scaled) whose projection outlines it: its convex hull's vertices; all of
    ``hull_points`` where one of those is behind the camera plane, since :func:`project` drops such points and what
    remains of an object cut by the plane is outlined by its other points too."""
    asset = assets.resolve(obj.sample.asset)
    pts = asset.outline_points * obj.sample.scale
    if len(pts) < len(asset.hull_points) and float((pts @ R[2] + t[2]).min()) <= NEAR_Z:
        return asset.hull_points * obj.sample.scale
    return pts


def amodal_box(obj: PlacedObject, R: np.ndarray, t: np.ndarray, K: np.ndarray,
               uv: np.ndarray | None = None) -> tuple[float, float, float, float] | None:
    """Float pixel xyxy of the whole object projected, occluders and image borders ignored (so it may reach beyond the
    image). Same projection as :func:`amodal_area`: the extremes of the projected surface points are the extremes of
    the silhouette. Shifted by half a pixel into :func:`tight_box`'s convention (pixel c covers [c, c+1)), so an
    unoccluded object's amodal box and tight box agree. None when no point is in front of the camera. ``uv``: the
    object's :func:`hull_uv`, where the caller has it."""
    uv = hull_uv(obj, R, t, K) if uv is None else uv  # extremes lie on the hull
    if not len(uv):
        return None
    (x0, y0), (x1, y1) = uv.min(axis=0) + 0.5, uv.max(axis=0) + 0.5
    return float(x0), float(y0), float(x1), float(y1)


def amodal_mask(obj: PlacedObject, R: np.ndarray, t: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """The whole object's projected silhouette clipped to the image (HxW bool), occluders ignored, sampled at pixel
    centres as the renderer does (cv2's polygon fill also takes pixels the outline merely touches: a pixel fatter).

    Convex assets: their projected hull, fanned into triangles. Concave ones: every visual triangle, each counted on
    its own (one cv2.fillPoly call over all triangles would fill even-odd, and the front and back faces of a closed
    mesh overlap everywhere). Triangles with a corner behind the camera are skipped (an object cut by the camera
    plane)."""
    asset = assets.resolve(obj.sample.asset)
    if asset.convex or not len(asset.triangles):
        uv = project(outline_of(obj, R, t), R, t, K)  # the outline's hull: its vertices suffice
        if len(uv) < 3:
            return np.zeros((height, width), bool)
        hull = cv2.convexHull(uv.astype(np.float32))[:, 0, :].astype(np.float64)
        tris = np.stack([np.repeat(hull[:1], len(hull) - 2, axis=0), hull[1:-1], hull[2:]], axis=1)
    else:
        cam = asset.triangles * obj.sample.scale @ R.T + t  # T x 3 x 3, camera frame
        cam = cam[(cam[:, :, 2] > NEAR_Z).all(axis=1)]
        tris = project(cam.reshape(-1, 3), np.eye(3), np.zeros(3), K).reshape(-1, 3, 2)
    return coverage(tris + 0.5, width, height)  # +0.5: pixel-centre coordinates to coverage()'s pixel edges


def amodal_area(obj: PlacedObject, R: np.ndarray, t: np.ndarray, K: np.ndarray, width: int, height: int,
                uv: np.ndarray | None = None) -> tuple[float, bool]:
    """Area in pixels of the object's projected silhouette, ignoring occluders and image borders, and
    whether it crosses a border. Convex objects (dice, boxes): the exact area of the projected hull.
    Concave ones (mug, duck): the hull's area times the share of it the mesh covers from that view.
    ``uv``: the object's :func:`hull_uv`, where the caller has it."""
    asset = assets.resolve(obj.sample.asset)
    uv = hull_uv(obj, R, t, K) if uv is None else uv  # the outline's hull: its vertices suffice
    if len(uv) < 3:
        return 0.0, True
    hull = cv2.convexHull(uv.astype(np.float32))
    x0, y0 = hull[:, 0, :].min(axis=0)
    x1, y1 = hull[:, 0, :].max(axis=0)
    truncated = bool(x0 < 0 or y0 < 0 or x1 > width or y1 > height)
    area = float(cv2.contourArea(hull))
    if not asset.convex and len(asset.triangles) and np.linalg.norm(t) > 0:
        exact = perspective_silhouette_area(asset, obj.sample.scale, R, t, K) if len(asset.triangles) <= EXACT_SILHOUETTE_TRIS else None
        if exact is not None:
            return min(area, exact), truncated
        # direction from the camera to the object, in the object's frame
        area *= silhouette_hull_ratio(asset, R.T @ (np.asarray(t) / np.linalg.norm(t)))
    return area, truncated


# A concave mesh of up to this many triangles has its silhouette filled in the image's own projection for every view:
# exact to a fraction of a percent, ~0.3-1.5 ms an instance. The table of silhouette-to-hull ratios over 512 fixed
# directions is ~5 degrees off and orthographic, which is a few percent for a mug or a duck but was up to 14% for a thin
# multi-link URDF seen unoccluded (visible_fraction 0.86 with every pixel visible). Every built-in concave mesh (mug 864
# triangles and up) keeps the table, so their labels are unchanged.
EXACT_SILHOUETTE_TRIS = 512
# Canvas side (pixels) the exact silhouette is filled on first (see filled_area): within ~0.5% of its pixel count for a
# plump silhouette, ~0.3-1.5 ms for up to 512 triangles (the pixel-centre sampler the 512-direction table uses cost
# 270 ms for a 504-triangle mesh close up)
EXACT_SIDE = 512


def perspective_silhouette_area(asset: assets.Asset, scale: float, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> float | None:
    """Pixel area of the asset's triangles projected through ``K`` from pose (R, t) and filled (pixel-centre sampling
    on a canvas at least the object's own pixel size), borders ignored; None where part of it is behind the camera."""
    cam = (asset.triangles.reshape(-1, 3) * scale) @ R.T + np.asarray(t)
    if float(cam[:, 2].min()) <= NEAR_Z:
        return None
    uv = (cam @ np.asarray(K, float).T)
    uv = (uv[:, :2] / uv[:, 2:]).reshape(-1, 3, 2)
    return filled_area(uv, EXACT_SIDE)


def filled_area(tri: np.ndarray, side: int) -> float:
    """Area of the union of 2D triangles (T x 3 x 2), in their own units: each filled with OpenCV on a canvas ``side``
    pixels across its longer side, and the union's outlines measured as polygons through the centres of their edge
    pixels (OpenCV fills every pixel an edge touches, half a pixel past the true edge: the polygons through those
    pixels' centres lie on it). A thin silhouette (under FILL_MIN_WIDTH canvas pixels across) is filled again on a
    finer canvas, up to FILL_MAX_SIDE: a rod 100 times longer than wide is then within ~1% at any angle."""
    pts = tri.reshape(-1, 2)
    span = float(np.ptp(pts, axis=0).max())
    if not span > 0:
        return 0.0
    while True:
        scale = side / span
        area, perimeter = _filled(tri, pts.min(axis=0), scale)
        width = 2 * area / perimeter if perimeter > 0 else float("inf")  # a band's width, in canvas pixels
        if width >= FILL_MIN_WIDTH or side >= FILL_MAX_SIDE:
            return area / (scale * scale)
        side = int(min(FILL_MAX_SIDE, max(2 * side, side * FILL_MIN_WIDTH / max(width, 1.0))))  # at least twice: ends


FILL_MIN_WIDTH = 24  # canvas pixels across a silhouette's thinnest band, for ~1% from the outline's pixels
FILL_MAX_SIDE = 4096


def _filled(tri: np.ndarray, lo: np.ndarray, scale: float) -> tuple[float, float]:
    """(area, outline length) in canvas pixels of the triangles filled on a canvas at ``scale`` pixels a unit."""
    W, H = (int(math.ceil(x)) + 2 for x in np.ptp(tri.reshape(-1, 2), axis=0) * scale)
    shift = 4
    fixed = np.round(((tri - lo) * scale + 0.5) * (1 << shift)).astype(np.int32)  # OpenCV's pixel centres are integers
    canvas = np.zeros((H, W), np.uint8)
    for t in fixed:
        cv2.fillConvexPoly(canvas, t, 1, lineType=cv2.LINE_8, shift=shift)
    outlines, tree = cv2.findContours(canvas, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if tree is None:
        return 0.0, 0.0
    area = sum(cv2.contourArea(c) * (1 if tree[0][k][3] < 0 else -1) for k, c in enumerate(outlines))  # holes count out
    return max(0.0, float(area)), float(sum(cv2.arcLength(c, True) for c in outlines))


def annotate(frame: Frame, state: SceneState, spec: LabelSpec, skipped: Counter | None = None) -> tuple[Instance, ...]:
    """One :class:`Instance` per labelled object that is visible enough; distractors never appear. ``skipped`` counts
    the labelled objects left out, by reason (``not_visible``: out of view or wholly hidden; ``below_min_area_px``;
    ``below_min_visible_fraction``): a scene whose objects mostly go unlabelled is a config to fix (scale, camera)."""
    skipped = Counter() if skipped is None else skipped
    out = []
    inst = frame.instance
    K = frame.camera.K
    if inst.dtype == np.int32:  # pixels per id from the map's runs (taken for the boxes anyway): no pass over the map
        starts, ends, values = frame.runs
        seen = values >= 0
        counts = np.bincount(values[seen], weights=ends[seen] - starts[seen], minlength=len(state.objects)).astype(np.int64)
    else:
        counts = np.bincount(inst[inst >= 0].ravel(), minlength=len(state.objects))
    # Masks are cut from the transposed instance map and handed out transposed back: Fortran-ordered, as COCO RLE
    # (column-major) wants them, so encoding needs no per-mask transpose copy (~4 ms an image at 640x480).
    inst_t = frame.columns
    boxes = run_boxes(frame.runs, frame.camera.height, len(state.objects)) if inst.dtype == np.int32 else None
    for i, obj in enumerate(state.objects):
        if obj.category is None:
            continue
        if counts[i] == 0 or counts[i] < spec.min_area_px:
            skipped["not_visible" if counts[i] == 0 else "below_min_area_px"] += 1
            continue
        area = int(counts[i])
        R, t = object_to_camera(obj, frame.world_to_cam)
        uv = hull_uv(obj, R, t, K)
        full, truncated = amodal_area(obj, R, t, K, frame.camera.width, frame.camera.height, uv)
        visible = 1.0 if full <= 0 else float(min(1.0, area / full))
        if visible < spec.min_visible_fraction:
            skipped["below_min_visible_fraction"] += 1
            continue
        # the box from the map's runs (the same box); the mask is cut from the map only when something reads it
        mask = None if boxes is not None else (inst_t == i).T
        box = tuple(boxes[i]) if boxes is not None else tight_box(mask)
        if spec.box == "square":
            box = square_box(box, frame.camera.width, frame.camera.height)
        if spec.box_pad_px:
            box = pad_box(box, spec.box_pad_px, frame.camera.width, frame.camera.height)
        full_mask = amodal_mask(obj, R, t, K, frame.camera.width, frame.camera.height) if spec.amodal_mask else None
        out.append(Instance(object_index=i, category=obj.category, bbox_xyxy=box, mask=mask, mask_source=inst_t, area=area,
                            visible_fraction=round(visible, 4), truncated=truncated,
                            pose_R=tuple(tuple(float(x) for x in row) for row in R),  # type: ignore[arg-type]
                            pose_t=tuple(float(x) for x in file_frame_t(obj, R, t)), scale=float(obj.sample.scale),  # type: ignore[arg-type]
                            asset=obj.sample.label_asset or obj.sample.asset,
                            bbox_amodal=amodal_box(obj, R, t, K, uv), mask_amodal=full_mask))
    return tuple(out)
