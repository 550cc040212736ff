"""Per-image and per-object properties of a `Side`: the `labels` and `pixels` report sections.

Each property is compared real vs synthetic with the score of SDMetrics' QualityReport: 1 - KS statistic
(``scipy.stats.ks_2samp``) for numbers, 1 - total variation distance for categories. 1 means the same
distribution, 0 means disjoint. Classes are matched by category *name*, never by id. Pixel statistics run
on images resized so that the long side is <= 512 px (``MAX_SIDE``), so sharpness and noise compare like
with like across resolutions; box-edge margins run at full resolution because boxes are in full-res px.
"""
from __future__ import annotations

import io
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from scipy import stats
from tqdm import tqdm

from ..errors import DatasetError
from .model import Check, Figure, ReportContext, Section, Side, Table, graded, pyplot

MAX_SIDE = 512
IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)


# ---------------------------------------------------------------- similarity scores (SDMetrics)
def _finite(x: Sequence[float | None]) -> np.ndarray:
    a = np.array([v for v in x if v is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def ks_similarity(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """1 - two-sample KS statistic; None when either side has no values."""
    a, b = _finite(a), _finite(b)
    if not len(a) or not len(b):
        return None
    return 1.0 - float(stats.ks_2samp(a, b).statistic)


def tv_similarity(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """1 - total variation distance between the category frequencies of ``a`` and ``b``."""
    if not len(a) or not len(b):
        return None
    ca, cb = Counter(a), Counter(b)
    return 1.0 - 0.5 * sum(abs(ca[k] / len(a) - cb[k] / len(b)) for k in set(ca) | set(cb))


def summary(x: Sequence[float | None]) -> dict[str, Any]:
    a = _finite(x)
    if not len(a):
        return {"n": 0, "median": None, "mean": None, "p5": None, "p95": None}
    p5, med, p95 = np.percentile(a, [5, 50, 95])
    return {"n": int(len(a)), "median": float(med), "mean": float(a.mean()), "p5": float(p5), "p95": float(p95)}


def thresholds(ctx: ReportContext) -> tuple[float, float]:
    o = ctx.options or {}
    return float(o.get("similarity_pass", 0.8)), float(o.get("similarity_warn", 0.6))


# ---------------------------------------------------------------- image access
def load_bgr(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"`{path}` cannot be read as an image; the file is missing or corrupt (restore or re-render it).")
    return img


def downscale(img: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, float]:
    """Shrink so the long side is <= max_side (INTER_AREA: averages, so noise is reduced the same way on both sides)."""
    s = min(1.0, max_side / max(img.shape[:2]))
    if s < 1.0:
        img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))), interpolation=cv2.INTER_AREA)
    return img, s


def boxes_by_image(side: Side) -> dict[int, list[tuple[str, list[float], dict]]]:
    names = {c["id"]: c["name"] for c in side.doc["categories"]}
    wanted, out = set(side.image_ids), {i: [] for i in side.image_ids}
    for a in side.doc["annotations"]:
        if a["image_id"] in wanted and a["bbox"][2] > 0 and a["bbox"][3] > 0:
            out[a["image_id"]].append((names[a["category_id"]], [float(v) for v in a["bbox"]], a))
    return out


def image_size(side: Side, im: dict) -> tuple[int, int]:
    if im.get("width") and im.get("height"):
        return int(im["width"]), int(im["height"])
    with Image.open(side.image_path(im["id"])) as pil:  # header only: cheap
        return pil.size


def _bar(side: Side, what: str, ctx: ReportContext):
    # nested under the report's own bar, which moves the cursor up: only on a terminal, where that draws, not in a log
    return tqdm(side.image_ids, desc=f"{what} ({side.name})", unit="img", leave=False,
                disable=not ctx.progress or not sys.stderr.isatty())


# ---------------------------------------------------------------- figures (matplotlib, Agg: no display needed)
REAL_C, SYN_C = "#2b6cb0", "#dd6b20"


