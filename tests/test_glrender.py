"""renderer=gl (simgen's own one-pass OpenGL renderer): the same instance maps, depth and labels as PyBullet's EGL
renderer on the same worlds, deterministic images, and one clear line where it cannot run."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simgen.errors import RendererUnavailable
from simgen.run import render_dataset

from .conftest import small_config
from .test_render import check_invariants, egl_or_skip


def gl_or_skip():
    from simgen.glrender import probe_gl

    try:
        return probe_gl()
    except RendererUnavailable as e:
        pytest.skip(f"no GL context here: {e}")


def frames(tmp_path, renderer: str, n: int, *overrides: str):
    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout

    cfg = small_config(tmp_path, f"renderer={renderer}", "width=320", "height=240", "randomization.sensor.enabled=false",
                       "labels.depth=npy", *overrides)
    with quiet_stdout(), Generator(cfg) as g:
        return [g.draw(i).frame for i in range(n)]


def same_instances(these, those, differ: float, iou: float) -> int:
    """Two renderers' frames of the same views: under ``differ`` of the pixels take another id, and each instance's
    masks overlap by more than ``iou``. The number of instances compared."""
    drawn = 0
    for a, b in zip(these, those):
        assert (a.instance != b.instance).mean() < differ
        for k in set(np.unique(a.instance)) - {-1}:
            ma, mb = a.instance == k, b.instance == k
            assert (ma & mb).sum() / (ma | mb).sum() > iou, (k, ma.sum(), mb.sum())
            drawn += 1
    return drawn


@pytest.mark.parametrize("scene", ["dice", "tabletop"])
def test_gl_draws_the_instance_map_and_depth_of_egl(tmp_path, scene):
    """Same worlds, same cameras: PyBullet's EGL plugin and the GL renderer rasterize the same triangles, so the instance
    maps agree pixel for pixel but for edge pixels (measured: identical on every scene tried). Tabletop covers URDF
    meshes whose centre of mass is off their link frame (teddy, duck), textures and the tray-less ground."""
    egl_or_skip()
    gl_or_skip()
    egl, gl = frames(tmp_path, "egl", 3, f"scene={scene}"), frames(tmp_path, "gl", 3, f"scene={scene}")
    assert same_instances(egl, gl, differ=2e-3, iou=0.9) >= 6
    for a, b in zip(egl, gl):
        both = (a.depth > 0) & (b.depth > 0)
        assert np.median(np.abs(a.depth[both] - b.depth[both])) < 2e-3  # metres; llvmpipe's EGL depth buffer is 16-bit


def test_gl_look_follows_tinyrenderer(tmp_path):
    """The light model is TinyRenderer's (the look the sim-to-real rounds were measured with), light colour and
    coefficients included: on the same dice views the mean colour of each image is within a few levels of tiny's
    (measured within 2), where EGL's fixed light does not follow the randomized light at all."""
    gl_or_skip()
    tiny, gl = frames(tmp_path, "tiny", 3), frames(tmp_path, "gl", 3)
    for a, b in zip(tiny, gl):
        assert np.abs(a.rgb.astype(float).mean((0, 1)) - b.rgb.astype(float).mean((0, 1))).max() < 4


def test_the_shadow_map_follows_the_image_size(tmp_path, monkeypatch):
    """A fixed 2048-texel shadow map cost llvmpipe 11-16% of a 640x480 frame's CPU for shadow edges finer than the
    image's pixels: the map's side is the power of two at or above 1.5x the image's longer side (1024 at 640x480).
    Shadows still fall where they did: a frame drawn with a 2048 map differs in a few edge pixels only."""
    from simgen import glrender

    assert [glrender.shadow_size(w, h) for w, h in ((640, 480), (640, 640), (320, 240), (64, 64), (1280, 960), (4000, 3000))] == \
        [1024, 1024, 512, 512, 2048, 4096]
    gl_or_skip()
    small = frames(tmp_path, "gl", 3, "randomization.light.shadow_probability=1.0")
    monkeypatch.setattr(glrender, "shadow_size", lambda w, h: 2048)
    big = frames(tmp_path, "gl", 3, "randomization.light.shadow_probability=1.0")
    for a, b in zip(small, big):
        assert np.array_equal(a.instance, b.instance)
        differ = np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max(axis=2)
        assert (differ > 0).mean() < 0.02 and (differ > 16).mean() < 0.002, ((differ > 0).mean(), (differ > 16).mean())


