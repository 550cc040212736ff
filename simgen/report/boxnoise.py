"""What the boxes cost, and what the holdout's own labels allow (part of `simgen report report.run=...`).

mAP@[.5:.95] scores box edges to within a few percent of an object's side at its strictest thresholds. On small
objects drawn by hand, the labels' own edges wander by about that much, and then no detector can reach a high
mAP whatever it learns. Measured on dice-real-50 (2026-11-26): the detectors' edges sit a median 1.6-2.1 px from
the hand-drawn ones (dice of ~40 px), while two detectors trained on different data (one never saw a real photo)
agree with each other to within 0.6-1.3 px; a contact sheet shows the labels off the dice, not the detections.

Three numbers answer "how far can this holdout's mAP go?", each from pycocotools on the real labels:
- **as the boxes are now**: every object found and named, each box off its label by a residual drawn from the
  run's own matched residuals (relative to the object's side, all four edges together): what localisation
  alone costs this run;
- **the labels' ceiling**: every box exactly on its object, the labels off by their estimated noise (the shape
  of the run's residuals, bias removed, shrunk to the labels' share of their spread). That noise comes from
  comparing runs (``report.compare``, or the other arms of a `simgen utility` folder): for runs A and
  B scored on the same objects, with errors independent of each other and of the labels,
  ``var(A - label) + var(B - label) - var(A - B) = 2 var(label noise)``. Errors the runs share (the same edge
  misread by both) count as label noise here, so the true ceiling may be higher; the estimate is most
  trustworthy for runs trained on different data;
- the scores as they are, for reference.

Residual spreads are robust (1.4826 x the median absolute deviation, per edge, pooled), so a few bad matches do
not dominate.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .errors import Boxes, match

MATCH_IOU = 0.5
MAD_SIGMA = 1.4826  # MAD -> standard deviation of a normal distribution


def match_gt(gt: Boxes, dt: Boxes, min_score: float, thr: float = MATCH_IOU) -> np.ndarray:
    """For each ground-truth box, the index of the detection matched to it, or -1: pycocotools' greedy matching
    (:func:`simgen.report.errors.match`), class-agnostic, among detections scored >= ``min_score``."""
    keep = np.flatnonzero(dt.score >= min_score)
    if not len(keep):
        return np.full(len(gt), -1, np.int64)
    sub = Boxes(dt.image[keep], dt.cls[keep], dt.box[keep], dt.score[keep])
    _, gt_det, _ = match(gt, sub, thr, by_class=False, max_dets=len(sub))
    return np.where(gt_det >= 0, keep[np.maximum(gt_det, 0)], -1)


def relative_edges(gt_box: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) of ``box`` minus those of ``gt_box`` (both xywh), each in units of the label's width or
    height: a residual that means the same on a 20 px and a 200 px object."""
    g = np.c_[gt_box[:, :2], gt_box[:, :2] + gt_box[:, 2:]]
    b = np.c_[box[:, :2], box[:, :2] + box[:, 2:]]
    side = np.maximum(np.tile(gt_box[:, 2:], 2), 1e-9)
    return (b - g) / side


def robust_sigma(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64).ravel()
    return float(MAD_SIGMA * np.median(np.abs(x - np.median(x)))) if len(x) else float("nan")


def simulate(gt_doc: dict, ids: list[int], draw: Callable[[np.random.Generator, int], np.ndarray], trials: int = 5,
             seed: int = 0) -> dict[str, float]:
    """pycocotools mAP / AP50 / AP75 of a detector that finds and names every labelled object, its boxes the labels
    moved by ``draw(rng, n)`` relative edge residuals, its scores random (so ranking carries no information)."""
    from ..train.evaluate import coco_evaluate

    anns = [a for a in gt_doc["annotations"] if a["image_id"] in set(ids) and not a.get("iscrowd", 0)]
    if not anns:
        return {"map": float("nan"), "map50": float("nan"), "map75": float("nan")}
    box = np.array([a["bbox"] for a in anns], np.float64)
    side = np.tile(box[:, 2:], 2)
    edges = np.c_[box[:, :2], box[:, :2] + box[:, 2:]]
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(trials):
        e = edges + draw(rng, len(anns)) * side
        e[:, 2:] = np.maximum(e[:, 2:], e[:, :2] + 1e-3)
        res = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": float(s),
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
               for a, (x1, y1, x2, y2), s in zip(anns, e, rng.random(len(anns)))]
        m = coco_evaluate(gt_doc, res, image_ids=ids)
        runs.append((m["map"], m["map50"], m.get("map75", float("nan"))))
    r = np.array(runs)
    return {"map": float(r[:, 0].mean()), "map50": float(r[:, 1].mean()), "map75": float(r[:, 2].mean())}