def _panel(ax, panel: dict[str, Any]) -> None:
    """One property: overlaid density histograms (or grouped bars for categories) with its similarity."""
    sim = panel.get("similarity")
    ax.set_title(panel["name"] + (f"  ·  {sim:.2f}" if sim is not None else ""), fontsize=9)
    if panel["kind"] == "bar":
        cats = sorted(set(panel["real"]) | set(panel["synthetic"]))
        x = np.arange(len(cats))
        for off, key, c in ((-0.2, "real", REAL_C), (0.2, "synthetic", SYN_C)):
            n = max(1, len(panel[key]))
            ax.bar(x + off, [panel[key].count(k) / n for k in cats], 0.4, color=c, label=key)
        ax.set_xticks(x, cats, rotation=45 if len(cats) > 4 else 0, fontsize=7, ha="right" if len(cats) > 4 else "center")
        return
    a, b = _finite(panel["real"]), _finite(panel["synthetic"])
    if panel.get("log"):  # heavy-tailed values (sharpness, noise, areas): histogram of log10
        a, b = np.log10(np.maximum(a, 1e-9)), np.log10(np.maximum(b, 1e-9))
        ax.set_xlabel("log10", fontsize=7)
    both = np.concatenate([a, b])
    if not len(both):
        return
    if panel["kind"] == "discrete":
        bins = np.arange(both.min() - 0.5, both.max() + 1.5)
    else:
        lo, hi = np.percentile(both, [1, 99])
        lo, hi = (lo - 0.5, hi + 0.5) if hi <= lo else (lo, hi)
        bins = np.linspace(lo, hi, 25)
    for v, key, c in ((a, "real", REAL_C), (b, "synthetic", SYN_C)):
        if len(v):
            ax.hist(np.clip(v, bins[0], bins[-1]), bins, density=True, color=c, alpha=0.35, label=key)
            ax.hist(np.clip(v, bins[0], bins[-1]), bins, density=True, color=c, histtype="step", lw=1.4)


def small_multiples(path: Path, panels: list[dict[str, Any]], cols: int = 4) -> str:
    plt = pyplot()
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        _panel(ax, panel)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
        ax.spines[["top", "right", "left"]].set_visible(False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if panels:
        axes.flat[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"figures/{path.name}"


def heatmaps(path: Path, real: tuple[list, list], syn: tuple[list, list], bins: int = 20) -> str:
    """2D histograms of normalized box centres, real and synthetic side by side on one colour scale."""
    plt = pyplot()
    hists = [np.histogram2d(cy, cx, bins=bins, range=[[0, 1], [0, 1]])[0] for cx, cy in (real, syn)]
    hists = [h / max(h.sum(), 1) for h in hists]
    vmax = max(float(h.max()) for h in hists) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.9))
    for ax, h, name, (cx, _) in zip(axes, hists, ("real", "synthetic"), (real, syn)):
        im = ax.imshow(h, extent=(0, 1, 1, 0), vmin=0, vmax=vmax, cmap="viridis", interpolation="nearest")
        ax.set_title(f"{name}: {len(cx)} box centres", fontsize=10)
        ax.set_xlabel("x / W", fontsize=8), ax.set_ylabel("y / H", fontsize=8), ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=axes, shrink=0.85, label="share of boxes")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f"figures/{path.name}"


# ---------------------------------------------------------------- label properties
LABEL_PROPS = [  # (key, name, log-scale histogram)
    ("objects_per_image", "objects per image", False), ("w_rel", "box width / image width", False),
    ("h_rel", "box height / image height", False), ("area_rel", "box area / image area", True),
    ("aspect", "box aspect w/h", True), ("cx", "box centre x / W", False), ("cy", "box centre y / H", False),
    ("visible_fraction", "visible fraction", False),
]


def label_values(side: Side) -> dict[str, list]:
    """Per-object lists (class, sizes relative to the image, centres, visibility) and objects per image."""
    v: dict[str, list] = {k: [] for k, _, _ in LABEL_PROPS} | {"class": []}
    images = side.images_by_id
    for image_id, boxes in boxes_by_image(side).items():
        W, H = image_size(side, images[image_id])
        v["objects_per_image"].append(len(boxes))
        for name, (x, y, w, h), ann in boxes:
            v["class"].append(name)
            v["w_rel"].append(w / W), v["h_rel"].append(h / H), v["area_rel"].append(w * h / (W * H))
            v["aspect"].append(w / h), v["cx"].append((x + w / 2) / W), v["cy"].append((y + h / 2) / H)
            if "visible_fraction" in ann:
                v["visible_fraction"].append(float(ann["visible_fraction"]))
    return v


