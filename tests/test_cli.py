"""The CLI contract: one-line errors with a non-zero exit and no output folder; help and --cfg work."""
import json
import subprocess
import sys

import pytest


def simgen(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "simgen.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args,match", [
    (["scene=nope"], "unknown scene `nope`"),
    (["+scene.objects.x={asset: /no/such/mesh.obj}"], "does not exist"),
    (["+scene.objects.x={asset: mugg}"], "Did you mean `mug`"),
    # a category named with a space is a key Hydra cannot lex: quoting the value (the hint before) could not help
    (["scene=custom", "+scene.objects.my widget={asset: box}"], "a key cannot hold `scene.objects.my widget`"),
    (["n_images=0"], "n_images must be an integer >= 1"),
    (["n_images=-3"], "n_images must be an integer >= 1"),
    (["width=4"], "width must be"),
    (["height=100000"], "height must be"),
    (["nosuchkey=1"], "bad override"),
    (["renderer=egl", "width=1600"], "at most 1024x768"),
    (["renderer=egl", "renderer.devices=[99]"], "renderer=egl"),
    # every field is checked by type and range: `<field> must be ..., got ...; e.g. <field>=...`
    (["seed=-1"], "seed must be an integer >= 0 and < 2**63, got -1; e.g. seed=0"),
    (["seed=abc"], "seed must be an integer"),
    (["seed=1.5"], "seed must be an integer"),
    (["seed=9223372036854775808"], "seed must be an integer"),
    (["workers=abc"], "workers must be an integer >= 1 or auto"),
    (["workers=0"], "workers=auto"),
    (["workers=-2"], "workers must be an integer >= 1 or auto"),
    (["physics_process=maybe"], "physics_process must be true, false or auto"),
    (["labels.min_visible_fraction=2"], "labels.min_visible_fraction must be a number in [0, 1], got 2"),
    (["labels.min_area_px=abc"], "labels.min_area_px must be an integer"),
    (["overwrite=yes"], "overwrite must be true or false"),
    (["physics.timestep=0"], "physics.timestep must be a number"),
    (["physics.max_steps=2.5"], "physics.max_steps must be an integer"),
    (["randomization.sensor.blur_probability=1.5"], "randomization.sensor.blur_probability must be a number in [0, 1]"),
    (["randomization.light.shadow_probability=-0.1"], "randomization.light.shadow_probability must be"),
    (["randomization.sensor.jpeg_quality=[70,101]"], "randomization.sensor.jpeg_quality must be"),
    (["randomization.textures_per_kind=abc"], "randomization.textures_per_kind must be an integer"),
    (["scene.camera.far=abc"], "scene.camera.far must be a number > 0"),
    (["scene.camera.fov_deg=[0,70]"], "scene.camera.fov_deg must be"),
    (["scene.objects.die.count=[1.5,3]"], "scene.objects.die.count must be an integer"),
    (["scene.tray.probability=2"], "scene.tray.probability must be a number in [0, 1]"),
    (["shard.count=0"], "shard.count must be an integer >= 1"),
    (["views_per_scene=two"], "views_per_scene must be an integer"),
    (["+nosuchkey=1"], "unknown key `nosuchkey`"),
    (["+physics.timestpe=0.01"], "Did you mean `timestep`"),
    (["+labels.min_visible=0.5"], "Did you mean `min_visible_fraction`"),
    (["scene.objects.die.texture=dicee"], "texture `dicee` of `die` is not a texture bank; use one of bank, dice"),
    # scale multiplies mesh units into metres: a die 14-19 m long, or 14-19 nanometres, is a units mistake
    (["scene.objects.die.scale=[14,19]"], "scene.objects.die: `die` measures 1 x 1 x 1 mesh units, so at scale [14, 19] it is 14-19 m long, more than this scene holds"),
    (["scene.objects.die.scale=[1.4e-8,1.9e-8]"], "too small to see"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, args, match):
    out = tmp_path / "ds"
    r = simgen("render", f"out={out}", "n_images=2", "width=64", "height=64", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("simgen: error:") and match in lines[0], lines[0]
    if " must be " in lines[0]:
        assert "; e.g. " in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not out.exists() and not (tmp_path / ".simgen").exists()


@pytest.mark.parametrize("cmd,args,match", [
    ("train", ["seed=-1"], "seed must be an integer >= 0"),
    ("train", ["trainer.batch_size=0"], "trainer.batch_size must be an integer >= 1"),
    ("train", ["trainer.lr=abc"], "trainer.lr must be a number > 0"),
    ("train", ["trainer.grayscale_p=2"], "trainer.grayscale_p must be a number in [0, 1]"),
    ("train", ["trainer.amp=maybe"], "trainer.amp must be true or false"),
    ("train", ["trainer.device=gpu"], "trainer.device must be auto, cpu, cuda or cuda:N"),
    ("train", ["+trainer.lrr=0.1"], "Did you mean `lr`"),
    ("train", ["data.synthetic_fraction=1.5"], "data.synthetic_fraction must be a number in [0, 1]"),
    ("train", ["data.holdout_limit=abc"], "data.holdout_limit must be an integer"),
    ("utility", ["seed=abc"], "seed must be an integer"),
    ("utility", ["trainer.max_minutes=-1"], "trainer.max_minutes must be a number > 0 or null"),
    ("report", ["report.seed=-1"], "report.seed must be an integer >= 0"),
    ("report", ["report.max_images=0"], "report.max_images must be an integer >= 1 or null"),
    ("report", ["report.similarity_pass=2"], "report.similarity_pass must be a number in [0, 1]"),
])
def test_bad_train_utility_report_values_are_one_line(tmp_path, cmd, args, match):
    out = tmp_path / "run"
    r = simgen(cmd, f"out={out}", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("simgen: error:") and match in lines[0], r.stderr
    assert ("; e.g. " in lines[0] or "Did you mean" in lines[0]) and "Traceback" not in r.stderr + r.stdout
    assert not out.exists()


@pytest.mark.parametrize("override", [
    "+hydra.callbacks.x={_target_: builtins.open, file: PWNED, mode: w}",
    "++hydra.callbacks.x={_target_: builtins.open, file: PWNED, mode: w}",
    "+hydra.callbacks={x: {_target_: builtins.open, file: PWNED, mode: w}}",
    "+scene.x={_target_: builtins.open, file: PWNED, mode: w}",
    "+hydra.launcher._target_=builtins.print",
    "~hydra.callbacks",
])
@pytest.mark.parametrize("mode", [[], ["-m"]])
def test_overrides_that_call_functions_are_refused(tmp_path, override, mode):
    pwned = tmp_path / "pwned"
    r = simgen("render", *mode, f"out={tmp_path / 'ds'}", "n_images=1", "width=64", "height=64", override.replace("PWNED", str(pwned)),
               cwd=tmp_path)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is refused" in lines[0], r.stderr
    assert not pwned.exists() and not (tmp_path / "ds").exists()


def test_launcher_selection_and_settings_still_work():
    r = simgen("render", "--cfg", "hydra", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert r.returncode == 0, r.stderr
    assert "n_jobs: 2" in r.stdout and "JoblibLauncher" in r.stdout


def test_webdataset_refuses_pipes_and_urls(tmp_path):
    from simgen.data import webdataset
    from simgen.errors import DatasetError

    pwned = tmp_path / "pwned"
    for urls in (f"pipe:touch {pwned}", [f"pipe:touch {pwned}"], "https://example.com/shard-{000000..000003}.tar"):
        with pytest.raises(DatasetError, match="not a local path"):
            webdataset(urls)
    assert not pwned.exists()
    ds = webdataset(f"pipe:cat {tmp_path / 'none.tar'}", allow_pipe=True)  # the caller's choice: accepted (lazy)
    assert ds is not None


def test_no_arguments_lists_the_commands_with_examples():
    r = simgen()
    assert r.returncode == 0
    for cmd in ("render", "preview", "merge", "train", "utility", "report"):
        assert f"simgen {cmd} " in r.stdout, r.stdout
    assert "the only place that knows Hydra" not in r.stdout


def test_unwritable_out(tmp_path):
    r = simgen("render", "out=/proc/simgen-cannot-write", "n_images=1", "width=64", "height=64")
    assert r.returncode != 0 and "cannot write" in r.stderr and "Traceback" not in r.stderr


def test_foreign_nonempty_out_is_refused(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    r = simgen("render", f"out={tmp_path}", "n_images=1", "width=64", "height=64", "overwrite=true")
    assert r.returncode != 0 and "not a simgen dataset" in r.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_help_and_cfg_job():
    r = simgen("render", "--help")
    assert r.returncode == 0 and "scene: custom, dice, tabletop" in r.stdout
    r = simgen("render", "--cfg", "job", "n_images=7")
    assert r.returncode == 0 and "n_images: 7" in r.stdout


def test_render_then_rerun_is_complete(tmp_path):
    out = tmp_path / "ds"
    r = simgen("render", f"out={out}", "n_images=2", "width=64", "height=64", "workers=1")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["n_images"] == 2
    r = simgen("render", f"out={out}", "n_images=2", "width=64", "height=64", "workers=1")
    assert r.returncode == 0 and "already complete" in r.stderr
    r = simgen("render", f"out={out}", "n_images=3", "width=64", "height=64")
    assert r.returncode != 0 and "different config" in r.stderr
    r = simgen("preview", str(out))
    assert r.returncode == 0 and (out / "preview.png").exists()


def test_a_scene_whose_objects_mostly_go_unlabelled_says_why_and_what_to_change(tmp_path):
    """A URDF scaled as if its mesh were in metres: ducks of a few pixels, nearly none labelled. The run still
    finishes (the images are valid), but one line says so, with the commonest reason and the knob to change, and
    the manifest and each image's scene entry count what was left out."""
    out = tmp_path / "ds"
    r = simgen("render", "scene=custom", "~scene.objects.box", "+scene.objects.duck={asset: duck, scale: [0.04, 0.06], count: [2, 3]}",
               f"out={out}", "n_images=3", "width=480", "height=480", "workers=1", "progress=false")
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: only ")]
    assert len(warn) == 1 and "smaller on screen than labels.min_area_px" in warn[0] and "scene.objects.<name>.scale" in warn[0], r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    doc = json.loads((out / "annotations.json").read_text())
    left = manifest["objects_unlabelled"]
    assert left.get("below_min_area_px", 0) > len(doc["annotations"])
    assert sum(im["scene"].get("unlabelled", {}).get("below_min_area_px", 0) for im in doc["images"]) == left["below_min_area_px"]


def test_worker_pool_output_is_clean(tmp_path):
    """Spawned render workers import PyBullet, whose C code prints its build time: none of that chatter
    may reach the terminal or a pipe, only simgen's own summary line."""
    r = simgen("render", f"out={tmp_path / 'ds'}", "n_images=2", "width=64", "height=64", "workers=2", "progress=false")
    assert r.returncode == 0, r.stderr
    assert "build time" not in r.stdout + r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    # simgen's own: the renderer, the warning that at 64x64 most dice are too small on screen to label, the closing line
    assert len(lines) == 3 and lines[0].startswith("renderer=auto: ") and lines[1].startswith("warning: only ") and "2 images" in lines[2], lines


def test_merge_refuses_foreign_folders_and_prints_counts(tmp_path):
    src = tmp_path / "ds"
    r = simgen("render", f"out={src}", "n_images=2", "width=64", "height=64", "workers=1", "progress=false")
    assert r.returncode == 0, r.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    own = tmp_path / "own"
    own.mkdir()
    (own / "annotations.json").write_text('{"mine": true}')
    for out in (foreign, own):
        r = simgen("merge", str(src), f"out={out}")
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "not a simgen dataset" in lines[0], r.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"] and (foreign / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in own.iterdir()) == ["annotations.json"] and (own / "annotations.json").read_text() == '{"mine": true}'
    merged = tmp_path / "merged"
    r = simgen("merge", str(src), f"out={merged}")
    assert r.returncode == 0, r.stderr
    m = json.loads((merged / "manifest.json").read_text())
    assert r.stdout.strip() == f"{merged}: 2 images, {m['n_annotations']} annotations from 1 shard"


def test_run_without_hydra_app_writes_what_hydra_app_writes(tmp_path):
    """A plain run skips Hydra's app (which composes the config twice more) and runs on the config the precheck
    composed; a hydra.* setting takes the app's path. Both write the same labels, and an interpolation that cannot
    resolve is one line either way."""
    from simgen.cli import needs_hydra_app

    assert not needs_hydra_app(["n_images=2", "scene=dice"])
    assert needs_hydra_app(["-m", "seed=0,1"]) and needs_hydra_app(["hydra/launcher=joblib"])
    assert needs_hydra_app(["hydra.job.name=x"]) and needs_hydra_app(["--cfg", "job"])
    args = ["n_images=2", "width=64", "height=64", "workers=1", "renderer=tiny", "progress=false"]
    direct, app = tmp_path / "direct", tmp_path / "app"
    assert simgen("render", f"out={direct}", *args).returncode == 0
    r = simgen("render", f"out={app}", *args, "hydra.job.name=labels")
    assert r.returncode == 0, r.stderr
    doc = [json.loads((d / "annotations.json").read_text()) for d in (direct, app)]
    assert doc[0]["annotations"] and doc[0]["annotations"] == doc[1]["annotations"]
    assert [im["file_name"] for im in doc[0]["images"]] == [im["file_name"] for im in doc[1]["images"]]
    r = simgen("render", f"out={tmp_path / 'bad'}", *args, "out=${nope}")
    assert r.returncode != 0 and "Interpolation key 'nope' not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_a_mesh_in_millimetres_is_refused_with_the_scale_that_fits(tmp_path):
    # A 40 mm cube written in millimetres, given a scale meant for metres: before, the run wrote images with no
    # labels (the 40 m cubes could not be placed and fell off the ground) and said nothing.
    obj = tmp_path / "cube_mm.obj"
    v = [(x, y, z) for x in (-20, 20) for y in (-20, 20) for z in (-20, 20)]
    faces = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    obj.write_text("".join(f"v {a} {b} {c}\n" for a, b, c in v) + "".join("f " + " ".join(map(str, q)) + "\n" for q in faces))
    out = tmp_path / "ds"
    r = simgen("render", "scene=custom", "~scene.objects.box", f"+scene.objects.widget={{asset: {obj}, scale: [0.8, 1.2]}}",
               f"out={out}", "n_images=2", "width=64", "height=64", cwd=tmp_path)
    assert r.returncode == 2 and not out.exists(), r.stderr
    [line] = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "measures 40 x 40 x 40 mesh units" in line and "if the mesh is in millimetres, use scale: [0.0008, 0.0012]" in line, line


def test_a_finished_render_leaves_without_teardown_but_runs_exit_handlers_and_flushes(tmp_path):
    """console(): after a render that succeeded the process ends without Python's teardown of its objects (a
    finalizer that teardown would run stays silent), yet atexit handlers run, output through a pipe is complete and
    the status is 0; an error and any other command still exit the ordinary way."""
    code = """
import atexit, sys
class Teardown:
    def __del__(self):
        print("TEARDOWN", flush=True)
kept = Teardown()
atexit.register(lambda: print("ATEXIT", flush=True))
sys.argv = ["simgen", *sys.argv[1:]]
from simgen.cli import console
console()
"""
    def run(*args):
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)

    r = run("render", f"out={tmp_path / 'ds'}", "n_images=2", "width=64", "height=64", "progress=false")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "ATEXIT" and "TEARDOWN" not in lines, r.stdout
    assert any(ln.endswith("img/s") and "2 images" in ln for ln in (r.stdout + r.stderr).splitlines()), r.stdout + r.stderr
    bad = run("render", "scene=nope", f"out={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "TEARDOWN" in bad.stdout and "ATEXIT" in bad.stdout
    other = run("preview", "--help")
    assert other.returncode == 0 and "TEARDOWN" in other.stdout


def test_the_gl_probe_starts_early_only_where_it_will_be_asked():
    from simgen.cli import gl_probe_wanted

    assert gl_probe_wanted([]) and gl_probe_wanted(["renderer=gl", "n_images=3"]) and gl_probe_wanted(["renderer=egl", "renderer=auto"])
    assert not gl_probe_wanted(["renderer=egl"]) and not gl_probe_wanted(["renderer=tiny"])
    assert not gl_probe_wanted(["renderer.devices=[0,1]"])


# ---------------------------------------------------------------------------- preview and merge: arguments and folders checked first


@pytest.fixture(scope="module")
def tiny_renders(tmp_path_factory):
    """64x48 renders with the tiny renderer: a COCO dataset, a WebDataset one, and shard.count=2 rendered into two out=
    folders (s0, s1), whose datasets are s0/shards/00000-of-00002 and s1/shards/00001-of-00002."""
    from simgen.run import render_dataset
    from simgen.writers.webdataset import render_webdataset

    from .conftest import small_config

    root = tmp_path_factory.mktemp("tiny")
    size = ("width=64", "height=48")
    render_dataset(small_config(root, *size, name="coco"), log=lambda m: None)
    render_webdataset(small_config(root, *size, "writer=webdataset", name="wds"), shard_size=2, log=lambda m: None)
    for k in range(2):
        render_dataset(small_config(root, *size, "shard.count=2", f"shard.index={k}", name=f"s{k}"), log=lambda m: None)
    return root


def one_line_error(capfd, *args) -> tuple[int, list[str]]:
    """Run the CLI in this process; its exit status and the non-empty lines on the stderr file descriptor (where OpenCV
    and argparse write too)."""
    from simgen.cli import main

    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code, [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]


@pytest.mark.parametrize("flags,match", [
    (["--size", "0"], "argument --size: must be an integer from 16 to 4096, got `0`; e.g. --size 320"),
    (["--size", "2"], "argument --size: must be an integer from 16 to 4096, got `2`"),
    (["--cols", "0"], "argument --cols: must be an integer from 1 to 64, got `0`; e.g. --cols 4"),
    (["--n", "-3"], "argument --n: must be an integer >= 1, got `-3`; e.g. --n 16"),
    (["--n", "0"], "argument --n: must be an integer >= 1, got `0`"),
    (["--n", "two"], "argument --n: must be an integer >= 1, got `two`"),
    (["--nn", "3"], "unrecognized arguments: --nn 3"),
    (["--out", "OUT/sheet.txt"], "must end in an image extension such as .png or .jpg"),
    (["--out", "OUT"], "is a folder"),
])
def test_preview_flags_are_one_line_and_checked_before_anything_is_read(tiny_renders, tmp_path, capfd, flags, match):
    flags = [f.replace("OUT", str(tmp_path)) for f in flags]
    out = ["--out", str(tmp_path / "sheet.png")] if "--out" not in flags else []
    code, err = one_line_error(capfd, "preview", str(tiny_renders / "coco"), *out, *flags)
    assert code == 2 and len(err) == 1 and err[0].startswith("simgen: error:") and match in err[0], err
    assert "lists no images" not in err[0] and list(tmp_path.iterdir()) == []


def test_preview_api_checks_its_values_and_the_sheet_size(tiny_renders, tmp_path, monkeypatch):
    from simgen import preview
    from simgen.errors import ConfigError

    for kw, match in (({"n": 0}, "--n must be an integer >= 1"), ({"cols": -1}, "--cols must be"), ({"tile": 0}, "--size must be")):
        with pytest.raises(ConfigError, match=match):
            preview.contact_sheet(tiny_renders / "coco", tmp_path / "p.png", **kw)
    monkeypatch.setattr(preview, "MAX_SHEET_PIXELS", 100 * 100)
    with pytest.raises(ConfigError, match="would be 200x75 pixels; lower --n, --cols or --size"):  # 64x48 renders: 4:3 cells
        preview.contact_sheet(tiny_renders / "coco", tmp_path / "p.png", n=2, tile=100)
    assert list(tmp_path.iterdir()) == []


def test_preview_of_a_missing_image_is_one_line_without_opencvs_warning(tiny_renders, tmp_path, capfd):
    import shutil

    src = tmp_path / "ds"
    shutil.copytree(tiny_renders / "coco", src)
    (src / "images" / "00000001.jpg").unlink()
    code, err = one_line_error(capfd, "preview", str(src))
    assert code == 2 and err == ["simgen: error: image `images/00000001.jpg` is missing or unreadable; restore it or re-render the dataset."], err
    assert not (src / "preview.png").exists()


def test_merge_says_what_a_folder_is_when_it_is_not_a_coco_render(tiny_renders, tmp_path, capfd):
    """A WebDataset render is not a corrupt manifest, the out= of a sharded render is not an unfinished render (its
    datasets are under shards/, and the message names them), and a folder that is not there does not exist."""
    r, out = tiny_renders, tmp_path / "merged"
    shards = [r / "s0" / "shards" / "00000-of-00002", r / "s1" / "shards" / "00001-of-00002"]
    for dirs, match in (([r / "wds"], f"{r / 'wds'} is a WebDataset render (writer=webdataset"),
                        ([r / "s0", r / "s1"], f"{r / 's0'} and {r / 's1'} hold no dataset, only the shard folders of a render with "
                                               f"shard.count > 1 (under shards/); pass those: simgen merge {shards[0]} {shards[1]} out={out}"),
                        ([r / "s0", shards[1]], f"pass those: simgen merge {shards[0]} {shards[1]} out={out}"),
                        ([r / "nonexist"], f"{r / 'nonexist'} does not exist")):
        code, err = one_line_error(capfd, "merge", *map(str, dirs), f"out={out}")
        assert code == 2 and len(err) == 1 and match in err[0], err
        assert "corrupt" not in err[0] and "not a finished" not in err[0]
    assert not out.exists()
    from simgen.cli import main

    main(["merge", *map(str, shards), f"out={out}"])  # the folders the message named are the ones to pass
    assert json.loads((out / "manifest.json").read_text())["n_images"] == 3


def test_merge_of_a_dataset_with_a_missing_image_is_one_line_and_writes_nothing(tiny_renders, tmp_path, capfd):
    import shutil

    src, out = tmp_path / "ds", tmp_path / "merged"
    shutil.copytree(tiny_renders / "coco", src)
    (src / "images" / "00000002.jpg").unlink()
    code, err = one_line_error(capfd, "merge", str(src), f"out={out}")
    assert code == 2 and len(err) == 1 and "`images/00000002.jpg` listed in" in err[0] and "is missing" in err[0], err
    assert not out.exists()


def test_preview_of_a_webdataset_render_says_so(tiny_renders, capfd):
    code, err = one_line_error(capfd, "preview", str(tiny_renders / "wds"))
    assert code == 2 and len(err) == 1 and f"{tiny_renders / 'wds'} is a WebDataset render" in err[0] and "writer=coco" in err[0], err
    assert not (tiny_renders / "wds" / "preview.png").exists()


def test_a_value_hydra_cannot_lex_gets_the_quoting_it_needs(tmp_path):
    """`out=aud/é`: Hydra says only "LexerNoViableAltException"; the line says the value needs quotes, and how."""
    r = simgen("render", "out=aud/é", "n_images=1", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "needs quotes" in lines[0] and """'out="aud/é"'""" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_print_config_with_an_unknown_group_option_is_one_line(tmp_path):
    r = simgen("render", "--cfg", "job", "scene=dcie", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "simgen: error: unknown scene `dcie`. Did you mean `dice`? Known: custom, dice, tabletop."


def test_an_overlays_own_mistakes_name_the_overlay(tmp_path):
    """A typo or a bad value in an overlay was reported as if typed on the command line, and a key given twice in one
    mapping kept the last silently: each names the overlay file now (and the line, for the twice-given key)."""
    f = tmp_path / "mine.yaml"
    for text, match in (("scene:\n  camra: {distance: 0.5}\n", "unknown key `scene.camra`"),
                        ("scene:\n  camera:\n    distance: [0.8, 0.5]\n", "scene.camera.distance: range [0.8, 0.5] is reversed"),
                        ("scene:\n  camera:\n    distance: [0.3, 0.4]\n  camera:\n    tilt_deg: 10\n",
                         "line 4: key `camera` is given twice in one mapping")):
        f.write_text(text)
        r = simgen("render", f"overlay={f}", f"out={tmp_path / 'ds'}", cwd=tmp_path)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and match in lines[0] and str(f) in lines[0], r.stderr
    assert not (tmp_path / "ds").exists()
    f.write_text("scene:\n  camera:\n    distance: [0.3, 0.4]\n")  # the bad value typed on the command line: not the overlay's
    r = simgen("render", f"overlay={f}", "scene.camera.distance=[0.8,0.5]", f"out={tmp_path / 'ds'}", cwd=tmp_path)
    assert r.returncode == 2 and "is reversed" in r.stderr and "set in overlay" not in r.stderr, r.stderr


def test_every_job_of_a_sweep_is_checked_before_the_first_runs(tmp_path):
    """-m shard.index=0,1 without shard.count wrote job 0's dataset, then job 1 failed; a value Hydra cannot lex in a
    sweep was Hydra's raw LexerNoViableAltException. Both are one line now, before anything is written."""
    small = ["n_images=2", "width=64", "height=64", "renderer=tiny", "progress=false"]
    r = simgen("render", "-m", "shard.index=0,1", *small, "out=sw", cwd=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and lines == ["simgen: error: shard.index must be in [0, shard.count), got index=1, count=1; e.g. shard.index=0"]
    r = simgen("render", "-m", "shard.index=0,1", "shard.count=2", *small, "out=sp ace/ü", cwd=tmp_path)
    assert r.returncode == 2 and "Hydra needs quotes around a value" in r.stderr and "LexerNoViable" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
    from simgen.cli import check_sweep_jobs
    from simgen.errors import ConfigError

    check_sweep_jobs("render", ["-m", "seed=0,1", "width=${height}", "height=64", "out=x_${seed}"])  # interpolations resolve
    with pytest.raises(ConfigError, match=r"`seed=interval\(0,1\)`: the basic sweeper runs listed values only"):
        check_sweep_jobs("render", ["-m", "seed=interval(0,1)", "out=x_${seed}"])
    check_sweep_jobs("render", ["-m", "seed=interval(0,1)", "hydra/sweeper=optuna", "out=x_${seed}"])  # that sweeper's own
    with pytest.raises(ConfigError, match="shard.index must be in"):  # ...and the other overrides are still checked
        check_sweep_jobs("render", ["-m", "seed=interval(0,1)", "shard.index=0,1", "hydra/sweeper=optuna", "out=x_${seed}"])
    check_sweep_jobs("render", ["-m", "scene=glob(d*)", "out=x_${scene.name}"])  # a discrete sweep Hydra runs itself
    r = simgen("render", "-m", "shard.index=0,1", "shard.count=2", "--cfg", "job", cwd=tmp_path)  # Hydra's ValueError before
    assert r.returncode == 2 and "Hydra takes one of -m, --cfg and --info at a time" in r.stderr and "Traceback" not in r.stderr


def test_a_sweep_whose_jobs_share_one_out_is_refused_before_any_job(tmp_path):
    """-m seed=1,2 out=x would render job 1 into x and stop at job 2 (x holds another config's dataset): refused up
    front, with the out that names the swept key; that one runs, and leaves no folder for the base config's seed."""
    small = ["n_images=2", "width=64", "height=64", "renderer=tiny", "progress=false"]
    r = simgen("render", "-m", "seed=1,2", *small, "out=sw", cwd=tmp_path)
    assert r.returncode == 2 and "-m sweeps seed but every job would write into out=sw" in r.stderr and "'out=sw_${seed}'" in r.stderr
    assert list(tmp_path.iterdir()) == []
    r = simgen("render", "-m", "seed=1,2", *small, "out=sw_${seed}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sw_1", "sw_2"]  # no sw_0/.hydra-multirun
    r = simgen("train", "-m", "seed=0,1", "data.synthetic=x", cwd=tmp_path)  # train's default out names no key either
    assert r.returncode == 2 and "every job would write into out=runs/train" in r.stderr
