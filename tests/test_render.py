"""Integration: tiny renders end to end with each renderer, label invariants, determinism."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simgen.errors import RendererUnavailable
from simgen.render import probe_egl
from simgen.run import render_dataset

from .conftest import small_config


def egl_or_skip():
    try:
        return probe_egl()
    except RendererUnavailable as e:
        pytest.skip(f"EGL cannot load here: {e}")


def check_invariants(root):
    doc = json.loads((root / "annotations.json").read_text())
    cats = {c["id"] for c in doc["categories"]}
    sizes = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    assert doc["annotations"], "expected some annotations"
    for a in doc["annotations"]:
        w, h = sizes[a["image_id"]]
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        assert m.shape == (h, w)
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        x, y, bw, bh = a["bbox"]
        assert (x, y, x + bw, y + bh) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1), "bbox must be the mask's tight box"
        assert a["area"] == int(m.sum()) > 0
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
        assert a["category_id"] in cats and a["iscrowd"] == 0
        assert 0 < a["visible_fraction"] <= 1
        assert np.allclose(np.array(a["pose"]["R"]) @ np.array(a["pose"]["R"]).T, np.eye(3), atol=1e-6)
    for im in doc["images"]:
        assert (root / im["file_name"]).is_file()
        assert len(im["seed"]) == 2 and np.array(im["K"]).shape == (3, 3)
    return doc


def test_tiny_render_end_to_end(tmp_path):
    cfg = small_config(tmp_path, "labels.depth=png16", "labels.semantic=true")
    out = render_dataset(cfg, log=lambda m: None)
    doc = check_invariants(out)
    assert len(doc["images"]) == 3
    man = json.loads((out / "manifest.json").read_text())
    assert man["n_images"] == 3 and man["config"]["seed"] == 0 and "pybullet" in man["versions"]
    assert sum(man["counts_per_category"].values()) == len(doc["annotations"])
    assert not (out / ".simgen").exists()
    import cv2

    d = cv2.imread(str(out / doc["images"][0]["depth_file"]), cv2.IMREAD_UNCHANGED)
    assert d.dtype == np.uint16 and 100 < np.median(d[d > 0]) < 500  # dice camera 0.2-0.34 m away, in mm
    s = cv2.imread(str(out / doc["images"][0]["semantic_file"]), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(s)) <= {0, 1, 2, 3, 4, 5, 6}


def test_same_seed_same_annotations(tmp_path):
    a = render_dataset(small_config(tmp_path, name="a"), log=lambda m: None)
    b = render_dataset(small_config(tmp_path, name="b"), log=lambda m: None)
    assert (a / "annotations.json").read_bytes() == (b / "annotations.json").read_bytes()
    c = render_dataset(small_config(tmp_path, "seed=1", name="c"), log=lambda m: None)
    assert (a / "annotations.json").read_bytes() != (c / "annotations.json").read_bytes()


def test_image_alone_equals_image_in_sequence(tmp_path):
    """Image 2 rendered alone (fresh worlds) equals image 2 rendered after images 0 and 1."""
    from simgen.pipeline import Generator

    cfg = small_config(tmp_path)
    with Generator(cfg) as g:
        seq = [g.generate(i) for i in range(3)][2]
    with Generator(cfg) as g:
        alone = g.generate(2)
    assert [i.bbox_xyxy for i in seq.instances] == [i.bbox_xyxy for i in alone.instances]
    assert [i.category for i in seq.instances] == [i.category for i in alone.instances]
    assert np.array_equal(seq.rgb, alone.rgb)


def test_tabletop_scene_renders(tmp_path):
    out = render_dataset(small_config(tmp_path, "scene=tabletop", "n_images=2"), log=lambda m: None)
    doc = check_invariants(out)
    assert {c["name"] for c in doc["categories"]} == {"duck", "teddy", "mug", "lego", "can", "ball"}


def test_user_mesh_as_category(tmp_path):
    from simgen.assets import MeshData, _cube

    mesh = tmp_path / "widget.obj"
    mesh.write_text(MeshData.obj_text(_cube(False)))
    cfg = small_config(tmp_path, "scene=custom", "~scene.objects.box",
                       f"+scene.objects.widget={{asset: {mesh}, count: [2, 3], scale: 0.05}}", "width=160", "height=160")
    out = render_dataset(cfg, log=lambda m: None)
    doc = check_invariants(out)
    assert [c["name"] for c in doc["categories"]] == ["widget"]


def test_egl_matches_tiny(tmp_path):
    """Same seed, both renderers: same instances, boxes within 2 px, masks overlapping."""
    egl_or_skip()
    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout

    recs = {}
    for r in ("tiny", "egl"):
        cfg = small_config(tmp_path, f"renderer={r}", "width=320", "height=240", "randomization.sensor.enabled=false")
        with quiet_stdout(), Generator(cfg) as g:
            recs[r] = [g.generate(i) for i in range(2)]
    for a, b in zip(recs["tiny"], recs["egl"]):
        assert [i.category for i in a.instances] == [i.category for i in b.instances]
        for x, y in zip(a.instances, b.instances):
            assert np.max(np.abs(np.subtract(x.bbox_xyxy, y.bbox_xyxy))) <= 2
            assert (x.mask & y.mask).sum() / (x.mask | y.mask).sum() > 0.75


def test_egl_render_end_to_end(tmp_path):
    egl_or_skip()
    out = render_dataset(small_config(tmp_path, "renderer=egl", "n_images=2"), log=lambda m: None)
    check_invariants(out)


def test_reprojection_matches_masks(tmp_path):
    """The pose and K written to COCO project each die's centre inside its visible mask box."""
    out = render_dataset(small_config(tmp_path, "width=320", "height=320", "randomization=none"), log=lambda m: None)
    doc = json.loads((out / "annotations.json").read_text())
    K = {im["id"]: np.array(im["K"]) for im in doc["images"]}
    n = 0
    for a in doc["annotations"]:
        if a["visible_fraction"] < 0.95:
            continue
        t = np.array(a["pose"]["t"])
        u, v, w = K[a["image_id"]] @ t
        x, y, bw, bh = a["bbox"]
        assert x - 1 <= u / w <= x + bw + 1 and y - 1 <= v / w <= y + bh + 1
        n += 1
    assert n > 0


