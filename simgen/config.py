"""Plain, validated config objects. Hydra composes a dict at the CLI; :func:`render_config` turns it
into these frozen dataclasses (with one-line errors) and nothing below the CLI sees Hydra."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dists import Dist, dist
from .errors import ConfigError, did_you_mean

MAX_SIZE = 4096
EGL_MAX = (1024, 768)  # PyBullet's EGL offscreen buffer; larger requests are stretched


@dataclass(frozen=True)
class ObjectGroup:
    asset: str
    category: str | None  # None: distractor
    count: Dist
    scale: Dist
    texture: str | None  # texture bank name ("bank", or a scene bank such as "dice"), None: own look
    mass: float | None = None  # kg; None: 4 g for dice, 100 g for anything else
    scale_bins: int = 8  # scales are snapped to this many levels so render-side meshes are reused
    weight: float = 1.0  # share of the labelled objects when they are drawn by weight (see SceneSpec.objects_total)
    # The files `asset` names where it names several (a folder, a glob pattern or a list): each object of the group is
    # one of them, drawn uniformly; () where it names one (then nothing extra is drawn, so such scenes sample as before).
    choices: tuple[str, ...] = ()
    # Each choice as the annotations name it (pose.asset): its path below the folder the set's files share, a built-in
    # as it is, so two machines with the same files in other folders write the same labels.
    choice_names: tuple[str, ...] = ()

    @property
    def assets(self) -> tuple[str, ...]:
        """Every asset the group may draw: its choices, or its one asset."""
        return self.choices or (self.asset,)


@dataclass(frozen=True)
class TraySpec:
    half_extents: Dist  # inner half size, metres
    wall_height: Dist
    wall_thickness: float = 0.01
    probability: float = 1.0
    wall_bias: float = 0.0  # chance that a labelled object (or a cluster) is dropped against a wall, thrown towards it


@dataclass(frozen=True)
class CameraSpec:
    distance: Dist
    tilt_deg: Dist  # angle between optical axis and straight down
    azimuth_deg: Dist
    roll_deg: Dist
    target_jitter: Dist  # metres, applied to x and y of the look-at point
    fov_deg: Dist  # vertical field of view
    K: tuple[float, float, float, float] | None = None  # fixed fx, fy, cx, cy overrides fov
    near: float = 0.05
    far: float = 5.0
    truncation_probability: float = 0.0  # chance per view that the camera shifts so an object is cut by the frame


FACE_ASSETS = ("die", "die_round")  # assets with numbered faces (simgen.assets.DIE_FACES)


@dataclass(frozen=True)
class FaceBalanceSpec:
    """Dice put down with a chosen face up (the dice label is the top face), thrown gently so most stay on it."""

    probability: float  # chance per die; the others tumble from a random orientation as before
    weights: tuple[float, ...]  # faces 1..6
    throw_speed: Dist
    spin: Dist


@dataclass(frozen=True)
class ClusterSpec:
    """Labelled objects dropped in small handfuls onto each other, so they settle touching."""

    probability: float  # chance per scene
    size: Dist  # objects per cluster
    spacing: Dist  # a member starts this many times the sum of its and a neighbour's bounding radii from it


@dataclass(frozen=True)
class SceneSpec:
    name: str
    objects: tuple[ObjectGroup, ...]
    distractors: tuple[ObjectGroup, ...]
    area: tuple[float, float]  # half extents of the drop region (m)
    drop_height: Dist
    camera: CameraSpec
    tray: TraySpec | None = None
    labeler: str = "category"
    max_objects: int = 40
    categories: tuple[str, ...] = ()
    throw_speed: Dist = field(default_factory=lambda: dist(0.0))
    spin: Dist = field(default_factory=lambda: dist(0.0))
    ground_rgba: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0)
    # (bank name, "module:function" from scenes/, how many looks to draw or None for the function's default)
    texture_banks: tuple[tuple[str, str, int | None], ...] = ()
    ground_size: float = 2.0  # unused since the ground fills every view (render.floor_for); accepted so old configs load
    objects_total: Dist | None = None  # labelled objects per scene, categories drawn by weight; None: each group's count
    face_balance: FaceBalanceSpec | None = None
    cluster: ClusterSpec | None = None


@dataclass(frozen=True)
class LightSpec:
    elevation_deg: Dist
    azimuth_deg: Dist
    color_jitter: float
    ambient: Dist
    diffuse: Dist
    specular: Dist
    shadow_probability: float
    extreme_probability: float = 0.0  # chance per view of a very dark, very bright or strongly specular light


@dataclass(frozen=True)
class OccluderSpec:
    """Extra distractors dropped right above labelled objects, so they cover them from the camera."""

    probability: float  # chance per scene
    count: Dist


@dataclass(frozen=True)
class SensorSpec:
    enabled: bool
    noise_std: Dist
    blur_probability: float
    blur_sigma: Dist
    brightness: Dist
    contrast: Dist
    saturation: Dist
    jpeg_quality: Dist
    # lens effects, each on with its probability (see simgen.sensor); defaults: off
    vignette_probability: float = 0.0
    vignette: Dist = field(default_factory=lambda: dist(0.0))  # corner light loss, 0..1
    defocus_probability: float = 0.0
    defocus_radius: Dist = field(default_factory=lambda: dist(0.0))  # pixels
    motion_blur_probability: float = 0.0
    motion_blur_length: Dist = field(default_factory=lambda: dist(0.0))  # pixels
    noise_chroma: Dist = field(default_factory=lambda: dist(1.0))  # 1: independent noise per channel, 0: grey noise


@dataclass(frozen=True)
class RandomizationSpec:
    colors: bool
    color_value: Dist  # HSV value (brightness) range of random object tints
    color_saturation: Dist
    textures: bool
    texture_kinds: tuple[str, ...]
    textures_per_kind: int
    texture_dir: str | None
    texture_probability: float
    bank_seed: int
    ground: bool
    ground_value: Dist
    ground_texture_probability: float
    light: LightSpec | None
    sensor: SensorSpec
    distractors: bool
    occluders: OccluderSpec | None = None
    ground_kinds: tuple[str, ...] = ("solid", "noise", "checker", "stripes")  # texture kinds of the ground bank
    ground_saturation: Dist = field(default_factory=lambda: dist([0.0, 0.3]))  # HSV saturation of ground tints


@dataclass(frozen=True)
class PhysicsSpec:
    timestep: float = 1 / 240
    max_steps: int = 2400
    linear_threshold: float = 0.01  # m/s
    angular_threshold: float = 0.2  # rad/s
    check_every: int = 8
    quiet_checks: int = 3
    solver_iterations: int = 20  # Bullet's default 50 costs 2x per step; resting dice do not need it
    # Put a body to sleep once it has been calm for this many checks in a row (0: never). Bullet then skips it
    # (no integration, no contact solve with the floor or other sleepers) until something active touches it and
    # wakes it. Bullet's own sleeping waits 2 s, longer than most settles. benchmarks/physics_settle.py.
    sleep_after: int = 2
    placement_retries: int = 20  # redraws of an unplaceable or exploded scene, each from [seed, i, attempt]


@dataclass(frozen=True)
class LabelSpec:
    min_visible_fraction: float = 0.1
    min_area_px: int = 16
    depth: str | None = None  # None | "png16" | "npy"
    semantic: bool = False
    # Box convention of the labels the model will be scored against: `tight` (the mask's extent) or
    # `square` (the tight box grown to a square about its centre, clipped to the image), for holdouts
    # whose annotators drew squares around cubes such as dice (`simgen fit` detects it).
    box: str = "tight"
    # Pixels added to each side of every box (after `square`), clipped to the image: the padding annotators leave
    # around objects (`simgen fit` measures it on the real photos). Masks and areas stay exact.
    box_pad_px: float = 0.0
    # `segmentation_amodal`: the whole object's projected mesh as an RLE mask (occluded parts included, clipped to the
    # image). Off by default: it costs a rasterization per object, while `bbox_amodal` is always written.
    amodal_mask: bool = False


@dataclass(frozen=True)
class RenderConfig:
    scene: SceneSpec
    randomization: RandomizationSpec
    physics: PhysicsSpec
    labels: LabelSpec
    renderer: str = "tiny"  # tiny | egl | auto (resolved to one of the two when a run starts: simgen.render.choose_renderer)
    renderer_note: str | None = None  # why `auto` chose what it chose (manifest)
    n_images: int = 100
    seed: int = 0
    out: Path = Path("datasets/dice")
    width: int = 640
    height: int = 640
    image_format: str = "jpg"
    writer: str = "coco"
    workers: int = 1
    # settle the next scenes in a process beside each render process: true | false | "auto" (two cores per render
    # process, 32+ scenes each, simgen's own command line). Same labels either way (simgen.feeder)
    physics_process: bool | str = "auto"
    shard_index: int = 0
    shard_count: int = 1
    views_per_scene: int = 1
    overwrite: bool = False
    progress: bool = True
    egl_devices: tuple[int, ...] | None = None
    resolved: dict = field(default_factory=dict, compare=False)  # the composed config, for the manifest


def _req(d: dict, key: str, where: str) -> Any:
    if key not in d or d[key] is None:
        raise ConfigError(f"{where}.{key} is missing; set it in the config or with `{where}.{key}=...`.")
    return d[key]


# ---------------------------------------------------------------------------- typed checks
# Every scalar the CLI accepts goes through one of these: a wrong type or range is one line,
# "<field> must be ..., got ...; e.g. <field>=...", raised before anything is written.

SEED_MAX = 2**63 - 1  # numpy's SeedSequence refuses negatives; torch.manual_seed wants < 2**63
TEXTURE_KINDS = ("solid", "noise", "checker", "stripes", "felt", "wood", "paper", "fabric", "concrete", "marble")  # = textures.KINDS


def hydra_value(v: Any) -> str:
    """``v`` written as a command-line override value (for the ``e.g.`` part of a message)."""
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(x)}" for k, x in v.items()) + "}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def bad_value(name: str, want: str, got: Any, example: Any) -> ConfigError:
    return ConfigError(f"{name} must be {want}, got {got!r}; e.g. {name}={hydra_value(example)}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def _in_range(v: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> bool:
    return not ((lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and (v > hi or (hi_open and v == hi))))


def check_int(v: Any, name: str, example: Any, lo: int | None = None, hi: int | None = None, optional: bool = False) -> int | None:
    """An int (never a bool or a float) in [lo, hi]; None only when optional."""
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not _in_range(v, lo, hi, False, False):
        rng = f"from {lo} to {hi}" if lo is not None and hi is not None and hi - lo < 10**6 else \
            " and ".join(t for t in (f">= {lo}" if lo is not None else "", "< 2**63" if hi == SEED_MAX else
                                     (f"<= {hi}" if hi is not None else "")) if t)
        raise bad_value(name, f"an integer {rng}".strip() + (" or null" if optional else ""), v, example)
    return v


def check_float(v: Any, name: str, example: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False, optional: bool = False) -> float | None:
    """A finite int or float (never a bool or a string) in the given range; None only when optional."""
    if v is None and optional:
        return None
    if not _is_num(v) or not _in_range(v, lo, hi, lo_open, hi_open):
        raise bad_value(name, f"a number {_range_text(lo, hi, lo_open, hi_open)}".strip() + (" or null" if optional else ""), v, example)
    return float(v)


def check_prob(v: Any, name: str, example: Any) -> float:
    """A probability or fraction in [0, 1]."""
    return check_float(v, name, example, 0.0, 1.0)  # type: ignore[return-value]


def check_bool(v: Any, name: str, example: Any = True) -> bool:
    if not isinstance(v, bool):
        raise bad_value(name, "true or false", v, example)
    return v


def check_choice(v: Any, name: str, options: tuple, example: Any = None) -> Any:
    if v not in options or isinstance(v, bool) and not any(o is v for o in options):
        shown = ", ".join("null" if o is None else str(o) for o in options)
        raise bad_value(name, f"one of {shown}", v, options[0] if example is None else example)
    return v


def check_str(v: Any, name: str, example: Any, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v:
        raise bad_value(name, "a non-empty string" + (" or null" if optional else ""), v, example)
    return v


def check_numbers(v: Any, name: str, example: Any, n: int, lo: float | None = None, hi: float | None = None,
                  lo_open: bool = False) -> tuple[float, ...]:
    """A list of exactly ``n`` numbers, each in range."""
    if not isinstance(v, (list, tuple)) or len(v) != n or not all(_is_num(x) and _in_range(x, lo, hi, lo_open, False) for x in v):
        rng = _range_text(lo, hi, lo_open, False)
        raise bad_value(name, f"a list of {n} numbers" + (f" each {rng}" if rng else ""), v, example)
    return tuple(float(x) for x in v)


def _leaves(spec: Any) -> list:
    """The numbers a distribution's config form holds (not choice weights)."""
    if isinstance(spec, dict):
        return [x for k, a in spec.items() if k != "p" for x in (a if isinstance(a, (list, tuple)) else [a])]
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def check_dist(v: Any, name: str, example: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
               hi_open: bool = False, integer: bool = False) -> Dist:
    """A value or distribution (see :mod:`simgen.dists`) whose every number is in range."""
    rng = _range_text(lo, hi, lo_open, hi_open)
    want = (f"{'an integer' if integer else 'a number'} or a range [low, high]" + (f" {rng}" if rng else "")
            + " (or a distribution such as {uniform: [low, high]})")
    leaves = _leaves(v)
    if not leaves or not all(_is_num(x) and _in_range(x, lo, hi, lo_open, hi_open) and (not integer or float(x).is_integer())
                             for x in leaves):
        raise bad_value(name, want, v, example)
    try:
        return dist(v, integer=integer, name=name)
    except (TypeError, ValueError, IndexError, KeyError):
        raise bad_value(name, want, v, example) from None
    except ConfigError as e:  # the distribution's own check (a reversed range): say which key holds it
        msg = str(e)
        raise ConfigError(msg if name in msg else f"{name}: {msg}") from None


