"""Error analysis of a trained detector on the real holdout (`simgen report report.run=<run dir>`).

TIDE (Bolya et al. 2020) taxonomy computed here from COCO-style matches, not with `tidecv` (unmaintained,
false "Miss" counts, tide#40). Every AP below is AP50 with COCO's 101-point interpolation, computed in numpy so
that errors can be "fixed" by an oracle and AP recomputed; a test holds it equal to pycocotools' AP50.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .model import Check, Figure, ReportContext, Section, Table, graded, pyplot

TF, TB = 0.5, 0.1  # TIDE's foreground and background IoU thresholds
MAX_DETS = 100  # pycocotools keeps the top 100 detections per image and class
TYPES = {"cls": "Classification", "loc": "Localization", "both": "Both", "dupe": "Duplicate", "bkg": "Background", "miss": "Missed"}
N_BINS = 4


@dataclass(frozen=True)
class Boxes:
    """Flat arrays of boxes: ground truth (score 1) or detections, in pycocotools' evaluation order."""

    image: np.ndarray  # int64 image ids
    cls: np.ndarray  # int64 category ids
    box: np.ndarray  # (N, 4) float64 xywh
    score: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.image)


def make_boxes(items: list[dict], image_ids: set[int], is_gt: bool) -> Boxes:
    """COCO annotations or results -> :class:`Boxes`. Detections are ordered by image id, then score (stable), the
    order pycocotools concatenates them in, so that equal scores break ties the same way."""
    keep = [a for a in items if a["image_id"] in image_ids and not (is_gt and a.get("iscrowd", 0))]  # crowd regions: not analysed
    img = np.array([a["image_id"] for a in keep], np.int64)
    score = np.ones(len(keep)) if is_gt else np.array([a["score"] for a in keep], np.float64)
    o = np.arange(len(keep)) if is_gt else np.lexsort((np.arange(len(keep)), -score, img))
    box = np.array([a["bbox"] for a in keep], np.float64).reshape(-1, 4)
    return Boxes(img[o], np.array([a["category_id"] for a in keep], np.int64)[o], box[o], score[o])


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xywh boxes (as pycocotools.mask.iou for non-crowd boxes)."""
    ax1, ay1, bx1, by1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _groups(x: Boxes, by_class: bool) -> dict[tuple[int, int], np.ndarray]:
    keys = zip(x.image.tolist(), (x.cls if by_class else np.zeros_like(x.cls)).tolist())
    out: dict[tuple[int, int], list[int]] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, []).append(i)
    return {k: np.array(v) for k, v in out.items()}


def match(gt: Boxes, dt: Boxes, thr: float = TF, by_class: bool = True, max_dets: int = MAX_DETS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pycocotools' greedy matching: per image (and class), detections by score take the unmatched GT of highest
    IoU >= thr. Returns (det -> gt index or -1, gt -> det index or -1, det kept within max_dets)."""
    det_gt, gt_det, kept = np.full(len(dt), -1), np.full(len(gt), -1), np.zeros(len(dt), bool)
    ggroups = _groups(gt, by_class)
    for key, d in _groups(dt, by_class).items():
        d = d[:max_dets]
        kept[d] = True
        g = ggroups.get(key)
        if g is None:
            continue
        ious = iou(dt.box[d], gt.box[g])
        for i, di in enumerate(d):
            cand = np.where(gt_det[g] < 0, ious[i], -1.0)
            best = cand.max()
            if best < min(thr, 1 - 1e-10):
                continue
            j = np.flatnonzero(cand == best)[-1]  # pycocotools lets a later GT of equal IoU win
            det_gt[di], gt_det[g[j]] = g[j], di
    return det_gt, gt_det, kept


def class_ap(score: np.ndarray, tp: np.ndarray, n_gt: int) -> float | None:
    """COCO 101-point interpolated AP of one class; None without ground truth (pycocotools' -1)."""
    if n_gt <= 0:
        return None
    o = np.argsort(-score, kind="mergesort")
    tps, fps = np.cumsum(tp[o]), np.cumsum(~tp[o])
    rc, pr = tps / n_gt, tps / (tps + fps + np.spacing(1))
    pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope
    idx = np.searchsorted(rc, np.linspace(0, 1, 101), side="left")
    q = np.zeros(101)  # recall levels never reached count as precision 0
    ok = idx < len(pr)
    q[ok] = pr[idx[ok]]
    return float(q.mean())


def mean_ap(cls: np.ndarray, score: np.ndarray, tp: np.ndarray, n_gt: dict[int, int]) -> tuple[float, dict[int, float | None]]:
    """Mean over classes with ground truth of :func:`class_ap`, from scored TP/FP points."""
    per = {c: class_ap(score[cls == c], tp[cls == c], n) for c, n in n_gt.items()}
    vals = [v for v in per.values() if v is not None]
    return (float(np.mean(vals)) if vals else 0.0), per


def ap50(gt: Boxes, dt: Boxes, cat_ids: list[int]) -> tuple[float, dict[int, float | None]]:
    """AP50 as pycocotools computes it (area "all", 100 detections), from scratch."""
    det_gt, _, kept = match(gt, dt)
    return mean_ap(dt.cls[kept], dt.score[kept], det_gt[kept] >= 0, {c: int((gt.cls == c).sum()) for c in cat_ids})