def test_software_gl_threads_shared_between_workers(monkeypatch):
    from simgen.render import share_software_gl

    monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr("simgen.train.threads._cgroup_quota", lambda: None)  # 4 usable cores, whatever this machine's quota
    share_software_gl(1)  # one process: llvmpipe's own default is right
    assert "LP_NUM_THREADS" not in os.environ
    share_software_gl(2)
    assert os.environ["LP_NUM_THREADS"] == "2"
    monkeypatch.setenv("LP_NUM_THREADS", "3")  # the user's choice wins
    share_software_gl(8)
    assert os.environ["LP_NUM_THREADS"] == "3"
    monkeypatch.delenv("LP_NUM_THREADS")
    share_software_gl(8)  # more workers than cores: at least one thread each
    assert os.environ["LP_NUM_THREADS"] == "1"


def test_opencv_threads_shared_between_workers(monkeypatch):
    """OpenCV's pool of one thread per core in every render process oversubscribes the cores as llvmpipe's did:
    each process gets its share, the count before is handed back, and OpenCV's own variable wins."""
    import cv2

    from simgen.render import share_cv_threads

    monkeypatch.delenv("OPENCV_FOR_THREADS_NUM", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr("simgen.train.threads._cgroup_quota", lambda: None)
    start = cv2.getNumThreads()
    try:
        assert share_cv_threads(1) == start and cv2.getNumThreads() == start  # one process: OpenCV's default
        assert share_cv_threads(4) == start and cv2.getNumThreads() == 4
        assert share_cv_threads(24) == 4 and cv2.getNumThreads() == 1  # more processes than cores: one each
        cv2.setNumThreads(start)
        monkeypatch.setenv("OPENCV_FOR_THREADS_NUM", "3")
        share_cv_threads(8)
        assert cv2.getNumThreads() == start
    finally:
        cv2.setNumThreads(start)


def test_egl_draws_urdf_assets_at_their_own_scale(tmp_path):
    """The same URDF at two scales in one process: under EGL the second body used to be drawn at the
    first one's scale (the plugin caches meshes by file name), so its mask was too big or too small."""
    egl_or_skip()
    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout

    recs = {}
    for r in ("tiny", "egl"):
        cfg = small_config(tmp_path, "scene=tabletop", f"renderer={r}", "width=320", "height=240",
                           "randomization.sensor.enabled=false", "randomization.light.shadow_probability=0",
                           "scene.objects.lego.count=[0,0]", "scene.objects.can.count=[0,0]", "scene.objects.ball.count=[0,0]",
                           "scene.objects.duck.count=[2,2]", "scene.objects.duck.scale=[0.6,1.4]",
                           "scene.objects.teddy.count=[0,0]", "scene.objects.mug.count=[1,1]", "scene.objects.mug.scale=[0.6,1.4]")
        with quiet_stdout(), Generator(cfg) as g:
            recs[r] = [g.generate(i) for i in range(4)]
    n = 0
    for a, b in zip(recs["tiny"], recs["egl"]):
        assert [i.category for i in a.instances] == [i.category for i in b.instances]
        for x, y in zip(a.instances, b.instances):
            if x.mask.sum() < 50:
                continue
            assert 0.85 < y.mask.sum() / x.mask.sum() < 1.15, (x.category, x.mask.sum(), y.mask.sum())
            n += 1
    assert n >= 6


@pytest.mark.parametrize("name", ["duck", "mug", "lego", "primitives"])
def test_scaled_urdf_copy_is_the_scaled_geometry(tmp_path, name):
    """The per-scale URDF copy the render world loads has exactly ``scale`` times the original's geometry."""
    from pathlib import Path

    from simgen import assets

    if name == "primitives":
        path = tmp_path / "prim.urdf"
        path.write_text('<robot name="p"><link name="base"><visual><origin xyz="0.1 0 0.02"/><geometry><box size="0.1 0.2 0.3"/>'
                        '</geometry></visual><visual><geometry><cylinder radius="0.05" length="0.2"/></geometry></visual></link></robot>')
    else:
        path = assets.resolve(name).path
    pts, _ = assets.urdf_geometry(Path(path))
    copy = assets.scaled_urdf(Path(path), 1.7)
    scaled, _ = assets.urdf_geometry(copy)
    assert np.allclose(np.sort(scaled, axis=0), np.sort(1.7 * pts, axis=0), atol=1e-5)
    # the render world's copy: the same visual geometry, no collision elements (nothing to bake or hull)
    drawn = assets.scaled_urdf(Path(path), 1.7, visual_only=True)
    assert np.array_equal(assets.urdf_geometry(drawn)[0], scaled) and "<collision" not in drawn.read_text()


def test_renderer_auto_picks_one_says_why_and_keeps_labels(tmp_path):
    """`renderer=auto` resolves once per run to a working renderer, says which and why (log and manifest), and its
    labels are those of the chosen renderer asked for by name."""
    lines = []
    auto = render_dataset(small_config(tmp_path, "renderer=auto", "width=160", "height=120", name="auto"), log=lines.append)
    man = json.loads((auto / "manifest.json").read_text())
    assert man["renderer"] in ("tiny", "egl", "gl") and man["renderer_requested"] == "auto" and man["renderer_choice"]
    assert any(ln.startswith(f"renderer=auto: {man['renderer']} (") for ln in lines)
    named = render_dataset(small_config(tmp_path, f"renderer={man['renderer']}", "width=160", "height=120", name="named"), log=lambda m: None)
    a, b = (json.loads((d / "annotations.json").read_text())["annotations"] for d in (auto, named))
    assert a == b


def test_renderer_auto_falls_back_to_tiny(monkeypatch):
    from simgen import glrender, render
    from simgen.config import EGL_MAX

    def no_gl(device=None):
        raise RendererUnavailable("renderer=gl needs moderngl")

    monkeypatch.setattr(glrender, "probe_gl", no_gl)  # PyBullet's renderers alone
    assert render.choose_renderer(EGL_MAX[0] + 1, 100)[0] == "tiny"

    def no_egl(device=None, timeout=0):
        raise RendererUnavailable("renderer=egl: EGL cannot start here (no EGL vendor library or device); install Mesa")

    monkeypatch.setattr(render, "probe_egl", no_egl)
    monkeypatch.delenv("SIMGEN_EGL_OK_None", raising=False)
    name, why = render.choose_renderer(320, 240)
    assert name == "tiny" and why.startswith("EGL unavailable (EGL cannot start here")
    monkeypatch.setattr(render, "probe_egl", lambda device=None, timeout=0: "NVIDIA H100 PCIe/PCIe/SSE2")
    assert render.choose_renderer(320, 240) == ("egl", "EGL on NVIDIA H100 PCIe/PCIe/SSE2")


def test_renderer_auto_prefers_the_gl_renderer_where_it_runs(monkeypatch, tmp_path):
    """Where simgen's GL renderer starts, auto takes it wherever EGL would have been chosen, and above EGL's buffer;
    where TinyRenderer wins the speed probe (tiny images on a software rasterizer) it stays TinyRenderer."""
    from simgen import glrender, render
    from simgen.config import EGL_MAX

    monkeypatch.setattr(glrender, "probe_gl", lambda device=None: "NVIDIA H200/PCIe/SSE2 (3.3.0 NVIDIA 580.159.04)")
    monkeypatch.setattr(render, "probe_egl", lambda device=None, timeout=0: "NVIDIA H200/PCIe/SSE2")
    monkeypatch.delenv("SIMGEN_EGL_OK_None", raising=False)  # an earlier real probe's answer
    name, why = render.choose_renderer(640, 480)
    assert name == "gl" and why.startswith("simgen's GL renderer on NVIDIA H200/PCIe/SSE2, one pass") and "EGL on NVIDIA" in why
    name, why = render.choose_renderer(EGL_MAX[0] + 1, 100)
    assert name == "gl" and "EGL renders at most" in why
    monkeypatch.setattr(render, "_choose_pybullet_renderer", lambda *a: ("tiny", "TinyRenderer draws a 64x64 probe in 2 ms vs EGL 17 ms"))
    assert render.choose_renderer(64, 64)[0] == "tiny"

    # a scene with a URDF whose visual mesh gl cannot read (here: not there): PyBullet's renderer, and why
    stl = tmp_path / "w.urdf"
    stl.write_text('<robot name="w"><link name="b"><visual><geometry><mesh filename="part.dae"/></geometry></visual></link></robot>')
    monkeypatch.setattr(render, "_choose_pybullet_renderer", lambda *a: ("egl", "EGL on NVIDIA H200/PCIe/SSE2"))
    name, why = render.choose_renderer(640, 480, assets=(stl,))
    assert name == "egl" and why.endswith("not simgen's GL renderer: `" + str(stl) + "` has a .dae visual mesh simgen cannot read")


def test_concurrent_runs_share_one_renderer_auto_verdict(tmp_path, monkeypatch):
    """The shards of one `-m` sweep start together: each timed its own probe, and two close timings chose tiny for one
    shard and egl for the other (a merge of the two mixed renderers). The probe now runs under a lock beside its cache:
    the second run waits and reads the first's verdict."""
    import json
    import threading
    import time
    import types

    from simgen import render

    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIMGEN_EGL_OK_None", "llvmpipe (LLVM 15.0.6, 256 bits)")
    verdicts = iter([{"tiny_ms": 20.0, "egl_ms": 30.0}, {"tiny_ms": 30.0, "egl_ms": 20.0}])  # the two runs' own timings

    def probe(*a, **k):
        time.sleep(0.3)  # both runs are inside the probe at once without the lock
        return types.SimpleNamespace(stdout="SIMGEN_SPEED " + json.dumps(next(verdicts)) + "\n")

    monkeypatch.setattr(render.subprocess, "run", probe)
    got: list[str] = []
    runs = [threading.Thread(target=lambda: got.append(render._choose_pybullet_renderer(272, 204)[0])) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert got == ["tiny", "tiny"]
    # a probe that fails is the answer for a while: the runs queued on the lock do not each pay for (or hang in) it
    calls = []

    def broken(*a, **k):
        calls.append(1)
        return types.SimpleNamespace(stdout="")

    monkeypatch.setattr(render.subprocess, "run", broken)
    assert [render._choose_pybullet_renderer(320, 240) for _ in range(3)] == [("tiny", "the EGL speed probe failed")] * 3
    assert len(calls) == 1
    import fcntl

    monkeypatch.setattr(fcntl, "flock", lambda *a: (_ for _ in ()).throw(OSError(37, "No locks available")))  # NFS: ENOLCK
    assert render._choose_pybullet_renderer(272, 204)[0] == "tiny"  # runs unlocked, as before there was a lock


def test_resume_keeps_the_renderer_auto_chose(tmp_path):
    """A resumed run renders with what the interrupted one chose, whatever a new probe would say."""
    import dataclasses

    from simgen.run import STATE, resolve_renderer

    cfg = small_config(tmp_path, "renderer=auto", "n_images=4")
    out = cfg.out
    (out / STATE).parent.mkdir(parents=True)
    from simgen.run import config_hash, previous_renderer

    (out / STATE).write_text(json.dumps({"config_hash": config_hash(cfg), "renderer": "tiny"}))
    assert previous_renderer(cfg) == "tiny"
    assert resolve_renderer(cfg, lambda m: None, previous_renderer(cfg)).renderer == "tiny"
    assert previous_renderer(dataclasses.replace(cfg, overwrite=True)) is None


def test_egl_probe_started_early_is_collected_once_and_stopped_if_unused(monkeypatch, tmp_path):
    """The CLI starts the EGL probe before composing the config; probe_egl then collects that process instead of
    starting another, and a probe nobody collects is killed at exit (no stray process)."""
    from simgen import eglprobe

    egl_or_skip()
    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path))  # no cached answer: the probe process runs
    monkeypatch.delenv("SIMGEN_EGL_OK_None", raising=False)
    eglprobe.start_probe()
    proc = eglprobe._started[None]
    eglprobe.start_probe()  # a second start while one runs: the same process
    assert eglprobe._started[None] is proc
    assert eglprobe.probe_egl() and proc.returncode == 0 and None not in eglprobe._started
    eglprobe.start_probe()  # the answer is known now (in the environment): nothing to start
    assert None not in eglprobe._started
    monkeypatch.delenv("SIMGEN_EGL_OK_None")
    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path / "empty"))
    eglprobe.start_probe()
    proc = eglprobe._started[None]
    eglprobe._stop(eglprobe._started, None)  # what atexit does with a probe never collected
    assert proc.returncode is not None and None not in eglprobe._started