def box_margin(gray: np.ndarray, box: Sequence[float], pad_frac: float = 0.15, min_pad: int = 3) -> dict[str, float] | None:
    """Signed margin in px between each side of ``box`` and the object's outermost strong edge near it.

    Method: crop the box enlarged by ``pad`` = max(3 px, 15% of its long side); take the Sobel gradient
    magnitude and keep the strong edges (>= 25% of the crop's maximum, so the rule does not depend on
    exposure). For each side, look at a band of +-pad around it, across the box's own span, and find the
    outermost line (column for left/right, row for top/bottom) holding >= max(2, 10% of the span) strong
    pixels. The margin is the distance from the box side to the inner boundary of that line, positive
    *inward* (a loose box has positive margins, a box that cuts into its object negative ones). A 3x3
    gradient straddles a step over two pixels; the inner boundary makes a pixel-exact box read 0 px.
    Returns None when the crop is too small or flat. Compare real vs synthetic: a systematic offset of a
    pixel or two is a labelling convention difference that costs AP at high IoU thresholds.
    """
    x, y, w, h = box
    pad = max(min_pad, int(round(pad_frac * max(w, h))))
    X0, Y0 = max(0, int(np.floor(x)) - pad), max(0, int(np.floor(y)) - pad)
    X1, Y1 = min(gray.shape[1], int(np.ceil(x + w)) + pad), min(gray.shape[0], int(np.ceil(y + h)) + pad)
    crop = gray[Y0:Y1, X0:X1].astype(np.float32)
    if crop.shape[0] < 6 or crop.shape[1] < 6:
        return None
    mag = cv2.magnitude(cv2.Sobel(crop, cv2.CV_32F, 1, 0), cv2.Sobel(crop, cv2.CV_32F, 0, 1))
    if mag.max() < 1e-3:
        return None
    strong = mag >= 0.25 * mag.max()
    bx0, by0, bx1, by1 = x - X0, y - Y0, x + w - X0, y + h - Y0
    rows = slice(max(0, int(by0)), min(strong.shape[0], int(np.ceil(by1))))
    cols = slice(max(0, int(bx0)), min(strong.shape[1], int(np.ceil(bx1))))
    def band(pos: float, outward: int, span: float) -> range:
        """Line indices from ``pad`` outside the side to at most half the box inside it (never the far side)."""
        inside = max(1, min(pad, int(span / 2)))
        return range(max(0, int(round(pos)) - pad), int(round(pos)) + inside) if outward < 0 else \
            range(int(round(pos)) - inside, int(round(pos)) + pad + 1)

    col_hits, row_hits = strong[rows].sum(0), strong[:, cols].sum(1)
    out: dict[str, float] = {}
    for name, hits, pos, outward, span, across in (
        ("left", col_hits, bx0, -1, w, rows), ("right", col_hits, bx1, 1, w, rows),
        ("top", row_hits, by0, -1, h, cols), ("bottom", row_hits, by1, 1, h, cols),
    ):
        need = max(2.0, 0.1 * (across.stop - across.start))
        idx = [i for i in band(pos, outward, span) if 0 <= i < len(hits) and hits[i] >= need]
        if idx:
            # inner boundary of the outermost strong line: index+1 on the left/top, index on the right/bottom
            edge = idx[0] + 1 if outward < 0 else idx[-1]
            out[name] = float(edge - pos) * -outward
    return out or None


