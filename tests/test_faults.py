"""Faults a user can hit, and what simgen does about each (docs/faults.md is the table; rows that other
files already prove point there). Every test here reproduces the fault itself: a full disk, a damaged
checkpoint, a merge cut short, a physics failure that outlasts its redraws, a holdout edited between runs."""
from __future__ import annotations

import errno
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from simgen.errors import DatasetError, SimulationError
from simgen.merge import merge_datasets
from simgen.run import render_dataset
from simgen.writers import coco

from .conftest import compose_dict, small_config
from .test_train import noise, write_folder

QUIET = dict(log=lambda m: None)
TINY_RENDER = ["n_images=3", "width=64", "height=64", "workers=1", "progress=false", "renderer=tiny"]


def cli(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """Run ``simgen <args>`` in this process (so monkeypatches reach the writer); exit code and stderr lines."""
    from simgen.cli import main

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() rewrites sys.argv for Hydra: restore it afterwards
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def parts(out: Path) -> list[str]:
    return sorted(p.name for p in (out / coco.PARTS).glob("*.json"))


# ---------------------------------------------------------------------------- disk full


@pytest.mark.parametrize("fails_on,kept", [("00000001.jpg", 1), ("annotations.json", 3)])
def test_disk_full_is_one_line_exit_1_and_resumes(tmp_path, monkeypatch, capsys, fails_on, kept):
    """ENOSPC while writing an image (or the final annotations.json): one line naming the folder and its free
    space, exit code 1, the finished images kept; the same command then finishes the dataset."""
    out = tmp_path / "ds"
    real_write = coco.atomic_write

    def full_disk(path, data, durable=True):
        if Path(path).name == fails_on:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data, durable)

    monkeypatch.setattr(coco, "atomic_write", full_disk)
    code, err = cli(monkeypatch, capsys, "render", f"out={out}", *TINY_RENDER)
    assert code == 1, err
    assert len(err) == 1 and err[0].startswith(f"simgen: error: disk full writing to {out} ("), err
    assert re.search(r"\(\d+(\.\d)? [GM]iB free there; No space left on device\)", err[0]), err[0]
    assert "rerun the same command" in err[0]
    assert len(parts(out)) == kept and not (out / "manifest.json").exists()

    monkeypatch.setattr(coco, "atomic_write", real_write)  # space freed
    code, err = cli(monkeypatch, capsys, "render", f"out={out}", *TINY_RENDER)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_images"] == 3 and manifest["rendered_this_run"] == 3 - kept
    assert f"({kept} already done, {3 - kept} rendered now" in err[-1], err
    assert not list(out.rglob(".*.tmp"))


def test_an_error_in_a_worker_pool_run_drops_the_queued_tasks():
    """A render that fails (a full disk in a worker, say) must stop, not first run every task still queued."""
    import os
    import time

    from simgen.run import worker_pool

    futures = []
    with pytest.raises(OSError):
        with worker_pool(1, os.getpid, ()) as pool:
            futures += [pool.submit(time.sleep, 0.05) for _ in range(200)]
            futures[0].result()
            raise OSError(errno.ENOSPC, "No space left on device")
    assert sum(f.cancelled() for f in futures) > 100


# ---------------------------------------------------------------------------- the resume line


def test_resume_summary_counts_both_parts_and_rates_this_run_only():
    from simgen.run import summary_line

    line = summary_line(Path("ds"), 24, 100, already=10, rendered=14, wall=7.0)
    assert line == "ds: 24 images, 100 annotations (10 already done, 14 rendered now at 2.00 img/s)"  # 14 / 7 s, not 24 / 7 s
    assert summary_line(Path("ds"), 24, 100, already=0, rendered=24, wall=8.0) == "ds: 24 images, 100 annotations, 3.00 img/s"
    assert summary_line(Path("ds"), 24, 100, already=24, rendered=0, wall=0.5) == "ds: 24 images, 100 annotations (24 already done, 0 rendered now)"


# ---------------------------------------------------------------------------- a render worker killed


