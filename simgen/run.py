"""Render a dataset: resumable, atomic, parallel over processes. Plain Python, no Hydra.

Layout of ``out``: images/, annotations.json, manifest.json, optional depth/ and semantic/, and
.simgen/ (state and per-image label parts) while a render is in progress. ``manifest.json`` is
written last: a folder without it is not a finished dataset, and rerunning the same command resumes.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import inspect
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .config import ObjectGroup, RenderConfig
from .errors import ConfigError, PlacementError, RenderError, RendererUnavailable
from .writers import coco
from .datasheet import write_dataset_docs
from .provenance import generation_sources, user_files

STATE = Path(".simgen") / "state.json"
LOCK = ".simgen.lock"  # held by the running render (see out_lock); not part of the dataset
NON_CONTENT_KEYS = ("workers", "physics_process", "progress", "overwrite", "out", "hydra", "shard")


def config_hash(cfg: RenderConfig) -> str:
    """Hash of everything that changes pixels or labels (not workers, progress, out...): the config, and the content of
    the user's own meshes, URDFs and textures it names (a mesh edited between a killed run and its rerun made one
    dataset of two meshes). A config of built-in assets only hashes as it did before user files counted."""
    content = {k: v for k, v in cfg.resolved.items() if k not in NON_CONTENT_KEYS}
    if isinstance(content.get("renderer"), dict):
        content["renderer"] = {k: v for k, v in content["renderer"].items() if k != "devices"}
    files = user_files(cfg) if cfg.resolved else {}
    if files:  # their content only: the same files reached from another folder (a shard on another node) hash alike
        content["user_files"] = sorted(files.values())
    sets = [list(g.choice_names) for g in (*cfg.scene.objects, *cfg.scene.distractors) if g.choices]
    if sets:  # which file each draw picks follows the set's order: a file renamed (same content) changes the draws
        content["asset_sets"] = sets
    from .assets import CONVERTED_FORMATS, CONVERTER_VERSION

    if any(Path(name).suffix.lower() in CONVERTED_FORMATS for g in (*cfg.scene.objects, *cfg.scene.distractors) for name in g.assets):
        content["mesh_converter"] = CONVERTER_VERSION  # a conversion that changed (its look) is another dataset
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shard_indices(cfg: RenderConfig) -> list[int]:
    """Image indices of this shard: whole views_per_scene groups, dealt round-robin."""
    k = cfg.views_per_scene
    groups = range((cfg.n_images + k - 1) // k)
    return [i for g in groups if g % cfg.shard_count == cfg.shard_index for i in range(g * k, min((g + 1) * k, cfg.n_images))]


def versions() -> dict:
    import cv2
    import pybullet  # noqa: F401

    from importlib.metadata import version

    out = {"simgen": __version__, "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    for pkg in ("pybullet", "torch", "torchvision", "hydra-core", "pycocotools"):
        with contextlib.suppress(Exception):
            out[pkg] = version(pkg)
    return out


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(Exception):
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    return None


HYDRA_SWEEP_DIR = ".hydra-multirun"  # conf/*.yaml put Hydra's multirun.yaml here, inside out


def is_nonempty(out: Path) -> bool:
    """``out`` holds something besides what simgen itself puts there before a run (lock, sweep record)."""
    return out.is_dir() and any(p.name not in (LOCK, HYDRA_SWEEP_DIR) for p in out.iterdir())


def check_out(out: Path, markers: tuple[str | Path, ...] = (STATE, "manifest.json"), what: str = "a simgen dataset") -> None:
    """Refuse, before anything is written, an ``out`` that is a file, or a non-empty folder holding none of
    ``markers`` (the files that say simgen made it): simgen never writes into a folder it does not own."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file; choose a folder path for the output.")
    if is_nonempty(out) and not any((out / m).exists() for m in markers):
        if STATE in markers and (out / ".simgen").is_dir() and holds_no_images(out):
            return  # a run killed while writing its first state file: simgen's own leftovers, taken over by this run
        raise ConfigError(f"out={out} is not empty and is not {what}; choose an empty or new folder.")


def remove_partial_files(out: Path) -> None:
    """Delete the temporary files of writes that never finished (a killed run, or a worker killed mid-write):
    never valid files. Only while holding the lock, with no worker of ours running."""
    for tmp in out.rglob(".*.tmp") if out.is_dir() else []:
        tmp.unlink(missing_ok=True)


def holds_no_images(out: Path) -> bool:
    """Whether ``out`` holds nothing a render finished: only simgen's own state (and empty folders), no image, label
    part, shard or manifest."""
    parts = out / coco.PARTS
    if parts.is_dir() and any(parts.iterdir()):
        return False
    return all(p.is_dir() or p.is_relative_to(out / ".simgen") or p == out / LOCK for p in out.rglob("*"))


def prepare_out(cfg: RenderConfig) -> bool:
    """Check and prepare the output folder. Returns True when the dataset is already complete."""
    out, h = cfg.out, config_hash(cfg)  # begin() has run check_out(out) before taking the lock
    state_file = out / STATE
    if is_nonempty(out):
        try:
            state = json.loads(state_file.read_text()) if state_file.exists() else \
                json.loads((out / "manifest.json").read_text()).get("state", {})
        except (OSError, json.JSONDecodeError):
            state = {}
        same = state.get("config_hash") == h
        if cfg.overwrite:
            # every file a render writes, of every writer (coco, yolo, webdataset; the docs and a preview): a shard tar left
            # behind would be taken for a finished one, a data.yaml or croissant.json would describe files that are gone
            tars = [p.name for p in out.glob("shard-*.tar")]
            for name in ("manifest.json", "annotations.json", ".simgen", "images", "depth", "semantic", "shards", "labels",
                         "data.yaml", "train.txt", "val.txt", "croissant.json", "DATASHEET.md", "preview.png", *tars):
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif not same and not holds_no_images(out):
            was, now = state.get("user_files"), user_files(cfg)
            changed = [p for p in now if p in (was or {}) and was[p] != now[p]]
            if changed:
                raise ConfigError(f"out={out} was rendered from another version of {changed[0]}, which has changed since; use a "
                                  "new out= folder, or overwrite=true to render it all again from the file as it is now.")
            if was is None and now and state.get("config_hash"):
                raise ConfigError(f"out={out} was begun by an older simgen, before the content of your own mesh, URDF and texture "
                                  "files counted in the resume check (and before poses were given in the file's own frame); "
                                  "use overwrite=true to render it again, or a new out= folder.")
            raise ConfigError(f"out={out} holds a dataset made with a different config; use a new out= folder, or overwrite=true to replace it.")
        elif not same:  # a run that stopped before its first image (a config error found then): nothing to keep
            shutil.rmtree(out / ".simgen", ignore_errors=True)
        elif (out / "manifest.json").exists():
            return True
    remove_partial_files(out)  # leftovers of a killed run
    try:
        (out / ".simgen").mkdir(parents=True, exist_ok=True)
        coco.atomic_json(out / STATE, {"config_hash": h, "n_images": cfg.n_images, "shard": [cfg.shard_index, cfg.shard_count],
                                        "renderer": cfg.renderer, "user_files": user_files(cfg)})
    except OSError as e:
        raise ConfigError(f"cannot write to out={out} ({e.strerror}); choose a folder you can write to.") from None
    return False


