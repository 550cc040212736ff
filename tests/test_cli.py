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
    (["n_images=0"], "n_images must be a positive integer"),
    (["n_images=-3"], "n_images must be a positive integer"),
    (["width=4"], "width must be"),
    (["height=100000"], "height must be"),
    (["nosuchkey=1"], "bad override"),
    (["renderer=egl", "width=1600"], "at most 1024x768"),
    (["renderer=egl", "renderer.devices=[99]"], "renderer=egl"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, args, match):
    out = tmp_path / "ds"
    r = simgen("render", f"out={out}", "n_images=2", "width=64", "height=64", *args)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("simgen: error:") and match in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not out.exists()


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


def test_worker_pool_output_is_clean(tmp_path):
    """Spawned render workers import PyBullet, whose C code prints its build time: none of that chatter
    may reach the terminal or a pipe, only simgen's own summary line."""
    r = simgen("render", f"out={tmp_path / 'ds'}", "n_images=2", "width=64", "height=64", "workers=2", "progress=false")
    assert r.returncode == 0, r.stderr
    assert "build time" not in r.stdout + r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "2 images" in lines[0], lines