class Fields:
    """One config mapping, read key by key through the checks above; keys it does not know are refused."""

    def __init__(self, d: Any, where: str, allowed: Any, example: str = "") -> None:
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise bad_value(where, "a mapping", d, example or "{...}")
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            k = str(unknown[0])
            raise ConfigError(f"unknown key `{self._join(where, k)}`." + did_you_mean(k, [str(a) for a in allowed]))
        self.d, self.where = d, where

    @staticmethod
    def _join(where: str, key: str) -> str:
        return f"{where}.{key}" if where else key

    def name(self, key: str) -> str:
        return self._join(self.where, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self.d.get(key, default)

    def integer(self, key: str, default: Any, lo: int | None = None, hi: int | None = None, optional: bool = False, example: Any = None):
        return check_int(self.d.get(key, default), self.name(key), default if example is None else example, lo, hi, optional)

    def number(self, key: str, default: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
              hi_open: bool = False, optional: bool = False, example: Any = None):
        return check_float(self.d.get(key, default), self.name(key), default if example is None else example, lo, hi, lo_open,
                           hi_open, optional)

    def prob(self, key: str, default: float) -> float:
        return check_prob(self.d.get(key, default), self.name(key), default)

    def flag(self, key: str, default: bool) -> bool:
        return check_bool(self.d.get(key, default), self.name(key), default)

    def choice(self, key: str, default: Any, options: tuple) -> Any:
        return check_choice(self.d.get(key, default), self.name(key), options, default)

    def text(self, key: str, default: Any, optional: bool = False, example: Any = None):
        return check_str(self.d.get(key, default), self.name(key), default if example is None else example, optional)

    def dist(self, key: str, default: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
             hi_open: bool = False, integer: bool = False) -> Dist:
        return check_dist(self.d.get(key, default), self.name(key), default, lo, hi, lo_open, hi_open, integer)


GROUP_KEYS = ("asset", "category", "count", "scale", "texture", "mass", "scale_bins", "weight")
SCENE_KEYS = ("name", "labeler", "categories", "texture_banks", "objects", "distractors", "area", "ground_size", "drop_height",
              "throw_speed", "spin", "tray", "camera", "max_objects", "ground_rgba", "objects_total", "face_balance", "cluster")
CAMERA_KEYS = ("distance", "tilt_deg", "azimuth_deg", "roll_deg", "target_jitter", "fov_deg", "K", "near", "far", "truncation_probability")
TRAY_KEYS = ("half_extents", "wall_height", "wall_thickness", "probability", "wall_bias")
FACE_BALANCE_KEYS = ("probability", "weights", "throw_speed", "spin")
CLUSTER_KEYS = ("probability", "size", "spacing")
OCCLUDER_KEYS = ("probability", "count")
RANDOMIZATION_KEYS = ("colors", "color_value", "color_saturation", "textures", "texture_kinds", "textures_per_kind", "texture_dir",
                      "texture_probability", "bank_seed", "ground", "ground_value", "ground_texture_probability", "distractors",
                      "light", "sensor", "occluders", "ground_kinds", "ground_saturation")
LIGHT_KEYS = ("enabled", "elevation_deg", "azimuth_deg", "color_jitter", "ambient", "diffuse", "specular", "shadow_probability",
              "extreme_probability")
SENSOR_KEYS = ("enabled", "noise_std", "blur_probability", "blur_sigma", "brightness", "contrast", "saturation", "jpeg_quality",
               "noise_chroma", "vignette_probability", "vignette", "defocus_probability", "defocus_radius", "motion_blur_probability",
               "motion_blur_length")
TOP_KEYS = ("scene", "renderer", "randomization", "writer", "n_images", "seed", "out", "width", "height", "image_format", "workers",
            "physics_process", "views_per_scene", "overwrite", "progress", "shard", "physics", "labels", "hydra")


def asset_set(v: Any, key: str) -> tuple[str, tuple[str, ...]]:
    """``asset`` as written, and the files it names where it names several: a list of assets, a folder (the mesh and
    URDF files directly in it) or a glob pattern (``/data/mugs/*.obj``, ``ycb/**/textured.obj``); () for one asset. Files
    are absolute paths in the order of their paths as matched, so every worker and shard draws the same ones. Hidden
    files are left out, and so are meshes a URDF of the same set names (its visual or collision meshes are parts of it,
    not objects). A folder or pattern that names none is one line."""
    import glob

    items = list(v) if isinstance(v, (list, tuple)) else [v]
    if not items:
        raise bad_value(key, "an asset: a built-in name, a mesh or URDF path, a folder of them, a glob pattern or a list", v, "box")
    names = [check_str(x, key, "box") for x in items]
    out: list[str] = []
    for n in names:
        p = Path(n).expanduser()
        if p.is_file():  # a literal path, whatever characters it holds ("models [v2]/m.obj")
            out.append(str(p.resolve()) if len(names) > 1 else n)
            continue
        if any(ch in n for ch in "*?[") and not p.exists():
            found = sorted(glob.glob(str(p), recursive=True))
        elif p.is_dir():
            found = sorted(str(q) for q in p.iterdir())
        else:
            out.append(n)
            continue
        from .assets import ASSET_FILE_SUFFIXES  # only here: a folder or pattern to pick mesh and URDF files from

        files = [str(Path(q).resolve()) for q in found
                 if Path(q).suffix.lower() in ASSET_FILE_SUFFIXES and not Path(q).name.startswith(".") and Path(q).is_file()]
        files = _without_urdf_parts(files)
        if not files:
            deeper = "" if any(ch in n for ch in "*?[") else f" directly in the folder; a pattern such as {p / '**' / '*.obj'} looks deeper"
            raise ConfigError(f"{key}: `{n}` names no mesh or URDF file (it looks for {', '.join(ASSET_FILE_SUFFIXES)}{deeper}); "
                              "check the folder or pattern.")
        out += files
    out = list(dict.fromkeys(out))
    if len(names) == 1 and out == names:
        return names[0], ()
    return ", ".join(names), tuple(out)


def _without_urdf_parts(files: list[str]) -> list[str]:
    """``files`` less the meshes a URDF among them names (a pybullet_data-style folder: duck.urdf beside duck.obj and its
    collision hull duck_vhacd.obj is one object, not three)."""
    urdfs = [f for f in files if f.lower().endswith(".urdf")]
    if not urdfs:
        return files
    from .assets import _urdf_mesh_files, urdf_mesh_path
    from .errors import AssetError

    parts: set[str] = set()
    for u in urdfs:
        try:
            meshes = _urdf_mesh_files(Path(u))
        except (AssetError, OSError):
            continue  # resolve() says what is wrong with it
        parts |= {str(q) for q in (urdf_mesh_path(Path(u), m) for m in meshes) if q is not None}
    return [f for f in files if f not in parts]


def set_names(choices: tuple[str, ...]) -> tuple[str, ...]:
    """A set's files by their paths below the folder they share (``ycb/**/textured.obj``: ``002_master_chef_can/...``),
    POSIX-style, built-in names as they are: the same set reached from another folder, or from another system, names
    alike (the annotations' pose.asset, the resume hash)."""
    from pathlib import PurePath

    files = [c for c in choices if os.path.isabs(c)]
    try:
        root = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0]) if files else ""
    except ValueError:  # files on two drives share no folder
        root = None
    return tuple(PurePath(os.path.relpath(c, root) if root is not None else os.path.basename(c)).as_posix() if os.path.isabs(c)
                 else c for c in choices)