# ---------------------------------------------------------------------------- TIDE


def tide(gt: Boxes, dt: Boxes, cat_ids: list[int]) -> dict[str, Any]:
    """Classify every false positive and missed GT (TIDE's order: Loc, Cls, Dupe, Bkg, else Both) and the AP50
    gained by an oracle fixing each type alone, in AP points (negative gains, binning noise, clamp to 0 as TIDE)."""
    det_gt, gt_det, kept = match(gt, dt)
    kinds = np.full(len(dt), "", dtype=object)
    target = np.full(len(dt), -1)  # the GT a Cls/Loc fix would turn the detection into a TP for
    by_img = {k[0]: v for k, v in _groups(gt, False).items()}
    for i in np.flatnonzero(kept & (det_gt < 0)):
        g = by_img.get(int(dt.image[i]), np.zeros(0, int))
        ious = iou(dt.box[i:i + 1], gt.box[g])[0] if len(g) else np.zeros(0)
        same = gt.cls[g] == dt.cls[i]
        s, o = np.where(same, ious, 0), np.where(same, 0, ious)
        if len(g) and TB <= s.max() < TF:
            kinds[i], target[i] = "loc", g[s.argmax()]
        elif len(g) and o.max() >= TF:
            kinds[i], target[i] = "cls", g[o.argmax()]
        elif len(g) and s.max() >= TF:
            kinds[i] = "dupe"  # its GT went to a higher-scoring detection
        elif not len(g) or ious.max() < TB:
            kinds[i] = "bkg"
        else:
            kinds[i] = "both"
    # One fix per GT: among Cls/Loc errors on a still unmatched GT the highest score wins, the rest are suppressed
    # (TIDE's BestGTMatch). Those GT are "usable", so they are not counted as Missed.
    best: dict[int, int] = {}
    for i in np.flatnonzero(target >= 0):
        t = int(target[i])
        if gt_det[t] < 0 and (t not in best or dt.score[i] > dt.score[best[t]]):
            best[t] = int(i)
    missed = np.flatnonzero((gt_det < 0) & ~np.isin(np.arange(len(gt)), list(best)))
    n_gt = {c: int((gt.cls == c).sum()) for c in cat_ids}
    base_tp = det_gt >= 0

    def fixed_ap(kind: str) -> float:
        cls, alive, tp, ng = dt.cls.copy(), kept.copy(), base_tp.copy(), dict(n_gt)
        if kind == "miss":
            for c in gt.cls[missed].tolist():
                ng[c] -= 1  # TIDE's oracle: the missed object no longer counts
        for i in np.flatnonzero(kinds == kind):
            if kind in ("cls", "loc") and best.get(int(target[i])) == i:
                cls[i], tp[i] = gt.cls[target[i]], True  # relabel / snap the box onto its GT: a true positive
            else:
                alive[i] = False  # dupe, bkg, both, and suppressed Cls/Loc fixes are removed
        return mean_ap(cls[alive], dt.score[alive], tp[alive], ng)[0]

    base = mean_ap(dt.cls[kept], dt.score[kept], base_tp[kept], n_gt)[0]
    counts = {k: int((kinds == k).sum()) for k in TYPES if k != "miss"} | {"miss": int(len(missed))}
    dap = {k: round(100 * max(fixed_ap(k) - base, 0.0), 2) for k in TYPES}
    # TIDE's two summary oracles: every FP gone (perfect precision), every GT found (perfect recall)
    fp_free = mean_ap(dt.cls[kept & base_tp], dt.score[kept & base_tp], base_tp[kept & base_tp], n_gt)[0]
    found = {c: int(((gt.cls == c) & (gt_det >= 0)).sum()) for c in cat_ids}
    fn_free = mean_ap(dt.cls[kept], dt.score[kept], base_tp[kept], found)[0]
    return {"ap50": base, "counts": counts, "dap": dap, "false_positive_dap": round(100 * (fp_free - base), 2),
            "false_negative_dap": round(100 * (fn_free - base), 2), "kinds": kinds, "target": target, "missed": missed,
            "det_gt": det_gt, "gt_det": gt_det, "kept": kept}


def best_f1_threshold(dt: Boxes, tp: np.ndarray, kept: np.ndarray, n_gt: int) -> tuple[float, float]:
    """The score threshold at the best F1 of class-correct matches: the operating point a user would ship."""
    o = np.flatnonzero(kept)[np.argsort(-dt.score[kept], kind="mergesort")]
    if not len(o) or not n_gt:
        return 1.0, 0.0
    tps = np.cumsum(tp[o])
    f1 = 2 * tps / (np.arange(1, len(o) + 1) + n_gt)
    k = int(f1.argmax())
    return float(dt.score[o[k]]), float(f1[k])


