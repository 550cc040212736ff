"""YOLO (Ultralytics) labels from a COCO document: ``labels/<stem>.txt`` beside ``images/<stem>.<ext>`` and a
``data.yaml``. COCO stays the format simgen renders, resumes, shards and merges; YOLO is a view written from a
finished ``annotations.json``, either in place (``simgen render writer=yolo``: the same images, no copies) or into
a folder of its own (``simgen export``, see simgen/export.py).

Conventions (Ultralytics' detection format): one line per object, ``class cx cy w h`` normalized to [0, 1] by the
image size; class ids 0-based in category-id order; crowd annotations (``iscrowd: 1``) are left out, since YOLO has
no such notion. With ``segments``, ``class x1 y1 x2 y2 ...``: the outline of the visible mask."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from pycocotools import mask as mask_utils

from ..errors import DatasetError
from ..provenance import sha256_file
from .coco import atomic_write

LABELS = "labels"
DATA_YAML = "data.yaml"
LISTS = ("train.txt", "val.txt")


@dataclass(frozen=True)
class YoloOptions:
    segments: bool = False  # polygons (the visible mask's outline) instead of boxes
    val_fraction: float = 0.0  # share of images in val.txt, evenly spaced by id; 0: val = train = every image


@dataclass(frozen=True)
class YoloLabels:
    """Everything a YOLO folder holds besides the images: label texts by path, list files, class names."""

    texts: dict[str, str]  # "labels/<stem>.txt" -> file content
    lists: dict[str, list[str]]  # "train.txt"/"val.txt" -> image paths ("./images/..."); empty: no split
    names: list[str]  # class id -> category name
    n_objects: int


# ------------------------------------------------------------------ one annotation -> one line
def class_ids(doc: dict) -> tuple[dict[int, int], list[str]]:
    """COCO category id -> 0-based YOLO class, in category-id order (simgen's ids are 1..N in config order)."""
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    return {c["id"]: k for k, c in enumerate(cats)}, [str(c["name"]) for c in cats]


def clipped_box(bbox: list[float], w: int, h: int) -> tuple[float, float, float, float] | None:
    """COCO xywh clipped to the image as xyxy; None when nothing is left (Ultralytics refuses coordinates outside [0, 1])."""
    x0, y0 = max(0.0, float(bbox[0])), max(0.0, float(bbox[1]))
    x1, y1 = min(float(w), float(bbox[0]) + float(bbox[2])), min(float(h), float(bbox[1]) + float(bbox[3]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def box_line(cls: int, box: tuple[float, float, float, float], w: int, h: int) -> str:
    x0, y0, x1, y1 = box
    return f"{cls} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"


def join_outlines(polys: list[np.ndarray]) -> np.ndarray:
    """One polygon from several (an object cut in pieces by an occluder): each outline is spliced into the joined one at
    their closest points, going out and back along the same zero-width bridge (Ultralytics' own COCO converter does
    the same), so the filled polygon covers every piece. YOLO allows one polygon per object."""
    polys = sorted(polys, key=lambda p: -abs(cv2.contourArea(p.astype(np.float32))))
    out = polys[0]
    for p in polys[1:]:
        d = ((out[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        out = np.concatenate([out[:i + 1], np.roll(p, -j, axis=0), p[j:j + 1], out[i:]])
    return out


def outline(seg: object, w: int, h: int) -> np.ndarray | None:
    """The object's outline in pixel coordinates (N x 2) from a COCO segmentation (RLE or polygons); None if empty.

    Masks are traced through the centres of their boundary pixels (outer outlines only: holes, like a mug's handle,
    are filled), so a polygon's box is up to a pixel smaller than the mask's tight box."""
    if isinstance(seg, list):
        polys = [np.asarray(p, np.float64).reshape(-1, 2) for p in seg if len(p) >= 6]
    elif isinstance(seg, dict):
        rle = seg if isinstance(seg.get("counts"), (str, bytes)) else mask_utils.frPyObjects(seg, h, w)
        m = mask_utils.decode(rle)
        contours, _ = cv2.findContours(np.ascontiguousarray(m), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polys = [c[:, 0, :].astype(np.float64) + 0.5 for c in contours if len(c) >= 3]  # +0.5: pixel centres
    else:
        polys = []
    return join_outlines(polys) if polys else None


def segment_line(cls: int, ann: dict, box: tuple[float, float, float, float], w: int, h: int) -> str:
    """A polygon line; the box's four corners when the mask gives no polygon (missing, or a sliver one pixel wide), since
    a file must be all polygons or all boxes: Ultralytics reads a 4-number line among polygons as two points."""
    poly = outline(ann.get("segmentation"), w, h)
    if poly is None:
        x0, y0, x1, y1 = box
        poly = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    poly = np.clip(poly / [w, h], 0.0, 1.0)
    return f"{cls} " + " ".join(f"{v:.6f}" for v in poly.ravel())


def label_text(anns: list[dict], classes: dict[int, int], w: int, h: int, segments: bool) -> str:
    lines = []
    for a in anns:
        box = clipped_box(a["bbox"], w, h)
        if a.get("iscrowd", 0) or box is None:
            continue
        cls = classes[a["category_id"]]
        lines.append(segment_line(cls, a, box, w, h) if segments else box_line(cls, box, w, h))
    return "".join(line + "\n" for line in lines)


# ------------------------------------------------------------------ a whole document
def label_path(image_rel: str) -> str:
    """Where Ultralytics looks for an image's labels: the last ``images/`` of its path becomes ``labels/``, suffix .txt."""
    head, sep, rest = image_rel.rpartition("images/")
    if not sep or (head and not head.endswith("/")):
        raise DatasetError(f"image path `{image_rel}` is not under an images/ folder, where YOLO tools look for it; "
                           "export the dataset with `simgen export <dataset> format=yolo out=<dir>`.")
    return f"{head}{LABELS}/{Path(rest).with_suffix('.txt').as_posix()}"


def split(image_rels: list[str], val_fraction: float) -> dict[str, list[str]]:
    """train.txt / val.txt: round(n * val_fraction) images (at least one, never all) evenly spaced through the id order,
    the rest for training. No random draw: the split is a function of the ids alone. Empty when val_fraction is 0."""
    n = len(image_rels)
    if val_fraction <= 0 or n < 2:
        return {}
    m = min(n - 1, max(1, round(n * val_fraction)))
    val = {int((j + 0.5) * n / m) for j in range(m)}
    lists = {"train.txt": [r for k, r in enumerate(image_rels) if k not in val], "val.txt": [image_rels[k] for k in sorted(val)]}
    return {name: [f"./{r}" for r in rels] for name, rels in lists.items()}


def yolo_labels(doc: dict, image_rels: dict[int, str], opts: YoloOptions) -> YoloLabels:
    """Label texts of every image (an empty file for an image without objects: a background image, said explicitly)."""
    classes, names = class_ids(doc)
    by_image: dict[int, list[dict]] = {im["id"]: [] for im in doc["images"]}
    for a in doc["annotations"]:
        by_image[a["image_id"]].append(a)
    images = sorted(doc["images"], key=lambda im: im["id"])
    texts = {label_path(image_rels[im["id"]]): label_text(by_image[im["id"]], classes, int(im["width"]), int(im["height"]), opts.segments)
             for im in images}
    return YoloLabels(texts=texts, lists=split([image_rels[im["id"]] for im in images], opts.val_fraction), names=names,
                      n_objects=sum(t.count("\n") for t in texts.values()))


def data_yaml(root: Path, labels: YoloLabels, source: str) -> str:
    """Ultralytics' dataset file. ``path`` is absolute because Ultralytics resolves a relative one against the current
    directory (or its datasets_dir), not against this file: edit it after moving the folder."""
    train, val = ("train.txt", "val.txt") if labels.lists else ("images", "images")
    body = {"path": str(root.resolve()), "train": train, "val": val, "nc": len(labels.names),
            "names": dict(enumerate(labels.names))}
    head = (f"# Ultralytics dataset written by simgen from {source}.\n"
            f"# `path` is absolute: edit it if you move this folder. val = train when no val_fraction was given.\n")
    return head + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def write_texts(root: Path, labels: YoloLabels) -> None:
    """Label files (under ``root``) and list files; plain writes, since callers build ``root`` as a temporary folder."""
    for rel, text in labels.texts.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


# ------------------------------------------------------------------ in place, after a render
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(parent: Path, prefix: str) -> None:
    """Remove ``<prefix><pid>`` folders left by killed runs (their pid is gone); a live run's folder is left alone."""
    for p in parent.glob(f"{prefix}*"):
        tail = p.name[len(prefix):]
        if p.is_dir() and tail.isdigit() and not pid_alive(int(tail)):
            shutil.rmtree(p, ignore_errors=True)


def add_yolo_view(root: Path, doc: dict, opts: YoloOptions) -> Path:
    """Write ``labels/``, list files and ``data.yaml`` into a finished COCO folder, beside its own images.

    data.yaml goes last and is removed first: a folder with data.yaml has whole labels. The new labels are built in a
    temporary folder and swapped in by rename. Temporary names do not end in .tmp: a resumed render deletes those as
    files."""
    remove_stale(root, ".labels-new.")
    remove_stale(root, ".labels-old.")
    labels = yolo_labels(doc, {im["id"]: im["file_name"] for im in doc["images"]}, opts)
    if any(not rel.startswith(f"{LABELS}/") for rel in labels.texts):
        raise DatasetError(f"{root}: some images are not in its images/ folder; write a YOLO copy with "
                           f"`simgen export {root} format=yolo out=<dir>` instead.")
    new, old = root / f".labels-new.{os.getpid()}", root / f".labels-old.{os.getpid()}"
    shutil.rmtree(new, ignore_errors=True)
    write_texts(new, labels)  # new/labels/<stem>.txt: simgen's images are all images/<stem>.<ext>
    (new / LABELS).mkdir(parents=True, exist_ok=True)  # a dataset without images still gets an (empty) labels/
    (root / DATA_YAML).unlink(missing_ok=True)
    for name in LISTS:
        (root / name).unlink(missing_ok=True)
    if (root / LABELS).exists():
        os.replace(root / LABELS, old)
    os.replace(new / LABELS, root / LABELS)
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    for name, rels in labels.lists.items():
        atomic_write(root / name, "".join(r + "\n" for r in rels).encode())
    source = f"{root.resolve() / 'annotations.json'} (sha256 {sha256_file(root / 'annotations.json')[:16]})"
    atomic_write(root / DATA_YAML, data_yaml(root, labels, source).encode())
    return root / DATA_YAML


def render_yolo(cfg, opts: YoloOptions, log=print) -> Path:
    """``simgen render writer=yolo``: the COCO render (resumable, as always), then its YOLO view in the same folder,
    rebuilt from annotations.json every time (cheap), so a run killed after the render finishes it on the rerun."""
    import json

    from ..run import out_lock, render_dataset

    out = render_dataset(cfg, log)
    with out_lock(out):  # never alongside another run on this folder
        path = add_yolo_view(out, json.loads((out / "annotations.json").read_text()), opts)
    log(f"{path}: Ultralytics view of the same images (labels/, {DATA_YAML})")
    return out