def _group(d: dict, where: str, distractor: bool) -> ObjectGroup:
    f = Fields(d, where, GROUP_KEYS, example="{asset: die, category: die, count: [1, 5]}")
    asset, choices = asset_set(_req(d, "asset", where), f"{where}.asset")
    if choices and not distractor and d.get("category") is None:
        raise ConfigError(f"{where}: `asset` names several meshes, so the group needs a category name; add category: <name> "
                          "(or give the group as scene.objects.<name>).")
    if distractor and d.get("category") is not None:  # it was accepted and ignored: a distractor is never labelled
        raise ConfigError(f"{where}.category: distractors are never labelled, so they have no category; remove it, or move the "
                          "group under scene.objects to label it.")
    category = None if distractor else str(d.get("category") or asset)
    return ObjectGroup(asset=asset, category=category, count=f.dist("count", 1, lo=0, integer=True),  # type: ignore[arg-type]
                       scale=f.dist("scale", 1.0, lo=0, lo_open=True), texture=f.text("texture", None, optional=True, example="bank"),
                       mass=f.number("mass", None, lo=0, lo_open=True, optional=True, example=0.1), scale_bins=f.integer("scale_bins", 8, lo=1),
                       weight=_weight(f, distractor), choices=choices, choice_names=set_names(choices))