def confusion(gt: Boxes, dt: Boxes, cat_ids: list[int], thr: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows GT class (+ background), columns predicted class (+ missed), from class-agnostic IoU >= 0.5 matches of
    the detections above the operating threshold. Unmatched detections on an already matched object (IoU >= 0.5)
    are duplicates, counted apart so that the background row means boxes on no object. Also returns, per GT, the
    class it was seen as (-1: not found) and the duplicate count."""
    keep = np.flatnonzero(dt.score >= thr)
    sub = Boxes(dt.image[keep], dt.cls[keep], dt.box[keep], dt.score[keep])
    det_gt, gt_det, _ = match(gt, sub, by_class=False)
    ix, n = {c: k for k, c in enumerate(cat_ids)}, len(cat_ids)
    m, dupes = np.zeros((n + 1, n + 1), int), 0
    by_img = {k[0]: v for k, v in _groups(gt, False).items()}
    for i, g in enumerate(det_gt.tolist()):
        if g < 0:
            others = by_img.get(int(sub.image[i]), np.zeros(0, int))
            if len(others) and iou(sub.box[i:i + 1], gt.box[others]).max() >= TF:
                dupes += 1
                continue
        m[ix[int(gt.cls[g])] if g >= 0 else n, ix.get(int(sub.cls[i]), n)] += 1
    for g in np.flatnonzero(gt_det < 0):
        m[ix[int(gt.cls[g])], n] += 1
    seen_as = np.where(gt_det >= 0, sub.cls[np.maximum(gt_det, 0)] if len(sub) else -1, -1)
    return m, seen_as, dupes


# ---------------------------------------------------------------------------- the run folder


def find_run(run: Path) -> tuple[Path, list[dict]]:
    """A `simgen train` folder, or a `simgen utility` folder whose best arm (highest mAP) is analysed. Returns the
    analysed folder and every arm's metrics entry (with its folder under "dir")."""
    run = Path(run)
    dirs = [run] if (run / "predictions.json").is_file() else sorted(p.parent for p in run.glob("runs/*/predictions.json"))
    if not dirs:
        raise DatasetError(f"report.run={run} holds no predictions.json (nor runs/*/predictions.json); pass a `simgen train` or "
                           f"`simgen utility` output folder.")
    arms = []
    for d in dirs:
        m = d / "metrics.json"
        entry = json.loads(m.read_text()).get("entry", {}) if m.is_file() else {}
        arms.append({**entry, "name": entry.get("name", d.name), "folder": d.name, "dir": str(d)})
    best = max(arms, key=lambda e: -1.0 if e.get("map") is None else e["map"])
    return Path(best["dir"]), arms


def holdout_check(prov: dict, ctx: ReportContext) -> Check:
    """Does the run's provenance name the same holdout images as ctx.real? Compared by content hash, not path."""
    from ..provenance import file_sha256
    from ..train.guard import image_hashes

    h = prov.get("holdout") or {}
    if not h:
        return Check("holdout identity", None, "info", "", "the run has no provenance.json: not checked that it was scored on these images")
    if h.get("annotations_sha256") == file_sha256(ctx.real.root / "annotations.json"):
        return Check("holdout identity", 1.0, "pass", "same annotations.json (SHA-256)", "the run was scored on this holdout")
    mine = hashlib.sha256("".join(sorted(image_hashes(ctx.real.root, ctx.real.doc))).encode()).hexdigest()
    if mine == h.get("images_sha256"):
        return Check("holdout identity", 0.5, "warn", "same image bytes, other annotations.json",
                     "same photos but the labels changed since the run: its metrics.json may differ from this analysis")
    return Check("holdout identity", 0.0, "fail", "same image bytes (SHA-256)",
                 f"the run was scored on {h.get('path')}, whose images differ from {ctx.real.root}; pass the run's holdout as the real side")


def load_predictions(run_dir: Path, prov: dict, ctx: ReportContext) -> tuple[dict, list[dict], list[int]]:
    """(GT doc, predictions on its category ids, scored image ids). Categories are matched by name through the
    run's own holdout file when it is still there; class-agnostic runs collapse the GT to one class."""
    from ..train.evaluate import class_agnostic

    gt = ctx.real.doc
    res = json.loads((run_dir / "predictions.json").read_text())
    ids = sorted(ctx.real.images_by_id)
    unknown = sorted({r["image_id"] for r in res} - set(ids))
    if unknown:
        raise DatasetError(f"{run_dir}/predictions.json refers to image id {unknown[0]} (and {len(unknown) - 1} more) that {ctx.real.root} "
                           f"lacks: the run was evaluated on another holdout; pass that holdout as the real side.")
    n = int((prov.get("holdout") or {}).get("images_scored") or len(ids))  # holdout_limit scored the first n images by id
    if prov.get("class_agnostic"):
        return (*class_agnostic(gt, res, iou=None), ids[:n])  # one class already: its own NMS ran
    theirs = Path(str((prov.get("holdout") or {}).get("path", ""))) / "annotations.json"
    if theirs.is_file():  # predictions carry the run's holdout ids: translate them through the names
        names = {c["id"]: c["name"] for c in json.loads(theirs.read_text())["categories"]}
        mine = {c["name"]: c["id"] for c in gt["categories"]}
        res = [{**r, "category_id": mine[names[r["category_id"]]]} for r in res if names.get(r["category_id"]) in mine]
    return gt, res, ids[:n]


# ---------------------------------------------------------------------------- object statistics


def object_stats(side, anns: list[dict]) -> dict[str, np.ndarray]:
    """Per annotation: box area / image area, mean grey level (0-255) of the box crop, visible fraction (nan if absent)."""
    import cv2

    ims = side.images_by_id
    area, bright, vis = np.zeros(len(anns)), np.full(len(anns), np.nan), np.full(len(anns), np.nan)
    by_img: dict[int, list[int]] = {}
    for k, a in enumerate(anns):
        by_img.setdefault(a["image_id"], []).append(k)
        im = ims[a["image_id"]]
        area[k] = a["bbox"][2] * a["bbox"][3] / float(im["width"] * im["height"])
        vis[k] = a.get("visible_fraction", np.nan)
    for image_id, ks in by_img.items():
        g = cv2.imread(str(side.image_path(image_id)), cv2.IMREAD_GRAYSCALE)
        if g is None:
            continue  # missing image: its objects keep nan brightness
        for k in ks:
            x, y, w, h = (int(round(v)) for v in anns[k]["bbox"])
            crop = g[max(y, 0):max(y + max(h, 1), 0), max(x, 0):max(x + max(w, 1), 0)]
            bright[k] = float(crop.mean()) if crop.size else np.nan
    return {"size": area, "brightness": bright, "visibility": vis}


def binned(real: np.ndarray, found: np.ndarray, synthetic: np.ndarray, n_bins: int = N_BINS) -> dict[str, list]:
    """Quantile bins of the real objects (outer bins open-ended so every synthetic object falls in one): real recall
    and the share of real and of synthetic objects per bin."""
    ok = ~np.isnan(real)
    edges = np.unique(np.quantile(real[ok], np.linspace(0, 1, n_bins + 1)))
    edges = edges if len(edges) > 1 else np.repeat(edges, 2)  # every object alike: one bin
    inner = edges[1:-1]
    rb, sb = np.searchsorted(inner, real[ok], side="right"), np.searchsorted(inner, synthetic[~np.isnan(synthetic)], side="right")
    nb = len(inner) + 1
    cnt, hit = np.bincount(rb, minlength=nb), np.bincount(rb, weights=found[ok].astype(float), minlength=nb)
    sc = np.bincount(sb, minlength=nb)
    return {"edges": [float(e) for e in edges], "count": cnt.tolist(),
            "recall": [float(h / c) if c else None for h, c in zip(hit, cnt)], "real_share": (cnt / max(cnt.sum(), 1)).tolist(),
            "synthetic_share": (sc / max(sc.sum(), 1)).tolist(), "synthetic_count": int(sc.sum())}


# ---------------------------------------------------------------------------- figures


def confusion_figure(m: np.ndarray, names: list[str], thr: float, path: Path) -> None:
    plt = pyplot()
    labels = [*names, "background"]
    fig, ax = plt.subplots(figsize=(1 + 0.55 * len(labels), 0.8 + 0.5 * len(labels)), dpi=110)
    ax.imshow(m / np.maximum(m.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(m):
        if v:
            ax.text(c, r, str(v), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(labels)), [*names, "missed"], rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel(f"predicted (score >= {thr:.2f}, best F1)")
    ax.set_ylabel("ground truth")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def contact_sheet(tiles: list[tuple[Path, list[float], list[float] | None, str]], path: Path, size: int = 150, cols: int = 6) -> bool:
    """Crops around a box (red), with the related box in green (the GT of a Cls/Loc error), each labelled."""
    import cv2

    cells = []
    for img_path, box, other, label in tiles:
        img = cv2.imread(str(img_path))
        if img is None:
            continue
        x, y, w, h = box
        pad = 0.6 * max(w, h) + 12  # enough context to see the neighbours that confuse the detector
        x0, y0 = int(max(x - pad, 0)), int(max(y - pad, 0))
        x1, y1 = int(min(x + w + pad, img.shape[1])), int(min(y + h + pad, img.shape[0]))
        crop = img[y0:y1, x0:x1].copy()
        for b, col in ((other, (60, 200, 60)), (box, (40, 40, 230))):
            if b is not None:
                cv2.rectangle(crop, (int(b[0] - x0), int(b[1] - y0)), (int(b[0] + b[2] - x0), int(b[1] + b[3] - y0)), col, 2)
        s = size / max(crop.shape[:2])
        crop = cv2.resize(crop, (max(int(crop.shape[1] * s), 1), max(int(crop.shape[0] * s), 1)))
        cell = np.full((size + 18, size, 3), 255, np.uint8)
        cell[:crop.shape[0], :crop.shape[1]] = crop
        cv2.putText(cell, label[:24], (2, size + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        cells.append(cell)
    if not cells:
        return False
    cells += [np.full_like(cells[0], 255)] * (-len(cells) % cols)
    rows = [np.hstack(cells[i:i + cols]) for i in range(0, len(cells), cols)]
    cv2.imwrite(str(path), np.vstack(rows))
    return True


def bins_figure(bins: dict[str, dict], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(bins), figsize=(4.2 * len(bins), 3.2), dpi=110, squeeze=False)
    for ax, (name, b) in zip(axes[0], bins.items()):
        x = np.arange(len(b["count"]))
        fmt = ".4f" if name == "size" else ".0f"
        ticks = [f"{lo:{fmt}}-{hi:{fmt}}" for lo, hi in zip(b["edges"][:-1], b["edges"][1:])]
        ax.bar(x, [r or 0 for r in b["recall"]], color="tab:blue", alpha=0.7, label="real recall")
        ax.set_ylim(0, 1.05)
        ax.set_xticks(x, ticks, rotation=30, fontsize=7)
        ax.set_title({"size": "box area / image area", "brightness": "crop brightness (0-255)", "visibility": "visible fraction"}[name])
        ax2 = ax.twinx()
        ax2.plot(x, b["synthetic_share"], "o-", color="tab:orange", label="synthetic share")
        ax2.plot(x, b["real_share"], "s--", color="tab:gray", label="real share")
        ax2.set_ylim(0, max(1e-3, *b["synthetic_share"], *b["real_share"]) * 1.15)
        ax.set_ylabel("recall at best F1")
        ax2.set_ylabel("share of objects")
    h1, l1 = axes[0][0].get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    axes[0][0].legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def failure_sheets(ctx: ReportContext, gt: Boxes, dt: Boxes, t: dict, not_found: np.ndarray, seen_as: np.ndarray,
                   name_of: dict[int, str], thr: float, n: int = 12) -> list[Figure]:
    """Contact sheets of the largest objects not found at the operating point (a large miss is the least excusable)
    and of the most confident false positives with their TIDE type."""
    figs = []
    miss = sorted(np.flatnonzero(not_found).tolist(), key=lambda g: -gt.box[g, 2] * gt.box[g, 3])[:n]
    tiles = [(ctx.real.image_path(int(gt.image[g])), gt.box[g].tolist(), None, f"{name_of[int(gt.cls[g])]} "
              + (f"seen as {name_of.get(int(seen_as[g]), '?')}" if seen_as[g] >= 0 else "missed")) for g in miss]
    p, rel = _fig(ctx, "errors_misses.png")
    if contact_sheet(tiles, p):
        figs.append(Figure(rel, f"Largest real objects not found with their class at score >= {thr:.2f} (red): GT class, "
                                f"then the class of the box found there or 'missed'."))
    fps = [i for i in np.argsort(-dt.score, kind="mergesort") if t["kinds"][i]][:n]
    tiles = [(ctx.real.image_path(int(dt.image[i])), dt.box[i].tolist(), gt.box[t["target"][i]].tolist() if t["target"][i] >= 0 else None,
              f"{TYPES[t['kinds'][i]]} {name_of.get(int(dt.cls[i]), '?')} {dt.score[i]:.2f}") for i in fps]
    p, rel = _fig(ctx, "errors_false_positives.png")
    if contact_sheet(tiles, p):
        figs.append(Figure(rel, "Most confident false positives (red) with their TIDE type, class and score; green: the GT a "
                                "Classification/Localization fix would match."))
    return figs


def object_bins(ctx: ReportContext, gt_anns: list[dict], found: np.ndarray) -> tuple[dict[str, dict], list[str]]:
    """Real recall by object size, brightness and (when labelled) visibility, beside the synthetic distribution."""
    syn_ids = set((ctx.synthetic.image_ids or tuple(ctx.synthetic.images_by_id))[:200])  # a sample is enough for shares
    syn_anns = [a for a in ctx.synthetic.doc["annotations"] if a["image_id"] in syn_ids]
    rs, ss = object_stats(ctx.real, gt_anns), object_stats(ctx.synthetic, syn_anns)
    bins = {k: binned(rs[k], found, ss[k]) for k in ("size", "brightness") if len(gt_anns) and not np.isnan(rs[k]).all()}
    if len(gt_anns) and not np.isnan(rs["visibility"]).any():
        bins["visibility"] = binned(rs["visibility"], found, ss["visibility"])
        return bins, []
    return bins, ["visibility bins skipped: the real annotations have no visible_fraction"]


# ---------------------------------------------------------------------------- what to change


def _cfg(manifest: dict | None, *keys: str):
    v: Any = (manifest or {}).get("config", {})
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else None
    return v


# Keys of groups only some scenes have: a dice tray, the dice's face balance. Every other key a suggestion names has a
# default in simgen.config, so any scene can set it.
SCENE_OWN = ("scene.tray.", "scene.face_balance.")


def has_key(manifest: dict | None, key: str) -> bool:
    """May the rendered set's scene set ``key`` (dotted, ``=value`` ignored)? True unless it belongs to a group only some
    scenes have (:data:`SCENE_OWN`) and the manifest's config has no such group: `scene.tray.wall_bias` and
    `scene.face_balance` are the dice scene's own, and a tabletop user was told to set them. True without a manifest."""
    key = key.split("=")[0]
    cfg = (manifest or {}).get("config")
    own = next((g for g in SCENE_OWN if key.startswith(g)), None)
    if own is None or not isinstance(cfg, dict):
        return True
    v: Any = cfg
    for part in own.strip(".").split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return isinstance(v, dict)


def _keys(manifest: dict | None, *keys: str) -> str:
    return ", ".join(k for k in keys if has_key(manifest, k))


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _advice(options: list[tuple[str, str]], manifest: dict | None) -> str:
    """Each ``(words, keys)`` option whose keys (comma-separated) the scene may set, as "A (keys), B (keys) and C (keys)"."""
    parts = []
    for words, keys in options:
        ks = _keys(manifest, *[k.strip() for k in keys.split(",")])
        if ks:
            parts.append(f"{words} ({ks})")
    return _listed(parts) if parts else ""


def suggestions(t: dict, bins: dict[str, dict], manifest: dict | None) -> list[str]:
    """Sentences derived from the numbers: the largest TIDE error, then bins where recall drops and synthetic is thin.
    They name only config keys the rendered set's scene may set (:func:`has_key`)."""
    out = []
    worst = max(t["dap"], key=t["dap"].get)
    if t["dap"][worst] >= 1.0:
        m = manifest
        pts = f"the most AP ({t['dap'][worst]:.1f} AP50 points if fixed)"
        balance = [("balance classes", "scene.objects.<name>.weight"),
                   ("show the confused faces more often", "scene.face_balance.probability=1, scene.face_balance.weights")]
        out.append({
            "loc": f"Localization costs {pts}: boxes are found but misplaced; check the label-convention margin (tight "
                   "visible-mask boxes vs the real labels) and box regression / model.input_size.",
            "cls": f"Classification costs {pts}: objects are found but given the wrong class; "
                   + _advice([*balance, ("vary the textures that tell them apart", "randomization.textures, randomization.texture_probability")], m) + ".",
            "both": f"Boxes both misplaced and mislabelled cost {pts}: the detector fires on parts or clusters of objects; look "
                    "at the false-positive crops and "
                    + _advice([("add close-packed scenes", "scene.cluster.probability, scene.tray.wall_bias, scene.objects.*.count")], m) + ".",
            "dupe": f"Duplicates cost {pts}: several boxes per object survive non-maximum suppression; lower the detector's NMS "
                    "IoU threshold or train longer.",
            "bkg": f"Background false positives cost {pts}: clutter looks like objects; "
                   + _advice([("add distractors", "scene.distractors"), ("ground textures", "randomization.ground_texture_probability")], m) + ".",
            "miss": f"Missed objects cost {pts}: many real objects get no box at all; see the size and brightness bins below "
                    "(objects cut by the frame: scene.camera.truncation_probability).",
        }[worst])
    dist, obj = _cfg(manifest, "scene", "camera", "distance"), _cfg(manifest, "scene", "objects")
    scale_key = f"scene.objects.{next(iter(obj))}.scale" if isinstance(obj, dict) and obj else "scene.objects.<name>.scale"
    knobs = {
        "size": ("small", f"raise the upper end of scene.camera.distance (now {dist}) or lower {scale_key}",
                 "large", f"lower the lower end of scene.camera.distance (now {dist}) or raise {scale_key}"),
        "brightness": ("dark", f"lower randomization.sensor.brightness (now {_cfg(manifest, 'randomization', 'sensor', 'brightness')}) "
                               f"and randomization.light.ambient (now {_cfg(manifest, 'randomization', 'light', 'ambient')}), "
                               f"or add very dark views (randomization.light.extreme_probability)",
                       "bright", f"raise the upper ends of randomization.sensor.brightness and randomization.light.diffuse "
                                 f"(now {_cfg(manifest, 'randomization', 'light', 'diffuse')}), or add very bright and glaring views "
                                 f"(randomization.light.extreme_probability)"),
        "visibility": ("occluded", "render more occluded objects (randomization.occluders.probability, scene.cluster.probability, "
                                   "scene.camera.truncation_probability) and keep them (labels.min_visible_fraction)",
                       "unoccluded", "add plain scenes with few objects"),
    }
    for name, b in bins.items():
        rec = np.array([np.nan if r is None else r for r in b["recall"]])
        if np.isnan(rec).all() or name not in knobs:
            continue
        k = int(np.nanargmin(rec))
        overall = float(np.nansum(rec * np.array(b["count"])) / max(sum(b["count"]), 1))
        if rec[k] < overall - 0.1 and b["synthetic_share"][k] < 0.5 * b["real_share"][k]:
            lo_word, lo_fix, hi_word, hi_fix = knobs[name]
            word, fix = (lo_word, lo_fix) if k < len(rec) / 2 else (hi_word, hi_fix)
            out.append(f"Misses concentrate on {word} objects ({name} {b['edges'][k]:.4g}-{b['edges'][k + 1]:.4g}: recall "
                       f"{rec[k]:.2f} vs {overall:.2f} overall), where synthetic has {100 * b['synthetic_share'][k]:.0f}% of its "
                       f"objects against {100 * b['real_share'][k]:.0f}% of real ones: {fix}.")
    return out


# ---------------------------------------------------------------------------- the section


def _fig(ctx: ReportContext, name: str) -> tuple[Path, str]:
    return ctx.figures / name, f"figures/{name}"


def error_section(ctx: ReportContext) -> Section | None:
    """Per-class AP, TIDE breakdown, confusion, failure crops and recall by object size/brightness against the
    synthetic distribution, with suggestions; None when no run was given."""
    from ..train.evaluate import any_class_scores, coco_evaluate

    if ctx.run is None:
        return None
    run_dir, arms = find_run(ctx.run)
    prov_file = run_dir / "provenance.json"
    prov = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
    checks = [holdout_check(prov, ctx)]
    if checks[0].status == "fail":  # its predictions are of other photos: any error count from them would be wrong
        return Section("errors", "Error analysis on the real holdout",
                       f"Not analysed: {run_dir.name} was scored on another holdout ({checks[0].detail}).", tuple(checks), (), (),
                       {"run": str(run_dir), "arm": run_dir.name, "analysed": False})
    gt_doc, res, ids = load_predictions(run_dir, prov, ctx)
    metrics = coco_evaluate(gt_doc, res, image_ids=ids)
    agn = any_class_scores(gt_doc, res, ids, bool(prov.get("class_agnostic")))
    cats = sorted(gt_doc["categories"], key=lambda c: c["id"])
    cat_ids, names = [c["id"] for c in cats], [c["name"] for c in cats]
    gt_anns = [a for a in gt_doc["annotations"] if a["image_id"] in set(ids) and not a.get("iscrowd", 0)]
    gt, dt = make_boxes(gt_anns, set(ids), True), make_boxes(res, set(ids), False)
    t = tide(gt, dt, cat_ids)
    _, per50 = ap50(gt, dt, cat_ids)
    thr, f1 = best_f1_threshold(dt, t["det_gt"] >= 0, t["kept"], len(gt))
    found = (t["gt_det"] >= 0) & (dt.score[np.maximum(t["gt_det"], 0)] >= thr if len(dt) else False)  # at the operating point
    name_of = dict(zip(cat_ids, names))
    figures: list[Figure] = []

    conf, seen_as, dupes = confusion(gt, dt, cat_ids, thr)
    p, rel = _fig(ctx, "errors_confusion.png")
    confusion_figure(conf, names, thr, p)
    figures.append(Figure(rel, f"Confusion at the best-F1 score threshold {thr:.2f}: GT class (rows) vs predicted class, "
                               f"class-agnostic IoU >= 0.5 matches; 'background' row: boxes on no object, 'missed' column: "
                               f"objects without a box; {dupes} further boxes on already matched objects (duplicates) left out."))

    figures += failure_sheets(ctx, gt, dt, t, ~found, seen_as, name_of, thr)
    bins, notes = object_bins(ctx, gt_anns, found)
    if bins:
        p, rel = _fig(ctx, "errors_bins.png")
        bins_figure(bins, p)
        figures.append(Figure(rel, "Real recall at the best-F1 threshold per quantile bin of the real objects (bars), with the "
                                   "share of real and synthetic objects in each bin (lines)."))
    sugg = suggestions(t, bins, ctx.synthetic.manifest)
    from .boxnoise import ceiling_line

    precision = _box_precision(ctx, gt_doc, ids, gt, dt, run_dir, arms, thr)
    ceiling = precision.get("ceiling", {}).get("map")
    if ceiling is not None and ceiling < 0.9:
        sugg.append(f"{ceiling_line(precision)} Compare recipes on AP50 and AP75 too.")

    opt = ctx.options
    checks.append(graded("AP50, any class", agn["map50"], float(opt.get("errors_agnostic_pass", 0.9)),
                         float(opt.get("errors_agnostic_warn", 0.5)), detail="finding the objects regardless of class "
                         "(pycocotools, classes collapsed); low means the real objects look unlike the synthetic ones"))
    checks += [Check(f"dAP50 {TYPES[k]}", t["dap"][k], "info", "AP50 points an oracle fixing this error type would add",
                     f"{t['counts'][k]} {'objects' if k == 'miss' else 'detections'}") for k in TYPES]
    worst = max(t["dap"], key=t["dap"].get)
    best_arm = next(a for a in arms if a["dir"] == str(run_dir))
    which = f"Best of {len(arms)} runs by mAP: {best_arm['folder']}; " if len(arms) > 1 else ""
    largest = (f"the largest error is {TYPES[worst]} (dAP50 {t['dap'][worst]:.1f} points)" if t["dap"][worst] > 0 else
               "no single error type costs AP50" if len(dt) else "the run made no predictions on these images")
    summary = (f"{which}AP50 {metrics['map50']:.3f} (any class {agn['map50']:.3f}, mAP {metrics['map']:.3f}). "
               + (sugg[0] if sugg else f"{largest[0].upper()}{largest[1:]}; no clear suggestion from the numbers."))

    per_rows = tuple((n, int((gt.cls == c).sum()), int((dt.cls[t["kept"]] == c).sum()), _r(metrics["per_class"].get(n)),
                      _r(metrics["per_class_ap50"].get(n)), _r(per50.get(c))) for c, n in zip(cat_ids, names))
    tables = [Table("Per-class AP on the real holdout", ("class", "GT", "detections", "AP@[.5:.95]", "AP50", "AP50 (numpy)"),
                    per_rows + (("all", len(gt), int(t["kept"].sum()), _r(metrics["map"]), _r(metrics["map50"]), _r(t["ap50"])),)),
              Table("TIDE error breakdown (t_f 0.5, t_b 0.1)", ("error", "count", "dAP50 (points)"),
                    tuple((TYPES[k], t["counts"][k], t["dap"][k]) for k in TYPES)
                    + (("all false positives", int(sum(v for k, v in t["counts"].items() if k != "miss")), t["false_positive_dap"]),
                       ("all false negatives", int(len(gt) - (t["gt_det"] >= 0).sum()), t["false_negative_dap"])))]
    if "now" in precision:
        rows = [("this run, as scored", _r(metrics["map"]), _r(metrics["map50"]), _r(metrics.get("map75")),
                 "its detections as they are"),
                ("every object found and named, boxes as now", _r(precision["now"]["map"]), _r(precision["now"]["map50"]),
                 _r(precision["now"]["map75"]), f"each label moved by one of this run's {precision['matched']} matched edge residuals "
                 f"(spread {100 * precision['sigma']:.1f}% of the side, median |error| {precision['median_abs_px']:.1f} px)")]
        if "ceiling" in precision:
            rows.append(("boxes exactly on the objects (the labels' ceiling)", _r(precision["ceiling"]["map"]), _r(precision["ceiling"]["map50"]),
                         _r(precision["ceiling"]["map75"]), f"labels off by their estimated noise, {100 * precision['label_sigma']:.1f}% of the "
                         f"side (~{precision['label_sigma_px']:.1f} px at the median object), from {len(precision['pairs'])} other run(s)"))
        tables.append(Table("Box precision: what localisation costs, and what the holdout's labels allow (pycocotools, simulated)",
                            ("detector", "mAP@[.5:.95]", "AP50", "AP75", "how"), tuple(rows)))
        checks.append(Check("box edges vs labels", precision["sigma"], "info", "robust spread of (detected - labelled) edges, share of the side",
                            f"{precision['median_abs_px']:.1f} px median |error| at a median object side of {precision['median_side_px']:.0f} px"))
        if "label_sigma" in precision:
            checks.append(Check("label box noise (estimated)", precision["label_sigma"], "info",
                                "var(A - label) + var(B - label) - var(A - B) = 2 var(label noise), over other runs on these objects",
                                f"~{precision['label_sigma_px']:.1f} px per edge; mAP ceiling {precision['ceiling']['map']:.3f}"))
    if len(arms) > 1:
        tables.append(Table("Per-arm AP (the best run is analysed)", ("arm", "seed", "synthetic fraction", "mAP", "AP50", "AP50 any class"),
                            tuple((a["name"], a.get("seed"), a.get("synthetic_fraction"), a.get("map"), a.get("map50"),
                                   a.get("map50_agnostic")) for a in sorted(arms, key=lambda a: -(a.get("map") or 0)))))
    data = {"run": str(run_dir), "arm": best_arm["folder"], "arms": arms, "images_scored": len(ids),
            "class_agnostic_run": bool(prov.get("class_agnostic")), "map": metrics["map"], "map50": metrics["map50"],
            "map50_agnostic": agn["map50"], "per_class": metrics["per_class"], "per_class_ap50": metrics["per_class_ap50"],
            "ap50_numpy": t["ap50"], "tide": {"t_f": TF, "t_b": TB, "counts": t["counts"], "dap50": t["dap"],
                                              "false_positive_dap50": t["false_positive_dap"], "false_negative_dap50": t["false_negative_dap"]},
            "operating_threshold": thr, "best_f1": f1, "recall_at_threshold": float(found.mean()) if len(gt) else None,
            "confusion": {"rows": [*names, "background"], "columns": [*names, "missed"], "counts": conf.tolist(), "duplicates": dupes},
            "bins": bins, "suggestions": sugg, "notes": notes, "box_precision": precision}
    return Section("errors", "Error analysis on the real holdout", summary, tuple(checks), tuple(figures), tuple(tables), data)


def _box_precision(ctx: ReportContext, gt_doc: dict, ids: list[int], gt: Boxes, dt: Boxes, run_dir: Path, arms: list[dict],
                   thr: float) -> dict[str, Any]:
    """:func:`simgen.report.boxnoise.box_precision` of the analysed run against the other arms of its folder and the
    folders of ``report.compare`` (each scored on this holdout; others are skipped with a note)."""
    from .boxnoise import box_precision

    dirs = [Path(a["dir"]) for a in arms if a["dir"] != str(run_dir)]
    for c in ctx.options.get("compare") or []:
        dirs += [Path(a["dir"]) for a in find_run(Path(c))[1]]
    others, skipped = {}, []
    for d in dict.fromkeys(dirs):  # in order, once each
        prov_file = d / "provenance.json"
        prov = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
        if holdout_check(prov, ctx).status == "fail":
            skipped.append(f"{d}: scored on another holdout")
            continue
        try:
            _, res, _ = load_predictions(d, prov, ctx)
        except DatasetError as e:
            skipped.append(f"{d}: {e}")
            continue
        others[str(d)] = make_boxes(res, set(ids), False)
    out = {"run": run_dir.name, **box_precision(gt_doc, ids, gt, dt, others, min_score=thr, seed=ctx.seed)}
    if skipped:
        out["skipped"] = skipped
    return out


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)