# ------------------------------------------------------------------ workers
_GEN = None
_OVERLAP = False  # per worker process, set by _init_worker: whether writing runs on a thread beside generation


STDLIB_START_METHODS = ("fork", "spawn", "forkserver")
POOL_RESTARTS = 3


def die_with_parent(parent: int) -> None:
    """Make this worker die when the process that started it dies (even by kill -9), so no orphan keeps
    writing into ``out`` after its run is gone. Linux: PR_SET_PDEATHSIG; elsewhere a no-op."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


# Libraries whose presence in this process makes a forked child unsafe: a child forked after EGL, GL or a GPU driver
# loaded inherits their threads and device state half-copied (forked after EGL loaded, a worker segfaults). Not
# libdrm (OpenCV's wheel bundles it, inert) nor CUDA's runtime libcudart (torch maps it on import; the driver,
# libcuda.so, loads once CUDA starts, and that is what a fork must not follow). A non-headless OpenCV maps libGL:
# its processes always spawn.
DRIVER_LIBRARIES = ("libEGL", "libGL", "libOpenGL", "libOSMesa", "libcuda.so", "libnvidia", "libvulkan", "libamdhip64",
                    "libhsa-runtime64", "libOpenCL", "libze_loader")
# Threads that may run beside a fork: tqdm's monitor sleeps on an event and takes nothing a child uses.
FORK_SAFE_THREADS = ("TMonitor",)
WORKER_START = None  # in a pool's process: how it was started ("fork" or "spawn"), for the manifest's worker_start


def fork_is_safe(maps: str, threads: list) -> bool:
    """Whether a child forked now would be sound: no GL, EGL or GPU driver library among this process's mapped files
    (``maps``, /proc/self/maps) and no Python thread running but the main one (and tqdm's monitor). A thread could hold
    a lock the child needs (CPython stopped forking ProcessPoolExecutor workers while its manager thread runs for
    that reason); the run's own process forks its pool before starting any."""
    if any(lib in maps for lib in DRIVER_LIBRARIES):
        return False
    main = threading.main_thread()
    return all(t is main or type(t).__name__ in FORK_SAFE_THREADS or not t.is_alive() for t in threads)


def start_method() -> str:
    """How render workers and physics processes start: ``fork`` where :func:`fork_is_safe` (Linux), else ``spawn``.
    A forked child skips what a spawned one redoes: starting Python, importing numpy, OpenCV, PyBullet and simgen,
    and resolving the scene's assets (0.6 s of CPU and 0.35 s before a first answer, measured), and it imports
    nothing from the caller's main module. A run's process starts its pool before it loads a renderer or starts a
    thread, so a run forks; a process that has loaded GL (a pool restarted under renderer=gl or egl, a notebook that
    rendered) or runs other threads (a pool already running, a launcher's worker) spawns, and so does every process
    inside a launcher whose start method is not the standard library's. ``SIMGEN_START_METHOD=spawn`` (or ``fork``)
    sets it."""
    forced = os.environ.get("SIMGEN_START_METHOD", "").strip().lower()
    if forced:
        if forced not in ("fork", "spawn"):
            raise ConfigError(f"SIMGEN_START_METHOD={forced!r}: use fork or spawn (or unset it to choose by what this process has loaded).")
        return forced
    # Before 3.11 a ProcessPoolExecutor forks its workers one by one while its manager thread runs (gh-90622)
    if sys.platform != "linux" or sys.version_info < (3, 11) or mp.get_start_method(allow_none=True) not in (None, *STDLIB_START_METHODS):
        return "spawn"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "spawn"
    return "fork" if fork_is_safe(maps, threading.enumerate()) else "spawn"


def spawn_pool(workers: int, initializer, initargs: tuple, method: str | None = None):
    """A ``ProcessPoolExecutor`` of processes started by :func:`start_method` whose workers die with this process. A
    worker that dies breaks the pool with ``BrokenProcessPool`` instead of being respawned in a silent loop, as
    multiprocessing.Pool does.

    Inside a launcher's worker (joblib's loky) the process-wide start method is `loky`, which a stdlib
    spawn child cannot set up (`ValueError: cannot find context for 'loky'`, forever): reset it first (such a
    process spawns, see :func:`start_method`)."""
    from concurrent.futures import ProcessPoolExecutor

    method = method or start_method()  # before the reset below: a launcher's worker spawns
    if mp.get_start_method(allow_none=True) not in (None, *STDLIB_START_METHODS):
        mp.set_start_method("spawn", force=True)
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=_init_with_parent,
                               initargs=(os.getpid(), method, initializer, initargs))


@contextlib.contextmanager
def worker_pool(workers: int, initializer, initargs: tuple, method: str | None = None) -> Iterator:
    """:func:`spawn_pool` for the span of a ``with`` block, whose error drops the tasks still queued."""
    with spawn_pool(workers, initializer, initargs, method) as pool:
        try:
            yield pool
        except BaseException:
            # An error (a full disk, a scene that cannot be drawn, Ctrl-C) ends the run now: without this the
            # pool's exit would first run every task still queued (hours of a big render, all failing alike).
            # It still waits for the tasks already running, so that no worker writes into out once the lock is gone.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _init_with_parent(parent: int, method: str, initializer, initargs: tuple) -> None:
    global WORKER_START
    WORKER_START = method
    die_with_parent(parent)
    initializer(*initargs)


@contextlib.contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.simgen.lock`` for the whole run: a second run on the same folder is refused in one
    line instead of interleaving with the first. The kernel drops the lock when the holder dies, so a
    killed run never blocks the rerun that resumes it."""
    import fcntl

    path = out / LOCK
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"cannot write to out={out} ({e.strerror}); choose a folder you can write to.") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"out={out} is being written by another simgen run right now; wait for it to finish "
                              "or choose another out= folder.") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # still ours: nobody else can hold it while we do
            # a run stopped before writing anything (a device that cannot start, a labeler naming an unknown category at
            # the first scene) leaves no folder behind, not even its own state
            if created and holds_no_images(out):
                shutil.rmtree(out, ignore_errors=True)
    finally:
        os.close(fd)


def _init_worker(cfg: RenderConfig, devices: tuple[int, ...] | None, counter, workers: int, physics_process: bool) -> None:
    global _GEN, _OVERLAP
    with quiet_stdout((1, 2)):  # importing pybullet prints its build time on fd 2
        from .pipeline import Generator
        from .render import share_cv_threads, share_software_gl

    share_software_gl(workers)
    share_cv_threads(workers)
    mute_stdout()
    # Where memory runs out, the kernel should kill a worker (the pool restarts for its images) rather than the run's
    # own process, which now renders too and is the largest: a process may raise its own OOM score, never lower it.
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("300")
    with counter.get_lock():
        k = counter.value
        counter.value += 1
    device = devices[k % len(devices)] if devices else None
    with quiet_stdout((1, 2)):
        _GEN = Generator(cfg, egl_device=device, physics_process=physics_process)
    # the pool's own size, not cfg.workers: a run with fewer images left than workers starts fewer processes
    _OVERLAP = spare_core(workers)


def _work(args: tuple[RenderConfig, list[int], dict[str, int]]) -> list[dict]:
    cfg, indices, cat_ids = args
    return list(render_each(_GEN, cfg, indices, cat_ids, overlap=_OVERLAP))


def scene_count(indices: list[int], views_per_scene: int) -> int:
    """Distinct scenes among image ``indices`` (consecutive views share one)."""
    return len({i - i % views_per_scene for i in indices})


def spare_core(processes: int) -> bool:
    """Whether ``processes`` rendering processes leave a core free for each one's writer thread."""
    from .train.threads import usable_cores  # no torch: the affinity mask, capped by a cgroup quota

    return processes < usable_cores()


