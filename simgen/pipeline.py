"""The generator: sample -> simulate -> render -> annotate, one image index at a time.

Image i is a pure function of (config, seed, i): its generators come from ``SeedSequence([seed, i])``
(the scene from the first image of its ``views_per_scene`` group), and the physics world is reset per
scene, so neither worker count nor shard split nor rendering order changes any label.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .annotate import annotate
from .config import LabelSpec, RenderConfig
from .errors import ConfigError, SceneError
from .physics import PhysicsWorld
from .render import RenderWorld, make_renderer
from .sample import sample_scene, sample_view
from .scenes_api import labeler, scene_ref
from .sensor import apply_sensor
from .textures import atomic_write_bytes, build_bank, cache_dir, generator_tag, source_tag
from .types import Frame, Record, SceneSample, SceneState, Sensor


def image_seeds(seed: int, i: int, views_per_scene: int = 1) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """(scene, view) seed sequences of image i. With one view per scene both come from [seed, i]."""
    first = i - i % views_per_scene
    return scene_seed(seed, first, 0), np.random.SeedSequence([seed, i]).spawn(2)[1]


def scene_seed(seed: int, first: int, attempt: int) -> np.random.SeedSequence:
    """Seed of the scene whose first image is ``first``; a redraw (attempt k > 0) comes from [seed, first, k]."""
    key = [seed, first] if attempt == 0 else [seed, first, attempt]
    return np.random.SeedSequence(key).spawn(2)[0]


def draw_scene(cfg: RenderConfig, banks: dict[str, tuple[str, ...]], first: int,
               settle: Callable[[SceneSample], SceneState] | None = None) -> tuple[SceneSample, SceneState | None, list[str]]:
    """Sample (and, with ``settle``, simulate) the scene of image ``first``, redrawing a scene that cannot be
    placed or whose physics blows up, at most ``physics.placement_retries`` times.

    Each redraw has its own seed ([seed, first, attempt]), so the result depends on the index alone, never
    on workers, shards or what was rendered before. Returns the sample, its state and the reasons of
    the redraws (empty when the first draw worked)."""
    reasons: list[str] = []
    for attempt in range(cfg.physics.placement_retries + 1):
        rng = np.random.default_rng(scene_seed(cfg.seed, first, attempt))
        try:
            sample = sample_scene(cfg.scene, cfg.randomization, banks, rng)
            return sample, settle(sample) if settle else None, reasons
        except SceneError as e:
            reasons.append(type(e).__name__)
            last = e
    raise type(last)(f"image {first}: {last} ({len(reasons)} draws failed; physics.placement_retries="
                     f"{cfg.physics.placement_retries})")


def texture_banks(cfg: RenderConfig) -> dict[str, dict[str, Path]]:
    """The texture files of every bank, {bank name: {key: path}}. Built once per process and bank
    settings: the up-front scene probe, the generator and the manifest's source list all need them,
    and drawing the procedural banks costs ~0.5 s each time."""
    r = cfg.randomization
    banks = _texture_banks(r.texture_kinds, r.textures_per_kind, r.bank_seed, r.texture_dir, cfg.scene.texture_banks, r.ground_kinds)
    return {name: dict(files) for name, files in banks.items()}  # callers get their own dicts


@functools.lru_cache(maxsize=8)
def _texture_banks(kinds: tuple[str, ...], per_kind: int, bank_seed: int, texture_dir: str | None,
                   scene_banks: tuple[tuple[str, str, int | None], ...], ground_kinds: tuple[str, ...]) -> dict[str, dict[str, Path]]:
    # Objects are small on screen: 128 px textures (PyBullet keeps a copy per body). The ground fills
    # the view: a separate, sharper bank of its own kinds, periodic because the renderer repeats it at
    # a fixed physical size (simgen.textures.tile_size).
    banks = {"bank": build_bank(kinds, per_kind, bank_seed, texture_dir).files,
             "ground": build_bank(ground_kinds, per_kind, bank_seed, texture_dir, size=512, prefix="ground/", tileable=True).files}
    for name, ref, count in scene_banks:
        banks[name] = scene_bank(scene_ref(ref, f"scene.texture_banks.{name}"), bank_seed, count)
    return banks


def scene_bank(fn: Callable, seed: int, count: int | None) -> dict[str, Path]:
    """A scene's procedural texture bank, drawn once per cache: the dice bank's 192 looks take ~0.5-1 s to draw, paid
    by every process of every run (the run's own, each render worker, each DataLoader worker) until cached. An index
    file named by the function, its module's source, the texture module's source, seed and count lists the
    content-addressed PNGs; it is used only while every file it names is there, and redrawn when either source
    changes (a bank function must be a pure function of its arguments, as the scene API asks)."""
    try:
        source = source_tag(inspect.getsourcefile(fn) or "")
    except (OSError, TypeError):  # no source to hash (built in, a notebook): draw it every time
        source = None
    index = None
    if source is not None:
        tag = f"{fn.__module__}:{fn.__qualname__}|{source}|{generator_tag()}|{seed}|{count}"
        index = cache_dir() / "textures" / f"scene-bank-{hashlib.sha1(tag.encode()).hexdigest()[:16]}.json"
        if index.is_file():
            try:
                files = {k: index.parent / v for k, v in json.loads(index.read_text()).items()}
                if all(f.is_file() for f in files.values()):
                    return files
            except (ValueError, AttributeError, TypeError):  # a torn or foreign index: draw again below
                pass
    files = {k: Path(v) for k, v in (fn(seed) if count is None else fn(seed, n=count)).items()}
    if index is not None and all(f.parent == index.parent for f in files.values()):  # only files of this cache
        atomic_write_bytes(index, json.dumps({k: f.name for k, f in files.items()}).encode())
    return files


def settled_scene(cfg: RenderConfig, banks: dict[str, tuple[str, ...]], physics: PhysicsWorld, first: int) -> tuple[SceneState, dict]:
    """The settled scene whose first image is ``first`` and its timings: what the generator runs in-process, and a
    :class:`simgen.feeder.PhysicsFeeder` in its own process (so both give the same scene)."""
    t0 = time.perf_counter()
    sim_ms = [0.0]

    def settle(sample: SceneSample) -> SceneState:
        t = time.perf_counter()
        state = physics.simulate(sample, cfg.scene.area)[0]
        sim_ms[0] += 1e3 * (time.perf_counter() - t)
        return state

    _, state, redraws = draw_scene(cfg, banks, first, settle)
    assert state is not None
    total = 1e3 * (time.perf_counter() - t0)
    return state, {"sample_ms": total - sim_ms[0], "simulate_ms": sim_ms[0], "sim_steps": state.sim_steps,
                   "settled": state.settled, "dropped": state.n_dropped, "redraws": len(redraws), "redraw_reasons": redraws,
                   "physics_process": False}  # True where a feeder settled it


def warm_up(cfg: RenderConfig) -> None:
    """What every rendering process builds on its first images and then keeps, built once in the run's process before
    its workers fork, so that they inherit it instead of each building its own: the sensor model's noise fields, the
    labelled meshes' outline points and the visibility tables of the concave ones (~0.1-0.2 s of CPU a worker,
    measured on tabletop). Pure CPU, no GL; the run's process would build the same for its own first images anyway."""
    from . import annotate, assets, sensor

    if cfg.randomization.sensor.enabled:
        sensor.warm()
    for name in dict.fromkeys(name for g in cfg.scene.objects for name in g.assets):  # distractors are never labelled
        annotate.warm(assets.resolve(name))


