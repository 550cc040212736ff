"""Scale-out: workers, shards + merge, views per scene, resume after kill -9, WebDataset, on-the-fly."""
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from simgen.data import CocoDataset, RenderedDataset, collate, webdataset
from simgen.merge import merge_datasets
from simgen.run import render_dataset

from .conftest import small_config

QUIET = dict(log=lambda m: None)


def same_dataset(a, b):
    assert (a / "annotations.json").read_bytes() == (b / "annotations.json").read_bytes()
    doc = json.loads((a / "annotations.json").read_text())
    for im in doc["images"]:
        assert (a / im["file_name"]).read_bytes() == (b / im["file_name"]).read_bytes(), im["file_name"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    return render_dataset(small_config(tmp, "n_images=6"), **QUIET)


def test_two_workers_equal_one(tmp_path, single):
    import cv2

    threads = cv2.getNumThreads()
    two = render_dataset(small_config(tmp_path, "n_images=6", "workers=2"), **QUIET)
    same_dataset(single, two)
    assert cv2.getNumThreads() == threads  # the run's own share of OpenCV's threads was put back
    manifest = json.loads((two / "manifest.json").read_text())  # configured workers, and the processes that rendered
    assert manifest["workers"] == 2 and manifest["processes"] in (1, 2)
    assert json.loads((single / "manifest.json").read_text())["processes"] == 1


def test_fork_only_without_gl_libraries_or_other_threads(monkeypatch):
    """fork_is_safe reads the process's mapped files and its threads: GL, EGL or a GPU driver loaded, or another thread
    running (a pool already going, a launcher's), means spawn; OpenCV's bundled libdrm, torch's CUDA runtime and tqdm's
    monitor do not. SIMGEN_START_METHOD sets either; anything else is one clear error."""
    import threading

    from simgen.errors import ConfigError
    from simgen.run import fork_is_safe, start_method

    plain = "7f00 r-xp /usr/lib/libc.so.6\n7f01 r-xp /site-packages/opencv_python_headless.libs/libdrm-b0291a67.so.2.4.0\n" \
            "7f02 r-xp /site-packages/torch/lib/libcudart.so.13\n"
    main = [threading.main_thread()]
    assert fork_is_safe(plain, main)
    for lib in ("/usr/lib/x86_64-linux-gnu/libEGL_mesa.so.0", "/usr/lib/libGLX_mesa.so.0", "/usr/lib/libcuda.so.1",
                "/usr/lib/libnvidia-glcore.so.580", "/opt/rocm/lib/libamdhip64.so.6"):
        assert not fork_is_safe(plain + f"7f03 r-xp {lib}\n", main), lib

    class TMonitor(threading.Thread):  # what tqdm names its monitor
        pass

    stop = threading.Event()
    other, monitor = threading.Thread(target=stop.wait), TMonitor(target=stop.wait, daemon=True)
    other.start(), monitor.start()
    try:
        assert fork_is_safe(plain, [*main, monitor]) and not fork_is_safe(plain, [*main, other])
    finally:
        stop.set()
    for method in ("fork", "spawn"):
        monkeypatch.setenv("SIMGEN_START_METHOD", method)
        assert start_method() == method
    monkeypatch.setenv("SIMGEN_START_METHOD", "thread")
    with pytest.raises(ConfigError, match="SIMGEN_START_METHOD"):
        start_method()


def test_warm_up_builds_what_forked_workers_inherit(tmp_path, monkeypatch):
    """Before its workers fork, the run's process builds the noise fields and the concave meshes' visibility tables once."""
    from simgen import annotate, assets, sensor
    from simgen.pipeline import warm_up

    monkeypatch.setattr(sensor, "_noise_fields", {})
    monkeypatch.setattr(annotate, "_LOADED", {})
    cfg = small_config(tmp_path, "scene=tabletop")
    warm_up(cfg)
    assert set(sensor._noise_fields) == {False, True}
    concave = {assets.resolve(g.asset).key for g in cfg.scene.objects if not assets.resolve(g.asset).convex}
    assert concave and concave <= set(annotate._LOADED)


def test_workers_fork_until_this_process_loads_gl():
    """A fresh process forks; once it has a GL context (a notebook that rendered, a restarted pool) it spawns."""
    from .test_glrender import gl_or_skip

    gl_or_skip()
    env = {k: v for k, v in os.environ.items() if k != "SIMGEN_START_METHOD"}
    code = ("from simgen.run import start_method; before = start_method(); import moderngl; "
            "ctx = moderngl.create_standalone_context(require=330, backend='egl'); print(before, start_method())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["fork", "spawn"]


def test_a_run_forks_its_workers_and_either_way_writes_the_same_dataset(tmp_path):
    """`simgen render workers=2` forks its worker (the manifest says so), and the same command with its worker spawned
    writes the same bytes, under renderer=gl (the default where EGL runs)."""
    from .test_glrender import gl_or_skip

    gl_or_skip()
    outs = {}
    for method in ("", "spawn"):  # "": as simgen chooses
        outs[method] = tmp_path / (method or "default")
        cmd = [sys.executable, "-m", "simgen", "render", f"out={outs[method]}", "n_images=12", "width=96", "height=96",
               "workers=2", "renderer=gl", "progress=false"]
        env = {k: v for k, v in os.environ.items() if k != "SIMGEN_START_METHOD"}
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(env, **({"SIMGEN_START_METHOD": method} if method else {})))
        assert r.returncode == 0, r.stderr
        manifest = json.loads((outs[method] / "manifest.json").read_text())
        assert manifest["processes"] == 2 and manifest["worker_start"] == [method or "fork"]
    same_dataset(outs[""], outs["spawn"])


def test_the_runs_own_process_renders_beside_its_workers(tmp_path, monkeypatch):
    """workers=N starts N-1 processes and renders in the run's own one too: on workers=2 both processes render some of
    the 16 images, and the dataset is the one workers=1 writes."""
    from simgen import run

    one = render_dataset(small_config(tmp_path / "a", "n_images=16"), **QUIET)
    seen: list[dict] = []
    write_manifest = run.write_manifest
    monkeypatch.setattr(run, "write_manifest", lambda cfg, doc, stats, wall, **kw: (seen.extend(stats), write_manifest(cfg, doc, stats, wall, **kw)))
    two = render_dataset(small_config(tmp_path / "b", "n_images=16", "workers=2"), **QUIET)
    same_dataset(one, two)
    pids = [s["pid"] for s in seen]
    assert len(pids) == 16 and 1 <= pids.count(os.getpid()) < 16 and len(set(pids)) == 2
    assert json.loads((two / "manifest.json").read_text())["processes"] == 2


def test_the_last_tasks_shrink_so_processes_finish_together():
    """Tasks of 8 scenes, but near the end of the queue none takes more than 1/(2 x processes) of what is left; a
    scene's views stay in one task, and the tasks hold every index once, in order."""
    from simgen.run import chunks

    assert [len(c) for c in chunks(list(range(60)), 1, 8)] == [8] * 7 + [4]  # one process: as before
    two = chunks(list(range(60)), 1, 8, processes=2)
    assert sum(two, []) == list(range(60))
    assert [len(c) for c in two][:4] == [8] * 4 and [len(c) for c in two][-7:] == [1] * 7
    views = chunks(list(range(40)), 4, 2, processes=2)
    assert sum(views, []) == list(range(40)) and all(len(c) % 4 == 0 and c[0] % 4 == 0 for c in views)
    assert [len(c) for c in views][-1] == 4


def test_shards_merge_to_the_single_run(tmp_path, single):
    for k in range(3):
        render_dataset(small_config(tmp_path, "n_images=6", f"shard.index={k}", "shard.count=3"), **QUIET)
    shards = sorted((tmp_path / "ds" / "shards").iterdir())
    assert len(shards) == 3
    merged = merge_datasets(shards, tmp_path / "merged")
    same_dataset(single, merged)
    got, want = (json.loads((d / "manifest.json").read_text()) for d in (merged, single))
    for key in ("n_annotations", "objects_dropped", "objects_unlabelled"):  # counted over every shard, not taken from the first
        assert got[key] == want[key], key


def test_views_per_scene_share_the_settled_scene(tmp_path):
    a = render_dataset(small_config(tmp_path, "n_images=4", "views_per_scene=2", name="v1"), **QUIET)
    b = render_dataset(small_config(tmp_path, "n_images=4", "views_per_scene=2", "workers=2", name="v2"), **QUIET)
    same_dataset(a, b)
    doc = json.loads((a / "annotations.json").read_text())
    w2c = {im["id"]: np.array(im["world_to_camera"]) for im in doc["images"]}
    assert not np.allclose(w2c[1], w2c[2])  # another camera

    def world_positions(image_id):
        inv = np.linalg.inv(w2c[image_id])
        return {a["object_index"]: np.round((inv[:3, :3] @ a["pose"]["t"]) + inv[:3, 3], 5).tolist()
                for a in doc["annotations"] if a["image_id"] == image_id}

    p1, p2 = world_positions(1), world_positions(2)
    shared = set(p1) & set(p2)
    assert shared and all(np.allclose(p1[k], p2[k], atol=1e-6) for k in shared)
    p3 = world_positions(3)
    assert not (set(p1) & set(p3)) or any(not np.allclose(p1[k], p3[k]) for k in set(p1) & set(p3))


def test_resume_after_kill_minus_9(tmp_path):
    """Kill a real render mid-run, rerun the same command: the result equals an uninterrupted run. The run has a
    physics process beside it, which dies with it (only the run itself is killed)."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "simgen.cli", "render", f"out={out}", "n_images=24", "width=96", "height=96", "workers=1", "progress=false",
           "physics_process=true"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = out / ".simgen" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and (not parts.is_dir() or len(list(parts.glob("*.json"))) < 4):
        time.sleep(0.05)
    own = Path(f"/proc/{proc.pid}/cmdline").read_bytes()  # a forked child keeps it; a spawned one runs spawn_main
    kids = [int(k) for k in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if (lambda c: b"spawn_main" in c or c == own)(Path(f"/proc/{k}/cmdline").read_bytes())]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert kids, "expected the physics process beside the run"

    def alive(pid: int) -> bool:  # a zombie (dead, not yet reaped by whoever adopted it) counts as gone
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.time() + 30
    while time.time() < deadline and any(alive(k) for k in kids):
        time.sleep(0.05)
    left = [k for k in kids if alive(k)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, "the physics process outlived the run it served"
    done_before = len(list(parts.glob("*.json")))
    assert 4 <= done_before < 24, "the render should have been killed mid-run"
    assert len(list(parts.glob("*.json"))) == done_before, "nothing may keep writing after the run was killed"
    assert not (out / "manifest.json").exists() and not (out / "annotations.json").exists()
    # What a machine crash (not just a kill) can leave, since per-image files are not fsynced one by
    # one: an image cut to nothing under a finished part, and an empty part. Both must be redone.
    finished = sorted(parts.glob("*.json"))
    lost_image = json.loads(finished[0].read_text())["image"]["file_name"]
    (out / lost_image).write_bytes(b"")
    finished[1].write_bytes(b"")
    # ... and an image cut short (a valid-looking, non-empty prefix): resume must not keep it either.
    cut = out / json.loads(finished[2].read_text())["image"]["file_name"]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rendered_this_run"] == 24 - done_before + 3  # finished images were not re-rendered, damaged ones were
    reference = render_dataset(small_config(tmp_path, "n_images=24", "width=96", "height=96", "renderer=auto", name="ref"), **QUIET)
    same_dataset(reference, out)
    assert not list(out.rglob(".*.tmp"))


def test_webdataset_matches_coco(tmp_path, single):
    cfg = small_config(tmp_path, "n_images=6", "writer=webdataset", name="wds")
    from simgen.writers.webdataset import render_webdataset

    out = render_webdataset(cfg, shard_size=4, **QUIET)
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    streamed = list(webdataset(out))
    coco = CocoDataset(single)
    assert len(streamed) == len(coco) == 6
    for (img, t), (img2, t2) in zip(streamed, coco):
        assert torch.equal(img, img2)
        assert torch.equal(t["boxes"], t2["boxes"]) and torch.equal(t["labels"], t2["labels"])
        assert torch.equal(t["masks"], t2["masks"]) and t["image_id"] == t2["image_id"]
    again = render_webdataset(small_config(tmp_path, "n_images=6", "writer=webdataset", "workers=2", name="wds2"), shard_size=4, **QUIET)
    fed = render_webdataset(small_config(tmp_path, "n_images=6", "writer=webdataset", "physics_process=true", name="wds3"),
                            shard_size=4, **QUIET)
    for name in ("shard-000000.tar", "shard-000001.tar"):  # member times fixed: byte-identical, whatever the workers
        assert (out / name).read_bytes() == (again / name).read_bytes() == (fed / name).read_bytes()
    # a sharded WebDataset render streams from its out= folder or a list of its shard folders (merge says so); before,
    # the folder had "no shard-*.tar files" and a list of folders was an IsADirectoryError
    for k in range(2):
        render_webdataset(small_config(tmp_path, "n_images=6", "writer=webdataset", f"shard.index={k}", "shard.count=2",
                                       name="wsh"), shard_size=4, **QUIET)
    whole = sorted(int(t["image_id"]) for _, t in webdataset(tmp_path / "wsh"))
    assert whole == sorted(int(t["image_id"]) for _, t in coco) and len(whole) == 6
    shard_dirs = sorted((tmp_path / "wsh" / "shards").iterdir())
    assert sorted(int(t["image_id"]) for _, t in webdataset(shard_dirs)) == whole
    from simgen.errors import DatasetError

    with pytest.raises(DatasetError, match="no shard-.*tar files in"):
        webdataset(tmp_path / "wsh" / "shards")


def test_webdataset_resumes_after_kill_per_image_and_overwrite_drops_old_tars(tmp_path):
    """A kill costs the images in flight, not a shard's worth: the rerun packs the staged images it finds and renders
    only the rest, into tars byte-identical to an uninterrupted run's. overwrite=true must not keep an old tar (the
    run would take it for one of its own finished shards)."""
    out = tmp_path / "killed"
    base = [sys.executable, "-m", "simgen.cli", "render", "writer=webdataset", "writer.shard_size=10", "width=96", "height=96",
            "progress=false"]
    proc = subprocess.Popen([*base, "n_images=24", f"out={out}", "workers=1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    staged = out / ".simgen" / "stage" / ".simgen" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and (not staged.is_dir() or len(list(staged.glob("*.json"))) < 5):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and every process it started
    proc.wait()
    # what the killed run finished: staged images, and shards packed as soon as their last image was staged
    done = {int(p.stem) for p in staged.glob("*.json")}
    done |= {i for t in out.glob("shard-*.tar") for i in range(10 * int(t.stem[6:]), min(24, 10 * int(t.stem[6:]) + 10))}
    assert 5 <= len(done) < 24, "the render should have been killed mid-run"
    assert not (out / "manifest.json").exists()
    r = subprocess.run([*base, "n_images=24", f"out={out}", "workers=2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rendered_this_run"] == 24 - len(done), "staged or packed images were rendered again"
    assert manifest["workers"] == 2 and manifest["processes"] in (1, 2)
    assert not (out / ".simgen").exists() and not list(out.rglob(".*.tmp"))
    ref = tmp_path / "ref"
    assert subprocess.run([*base, "n_images=24", f"out={ref}"], capture_output=True, timeout=300).returncode == 0
    names = sorted(p.name for p in ref.glob("*.tar"))
    assert names == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(p.name for p in out.glob("*.tar")) == names
    for name in names:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    # overwrite with another config: every old tar goes, the new run writes its own
    r = subprocess.run([*base, "n_images=8", "seed=5", f"out={out}", "overwrite=true"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar"]
    assert json.loads((out / "manifest.json").read_text())["n_images"] == 8
    assert (out / "shard-000000.tar").read_bytes() != (ref / "shard-000000.tar").read_bytes()


def test_webdataset_shards_pack_as_they_fill_and_a_crash_between_rename_and_cleanup_resumes(tmp_path, monkeypatch):
    """Shards are packed while the render goes on, not at its end. A crash after a tar's rename but before its staged
    files were deleted, with the next shard half staged, resumes to the uninterrupted run's tars and renders only what
    was missing. A resume asking for another shard size is refused in one line (the finished tars were cut at the
    first)."""
    from simgen.errors import ConfigError
    from simgen.writers import webdataset as wds_writer

    ref = wds_writer.render_webdataset(small_config(tmp_path, "n_images=6", "writer=webdataset", name="ref"), shard_size=4, **QUIET)
    cfg = small_config(tmp_path, "n_images=6", "writer=webdataset", name="crashed")
    real_pack, seen = wds_writer.pack, []

    def pack_then_crash(out, stage, name, parts, *args):  # the tar renamed; the machine dies before the cleanup
        seen.append(sorted((stage / ".simgen" / "parts").glob("*.json")))
        backup = {f: f.read_bytes() for f in stage.rglob("*") if f.is_file()}
        real_pack(out, stage, name, parts, *args)
        for f, data in backup.items():
            f.write_bytes(data)
        raise KeyboardInterrupt

    monkeypatch.setattr(wds_writer, "pack", pack_then_crash)
    with pytest.raises(KeyboardInterrupt):
        wds_writer.render_webdataset(cfg, shard_size=4, **QUIET)
    monkeypatch.setattr(wds_writer, "pack", real_pack)
    assert len(seen) == 1 and len(seen[0]) == 4, "the first shard is packed when its fourth image is staged, mid-run"
    assert (cfg.out / "shard-000000.tar").exists() and not (cfg.out / "manifest.json").exists()
    with pytest.raises(ConfigError, match="shard_size=4"):
        wds_writer.render_webdataset(cfg, shard_size=3, **QUIET)
    out = wds_writer.render_webdataset(cfg, shard_size=4, **QUIET)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rendered_this_run"] == 2  # images 4 and 5: the first four were packed
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert manifest["n_annotations"] == json.loads((ref / "manifest.json").read_text())["n_annotations"] > 0
    assert not (out / ".simgen").exists()


def test_webdataset_depth_is_float32_and_semantic_maps_ride_along(tmp_path):
    """labels.depth=png16 stores millimetres in a COCO folder; a shard keeps the float32 metres (what tars always held),
    equal to a COCO render's npy depth of the same config, and the semantic map as PNG."""
    import io
    import tarfile

    import cv2

    over = ("n_images=2", "labels.semantic=true")
    from simgen.writers.webdataset import render_webdataset

    out = render_webdataset(small_config(tmp_path, *over, "labels.depth=png16", "writer=webdataset", name="w"), shard_size=8, **QUIET)
    coco_out = render_dataset(small_config(tmp_path, *over, "labels.depth=npy", name="c"), **QUIET)
    with tarfile.open(out / "shard-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert sorted(members) == [f"{s}.{ext}" for s in ("00000000", "00000001") for ext in ("depth.npy", "jpg", "json", "semantic.png")]
    for s in ("00000000", "00000001"):
        depth = np.load(io.BytesIO(members[f"{s}.depth.npy"]))
        assert depth.dtype == np.float32 and np.array_equal(depth, np.load(coco_out / "depth" / f"{s}.npy"))
        sem = cv2.imdecode(np.frombuffer(members[f"{s}.semantic.png"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(sem, cv2.imread(str(coco_out / "semantic" / f"{s}.png"), cv2.IMREAD_UNCHANGED)) and sem.any()
        entry = json.loads(members[f"{s}.json"])
        assert entry["image"]["file_name"] == f"{s}.jpg" and "depth_file" not in entry["image"]


@pytest.mark.parametrize("views", [1, 2])
def test_rendered_dataset_equals_disk_render(tmp_path, views):
    # views=2: a worker may be handed the second view of a scene without the first; it settles the scene itself
    disk = render_dataset(small_config(tmp_path, "n_images=4", "image_format=png", f"views_per_scene={views}", name="png"), **QUIET)
    ds = RenderedDataset(small_config(tmp_path, "n_images=4", "image_format=png", f"views_per_scene={views}", name="unused"))
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate, multiprocessing_context="spawn")
    got = {}
    for imgs, targets in loader:
        for img, t in zip(imgs, targets):
            assert t["image_id"] not in got, "an index was rendered twice"
            got[t["image_id"]] = (img, t)
    ref = CocoDataset(disk)
    assert sorted(got) == [1, 2, 3, 4]
    for img2, t2 in ref:
        img, t = got[t2["image_id"]]
        assert torch.equal(img, img2)
        assert torch.equal(t["boxes"], t2["boxes"]) and torch.equal(t["labels"], t2["labels"])
        assert torch.equal(t["masks"], t2["masks"])


def test_joblib_multirun_shards(tmp_path):
    """The README's joblib sweep with a render pool inside each loky worker (workers=2): it used to loop
    forever on `cannot find context for 'loky'`."""
    out = tmp_path / "jl"
    r = subprocess.run([sys.executable, "-m", "simgen.cli", "render", "-m", "shard.index=0,1", "shard.count=2", f"out={out}", "n_images=6",
                        "width=64", "height=64", "workers=2", "progress=false", "hydra/launcher=joblib"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["00000-of-00002", "00001-of-00002"]
    assert all((out / "shards" / d / "manifest.json").exists() for d in ("00000-of-00002", "00001-of-00002"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jl"], "Hydra must write nothing in the working directory"


def test_second_run_on_the_same_out_is_refused(tmp_path):
    """Two renders into one folder at once would interleave: the second is refused while the first runs."""
    from simgen.errors import ConfigError
    from simgen.run import out_lock

    cfg = small_config(tmp_path, "n_images=2")
    with out_lock(cfg.out):
        with pytest.raises(ConfigError, match="another simgen run"):
            render_dataset(cfg, **QUIET)
    render_dataset(cfg, **QUIET)  # once the first is gone, the folder is usable and the lock is cleaned up
    assert not (cfg.out / ".simgen.lock").exists() and (cfg.out / "manifest.json").exists()


def test_workers_die_with_a_killed_parent(tmp_path):
    """kill -9 of the parent (not its process group) must not leave pool workers rendering into out."""
    out = tmp_path / "orphans"
    cmd = [sys.executable, "-m", "simgen.cli", "render", f"out={out}", "n_images=200", "width=64", "height=64", "workers=2", "progress=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / ".simgen" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and (not parts.is_dir() or len(list(parts.glob("*.json"))) < 2):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    time.sleep(1.0)
    n = len(list(parts.glob("*.json")))
    time.sleep(2.0)
    assert len(list(parts.glob("*.json"))) == n, "orphaned workers kept writing after their parent was killed"


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None, reason="hydra-ray-launcher not installed (pip install 'simgen[ray]')")
def test_ray_launcher_for_real(tmp_path):
    out = tmp_path / "ray"
    r = subprocess.run([sys.executable, "-m", "simgen.cli", "render", "-m", "shard.index=0,1", "shard.count=2", f"out={out}", "n_images=4",
                        "width=64", "height=64", "workers=1", "progress=false", "hydra/launcher=simgen_ray",
                        "+hydra.launcher.ray.init.num_cpus=2"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((out / "shards").iterdir())) == 2


def test_slurm_launcher_config_composes():
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher not installed (pip install 'simgen[slurm]')")
    from hydra import compose, initialize_config_module

    with initialize_config_module("simgen.conf", version_base="1.3"):
        cfg = compose("render", overrides=["hydra/launcher=simgen_slurm"], return_hydra_config=True)
    assert "SlurmLauncher" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.cpus_per_task == 8


@pytest.mark.parametrize("context", ["spawn", "worker_context()"])
def test_rendered_dataset_workers_are_quiet_and_exit_cleanly(tmp_path, context):
    """DataLoader workers rendering with EGL print nothing of PyBullet's (no plugin goodbye), spawned or started as
    worker_context() says: forked from a process that has loaded no GL, as this script's has not."""
    from simgen.errors import RendererUnavailable
    from simgen.render import probe_egl

    try:
        probe_egl()
    except RendererUnavailable as e:
        pytest.skip(f"EGL cannot load here: {e}")
    script = tmp_path / "loader.py"
    script.write_text(f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from tests.conftest import small_config
from pathlib import Path
from simgen.data import RenderedDataset, collate, worker_context
if __name__ == "__main__":
    cfg = small_config(Path({str(tmp_path)!r}), "renderer=egl", "n_images=6", "width=96", "height=96")
    context = {'"spawn"' if context == "spawn" else context}
    dl = torch.utils.data.DataLoader(RenderedDataset(cfg), batch_size=2, num_workers=2, collate_fn=collate, multiprocessing_context=context)
    print("context", context)
    print("images", sum(len(b[0]) for b in dl))
""")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "images 6", r.stdout
    assert f"context {'spawn' if context == 'spawn' else 'fork'}" in r.stdout.splitlines()
    # Workers' stdout is muted (no plugin goodbye). Known, not fixed: under heavy load a worker can still abort in
    # the EGL/llvmpipe teardown after its last batch ("terminate called ..."), which the DataLoader only reports.
    assert "Destroy EGL" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_rendered_dataset_from_the_command_lines_overrides(tmp_path):
    """RenderedDataset.from_overrides takes `simgen render`'s own key=value overrides and checks: its samples are that
    command's images, and a bad override is the command line's one line, as a ConfigError."""
    from simgen.errors import ConfigError

    from dataclasses import replace

    cfg = small_config(tmp_path, "n_images=2", "image_format=png", name="png")
    disk = render_dataset(cfg, **QUIET)
    ds = RenderedDataset.from_overrides(["n_images=2", "width=128", "height=128", "workers=1", "progress=false",
                                         "renderer=tiny", "image_format=png"])
    assert len(ds) == 2 and replace(ds.cfg, out=cfg.out) == cfg
    for (img, t), (img2, t2) in zip([ds[0], ds[1]], CocoDataset(disk)):
        assert torch.equal(img, img2) and torch.equal(t["boxes"], t2["boxes"])
    overlay = tmp_path / "overlay.yaml"  # a `simgen fit` overlay (or a scene of one's own) applies as on the command line
    overlay.write_text("scene:\n  camera:\n    distance: [0.3, 0.31]\n")
    assert RenderedDataset.from_overrides([f"overlay={overlay}"]).cfg.scene.camera.distance != ds.cfg.scene.camera.distance
    with pytest.raises(ConfigError, match="unknown scene `dcie`. Did you mean `dice`"):
        RenderedDataset.from_overrides(["scene=dcie"])
    with pytest.raises(ConfigError, match="no key `n_imagez`. Did you mean `n_images`"):
        RenderedDataset.from_overrides(["n_imagez=3"])


def test_rendered_dataset_from_a_folder_uses_the_renderer_that_run_used(tmp_path, monkeypatch):
    """RenderedDataset(manifest["config"]) chose `auto` again by its own probe, which another machine (or thread
    count) can answer differently; from_dataset takes the renderer the run used, and its samples are that folder's."""
    from simgen.errors import DatasetError

    disk = render_dataset(small_config(tmp_path, "n_images=2", "image_format=png", "renderer=auto", name="png"), **QUIET)
    used = json.loads((disk / "manifest.json").read_text())["renderer"]
    import simgen.render as render

    monkeypatch.setattr(render, "choose_renderer", lambda *a, **k: (_ for _ in ()).throw(AssertionError("probed again")))
    ds = RenderedDataset.from_dataset(disk)
    assert ds.cfg.renderer == used and len(ds) == 2
    for (img, t), (img2, t2) in zip([ds[0], ds[1]], CocoDataset(disk)):
        assert torch.equal(img, img2) and torch.equal(t["boxes"], t2["boxes"])
    with pytest.raises(DatasetError, match="not a simgen manifest"):
        RenderedDataset.from_dataset(tmp_path)


def test_rendered_dataset_indices_count_as_a_lists_do(tmp_path):
    """A negative index counts from the end, as in CocoDataset and a list (it was IndexError('-1')); a bad index says
    the range or the type (it was IndexError('30'), or a TypeError from deep in numpy's seeding)."""
    ds = RenderedDataset(small_config(tmp_path, "n_images=3", "width=64", "height=64", name="unused"))
    assert ds[-1][1]["image_id"] == ds[2][1]["image_id"] == 3
    with pytest.raises(IndexError, match=r"image index 3 is out of range for 3 images \(0\.\.2, or -3\.\.-1\)"):
        ds[3]
    with pytest.raises(TypeError, match="RenderedDataset indices are integers, got 1.5"):
        ds[1.5]
    assert ds[np.int64(0)][1]["image_id"] == 1