def test_egl_probe_answer_is_cached_per_machine_and_reprobed_when_egl_changes(monkeypatch, tmp_path):
    """A "yes" from the probe process is kept under a fingerprint of the machine's EGL, so later runs start no probe
    process; a changed fingerprint (here: an EGL environment variable) probes again; a "no" is never kept."""
    from simgen import eglprobe
    from simgen.errors import RendererUnavailable

    egl_or_skip()
    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path))
    monkeypatch.delenv("SIMGEN_EGL_OK_None", raising=False)
    monkeypatch.delenv("__EGL_VENDOR_LIBRARY_DIRS", raising=False)
    monkeypatch.delenv("__EGL_VENDOR_LIBRARY_FILENAMES", raising=False)  # it would take precedence over the folder below
    vendor = eglprobe.probe_egl()  # the real probe process
    assert eglprobe.cached_vendor(None) == vendor
    spawned = []

    def no_process(device):
        spawned.append(device)
        raise AssertionError("a probe process was started although the answer is cached")

    monkeypatch.setattr(eglprobe, "_spawn", no_process)
    monkeypatch.delenv("SIMGEN_EGL_OK_None")
    eglprobe.start_probe()
    assert os.environ["SIMGEN_EGL_OK_None"] == vendor and not spawned
    monkeypatch.delenv("SIMGEN_EGL_OK_None")
    assert eglprobe.probe_egl() == vendor and not spawned
    # glvnd reads its vendor files from this folder: a changed EGL, so the cached answer no longer holds
    monkeypatch.setenv("__EGL_VENDOR_LIBRARY_DIRS", str(tmp_path / "no-vendors"))
    monkeypatch.delenv("SIMGEN_EGL_OK_None")
    assert eglprobe.cached_vendor(None) is None
    monkeypatch.undo()  # the real _spawn again
    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path))
    monkeypatch.delenv("SIMGEN_EGL_OK_None", raising=False)
    monkeypatch.delenv("__EGL_VENDOR_LIBRARY_FILENAMES", raising=False)
    monkeypatch.setenv("__EGL_VENDOR_LIBRARY_DIRS", str(tmp_path / "no-vendors"))
    with pytest.raises(RendererUnavailable):  # no vendor library found: the real probe process says no...
        eglprobe.probe_egl()
    assert eglprobe.cached_vendor(None) is None  # ...and that is not kept


