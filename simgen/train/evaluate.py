"""COCO box evaluation with pycocotools (never a hand-written mAP) and COCO results files.

Labels are model indices 1..N over the training category names; the holdout has its own category
ids. :func:`label_to_category` matches them by name, :func:`coco_results` writes predictions in
the COCO results format against the holdout's ids, :func:`coco_evaluate` scores them.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np


def label_to_category(model_categories: list[str], gt_doc: dict, name_map: dict[str, str] | None = None) -> dict[int, int]:
    """Model label (1-based index into ``model_categories``) -> holdout category id, by name.

    ``name_map`` maps a model category name to a holdout name (default: same name). Model
    categories that the holdout lacks have no entry: their predictions are not scored.
    """
    ids = {c["name"]: c["id"] for c in gt_doc["categories"]}
    out = {}
    for k, name in enumerate(model_categories, start=1):
        target = (name_map or {}).get(name, name)
        if target in ids:
            out[k] = ids[target]
    return out


def coco_results(preds: dict[int, dict], label_map: dict[int, int]) -> list[dict]:
    """``{image_id: {"boxes" xyxy, "scores", "labels"}}`` -> COCO results list (xywh, category_id)."""
    res = []
    for image_id, p in sorted(preds.items()):
        boxes = np.asarray(p["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(p["scores"], dtype=np.float64).reshape(-1)
        labels = np.asarray(p["labels"]).reshape(-1)
        for (x0, y0, x1, y1), s, lab in zip(boxes, scores, labels):
            cat = label_map.get(int(lab))
            if cat is None:
                continue
            res.append({"image_id": int(image_id), "category_id": int(cat),
                        "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                        "score": round(float(s), 5)})
    return res


def _coco(doc: dict):
    from pycocotools.coco import COCO

    doc = copy.deepcopy(doc)
    for a in doc["annotations"]:
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
    doc.setdefault("info", {})
    gt = COCO()
    gt.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def coco_evaluate(gt_doc: dict, results: list[dict], image_ids: list[int] | None = None) -> dict:
    """Box AP with pycocotools' COCOeval.

    Returns ``{"map": AP@[.5:.95], "map50": AP@.5, "map75", "per_class": {name: AP@[.5:.95] or None},
    "per_class_ap50": {...}, "n_predictions", "n_images", "stats": [12 COCO numbers]}``; a class
    with no ground truth in the evaluated images gets None.
    """
    from pycocotools.cocoeval import COCOeval

    gt = _coco(gt_doc)
    names = {c["id"]: c["name"] for c in gt_doc["categories"]}
    ids = sorted(image_ids) if image_ids is not None else sorted(gt.getImgIds())
    empty = {"map": 0.0, "map50": 0.0, "map75": 0.0, "per_class": {}, "per_class_ap50": {}, "n_predictions": 0,
             "n_images": len(ids), "stats": [0.0] * 12}
    results = [r for r in results if r["image_id"] in set(ids)]
    if not results:
        has_gt = {a["category_id"] for a in gt_doc["annotations"] if a["image_id"] in set(ids)}
        empty["per_class"] = {names[c]: (0.0 if c in has_gt else None) for c in sorted(names)}
        empty["per_class_ap50"] = dict(empty["per_class"])
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T iou, R recall, K cat, A area, M maxdets]
    per, per50 = {}, {}
    for k, cid in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        per[names[cid]] = float(np.mean(p[p > -1])) if (p > -1).any() else None
        p50 = prec[0, :, k, 0, -1]
        per50[names[cid]] = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else None
    stats = [float(max(0.0, s)) for s in ev.stats]
    return {"map": stats[0], "map50": stats[1], "map75": stats[2], "per_class": per, "per_class_ap50": per50,
            "n_predictions": len(results), "n_images": len(ids), "stats": stats}


def class_agnostic(gt_doc: dict, results: list[dict], iou: float | None = 0.5) -> tuple[dict, list[dict]]:
    """Both sides collapsed onto one category: scores finding the objects, whatever their class.

    The detections first go through class-agnostic NMS (per image, IoU ``iou``), as a class-agnostic detector's
    would: a detector's NMS runs per class, so one die boxed as both `three` (0.4) and `five` (0.3) is two
    detections, and collapsing their classes without this would count the second as a false positive, scoring
    doubt about the class as failure to find the object (TSTR's "AP50 any class" read 0.31 instead of 0.73 so).
    ``iou=None``: no NMS (a class-agnostic model's detections, already suppressed by its own NMS)."""
    import torch
    from torchvision.ops import batched_nms

    gt = {**gt_doc, "categories": [{"id": 1, "name": "object"}], "annotations": [{**a, "category_id": 1} for a in gt_doc["annotations"]]}
    if not results or iou is None:
        return gt, [{**r, "category_id": 1} for r in results]
    boxes = torch.tensor([r["bbox"] for r in results], dtype=torch.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    scores = torch.tensor([float(r["score"]) for r in results], dtype=torch.float64)
    images = {i: k for k, i in enumerate(dict.fromkeys(r["image_id"] for r in results))}
    groups = torch.tensor([images[r["image_id"]] for r in results])
    keep = sorted(batched_nms(boxes, scores, groups, iou).tolist())  # file order: ties score the same every time
    return gt, [{**results[k], "category_id": 1} for k in keep]


def any_class_scores(gt_doc: dict, results: list[dict], image_ids: list[int] | None = None, one_class_model: bool = False) -> dict:
    """COCO scores with classes collapsed ("AP50, any class"): after class-agnostic NMS, unless the model has one
    class already (``one_class_model``: its own NMS ran). The one rule for `simgen utility` and the report."""
    return coco_evaluate(*class_agnostic(gt_doc, results, iou=None if one_class_model else 0.5), image_ids=image_ids)


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON, written whole or not at all (:func:`simgen.train.files.atomic_text`)."""
    from .files import atomic_text

    atomic_text(path, json.dumps(obj, indent=1))