class Generator:
    """Owns one physics world, one render world and one renderer; reuse it for many images."""

    def __init__(self, cfg: RenderConfig, egl_device: int | None = None, physics_process: bool = False) -> None:
        if cfg.renderer == "auto":  # a run resolved it already; here: RenderedDataset and other direct users
            from .run import resolve_renderer

            cfg = resolve_renderer(cfg, log=lambda m: None, processes=1, device=egl_device)
        self.cfg = cfg
        files = texture_banks(cfg)
        self.banks = {name: tuple(sorted(f)) for name, f in files.items()}
        self.physics = PhysicsWorld(cfg.physics)
        # started before the renderer attaches, so the feeder's start-up (imports) overlaps this process's own
        self.feeder = None
        if physics_process:
            from .feeder import PhysicsFeeder

            try:
                self.feeder = PhysicsFeeder(cfg, self.banks)
            except (OSError, RuntimeError, ImportError):  # no process can be started here (no /dev/shm, a process limit):
                self.feeder = None  # settle every scene in this process, as without one
        self.world = RenderWorld({k: v for f in files.values() for k, v in f.items()})
        self.renderer = make_renderer(cfg.renderer, egl_device)
        self.renderer.attach(self.world)
        self.label = labeler(cfg.scene.labeler)
        self._categories = tuple(cfg.scene.categories)
        self._known = frozenset(self._categories)
        self._scene: tuple[int, SceneState, dict] | None = None
        self._made = 0

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        from .annotate import save_ratio_cache

        save_ratio_cache()  # the next process starts with this one's visibility table
        if self.feeder is not None:
            self.feeder.close()
        self.physics.close()
        self.renderer.close()
        self.world.close()

    def plan(self, indices: list[int]) -> None:
        """The image indices about to be generated, in order: a feeder settles their scenes ahead."""
        if self.feeder is not None:
            k = self.cfg.views_per_scene
            self.feeder.schedule(f for f in dict.fromkeys(i - i % k for i in indices) if self._scene is None or f != self._scene[0])

    def scene(self, i: int) -> tuple[SceneState, dict]:
        """The settled scene of image i (cached while consecutive views share it)."""
        k = self.cfg.views_per_scene
        first = i - i % k
        if self._scene is not None and self._scene[0] == first:
            return self._scene[1], {**self._scene[2], "sample_ms": 0.0, "simulate_ms": 0.0}
        got = self.feeder.take(first) if self.feeder is not None else None
        state, stats = got if got is not None else settled_scene(self.cfg, self.banks, self.physics, first)
        state = replace(state, objects=tuple(replace(o, category=self._labelled(o)) for o in state.objects),
                        ground_size=self.cfg.scene.ground_size)
        self._scene = (first, state, stats)
        return state, stats

    def _labelled(self, obj) -> str | None:
        """The labeler's category for ``obj``; one it names that the scene does not list is a config error (the
        category ids of annotations.json come from scene.categories), said in one line instead of a KeyError later."""
        try:
            category = self.label(obj)
        except Exception as e:  # the user's code: one line that says where, not a traceback through simgen's
            import traceback

            frames = traceback.extract_tb(e.__traceback__)
            own = getattr(getattr(self.label, "__code__", None), "co_filename", None)
            where = next((f for f in reversed(frames) if f.filename == own), frames[-1])  # in the labeler, not numpy
            raise ConfigError(f"scene.labeler `{self.cfg.scene.labeler}` raised {type(e).__name__}: {e} (at {where.filename}:"
                              f"{where.lineno}, labelling a `{obj.sample.asset}`); fix the labeler, or call it on the "
                              "PlacedObject it was given to see the whole traceback.") from None
        if category is not None and category not in self._known:
            raise ConfigError(f"scene.labeler `{self.cfg.scene.labeler}` named an object `{category}`, which is not one of "
                              f"scene.categories ({', '.join(self._categories)}); list it there "
                              f"(e.g. scene.categories=[{', '.join(dict.fromkeys((*self._categories, str(category))))}]) "
                              "or use a labeler that returns the scene's categories.")
        return category

    def generate(self, i: int) -> Record:
        return finish(self.draw(i), self.cfg.labels)

    def draw(self, i: int) -> Drawn:
        """Image i up to its rendered frame: scene, view, render; :func:`finish` makes its record (labels, sensor model)."""
        return self.done(self.start(i))

    def start(self, i: int) -> Started:
        """:meth:`draw` up to the frame submitted to the renderer: call :meth:`done` with it, before the next start.
        Between the two the renderer may still be drawing (``renderer=gl``): :func:`simgen.run.render_each` labels and
        writes the previous image there."""
        cfg = self.cfg
        state, stats = self.scene(i)
        _, view_ss = image_seeds(cfg.seed, i, cfg.views_per_scene)
        rng = np.random.default_rng(view_ss)
        view = sample_view(cfg.scene, cfg.randomization, cfg.width, cfg.height, rng, state.objects)  # objects: truncation anchors
        t0 = time.perf_counter()
        self.world.stage(state)
        frame = self.renderer.submit(self.world, view.camera, view.light, depth=cfg.labels.depth is not None)
        return Started(index=i, state=state, sensor=view.sensor, rng=rng, stats=stats, frame=frame,
                       submit_ms=1e3 * (time.perf_counter() - t0))

    def done(self, started: Started) -> Drawn:
        """The :class:`Drawn` view of a :meth:`start`: its frame read back."""
        t0 = time.perf_counter()
        frame = started.frame()
        stats = {**started.stats, "render_ms": started.submit_ms + 1e3 * (time.perf_counter() - t0)}
        self._made += 1
        if self._made % 16 == 0:  # workers are never closed, only ended: keep the visibility table on disk as it grows
            from .annotate import save_ratio_cache

            save_ratio_cache()
        i = started.index
        return Drawn(index=i, seed=(self.cfg.seed, i), frame=frame, state=started.state, sensor=started.sensor,
                     rng=started.rng, stats=stats)