def test_a_cached_egl_answer_expires_and_is_voided_by_a_load_that_died(monkeypatch, tmp_path):
    """A cached "yes" lasts a day; and a process that died while loading EGL in-process (its marker left behind) voids
    every cached answer, so the next run probes in a throwaway process again instead of dying the same way."""
    import time

    from simgen import eglprobe

    if eglprobe.fingerprint(None) is None:
        pytest.skip("PyBullet's eglRenderer plugin is not installed")
    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path))
    eglprobe._remember(None, "some GL")
    assert eglprobe.cached_vendor(None) == "some GL"
    with eglprobe.loading():  # a live process loading: its marker stands, the answer too
        assert list((tmp_path / "egl-loading").iterdir()) and eglprobe.cached_vendor(None) == "some GL"
    assert not list((tmp_path / "egl-loading").iterdir())  # a load that succeeded removes its marker
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "egl-loading" / dead.stdout.strip()).touch()  # what a process killed inside loadPlugin leaves
    assert eglprobe.cached_vendor(None) is None and not (tmp_path / "egl-probe.json").exists()
    assert not list((tmp_path / "egl-loading").iterdir())
    eglprobe._remember(None, "some GL")
    monkeypatch.setattr(time, "time", lambda: 1e12)  # far more than a day later
    assert eglprobe.cached_vendor(None) is None


def test_writer_thread_writes_the_same_bytes_and_raises_its_errors(tmp_path, monkeypatch):
    """Writing one image behind generation on a thread (where a core is free) writes byte for byte what writing inline
    does, in order; an error while writing reaches the caller instead of vanishing with the thread."""
    from simgen import run
    from simgen.pipeline import Generator

    outs = {}
    for overlap in (False, True):
        cfg = small_config(tmp_path, "n_images=4", name=f"o{overlap}")
        cfg.out.mkdir(parents=True)
        with Generator(cfg) as gen:
            stats = list(run.render_each(gen, cfg, [0, 1, 2, 3], {c: k + 1 for k, c in enumerate(cfg.scene.categories)}, overlap=overlap))
        assert len(stats) == 4 and all(s["write_ms"] > 0 and s["writer_thread"] is overlap for s in stats)
        outs[overlap] = {p.relative_to(cfg.out).as_posix(): p.read_bytes() for p in sorted(cfg.out.rglob("*")) if p.is_file()}
    assert outs[False].keys() == outs[True].keys() and len(outs[True]) == 8  # 4 images + 4 label parts
    assert outs[False] == outs[True]

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run.coco, "write_record", full)
    cfg = small_config(tmp_path, name="full")
    cfg.out.mkdir(parents=True)
    with Generator(cfg) as gen, pytest.raises(OSError, match="No space"):
        list(run.render_each(gen, cfg, [0, 1], {c: k + 1 for k, c in enumerate(cfg.scene.categories)}, overlap=True))


