"""The data-size curve of `simgen utility`: how real-holdout accuracy grows with the number of synthetic images.

Subsets are nested: one fixed permutation of all synthetic images is drawn from the top-level ``seed``
(whatever seeds the models train with), its last ``utility.synthetic_val`` images are the synthetic
validation split that no size trains on, and a run of size N trains on the first N of the rest, so 250
lies inside 500 inside 1000. Each run is also scored on the synthetic validation split: the gap between
synthetic-val and real mAP is the sim-to-real gap, and a gap that widens with more synthetic images
says the model is learning the simulator rather than the objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import CocoDataset
from ..errors import ConfigError

# A gap (synthetic-val mAP minus real mAP) that rises by more than this per doubling of the synthetic
# set (least-squares slope over log2 N) is flagged: a point of mAP per doubling is beyond the seed noise
# the dice runs showed when averaged over a few sizes, and small enough to catch a real trend.
GAP_SLOPE_WARN = 0.01


@dataclass(frozen=True)
class SyntheticSplit:
    """Which synthetic images one data-size run trains on (see the module doc)."""

    seed: int  # draws the permutation
    val: int  # the permutation's last ``val`` images: synthetic validation, never trained on
    size: int  # trains on the permutation's first ``size`` images


def permutation(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def split_indices(n: int, s: SyntheticSplit) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) into the concatenated synthetic folders of ``n`` images."""
    if s.val >= n:
        raise ConfigError(f"utility.synthetic_val={s.val} leaves no training images out of {n} synthetic ones; lower utility.synthetic_val or render more.")
    perm = permutation(n, s.seed)
    return perm[: min(s.size, n - s.val)], perm[n - s.val:]


def plan_sizes(sizes: tuple[int, ...], n: int, val: int) -> tuple[tuple[int, ...], str | None]:
    """The sizes to run, ascending and capped at the images left after the validation split, and a one-line
    note naming the capped ones (None when nothing was capped)."""
    pool = n - val
    if pool < 1:
        raise ConfigError(f"utility.synthetic_val={val} leaves no training images out of {n} synthetic ones; lower utility.synthetic_val or render more.")
    big = [s for s in sorted(set(sizes)) if s > pool]
    out = tuple(sorted({min(s, pool) for s in sizes}))
    note = (f"synthetic sizes {big} capped at {pool}: the synthetic data has {n} images and {val} are held out for synthetic validation"
            if big else None)
    return out, note


class ValSet(torch.utils.data.Dataset):
    """Synthetic validation images from several folders under fresh image ids 1..N (folders' ids collide)."""

    def __init__(self, parts: list[tuple[CocoDataset, int]]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, k: int):
        ds, i = self.parts[k]
        img, t = ds[i]
        return img, {**t, "image_id": k + 1}


def locate(datasets: list[CocoDataset], indices) -> list[tuple[CocoDataset, int]]:
    """Indices into the concatenation of ``datasets`` -> (dataset, index within it)."""
    ends = np.cumsum([len(d) for d in datasets])
    out = []
    for i in np.asarray(indices).tolist():
        j = int(np.searchsorted(ends, i, side="right"))
        out.append((datasets[j], i - (int(ends[j - 1]) if j else 0)))
    return out


def val_set(roots: tuple[Path, ...], indices, categories: list[str], name_of, transforms) -> tuple[ValSet, dict]:
    """The synthetic validation split as a dataset and its COCO ground truth over the model's categories
    (category id k+1 is ``categories[k]``, names mapped with ``name_of`` as for training)."""
    dss = [CocoDataset(r, transforms=transforms, masks=False) for r in roots]
    parts = locate(dss, indices)
    gt = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": c} for k, c in enumerate(categories)]}
    for k, (ds, i) in enumerate(parts):
        im = ds.images[i]
        gt["images"].append({"id": k + 1, "file_name": str(ds.root / im["file_name"]), "width": im["width"], "height": im["height"]})
        names = {c["id"]: c["name"] for c in ds.doc["categories"]}
        for a in ds.anns[im["id"]]:
            cid = categories.index(name_of(names[a["category_id"]])) + 1
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": k + 1, "category_id": cid, "bbox": a["bbox"],
                                      "area": a.get("area", a["bbox"][2] * a["bbox"][3]), "iscrowd": 0})
    return ValSet(parts), gt


