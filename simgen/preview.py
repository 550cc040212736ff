"""Contact sheet: a grid of dataset images with masks, boxes and class names drawn on them."""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .data import found_elsewhere, load_coco, safe_path
from .errors import ConfigError, DatasetError

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


# flag -> (smallest, largest or None, example): `simgen preview` and contact_sheet check their values against these
LIMITS = {"--n": (1, None, 16), "--cols": (1, 64, 4), "--size": (16, 4096, 320)}
MAX_SHEET_PIXELS = 1 << 28  # 0.8 GB as RGB: a sheet past this is a typo (--size 40000), not a preview


def limit_text(flag: str) -> str:
    """``must be an integer from 16 to 4096`` (or ``>= 1``) for one of :data:`LIMITS`."""
    lo, hi, _ = LIMITS[flag]
    return f"must be an integer from {lo} to {hi}" if hi is not None else f"must be an integer >= {lo}"


def check_value(flag: str, value: object) -> int:
    """``value`` as an int within :data:`LIMITS` for ``flag``, else a one-line :class:`ConfigError` naming the flag."""
    lo, hi, example = LIMITS[flag]
    try:
        v: int | None = int(str(value), 10)
    except ValueError:
        v = None
    if v is None or v < lo or (hi is not None and v > hi):
        raise ConfigError(f"{flag} {limit_text(flag)}, got `{value}`; e.g. {flag} {example}")
    return v


def check_out(out: Path) -> None:
    """Before any work: ``out`` must name an image file OpenCV can write (a folder or ``.txt`` made it raise at the end)."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the image file to write, e.g. --out {out / 'preview.png'}")
    if not cv2.haveImageWriter(str(out)):
        raise ConfigError(f"--out {out} must end in an image extension such as .png or .jpg; e.g. --out preview.png")


def write_image(out: Path, bgr: np.ndarray) -> None:
    """Encode, then write under a temporary name and rename: ``out`` is a whole image or untouched."""
    ok, data = cv2.imencode(out.suffix.lower(), bgr)
    if not ok:
        raise ConfigError(f"OpenCV could not encode the sheet as {out.suffix}; use --out <name>.png.")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, out)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write --out {out} ({e.strerror}); choose a path you can write to.") from None


def contact_sheet(root: Path, out: Path | None = None, n: int = 16, cols: int = 4, tile: int = 320) -> Path:
    """Write a PNG grid of the first ``n`` images with their labels; returns its path."""
    n, cols, tile = (check_value(flag, v) for flag, v in zip(LIMITS, (n, cols, tile)))
    out = out or (root / "preview.png")
    check_out(out)
    from .merge import webdataset_render

    if not (root / "annotations.json").is_file() and webdataset_render(root):
        raise DatasetError(f"{root} is a WebDataset render (writer=webdataset: tar shards, no annotations.json) and preview draws a "
                           "COCO dataset; render a few images with writer=coco (e.g. n_images=16) to see them.")
    doc = load_coco(root)
    names = {c["id"]: c["name"] for c in doc["categories"]}
    cat_index = {cid: k for k, cid in enumerate(sorted(names))}
    by_image: dict[int, list[dict]] = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = sorted(doc["images"], key=lambda im: im["id"])[:n]
    if not images:
        raise DatasetError(f"{root}: annotations.json lists no images; nothing to preview.")
    cols = min(cols, len(images))  # no empty columns when the dataset has fewer images than that
    rows = (len(images) + cols - 1) // cols
    # cells shaped as the images are (a 320x240 render in a square cell left a white band under every row); the
    # longer side is --size
    shapes = [(im.get("width"), im.get("height")) for im in images]
    shapes = [(float(w), float(h)) for w, h in shapes if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0]
    cell_w = max(1, math.ceil(tile * max((w / max(w, h) for w, h in shapes), default=1.0)))
    cell_h = max(1, math.ceil(tile * max((h / max(w, h) for w, h in shapes), default=1.0)))
    if rows * cell_h * cols * cell_w > MAX_SHEET_PIXELS:
        raise ConfigError(f"a sheet of {len(images)} images, {cols} across at --size {tile}, would be {cols * cell_w}x{rows * cell_h} pixels; "
                          "lower --n, --cols or --size.")
    sheet = np.full((rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    for k, im in enumerate(images):
        path = safe_path(root, im["file_name"])
        # checked first: OpenCV prints a warning line of its own for a file it cannot open
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if bgr is None:
            elsewhere = "" if path.is_file() else found_elsewhere(root, im["file_name"])
            raise DatasetError(f"image `{im['file_name']}` is missing or unreadable"
                               + (elsewhere or "; restore it or re-render the dataset") + ".")
        drawn = draw(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), by_image.get(im["id"], []), names, cat_index)
        scale = min(cell_w / drawn.shape[1], cell_h / drawn.shape[0])  # fits its cell (an entry's size can be wrong)
        size = (max(1, min(cell_w, int(drawn.shape[1] * scale))), max(1, min(cell_h, int(drawn.shape[0] * scale))))  # a thin image keeps a pixel
        small = cv2.resize(drawn, size, interpolation=cv2.INTER_AREA)
        r, c = divmod(k, cols)
        sheet[r * cell_h:r * cell_h + small.shape[0], c * cell_w:c * cell_w + small.shape[1]] = small
    write_image(out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out
