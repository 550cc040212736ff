"""Box precision (simgen.report.boxnoise): the labels' own noise recovered from runs with known errors, and the
simulated scores that say what localisation costs and where a holdout's mAP tops out."""
from __future__ import annotations

import json

import numpy as np
import pytest

from simgen.report.boxnoise import box_precision, match_gt, relative_edges, robust_sigma, simulate
from simgen.report.errors import error_section, make_boxes

from .test_report_errors import BASE, ReportContext, ctx, preds, write_run  # noqa: F401  (ctx is a fixture)


def _scene(rng: np.random.Generator, n_images: int = 40, per_image: int = 6, side: float = 40.0):
    """Objects on a grid (never overlapping), each of side ~``side`` px: their true boxes (xywh) and image ids."""
    boxes, images = [], []
    for im in range(1, n_images + 1):
        for k in range(per_image):
            s = side * rng.uniform(0.8, 1.2)
            boxes.append([30 + 100 * (k % 3), 30 + 100 * (k // 3), s, s])
            images.append(im)
    return np.array(boxes), np.array(images)


def _noisy(rng, boxes: np.ndarray, sigma: float, bias: float = 0.0) -> np.ndarray:
    """Each edge moved by normal noise of ``sigma`` of the side (plus ``bias``): xywh out."""
    side = np.tile(boxes[:, 2:], 2)
    e = np.c_[boxes[:, :2], boxes[:, :2] + boxes[:, 2:]] + (rng.normal(0, sigma, (len(boxes), 4)) + bias) * side
    return np.c_[e[:, :2], e[:, 2:] - e[:, :2]]


def _doc(boxes, images, cats=(1,)):
    n = int(images.max())
    return {"images": [{"id": i, "file_name": f"{i}.png", "width": 400, "height": 300} for i in range(1, n + 1)],
            "categories": [{"id": c, "name": f"c{c}"} for c in cats],
            "annotations": [{"id": k, "image_id": int(im), "category_id": 1, "bbox": b.tolist(), "area": float(b[2] * b[3]), "iscrowd": 0}
                            for k, (im, b) in enumerate(zip(images, boxes), start=1)]}


def _res(boxes, images, rng):
    return [{"image_id": int(im), "category_id": 1, "bbox": b.tolist(), "score": float(s)}
            for im, b, s in zip(images, boxes, rng.uniform(0.5, 1.0, len(boxes)))]


def test_relative_edges_and_robust_sigma():
    g = np.array([[10.0, 20, 40, 20]])
    b = np.array([[12.0, 19, 40, 22]])  # left edge +2 px of 40, top -1 of 20, right +2 of 40, bottom +1 of 20
    assert relative_edges(g, b) == pytest.approx(np.array([[0.05, -0.05, 0.05, 0.05]]))
    x = np.random.default_rng(0).normal(0, 0.3, 20000)
    assert robust_sigma(x) == pytest.approx(0.3, rel=0.03)
    x[:1000] = 50.0  # 5% wild outliers barely move it
    assert robust_sigma(x) == pytest.approx(0.3, rel=0.1)


def test_label_noise_is_recovered_from_runs_with_independent_errors():
    """Labels 5% of the side off the true boxes, two detectors 2% and 3% off them (one with a bias): the estimate
    recovers 5%, whatever the detectors' own error, and the ceiling is the score of exact boxes against the labels."""
    rng = np.random.default_rng(1)
    true, images = _scene(rng)
    labels = _noisy(rng, true, 0.05)
    doc = _doc(labels, images)
    ids = sorted({int(i) for i in images})
    gt = make_boxes(doc["annotations"], set(ids), True)
    a = make_boxes(_res(_noisy(rng, true, 0.02), images, rng), set(ids), False)
    b = make_boxes(_res(_noisy(rng, true, 0.03, bias=0.02), images, rng), set(ids), False)
    out = box_precision(doc, ids, gt, a, {"b": b}, min_score=0.3, trials=3)
    assert out["matched"] == len(true)
    assert out["sigma"] == pytest.approx(np.hypot(0.05, 0.02), rel=0.15)  # run vs labels: both errors
    assert out["pairs"][0]["sigma_between"] == pytest.approx(np.hypot(0.02, 0.03), rel=0.15)
    assert out["label_sigma"] == pytest.approx(0.05, rel=0.15)
    assert out["label_sigma_px"] == pytest.approx(0.05 * np.median(true[:, 2]), rel=0.2)
    exact = simulate(doc, ids, lambda r, n: np.zeros((n, 4)), trials=1)
    assert exact["map"] == pytest.approx(1.0)
    # the ceiling is what exact boxes score against noisy labels; the run's own residuals (worse) score lower
    true_vs_labels = _res(true, images, rng)
    from simgen.train.evaluate import coco_evaluate

    direct = coco_evaluate(doc, true_vs_labels, image_ids=ids)["map"]
    assert out["ceiling"]["map"] == pytest.approx(direct, abs=0.05)
    assert out["now"]["map"] < out["ceiling"]["map"] < 0.95


def test_without_other_runs_there_is_no_ceiling_and_few_matches_are_not_measured():
    rng = np.random.default_rng(2)
    true, images = _scene(rng, n_images=5)
    doc = _doc(true, images)
    ids = list(range(1, 6))
    gt = make_boxes(doc["annotations"], set(ids), True)
    out = box_precision(doc, ids, gt, make_boxes(_res(_noisy(rng, true, 0.02), images, rng), set(ids), False), {}, 0.3, trials=1)
    assert "now" in out and "ceiling" not in out and out["pairs"] == []
    few = box_precision(doc, ids, gt, make_boxes(_res(true[:3], images[:3], rng), set(ids), False), {}, 0.3)
    assert few["matched"] == 3 and "too few" in few["note"] and "now" not in few
    # a detection below the score floor is not matched
    low = [{**r, "score": 0.1} for r in _res(true, images, rng)]
    assert (match_gt(gt, make_boxes(low, set(ids), False), 0.3) == -1).all()


def test_error_section_compares_the_other_arms(ctx: ReportContext, tmp_path):  # noqa: F811
    """The other arms of a utility folder and the folders of report.compare give the labels' noise: the section
    gets the box-precision table, its checks, and a suggestion when the ceiling is low."""
    from dataclasses import replace

    from .test_report_errors import gt_doc, write_side

    rng = np.random.default_rng(3)
    grid = [(im, 1 + k % 2, [10.0 + 90 * (k % 2), 10.0 + 90 * (k // 2), 40.0, 40.0]) for im in range(1, 9) for k in range(4)]
    real = write_side(tmp_path / "real8", gt_doc(grid, n_images=8), rng)
    ctx = replace(ctx, real=real, run=tmp_path / "u8")

    # where the objects truly are: 3 px per edge off their labels (the labels are the grid)
    true = [(im, c, [v + float(rng.normal(0, 3.0)) for v in b]) for im, c, b in grid]

    def run(folder, sigma_px):
        res = preds([(im, c, [v + float(rng.normal(0, sigma_px)) for v in b], 0.9) for im, c, b in true])
        write_run(folder, res, real.root, mAP=0.5)
        prov = json.loads((folder / "provenance.json").read_text())
        prov["holdout"]["images_scored"] = 8
        (folder / "provenance.json").write_text(json.dumps(prov))

    run(ctx.run / "runs" / "TSTR-s0", 1.0)
    run(ctx.run / "runs" / "TRTR-s0", 1.0)
    run(tmp_path / "elsewhere" / "runs" / "finetune-s0", 1.0)
    s = error_section(replace(ctx, options={"compare": [str(tmp_path / "elsewhere")]}))
    bp = s.data["box_precision"]
    assert bp["matched"] == 32 and len(bp["pairs"]) == 2 and "ceiling" in bp
    assert 1.5 < bp["label_sigma_px"] < 5  # 3 px, from 32 objects
    assert bp["ceiling"]["map"] < 0.9
    assert any(t.title.startswith("Box precision") for t in s.tables)
    assert {"box edges vs labels", "label box noise (estimated)"} <= {c.name for c in s.checks}
    assert any("ceiling" in x for x in s.data["suggestions"])
    json.dumps(s.as_dict())


def test_the_ceiling_from_a_barely_trained_run_is_called_a_rough_bound():
    """A run that found a fifth of the objects gave a confident ceiling; the line now says it is a rough bound."""
    from simgen.report.boxnoise import ceiling_line

    bp = {"ceiling": {"map": 0.53, "map75": 0.6}, "now": {"map": 0.3}, "label_sigma_px": 3.7, "label_sigma": 0.08,
          "run": "TSTR-s0", "pairs": ["a", "b"], "matched": 40, "objects": 201}
    assert "A rough bound: TSTR-s0 found only 40 of 201 objects" in ceiling_line(bp)
    assert "rough bound" not in ceiling_line({**bp, "matched": 150})