def render_each(gen, cfg: RenderConfig, indices: list[int], cat_ids: dict[str, int], overlap: bool = True) -> Iterator[dict]:
    """Generate and write ``indices`` in order, yielding each image's timings once its files are on disk.

    With ``overlap``, writing (image encoding, checksums, the label part) runs on a thread one image behind
    generation: OpenCV's encoders, hashlib and file writes release the GIL, so that work overlaps the next scene's
    physics and render on a free core. Only where there is one: with every core busy the thread only contends for
    the GIL (measured on 16 cores, 16-24 workers: 5-9% fewer images/s with it). The files are the same bytes either
    way; an error in a write is raised here, and a kill loses at most the one image in flight, which a rerun renders
    again (its label part is written last)."""
    from concurrent.futures import ThreadPoolExecutor

    gen.plan(indices)  # a physics feeder, where the generator has one, settles these scenes ahead
    # Drawing the next frame ahead pays where its drawing has somewhere to run: a GPU, or a free core for llvmpipe's
    # raster threads. With every core busy (two render processes on two cores) it only made the threads contend:
    # whole runs 0.93-0.95x the images/s at 1.05x the CPU an image (vs_script.py, host quiet)
    ahead = overlap or getattr(gen.renderer, "offloads", False)
    if not overlap:
        for rec, gen_ms in generated(gen, indices, ahead):
            yield _write(cfg, rec, gen_ms, cat_ids, on_thread=False)
        return

    with ThreadPoolExecutor(1, thread_name_prefix="simgen-write") as writer:
        pending = None
        try:
            for rec, gen_ms in generated(gen, indices, ahead):
                if pending is not None:
                    yield pending.result()
                pending = writer.submit(_write, cfg, rec, gen_ms, cat_ids, on_thread=True)
            if pending is not None:
                yield pending.result()
                pending = None
        finally:
            if pending is not None:  # stopped early (an error, Ctrl-C): let the write in flight finish whole
                with contextlib.suppress(Exception):
                    pending.result()


def generated(gen, indices: list[int], ahead: bool = True) -> Iterator[tuple]:
    """(record, ms spent generating it) of each index in order, as ``gen.generate`` makes them; ``ahead``: with the
    next image's frame submitted before this one's labels and sensor model, so that under ``renderer=gl`` the GPU (or
    llvmpipe's raster threads) draws image k+1 while this thread finishes image k. Every record is a function of its
    index alone, so the order of the work changes no byte. An error while starting the next image comes after this
    one's record."""
    from .pipeline import finish

    if not ahead:
        for i in indices:
            t0 = time.perf_counter()
            with quiet_stdout():
                rec = gen.generate(i)
            yield rec, 1e3 * (time.perf_counter() - t0)
        return
    if not indices:
        return
    t0 = time.perf_counter()
    with quiet_stdout():
        started = gen.start(indices[0])
    ms = 1e3 * (time.perf_counter() - t0)
    for pos in range(len(indices)):
        nxt, error = None, None
        with quiet_stdout():
            t0 = time.perf_counter()
            drawn = gen.done(started)
            t1 = time.perf_counter()
            if pos + 1 < len(indices):
                try:
                    nxt = gen.start(indices[pos + 1])
                except BaseException as e:  # raised once this image's record is out
                    error = e
            t2 = time.perf_counter()
            try:
                rec = finish(drawn, gen.cfg.labels)
            except BaseException:
                if error is not None:  # both: the held one, with this one as its context
                    raise error
                raise
        next_ms = 1e3 * (t2 - t1)
        yield rec, ms + 1e3 * ((t1 - t0) + (time.perf_counter() - t2))
        if error is not None:
            raise error
        started, ms = nxt, next_ms


def _write(cfg: RenderConfig, rec, gen_ms: float, cat_ids: dict[str, int], on_thread: bool) -> dict:
    """Write one record's files and label part; returns its timings (write_ms on the thread that wrote it) and
    whether that was the writer thread (the manifest's writer_thread_share)."""
    t = time.perf_counter()
    coco.write_record(cfg.out, rec, cat_ids, cfg.image_format, cfg.labels.depth, cfg.labels.semantic)
    write_ms = 1e3 * (time.perf_counter() - t)
    return {**rec.stats, "index": rec.index, "write_ms": write_ms, "total_ms": gen_ms + write_ms,  # work per image, not wall time
            "writer_thread": on_thread, "pid": os.getpid(), **({"worker_start": WORKER_START} if WORKER_START else {})}