@dataclass(frozen=True, eq=False)
class Started:
    """One view submitted to the renderer (:meth:`Generator.start`); ``frame()`` waits for and returns its frame."""

    index: int
    state: SceneState
    sensor: Sensor
    rng: np.random.Generator  # the view's generator after the view was drawn
    stats: dict
    frame: Callable[[], Frame]
    submit_ms: float


@dataclass(frozen=True, eq=False)
class Drawn:
    """One rendered view before its labels and sensor model: what :meth:`Generator.draw` hands to :func:`finish`."""

    index: int
    seed: tuple[int, ...]
    frame: Frame  # depth None unless labels.depth asks for it
    state: SceneState
    sensor: Sensor
    rng: np.random.Generator  # the view's generator after the view was drawn: the sensor model's noise draws next
    stats: dict


def finish(drawn: Drawn, labels: LabelSpec) -> Record:
    """The record of a drawn view: labels from the instance map and scene state, then the sensor model on the image.
    A pure function of ``drawn``: the same bytes wherever it runs."""
    t = time.perf_counter()
    frame = drawn.frame
    skipped: Counter = Counter()
    instances = annotate(frame, drawn.state, labels, skipped)
    rng = copy.deepcopy(drawn.rng)  # finishing the same view twice draws the same noise
    rgb = apply_sensor(frame.rgb, drawn.sensor, rng)
    stats = {**drawn.stats, "annotate_ms": 1e3 * (time.perf_counter() - t), "unlabelled": dict(sorted(skipped.items()))}
    return Record(index=drawn.index, seed=drawn.seed, rgb=rgb, depth=frame.depth if labels.depth else None,
                  instances=instances, camera=frame.camera, world_to_cam=frame.world_to_cam,
                  jpeg_quality=drawn.sensor.jpeg_quality, stats=stats, instance_columns=frame.columns,
                  instance_runs=frame.runs)
