"""The GPU benchmark's own arithmetic: its label check names each disagreement, and its sustained rate leaves out
start-up and the closing merge. (The benchmark itself needs a GPU; `make bench` runs it on Mesa with --smoke.)"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", ROOT / "benchmarks" / "gpu_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ann(image_id: int, obj: int, x: int, y: int, w: int, h: int, cat: int = 1) -> dict:
    m = np.zeros((48, 64), np.uint8, order="F")
    m[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    return {"image_id": image_id, "object_index": obj, "bbox": [x, y, w, h], "area": w * h, "category_id": cat, "segmentation": rle}


def _write(d: Path, anns: list[dict]) -> Path:
    d.mkdir()
    (d / "annotations.json").write_text(json.dumps({"annotations": anns}))
    return d


def test_check_labels_names_each_disagreement(tmp_path: Path) -> None:
    bench = _bench()
    same, shifted, thin = _ann(0, 0, 5, 5, 20, 20), _ann(0, 1, 30, 5, 10, 10), _ann(1, 0, 10, 10, 2, 30)
    gpu = _write(tmp_path / "gpu", [same, shifted, thin, _ann(1, 1, 40, 20, 5, 5)])
    cpu = _write(tmp_path / "cpu", [same, _ann(0, 1, 34, 5, 10, 10), _ann(1, 0, 11, 10, 2, 30), _ann(2, 0, 1, 1, 4, 4, cat=2)])
    compared, bad = bench.check_labels(gpu, cpu)
    assert compared == 5
    assert len(bad) == 4, bad
    text = "\n".join(bad)
    assert "image 0 object 1: bbox" in text  # box 4 px off
    assert "image 1 object 0" in text and "mask IoU 0.33" in text  # a 2 px sliver one pixel off: box within 2 px, IoU low
    assert "image 1 object 1: only in the GPU labels" in text
    assert "image 2 object 0: only in the CPU labels" in text
    assert "image 0 object 0" not in text


def test_steady_rate_leaves_out_start_and_end(tmp_path: Path) -> None:
    bench = _bench()
    images = tmp_path / "images"
    images.mkdir()
    # 100 images written at 10/s, after 30 s of start-up and before nothing: the sustained rate is 10/s whatever
    # the start-up, which the whole-run rate (100 / 40 s) would count.
    t0 = 1_000_000.0
    for k in range(100):
        f = images / f"{k:08d}.jpg"
        f.write_bytes(b"x")
        t = t0 + 30.0 + k / 10.0 if k else t0
        os.utime(f, (t, t))
    assert bench.steady_rate(images) == pytest.approx(10.0, rel=0.02)
    assert bench.steady_rate(tmp_path / "missing") is None


def test_cpu_side_times_every_stage_of_a_real_render(tmp_path: Path) -> None:
    """benchmarks/cpu_side.py (the GPU target's CPU part, measured here) on a tiny GL render: every stage it names was
    timed, and they add up to no more than the worker thread's CPU time."""
    from .test_glrender import gl_or_skip

    gl_or_skip()
    spec = importlib.util.spec_from_file_location("cpu_side", ROOT / "benchmarks" / "cpu_side.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    got = bench.measure("dice", n=4, views=2, width=64, height=48)
    stages = got["stages"]
    assert set(stages) == {*bench.STAGES, "other"}
    for k in ("physics", "submit", "readback", "labels", "files"):
        assert stages[k] > 0, k
    assert got["thread"] > 0 and stages["other"] > -1e-6 and got["process"] >= got["thread"] * 0.99


def test_shadow_map_and_opencv_thread_benchmarks_run(tmp_path: Path) -> None:
    """benchmarks/shadow_map.py and cv_threads.py (run by `make bench`) on the smallest inputs: they finish and print
    the lines their docs quote."""
    import subprocess
    import sys

    from .test_glrender import gl_or_skip

    gl_or_skip()
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "shadow_map.py"), "--scene", "dice", "--n", "2", "--repeats", "1",
                        "--width", "96", "--height", "72"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "instance maps identical: True" in r.stdout and "CPU-ms a frame 2048" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cv_threads.py"), "--processes", "2", "--n", "3", "--repeats", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OpenCV's default pool" in r.stdout and "a share of the cores" in r.stdout, r.stderr[-2000:]