@contextlib.contextmanager
def quiet_stdout(fds: tuple[int, ...] = (1,)) -> Iterator[None]:
    """PyBullet's C code prints loader chatter on fd 1 (and its build time on fd 2 at import);
    keep the terminal clean for the progress bar and pipes. SIMGEN_VERBOSE=1 shows it."""
    if os.environ.get("SIMGEN_VERBOSE"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    _libc_flush()
    saved = [os.dup(fd) for fd in fds]
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(devnull, fd)
    try:
        yield
    finally:
        _libc_flush()  # C stdio buffers (pipes are fully buffered) must drain into /dev/null, not later
        for fd, s in zip(fds, saved):
            os.dup2(s, fd)
            os.close(s)
        os.close(devnull)


def mute_stdout() -> None:
    """A render worker never has anything to say on stdout (results go back through the pool, problems through
    stderr), but PyBullet's C code prints there, e.g. the EGL plugin's goodbye when the worker exits: send fd 1
    to /dev/null for the rest of the worker's life."""
    with contextlib.suppress(OSError):
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library, opened once: ``ctypes.CDLL`` builds a class per call (~20 us), and every image flushes twice."""
    import ctypes

    return ctypes.CDLL(None)


def _libc_flush() -> None:
    with contextlib.suppress(Exception):
        _libc().fflush(None)


def egl_devices(cfg: RenderConfig) -> tuple[int, ...] | None:
    """EGL device per worker (renderer=egl or gl): ``renderer.devices`` if given, else the GPUs in CUDA_VISIBLE_DEVICES."""
    if cfg.renderer not in ("egl", "gl"):
        return None
    if cfg.egl_devices:
        return cfg.egl_devices
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if cvd and all(x.strip().isdigit() for x in cvd.split(",")):
        return tuple(int(x) for x in cvd.split(","))
    return None


def chunks(indices: list[int], k: int, size: int, processes: int = 1) -> list[list[int]]:
    """Split into tasks of ``size`` scene groups, never splitting a group (its views share a scene).

    With ``processes`` > 1 taking tasks from one queue, the last tasks shrink (guided self-scheduling): none takes
    more than 1/(2 x processes) of the groups still left, so the processes finish together instead of one waiting
    through another's last full task (measured on a 60-image run of two processes: 0.2-0.5 s of one core idle)."""
    groups: dict[int, list[int]] = {}
    for i in indices:
        groups.setdefault(i // k, []).append(i)
    gl = list(groups.values())
    out, j = [], 0
    while j < len(gl):
        n = size if processes <= 1 else max(1, min(size, (len(gl) - j) // (2 * processes)))
        out.append(sum(gl[j:j + n], []))
        j += n
    return out


def shard_out(cfg: RenderConfig) -> RenderConfig:
    """Shard k of n renders into ``out/shards/0000k-of-0000n`` so that concurrent shards never share a folder;
    ``simgen merge out/shards/* out=<dir>`` joins them."""
    if cfg.shard_count == 1:
        return cfg
    from dataclasses import replace

    return replace(cfg, out=cfg.out / "shards" / f"{cfg.shard_index:05d}-of-{cfg.shard_count:05d}")


def validate(cfg: RenderConfig) -> None:
    """Fail before touching ``out``: every asset, texture folder, scene hook and the renderer must work."""
    from . import assets
    from .scenes_api import labeler, scene_ref

    if cfg.scene.max_objects >= 1000:
        raise ConfigError("scene.max_objects must be below 1000 (annotation ids reserve 1000 per image).")
    from .errors import AssetError

    groups = [(f"scene.objects.{g.category}", g) for g in cfg.scene.objects]
    groups += [(f"scene.distractors[{k}]", g) for k, g in enumerate(cfg.scene.distractors)]
    for where, g in groups:
        for name in g.assets:
            try:
                assets.resolve(name)
            except AssetError as e:  # which group names it: a scene can hold many
                raise AssetError(f"{where}: {e}") from None
    labeler(cfg.scene.labeler)
    for name, ref, count in cfg.scene.texture_banks:
        fn = scene_ref(ref, f"scene.texture_banks.{name}")
        if count is not None and "n" not in inspect.signature(fn).parameters:
            raise ConfigError(f"scene.texture_banks.{name}.count: `{ref}` draws a fixed bank (it takes no `n`); drop count, "
                              f"or give the function an `n` argument for the number of looks.")
    check_sizes(cfg)
    probe_scene(cfg)
    probe_devices(cfg)


def probe_devices(cfg: RenderConfig) -> None:
    """Under renderer=egl or gl, check every device a worker will render on (``renderer.devices`` or the GPUs in
    CUDA_VISIBLE_DEVICES) before anything is written; each answer is kept in the environment for the workers and the
    manifest's ``renderer_device``. Nothing to do for tiny, or for auto until it has chosen."""
    if cfg.renderer in ("egl", "gl"):
        from .glrender import probe_gl
        from .render import probe_egl

        devs = egl_devices(cfg)
        for d in sorted(set(devs)) if devs else [None]:
            (probe_egl if cfg.renderer == "egl" else probe_gl)(d)


MIN_SIZE_M = 0.001  # an object under a millimetre across at its largest scale is a units mistake, not a scene


def _dist_bounds(d) -> tuple[float, float]:
    """The smallest and largest value a scale distribution draws (a normal: mean +- 3 std)."""
    if hasattr(d, "options"):
        return float(min(d.options)), float(max(d.options))
    if hasattr(d, "std"):
        return float(d.mean - 3 * d.std), float(d.mean + 3 * d.std)
    return float(d.min), float(d.max)


def _units_hint(size_units: float, lo: float, hi: float) -> str:
    """What the scale would be if the mesh is in millimetres or centimetres, where that gives a plausible size."""
    for unit, k in (("millimetres", 1e-3), ("centimetres", 1e-2)):
        if 0.005 <= size_units * k * hi <= 1.0 or 0.005 <= size_units * k <= 1.0:
            return f"if the mesh is in {unit}, use scale: " + (f"{lo * k:.3g}" if lo == hi else f"[{lo * k:.3g}, {hi * k:.3g}]")
    return "fix the scale"


def _group_key(g) -> str:
    """The config key a message names for an object group."""
    return f"scene.objects.{g.category}" if g.category is not None else "scene.distractors"


def check_sizes(cfg: RenderConfig) -> None:
    """Every object must be drawable: its longest side, at its smallest scale no larger than the scene
    that holds it, at its largest no smaller than a millimetre. ``scale`` multiplies mesh units into metres (a
    URDF's own size), so a mesh written in millimetres with a scale meant for metres is 1,000x too big: its
    objects cannot be placed, fall off the ground, and the run would write images with no labels."""
    from . import assets

    room = max(2 * max(cfg.scene.area), _dist_bounds(cfg.scene.camera.distance)[1])
    for g, name in each_asset((*cfg.scene.objects, *cfg.scene.distractors)):
        key = _group_key(g)
        a = assets.resolve(name)
        lo, hi = _dist_bounds(g.scale)
        sides = np.ptp(a.points, axis=0)  # the bounding box (a URDF keeps its own origin, which need not be inside it)
        units = float(sides.max())  # its longest side
        ext = " x ".join(f"{e:.3g}" for e in sides)
        at = f"scale {lo:g}" if lo == hi else f"scale [{lo:g}, {hi:g}]"
        if units * lo > room:
            long = f"{units * lo:.3g}" if lo == hi else f"{units * lo:.3g}-{units * hi:.3g}"
            raise ConfigError(f"{key}: `{name}` measures {ext} mesh units, so at {at} it is "
                              f"{long} m long, more than this scene holds ({room:.2g} m: "
                              f"scene.area, scene.camera.distance); scale multiplies mesh units into metres: "
                              f"{_units_hint(units, lo, hi)}.")
        if units * hi < MIN_SIZE_M:
            raise ConfigError(f"{key}: `{name}` measures {ext} mesh units, so at {at} it is under "
                              f"{units * hi * 1e3:.2g} mm long, too small to see; scale multiplies mesh units into "
                              f"metres (a URDF's own size): raise it.")


PROBE_DRAWS = 32


def probe_scene(cfg: RenderConfig) -> None:
    """Draw the first scenes up front (pure numpy, about a millisecond each): a scene config whose draws
    nearly always fail to place is an error now, before any image, rather than after hours of redraws.
    Rare failures are fine: the pipeline redraws those scenes from [seed, i, attempt]."""
    from .pipeline import scene_seed, texture_banks
    from .sample import sample_scene

    banks = {name: tuple(sorted(f)) for name, f in texture_banks(cfg).items()}  # also checks texture_dir
    k, failed, last = cfg.views_per_scene, 0, None
    limit = math.ceil(0.9 * PROBE_DRAWS)  # failures that make the config an error
    for g in range(PROBE_DRAWS):
        if g - failed > PROBE_DRAWS - limit:  # enough draws placed that the rest cannot reach the limit: ~0.1 s saved
            return
        try:
            sample_scene(cfg.scene, cfg.randomization, banks, np.random.default_rng(scene_seed(cfg.seed, g * k, 0)))
        except PlacementError as e:
            failed, last = failed + 1, e
    if failed >= limit:
        raise ConfigError(f"scene `{cfg.scene.name}` fails {failed} of {PROBE_DRAWS} trial draws: {last}")


@dataclass(frozen=True)
class Job:
    """What every writer starts from: the shard's config, category ids and the image indices to make."""

    cfg: RenderConfig
    categories: list[str]
    cat_ids: dict[str, int]
    indices: list[int]


@contextlib.contextmanager
def begin(cfg: RenderConfig, log) -> Iterator[Job | None]:
    """Validate, pick the shard's folder, lock it for the run and prepare it; yields None when that
    dataset is already complete. Nothing is written before validation and the folder checks pass."""
    validate(cfg)
    cfg = shard_out(cfg)
    check_out(cfg.out)
    with out_lock(cfg.out):
        chosen = resolve_renderer(cfg, log, previous_renderer(cfg))
        if chosen.renderer != cfg.renderer:  # auto chose on one device: every worker's device is checked too
            probe_devices(chosen)
        # Every GL probe still needed has been collected by now (validate, the choice, the devices' checks); one the
        # command line started early for a renderer not chosen would stay a zombie child for the whole run
        from .eglprobe import stop_gl_probes

        stop_gl_probes()
        cfg = chosen
        if prepare_out(cfg):
            if (cfg.out / ".simgen").is_dir() or not (cfg.out / "DATASHEET.md").is_file():
                # a run stopped after manifest.json and before its documents (or they were deleted): write them now
                write_dataset_docs(cfg.out)
                shutil.rmtree(cfg.out / ".simgen", ignore_errors=True)
                log(f"{cfg.out}: already complete (manifest.json present); wrote its DATASHEET.md and croissant.json again.")
            else:
                log(f"{cfg.out}: already complete (manifest.json present); nothing to do.")
            yield None
            return
        for w in (*mesh_memory_warnings(cfg), *framing_warnings(cfg), *joint_warnings(cfg)):  # before the progress bar
            log(w)
        categories = list(cfg.scene.categories)
        try:
            yield Job(cfg, categories, {c: k + 1 for k, c in enumerate(categories)}, shard_indices(cfg))
        except OSError as e:  # raised here, in a worker (re-raised by its future) or by a writer's last files
            if e.errno not in DISK_FULL:
                raise
            raise disk_full(cfg.out, e) from None


def previous_renderer(cfg: RenderConfig) -> str | None:
    """The renderer an interrupted run of this same config chose (its state file), so a resume never mixes two."""
    try:
        state = json.loads((cfg.out / STATE).read_text())
    except (OSError, ValueError):
        return None
    if cfg.overwrite or state.get("config_hash") != config_hash(cfg):
        return None
    return state.get("renderer") if state.get("renderer") in ("tiny", "egl", "gl") else None


def resolve_renderer(cfg: RenderConfig, log=print, previous: str | None = None, processes: int | None = None,
                     device: int | None = None) -> RenderConfig:
    """``renderer=auto`` -> the renderer this run uses (one line says which and why), decided once in the parent so
    every worker and shard of the run renders with the same one. The config's identity keeps `auto`. ``processes``
    (default ``cfg.workers``) and ``device`` (default the first of ``renderer.devices``) shape the speed probe."""
    from dataclasses import replace

    from . import assets
    from .render import choose_renderer

    if cfg.renderer != "auto":
        return cfg
    if previous is not None:
        name, note = previous, "as chosen by the interrupted run this one resumes"
    else:
        with quiet_stdout((1, 2)):
            if device is None and cfg.egl_devices:
                device = cfg.egl_devices[0]
            paths = tuple(assets.resolve(name).path for _, name in each_asset((*cfg.scene.objects, *cfg.scene.distractors)))
            name, note = choose_renderer(cfg.width, cfg.height, processes or cfg.workers, device, paths)
        if cfg.egl_devices and "no EGL device" in note:  # devices named on purpose: a wrong index is the user's to fix
            reason = note[note.index("no EGL device"):].removesuffix(")")  # inside "EGL unavailable (...)"
            raise RendererUnavailable(f"renderer.devices={list(cfg.egl_devices)}: {reason}; "
                                      "check renderer.devices (or CUDA_VISIBLE_DEVICES).")
    log(f"renderer=auto: {name} ({note})")
    return replace(cfg, renderer=name, renderer_note=note)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(out: Path, e: OSError) -> RenderError:
    """A full disk is the user's to fix, not a bug: one line with the folder and its free space (exit 1).
    Every finished image and label part stays (each was written whole, then renamed), and a temporary
    file cut short is removed by the rerun (prepare_out), so the same command resumes where it stopped."""
    return RenderError(f"disk full writing to {out} ({free_space(out)}; {e.strerror}); free some space, or "
                       "move out= to a bigger disk, and rerun the same command: it resumes where it stopped.")


def free_space(path: Path) -> str:
    """Free space on the disk that holds ``path`` (or its nearest existing parent), for a message."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**30:.1f} GiB free there" if free >= 2**30 else f"{free / 2**20:.0f} MiB free there"


MESH_MEMORY_WARN = 2 * 2**30  # bytes of one object's render copies in a process above which a run says so


def framing_warnings(cfg: RenderConfig) -> list[str]:
    """A labelled object that, at its smallest scale, spans more than half of what the camera sees across at its
    farthest (the shorter side of the image) fills most of every image it is in: its boxes cover the frame, and a
    detector learns little from it. Legal (:func:`check_sizes` refuses only what the scene cannot hold), so a warning:
    most often a URDF at its own size in a scene made for small objects."""
    from . import assets

    cam = cfg.scene.camera
    far = _dist_bounds(cam.distance)[1]
    if cam.K is not None:
        fx, fy = cam.K[0], cam.K[1]
        seen = far * min(cfg.width / fx, cfg.height / fy)
    else:
        fov = min(_dist_bounds(cam.fov_deg)[1], 179.0)
        seen = 2 * far * math.tan(math.radians(fov) / 2) * min(1.0, cfg.width / cfg.height)  # fov is vertical
    out = []
    for g, name in each_asset(cfg.scene.objects):
        size = float(np.ptp(assets.resolve(name).points, axis=0).max()) * _dist_bounds(g.scale)[0]
        if size > seen / 2:
            out.append(f"warning: {_group_key(g)}: `{name}` is {size:.2g} m long at its smallest scale, more than half "
                       f"of the {seen:.2g} m the camera sees across at its farthest (scene.camera.distance, fov_deg): its "
                       f"boxes will cover most of every image; lower its scale or move the camera back.")
    return out


def each_asset(groups) -> list[tuple[ObjectGroup, str]]:
    """(group, asset) for every asset each group may draw (a group naming a folder or pattern draws several)."""
    return [(g, name) for g in groups for name in g.assets]


def joint_warnings(cfg: RenderConfig) -> list[str]:
    """A labelled URDF with visual meshes simgen cannot read (damaged, missing), or links on movable joints: its label geometry (extents, amodal box, visible fraction) takes
    those links at the joints' zero position (:func:`simgen.assets.urdf_geometry`), while the render draws them where
    the settle left them; the instance masks and tight boxes are exact either way."""
    from . import assets

    out = []
    for g, name in each_asset(cfg.scene.objects):
        a = assets.resolve(name)
        if a.kind == "urdf":
            unread = assets.unread_visuals(a.path)
            if unread:  # a .dae (or broken) link was drawn but left out of the label geometry: amodal box smaller than the visible one
                out.append(f"warning: {_group_key(g)}: `{name}` has visual meshes simgen's labels cannot read ({'; '.join(unread[:3])}"
                           f"{'; ...' if len(unread) > 3 else ''}): its amodal box and visible fraction leave them out (masks and "
                           "boxes are exact); export them again as .obj or .stl and point the URDF at those files.")
            moving = assets.urdf_links(a.path)[1]
            if moving:
                out.append(f"warning: {_group_key(g)}: `{name}` has links on movable joints ({', '.join(moving[:4])}"
                           f"{', ...' if len(moving) > 4 else ''}); its amodal box and visible fraction take them at the joints' "
                           "zero position (masks and boxes are exact): make those joints fixed where the model is rigid.")
    return out


def mesh_memory_warnings(cfg: RenderConfig) -> list[str]:
    """One line per object whose render copies may take more than MESH_MEMORY_WARN in each process. The renderers
    draw one baked copy per (scale bin, texture) and PyBullet keeps every copy it has loaded (~108 bytes a
    triangle), so a dense scan with `texture: bank` grows a process by gigabytes (measured: a process at 6.9 GB
    after 100 images of a 240k-triangle mesh in 8 scale bins x 25 looks), where a built-in mesh costs kilobytes.
    ``renderer=gl`` makes no copies of a mesh (it draws the source once, whatever its scales and looks): only
    URDFs are weighed there, since the render client still loads one body per scale bin with its visual meshes."""
    from . import assets
    from .pipeline import texture_banks
    from .render import SHAPE_BYTES_PER_TRIANGLE

    banks, r, out = None, cfg.randomization, []
    for g in (*cfg.scene.objects, *cfg.scene.distractors):
        weighed = [a for a in (assets.resolve(name) for name in g.assets) if not (cfg.renderer == "gl" and a.kind != "urdf")]
        if not weighed:
            continue
        name = g.asset
        tris = sum(len(a.triangles) for a in weighed)  # a set of meshes: every file has its copies
        if tris < 10_000:
            continue  # every built-in: kilobytes a copy, whatever the looks (and the banks stay undrawn here)
        banks = banks if banks is not None else texture_banks(cfg)
        bank = g.texture if g.texture in banks else None
        looks = len(banks[bank]) + (1 if bank == "bank" else 0) if bank and (bank != "bank" or r.textures) else 1
        est = tris * SHAPE_BYTES_PER_TRIANGLE * g.scale_bins * looks
        if est > MESH_MEMORY_WARN:
            out.append(f"warning: {_group_key(g)}: `{name}` has {tris} triangles; in {g.scale_bins} scale bins x {looks} looks its render "
                       f"copies may take up to {est / 2**30:.1f} GB in each process; lower its scale_bins, drop texture: bank, "
                       f"or simplify the mesh.")
    return out


def render_dataset(cfg: RenderConfig, log=print) -> Path:
    """Render (or resume) ``cfg.out``. Returns the dataset folder."""
    with begin(cfg, log) as job:
        if job is None:
            return shard_out(cfg).out
        return _render_job(job, log)


def _render_job(job: Job, log) -> Path:
    from tqdm import tqdm

    cfg, categories, cat_ids, indices = job.cfg, job.categories, job.cat_ids, job.indices
    done = coco.done_indices(cfg.out)
    todo = [i for i in indices if i not in done]
    t0 = time.perf_counter()
    bar = tqdm(total=len(indices), initial=len(indices) - len(todo), unit="img", desc=f"render {cfg.scene.name}",
               disable=not cfg.progress, dynamic_ncols=True)
    stats = render_images(cfg, todo, cat_ids, bar, log)
    bar.close()
    wall = time.perf_counter() - t0
    remove_partial_files(cfg.out)  # a worker killed mid-write (and replaced by the pool restart) left its temporary file
    check_files_unchanged(cfg)
    parts = coco.load_parts(cfg.out, indices)
    doc = coco.coco_document(parts, categories, {"description": f"simgen {cfg.scene.name}", "version": __version__,
                                                 "seed": cfg.seed, "config_hash": config_hash(cfg)})
    coco.flush_all()
    coco.atomic_json(cfg.out / "annotations.json", doc)
    write_manifest(cfg, doc, stats, wall, rendered=len(todo))
    write_dataset_docs(cfg.out, doc=doc)  # DATASHEET.md + croissant.json, from manifest.json and the COCO doc
    shutil.rmtree(cfg.out / ".simgen", ignore_errors=True)
    n_ann = len(doc["annotations"])
    warn = unlabelled_warning(unlabelled_counts(doc["images"]), n_ann)
    if warn:  # before the closing line, which stays the last
        log(warn)
    log(summary_line(cfg.out, len(parts), n_ann, already=len(indices) - len(todo), rendered=len(todo), wall=wall))
    return cfg.out


def check_files_unchanged(cfg: RenderConfig) -> None:
    """Before a run's manifest: the user's own files are as they were when it began (its state file). One edited while
    the run rendered may have been drawn in either version by the workers, and the manifest would pass it as one."""
    try:
        began = json.loads((cfg.out / STATE).read_text()).get("user_files")
    except (OSError, ValueError):
        began = None
    now = user_files(cfg) if began else {}
    moved = [p for p, h in (began or {}).items() if now.get(p) != h]
    if moved:
        raise ConfigError(f"{moved[0]} changed while this run rendered {cfg.out}, so its images may mix two versions of it; "
                          "render it again with overwrite=true.")


def unlabelled_counts(images: list[dict]) -> dict[str, int]:
    """Labelled objects placed in these images' scenes that got no label, by reason (the images' `scene.unlabelled`)."""
    total: Counter = Counter()
    for im in images:
        total.update(im.get("scene", {}).get("unlabelled", {}))
    return dict(sorted(total.items()))


UNLABELLED_REASONS = {"below_min_area_px": "smaller on screen than labels.min_area_px", "not_visible": "not visible at all (out of view, hidden, or under a pixel)",
                      "below_min_visible_fraction": "less visible than labels.min_visible_fraction"}
UNLABELLED_HINTS = {
    "below_min_area_px": "check scene.objects.<name>.scale (for a URDF it multiplies the URDF's own "
                         "size) and scene.camera.distance, or lower labels.min_area_px",
    "not_visible": "check scene.area against what the camera sees (scene.camera.distance, "
                   "fov_deg, tilt_deg), the occluders, and scene.objects.<name>.scale",
    "below_min_visible_fraction": "fewer occluders or distractors, or a lower labels.min_visible_fraction",
}


def unlabelled_warning(unlabelled: dict[str, int], n_ann: int) -> str | None:
    """One line when fewer than half of the labelled objects placed in the scenes got a label: a dataset of mostly
    empty images is a config to fix (a URDF scaled as if it were a mesh in metres, a camera too far), said with the
    commonest reason and what to change, rather than found at training time."""
    placed = n_ann + sum(unlabelled.values())
    if not placed:  # every labelled count drew 0 (or every object fell off): a dataset with nothing to learn from
        return ("warning: no labelled object was placed in any image, so there are 0 annotations; raise "
                "scene.objects.<name>.count (every count drew 0) or check that objects stay on the ground (scene.area).")
    if n_ann >= 0.5 * placed:
        return None
    reason, k = max(unlabelled.items(), key=lambda kv: kv[1])
    return (f"warning: only {n_ann} of the {placed} objects placed got a label; {k} were {UNLABELLED_REASONS[reason]}: "
            f"{UNLABELLED_HINTS[reason]}.")


def render_images(cfg: RenderConfig, todo: list[int], cat_ids: dict[str, int], bar, log,
                  on_image: Callable[[dict], None] | None = None) -> list[dict]:
    """Render and write images ``todo`` into ``cfg.out`` (an image file and a label part each, see
    :func:`simgen.writers.coco.write_record`) on ``cfg.workers`` processes; returns each image's stats. One
    process renders in this one; more share one task queue with it (:func:`_render_parallel`). Every COCO-shaped
    writer goes through here, so each gets per-image resume and the pool restarts after a worker dies. ``on_image``
    is called in this process with each image's stats (its ``index`` among them) once its files are written."""
    from .feeder import wanted as feeder_wanted
    from .pipeline import Generator

    workers = min(cfg.workers, max(1, len(todo)))
    if not todo:
        return []
    if workers > 1:
        return _render_parallel(cfg, todo, cat_ids, workers, bar, log, on_image)
    stats: list[dict] = []
    devs = egl_devices(cfg)
    with quiet_stdout((1, 2)):  # the EGL plugin prints which device it took
        gen = Generator(cfg, egl_device=devs[0] if devs else None,
                        physics_process=feeder_wanted(cfg.physics_process, 1, scene_count(todo, cfg.views_per_scene)))
    try:
        for s in render_each(gen, cfg, todo, cat_ids, overlap=spare_core(1)):
            stats.append(s)
            bar.update(1)
            if on_image is not None:
                on_image(s)
    finally:
        with quiet_stdout((1, 2)):  # the EGL plugin says goodbye on stdout
            gen.close()
    return stats


def summary_line(out: Path, n_images: int, n_ann: int, already: int, rendered: int, wall: float) -> str:
    """The closing line. After a resume it says how many images were already on disk and how many this run
    rendered; the rate is always this run's: the images it rendered over its own time."""
    rate = f"{rendered / wall:.2f} img/s" if rendered and wall > 0 else ""
    line = f"{out}: {n_images} images, {n_ann} annotations"
    if already:
        return line + f" ({already} already done, {rendered} rendered now" + (f" at {rate}" if rate else "") + ")"
    return line + (f", {rate}" if rate else "")


def _render_parallel(cfg: RenderConfig, todo: list[int], cat_ids: dict[str, int], workers: int, bar, log,
                     on_image: Callable[[dict], None] | None = None) -> list[dict]:
    """Render ``todo`` on ``workers`` processes: this one and ``workers - 1`` spawned ones. Rendering here too saves
    starting one process (imports, EGL and banks: ~1 s of CPU, a tenth of a 60-image run on 2 cores) and keeps no
    core waiting on a process that only collects results. A worker that dies (killed, out of memory) costs only the
    images it had not finished: the pool is restarted for what is left, at most POOL_RESTARTS times."""
    from concurrent.futures.process import BrokenProcessPool

    from .feeder import wanted as feeder_wanted

    from .render import share_cv_threads

    stats: list[dict] = []
    left = todo
    own: list = []  # this process's generator, made when it first takes a task (after the pool's first tasks are out)
    devices = egl_devices(cfg)
    cv_threads = share_cv_threads(workers)  # this process renders beside its workers: the same share of the cores
    try:
        for restart in range(POOL_RESTARTS + 1):
            method = start_method()  # read once a pool: the counter, the warm-up and the pool agree
            counter = mp.get_context(method).Value("i", 1)  # slot 0 (the first EGL device) is this process's
            feeders = feeder_wanted(cfg.physics_process, workers, scene_count(left, cfg.views_per_scene))
            # a feeder learns a task's scenes when the task starts, so each task's first scene waits for it: 8 scenes a task
            per_task = 8 if feeders else max(1, 8 // cfg.views_per_scene)
            # without feeders the last tasks shrink, so both ends of the queue run dry together
            tasks = [(cfg, c, cat_ids) for c in chunks(left, cfg.views_per_scene, per_task, 1 if feeders else workers)]

            def generator():
                if not own:
                    own.append(_own_generator(cfg, devices[0] if devices else None, workers, feeders))
                return own[0]

            if method == "fork":  # the workers inherit what is built here
                from .pipeline import warm_up

                warm_up(cfg)
            try:
                with worker_pool(workers - 1, _init_worker, (cfg, devices, counter, workers, feeders), method) as pool:
                    _share_tasks(pool, tasks, generator, spare_core(workers), workers - 1, bar, stats, on_image)
                return stats
            except BrokenProcessPool:
                done = coco.done_indices(cfg.out)
                left = [i for i in left if i not in done]
                if restart == POOL_RESTARTS:
                    raise RenderError(f"render workers keep dying ({POOL_RESTARTS + 1} pools in a row), {len(left)} images left; "
                                      "check memory (fewer workers=) and rerun the same command to resume.") from None
                log(f"a render worker died; restarting the pool for the {len(left)} images left")
    finally:
        import cv2

        cv2.setNumThreads(cv_threads)
        if own:
            with quiet_stdout((1, 2)):  # the EGL plugin says goodbye on stdout
                own[0].close()
    return stats


def _own_generator(cfg: RenderConfig, device: int | None, workers: int, feeders: bool):
    """The run's own process's Generator, with its share of Mesa's raster threads as each worker has (LP_NUM_THREADS is
    read once, when EGL loads). The variable is put back afterwards: later renders in this process (a test session, a
    notebook) must not take it for the user's own setting."""
    from .pipeline import Generator
    from .render import share_software_gl

    before = os.environ.get("LP_NUM_THREADS")
    share_software_gl(workers)
    try:
        with quiet_stdout((1, 2)):
            return Generator(cfg, egl_device=device, physics_process=feeders)
    finally:
        if before is None:
            os.environ.pop("LP_NUM_THREADS", None)
        else:
            os.environ["LP_NUM_THREADS"] = before


def _share_tasks(pool, tasks: list[tuple], generator, overlap: bool, procs: int, bar, stats: list[dict],
                 on_image: Callable[[dict], None] | None = None) -> None:
    """Run ``tasks`` on ``pool`` (``procs`` processes) and in this process (``generator()``), both taking the next task
    from one queue. Only this thread hands the pool tasks (a done-callback must not: from Python 3.12 the pool runs
    callbacks of a broken pool under the lock ``submit`` takes), between this process's images: the pool is kept one
    task ahead of its processes, so a worker that finishes finds the next task waiting. That extra task is not handed
    out near the end, where it would leave this process nothing to do. Each image's stats go into ``stats`` as they
    come (images of a pool that breaks later still count). A worker's error or death (BrokenProcessPool) is raised
    at this process's next image."""
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    queue: deque = deque(tasks)
    pending: list = []  # the pool's tasks not yet collected

    def top_up() -> None:
        while queue and len(pending) < procs + (1 if len(queue) > procs + 1 else 0):
            task = queue.popleft()
            try:
                pending.append(pool.submit(_work, task))
            except (BrokenProcessPool, RuntimeError):  # broken or shut down: its futures raise the reason in collect
                queue.appendleft(task)
                return

    def collect(block: bool) -> None:
        failed = None
        for fut in [f for f in pending if block or f.done()]:
            pending.remove(fut)
            try:
                res = fut.result()
            except BaseException as e:  # keep every other finished task's images first
                failed = failed or e
                continue
            stats.extend(res)
            bar.update(len(res))
            for s in res if on_image is not None else ():
                on_image(s)
        if failed is not None:
            raise failed

    top_up()
    while queue:
        cfg, indices, cat_ids = queue.popleft()
        for s in render_each(generator(), cfg, indices, cat_ids, overlap=overlap):
            stats.append(s)
            bar.update(1)
            if on_image is not None:
                on_image(s)
            collect(block=False)
            top_up()
    collect(block=True)


TIMINGS = ("sample_ms", "simulate_ms", "render_ms", "annotate_ms", "write_ms", "total_ms")


def stat_mean(stats: list[dict], key: str) -> float | None:
    """Mean of ``key`` over the images' stats that have it (None if none do), as the manifests print it."""
    vals = [s[key] for s in stats if key in s]
    return round(float(np.mean(vals)), 3) if vals else None


def timing_means(stats: list[dict]) -> dict[str, float | None]:
    """The manifests' `timings_ms`: each stage's mean over the images this run rendered."""
    return {k: stat_mean(stats, k) for k in TIMINGS}


def write_manifest(cfg: RenderConfig, doc: dict, stats: list[dict], wall: float, rendered: int | None = None) -> None:
    names = {c["id"]: c["name"] for c in doc["categories"]}
    counts = Counter(names[a["category_id"]] for a in doc["annotations"])
    scenes = [im.get("scene", {}) for im in doc["images"]]
    rendered = len(stats) if rendered is None else rendered
    manifest = {
        "format": "coco", "simgen_version": __version__, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": cfg.seed, "n_images": len(doc["images"]), "n_annotations": len(doc["annotations"]),
        "shard": {"index": cfg.shard_index, "count": cfg.shard_count}, "views_per_scene": cfg.views_per_scene,
        "renderer": cfg.renderer,
        "renderer_requested": cfg.resolved.get("renderer", {}).get("name") if isinstance(cfg.resolved.get("renderer"), dict)
        else cfg.resolved.get("renderer", cfg.renderer),
        "renderer_choice": cfg.renderer_note,  # why renderer=auto chose it
        "renderer_device": {k.split("_OK_")[1]: v for k, v in os.environ.items()
                            if k.startswith("SIMGEN_GL_OK_" if cfg.renderer == "gl" else "SIMGEN_EGL_OK_")} or None,
        "categories": [c["name"] for c in doc["categories"]],
        "counts_per_category": {c["name"]: counts.get(c["name"], 0) for c in doc["categories"]},
        "objects_dropped": int(sum(s.get("dropped", 0) for s in scenes)),
        # labelled objects placed but left without a label, by reason (each image's scene.unlabelled; see unlabelled_warning)
        "objects_unlabelled": unlabelled_counts(doc["images"]),
        # scenes redrawn from [seed, i, attempt] because a draw could not be placed or its physics blew up
        "scene_redraws": int(sum(s.get("redraws", 0) for s in scenes)),
        "scene_redraw_reasons": dict(Counter(r for s in scenes for r in s.get("redraw_reasons", ()))),
        "unsettled_scenes": int(sum(1 for s in scenes if s.get("settled") is False)),
        "timings_ms": timing_means(stats),
        # share of this run's images written on a thread beside generation (only where a core was free for it)
        "writer_thread_share": stat_mean(stats, "writer_thread"),
        # share of this run's images whose scene was settled by a physics process beside the renderer (physics_process;
        # simgen.feeder): their sample_ms and simulate_ms were spent there, overlapping the render
        "physics_process_share": stat_mean(stats, "physics_process"),
        "images_per_second": round(rendered / wall, 3) if rendered and wall > 0 else None,
        # workers as configured; processes: how many rendered this run (fewer where fewer images were left).
        # rendered: the images missing when this run started (all on disk now); a worker killed after writing an
        # image never returned its stats, so counting stats would undercount
        "rendered_this_run": rendered, "workers": cfg.workers, "processes": len({s["pid"] for s in stats if "pid" in s}),
        # how this run's worker processes started (simgen.run.start_method): fork, spawn, or both across pool restarts
        "worker_start": sorted({s["worker_start"] for s in stats if "worker_start" in s}) or None,
        "annotations_sha256": hashlib.sha256((cfg.out / "annotations.json").read_bytes()).hexdigest(),
        "versions": versions(), "git_commit": git_commit(), "command": sys.argv,
        "sources": generation_sources(cfg),  # every texture/mesh file read, with sha256 and licence
        "state": {"config_hash": config_hash(cfg), "user_files": user_files(cfg)},
        "config": cfg.resolved,
    }
    coco.atomic_json(cfg.out / "manifest.json", manifest, indent=2)