def edge_margins(side: Side, ctx: ReportContext, side_px: float | None = None) -> list[dict[str, float]]:
    """:func:`box_margin` of every box with measurable edges. ``side_px``: each image resized first, with its boxes, to
    that shorter side, so that the margins are px at that size (``simgen fit`` compares photos with renders of another
    size: the measure has a part constant in px, a 3x3 gradient and the band's rounding, which only cancels between two
    sets measured at one size)."""
    per_image, found = boxes_by_image(side), []
    for image_id in _bar(side, "box edges", ctx):
        if not per_image[image_id]:
            continue
        gray = cv2.cvtColor(load_bgr(side.image_path(image_id)), cv2.COLOR_BGR2GRAY)
        H, W = gray.shape
        fx = fy = 1.0
        if side_px and round(side_px) != min(W, H):
            f = side_px / min(W, H)
            size = (max(1, round(W * f)), max(1, round(H * f)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
            fx, fy = size[0] / W, size[1] / H
        found += [m for _, (x, y, w, h), _ in per_image[image_id]
                  if (m := box_margin(gray, [x * fx, y * fy, w * fx, h * fy] if fx != 1.0 or fy != 1.0 else [x, y, w, h])) is not None]
    return found


MARGIN_CHECK = "box tightness (label convention) |Δ margin| px"


def _margin_check(real: list[dict], syn: list[dict], warn_px: float) -> tuple[Check, dict[str, Any]]:
    """Compare box tightness. Per box: the median of its sides; per side of the comparison: a 20%-trimmed mean,
    because neighbouring or occluding objects put foreign edges into some bands and would drag a plain mean."""
    per_box = lambda ms: [float(np.median(list(m.values()))) for m in ms]  # noqa: E731
    tmean = lambda ms: float(stats.trim_mean(per_box(ms), 0.2)) if ms else None  # noqa: E731
    r, s = tmean(real), tmean(syn)
    per_side = {k: {"real": summary([m.get(k) for m in real])["mean"], "synthetic": summary([m.get(k) for m in syn])["mean"]}
                for k in ("left", "right", "top", "bottom")}
    data = {"real_trimmed_mean_px": r, "synthetic_trimmed_mean_px": s, "real_median_px": summary(per_box(real))["median"],
            "synthetic_median_px": summary(per_box(syn))["median"], "per_side": per_side, "method": "Sobel, >= 25% of crop max; see box_margin", "n_boxes": {"real": len(real), "synthetic": len(syn)}}
    if r is None or s is None:
        return Check(MARGIN_CHECK, None, "info", "", "no measurable box edges on one side"), data
    diff = s - r
    status = "pass" if abs(diff) <= warn_px else "warn"
    if status == "pass":
        advice = "same convention."
    elif diff < 0:  # the real boxes are the looser ones: annotators' padding, which the renderer can draw
        advice = (f"real boxes sit {-diff:.1f} px looser: a detector trained on these draws real objects too small, which costs AP at "
                  "high IoU; render with labels.box_pad_px (simgen fit writes it; with fit.run=<a run trained on synthetic only> "
                  "from the boxes that detector draws on the real photos, docs/fit.md).")
    else:
        advice = "a systematic offset like this costs AP at high IoU: match the box convention (tight vs padded, amodal vs visible)."
    detail = f"trimmed-mean signed box-to-edge margin real {r:+.2f} px, synthetic {s:+.2f} px (positive = loose box); " + advice
    return Check(MARGIN_CHECK, abs(diff), status, f"pass <= {warn_px:g} px, else warn", detail), data


def _per_class(rv: dict, sv: dict) -> list[tuple[str, float | None, float | None, float | None]]:
    rows = []
    for name in sorted(set(rv["class"]) & set(sv["class"])):
        ra = [a for c, a in zip(rv["class"], rv["area_rel"]) if c == name]
        sa = [a for c, a in zip(sv["class"], sv["area_rel"]) if c == name]
        rows.append((name, summary(ra)["median"], summary(sa)["median"], ks_similarity(ra, sa)))
    return rows


def _most_different(scores: dict[str, float | None], k: int = 3) -> str:
    worst = sorted(((v, n) for n, v in scores.items() if v is not None))[:k]
    return ", ".join(f"{n} ({v:.2f})" for v, n in worst)


def label_section(ctx: ReportContext) -> Section:
    p, w = thresholds(ctx)
    rv, sv = label_values(ctx.real), label_values(ctx.synthetic)
    scores: dict[str, float | None] = {"class balance": tv_similarity(rv["class"], sv["class"])}
    panels: list[dict[str, Any]] = [{"name": "class balance", "kind": "bar", "real": rv["class"], "synthetic": sv["class"]}]
    for key, name, log in LABEL_PROPS:
        if key == "visible_fraction" and not (rv[key] and sv[key]):
            continue  # real photos usually lack it; reported under data, not scored
        scores[name] = ks_similarity(rv[key], sv[key])
        panels.append({"name": name, "kind": "discrete" if key == "objects_per_image" else "hist", "log": log,
                       "real": rv[key], "synthetic": sv[key]})
    per_class = _per_class(rv, sv)
    cls_sims = [s for *_, s in per_class if s is not None]
    scores["per-class box area"] = float(np.mean(cls_sims)) if cls_sims else None
    for panel in panels:
        panel["similarity"] = scores.get(panel["name"])
    overall = float(np.mean([v for v in scores.values() if v is not None])) if any(v is not None for v in scores.values()) else None

    checks = [graded("label score (mean similarity)", overall, p, w, detail="mean of the property similarities below (SDMetrics QualityReport style)")]
    checks += [graded(n, v, p, w, detail="1 - total variation distance" if n == "class balance" else "1 - KS statistic") for n, v in scores.items()]
    margin_check, margin_data = _margin_check(edge_margins(ctx.real, ctx), edge_margins(ctx.synthetic, ctx),
                                              float((ctx.options or {}).get("margin_warn_px", 1.5)))
    checks.append(margin_check)

    figs = [Figure(small_multiples(ctx.figures / "labels.png", panels), "Label properties, density-normalized: real (blue) vs synthetic (orange)."),
            Figure(heatmaps(ctx.figures / "box_centres.png", (rv["cx"], rv["cy"]), (sv["cx"], sv["cy"])), "Where box centres fall in the image (normalized coordinates)."),]
    key_of = {n: k for k, n, _ in LABEL_PROPS}
    status = {c.name: c.status for c in checks}
    rows = [(n, _med(rv, key_of.get(n)), _med(sv, key_of.get(n)), _r(v), status[n]) for n, v in scores.items()]
    tables = [Table("Label properties", ("property", "real median", "synthetic median", "similarity", "status"), tuple(rows)),
              Table("Per-class box area / image area", ("class", "real median", "synthetic median", "similarity"),
                    tuple((c, _r(a, 5), _r(b, 5), _r(s)) for c, a, b, s in per_class))]
    only = {"real only": sorted(set(rv["class"]) - set(sv["class"])), "synthetic only": sorted(set(sv["class"]) - set(rv["class"]))}
    if set(rv["class"]):
        # A real class the synthetic set never shows can never be detected by a model trained on it, whatever the other
        # similarities say: a report that passed with one missing said nothing of it but in this section's text
        covered = 1.0 - len(only["real only"]) / len(set(rv["class"]))
        near = {r: s_ for r in only["real only"] for s_ in only["synthetic only"] if r.casefold() == s_.casefold()}
        detail = ("real classes the synthetic set never shows: " + ", ".join(only["real only"])
                  + (f" (only their spelling differs from {', '.join(near[r] for r in near)}: rename one side, or train with "
                     "data.category_map)" if near else "; add them to the scene, or leave them out of the real set")
                  if only["real only"] else "every real class is in the synthetic set")
        checks.append(Check("real classes in the synthetic set", round(covered, 3), "pass" if covered == 1.0 else "warn",
                            "pass = 1.0 (every real class), else warn", detail))
    text = (f"Label score {overall:.2f} (mean of {sum(v is not None for v in scores.values())} property similarities). "
            f"Most different: {_most_different(scores)}." if overall is not None else "No boxes to compare.")
    if only["real only"] or only["synthetic only"]:
        text += f" Classes on one side only: {only}."
    data = {"thresholds": {"similarity_pass": p, "similarity_warn": w}, "label_score": overall, "similarity": scores,
            "classes": {"real": dict(Counter(rv["class"])), "synthetic": dict(Counter(sv["class"])), **only},
            "per_class_area": [{"class": c, "real_median": a, "synthetic_median": b, "similarity": s} for c, a, b, s in per_class],
            "box_margin": margin_data,
            "properties": {k: {"real": summary(rv[k]), "synthetic": summary(sv[k])} for k, _, _ in LABEL_PROPS},
            "values": {"real": rv, "synthetic": sv}}
    return Section("labels", "Labels: classes, counts, box geometry", text, tuple(checks), tuple(figs), tuple(tables), data)


def _med(v: dict, key: str | None) -> float | None:
    return _r(summary(v[key])["median"], 4) if key else None


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


# ---------------------------------------------------------------- pixel properties
def colour_stats(bgr: np.ndarray) -> dict[str, float]:
    """Brightness (mean L*), contrast (std L*), Lab a/b means, colourfulness (Hasler & Süsstrunk 2003),
    sharpness (variance of the Laplacian) and noise sigma (Immerkaer 1996) of one uint8 BGR image or crop."""
    lab = cv2.cvtColor(bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)  # L in 0..100
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return {"brightness": float(lab[..., 0].mean()), "contrast": float(lab[..., 0].std()),
            "colourfulness": float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())),
            "lab_a": float(lab[..., 1].mean()), "lab_b": float(lab[..., 2].mean()),
            "sharpness": float(cv2.Laplacian(gray, cv2.CV_64F).var()), "noise_sigma": noise_sigma(gray)}