def box_precision(gt_doc: dict, ids: list[int], gt: Boxes, dt: Boxes, others: dict[str, Boxes], min_score: float,
                  trials: int = 5, seed: int = 0) -> dict[str, Any]:
    """The analysed run's edge residuals against the labels, its agreement with ``others`` (name -> their detections
    on the same holdout), the labels' noise estimated from both, and the simulated scores described above."""
    mine = match_gt(gt, dt, min_score)
    ok = mine >= 0
    res = relative_edges(gt.box[ok], dt.box[mine[ok]])
    side_px = float(np.median(np.sqrt(gt.box[:, 2] * gt.box[:, 3]))) if len(gt) else float("nan")
    out: dict[str, Any] = {"min_score": min_score, "matched": int(ok.sum()), "objects": len(gt), "median_side_px": side_px}
    if len(res) < 5:
        out["note"] = f"only {len(res)} objects matched at IoU >= {MATCH_IOU}: too few to measure box precision"
        return out
    s_a = robust_sigma(res - np.median(res, 0))  # spread about the run's own bias, all edges pooled
    out.update({"bias": np.median(res, 0).round(4).tolist(), "sigma": s_a, "median_abs_px": float(np.median(np.abs(res)) * side_px)})
    pairs = []
    for name, other in others.items():
        theirs = match_gt(gt, other, min_score)
        both = ok & (theirs >= 0)
        if both.sum() < 5:
            continue
        ra, rb = (relative_edges(gt.box[both], x.box[k[both]]) for x, k in ((dt, mine), (other, theirs)))
        s_b = robust_sigma(rb - np.median(rb, 0))
        s_ab = robust_sigma((ra - rb) - np.median(ra - rb, 0))
        s_ga = robust_sigma(ra - np.median(ra, 0))
        label_var = (s_ga ** 2 + s_b ** 2 - s_ab ** 2) / 2
        pairs.append({"run": name, "objects": int(both.sum()), "sigma_run": s_b, "sigma_between": s_ab,
                      "median_abs_between_px": float(np.median(np.abs(ra - rb)) * side_px), "label_sigma": float(np.sqrt(max(label_var, 0.0)))})
    out["pairs"] = pairs
    out["now"] = simulate(gt_doc, ids, lambda rng, n: res[rng.integers(0, len(res), n)], trials, seed)
    if pairs:
        s_l = float(np.median([p["label_sigma"] for p in pairs]))
        out["label_sigma"] = s_l
        out["label_sigma_px"] = s_l * side_px
        # The labels' noise takes the shape of this run's residuals (bias removed: a bias is the run's to learn),
        # shrunk to the labels' share of their spread. Hand-drawn boxes are mostly close with a few far off, and
        # a normal distribution of the same spread would put the ceiling too high (0.69 vs 0.62 on the dice).
        shrink = min(1.0, s_l / s_a) if s_a > 0 else 1.0
        centred = res - np.median(res, 0)
        out["label_share"] = shrink
        out["ceiling"] = simulate(gt_doc, ids, lambda rng, n: centred[rng.integers(0, len(centred), n)] * shrink, trials, seed)
    return out


def across_runs(gt_doc: dict, ids: list[int], results: dict[str, list[dict]], best: str, min_score: float = 0.3,
                trials: int = 5, seed: int = 0) -> dict[str, Any]:
    """:func:`box_precision` of run ``best`` against every other run in ``results`` (name -> COCO results on the
    same holdout): what `simgen utility` reports after its arms, at a fixed score floor."""
    from .errors import make_boxes

    keep = set(ids)
    gt = make_boxes(gt_doc["annotations"], keep, True)
    others = {k: make_boxes(v, keep, False) for k, v in results.items() if k != best}
    return {"run": best, **box_precision(gt_doc, ids, gt, make_boxes(results[best], keep, False), others, min_score, trials, seed)}


WEAK_RUN_FOUND = 0.5  # share of the holdout's objects the analysed run matched, under which its ceiling is a rough bound


def ceiling_line(bp: dict[str, Any]) -> str | None:
    """One sentence for a report, or None when there is no ceiling to state."""
    if "ceiling" not in bp:
        return None
    found = bp.get("matched", 0) / bp["objects"] if bp.get("objects") else 1.0
    # from barely trained runs the detectors' box errors are neither small nor independent of each other: say so
    caveat = (f" A rough bound: {bp['run']} found only {bp.get('matched', 0)} of {bp['objects']} objects, and the estimate "
              "assumes detectors whose box errors are small and independent; train longer for a firmer one."
              if found < WEAK_RUN_FOUND else "")
    return (f"Box labels: the holdout's own boxes wander by about {bp['label_sigma_px']:.1f} px per edge "
            f"({100 * bp['label_sigma']:.1f}% of the side, estimated from {bp['run']} against {len(bp['pairs'])} other run(s)); "
            f"a detector whose every box sat exactly on its object would score about {bp['ceiling']['map']:.2f} mAP@[.5:.95] "
            f"(AP75 {bp['ceiling']['map75']:.2f}) here, and one that found and named every object with {bp['run']}'s boxes "
            f"{bp['now']['map']:.2f}. Read mAP against that ceiling, not 1.0 (docs/report.md, box precision).{caveat}")