def _weight(f: Fields, distractor: bool) -> float:
    if distractor and "weight" in f.d:
        raise ConfigError(f"{f.name('weight')}: weights balance labelled categories only; remove it from the distractor, "
                          "or move the group under scene.objects.")
    return f.number("weight", 1.0, lo=0)  # type: ignore[return-value]


def _groups(v: Any, where: str, distractor: bool) -> tuple[ObjectGroup, ...]:
    if v is None:
        return ()
    if not isinstance(v, (dict, list, tuple)):
        raise bad_value(where, "a mapping of object groups" if not distractor else "a list of object groups", v,
                        "{asset: box, count: [0, 2]}" if distractor else "{die: {asset: die, count: [1, 5]}}")
    items = v.items() if isinstance(v, dict) else enumerate(v)
    out = []
    for k, g in items:
        if isinstance(v, dict) and g is None:
            continue  # `<name>: null`: how an overlay takes out a group the scene has (the overlay merges over the scene)
        if isinstance(v, dict) and isinstance(g, dict) and not distractor and "category" not in g:
            g = {**g, "category": k}  # mapping form: the key names the category
        out.append(_group(g, f"{where}.{k}", distractor))
    return tuple(out)


def scene_spec(d: dict) -> SceneSpec:
    where = "scene"
    f = Fields(d, where, SCENE_KEYS, example="dice")
    c = Fields(_req(d, "camera", where), "scene.camera", CAMERA_KEYS)
    K = c.get("K")
    if K is not None:
        K = check_numbers(K, "scene.camera.K", [500, 500, 320, 320], 4, lo=0, lo_open=True)
    camera = CameraSpec(
        distance=check_dist(_req(c.d, "distance", "scene.camera"), "scene.camera.distance", [0.3, 0.5], lo=0, lo_open=True),
        tilt_deg=c.dist("tilt_deg", 0.0, lo=-90, hi=90), azimuth_deg=c.dist("azimuth_deg", [0, 360]),
        roll_deg=c.dist("roll_deg", 0.0), target_jitter=c.dist("target_jitter", 0.0, lo=0),
        fov_deg=c.dist("fov_deg", 60.0, lo=0, hi=180, lo_open=True, hi_open=True),
        K=K, near=c.number("near", 0.05, lo=0, lo_open=True), far=c.number("far", 5.0, lo=0, lo_open=True),  # type: ignore[arg-type]
        truncation_probability=c.prob("truncation_probability", 0.0))
    if camera.far <= camera.near:
        raise ConfigError(f"scene.camera needs 0 < near < far, got near={camera.near}, far={camera.far}; e.g. scene.camera.far={camera.near * 40:g}")
    objects = _groups(d.get("objects"), "scene.objects", False)
    if not objects:
        raise ConfigError("scene.objects is empty: a scene needs at least one labelled object group.")
    tray_spec = None
    if d.get("tray"):
        t = Fields(d["tray"], "scene.tray", TRAY_KEYS, example="{half_extents: [0.12, 0.18]}")
        tray_spec = TraySpec(check_dist(_req(t.d, "half_extents", "scene.tray"), "scene.tray.half_extents", [0.12, 0.18], lo=0, lo_open=True),
                             t.dist("wall_height", 0.03, lo=0, lo_open=True), t.number("wall_thickness", 0.01, lo=0, lo_open=True),  # type: ignore[arg-type]
                             t.prob("probability", 1.0), t.prob("wall_bias", 0.0))
    area = check_numbers(_req(d, "area", where), "scene.area", [0.1, 0.1], 2, lo=0, lo_open=True)
    cats = d.get("categories")
    if cats is not None and (not isinstance(cats, (list, tuple)) or not all(isinstance(x, str) and x for x in cats)):
        raise bad_value("scene.categories", "a list of category names or null", cats, ["one", "two"])
    categories = tuple(cats or dict.fromkeys(g.category for g in objects))
    banks = d.get("texture_banks") or {}
    if not isinstance(banks, dict):
        raise bad_value("scene.texture_banks", 'a mapping {bank name: "module:function"}', banks, "{dice: dice:textures}")
    bank_refs = tuple(_bank_ref(str(k), v) for k, v in banks.items())
    for kind, groups in (("objects", objects), ("distractors", _groups(d.get("distractors"), "scene.distractors", True))):
        for g in groups:  # a misspelt bank used to draw the object untextured while labels still trusted its look
            if g.texture is not None and g.texture != "bank" and g.texture not in banks:
                known = ["bank", *banks]
                raise ConfigError(f"scene.{kind}: texture `{g.texture}` of `{g.category or g.asset}` is not a texture bank; use one of "
                                  f"{', '.join(known)} (or null for the asset's own look)." + did_you_mean(g.texture, known))
    return SceneSpec(name=f.text("name", None, example="dice"), objects=objects,  # type: ignore[arg-type]
                     distractors=_groups(d.get("distractors"), "scene.distractors", True), area=area,  # type: ignore[arg-type]
                     drop_height=f.dist("drop_height", [0.05, 0.15], lo=0), camera=camera, tray=tray_spec,
                     labeler=f.text("labeler", "category"), max_objects=f.integer("max_objects", 40, lo=1),  # type: ignore[arg-type]
                     categories=categories, throw_speed=f.dist("throw_speed", 0.0, lo=0), spin=f.dist("spin", 0.0, lo=0),
                     ground_rgba=check_numbers(f.get("ground_rgba", (0.8, 0.8, 0.8, 1.0)), "scene.ground_rgba", [0.8, 0.8, 0.8, 1], 4,
                                               lo=0, hi=1),  # type: ignore[arg-type]
                     ground_size=f.number("ground_size", 2.0, lo=0, lo_open=True),  # type: ignore[arg-type]
                     texture_banks=bank_refs,
                     **_targeted(f, objects, f.integer("max_objects", 40, lo=1)))  # type: ignore[arg-type]