def noise_sigma(gray: np.ndarray) -> float:
    """Immerkaer's fast noise estimate: the 3x3 mask cancels image structure up to second order."""
    h, w = gray.shape
    conv = cv2.filter2D(gray.astype(np.float64), -1, IMMERKAER)[1:-1, 1:-1]  # interior only: no border padding
    return float(np.sqrt(np.pi / 2) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))


def spectrum_slope(gray: np.ndarray) -> float:
    """Slope of log radial power vs log spatial frequency (natural images ~ -2; renders are often steeper)."""
    g = gray.astype(np.float64) - gray.mean()
    h, w = g.shape
    power = np.abs(np.fft.fftshift(np.fft.fft2(g * np.outer(np.hanning(h), np.hanning(w))))) ** 2
    yy, xx = np.indices(power.shape)
    r = np.hypot(yy - h // 2, xx - w // 2).astype(int).ravel()
    radial = np.bincount(r, power.ravel()) / np.maximum(np.bincount(r), 1)
    k = np.arange(1, min(h, w) // 2)
    return float(np.polyfit(np.log(k), np.log(radial[k] + 1e-12), 1)[0])


@lru_cache(maxsize=1)
def _ijg_luma_tables() -> np.ndarray:
    """Luminance tables libjpeg writes for quality 1..100 (read back through PIL, so the order matches)."""
    tables, img = [], Image.new("L", (8, 8))
    for q in range(1, 101):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        tables.append(list(Image.open(buf).quantization[0]))
    return np.array(tables, np.float64)


def jpeg_quality(im: Image.Image) -> float | None:
    """IJG-equivalent JPEG quality of an opened image: the quality whose standard luma table is closest to
    the file's; None when it is not a JPEG."""
    q = getattr(im, "quantization", None)
    if im.format != "JPEG" or not q:
        return None
    luma = np.array(list(q[min(q)]), np.float64)
    return float(np.argmin(np.abs(_ijg_luma_tables() - luma).mean(axis=1)) + 1)


def file_info(path: Path) -> tuple[str, float | None]:
    """(format, IJG-equivalent JPEG quality or None)."""
    with Image.open(path) as im:
        return im.format or "?", jpeg_quality(im)


HIST_BINS = 4  # colour histogram for the `stats` feature vector: 4 bins per RGB channel (marginals)


def image_statistics(path: Path) -> dict[str, Any]:
    """Every per-image statistic of one file, measured on the image shrunk to ``MAX_SIDE``: the pixels
    section and the `stats` feature vector (features.py) both read it, so a report measures each image
    once. Cached per file version (path, mtime, size)."""
    st = Path(path).stat()
    return _image_statistics(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=65536)
def _image_statistics(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    full = load_bgr(Path(path))
    small, scale = downscale(full)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    fmt, q = file_info(Path(path))
    hist = [np.histogram(small[..., c], bins=HIST_BINS, range=(0, 256))[0] / gray.size for c in (2, 1, 0)]  # r, g, b
    return {**colour_stats(small), "format": fmt, "jpeg_quality": q, "scale": scale, "spectrum_slope": spectrum_slope(gray),
            "megapixels": full.shape[0] * full.shape[1] / 1e6, "aspect": full.shape[1] / full.shape[0],
            "size": f"{full.shape[1]}x{full.shape[0]}", "edge_density": float(cv2.Canny(gray, 100, 200).mean() / 255.0),
            "saturation": float(cv2.cvtColor(small, cv2.COLOR_BGR2HSV)[..., 1].mean() / 255.0),
            "hist": np.concatenate(hist).tolist()}


IMAGE_PROPS = [("brightness", "brightness (L*)", False), ("contrast", "contrast (std L*)", False),
               ("colourfulness", "colourfulness", False), ("lab_a", "Lab a* mean", False), ("lab_b", "Lab b* mean", False),
               ("sharpness", "sharpness (Laplacian var)", True), ("noise_sigma", "noise sigma", True),
               ("spectrum_slope", "power spectrum slope", False), ("jpeg_quality", "JPEG quality", False),
               ("megapixels", "image megapixels", False), ("aspect", "image aspect W/H", False)]
OBJECT_PROPS = IMAGE_PROPS[:7]


def pixel_values(side: Side, ctx: ReportContext) -> dict[str, dict[str, list]]:
    """One pass over the images: per-image statistics (resized) and per-object crop statistics."""
    img: dict[str, list] = {k: [] for k, _, _ in IMAGE_PROPS} | {"format": [], "scale": [], "size": []}
    obj: dict[str, list] = {k: [] for k, _, _ in OBJECT_PROPS}
    per_image = boxes_by_image(side)
    for image_id in _bar(side, "pixel stats", ctx):
        path = side.image_path(image_id)
        stat = image_statistics(path)
        for k in img:
            img[k].append(stat[k])
        if not per_image[image_id]:
            continue
        small, s = downscale(load_bgr(path))
        for _, (x, y, w, h), _ in per_image[image_id]:
            crop = small[int(y * s):int(np.ceil((y + h) * s)), int(x * s):int(np.ceil((x + w) * s))]
            if min(crop.shape[:2]) >= 4:  # smaller crops give no meaningful texture statistics
                for k, v in colour_stats(crop).items():
                    obj[k].append(v)
    return {"image": img, "object": obj}


def pixel_section(ctx: ReportContext) -> Section:
    p, w = thresholds(ctx)
    rv, sv = pixel_values(ctx.real, ctx), pixel_values(ctx.synthetic, ctx)
    scores: dict[str, float | None] = {"file format": tv_similarity(rv["image"]["format"], sv["image"]["format"])}
    rows, panels = [], {"image": [], "object": []}
    for level, props in (("image", IMAGE_PROPS), ("object", OBJECT_PROPS)):
        for key, name, log in props:
            label = name if level == "image" else f"object {name}"
            a, b = rv[level][key], sv[level][key]
            scores[label] = ks_similarity(a, b)
            rows.append((label, _r(summary(a)["median"], 4), _r(summary(b)["median"], 4), _r(scores[label])))
            if len(_finite(a)) or len(_finite(b)):
                panels[level].append({"name": name, "kind": "hist", "log": log, "real": a, "synthetic": b, "similarity": scores[label]})
    scored = [v for v in scores.values() if v is not None]
    overall = float(np.mean(scored)) if scored else None
    checks = [graded("pixel score (mean similarity)", overall, p, w, detail="mean of the image and object-crop similarities below")]
    for n, v in scores.items():
        detail = "1 - total variation distance" if n == "file format" else "1 - KS statistic"
        if v is None and "JPEG" in n:
            detail = "no JPEG on one side (PNG has no quantisation tables); compare file formats"
        checks.append(graded(n, v, p, w, detail=detail))
    status = {c.name: c.status for c in checks}
    fmt_row = ("file format", dict(Counter(rv["image"]["format"])), dict(Counter(sv["image"]["format"])), _r(scores["file format"]))
    rows = [(*r, status[r[0]]) for r in (fmt_row, *rows)]
    figs = (Figure(small_multiples(ctx.figures / "pixels_image.png", panels["image"]),
                   f"Per-image statistics (long side resized to <= {MAX_SIDE} px): real (blue) vs synthetic (orange)."),
            Figure(small_multiples(ctx.figures / "pixels_object.png", panels["object"]),
                   "Per-object crop statistics: what the detector sees inside the boxes."))
    # Size and format are stated apart: they differ whenever a render's width/height differ from the camera's,
    # and would otherwise crowd the appearance properties out of the sentence.
    apart = ("file format", "image megapixels", "image aspect W/H")
    text = (f"Pixel score {overall:.2f} (mean of {len(scored)} similarities). Most different in appearance: "
            f"{_most_different({k: v for k, v in scores.items() if k not in apart})}." if overall is not None else "No images to compare.")
    sizes = [Counter(v["image"]["size"]).most_common(1)[0][0] for v in (rv, sv) if v["image"]["size"]]
    if len(sizes) == 2 and sizes[0] != sizes[1]:
        text += f" Image sizes differ: real mostly {sizes[0]}, synthetic mostly {sizes[1]}."
    data = {"thresholds": {"similarity_pass": p, "similarity_warn": w}, "pixel_score": overall, "resized_long_side_max": MAX_SIDE,
            "similarity": scores,
            "properties": {lv: {k: {"real": summary(rv[lv][k]), "synthetic": summary(sv[lv][k])} for k, _, _ in props}
                           for lv, props in (("image", IMAGE_PROPS), ("object", OBJECT_PROPS))},
            "values": {"real": rv, "synthetic": sv}}
    return Section("pixels", "Pixels: brightness, colour, sharpness, noise, compression", text, tuple(checks), figs,
                   (Table("Pixel properties", ("property", "real median", "synthetic median", "similarity", "status"), tuple(rows)),), data)
