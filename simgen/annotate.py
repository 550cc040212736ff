"""Stage 4: labels from scene state. Pure numpy/OpenCV: boxes and masks from the instance buffer,
visibility from the object's projected geometry, poses from the settled state."""
from __future__ import annotations

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


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Float pixel xyxy of a mask: pixel (r, c) covers [c, c+1) x [r, r+1)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def amodal_area(obj: PlacedObject, R: np.ndarray, t: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[float, bool]:
    """Area in pixels of the object's projected convex hull, ignoring occluders and image borders, and
    whether it crosses a border. Exact for convex objects (dice, boxes); an upper bound otherwise."""
    pts = assets.resolve(obj.sample.asset).points * obj.sample.scale
    cam = pts @ R.T + t
    cam = cam[cam[:, 2] > 1e-4]
    if len(cam) < 3:
        return 0.0, True
    uv = (cam[:, :2] / cam[:, 2:3]) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    hull = cv2.convexHull(uv.astype(np.float32))
    x0, y0 = hull[:, 0, :].min(axis=0)
    x1, y1 = hull[:, 0, :].max(axis=0)
    truncated = bool(x0 < 0 or y0 < 0 or x1 > width or y1 > height)
    return float(cv2.contourArea(hull)), truncated


def annotate(frame: Frame, state: SceneState, spec: LabelSpec) -> tuple[Instance, ...]:
    """One :class:`Instance` per labelled object that is visible enough; distractors never appear."""
    out = []
    inst = frame.instance
    K = frame.camera.K
    counts = np.bincount(inst[inst >= 0].ravel(), minlength=len(state.objects))
    for i, obj in enumerate(state.objects):
        if obj.category is None or counts[i] == 0 or counts[i] < spec.min_area_px:
            continue
        mask = inst == i
        area = int(counts[i])
        R, t = object_to_camera(obj, frame.world_to_cam)
        full, truncated = amodal_area(obj, R, t, K, frame.camera.width, frame.camera.height)
        visible = 1.0 if full <= 0 else float(min(1.0, area / full))
        if visible < spec.min_visible_fraction:
            continue
        out.append(Instance(object_index=i, category=obj.category, bbox_xyxy=tight_box(mask), mask=mask, area=area,
                            visible_fraction=round(visible, 4), truncated=truncated,
                            pose_R=tuple(tuple(float(x) for x in row) for row in R), pose_t=tuple(float(x) for x in t)))  # type: ignore[arg-type]
    return tuple(out)