def _most(d: Any) -> float:
    """The largest value a count distribution draws (a normal: its mean + 3 std)."""
    if hasattr(d, "options"):
        return float(max(d.options))
    if hasattr(d, "std"):
        return float(d.mean + 3 * d.std)
    return float(d.max)


def _bank_ref(name: str, v: Any) -> tuple[str, str, int | None]:
    """One scene texture bank: ``"module:function"``, or ``{ref: "module:function", count: N}`` to draw N looks (a
    larger bank covers more of the real objects' looks; the function takes ``n``)."""
    where = f"scene.texture_banks.{name}"
    if isinstance(v, str):
        return name, v, None
    if isinstance(v, dict):
        f = Fields(v, where, ("ref", "count"))
        return name, f.text("ref", None, example="dice:textures"), f.integer("count", None, lo=1, optional=True, example=192)
    raise bad_value(where, '"module:function" or {ref: "module:function", count: <looks>}', v, '{ref: "dice:textures", count: 192}')


def _targeted(f: Fields, objects: tuple[ObjectGroup, ...], max_objects: int) -> dict[str, Any]:
    """The scene's targeted-generation keys (docs/targeted.md): class weights, dice face balance, clusters."""
    raw = f.get("objects_total")
    total = None if raw is None else f.dist("objects_total", [4, 8], lo=0, integer=True)
    if raw is not None and max(_leaves(raw)) > max_objects:  # any form: a range, {randint: ...}, {choice: ...}
        raise ConfigError(f"scene.objects_total allows {max(_leaves(raw)):g} objects but scene.max_objects is {max_objects}; "
                          f"lower scene.objects_total or raise the cap: +scene.max_objects=<n>.")
    most = sum(_most(g.count) for g in objects)
    if raw is None and most > max_objects:
        # A scene is cut to max_objects objects in config order, so the last categories were silently never drawn
        # (40 of `a` and 5 of `b`: every image had 40 a's and no b); distractors come after and are cut first
        cut, upto = [], 0.0
        for g in objects:
            before, upto = upto, upto + _most(g.count)
            if upto > max_objects:
                cut.append(f"`{g.category}`" if before >= max_objects else f"some of `{g.category}`")
        raise ConfigError(f"scene.objects' counts allow {most:g} labelled objects an image but scene.max_objects is {max_objects}: "
                          f"crowded images would lose {', '.join(cut)}; lower the counts or raise the cap: +scene.max_objects=<n>.")
    if (total is not None or any(g.weight != 1 for g in objects)) and not sum(g.weight for g in objects) > 0:
        raise ConfigError("every scene.objects.*.weight is 0: give at least one category a weight > 0, e.g. scene.objects.<name>.weight=1")
    fb = None
    if f.get("face_balance") is not None:
        b = Fields(f.get("face_balance"), "scene.face_balance", FACE_BALANCE_KEYS, example="{probability: 1.0}")
        weights = check_numbers(b.get("weights", [1] * 6), "scene.face_balance.weights", [1, 1, 1, 1, 1, 1], 6, lo=0)
        if not sum(weights) > 0:
            raise bad_value("scene.face_balance.weights", "6 weights (faces 1..6), at least one > 0", list(weights), [1, 1, 1, 1, 1, 1])
        fb = FaceBalanceSpec(probability=b.prob("probability", 0.0), weights=weights,
                             throw_speed=b.dist("throw_speed", [0.0, 0.05], lo=0), spin=b.dist("spin", [0.0, 1.0], lo=0))
        if fb.probability > 0 and not any(set(g.assets) <= set(FACE_ASSETS) for g in objects):
            raise ConfigError(f"scene.face_balance needs dice: no scene.objects group has asset {' or '.join(FACE_ASSETS)}; "
                              "set scene.face_balance.probability=0.")
    cl = None
    if f.get("cluster") is not None:
        c = Fields(f.get("cluster"), "scene.cluster", CLUSTER_KEYS, example="{probability: 0.5}")
        cl = ClusterSpec(probability=c.prob("probability", 0.0), size=c.dist("size", [2, 4], lo=1, integer=True),
                         spacing=c.dist("spacing", [0.7, 1.0], lo=0))
    return {"objects_total": total, "face_balance": fb, "cluster": cl}


