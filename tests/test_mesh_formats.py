"""Meshes in the formats users have (STL from CAD, PLY from scanners, glTF/GLB from model stores) are objects like an
OBJ: converted once per file to an OBJ in the cache (assets.converted_obj), their colours and textures kept, glTF's +Y
up turned to +Z, and their own files (not the cache's copy) hashed for provenance and resume."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image

from simgen import assets
from simgen.errors import AssetError
from simgen.run import render_dataset

from .conftest import small_config
from .test_render import check_invariants


def _cup(path):
    """A cylinder whose axis is the file's +Y (glTF's up), textured red on one half and blue on the other."""
    c = trimesh.creation.cylinder(radius=0.03, height=0.08, sections=24)
    c.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
    uv = np.c_[np.arctan2(c.vertices[:, 2], c.vertices[:, 0]) / (2 * np.pi) + 0.5, c.vertices[:, 1] / 0.08 + 0.5]
    img = np.zeros((16, 16, 3), np.uint8)
    img[:, :8], img[:, 8:] = (220, 40, 40), (40, 40, 220)
    c.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(img))
    c.export(path)
    return path


def _pebble(path, one_colour: bool):
    s = trimesh.creation.icosphere(subdivisions=2, radius=0.025)
    rgb = np.full((len(s.vertices), 3), (200, 30, 30)) if one_colour else np.c_[(s.vertices[:, :1] > 0) * 200 + 30,
                                                                                 np.full((len(s.vertices), 1), 120), (s.vertices[:, 1:2] > 0) * 200 + 30]
    s.visual.vertex_colors = np.c_[rgb, np.full(len(s.vertices), 255)].astype(np.uint8)
    s.export(path)
    return path


def test_each_format_becomes_an_asset_with_its_look_and_up_axis(tmp_path):
    cup = assets.resolve(str(_cup(tmp_path / "cup.glb")))
    extent = np.ptp(cup.points, axis=0)
    assert np.allclose(extent, [0.06, 0.06, 0.08], atol=1e-3), extent  # the glTF's +Y (the cup's axis) is simgen's +Z
    assert cup.own_texture and cup.source == (tmp_path / "cup.glb").resolve() and cup.path.suffix == ".obj"
    red = assets.resolve(str(_pebble(tmp_path / "red.ply", one_colour=True)))
    assert not red.own_texture and np.allclose(red.own_color, (200 / 255, 30 / 255, 30 / 255, 1.0), atol=1e-4)  # one colour: its Kd
    scan = assets.resolve(str(_pebble(tmp_path / "scan.ply", one_colour=False)))
    assert scan.own_texture  # vertex colours that vary (a scan's) are baked into a texture
    trimesh.creation.box((40, 25, 10)).export(tmp_path / "block.stl")
    block = assets.resolve(str(tmp_path / "block.stl"))
    assert not block.own_texture and block.own_color is None and np.allclose(np.ptp(block.points, axis=0), [40, 25, 10])
    text = trimesh.exchange.dae.export_collada(trimesh.creation.box((40, 25, 10)))
    text = text.decode() if isinstance(text, bytes) else text
    (tmp_path / "mm.dae").write_text(text.replace("<asset>", '<asset><unit meter="0.001" name="millimetre"/>', 1))
    mm = assets.resolve(str(tmp_path / "mm.dae"))
    assert np.allclose(np.ptp(mm.points, axis=0), [0.04, 0.025, 0.01])  # a Collada file's <unit> applied, as PyBullet does
    assert all(a.path.is_relative_to(assets.cache_dir()) for a in (cup, red, scan, block, mm))


def test_a_model_of_several_textured_parts_keeps_each_parts_texture(tmp_path):
    """A glTF scene of parts, each with its own texture, is merged into one mesh and one texture atlas: the parts keep
    their colours (trimesh's packing of glTF's PBR materials garbled them: red and blue came out cyan and yellow)."""
    parts = []
    for k, colour in enumerate([(220, 30, 30), (30, 30, 220)]):
        b = trimesh.creation.box((0.04, 0.04, 0.04))
        img = np.zeros((8, 8, 3), np.uint8)
        img[:] = colour
        b.visual = trimesh.visual.TextureVisuals(uv=np.random.default_rng(k).random((len(b.vertices), 2)), image=Image.fromarray(img))
        parts.append(b)
    scene = trimesh.Scene()
    for k, b in enumerate(parts):  # placed by the scene graph, not in their vertices
        scene.add_geometry(b, transform=trimesh.transformations.translation_matrix((0.05 * k, 0, 0)))
    scene.export(tmp_path / "two.glb")
    a = assets.resolve(str(tmp_path / "two.glb"))
    assert a.own_texture and np.allclose(np.ptp(a.points, axis=0), [0.09, 0.04, 0.04], atol=1e-6)
    (png,) = a.path.parent.glob("*.png")
    tex = np.asarray(Image.open(png).convert("RGB"))
    v, vt, seen = [], [], {0: set(), 1: set()}
    for line in a.path.read_text().splitlines():  # each face's texture, at its corners' mean UV, by the part it lies in
        parts = line.split()
        if parts[:1] == ["v"]:
            v.append([float(x) for x in parts[1:4]])
        elif parts[:1] == ["vt"]:
            vt.append([float(x) for x in parts[1:3]])
        elif parts[:1] == ["f"]:
            corners = [c.split("/") for c in parts[1:]]
            x = np.mean([v[int(c[0]) - 1][0] for c in corners])
            u, w = np.mean([vt[int(c[1]) - 1] for c in corners], axis=0)
            px = tex[min(int((1 - w) * tex.shape[0]), tex.shape[0] - 1), min(int(u * tex.shape[1]), tex.shape[1] - 1)]
            seen[int(x > 0.025)].add(tuple(int(c) for c in px))
    assert seen == {0: {(220, 30, 30)}, 1: {(30, 30, 220)}}, seen  # each part's faces read its own texture's colour


def test_a_file_is_converted_once_and_again_when_it_changes(tmp_path):
    src = _pebble(tmp_path / "p.ply", one_colour=True)
    first = assets.converted_obj(src)
    stamp = first.stat().st_mtime_ns
    assert assets.converted_obj(src) == first and first.stat().st_mtime_ns == stamp
    _pebble(src, one_colour=False)
    assert assets.converted_obj(src) != first and not list(first.parent.parent.glob("*.tmp*"))


@pytest.mark.parametrize("name,content", [("bad.ply", b"ply\nformat nonsense\n"), ("bad.glb", b"glTF\x02\x00\x00\x00garbage"),
                                          ("empty.stl", b"solid nothing\nendsolid nothing\n")])
def test_an_unreadable_mesh_file_is_one_line_naming_it(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(AssetError) as e:
        assets.resolve(str(tmp_path / name))
    msg = str(e.value)
    assert str(tmp_path / name) in msg and "\n" not in msg and ("export it again" in msg), msg


def test_stl_ply_and_glb_objects_render_with_valid_labels_and_their_files_in_provenance(tmp_path):
    from simgen.provenance import user_files

    cup, pebble = _cup(tmp_path / "cup.glb"), _pebble(tmp_path / "pebble.ply", one_colour=False)
    trimesh.creation.box((40, 25, 10)).export(tmp_path / "block.stl")
    cfg = small_config(tmp_path, "scene=custom", "~scene.objects.box", "width=160", "height=160",
                       f"+scene.objects.cup={{asset: {cup}, count: [1, 2]}}", f"+scene.objects.pebble={{asset: {pebble}, count: [1, 2]}}",
                       f"+scene.objects.block={{asset: {tmp_path / 'block.stl'}, scale: 0.001, count: [1, 2], texture: bank}}")
    out = render_dataset(cfg, log=lambda m: None)
    doc = check_invariants(out)
    assert [c["name"] for c in doc["categories"]] == ["cup", "pebble", "block"] and doc["annotations"]
    files = user_files(cfg)
    assert set(files) == {str(p.resolve()) for p in (cup, pebble, tmp_path / "block.stl")}, files  # the user's files, not the cache's


def test_an_unknown_mesh_format_names_the_ones_read(tmp_path):
    (tmp_path / "part.step").write_text("ISO-10303-21;")
    with pytest.raises(AssetError, match=r"unsupported file type `\.step`; simgen reads \.obj, \.stl, \.ply, \.glb, \.gltf, \.dae, \.off"):
        assets.resolve(str(tmp_path / "part.step"))


def test_a_gltf_and_the_buffers_it_names_are_its_files(tmp_path):
    """A .gltf keeps its geometry (and here its texture) in other files: they are converted and hashed with it."""
    from simgen.provenance import user_files

    scene = trimesh.load(_cup(tmp_path / "cup.glb"))
    for name, blob in trimesh.exchange.gltf.export_gltf(scene).items():
        (tmp_path / "g" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "g" / name).write_bytes(blob)
    gltf = tmp_path / "g" / "model.gltf"
    a = assets.resolve(str(gltf))
    assert a.own_texture and np.allclose(np.ptp(a.points, axis=0), [0.06, 0.06, 0.08], atol=1e-3)
    cfg = small_config(tmp_path, "scene=custom", "~scene.objects.box", f"+scene.objects.cup={{asset: {gltf}}}")
    buffers = sorted((tmp_path / "g").glob("*.bin"))
    assert buffers and set(user_files(cfg)) == {str(p.resolve()) for p in (gltf, *buffers)}


def test_an_unreadable_mesh_stops_the_command_in_one_line_before_anything_is_written(tmp_path):
    import subprocess
    import sys

    (tmp_path / "bad.ply").write_bytes(b"ply\nformat nonsense\n")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "simgen.cli", "render", "scene=custom", "~scene.objects.box",
                        f"+scene.objects.w={{asset: {tmp_path / 'bad.ply'}}}", f"out={out}", "n_images=2"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "cannot be read as PLY" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_a_urdf_naming_a_mesh_type_pybullet_cannot_load_is_refused(tmp_path):
    _pebble(tmp_path / "p.ply", one_colour=True)
    urdf = tmp_path / "p.urdf"
    urdf.write_text('<robot name="p"><link name="b"><visual><geometry><mesh filename="p.ply"/></geometry></visual></link></robot>')
    with pytest.raises(AssetError, match=r"names mesh `p\.ply`, and PyBullet's URDF loader reads only \.obj, \.stl and \.dae"):
        assets.resolve(str(urdf))


def test_a_ros_package_urdf_finds_its_meshes_as_pybullet_does(tmp_path):
    """A ROS robot's URDF names `package://arm/meshes/base.stl` from arm/urdf/: PyBullet drops the prefix and looks in
    the folders above the URDF. simgen finds the same file for its checks, labels, GL renderer and provenance (it
    left such meshes out of the label geometry, and a name PyBullet would find was refused as missing)."""
    from simgen.glrender import gl_cannot_draw
    from simgen.provenance import urdf_dependencies

    (tmp_path / "ws" / "arm" / "urdf").mkdir(parents=True)
    (tmp_path / "ws" / "arm" / "meshes").mkdir()
    trimesh.creation.box((0.05, 0.03, 0.02)).export(tmp_path / "ws" / "arm" / "meshes" / "base.stl")
    g = '<geometry><mesh filename="package://arm/meshes/base.stl"/></geometry>'
    urdf = tmp_path / "ws" / "arm" / "urdf" / "arm.urdf"
    urdf.write_text(f'<robot name="arm"><link name="b"><visual>{g}</visual><collision>{g}</collision><inertial><mass value="0.1"/>'
                    '<inertia ixx="1e-5" ixy="0" ixz="0" iyy="1e-5" iyz="0" izz="1e-5"/></inertial></link></robot>')
    stl = (tmp_path / "ws" / "arm" / "meshes" / "base.stl").resolve()
    assert assets.urdf_mesh_path(urdf.resolve(), "package://arm/meshes/base.stl") == stl
    assert assets.urdf_mesh_path(urdf.resolve(), "../meshes/base.stl") == stl
    a = assets.resolve(str(urdf))
    assert np.allclose(np.ptp(a.points, axis=0), [0.05, 0.03, 0.02], atol=1e-6)  # the label geometry holds the STL
    assert assets.unread_visuals(a.path) == [] and gl_cannot_draw([a.path]) is None
    assert (stl, "mesh") in urdf_dependencies(a.path)
    out = render_dataset(small_config(tmp_path, "scene=custom", "~scene.objects.box", f"+scene.objects.arm={{asset: {urdf}, count: [2, 3]}}"),
                         log=lambda m: None)
    doc = check_invariants(out)
    assert doc["annotations"]
    urdf.write_text(urdf.read_text().replace("base.stl", "gone.stl"))
    assets.resolve.cache_clear(), assets._urdf_root.cache_clear()
    with pytest.raises(AssetError, match=r"names mesh `package://arm/meshes/gone\.stl`, which does not exist .*as PyBullet does"):
        assets.resolve(str(urdf))


def test_a_category_drawn_from_a_folder_pattern_or_list_of_meshes(tmp_path):
    """`asset` may name several meshes (a folder, a glob pattern or a list): each object of the group is one of them,
    drawn uniformly, so a class is learnt from many shapes rather than one. Every file is checked before anything is
    written, each annotation's pose names the file it is of, provenance hashes them all, and the labels are the same
    whatever the number of workers."""
    from simgen.assets import ASSET_FILE_SUFFIXES
    from simgen.config import asset_set
    from simgen.errors import ConfigError
    from simgen.provenance import user_files

    assert set(ASSET_FILE_SUFFIXES) == {".obj", ".urdf", *assets.CONVERTED_FORMATS}
    things = tmp_path / "things"
    things.mkdir()
    _cup(things / "cup.glb")
    _pebble(things / "pebble.ply", one_colour=False)
    trimesh.creation.box((0.04, 0.03, 0.02)).export(things / "block.stl")
    (things / "notes.txt").write_text("not a mesh")
    files = tuple(str((things / n).resolve()) for n in ("block.stl", "cup.glb", "pebble.ply"))
    assert asset_set(str(things), "k") == (str(things), files)
    assert asset_set(str(things / "*.gl?"), "k") == (str(things / "*.gl?"), files[1:2])
    assert asset_set(["duck", str(things / "cup.glb")], "k") == (f"duck, {things / 'cup.glb'}", ("duck", files[1]))
    assert asset_set("duck", "k") == ("duck", ())
    with pytest.raises(ConfigError, match=r"`.*/nothing/\*\.obj` names no mesh or URDF file"):
        asset_set(str(tmp_path / "nothing" / "*.obj"), "scene.objects.x.asset")
    over = ("scene=custom", "~scene.objects.box", f"+scene.objects.thing={{asset: {things}, count: [3, 4]}}", "n_images=6",
            "width=96", "height=96")
    runs = []
    for workers in (1, 2):
        cfg = small_config(tmp_path, *over, f"workers={workers}", name=f"w{workers}")
        out = render_dataset(cfg, log=lambda m: None)
        doc = check_invariants(out)
        runs.append([(a["image_id"], a["bbox"], a["pose"]) for a in doc["annotations"]])
    assert runs[0] == runs[1]  # the draw of a file is part of each image's seeded sample
    drawn = {pose["asset"] for _, _, pose in runs[0]}
    assert len(drawn) >= 2 and drawn <= {"block.stl", "cup.glb", "pebble.ply"}, drawn  # named within the set: any machine alike
    assert set(user_files(cfg)) == set(files)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ok.stl").write_bytes((things / "block.stl").read_bytes())
    (mixed / "broken.ply").write_bytes(b"ply\nformat nonsense\n")
    with pytest.raises(AssetError, match=r"scene\.objects\.thing: mesh `.*broken\.ply` cannot be read as PLY"):
        render_dataset(small_config(tmp_path, "scene=custom", "~scene.objects.box", f"+scene.objects.thing={{asset: {mixed}}}", name="bad"),
                       log=lambda m: None)
    assert not (tmp_path / "bad").exists()  # one broken file of the set: refused before anything is written


def test_a_set_leaves_out_hidden_files_and_a_urdfs_own_meshes_and_single_assets_draw_nothing(tmp_path):
    """A pybullet_data-style folder (duck.urdf beside duck.obj and its collision hull) is one object, not three; a
    macOS `._x.obj` is no mesh; a literal path holding glob characters is a path; a set's group needs a category name;
    and a group of one asset draws nothing extra, so its scenes sample as before sets existed."""
    from simgen.config import ObjectGroup, asset_set, scene_spec
    from simgen.dists import dist
    from simgen.errors import ConfigError
    from simgen.sample import pick_asset

    from .conftest import compose_dict

    folder = tmp_path / "models"
    folder.mkdir()
    trimesh.creation.box((0.04, 0.03, 0.02)).export(folder / "part.stl")
    trimesh.creation.box((0.04, 0.03, 0.02)).export(folder / "hull.stl")
    (folder / "._junk.obj").write_text("not a mesh")
    g = '<geometry><mesh filename="part.stl"/></geometry>'
    (folder / "thing.urdf").write_text(f'<robot name="t"><link name="b"><visual>{g}</visual><collision><geometry><mesh filename="hull.stl"/>'
                                       '</geometry></collision></link></robot>')
    trimesh.creation.icosphere().export(folder / "ball.stl")
    assert asset_set(str(folder), "k")[1] == tuple(str((folder / n).resolve()) for n in ("ball.stl", "thing.urdf"))
    odd = tmp_path / "models [v2]"
    odd.mkdir()
    trimesh.creation.box((0.04, 0.03, 0.02)).export(odd / "m.stl")
    assert asset_set(str(odd / "m.stl"), "k") == (str(odd / "m.stl"), ())  # a path, not a pattern
    d = compose_dict("render", ["scene=custom"])["scene"]
    d["objects"] = [{"asset": str(folder), "count": 1}]
    with pytest.raises(ConfigError, match="names several meshes, so the group needs a category name"):
        scene_spec(d)
    one = ObjectGroup(asset="duck", category="duck", count=dist(1), scale=dist(1.0), texture=None)
    rng = np.random.default_rng(7)
    before = rng.bit_generator.state
    assert pick_asset(rng, one) == ("duck", "duck") and rng.bit_generator.state == before


def test_provenance_reads_a_urdfs_mesh_names_as_xml(tmp_path):
    """filename='...' in single quotes is as valid as double quotes: the mesh is hashed for resume either way."""
    from simgen.provenance import urdf_dependencies

    trimesh.creation.box((0.04, 0.03, 0.02)).export(tmp_path / "part.stl")
    urdf = tmp_path / "q.urdf"
    urdf.write_text("<robot name='q'><link name='b'><visual><geometry><mesh filename='part.stl'/></geometry></visual></link></robot>")
    assert urdf_dependencies(urdf) == [((tmp_path / "part.stl").resolve(), "mesh")]