def test_physics_feeder_settles_the_same_scenes_ahead(tmp_path):
    """A physics process beside the renderer (physics_process) hands over the very scenes the generator settles
    itself: the same records, image for image, with the scenes it settled marked in the stats."""
    from simgen.pipeline import Generator

    cfg = small_config(tmp_path, "n_images=6", "views_per_scene=2", "width=96", "height=96")
    with Generator(cfg) as gen:
        plain = [gen.generate(i) for i in range(6)]
    with Generator(cfg, physics_process=True) as gen:
        gen.feeder.hello.result(timeout=120)  # let it start, so that this test does not race its start-up
        gen.plan(list(range(6)))  # scenes 0, 2, 4
        assert sorted(gen.feeder.futures) == [0, 2]  # two ahead
        fed = [gen.generate(i) for i in range(6)]
    assert [r.stats["physics_process"] for r in fed] == [True] * 6
    assert all(not r.stats["physics_process"] for r in plain)
    for a, b in zip(plain, fed):
        assert a.index == b.index and np.array_equal(a.rgb, b.rgb)
        key = lambda r: [(x.category, x.bbox_xyxy, x.area, x.pose_R, x.pose_t, x.mask.tobytes()) for x in r.instances]  # noqa: E731
        assert a.instances and key(a) == key(b)


@pytest.mark.parametrize("workers,renderer", [(1, "tiny"), (2, "tiny"), (1, "egl")])
def test_physics_process_run_writes_the_same_dataset_and_ends(tmp_path, workers, renderer):
    """physics_process=true writes what false writes (labels and pixels), records its share in the manifest, and the
    run ends: a render worker's feeder is stopped before multiprocessing joins the worker's children at exit. With EGL
    too: the feeder never loads a renderer, and its physics must not differ from a process that did."""
    if renderer == "egl":
        egl_or_skip()
    runs = {}
    for flag in ("false", "true"):
        cfg = small_config(tmp_path, "n_images=8", "width=96", "height=96", f"workers={workers}", f"physics_process={flag}",
                           "image_format=png", f"renderer={renderer}", name=f"{flag}{workers}{renderer}")
        render_dataset(cfg, log=lambda m: None)
        doc = json.loads((cfg.out / "annotations.json").read_text())
        runs[flag] = (doc["annotations"], {p.name: p.read_bytes() for p in sorted((cfg.out / "images").iterdir())},
                      json.loads((cfg.out / "manifest.json").read_text()))
    assert runs["false"][0] == runs["true"][0] and runs["false"][1] == runs["true"][1]
    assert runs["false"][2]["physics_process_share"] == 0.0
    assert 0.0 <= runs["true"][2]["physics_process_share"] <= 1.0
    assert runs["false"][2]["state"] == runs["true"][2]["state"]  # not part of the config's identity: resumes either way


def test_physics_process_auto_needs_free_cores_enough_scenes_and_simgens_own_main(monkeypatch):
    import sys
    import types

    from simgen import feeder
    from simgen.train import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(feeder, "main_is_safe", lambda: True)
    assert feeder.wanted("auto", 1, 100) and not feeder.wanted("auto", 2, 100)  # a core per feeder, or none
    assert not feeder.wanted("auto", 1, feeder.MIN_SCENES - 1)  # too short a run for its start-up to pay
    assert feeder.wanted(True, 2, 1) and not feeder.wanted(False, 1, 100)
    with pytest.raises(ValueError, match="true, false or auto"):
        feeder.wanted("false", 1, 100)  # a string is not a flag
    monkeypatch.setattr(feeder, "main_is_safe", lambda: False)
    assert not feeder.wanted("auto", 1, 100) and feeder.wanted(True, 1, 100)
    monkeypatch.undo()

    def main(file=None, spec=None):
        m = types.ModuleType("__main__")
        if file:
            m.__file__ = file
        m.__spec__ = spec
        return m

    cases = [(main("/usr/local/bin/simgen"), True), (main("/x/simgen/cli.py", types.SimpleNamespace(name="simgen.cli")), True),
             (main(), True), (main("/home/u/make_data.py"), False)]  # a user's script may lack the __main__ guard
    for module, safe in cases:
        monkeypatch.setitem(sys.modules, "__main__", module)
        assert feeder.main_is_safe() is safe, module


def test_physics_feeder_failures_fall_back_to_settling_here(tmp_path):
    """A scene the feeder failed on is settled here (so its error reads as without a feeder), and a feeder that dies
    (killed, out of memory) costs nothing but its help: every scene is then settled here, with the same result."""
    import signal
    from concurrent.futures import Future

    from simgen.errors import PlacementError
    from simgen.pipeline import Generator

    cfg = small_config(tmp_path, "n_images=4", "width=64", "height=64")
    with Generator(cfg) as gen:
        plain = [gen.generate(i) for i in range(4)]
    with Generator(cfg, physics_process=True) as gen:
        pid = gen.feeder.hello.result(timeout=120)
        gen.plan([0, 1, 2, 3])
        failed: Future = Future()
        failed.set_exception(PlacementError("cannot place"))
        gen.feeder.futures[0].result(timeout=120)
        gen.feeder.futures[0] = failed  # as if the feeder had failed on scene 0
        first = gen.generate(0)
        assert first.stats["physics_process"] is False and gen.feeder.pool is not None  # settled here; the feeder lives on
        os.kill(pid, signal.SIGKILL)
        rest = [gen.generate(i) for i in range(1, 4)]
        assert gen.feeder.pool is None  # noticed the death and stopped asking
    for a, b in zip(plain, [first, *rest]):
        assert np.array_equal(a.rgb, b.rgb) and [x.bbox_xyxy for x in a.instances] == [x.bbox_xyxy for x in b.instances]