def test_gl_images_are_deterministic(tmp_path):
    gl_or_skip()
    a, b = frames(tmp_path / "a", "gl", 2), frames(tmp_path / "b", "gl", 2)
    for x, y in zip(a, b):
        assert np.array_equal(x.rgb, y.rgb) and np.array_equal(x.instance, y.instance)


def test_gl_render_end_to_end(tmp_path):
    gl_or_skip()
    out = render_dataset(small_config(tmp_path, "renderer=gl", "n_images=3", "scene=tabletop"), log=lambda m: None)
    check_invariants(out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["renderer"] == "gl" and man["renderer_device"]


def test_gl_without_moderngl_is_one_line(tmp_path, monkeypatch):
    """moderngl missing: the run stops before writing anything, saying what to install."""
    from simgen.glrender import GLRenderer

    monkeypatch.setitem(sys.modules, "moderngl", None)  # import moderngl -> ImportError
    with pytest.raises(RendererUnavailable, match=r"pip install moderngl"):
        GLRenderer().attach(None)  # type: ignore[arg-type]


def test_auto_checks_every_workers_device_before_writing(tmp_path):
    """renderer=auto decides on the first device; a worker's device that cannot start is then one line before any
    image (it used to surface as a worker dying mid-run), and each checked device is in the manifest."""
    gl_or_skip()
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "simgen", "render", "renderer=auto", "width=640", "height=480", "n_images=2", "progress=false"]
    r = subprocess.run([*cmd, "renderer.devices=[0,97]", f"out={out}"], capture_output=True, text=True, timeout=300)
    if "renderer=auto: gl" not in r.stdout + r.stderr:
        pytest.skip(f"renderer=auto did not choose gl here: {(r.stdout + r.stderr).strip().splitlines()[:1]}")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("simgen: error: renderer=gl:") and "device index 97" in lines[-1], lines[-1]
    assert not out.exists()  # not even the run's lock or an empty folder
    r = subprocess.run([*cmd, "renderer.devices=[0]", f"out={tmp_path / 'ok'}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "0" in json.loads((tmp_path / "ok" / "manifest.json").read_text())["renderer_device"]


def test_gl_on_a_device_that_does_not_exist_is_one_line(tmp_path):
    gl_or_skip()
    out = tmp_path / "ds"
    r = subprocess.run([sys.executable, "-m", "simgen", "render", "renderer=gl", "renderer.devices=[97]", "n_images=2", f"out={out}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("simgen: error: renderer=gl:") and "renderer.devices" in lines[-1]
    assert not out.exists()


def test_obj_buffers_reads_faces_uvs_normals_and_material(tmp_path):
    """Quads are fanned, missing normals become face normals, v is flipped (OBJ counts it from the bottom row), the first
    material's map_Kd is read, negative indices count back."""
    from simgen.glrender import obj_buffers

    (tmp_path / "m.mtl").write_text("newmtl a\nKs 0.2 0.2 0.2\nmap_Kd tex.png\nnewmtl b\nmap_Kd other.png\n")
    obj = tmp_path / "q.obj"
    obj.write_text("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
                   "f 1/1 2/2 3/3 4/4  # a quad\nf -4 -2 -1\n")
    data, texture = obj_buffers(obj)
    assert data.shape == (9, 8)
    assert np.allclose(data[:, 3:6], [0, 0, 1])  # face normals of counter-clockwise faces in the xy plane
    assert np.allclose(data[:3, 6:8], [[0, 1], [1, 1], [1, 0]])
    assert np.allclose(data[6:, 6:8], [0, 1])  # a face without UVs: (0, 0), flipped like the others
    assert texture == (tmp_path / "tex.png").resolve()
    # options before the file name, read as the asset check reads them (the GL renderer took "-s 1 1 1 skin.tga")
    (tmp_path / "m.mtl").write_text("newmtl a\nmap_Kd -s 1 1 1 skin.tga\n")
    assert obj_buffers(obj)[1] == (tmp_path / "skin.tga").resolve()


def test_gl_reads_a_tga_texture(tmp_path):
    """PyBullet's loader reads TGA, which OpenCV cannot: the GL renderer drew such a mesh white."""
    gl_or_skip()
    from PIL import Image

    from simgen.glrender import GLRenderer
    from simgen.render import RenderWorld

    Image.new("RGB", (4, 4), (200, 10, 10)).save(tmp_path / "skin.tga")
    r = GLRenderer()
    world = RenderWorld({})
    try:
        r.attach(world)
        tex = r.texture(tmp_path / "skin.tga")
        assert tex is not r.white and tex.size == (4, 4)
        assert np.frombuffer(tex.read(), np.uint8)[:3].tolist() == [200, 10, 10]
    finally:
        r.close()
        world.close()


def test_gl_draws_a_urdf_of_primitive_visuals_like_egl(tmp_path):
    """A user URDF made of a box, a cylinder and a capsule (no meshes): the GL renderer tessellates PyBullet's primitives
    at the sizes PyBullet reports; their silhouettes match EGL's up to tessellation at the round edges."""
    egl_or_skip()
    gl_or_skip()
    urdf = tmp_path / "widget.urdf"
    urdf.write_text('<robot name="w"><link name="base"><inertial><origin xyz="0.005 0 0"/><mass value="0.1"/>'
                    '<inertia ixx="1e-4" iyy="1e-4" izz="1e-4" ixy="0" ixz="0" iyz="0"/></inertial>'
                    '<visual><origin xyz="0 0 0.01"/><geometry><box size="0.04 0.03 0.02"/></geometry></visual>'
                    '<visual><origin xyz="0.03 0 0.01" rpy="1.5708 0 0"/><geometry><cylinder radius="0.01" length="0.03"/></geometry></visual>'
                    '<visual><origin xyz="-0.03 0 0.01"/><geometry><capsule radius="0.008" length="0.02"/></geometry></visual>'
                    '<collision><origin xyz="0 0 0.01"/><geometry><box size="0.08 0.03 0.02"/></geometry></collision></link></robot>')
    over = ["scene=custom", "~scene.objects.box", f"+scene.objects.widget={{asset: {urdf}, count: [2, 3], scale: 1.0}}"]
    egl, gl = frames(tmp_path, "egl", 2, *over), frames(tmp_path, "gl", 2, *over)
    n = 0
    for a, b in zip(egl, gl):
        for k in set(np.unique(a.instance)) - {-1}:
            ma, mb = a.instance == k, b.instance == k
            if ma.sum() > 50:
                assert (ma & mb).sum() / (ma | mb).sum() > 0.85, (k, ma.sum(), mb.sum())
                n += 1
    assert n >= 2


@pytest.mark.parametrize("name", ["die", "sphere", "can", "duck"])
def test_obj_buffers_fast_path_equals_the_line_loop(name, monkeypatch):
    """Triangle meshes written alike take a vectorized parse; it must give exactly what the general loop gives."""
    from simgen import assets, glrender

    a = assets.resolve(name)
    if a.kind == "mesh":
        path = a.path
    else:  # the duck's baked visual mesh, as the render world loads it
        import xml.etree.ElementTree as ET
        from pathlib import Path

        urdf = assets.scaled_urdf(a.path, 1.0, visual_only=True)
        path = Path(next(ET.parse(urdf).getroot().iter("mesh")).get("filename"))
    assert glrender._triangle_corners([ln for ln in open(path) if ln.startswith("f ")]) is not None
    fast = glrender.obj_buffers(path)
    monkeypatch.setattr(glrender, "_triangle_corners", lambda faces: None)
    slow = glrender.obj_buffers(path)
    assert np.array_equal(fast[0], slow[0]) and fast[1] == slow[1]


def test_gl_frames_stay_right_beside_a_second_renderer(tmp_path):
    """moderngl draws into the current context: a renderer must make its own current, or a second one alive in the
    process (train and val RenderedDatasets) would get this one's frames drawn into it."""
    gl_or_skip()
    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout

    cfg = small_config(tmp_path, "renderer=gl", "width=160", "height=120", "randomization.sensor.enabled=false")
    with quiet_stdout(), Generator(cfg) as alone:
        ref = [alone.draw(i).frame for i in range(2)]
    with quiet_stdout(), Generator(cfg) as a, Generator(cfg) as b:
        b.draw(1)
        got = [a.draw(i).frame for i in range(2)]
    for x, y in zip(ref, got):
        assert np.array_equal(x.rgb, y.rgb) and np.array_equal(x.instance, y.instance)


def test_gl_nothing_drawn_is_id_minus_one_and_background(tmp_path):
    """Pixels where nothing is drawn: body id -1 (raw) and the background colour, whatever the driver does with an
    integer buffer cleared by a float colour."""
    gl_or_skip()
    from simgen.glrender import GLRenderer
    from simgen.render import BACKGROUND, RenderWorld
    from simgen.types import Camera, Light

    world, r = RenderWorld({}), GLRenderer()
    r.attach(world)
    cam = Camera(32, 24, 30, 30, 16, 12, (0, 0, 1), (0, 0, 0), (0, 1, 0), 0.1, 2)
    rgba, depth, ids = r.raw(world, cam, Light((0, 0, 1), (1, 1, 1), 1, 0.6, 0.4, 0.1, True))
    assert (ids == -1).all() and (rgba[..., :3] == BACKGROUND).all()
    r.close()
    world.close()


def test_obj_buffers_takes_the_first_material_only_and_survives_odd_lines(tmp_path):
    from simgen.glrender import _triangle_corners, obj_buffers

    (tmp_path / "m.mtl").write_text("newmtl a\nKd 1 1 1\nnewmtl b\nmap_Kd rg.png\n")
    obj = tmp_path / "c.obj"
    obj.write_text("mtllib m.mtl\nusemtl a\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0.5\nvt 1 0\nvt 0 1\nvn 0 0 1 # up\nf 1/1/1 2/2/1 3/3/1\n")
    data, texture = obj_buffers(obj)
    assert texture is None  # PyBullet draws material a, which has no map
    assert data.shape == (3, 8) and np.allclose(data[:, 3:6], [0, 0, 1]) and np.allclose(data[0, 6:8], [0.5, 1.0])
    # lines written differently must not take the vectorized path (their totals can add up all the same)
    assert _triangle_corners(["f 1/1 2/2 3/3", "f 1/1/1 3/3/2 4/4/3", "f 5 6 2"]) is None
    assert _triangle_corners(["f 1 2 3 4", "f 1 2"]) is None


def test_auto_keeps_pybullets_renderers_for_a_urdf_gl_cannot_draw(tmp_path):
    """A URDF with a visual mesh file that is not there: renderer=gl says so in one line; renderer=auto does not pick gl
    for it. STL and Collada meshes it draws (test_gl_draws_a_urdfs_stl_and_collada_visuals_as_pybullet_does)."""
    from simgen.glrender import gl_cannot_draw

    urdf = tmp_path / "w.urdf"
    urdf.write_text('<robot name="w"><link name="b"><visual><geometry><mesh filename="part.dae"/></geometry></visual></link></robot>')
    assert "`" + str(urdf) + "` has a .dae visual mesh simgen cannot read" == gl_cannot_draw([urdf])
    ok = tmp_path / "ok.urdf"
    ok.write_text('<robot name="w"><link name="b"><visual><geometry><box size="1 1 1"/></geometry></visual></link></robot>')
    assert gl_cannot_draw([ok, tmp_path / "x.obj"]) is None


@pytest.mark.parametrize("scene", ["dice", "tabletop", "custom"])
def test_gl_draws_source_meshes_as_their_baked_copies(tmp_path, scene):
    """Under gl a pooled mesh body has no PyBullet visual shape, and a URDF is loaded from its own file at globalScaling:
    the renderer draws each source OBJ with the scale, offset, box-projected UVs and texture a baked copy holds (for a
    URDF, the scale PyBullet reports). With the world told that PyBullet draws, every body is made from baked copies
    instead (a URDF from a copy with its scale written in), which the renderer parses as they are: the same scenes give
    the same instance maps and the same pixels within a level or two."""
    gl_or_skip()
    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout

    extra: list[str] = []
    if scene == "custom":  # a user mesh without UVs, half a metre off its origin, textured from the bank
        from .test_physics import _cube_obj

        mesh = _cube_obj(tmp_path / "off.obj", (0.5, 0.3, 0.2))
        extra = ["~scene.objects.box", f"+scene.objects.widget={{asset: {mesh}, scale: [1.0, 1.5], count: [2, 3], texture: bank}}"]
    cfg = small_config(tmp_path, "renderer=gl", "width=320", "height=240", "randomization.sensor.enabled=false", f"scene={scene}", *extra)
    out, urdf_files = {}, {}
    for baked in (False, True):
        with quiet_stdout(), Generator(cfg) as g:
            g.world.pybullet_draws = baked  # before any body exists: every pooled body is made one way
            out[baked] = [g.draw(i).frame for i in range(4)]
            assert bool(g.world.mesh_of) != baked
            urdf_files[baked] = {Path(s[4].decode()).name for b in g.world.active for s in g.world.client.getVisualShapeData(b)
                                 if b not in g.world.mesh_of and s[2] == 5}  # GEOM_MESH visuals of URDF bodies
    if scene == "tabletop":  # its URDFs: their own meshes under gl, baked copies otherwise
        assert urdf_files[False] and not any(n.startswith("mesh-") for n in urdf_files[False])
        assert urdf_files[True] and all(n.startswith("mesh-") for n in urdf_files[True])
    for a, b in zip(out[False], out[True]):
        assert np.array_equal(a.instance, b.instance)
        diff = np.abs(a.rgb.astype(int) - b.rgb).max(axis=2)
        assert diff.max() <= 2 and (diff > 0).mean() < 1e-3


def test_gl_lights_a_urdf_visual_in_its_own_frame(tmp_path):
    """A URDF's visual origin turns its surface: the same slab, as a standing box laid flat by its visual origin or as
    a box lying flat, is the same surface in the same place and must be lit alike (normals go through the visual
    origin's rotation too: a draft that left it out drew a lego brick up to 96 levels off)."""
    gl_or_skip()

    from simgen.glrender import GLRenderer
    from simgen.render import RenderWorld
    from simgen.types import Camera, Light

    def urdf(name: str, size: str, rpy: str) -> str:
        path = tmp_path / f"{name}.urdf"
        path.write_text(f'<robot name="{name}"><link name="b"><visual><origin rpy="{rpy}" xyz="0 0 0"/><geometry><box size="{size}"/>'
                        '</geometry></visual></link></robot>')
        return str(path)

    cam = Camera(96, 96, 120, 120, 48, 48, (0.25, -0.35, 0.5), (0, 0, 0), (0, 0, 1), 0.05, 3)
    light = Light((0.3, -0.5, 0.8), (1, 1, 1), 10, 0.3, 0.7, 0.2, False)
    images = []
    for path, orn in [(urdf("flat", "0.2 0.2 0.04", "0 0 0"), (0, 0, 0, 1)),
                      (urdf("turned", "0.2 0.04 0.2", "1.5707963 0 0"), (0, 0, 0, 1))]:
        world, r = RenderWorld({}), GLRenderer()
        r.attach(world)
        body = world.client.loadURDF(path, (0, 0, 0), orn, useFixedBase=True)
        world.active, world._tinted[body] = [body], (0.8, 0.8, 0.8, 1.0)
        rgba, _, ids = r.raw(world, cam, light)
        images.append((rgba[..., :3].astype(int), ids))
        r.close()
        world.close()
    (a, ia), (b, ib) = images
    assert (ia >= 0).sum() > 500 and (ia != ib).mean() < 0.01
    both = (ia >= 0) & (ib >= 0)
    assert np.abs(a[both] - b[both]).mean() < 2


def test_the_gl_probe_started_early_is_the_one_collected(monkeypatch):
    """simgen's command line starts the GL probe beside composing its config; probe_gl then waits for that process
    instead of starting another, and keeps its answer."""
    import os

    from simgen import eglprobe, glrender

    vendor = gl_or_skip()
    monkeypatch.delenv("SIMGEN_GL_OK_None", raising=False)
    eglprobe.start_gl_probe()
    proc = eglprobe.gl_started[None]
    monkeypatch.setattr(eglprobe, "gl_probe_process", lambda device: pytest.fail("a second probe process was started"))
    assert glrender.probe_gl() == vendor == os.environ["SIMGEN_GL_OK_None"]
    assert proc.returncode == 0 and None not in eglprobe.gl_started
    eglprobe.start_gl_probe()  # the answer is known now: nothing to start
    assert None not in eglprobe.gl_started


def test_a_gl_probe_started_early_but_not_needed_is_stopped_and_reaped(tmp_path, monkeypatch):
    """renderer=auto at 64x64 keeps TinyRenderer without asking the GL renderer: the probe the command line started
    early is stopped and reaped once the run has chosen, not left as a zombie child for the run's length (where a test
    that kills "the first child" took it for a render worker)."""
    from simgen import eglprobe
    from simgen.run import render_dataset

    gl_or_skip()
    monkeypatch.delenv("SIMGEN_GL_OK_None", raising=False)
    eglprobe.start_gl_probe()
    proc = eglprobe.gl_started[None]
    cfg = small_config(tmp_path, "renderer=auto", "width=64", "height=64", "n_images=2")
    seen = {}

    def render_images(cfg, todo, *a, **k):  # the run's work starts here: the probe must be gone by then
        seen["renderer"], seen["probe"], seen["code"] = cfg.renderer, dict(eglprobe.gl_started), proc.returncode
        return real(cfg, todo, *a, **k)

    from simgen import run

    real = run.render_images
    monkeypatch.setattr(run, "render_images", render_images)
    render_dataset(cfg, log=lambda m: None)
    assert seen["renderer"] == "tiny" and seen["probe"] == {} and seen["code"] is not None


def test_gl_draws_the_next_image_while_this_one_is_labelled_and_writes_the_same_bytes(tmp_path):
    """render_each submits image k+1 to the GL renderer before labelling and writing image k (the draw overlaps that
    work): the files are byte for byte those of generating and writing one image at a time, scenes shared by views
    included; and a frame read after the next one was submitted (drawn over) is an error, not a wrong image."""
    gl_or_skip()
    from simgen import run
    from simgen.pipeline import Generator
    from simgen.writers import coco

    outs = {}
    for mode in ("one at a time", "pipelined"):
        cfg = small_config(tmp_path, "renderer=gl", "scene=tabletop", "n_images=5", "views_per_scene=2", "width=200",
                           "height=150", "labels.depth=npy", name=mode.replace(" ", "_"))
        cat_ids = {c: k + 1 for k, c in enumerate(cfg.scene.categories)}
        cfg.out.mkdir(parents=True)
        with run.quiet_stdout(), Generator(cfg) as gen:
            if mode == "pipelined":
                stats = list(run.render_each(gen, cfg, list(range(5)), cat_ids, overlap=True))  # and the writer thread
                assert [s["index"] for s in stats] == list(range(5)) and all(s["render_ms"] > 0 for s in stats)
            else:
                for i in range(5):
                    coco.write_record(cfg.out, gen.generate(i), cat_ids, cfg.image_format, cfg.labels.depth, cfg.labels.semantic)
            first, second = gen.start(0), gen.start(1)
            with pytest.raises(RuntimeError, match="read each frame before submitting the next"):
                first.frame()
            assert second.frame().instance.max() >= 0
        outs[mode] = {p.relative_to(cfg.out).as_posix(): p.read_bytes() for p in sorted(cfg.out.rglob("*")) if p.is_file()}
    assert len(outs["pipelined"]) == 15  # 5 images, 5 depth maps, 5 label parts
    assert outs["pipelined"] == outs["one at a time"]


@pytest.mark.parametrize("kind", ["stl", "dae"])
def test_gl_draws_a_urdfs_stl_and_collada_visuals_as_pybullet_does(tmp_path, kind):
    """Robot URDFs name STL and Collada meshes: the GL renderer draws them from their OBJ conversion
    (assets.readable_obj), so renderer=auto keeps gl for them, and labels read their geometry (no warning, the amodal
    box covers the whole object). Instance maps equal TinyRenderer's but for edge pixels; an L of two links, one at an
    angle, and a <mesh scale> on one. The Collada files say their unit is half a metre (<unit meter="0.5">), which
    PyBullet applies (and its <up_axis> it does not): so does the conversion."""
    gl_or_skip()
    import trimesh

    from simgen import assets
    from simgen.glrender import gl_cannot_draw
    from simgen.run import joint_warnings

    for name, mesh in (("bar", trimesh.creation.box((0.06, 0.02, 0.02))), ("post", trimesh.creation.cylinder(0.01, 0.05, sections=16))):
        if kind == "stl":
            mesh.export(tmp_path / "bar.stl" if name == "bar" else tmp_path / "post.stl")
        else:
            mesh.apply_scale(2.0)  # in half metres
            text = trimesh.exchange.dae.export_collada(mesh)
            text = text.decode() if isinstance(text, bytes) else text
            (tmp_path / f"{name}.dae").write_text(text.replace("<asset>", '<asset><unit meter="0.5" name="half"/>', 1))
    inertial = '<inertial><mass value="0.05"/><inertia ixx="1e-5" ixy="0" ixz="0" iyy="1e-5" iyz="0" izz="1e-5"/></inertial>'

    def link(name, mesh, xyz, rpy="0 0 0", scale="1 1 1"):
        g = f'<origin xyz="{xyz}" rpy="{rpy}"/><geometry><mesh filename="{mesh}" scale="{scale}"/></geometry>'
        return f'<link name="{name}"><visual>{g}<material name="m"><color rgba="0.8 0.3 0.2 1"/></material></visual><collision>{g}</collision>{inertial}</link>'

    urdf = tmp_path / "l.urdf"
    urdf.write_text('<?xml version="1.0"?><robot name="l">' + link("base", f"bar.{kind}", "0 0 0", scale="1 1.5 1")
                    + link("post", f"post.{kind}", "0.02 0 0.03", rpy="0.3 0 0")
                    + '<joint name="j" type="fixed"><parent link="base"/><child link="post"/><origin xyz="0 0 0"/></joint></robot>')
    assert gl_cannot_draw([urdf]) is None and assets.unread_visuals(urdf) == []
    over = ("scene=custom", "~scene.objects.box", f"+scene.objects.l={{asset: {urdf}, count: [2, 3]}}")
    cfg = small_config(tmp_path, *over)
    assert joint_warnings(cfg) == []
    tiny, gl = frames(tmp_path, "tiny", 3, *over), frames(tmp_path, "gl", 3, *over)
    assert same_instances(tiny, gl, differ=4e-3, iou=0.85) >= 4
    out = render_dataset(small_config(tmp_path, "renderer=gl", *over, name="gl"), log=lambda m: None)
    doc = check_invariants(out)
    for a in doc["annotations"]:  # the label geometry holds both links: the amodal box contains the visible one
        x, y, w, h = a["bbox"]
        ax, ay, aw, ah = a["bbox_amodal"]
        assert ax <= x + 1.5 and ay <= y + 1.5 and ax + aw >= x + w - 1.5 and ay + ah >= y + h - 1.5, (a["bbox"], a["bbox_amodal"])
        assert a["visible_fraction"] <= 1.0