def test_a_killed_render_worker_costs_only_its_images(tmp_path):
    """The OOM killer takes one worker (not the run): the pool restarts for what is left and the dataset ends
    whole, with no temporary file of the write it cut short."""
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "simgen.cli", "render", f"out={out}", "n_images=40", "width=64", "height=64",
                             "workers=2", "progress=false"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def render_workers() -> list[int]:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        return [int(k) for k in kids if b"resource_tracker" not in Path(f"/proc/{k}/cmdline").read_bytes()
                and Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]  # a finished probe is no worker

    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(parts(out) if (out / coco.PARTS).is_dir() else []) < 2:
            time.sleep(0.02)
        os.kill(render_workers()[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()  # a hung run (a pool that never shuts down) must not outlive the test
    assert proc.returncode == 0, err
    assert "a render worker died; restarting the pool" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_images"] == 40 and len(list((out / "images").iterdir())) == 40 and not list(out.rglob(".*.tmp"))
    # every image rendered, before and after the restart, is counted once (by the run's own process too)
    assert manifest["rendered_this_run"] == 40


def test_kills_around_the_state_file_and_the_documents_are_resumed(tmp_path):
    """Two kill windows a user hit: while the first state file was being written (the folder then held only simgen's
    lock and a temporary file, and the rerun refused it as "not a simgen dataset"), and after manifest.json but before
    DATASHEET.md and croissant.json (the rerun said "already complete" and never wrote them)."""
    out = tmp_path / "ds"
    (out / ".simgen").mkdir(parents=True)
    (out / ".simgen.lock").touch()
    (out / ".simgen" / ".state.json.123.tmp").write_text("{")
    cfg = small_config(tmp_path, *TINY_RENDER)
    render_dataset(cfg, **QUIET)
    assert (out / "manifest.json").is_file() and not (out / ".simgen").exists()
    sheet = (out / "DATASHEET.md").read_text()
    (out / "DATASHEET.md").unlink()
    (out / "croissant.json").unlink()
    (out / ".simgen").mkdir()  # as the run leaves it until its documents are written
    said: list[str] = []
    render_dataset(cfg, log=said.append)
    assert (out / "DATASHEET.md").read_text() == sheet and (out / "croissant.json").is_file() and not (out / ".simgen").exists()
    assert "wrote its DATASHEET.md and croissant.json again" in said[-1]


def test_a_mesh_edited_between_runs_is_not_mixed_into_its_dataset(tmp_path):
    """A user's mesh edited between a killed run and its rerun gave one dataset of two meshes (the resume check hashed
    the config's text only): the file's content counts now, and the line names the file."""
    from simgen.errors import ConfigError

    from .test_physics import _cube_obj

    mesh = _cube_obj(tmp_path / "widget.obj", (0.0, 0.0, 0.0))
    over = [*TINY_RENDER, "n_images=4", "scene=custom", "~scene.objects.box", f"+scene.objects.widget={{asset: {mesh}, scale: 1}}"]
    first = render_dataset(small_config(tmp_path, *over), **QUIET)
    state = json.loads((first / "manifest.json").read_text())["state"]
    _cube_obj(mesh, (0.0, 0.0, 0.0), side=0.02)
    for killed in (False, True):
        if killed:  # as a run killed before its end leaves it: its state file, no manifest
            (first / ".simgen").mkdir()
            (first / ".simgen" / "state.json").write_text(json.dumps(state))
            (first / "manifest.json").unlink()
        with pytest.raises(ConfigError, match=r"rendered from another version of .*widget\.obj, which has changed since"):
            render_dataset(small_config(tmp_path, *over), **QUIET)
    # a dataset begun before file contents counted (its state has no user_files) is named as such, not "another config"
    (first / ".simgen" / "state.json").write_text(json.dumps({"config_hash": "older"}))
    with pytest.raises(ConfigError, match="was begun by an older simgen"):
        render_dataset(small_config(tmp_path, *over), **QUIET)
    # a built-in scene hashes by the formula of before user files counted: datasets made then still resume
    import hashlib

    from simgen.run import NON_CONTENT_KEYS, config_hash

    cfg = small_config(tmp_path, *TINY_RENDER)
    content = {k: v for k, v in cfg.resolved.items() if k not in NON_CONTENT_KEYS}
    content["renderer"] = {k: v for k, v in content["renderer"].items() if k != "devices"}
    assert config_hash(cfg) == hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize("writer", ["coco", "webdataset"])
def test_a_mesh_edited_while_its_run_renders_is_not_passed_off_as_one_version(tmp_path, monkeypatch, writer):
    """Workers load a mesh when they start (and again after a pool restart): an edit mid-run gave a dataset of two
    versions that the manifest hashed as the new one. The run stops before its manifest and says which file."""
    import simgen.run as run
    from simgen.errors import ConfigError

    from .test_physics import _cube_obj

    mesh = _cube_obj(tmp_path / "widget.obj", (0.0, 0.0, 0.0))
    real = run.render_images

    def edited_midway(*a, **k):
        out = real(*a, **k)
        _cube_obj(mesh, (0.0, 0.0, 0.0), side=0.02)
        return out

    monkeypatch.setattr(run, "render_images", edited_midway)
    cfg = small_config(tmp_path, *TINY_RENDER, "scene=custom", "~scene.objects.box", f"+scene.objects.widget={{asset: {mesh}, scale: 1}}",
                       f"writer={writer}")
    from simgen.writers.webdataset import render_webdataset

    with pytest.raises(ConfigError, match=r"widget\.obj changed while this run rendered"):
        render_dataset(cfg, **QUIET) if writer == "coco" else render_webdataset(cfg, shard_size=2, **QUIET)
    assert not (cfg.out / "manifest.json").exists()


def test_a_user_mesh_hashes_alike_from_any_working_folder(tmp_path, monkeypatch):
    """The content of the user's files counts in the resume check, not where they were reached from: the same config
    with a relative mesh path, run from two folders holding the same file, has one hash (shards on two nodes merge)."""
    from simgen.run import config_hash

    from .test_physics import _cube_obj

    hashes = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _cube_obj(tmp_path / d / "widget.obj", (0.0, 0.0, 0.0))
        monkeypatch.chdir(tmp_path / d)
        hashes.append(config_hash(small_config(tmp_path, *TINY_RENDER, "scene=custom", "~scene.objects.box",
                                               "+scene.objects.widget={asset: widget.obj, scale: 1}")))
    assert hashes[0] == hashes[1]


def test_a_write_cut_short_mid_run_leaves_no_temporary_file(tmp_path, monkeypatch):
    """What a worker killed mid-write leaves (its temporary file) is gone once the restarted run finishes."""
    real_write, cut = coco.atomic_write, []

    def killed_mid_write_once(path, data, durable=True):
        path = Path(path)
        if path.name == "00000001.jpg" and not cut:
            cut.append(path.with_name(f".{path.name}.999999.tmp"))
            cut[0].write_bytes(data[: len(data) // 2])  # the dead worker's half-written image
        return real_write(path, data, durable)

    monkeypatch.setattr(coco, "atomic_write", killed_mid_write_once)
    cfg = small_config(tmp_path, *TINY_RENDER)
    render_dataset(cfg, **QUIET)
    assert cut and not cut[0].exists() and not list(cfg.out.rglob(".*.tmp"))


# ---------------------------------------------------------------------------- physics that keeps failing


def test_physics_blowup_past_its_redraws_ends_the_render_in_one_line_and_keeps_done_images(tmp_path, monkeypatch):
    """Image 0 settles; every draw of image 1 blows up: the render stops on image 1 with one line that says how
    many draws failed, image 0 stays on disk, and the rerun (physics fixed) renders only what is missing."""
    from simgen import physics

    real_simulate, calls = physics.PhysicsWorld.simulate, {"n": 0}

    def blows_up_after_the_first(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise SimulationError("physics blew up: object 0 (die) has a non-finite pose after 3 steps")
        return real_simulate(self, *a, **k)

    monkeypatch.setattr(physics.PhysicsWorld, "simulate", blows_up_after_the_first)
    cfg = small_config(tmp_path, *TINY_RENDER, "physics.placement_retries=2")
    with pytest.raises(SimulationError, match=r"image 1: physics blew up.*3 draws failed; physics.placement_retries=2") as e:
        render_dataset(cfg, **QUIET)
    assert "\n" not in str(e.value) and e.value.exit_code == 2
    assert parts(cfg.out) == ["00000000.json"]
    monkeypatch.setattr(physics.PhysicsWorld, "simulate", real_simulate)
    render_dataset(cfg, **QUIET)
    assert json.loads((cfg.out / "manifest.json").read_text())["rendered_this_run"] == 2


# ---------------------------------------------------------------------------- training checkpoints


def partial_checkpoint(path: Path, settings_hash: str = "h") -> None:
    from simgen.train.engine import save_checkpoint
    from simgen.train.models import ModelConfig, build_model

    model = build_model(ModelConfig(name="fcos_lite", trunk="tiny", input_size=64, max_size=64, channels=32), num_classes=2)
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(path, model, {"partial": True, "settings_hash": settings_hash, "step": 2}, opt)


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a checkpoint"])
def test_damaged_checkpoint_restarts_from_scratch_with_one_warning(tmp_path, capsys, damage):
    """A checkpoint.pt cut short (machine crash, full disk) or replaced: the run trains from scratch with one
    warning line, instead of a traceback (or a silent restart)."""
    from simgen.train.engine import resumable

    path = tmp_path / "run" / "checkpoint.pt"
    partial_checkpoint(path)
    assert resumable(path, "h") is not None and not capsys.readouterr().err  # whole: resumed, nothing to say
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "not a checkpoint": b"not a checkpoint\n"}[damage])
    assert resumable(path, "h") is None
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(path) in err[0] and "from scratch" in err[0], err


# ---------------------------------------------------------------------------- merge


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("shards")
    for k in range(2):
        render_dataset(small_config(tmp, "n_images=4", "width=64", "height=64", f"shard.index={k}", "shard.count=2"), **QUIET)
    return sorted((tmp / "ds" / "shards").iterdir())


def test_interrupted_merge_is_rerun_to_the_same_result(tmp_path, shards, monkeypatch):
    """A merge killed half way (some images linked, no annotations.json) is finished by the same command."""
    import simgen.merge as merge

    real_link, calls = merge.link_or_copy, {"n": 0}

    def killed_on_the_third(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # stands in for kill -9: nothing after this point runs
        real_link(src, dst)

    out = tmp_path / "merged"
    monkeypatch.setattr(merge, "link_or_copy", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        merge_datasets(shards, out)
    assert (out / "images").is_dir() and not (out / "annotations.json").exists() and not (out / "manifest.json").exists()
    monkeypatch.setattr(merge, "link_or_copy", real_link)
    merge_datasets(shards, out)
    reference = merge_datasets(shards, tmp_path / "reference")
    assert (out / "annotations.json").read_bytes() == (reference / "annotations.json").read_bytes()
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.name for p in (reference / "images").iterdir())
    assert not (out / ".simgen").exists() and not (out / ".simgen.lock").exists() and not list(out.rglob(".*.tmp"))


def test_a_finished_merge_rerun_is_complete_and_its_manifest_describes_the_merge(tmp_path, shards):
    """The same merge command again is "already complete", as a render's rerun is (it was refused: "already holds a
    dataset"); the merged manifest names the merge's folder and sums the shards' work instead of copying shard 0's."""
    out = tmp_path / "merged"
    merge_datasets(shards, out)
    said: list[str] = []
    merge_datasets(shards, out, log=said.append)
    merge_datasets(shards[::-1], out, log=said.append)  # the same folders in another order
    assert said == [f"{out}: already the merge of these folders; nothing to do."] * 2
    man = json.loads((out / "manifest.json").read_text())
    parts_ = [json.loads((d / "manifest.json").read_text()) for d in shards]
    assert man["config"]["out"] == str(out) and man["config"]["shard"] == {"index": 0, "count": 1}
    assert man["rendered_this_run"] == sum(m["rendered_this_run"] for m in parts_) == 4 and man["images_per_second"] is None
    assert man["merged_from"] == [str(d.resolve()) for d in shards]
    assert "merged from 2 shard folders" in (out / "DATASHEET.md").read_text()
    (out / "annotations.json").write_text("{}")  # not the merge of these folders any more: refused as before
    (out / "manifest.json").write_text(json.dumps({**man, "merged_from": ["elsewhere"]}))
    with pytest.raises(DatasetError, match="already holds a dataset"):
        merge_datasets(shards, out)


def test_merge_names_why_shards_do_not_join(tmp_path, shards):
    """Shards drawn by different renderers (renderer=auto picks by a speed probe: two machines can differ) are refused,
    and so are shards of different splits and of different settings, each naming what differs."""
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(shards[1], odd)
    man = json.loads((odd / "manifest.json").read_text())
    (odd / "manifest.json").write_text(json.dumps({**man, "renderer": "gl" if man["renderer"] != "gl" else "tiny"}))
    with pytest.raises(DatasetError, match=r"drawn by different renderers .*render the others again with renderer="):
        merge_datasets([shards[0], odd], tmp_path / "m1")
    (odd / "manifest.json").write_text(json.dumps({**man, "shard": {"index": 1, "count": 3}}))
    # folders of different splits that cover the dataset exactly still merge; where ids repeat, that is the reason given
    assert json.loads((merge_datasets([shards[0], odd], tmp_path / "m2") / "manifest.json").read_text())["shard_counts"] == [2, 3]
    with pytest.raises(DatasetError, match=r"image id \d+ is in both .*; they are shards of different splits \(shard.count 2 and 3\)"):
        merge_datasets([shards[0], odd, shards[1]], tmp_path / "m2b")
    other = {**man, "state": {**man["state"], "config_hash": "x"}, "config": {**man["config"], "n_images": 5}}
    (odd / "manifest.json").write_text(json.dumps(other))
    with pytest.raises(DatasetError, match=r"differ in n_images: 4 vs 5"):
        merge_datasets([shards[0], odd], tmp_path / "m3")


def test_merge_with_a_missing_shard_writes_nothing(tmp_path, shards):
    out = tmp_path / "merged"
    with pytest.raises(DatasetError, match="a shard is missing"):
        merge_datasets(shards[:1], out)
    assert not out.exists() or not any(p.name != ".simgen.lock" for p in out.iterdir()), sorted(out.rglob("*"))


def test_disk_full_during_a_merge_is_one_line_and_the_rerun_finishes(tmp_path, shards, monkeypatch):
    import simgen.merge as merge
    from simgen.errors import RenderError

    real_link = merge.link_or_copy

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    out = tmp_path / "merged"
    monkeypatch.setattr(merge, "link_or_copy", full_disk)
    with pytest.raises(RenderError, match="disk full writing to") as e:
        merge_datasets(shards, out)
    assert e.value.exit_code == 1 and "\n" not in str(e.value) and str(out) in str(e.value)
    monkeypatch.setattr(merge, "link_or_copy", real_link)
    assert json.loads((merge_datasets(shards, out) / "manifest.json").read_text())["n_images"] == 4


def test_a_merge_into_a_folder_being_written_is_refused(tmp_path, shards):
    from simgen.errors import ConfigError
    from simgen.run import out_lock

    out = tmp_path / "merged"
    with out_lock(out):  # a render (or another merge) holds the folder
        with pytest.raises(ConfigError, match="being written by another simgen run"):
            merge_datasets(shards, out)
        assert sorted(p.name for p in out.iterdir()) == [".simgen.lock"]  # the holder's lock, nothing of the merge


# ---------------------------------------------------------------------------- corrupt input through the CLI


def test_corrupt_annotations_through_the_cli_is_one_line(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "annotations.json").write_text('{"images": [{"id": 1,')  # cut short
    code, err = cli(monkeypatch, capsys, "preview", str(bad))
    assert code == 2 and len(err) == 1 and "not valid JSON" in err[0] and "re-render" in err[0], err


# ---------------------------------------------------------------------------- the holdout between runs


TINY_TRAIN = ["model.trunk=tiny", "model.input_size=64", "model.max_size=64", "model.channels=32", "trainer=smoke",
              "trainer.crop=64", "trainer.batch_size=2", "trainer.max_steps=1"]


def test_a_finished_run_is_not_reused_after_its_holdout_changed(tmp_path):
    from simgen.train.utility import job_config, run_one

    syn = write_folder(tmp_path / "syn", [noise(100 + i, 64) for i in range(4)])
    hold = write_folder(tmp_path / "hold", [noise(300 + i, 64) for i in range(2)])
    job = job_config(compose_dict("train", [*TINY_TRAIN, f"data.synthetic=[{syn}]", f"data.holdout={hold}", f"out={tmp_path / 'run'}"]))
    run_one(job, tmp_path / "run", 1.0, 0)
    write_folder(hold, [noise(400 + i, 64) for i in range(3)])  # other photos, one more: the old scores mean nothing now
    lines: list[str] = []
    run_one(job, tmp_path / "run", 1.0, 0, log=lines.append)
    assert not any("already done" in ln for ln in lines), lines
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["holdout"]["n_images"] == 3


def test_a_finished_run_is_trained_again_after_its_training_data_changed(tmp_path):
    """The same command on a training folder re-rendered since (other labels) trains again instead of reading back the
    old scores; an untouched folder is read back."""
    from simgen.train.utility import job_config, run_one

    syn = write_folder(tmp_path / "syn", [noise(100 + i, 64) for i in range(4)])
    hold = write_folder(tmp_path / "hold", [noise(300 + i, 64) for i in range(2)])
    job = job_config(compose_dict("train", [*TINY_TRAIN, f"data.synthetic=[{syn}]", f"data.holdout={hold}", f"out={tmp_path / 'run'}"]))
    run_one(job, tmp_path / "run", 1.0, 0)
    lines: list[str] = []
    run_one(job, tmp_path / "run", 1.0, 0, log=lines.append)
    assert any("already done" in ln for ln in lines), lines
    write_folder(syn, [noise(500 + i, 64) for i in range(5)])  # re-rendered: other images and labels, same path
    lines.clear()
    run_one(job, tmp_path / "run", 1.0, 0, log=lines.append)
    assert not any("already done" in ln for ln in lines) and any("changed since" in ln for ln in lines), lines
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["entry"]["train_images"] == 5



def test_a_holdout_image_that_is_missing_is_said_before_training(tmp_path):
    """The holdout guard hashes every holdout image before training; a missing one was skipped there and found only when
    scoring, after the whole training budget. It is one line now, before the first step."""
    from simgen.train.guard import check_no_leak

    holdout = tmp_path / "holdout"
    (holdout / "images").mkdir(parents=True)
    (holdout / "images" / "a.png").write_bytes(b"\\x89PNG fake")
    doc = {"images": [{"id": 1, "file_name": "images/a.png", "width": 8, "height": 8},
                      {"id": 2, "file_name": "images/gone.png", "width": 8, "height": 8}],
           "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (holdout / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"image `images/gone.png` listed in .*annotations.json is missing"):
        check_no_leak([tmp_path / "train"], holdout)


def test_holdout_boxes_outside_their_image_are_scored_clipped_and_said(tmp_path):
    """A hand-labelled holdout with a box reaching past its image and one with no area: scored as they were, a detector
    that returned every object exactly lost AP (0.96-0.98). They are scored clipped (or left out) now, with one line."""
    from simgen.train.evaluate import coco_evaluate
    from simgen.train.utility import holdout_box_warning, scorable

    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
                           {"id": 2, "image_id": 1, "category_id": 1, "bbox": [-10, 50, 40, 50], "area": 2000, "iscrowd": 0},
                           {"id": 3, "image_id": 1, "category_id": 1, "bbox": [60, 20, 0, 10], "area": 0, "iscrowd": 0}],
           "categories": [{"id": 1, "name": "x"}]}
    fixed, clipped, dropped = scorable(doc)
    assert (clipped, dropped) == (1, 1) and [a["bbox"] for a in fixed["annotations"]] == [[10, 10, 20, 20], [0.0, 50.0, 30.0, 30.0]]
    found = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 0.9} for b in ([10, 10, 20, 20], [0, 50, 30, 30])]
    assert coco_evaluate(fixed, found)["map"] == pytest.approx(1.0)
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    from types import SimpleNamespace

    line = holdout_box_warning(SimpleNamespace(holdout=tmp_path))
    assert "1 box(es) reach outside their image (scored clipped to it) and 1 have no area" in line
