"""DATASHEET.md, croissant.json and manifest `sources` for datasets, and DATASHEET.md for training runs."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from simgen.datasheet import SECTIONS, write_run_datasheet

from .conftest import compose_dict, small_config


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One tiny 64x64 render with a user texture folder holding one png."""
    import cv2

    from simgen.run import render_dataset

    tmp = tmp_path_factory.mktemp("datasheet")
    tex = tmp / "textures"
    tex.mkdir()
    cv2.imwrite(str(tex / "wood.png"), np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    cfg = small_config(tmp, "width=64", "height=64", f"randomization.texture_dir={tex}", name="ds")
    out = render_dataset(cfg, log=lambda m: None)
    return out, tex / "wood.png"


def test_sources_list_texture_dir_file_with_its_sha256(rendered):
    out, png = rendered
    man = json.loads((out / "manifest.json").read_text())
    user = [s for s in man["sources"] if s["kind"] == "texture_dir"]
    assert len(user) == 1 and user[0]["path"] == str(png)
    assert user[0]["sha256"] == hashlib.sha256(png.read_bytes()).hexdigest()
    assert user[0]["bytes"] == png.stat().st_size and user[0]["source"] == "user" and user[0]["licence"] == "unknown (user-supplied: check its terms)"
    kinds = {s["kind"] for s in man["sources"]}
    assert {"texture", "ground_texture", "scene_bank", "mesh"} <= kinds  # dice: bank, ground, die atlas, meshes
    for s in man["sources"]:
        assert set(s) == {"path", "sha256", "kind", "bytes", "source", "licence"} and re.fullmatch(r"[0-9a-f]{64}", s["sha256"])
    assert len({s["path"] for s in man["sources"]}) == len(man["sources"])


def test_pybullet_urdf_sources_carry_licence_and_meshes(tmp_path):
    from simgen.provenance import generation_sources

    cfg = small_config(tmp_path, "scene=tabletop")
    src = generation_sources(cfg)
    mug = [s for s in src if s["path"].endswith("mug.urdf")]
    assert mug and mug[0]["kind"] == "urdf" and mug[0]["source"] == "pybullet_data" and "zlib" in mug[0]["licence"]
    assert any(s["path"].endswith("duck.obj") and s["kind"] == "mesh" for s in src)  # mesh referenced by the URDF


def test_datasheet_has_seven_sections_and_real_counts(rendered):
    out, png = rendered
    text = (out / "DATASHEET.md").read_text()
    man = json.loads((out / "manifest.json").read_text())
    doc = json.loads((out / "annotations.json").read_text())
    for k, name in enumerate(SECTIONS, 1):
        assert f"\n## {k}. {name}\n" in text
    assert "\n## Known limitations\n" in text
    assert f"**Instances**: {len(doc['images'])} images, {len(doc['annotations'])} labelled objects." in text
    for cat, n in man["counts_per_category"].items():
        assert re.search(rf"^\| {cat} \| {n} \|", text, re.M), cat
    assert "64x64 px (3 images)" in text
    assert f"`labels.min_area_px` = {man['config']['labels']['min_area_px']}" in text
    assert str(png) in text and man["sources"][0]["licence"] in text  # assets with sources and licences
    assert man["annotations_sha256"] in text and "randomization.light.elevation_deg" in text
    assert f"`unsettled_scenes` = {man['unsettled_scenes']}" in text


def test_croissant_validates_with_mlcroissant(rendered):
    out, _ = rendered
    jd = json.loads((out / "croissant.json").read_text())
    assert jd["rai:dataCollectionType"] == ["Synthetic"] and jd["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    ann = next(d for d in jd["distribution"] if d["@id"] == "annotations.json")
    assert ann["sha256"] == hashlib.sha256((out / "annotations.json").read_bytes()).hexdigest()
    # mlcroissant runs in its own process: it installs absl logging handlers on the stderr of the moment,
    # which under pytest is a capture stream that later tests find closed ("--- Logging error ---").
    script = """
import json, sys
import mlcroissant as mlc
ds = mlc.Dataset(jsonld=sys.argv[1])  # raises ValidationError on any error; the @context is inline (no network)
print(json.dumps({"errors": sorted(map(str, ds.metadata.ctx.issues.errors)),
                  "widths": sorted({r["images/width"] for r in ds.records("images")}),
                  "n": len(list(ds.records("images"))),
                  "categories": [r["categories/name"].decode() if isinstance(r["categories/name"], bytes) else r["categories/name"]
                                 for r in ds.records("categories")]}))
"""
    r = subprocess.run([sys.executable, "-c", script, str(out / "croissant.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["errors"] == [] and got["n"] == 3 and got["widths"] == [64]
    assert got["categories"] == ["one", "two", "three", "four", "five", "six"]


def test_merge_writes_datasheet_and_croissant(rendered, tmp_path):
    from simgen.merge import merge_datasets

    out, _ = rendered
    merged = merge_datasets([out], tmp_path / "merged")
    assert "## 7. Maintenance" in (merged / "DATASHEET.md").read_text()
    assert json.loads((merged / "croissant.json").read_text())["rai:dataCollectionType"] == ["Synthetic"]


def test_run_datasheet_from_a_tiny_training_run(rendered, tmp_path, holdout):
    from simgen.train.utility import job_config, run_one

    out, _ = rendered
    d = compose_dict("train", ["trainer=smoke", "trainer.max_steps=1", "trainer.threads=1", "model.trunk=tiny", "model.input_size=64",
                               "model.max_size=64", "model.channels=32", f"data.synthetic=[{out}]", f"data.holdout={holdout}",
                               "data.holdout_limit=2", f"out={tmp_path / 'run'}"])
    run_one(job_config(d), tmp_path / "run", 1.0, 0)
    prov = json.loads((tmp_path / "run/provenance.json").read_text())
    text = (tmp_path / "run/DATASHEET.md").read_text()
    assert prov["holdout"]["images_sha256"] in text and prov["holdout"]["annotations_sha256"] in text
    assert prov["datasets"]["synthetic"][0]["annotations_sha256"] in text and "Holdout guard: passed" in text
    assert "synthetic share actually seen in training: 1.0" in text and "## Metrics (holdout)" in text


def test_run_datasheet_unit(tmp_path):
    prov = {"run": "TSTR", "seed": 3, "settings_hash": "abc", "device": "cpu", "command": ["simgen", "utility"],
            "datasets": {"synthetic": [{"path": "/d/syn", "annotations_sha256": "a" * 64, "manifest_sha256": "b" * 64, "n_images": 5}],
                         "real": []},
            "synthetic_fraction": 1.0, "sources_seen": {"synthetic_share": 1.0},
            "holdout": {"path": "/h", "annotations_sha256": "c" * 64, "images_sha256": "d" * 64, "images_scored": 2},
            "categories": ["one"], "model": {"name": "tiny"}, "trainer": {"max_steps": 2}, "versions": {"torch": "x"}}
    text = write_run_datasheet(tmp_path, prov, {"map": 0.1, "map50": 0.2, "per_class": {"one": 0.1}}).read_text()
    assert "d" * 64 in text and "a" * 64 in text and "| map50 | 0.2 |" in text and "| trainer.max_steps | 2 |" in text


def test_sources_give_the_duck_its_own_licence(tmp_path):
    """pybullet_data is zlib except where a file's own notice says otherwise: the duck (SCEA), the domino (citation)."""
    from simgen.provenance import generation_sources

    from .conftest import small_config

    src = generation_sources(small_config(tmp_path, "scene=tabletop"))
    duck = [s for s in src if "duck" in s["path"]]
    assert duck and all(s["licence"].startswith("SCEA Shared Source License") for s in duck)
    others = [s for s in src if s["source"] == "pybullet_data" and "duck" not in s["path"]]
    assert others and all(s["licence"].startswith("zlib") for s in others)
    assert not [s for s in src if s["path"].endswith(".obj") and "plane-" in s["path"]], "the floor is render.box_obj, not the plane"
