"""Frozen dataclasses exchanged between the stages (sample -> simulate -> render -> annotate -> write)."""
from __future__ import annotations

import functools
from dataclasses import InitVar, dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class MeshDraw:
    """What a mesh body shows, for a renderer that draws the world itself (renderer=gl): the source OBJ, the texture
    file mapped onto it (None: the mesh's own material), and the scale and offset a baked copy holds
    (``simgen.assets.baked_obj``)."""

    mesh: Path
    texture: Path | None
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]


@dataclass(frozen=True)
class ObjectSample:
    """One object to drop: what it is, how it looks, where it starts."""

    asset: str  # asset key, resolved by simgen.assets
    category: str | None  # None: a distractor, never annotated
    scale: float
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]  # xyzw quaternion
    rgba: tuple[float, float, float, float]
    texture: str | None = None  # texture-bank key, None keeps the asset's own look
    linear_velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    angular_velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # An occluder (randomization.occluders): dropped onto object ``anchor`` (an index into SceneSample.objects) once
    # the others have settled; ``position`` is then its start offset from that object's settled position.
    anchor: int | None = None
    mass: float | None = None  # kg (scene.objects.<cat>.mass); None: the physics default for the asset
    label_asset: str | None = None  # how labels name ``asset`` (a set's file by its path within the set); None: as ``asset``

    @property
    def labelled(self) -> bool:
        return self.category is not None


@dataclass(frozen=True)
class TraySample:
    half_extents: tuple[float, float]  # inner floor half size (m)
    wall_height: float
    wall_thickness: float
    floor_texture: str | None
    floor_rgba: tuple[float, float, float, float]
    wall_rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class SceneSample:
    """Everything about a scene that is drawn before physics: pure data, no PyBullet."""

    objects: tuple[ObjectSample, ...]
    ground_texture: str | None
    ground_rgba: tuple[float, float, float, float]
    tray: TraySample | None