def randomization_spec(d: dict) -> RandomizationSpec:
    f = Fields(d, "randomization", RANDOMIZATION_KEYS, example="default")
    lt = Fields(f.get("light"), "randomization.light", LIGHT_KEYS)
    light = None if not lt.flag("enabled", True) else LightSpec(
        elevation_deg=lt.dist("elevation_deg", [35, 90], lo=-90, hi=90), azimuth_deg=lt.dist("azimuth_deg", [0, 360]),
        color_jitter=lt.prob("color_jitter", 0.15), ambient=lt.dist("ambient", [0.5, 0.9], lo=0),
        diffuse=lt.dist("diffuse", [0.3, 0.6], lo=0), specular=lt.dist("specular", [0.0, 0.3], lo=0),
        shadow_probability=lt.prob("shadow_probability", 0.5), extreme_probability=lt.prob("extreme_probability", 0.0))
    s = Fields(f.get("sensor"), "randomization.sensor", SENSOR_KEYS)
    sensor = SensorSpec(enabled=s.flag("enabled", True), noise_std=s.dist("noise_std", [0, 2.5], lo=0),
                        blur_probability=s.prob("blur_probability", 0.3), blur_sigma=s.dist("blur_sigma", [0.3, 1.2], lo=0),
                        brightness=s.dist("brightness", [0.85, 1.15], lo=0), contrast=s.dist("contrast", [0.85, 1.15], lo=0),
                        saturation=s.dist("saturation", [0.8, 1.2], lo=0), jpeg_quality=s.dist("jpeg_quality", [70, 95], lo=1, hi=100, integer=True),
                        noise_chroma=s.dist("noise_chroma", [0.2, 1.0], lo=0, hi=1),
                        vignette_probability=s.prob("vignette_probability", 0.5), vignette=s.dist("vignette", [0.05, 0.35], lo=0, hi=1),
                        defocus_probability=s.prob("defocus_probability", 0.15),
                        defocus_radius=s.dist("defocus_radius", [0.5, 1.5], lo=0, hi=MAX_BLUR_PX),
                        motion_blur_probability=s.prob("motion_blur_probability", 0.1),
                        motion_blur_length=s.dist("motion_blur_length", [1.0, 3.0], lo=0, hi=MAX_BLUR_PX))
    kinds = _kinds(f, "texture_kinds", list(TEXTURE_KINDS[:4]))
    return RandomizationSpec(
        colors=f.flag("colors", True), color_value=f.dist("color_value", [0.2, 1.0], lo=0, hi=1),
        color_saturation=f.dist("color_saturation", [0.0, 1.0], lo=0, hi=1), textures=f.flag("textures", True),
        texture_kinds=kinds, textures_per_kind=f.integer("textures_per_kind", 6, lo=1),  # type: ignore[arg-type]
        texture_dir=f.text("texture_dir", None, optional=True, example="/data/textures"),
        texture_probability=f.prob("texture_probability", 0.5), bank_seed=f.integer("bank_seed", 0, lo=0, hi=SEED_MAX),  # type: ignore[arg-type]
        ground=f.flag("ground", True), ground_value=f.dist("ground_value", [0.4, 1.0], lo=0, hi=1),
        ground_texture_probability=f.prob("ground_texture_probability", 0.8),
        light=light, sensor=sensor, distractors=f.flag("distractors", True), occluders=_occluders(f.get("occluders")),
        ground_kinds=_kinds(f, "ground_kinds", list(TEXTURE_KINDS)),
        ground_saturation=f.dist("ground_saturation", [0.0, 0.2], lo=0, hi=1))