# ---------------------------------------------------------------------------- the report


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) over seeds, rounded as the reports print them."""
    v = np.asarray(values, dtype=float)
    return round(float(v.mean()), 4), round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)


def size_summary(runs: list[dict]) -> list[dict]:
    """One row per (series, size) over seeds: mean and sample std of real and synthetic-val mAP, and their gap."""
    rows: dict[tuple[str, int], list[dict]] = {}
    for r in runs:
        rows.setdefault((r["series"], r["synthetic_size"]), []).append(r)
    out = []
    for (series, n), rs in rows.items():
        e = {"series": series, "synthetic_size": n, "seeds": [r["seed"] for r in rs]}
        for k in ("map", "map50", "synthetic_val_map", "synthetic_val_map50"):
            e[f"{k}_mean"], e[f"{k}_std"] = mean_std([r[k] for r in rs])
        e["gap"] = round(e["synthetic_val_map_mean"] - e["map_mean"], 4)
        out.append(e)
    return sorted(out, key=lambda e: (e["series"] != "TSTR", e["series"], e["synthetic_size"]))


def gap_warnings(summary: list[dict]) -> list[str]:
    """One line per series whose synthetic-val minus real gap grows with the number of synthetic images."""
    out = []
    for series in dict.fromkeys(e["series"] for e in summary):
        rows = [e for e in summary if e["series"] == series]
        if len(rows) < 2:
            continue
        x = np.log2([e["synthetic_size"] for e in rows])
        slope = float(np.polyfit(x, [e["gap"] for e in rows], 1)[0])
        if slope > GAP_SLOPE_WARN:
            out.append(f"warning: {series}: the synthetic-val minus real mAP gap grows with size ({rows[0]['gap']:+.3f} at "
                       f"{rows[0]['synthetic_size']} images, {rows[-1]['gap']:+.3f} at {rows[-1]['synthetic_size']}; {slope:+.3f} per "
                       "doubling): more images fit the simulator better but not the real photos; widen the randomization.")
    return out


def size_table(summary: list[dict]) -> str:
    def cell(e: dict, k: str) -> str:
        return f"{e[k + '_mean']:.3f}" + (f" ± {e[k + '_std']:.3f}" if len(e["seeds"]) > 1 else "")

    rows = [f"| {e['series']} | {e['synthetic_size']} | {len(e['seeds'])} | {cell(e, 'map')} | {cell(e, 'map50')} | "
            f"{cell(e, 'synthetic_val_map')} | {e['gap']:+.3f} |" for e in summary]
    return "\n".join(["| arm | synthetic images | seeds | real mAP | real AP50 | synthetic-val mAP | gap (synthetic-val − real) |",
                      "|---|---|---|---|---|---|---|", *rows])


def plot_sizes(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for series in dict.fromkeys(e["series"] for e in summary):
        rows = [e for e in summary if e["series"] == series]
        x = [e["synthetic_size"] for e in rows]
        line = ax.errorbar(x, [e["map_mean"] for e in rows], yerr=[e["map_std"] for e in rows], marker="o", capsize=3,
                           label=f"{series}: real holdout")
        ax.errorbar(x, [e["synthetic_val_map_mean"] for e in rows], yerr=[e["synthetic_val_map_std"] for e in rows], marker="s",
                    capsize=3, linestyle="--", color=line[0].get_color(), label=f"{series}: synthetic val")
    ax.set_xscale("log")
    sizes = sorted({e["synthetic_size"] for e in summary})
    ax.set_xticks(sizes, [str(n) for n in sizes])  # the sizes themselves, not powers of ten
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("synthetic training images")
    ax.set_ylabel("mAP@[.5:.95]")
    ax.set_ylim(0, max([0.05] + [max(e["map_mean"], e["synthetic_val_map_mean"]) for e in summary]) * 1.15)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    from .files import save_figure

    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
