"""Error analysis (simgen.report.errors): TIDE types and AP50 on hand-made cases with known answers."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from simgen.errors import DatasetError
from simgen.report.errors import TYPES, ap50, error_section, iou, make_boxes, tide
from simgen.report.model import ReportContext, Side
from simgen.train.evaluate import coco_evaluate

CATS = [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]


def gt_doc(anns: list[tuple], n_images: int = 2, size: int = 200) -> dict:
    """anns: (image_id, category_id, [x, y, w, h])."""
    return {"images": [{"id": i, "file_name": f"images/{i}.png", "width": size, "height": size} for i in range(1, n_images + 1)],
            "categories": CATS,
            "annotations": [{"id": k, "image_id": im, "category_id": c, "bbox": list(b), "area": b[2] * b[3], "iscrowd": 0}
                            for k, (im, c, b) in enumerate(anns, start=1)]}


def preds(items: list[tuple]) -> list[dict]:
    """items: (image_id, category_id, [x, y, w, h], score)."""
    return [{"image_id": im, "category_id": c, "bbox": list(b), "score": s} for im, c, b, s in items]


def run_tide(doc: dict, res: list[dict]) -> dict:
    ids = {im["id"] for im in doc["images"]}
    return tide(make_boxes(doc["annotations"], ids, True), make_boxes(res, ids, False), [c["id"] for c in CATS])


BASE = [(1, 1, [10, 10, 40, 40]), (1, 2, [100, 100, 40, 40]), (2, 1, [50, 50, 30, 30])]


def test_iou_known_values():
    a = np.array([[0, 0, 10, 10.0]])
    assert iou(a, a)[0, 0] == pytest.approx(1.0)
    assert iou(a, np.array([[5, 0, 10, 10.0]]))[0, 0] == pytest.approx(50 / 150)
    assert iou(a, np.array([[20, 20, 5, 5.0]]))[0, 0] == 0.0


def test_perfect_predictions_have_ap_one_and_no_errors():
    doc = gt_doc(BASE)
    t = run_tide(doc, preds([(im, c, b, 0.9) for im, c, b in BASE]))
    assert t["ap50"] == pytest.approx(1.0)
    assert all(v == 0 for v in t["dap"].values()) and all(v == 0 for v in t["counts"].values())


def test_each_error_type_is_counted():
    # the (2, 2) GT at 120 gets no prediction: Missed; the last two GT are found with low scores, so that the
    # false positives above them in their class cost AP
    doc = gt_doc(BASE + [(2, 2, [120, 120, 40, 40]), (1, 1, [10, 150, 30, 30]), (2, 2, [10, 120, 30, 30])])
    shift = 30 * (1 - 0.6 / 1.3)  # shifting a 30 px box this far sideways leaves IoU 0.3 with it
    res = preds([
        (1, 2, [10, 10, 40, 40], 0.95),           # right box, wrong class -> Classification
        (1, 2, [100, 100, 40, 40], 0.9),          # true positive
        (1, 2, [100, 100, 40, 40], 0.8),          # same box again -> Duplicate
        (2, 1, [50 + shift, 50, 30, 30], 0.7),  # IoU 0.3 with its GT, right class -> Localization
        (2, 1, [150, 10, 20, 20], 0.6),           # nothing there -> Background
        (1, 1, [10, 150, 30, 30], 0.5), (2, 2, [10, 120, 30, 30], 0.5),
    ])
    t = run_tide(doc, res)
    assert t["counts"] == {"cls": 1, "loc": 1, "both": 0, "dupe": 1, "bkg": 1, "miss": 1}
    assert iou(np.array([res[3]["bbox"]], float), np.array([[50, 50, 30, 30.0]]))[0, 0] == pytest.approx(0.3)
    assert all(t["dap"][k] > 0 for k in ("cls", "loc", "dupe", "bkg", "miss")) and t["dap"]["both"] == 0


def test_single_error_types_and_their_fix():
    doc = gt_doc([(1, 1, [10, 10, 40, 40])], n_images=1)
    cases = {"cls": [(1, 2, [10, 10, 40, 40], 0.9)], "dupe": [(1, 1, [10, 10, 40, 40], 0.9), (1, 1, [10, 10, 40, 40], 0.8)],
             "bkg": [(1, 1, [10, 10, 40, 40], 0.5), (1, 1, [120, 120, 40, 40], 0.9)],
             "both": [(1, 1, [10, 10, 40, 40], 0.5), (1, 2, [26, 10, 40, 40], 0.9)],  # IoU 0.43 with the GT of the other class
             "loc": [(1, 1, [28, 10, 40, 40], 0.9)], "miss": []}
    for kind, items in cases.items():
        t = run_tide(doc, preds(items))
        assert t["counts"][kind] == 1 and sum(t["counts"].values()) == 1, (kind, t["counts"])
        if kind in ("cls", "loc"):  # the only detection becomes a perfect TP once fixed
            assert t["ap50"] == 0 and t["dap"][kind] == pytest.approx(100)
        if kind == "miss":  # with no detection and the only GT removed, there is no class left to score
            assert t["dap"]["miss"] == 0


def test_duplicate_of_a_class_error_is_suppressed_not_fixed_twice():
    doc = gt_doc([(1, 1, [10, 10, 40, 40])], n_images=1)
    t = run_tide(doc, preds([(1, 2, [10, 10, 40, 40], 0.9), (1, 2, [11, 10, 40, 40], 0.8)]))
    assert t["counts"]["cls"] == 2 and t["counts"]["miss"] == 0
    assert t["dap"]["cls"] == pytest.approx(100)  # one fixed, the other suppressed: AP50 1


def test_numpy_ap50_equals_pycocotools_on_random_predictions():
    rng = np.random.default_rng(7)
    anns = []
    for im in range(1, 7):
        for _ in range(rng.integers(0, 6)):
            xy, wh = rng.uniform(0, 150, 2), rng.uniform(8, 50, 2)
            anns.append((im, int(rng.integers(1, 3)), [*xy.round(1), *wh.round(1)]))
    doc = gt_doc(anns, n_images=6)
    items = []
    for im, c, b in anns:  # jittered copies (some with the wrong class), plus random boxes; rounded scores make ties
        for _ in range(rng.integers(0, 3)):
            jb = np.abs(np.array(b) + rng.normal(0, 4, 4))
            items.append((im, c if rng.random() < 0.8 else 3 - c, [*jb.round(2)], round(float(rng.random()), 2)))
    for _ in range(25):
        items.append((int(rng.integers(1, 7)), int(rng.integers(1, 3)), [*rng.uniform(0, 150, 2).round(1), *rng.uniform(5, 60, 2).round(1)],
                      round(float(rng.random()), 2)))
    res = preds(items)
    ref = coco_evaluate(doc, res)
    ids = {im["id"] for im in doc["images"]}
    mine, per = ap50(make_boxes(doc["annotations"], ids, True), make_boxes(res, ids, False), [1, 2])
    assert 0.05 < ref["map50"] < 0.99  # a non-trivial case
    assert mine == pytest.approx(ref["map50"], abs=1e-3)
    assert per[1] == pytest.approx(ref["per_class_ap50"]["one"], abs=1e-3)


# ---------------------------------------------------------------------------- the section on a run folder


def write_side(root: Path, doc: dict, rng: np.random.Generator) -> Side:
    (root / "images").mkdir(parents=True)
    for im in doc["images"]:
        img = rng.integers(0, 80, (im["height"], im["width"], 3), dtype=np.uint8)
        for a in doc["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, w, h = (int(v) for v in a["bbox"])
                img[y:y + h, x:x + w] = 230  # bright objects on a dark ground
        cv2.imwrite(str(root / im["file_name"]), img)
    (root / "annotations.json").write_text(json.dumps(doc))
    return Side(root.name, root, doc, tuple(sorted(im["id"] for im in doc["images"])))


def write_run(run: Path, res: list[dict], holdout: Path, mAP: float = 0.5) -> None:
    from simgen.train.guard import holdout_identity, image_hashes

    run.mkdir(parents=True)
    (run / "predictions.json").write_text(json.dumps(res))
    (run / "metrics.json").write_text(json.dumps({"entry": {"name": run.name.split("-s")[0], "seed": 0, "map": mAP, "map50": mAP}}))
    (run / "provenance.json").write_text(json.dumps({"holdout": {**holdout_identity(holdout, image_hashes(holdout)), "images_scored": 2},
                                                     "class_agnostic": False}))


@pytest.fixture
def ctx(tmp_path: Path) -> ReportContext:
    rng = np.random.default_rng(0)
    real = write_side(tmp_path / "real", gt_doc(BASE + [(2, 2, [120, 120, 40, 40])]), rng)
    syn_anns = [(i, 1 + i % 2, [20 + 7 * i, 30, 20 + 2 * i, 20 + 2 * i]) for i in range(1, 7)]
    syn = write_side(tmp_path / "syn", gt_doc(syn_anns, n_images=6), rng)
    return ReportContext(real=real, synthetic=syn, out=tmp_path / "report", run=tmp_path / "util")


def test_error_section_on_a_utility_folder_picks_the_best_arm(ctx: ReportContext):
    good = preds([(im, c, b, 0.9) for im, c, b in BASE] + [(2, 1, [150, 10, 20, 20], 0.95)])
    write_run(ctx.run / "runs" / "TSTR-s0", good, ctx.real.root, mAP=0.6)
    write_run(ctx.run / "runs" / "TRTR-s0", good[:1], ctx.real.root, mAP=0.2)
    s = error_section(ctx)
    assert s is not None and s.data["arm"] == "TSTR-s0" and "TSTR-s0" in s.summary
    assert s.data["tide"]["counts"] == {"cls": 0, "loc": 0, "both": 0, "dupe": 0, "bkg": 1, "miss": 1}
    assert s.data["ap50_numpy"] == pytest.approx(s.data["map50"], abs=1e-3)
    assert {c.name: c.status for c in s.checks}["holdout identity"] == "pass"
    assert any(t.title.startswith("Per-arm") for t in s.tables)
    for f in s.figures:
        assert (ctx.out / f.path).is_file(), f.path
    assert "visibility" in s.data["notes"][0]
    json.dumps(s.as_dict())  # report.json must hold it
    assert {f"dAP50 {v}" for v in TYPES.values()} <= {c.name for c in s.checks}


def test_no_run_gives_no_section_and_foreign_ids_are_refused(ctx: ReportContext, tmp_path: Path):
    from dataclasses import replace

    assert error_section(replace(ctx, run=None)) is None
    write_run(tmp_path / "other", preds([(99, 1, [0, 0, 5, 5], 0.5)]), ctx.real.root)
    with pytest.raises(DatasetError, match="another holdout"):
        error_section(replace(ctx, run=tmp_path / "other"))


def test_suggestions_name_the_error_and_the_render_keys():
    from simgen.report.errors import suggestions

    t = {"dap": {"cls": 1.0, "loc": 9.0, "both": 0.0, "dupe": 0.0, "bkg": 2.0, "miss": 0.5}}
    bins = {"size": {"edges": [0.001, 0.002, 0.004, 0.01], "count": [50, 50, 50], "recall": [0.2, 0.8, 0.8],
                     "real_share": [1 / 3] * 3, "synthetic_share": [0.05, 0.45, 0.5]},
            "brightness": {"edges": [50, 100, 150, 200], "count": [50, 50, 50], "recall": [0.6, 0.6, 0.6],
                           "real_share": [1 / 3] * 3, "synthetic_share": [0.3, 0.3, 0.4]}}
    manifest = {"config": {"scene": {"camera": {"distance": [0.26, 0.42]}, "objects": {"die": {"scale": [0.014, 0.019]}}}}}
    out = suggestions(t, bins, manifest)
    assert len(out) == 2
    assert out[0].startswith("Localization") and "label-convention margin" in out[0]
    assert "small" in out[1] and "scene.camera.distance (now [0.26, 0.42])" in out[1] and "scene.objects.die.scale" in out[1]

    # only keys the rendered set's scene may set: the dice scene's tray and face balance were suggested to tabletop users
    from omegaconf import OmegaConf

    from simgen.cli import conf_dir

    scenes = {n: {"scene": OmegaConf.to_container(OmegaConf.load(conf_dir() / "scene" / f"{n}.yaml")),
                  "randomization": OmegaConf.to_container(OmegaConf.load(conf_dir() / "randomization" / "default.yaml"))}
              for n in ("dice", "tabletop")}

    def first(worst: str, manifest) -> str:
        return suggestions({"dap": {k: (5.0 if k == worst else 0.0) for k in t["dap"]}}, {}, manifest)[0]

    assert first("cls", {"config": scenes["tabletop"]}) == (
        "Classification costs the most AP (5.0 AP50 points if fixed): objects are found but given the wrong class; balance "
        "classes (scene.objects.<name>.weight) and vary the textures that tell them apart (randomization.textures, "
        "randomization.texture_probability).")
    assert first("cls", {"config": scenes["dice"]}) == (
        "Classification costs the most AP (5.0 AP50 points if fixed): objects are found but given the wrong class; balance "
        "classes (scene.objects.<name>.weight), show the confused faces more often (scene.face_balance.probability=1, "
        "scene.face_balance.weights) and vary the textures that tell them apart (randomization.textures, "
        "randomization.texture_probability).")
    assert first("both", {"config": scenes["tabletop"]}).endswith(
        "add close-packed scenes (scene.cluster.probability, scene.objects.*.count).")
    assert "scene.tray.wall_bias" in first("both", {"config": scenes["dice"]})
    # keys with a default in simgen.config are named whatever the manifest holds (a custom scene's group without
    # `weight`, an older manifest); without a manifest every key is named
    bare = {"config": {"scene": {"objects": {"widget": {"asset": "w.obj"}}}}}
    assert "scene.objects.<name>.weight" in first("cls", bare) and "face_balance" not in first("cls", bare)
    assert "scene.tray.wall_bias" in first("both", None) and "face_balance" in first("cls", None)
    for worst in t["dap"]:
        for m in (None, bare, {"config": scenes["dice"]}, {"config": scenes["tabletop"]}):
            line = first(worst, m)
            assert "(5.0 AP50 points if fixed)" in line and line.endswith(".") and ".." not in line and "()" not in line
            assert line.count(":") == 1 + line.count("scene.camera.truncation_probability") or worst == "loc", line


def test_a_run_scored_on_other_photos_fails_the_identity_check(ctx: ReportContext, tmp_path: Path):
    from dataclasses import replace

    run = tmp_path / "run"
    write_run(run, preds([(1, 1, [10, 10, 40, 40], 0.9)]), ctx.real.root)
    prov = json.loads((run / "provenance.json").read_text())
    prov["holdout"].update(annotations_sha256="0" * 64, images_sha256="1" * 64)
    (run / "provenance.json").write_text(json.dumps(prov))
    s = error_section(replace(ctx, run=run))
    assert {c.name: c.status for c in s.checks}["holdout identity"] == "fail" and s.status == "fail"
    # and nothing is counted from predictions of other photos: no TIDE numbers, no figures, one line saying so
    assert [c.name for c in s.checks] == ["holdout identity"] and not s.figures and not s.tables
    assert s.summary.startswith("Not analysed: run was scored on another holdout") and "tide" not in s.data


# ---------------------------------------------------------------------------- report.features refused up front


def _report_dict(ctx: ReportContext, tmp_path: Path, **report) -> dict:
    return {"data": {"real": str(ctx.real.root), "synthetic": str(ctx.synthetic.root)}, "out": str(tmp_path / "rep"),
            "report": {"progress": False, **report}}


def test_unknown_or_unusable_report_features_are_refused_before_any_work(ctx: ReportContext, tmp_path: Path):
    from simgen.errors import ConfigError
    from simgen.report.cli import report_context

    missing = {"data": {"real": str(tmp_path / "nope"), "synthetic": str(tmp_path / "nope")}, "out": str(tmp_path / "rep")}
    with pytest.raises(ConfigError, match=r"unknown report.features \['clip'\]; known: stats, random_cnn, detector, weights"):
        report_context({**missing, "report": {"features": ["stats", "clip"]}})  # refused before the (missing) folders are read
    with pytest.raises(ConfigError, match=r"report.features=\[detector\] .*needs report.run=<simgen train or simgen utility output folder>"):
        report_context({**missing, "report": {"features": ["detector"]}})
    with pytest.raises(ConfigError, match=r"report.features=\[weights\] needs report.weights="):
        report_context({**missing, "report": {"features": "weights"}})
    assert not (tmp_path / "rep").exists()


def test_a_detector_run_without_a_checkpoint_stays_a_warn(ctx: ReportContext, tmp_path: Path):
    """report.run given but holding no checkpoint: a runtime problem, reported as a "not computed" warn, not refused."""
    from simgen.report.cli import report_context
    from simgen.report.distance import feature_section

    (tmp_path / "norun").mkdir()
    c = report_context(_report_dict(ctx, tmp_path, features=["detector"], run=str(tmp_path / "norun")))
    assert c.features == ("detector",) and c.run == tmp_path / "norun"
    s = feature_section(c)
    assert [(k.name, k.status) for k in s.checks] == [("detector: features", "warn")] and "no checkpoint.pt" in s.checks[0].detail


def test_cli_unknown_report_feature_is_one_line_exit_2_and_writes_nothing(ctx: ReportContext, tmp_path: Path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "simgen", "report", f"data.real={ctx.real.root}", f"data.synthetic={ctx.synthetic.root}",
                        f"out={tmp_path / 'rep'}", "report.features=[clip]", "report.progress=false"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("simgen: error: unknown report.features ['clip']"), r.stderr
    assert "known: stats, random_cnn, detector, weights" in lines[0]
    assert not (tmp_path / "rep").exists() and not list(tmp_path.glob(".rep*"))