MAX_BLUR_PX = 20.0  # defocus radius / motion streak cap: larger kernels cost more than the render and blot out dice


def _kinds(f: Fields, key: str, default: list) -> tuple[str, ...]:
    """A non-empty list of texture kinds (randomization.texture_kinds, randomization.ground_kinds)."""
    kinds = f.get(key)
    kinds = default if kinds is None else kinds
    if not isinstance(kinds, (list, tuple)) or not kinds or not all(isinstance(k, str) and k in TEXTURE_KINDS for k in kinds):
        raise bad_value(f.name(key), f"a non-empty list drawn from {', '.join(TEXTURE_KINDS)}", kinds, default[:2])
    return tuple(dict.fromkeys(kinds))  # a kind listed twice would only repeat the same bank entries


def occluders_fit(r: RandomizationSpec, scene: SceneSpec) -> RandomizationSpec:
    """Occluders are drawn from the scene's distractor groups: a scene without any cannot have them."""
    if r.occluders is not None and r.occluders.probability > 0 and not scene.distractors:
        raise ConfigError(f"randomization.occluders are drawn from scene.distractors, which scene `{scene.name}` has none of; "
                          "add a distractor group or set randomization.occluders.probability=0.")
    return r


def _occluders(v: Any) -> OccluderSpec | None:
    if v is None:
        return None
    o = Fields(v, "randomization.occluders", OCCLUDER_KEYS, example="{probability: 0.5, count: [1, 3]}")
    return OccluderSpec(probability=o.prob("probability", 0.0), count=o.dist("count", [1, 3], lo=0, integer=True))


def _named(v: Any, key: str, options: tuple, extra: tuple, default: str) -> tuple[Any, Fields]:
    """A group given as its name (`writer=coco`) or as its mapping ({name: coco, ...})."""
    f = Fields(v if isinstance(v, dict) else {"name": v}, key, ("name", *extra), example=default)
    return check_choice(f.get("name", default), key, options, default), f