@dataclass(frozen=True)
class Camera:
    """Pinhole camera. ``pose`` maps OpenCV camera coordinates to world (4x4)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float]
    near: float
    far: float

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)


@dataclass(frozen=True)
class Light:
    direction: tuple[float, float, float]
    color: tuple[float, float, float]
    distance: float
    ambient: float
    diffuse: float
    specular: float
    shadow: bool


@dataclass(frozen=True)
class Sensor:
    """Effects applied after rendering; they never change labels."""

    noise_std: float = 0.0
    blur_sigma: float = 0.0
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    jpeg_quality: int = 95
    vignette: float = 0.0  # light lost in the image corners (0: none, 0.3: corners at 70%)
    defocus_radius: float = 0.0  # disc (out-of-focus) blur radius, pixels
    motion_length: float = 0.0  # camera-shake streak length, pixels
    motion_angle: float = 0.0  # its direction, degrees
    noise_chroma: float = 1.0  # share of the noise drawn per channel (1) rather than common to all three (0)


@dataclass(frozen=True)
class ViewSample:
    camera: Camera
    light: Light
    sensor: Sensor


@dataclass(frozen=True)
class PlacedObject:
    """An object after physics: its settled pose (URDF link frame, world coordinates)."""

    index: int  # index into SceneSample.objects
    sample: ObjectSample
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    category: str | None  # final label (a scene labeler may read it from the pose)


@dataclass(frozen=True)
class SceneState:
    objects: tuple[PlacedObject, ...]
    sim_steps: int
    settled: bool
    n_dropped: int  # objects that left the region and were removed
    tray: TraySample | None = None
    ground_texture: str | None = None
    ground_rgba: tuple[float, float, float, float] = (1, 1, 1, 1)
    ground_size: float = 2.0


@dataclass(frozen=True, eq=False)
class Frame:
    """One rendered view. ``instance`` holds indices into SceneState.objects, -1 elsewhere."""

    rgb: np.ndarray  # HxWx3 uint8
    depth: np.ndarray | None  # HxW float32, metres along the optical axis (None where no depth was asked for)
    instance: np.ndarray  # HxW int32
    camera: Camera
    world_to_cam: np.ndarray  # 4x4, OpenCV convention (x right, y down, z forward)

    @functools.cached_property
    def columns(self) -> np.ndarray:
        """``instance`` transposed, C-contiguous (WxH): the image's pixels in column-major order, COCO RLE's order.
        Masks are cut from it Fortran-ordered and the writer RLE-encodes every mask from it: one copy a frame, OpenCV's
        blocked transpose (0.04 ms at 640x480 int32, against 0.19 ms for numpy's strided copy; the same array)."""
        m = self.instance
        if m.ndim == 2 and m.dtype == np.int32 and m.size:
            return cv2.transpose(m)
        return np.ascontiguousarray(m.T)

    @functools.cached_property
    def runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, ends, values) of the runs of equal ids along :attr:`columns` flattened (column-major pixel order, COCO
        RLE's): one pass over the map, from which every instance's pixel runs, box and RLE follow (annotate, the writer)."""
        flat = self.columns.ravel()
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [flat.size]))
        return starts, ends, flat[starts]


@dataclass(frozen=True, eq=False)
class Instance:
    object_index: int
    category: str
    bbox_xyxy: tuple[float, float, float, float]
    mask: np.ndarray  # HxW bool, visible pixels (cut from ``mask_source`` on first read where given as None)
    area: int
    visible_fraction: float
    truncated: bool
    pose_R: tuple[tuple[float, ...], ...]  # 3x3 object->camera rotation
    pose_t: tuple[float, float, float]  # metres, the origin of the object's file (mesh or URDF link) in camera frame
    # The whole object projected (occluded and out-of-frame parts included): float pixel xyxy, may reach beyond the
    # image; None only when no point of the object is in front of the camera.
    bbox_amodal: tuple[float, float, float, float] | None = None
    mask_amodal: np.ndarray | None = None  # HxW bool, the projected mesh clipped to the image (labels.amodal_mask)
    scale: float = 1.0  # the object's scale: file units to metres, K (R (scale v) + t) projects its file's vertices v
    asset: str = ""  # the file (or built-in name) whose frame the pose gives: one of several where the group names a set
    # The frame's instance map in column-major order (Frame.columns, WxH). Labels pass mask=None and this: the mask is
    # cut from it on first read. The COCO writer encodes every mask from the map's runs and never reads one, so an
    # image no longer pays a full-image comparison per instance for masks nobody reads (~0.1 ms each at 640x480).
    # Not a field: dataclasses.asdict would copy the whole map into every instance's dict, and replace() reads the mask
    # (cutting it) and leaves the map behind, so replace(inst, mask=None) means no mask.
    mask_source: InitVar[np.ndarray | None] = None

    def __post_init__(self, mask_source: np.ndarray | None) -> None:
        object.__setattr__(self, "_mask_source", mask_source)

    def __getattribute__(self, name: str):
        if name == "mask":
            d = object.__getattribute__(self, "__dict__")
            if d["mask"] is None and d.get("_mask_source") is not None:
                d["mask"] = (d["_mask_source"] == d["object_index"]).T  # Fortran-ordered, as COCO RLE reads it
                d["_mask_source"] = None  # cut once: the instance no longer holds on to the frame's map for it
        return object.__getattribute__(self, name)


@dataclass(frozen=True, eq=False)
class Record:
    """Everything the writers need for one image."""

    index: int
    seed: tuple[int, ...]  # SeedSequence entropy that regenerates this image alone
    rgb: np.ndarray
    depth: np.ndarray | None
    instances: tuple[Instance, ...]
    camera: Camera
    world_to_cam: np.ndarray
    jpeg_quality: int = 95
    stats: dict = field(default_factory=dict)
    # the frame's instance map in column-major order (Frame.columns: WxH int32, indices into the scene's objects, -1
    # elsewhere): every instance's mask is the map == its object_index, so a writer can encode them all in one pass
    # over it (simgen.writers.coco.rles_of). A record whose instances were changed after the map was taken still writes
    # right: the writer takes the map's encoding only for an instance whose pixel count it matches, and encodes the
    # others from their own masks
    instance_columns: np.ndarray | None = None
    instance_runs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # Frame.runs of that map, where taken
