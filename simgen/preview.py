"""Contact sheet: a grid of dataset images with masks, boxes and class names drawn on them."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .data import load_coco, safe_path
from .errors import DatasetError

PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40)], np.uint8)


def draw(img: np.ndarray, anns: list[dict], names: dict[int, str], cat_index: dict[int, int]) -> np.ndarray:
    out = img.copy()
    h, w = img.shape[:2]
    for a in anns:
        color = PALETTE[cat_index[a["category_id"]] % len(PALETTE)]
        seg = a.get("segmentation")
        if isinstance(seg, dict):
            m = mask_utils.decode(seg if isinstance(seg.get("counts"), str) else mask_utils.frPyObjects(seg, h, w)).astype(bool)
            out[m] = (0.55 * out[m] + 0.45 * color).astype(np.uint8)
    for a in anns:
        color = tuple(int(c) for c in PALETTE[cat_index[a["category_id"]] % len(PALETTE)])
        x, y, bw, bh = a["bbox"]
        cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + bw)) - 1, int(round(y + bh)) - 1), color, 2)
        label = names[a["category_id"]]
        if "visible_fraction" in a and a["visible_fraction"] < 0.995:
            label += f" {a['visible_fraction']:.0%}"
        cv2.putText(out, label, (int(x), max(12, int(y) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, label, (int(x), max(12, int(y) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return out


def contact_sheet(root: Path, out: Path | None = None, n: int = 16, cols: int = 4, tile: int = 320) -> Path:
    """Write a PNG grid of the first ``n`` images with their labels; returns its path."""
    doc = load_coco(root)
    names = {c["id"]: c["name"] for c in doc["categories"]}
    cat_index = {cid: k for k, cid in enumerate(sorted(names))}
    by_image: dict[int, list[dict]] = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = sorted(doc["images"], key=lambda im: im["id"])[:n]
    if not images:
        raise DatasetError(f"{root}: annotations.json lists no images; nothing to preview.")
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
    for k, im in enumerate(images):
        bgr = cv2.imread(str(safe_path(root, im["file_name"])), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"image `{im['file_name']}` is missing or unreadable; restore it or re-render the dataset.")
        drawn = draw(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), by_image.get(im["id"], []), names, cat_index)
        scale = tile / max(drawn.shape[:2])
        small = cv2.resize(drawn, (int(drawn.shape[1] * scale), int(drawn.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, cols)
        sheet[r * tile:r * tile + small.shape[0], c * tile:c * tile + small.shape[1]] = small
    out = out or (root / "preview.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out