def render_config(d: dict) -> RenderConfig:
    """Validate the composed config dict and build the plain config objects: every field is checked for type and range, and
    unknown keys are refused, before anything is written."""
    top = Fields({k: v for k, v in d.items() if k != "hydra"}, "", TOP_KEYS[:-1])  # `hydra` is Hydra's own node: allowed, not listed
    n = top.integer("n_images", 100, lo=1)
    seed = top.integer("seed", 0, lo=0, hi=SEED_MAX)
    w = top.integer("width", 640, lo=16, hi=MAX_SIZE)
    h = top.integer("height", 640, lo=16, hi=MAX_SIZE)
    renderer, rf = _named(d.get("renderer", "tiny"), "renderer", ("auto", "tiny", "egl", "gl"), ("devices",), "auto")
    if renderer == "egl" and (w > EGL_MAX[0] or h > EGL_MAX[1]):
        raise ConfigError(f"renderer=egl renders at most {EGL_MAX[0]}x{EGL_MAX[1]} (PyBullet's fixed EGL buffer) and would stretch "
                          f"{w}x{h} silently; lower width/height or use renderer=tiny.")
    egl = rf.get("devices")
    if egl is not None:
        egl = [egl] if isinstance(egl, int) and not isinstance(egl, bool) else egl
        if not isinstance(egl, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in egl):
            raise bad_value("renderer.devices", "a list of EGL device indices (integers >= 0) or null", rf.get("devices"), [0, 1])
    fmt = d.get("image_format", "jpg")
    fmt = check_choice(fmt.lower() if isinstance(fmt, str) else fmt, "image_format", ("jpg", "png"))
    shard = Fields(d.get("shard"), "shard", ("index", "count"), example="{index: 0, count: 2}")
    si, sc = shard.integer("index", 0, lo=0), shard.integer("count", 1, lo=1)
    if not si < sc:
        raise ConfigError(f"shard.index must be in [0, shard.count), got index={si}, count={sc}; e.g. shard.index={sc - 1}")
    workers = d.get("workers", "auto")
    if workers is None or workers == "auto":
        from .train.threads import usable_cores  # no torch: the affinity mask, capped by a container's CPU quota

        workers = usable_cores()
    elif workers == 0 and not isinstance(workers, bool):
        raise bad_value("workers", "an integer >= 1 or auto (0 is not `all cores`: use workers=auto for that)", workers, "auto")
    elif not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise bad_value("workers", "an integer >= 1 or auto (all usable cores)", workers, "auto")
    physics_process = d.get("physics_process", "auto")
    if physics_process not in (True, False, "auto") or isinstance(physics_process, int) and not isinstance(physics_process, bool):
        raise bad_value("physics_process", "true, false or auto", physics_process, "auto")
    vps = top.integer("views_per_scene", 1, lo=1)
    lab = Fields(d.get("labels"), "labels", LabelSpec.__dataclass_fields__)
    labels = LabelSpec(min_visible_fraction=lab.prob("min_visible_fraction", 0.1), min_area_px=lab.integer("min_area_px", 16, lo=0),  # type: ignore[arg-type]
                       depth=lab.choice("depth", None, (None, "png16", "npy")), semantic=lab.flag("semantic", False),
                       box=lab.choice("box", "tight", ("tight", "square")), amodal_mask=lab.flag("amodal_mask", False),
                       box_pad_px=lab.number("box_pad_px", 0.0, lo=0, hi=64, example=3.0))
    ph = Fields(d.get("physics"), "physics", PhysicsSpec.__dataclass_fields__)
    p0 = PhysicsSpec()
    physics = PhysicsSpec(
        timestep=ph.number("timestep", p0.timestep, lo=0, hi=0.1, lo_open=True, example=0.004166666666666667),  # type: ignore[arg-type]
        max_steps=ph.integer("max_steps", p0.max_steps, lo=1), linear_threshold=ph.number("linear_threshold", p0.linear_threshold, lo=0, lo_open=True),  # type: ignore[arg-type]
        angular_threshold=ph.number("angular_threshold", p0.angular_threshold, lo=0, lo_open=True),  # type: ignore[arg-type]
        check_every=ph.integer("check_every", p0.check_every, lo=1), quiet_checks=ph.integer("quiet_checks", p0.quiet_checks, lo=1),  # type: ignore[arg-type]
        solver_iterations=ph.integer("solver_iterations", p0.solver_iterations, lo=1),  # type: ignore[arg-type]
        sleep_after=ph.integer("sleep_after", p0.sleep_after, lo=0),  # type: ignore[arg-type]
        placement_retries=ph.integer("placement_retries", p0.placement_retries, lo=0))  # type: ignore[arg-type]
    writer, wf = _named(d.get("writer", "coco"), "writer", ("coco", "webdataset", "yolo"), ("shard_size", "segments", "val_fraction"), "coco")
    wf.integer("shard_size", 1000, lo=1)
    wf.flag("segments", False)
    wf.number("val_fraction", 0.0, lo=0, hi=1, hi_open=True)
    if writer == "yolo" and sc > 1:  # YOLO is an export of a finished COCO dataset: shards are merged first
        raise ConfigError("writer=yolo cannot render shards; render them with writer=coco, `simgen merge` them, then "
                          "`simgen export <merged> format=yolo out=<dir>`.")
    out = d.get("out")
    if not out:
        raise ConfigError("out is empty; set out=<folder> for the dataset.")
    out = check_str(str(out) if isinstance(out, (str, os.PathLike)) else out, "out", "datasets/dice")
    return RenderConfig(
        scene=(scene := scene_spec(d.get("scene") or {})),
        randomization=occluders_fit(randomization_spec(d.get("randomization") or {}), scene),
        physics=physics, labels=labels, renderer=renderer, n_images=n, seed=seed, out=Path(out),  # type: ignore[arg-type]
        width=w, height=h, image_format=fmt, writer=writer, workers=workers, shard_index=si, shard_count=sc,  # type: ignore[arg-type]
        physics_process=physics_process,
        views_per_scene=vps, overwrite=top.flag("overwrite", False), progress=top.flag("progress", True),  # type: ignore[arg-type]
        egl_devices=None if egl is None else tuple(egl), resolved=d)