def test_render_texture_is_an_exact_bmp_copy_of_png_only(tmp_path):
    """PyBullet is handed PNG textures as uncompressed BMP copies (no inflate per new shape): the same pixels;
    files whose conversion would not be exact (alpha, 16-bit, a JPEG named .png) are handed over as they are."""
    import cv2

    from simgen.textures import render_texture

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 48, 3), np.uint8)
    grey = rng.integers(0, 256, (16, 16), np.uint8)
    for name, img in (("rgb.png", rgb), ("grey.png", grey)):
        cv2.imwrite(str(tmp_path / name), img)
        out = render_texture(tmp_path / name)
        assert out.suffix == ".bmp"
        want = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        assert np.array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), want)
        assert render_texture(tmp_path / name) == out  # made once
    cv2.imwrite(str(tmp_path / "alpha.png"), np.dstack([rgb, rgb[..., 0]]))
    cv2.imwrite(str(tmp_path / "deep.png"), rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "photo.jpg"), rgb)
    (tmp_path / "named.png").write_bytes((tmp_path / "photo.jpg").read_bytes())
    for name in ("alpha.png", "deep.png", "photo.jpg", "named.png", "missing.png"):
        assert render_texture(tmp_path / name) == tmp_path / name
    before = render_texture(tmp_path / "rgb.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), 255 - rgb)  # edited in place: a copy of its own
    os.utime(tmp_path / "rgb.png", ns=(1, 1))
    after = render_texture(tmp_path / "rgb.png")
    assert after != before and np.array_equal(cv2.imread(str(after)), 255 - rgb)


def test_egl_world_past_its_shape_budget_is_reset_and_draws_the_same(tmp_path):
    """PyBullet's EGL plugin holds 128 MB of shape vertices and silently draws nothing past it (a dense scan lost its
    objects from the sixth (scale, texture) copy on). A render world about to pass its budget is reset and refilled:
    the frames after a reset equal those of a world that never reset (budget lowered so the test stays small)."""
    egl_or_skip()
    from simgen.pipeline import Generator
    from simgen.render import EGL_SHAPE_BUDGET
    from simgen.run import quiet_stdout

    from simgen import assets
    from simgen.render import SHAPE_BYTES_PER_TRIANGLE

    cfg = small_config(tmp_path, "scene=dice", "renderer=egl", "width=128", "height=128", "randomization.sensor.enabled=false")
    frames, need = {}, []
    for budget in (None, "small"):
        with quiet_stdout(), Generator(cfg) as g:
            assert g.world.shape_budget == EGL_SHAPE_BUDGET
            if budget:  # room for the largest scene, not for all of them: a reset before some scene
                g.world.shape_budget = max(need)
                assert sum(need) > max(need)
            frames[budget] = []
            for i in range(4):
                keys = {(o.sample.asset, o.sample.scale, o.sample.texture) for o in g.scene(i)[0].objects}
                need.append(sum(SHAPE_BYTES_PER_TRIANGLE * len(assets.resolve(k[0]).triangles) for k in keys))
                frames[budget].append(g.generate(i))
            flushes = g.world.flushes
        assert flushes >= 1 if budget else flushes == 0, flushes
    for a, b in zip(frames[None], frames["small"]):
        assert np.array_equal(a.rgb, b.rgb)
        assert [(i.category, i.bbox_xyxy) for i in a.instances] == [(i.category, i.bbox_xyxy) for i in b.instances]


def test_a_scene_larger_than_the_egl_shape_budget_is_one_clear_error(tmp_path):
    egl_or_skip()
    from simgen.errors import AssetError
    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout

    cfg = small_config(tmp_path, "scene=dice", "renderer=egl", "width=64", "height=64")
    with quiet_stdout(), Generator(cfg) as g:
        g.world.shape_budget = 1000
        with pytest.raises(AssetError, match="renderer=egl holds 0.0 MB .* use renderer=tiny"):
            g.generate(0)


def test_an_error_starting_the_next_image_comes_after_this_ones_record(monkeypatch):
    """The render loop submits image k+1 before it finishes image k (run.generated): an error while starting k+1 must
    not lose image k, which is finished and handed out first; where finishing k fails too, the error from k+1 is
    raised with k's as its context, not dropped. Images before the failure come out in order, each once."""
    from types import SimpleNamespace

    from simgen import pipeline, run

    class Fake:
        cfg = SimpleNamespace(labels=None)

        def __init__(self, bad_start: int, bad_finish: int | None = None):
            self.bad_start, self.bad_finish = bad_start, bad_finish

        def start(self, i):
            if i == self.bad_start:
                raise ValueError(f"cannot start {i}")
            return i

        def done(self, i):
            return i

    def finish(drawn, labels):
        if drawn == current.bad_finish:
            raise KeyError(f"cannot finish {drawn}")
        return f"record {drawn}"

    monkeypatch.setattr(pipeline, "finish", finish)
    current = Fake(bad_start=2)
    got = []
    with pytest.raises(ValueError, match="cannot start 2"):
        for rec, ms in run.generated(current, [0, 1, 2, 3]):
            got.append(rec)
            assert ms >= 0
    assert got == ["record 0", "record 1"]

    current = Fake(bad_start=2, bad_finish=1)
    got = []
    with pytest.raises(ValueError, match="cannot start 2") as e:
        for rec, _ in run.generated(current, [0, 1, 2, 3]):
            got.append(rec)
    assert got == ["record 0"] and isinstance(e.value.__context__, KeyError)
    assert [r for r, _ in run.generated(Fake(bad_start=-1), [5, 3, 4])] == ["record 5", "record 3", "record 4"]


def test_the_next_frame_is_drawn_ahead_only_on_a_gpu_or_a_free_core(monkeypatch):
    """Drawing image k+1 while image k is labelled pays where the drawing runs elsewhere: a GPU (Renderer.offloads)
    or a free core for llvmpipe's raster threads (the writer thread's rule, `overlap`); with every core busy it only
    made threads contend (measured), so the loop then draws one image at a time."""
    from types import SimpleNamespace

    from simgen import run

    seen = []

    def generated(gen, indices, ahead=True):
        seen.append(ahead)
        return iter(())

    monkeypatch.setattr(run, "generated", generated)
    for offloads in (False, True):
        for overlap in (False, True):
            gen = SimpleNamespace(plan=lambda indices: None, renderer=SimpleNamespace(offloads=offloads))
            list(run.render_each(gen, None, [0, 1], {}, overlap=overlap))
    assert seen == [False, True, True, True]


def test_a_device_index_that_does_not_exist_is_named_as_such(monkeypatch, tmp_path):
    """renderer.devices=[99] on a machine where EGL works: the line says the device does not exist and how many there
    are, not that EGL is missing; under renderer=auto the run stops too (the device was named on purpose) instead of
    falling back to TinyRenderer."""
    from dataclasses import replace

    from simgen.eglprobe import egl_device_count
    from simgen.run import resolve_renderer

    egl_or_skip()
    count = egl_device_count()
    if count is None:
        pytest.skip("eglQueryDevicesEXT is not available here")
    monkeypatch.delenv("SIMGEN_EGL_OK_99", raising=False)
    with pytest.raises(RendererUnavailable, match=f"no EGL device 99 here \\(this machine has {count}, numbered from 0\\)"):
        probe_egl(99)
    cfg = replace(small_config(tmp_path), renderer="auto", egl_devices=(99,))
    with pytest.raises(RendererUnavailable, match="renderer.devices=\\[99\\]: no EGL device 99 here"):
        resolve_renderer(cfg, log=lambda m: None)


def test_a_users_own_labeler_module_or_file_is_found(tmp_path, monkeypatch):
    """scene.labeler (and texture banks) name simgen's scene modules, the user's importable module, or a file: no edit
    inside the installed package. A module in the working directory is found even where the `simgen` console script
    leaves the working directory off sys.path."""
    from simgen.errors import ConfigError
    from simgen.scenes_api import builtin_modules, scene_ref

    (tmp_path / "mylabels.py").write_text("def lab(obj):\n    return obj.category\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert "dice" in builtin_modules()
    assert scene_ref("dice:top_face_label", "scene.labeler").__name__ == "top_face_label"
    assert scene_ref("mylabels:lab", "scene.labeler").__name__ == "lab"
    assert scene_ref(f"{tmp_path / 'mylabels.py'}:lab", "scene.labeler").__name__ == "lab"
    for ref, says in (("nope:f", "no scenes/nope.py and no importable module `nope`"), ("dice:nofn", "has no function `nofn`"),
                      ("./none.py:f", "no file ./none.py"), ("mylabels", "must look like `module:function`")):
        with pytest.raises(ConfigError, match=says):
            scene_ref(ref, "scene.labeler")


def test_a_labeler_naming_an_unknown_category_is_one_line_and_leaves_nothing(tmp_path):
    """A labeler returning a name scene.categories lacks stopped with a KeyError deep in the writer and left a folder
    that refused the corrected command ("a different config"). Now: one line naming the category, no folder; and a
    folder holding only a stopped run's state is taken over by the next run."""
    out = tmp_path / "lb"
    base = [sys.executable, "-m", "simgen", "render", "scene=custom", "n_images=3", "width=64", "height=64", "renderer=tiny",
            "progress=false", f"out={out}"]
    r = subprocess.run([*base, "scene.labeler=dice:top_face_label"], capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "scene.labeler `dice:top_face_label` named an object" in lines[0], r.stderr
    assert "not one of scene.categories (box)" in lines[0] and not out.exists()
    (out / ".simgen").mkdir(parents=True)
    (out / ".simgen" / "state.json").write_text('{"config_hash": "another config"}')
    r = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "3 images" in r.stderr, r.stderr


def test_a_labeler_that_raises_is_one_line_naming_where(tmp_path):
    """A labeler raising an exception gave a 44-line traceback through simgen; now one line with the exception and
    the labeler's own file and line, and no folder."""
    (tmp_path / "mylabels.py").write_text("import numpy as np\n\ndef boom(obj):\n    return np.linalg.inv(np.zeros((2, 2)))\n")
    out = tmp_path / "lb"
    r = subprocess.run([sys.executable, "-m", "simgen", "render", "scene=custom", "n_images=2", "width=64", "height=64",
                        "renderer=tiny", "progress=false", f"out={out}", "scene.labeler=mylabels.py:boom"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    # the line in the labeler, not the innermost frame (inside numpy)
    assert "raised LinAlgError: Singular matrix (at " in lines[0] and "mylabels.py:4, labelling a `box`" in lines[0], lines[0]
    assert not out.exists()


TWO_LINK = """<?xml version="1.0"?>
<robot name="twolink">
  <link name="base">
    <inertial><mass value="0.1"/><inertia ixx="1e-4" ixy="0" ixz="0" iyy="1e-4" iyz="0" izz="1e-4"/></inertial>
    <visual><geometry><box size="0.04 0.04 0.04"/></geometry></visual>
    <collision><geometry><box size="0.04 0.04 0.04"/></geometry></collision>
  </link>
  <link name="arm">
    <inertial><mass value="0.05"/><inertia ixx="1e-5" ixy="0" ixz="0" iyy="1e-5" iyz="0" izz="1e-5"/></inertial>
    <visual><geometry><box size="0.06 0.02 0.02"/></geometry></visual>
    <collision><geometry><box size="0.06 0.02 0.02"/></geometry></collision>
  </link>
  <joint name="j" type="JOINT"><parent link="base"/><child link="arm"/><origin xyz="0.05 0 -0.01"/>LIMIT</joint>
</robot>
"""


def _link(name: str, size: str, xyz: str = "0 0 0") -> str:
    box = f'<origin xyz="{xyz}"/><geometry><box size="{size}"/></geometry>'
    return (f'<link name="{name}"><visual>{box}</visual><collision>{box}</collision><inertial><mass value="0.05"/>'
            '<inertia ixx="1e-5" ixy="0" ixz="0" iyy="1e-5" iyz="0" izz="1e-5"/></inertial></link>')


THIN_ARM = ('<?xml version="1.0"?><robot name="arm">' + _link("base", "0.06 0.06 0.02") + _link("post", "0.01 0.01 0.08", "0 0 0.04")
            + _link("bar", "0.08 0.008 0.008", "0.03 0 0") +
            '<joint name="a" type="fixed"><parent link="base"/><child link="post"/><origin xyz="0 0 0.01"/></joint>'
            '<joint name="b" type="fixed"><parent link="post"/><child link="bar"/><origin xyz="0 0 0.08"/></joint></robot>')


def test_a_urdf_link_whose_mesh_labels_cannot_read_is_warned_about(tmp_path):
    """A link whose mesh simgen cannot read (here an STL with no triangles) was silently left out of the label geometry
    (the amodal box came out smaller than the visible one). The run says which links, and what to do; a mesh file that
    is not there at all is refused, named (PyBullet's own error named only the URDF). A readable STL is read
    (tests/test_glrender.py::test_gl_draws_a_urdfs_stl_and_collada_visuals_as_pybullet_does)."""
    from simgen.run import joint_warnings

    (tmp_path / "bar.stl").write_text("solid bar\nendsolid bar\n")
    urdf = tmp_path / "mixed.urdf"
    urdf.write_text(THIN_ARM.replace('<geometry><box size="0.08 0.008 0.008"/></geometry>', '<geometry><mesh filename="bar.stl"/></geometry>'))
    cfg = small_config(tmp_path, "scene=custom", "~scene.objects.box", f"+scene.objects.arm={{asset: {urdf}, count: 1}}")
    (w,) = joint_warnings(cfg)
    assert w.startswith("warning: scene.objects.arm:") and "cannot read (bar: bar.stl)" in w and "export them again as .obj or .stl" in w
    urdf.write_text(THIN_ARM)
    from simgen import assets
    from simgen.errors import AssetError

    assets.resolve.cache_clear(), assets._urdf_root.cache_clear()
    assert joint_warnings(cfg) == []
    gone = tmp_path / "gone.urdf"  # PyBullet's own error named the URDF only, at the first physics load
    gone.write_text(THIN_ARM.replace('<geometry><box size="0.08 0.008 0.008"/></geometry>', '<geometry><mesh filename="parts/bar.obj"/></geometry>'))
    with pytest.raises(AssetError, match=r"names mesh `parts/bar.obj`, which does not exist \(looked for .*parts/bar.obj and in the folders above it"):
        assets.resolve(str(gone))


def test_a_multi_link_urdf_is_labelled_as_a_whole(tmp_path):
    """Every link of a URDF counts for its label geometry: an unoccluded two-link model's amodal box holds its visible
    box (it was the base link's alone, smaller than what is seen). A movable joint is warned about."""
    from simgen import assets
    from simgen.run import joint_warnings

    urdf = tmp_path / "twolink.urdf"
    urdf.write_text(TWO_LINK.replace("JOINT", "fixed").replace("LIMIT", ""))
    pts = assets.resolve(str(urdf)).points
    assert np.ptp(pts[:, 0]) == pytest.approx(0.10) and pts[:, 0].max() == pytest.approx(0.08)  # base -2..2 cm, arm 2..8 cm
    cfg = small_config(tmp_path, "scene=custom", "~scene.objects.box", f"+scene.objects.twolink={{asset: {urdf}, count: [1, 2]}}",
                       "n_images=6", "width=160", "height=160")
    assert joint_warnings(cfg) == []
    doc = json.loads((render_dataset(cfg, log=lambda m: None) / "annotations.json").read_text())
    whole = [a for a in doc["annotations"] if a["visible_fraction"] >= 0.97 and not a["truncated"]]
    assert len(whole) >= 3
    for a in whole:
        (x, y, w, h), (ax, ay, aw, ah) = a["bbox"], a["bbox_amodal"]
        assert ax <= x + 1 and ay <= y + 1 and ax + aw >= x + w - 1 and ay + ah >= y + h - 1, (a["bbox"], a["bbox_amodal"])
    # visible_fraction of a thin concave model is its silhouette rasterized in the image's projection: an unoccluded
    # one is whole (the 512-direction table put a thin arm at 0.86-0.96 with every pixel visible)
    arm = tmp_path / "arm.urdf"  # a plate, a thin post and a thin crossbar: a silhouette far from its hull
    arm.write_text(THIN_ARM)
    cfg = small_config(tmp_path, "scene=custom", "~scene.objects.box", f"+scene.objects.arm={{asset: {arm}, count: 1}}",
                       "scene.distractors=[]", "labels.amodal_mask=true", "n_images=8", "width=240", "height=180", name="vf")
    doc = json.loads((render_dataset(cfg, log=lambda m: None) / "annotations.json").read_text())
    from pycocotools import mask as mask_utils

    seen = [(a["visible_fraction"], mask_utils.area(a["segmentation"]) / mask_utils.area(a["segmentation_amodal"]))
            for a in doc["annotations"] if not a["truncated"]]
    unoccluded = [vf for vf, share in seen if share >= 0.99]  # the amodal mask is rasterized apart: a pixel or two off
    assert len(unoccluded) >= 3 and min(unoccluded) >= 0.97, seen
    moving = tmp_path / "hinge.urdf"
    moving.write_text(TWO_LINK.replace("JOINT", "revolute").replace("LIMIT", '<axis xyz="0 0 1"/><limit lower="-1" upper="1" effort="1" velocity="1"/>'))
    cfg = small_config(tmp_path, "scene=custom", "~scene.objects.box", f"+scene.objects.hinge={{asset: {moving}, count: [1, 2]}}")
    (w,) = joint_warnings(cfg)
    assert w.startswith("warning: scene.objects.hinge:") and "movable joints (arm)" in w
