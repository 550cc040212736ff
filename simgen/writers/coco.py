"""COCO writer: images, optional depth and semantic PNGs, and per-image label parts that are joined
into ``annotations.json`` at the end. Every file is written under a temporary name and renamed, so a
killed run leaves either a finished file or none, and a rerun resumes from the parts on disk."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..errors import DatasetError
from ..types import Record

PARTS = Path(".simgen") / "parts"


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Write under a temporary name, then rename: readers see the whole file or none.

    A killed process cannot leave a partial file either way (the kernel keeps what was written). Only
    a machine crash can lose data that was not flushed, so per-image files skip the fsync
    (``durable=False``, a few ms per image): :func:`done_indices` re-checks them on resume and
    :func:`flush_all` syncs everything before the files that mark a dataset complete are written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        f = open(tmp, "wb")
    except FileNotFoundError:  # the first file of its folder: a mkdir for every file cost ~0.07 ms each, 2-3 an image
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, "wb")
    with f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_json(path: Path, obj: object, indent: int | None = None, durable: bool = True) -> None:
    atomic_write(path, json.dumps(obj, indent=indent, sort_keys=False).encode(), durable)


def flush_all() -> None:
    """Put every per-image file on disk before annotations.json/manifest.json say the dataset is done."""
    if hasattr(os, "sync"):
        os.sync()


def encode_image(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    # PNG: OpenCV's own level (1, not an explicit IMWRITE_PNG_COMPRESSION=1: 9 vs 27 ms, and ~10% smaller), with zlib
    # coding Huffman only: a render with sensor noise has few repeats for zlib's matching to find, so that search was
    # a quarter of the time for 1% of the size (measured, 640x480, 8 images each: tabletop 13.8 -> 10.7 ms, 483 ->
    # 489 kB; dice 15.9 -> 10.4 ms, 441 -> 443 kB). Lossless either way: the same pixels.
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpg" else [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
    ok, buf = cv2.imencode(f".{fmt}", bgr, params)
    if not ok:
        raise DatasetError(f"could not encode an image as {fmt}; check the opencv-python-headless install.")
    return buf.tobytes()


def rle(mask: np.ndarray) -> dict:
    m = mask if mask.flags.f_contiguous else np.asfortranarray(mask)
    r = mask_utils.encode(m.view(np.uint8) if m.dtype == bool else m.astype(np.uint8, order="F"))
    return {"size": [int(x) for x in r["size"]], "counts": r["counts"].decode("ascii")}


def rles_of(columns: np.ndarray, ids: list[int], runs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> list[tuple[dict, int]]:
    """(:func:`rle`, pixel count) of the mask ``instance == i`` for each ``i`` of ``ids``, from one pass over the
    instance map given in column-major order (``columns``: the HxW map transposed, WxH, as
    :attr:`simgen.types.Frame.columns`): its runs of equal values, split by value into each mask's alternating
    zero/one counts, which pycocotools compresses (``frPyObjects``). The same strings as encoding the masks one by one,
    each of which reads the whole map (measured on dice, 8 instances an image: 0.66-0.72 vs 1.04-1.58 ms)."""
    w, h = columns.shape
    flat = np.ascontiguousarray(columns).ravel()
    if runs is None:  # else the frame's own (Frame.runs): the same pass, taken once for labels and masks
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.concatenate(([0], change)), np.concatenate((change, [flat.size])), flat[np.concatenate(([0], change))]
    starts, ends, values = runs
    out = []
    for i in ids:
        picked = values == i
        s, e = starts[picked], ends[picked]
        if not len(s):
            counts, area = [flat.size], 0
        else:
            area = int((e - s).sum())
            runs = np.empty(2 * len(s) + 1, np.int64)  # zeros before the first run, then ones and zeros in turn
            runs[0], runs[1::2], runs[2:-1:2], runs[-1] = s[0], e - s, s[1:] - e[:-1], flat.size - e[-1]
            counts = runs.tolist() if runs[-1] else runs[:-1].tolist()
        r = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
        out.append(({"size": [int(h), int(w)], "counts": r["counts"].decode("ascii")}, area))
    return out


def stem(index: int) -> str:
    return f"{index:08d}"


def record_entries(rec: Record, cat_ids: dict[str, int], file_name: str, extra_files: dict[str, str]) -> dict:
    """The COCO image entry and annotations of one record (boxes converted to xywh only here)."""
    image_id = rec.index + 1
    image = {"id": image_id, "file_name": file_name, "width": rec.camera.width, "height": rec.camera.height,
             "seed": list(rec.seed), "K": rec.camera.K.tolist(), "world_to_camera": np.round(rec.world_to_cam, 9).tolist(),
             **extra_files,
             "scene": {k: rec.stats[k] for k in ("sim_steps", "settled", "dropped", "redraws", "redraw_reasons", "unlabelled")
                       if rec.stats.get(k) not in (None, [], {})}}
    anns = []
    masks = rles_of(rec.instance_columns, [inst.object_index for inst in rec.instances], rec.instance_runs) \
        if rec.instance_columns is not None else None
    for j, inst in enumerate(rec.instances):
        x0, y0, x1, y1 = inst.bbox_xyxy
        # the map's encoding stands for the mask where it covers the mask's pixel count (a record whose instances were
        # edited after the map was taken has its masks encoded one by one)
        segmentation = masks[j][0] if masks is not None and masks[j][1] == inst.area else rle(inst.mask)
        anns.append({"id": rec.index * 1000 + j + 1, "image_id": image_id, "category_id": cat_ids[inst.category],
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": inst.area, "iscrowd": 0, "segmentation": segmentation,
                     "visible_fraction": inst.visible_fraction, "truncated": inst.truncated,
                     "pose": {"R": [[round(x, 9) for x in row] for row in inst.pose_R], "t": [round(x, 9) for x in inst.pose_t],
                              "scale": round(inst.scale, 9), "asset": inst.asset},
                     "object_index": inst.object_index, **amodal_entries(inst)})
    return {"image": image, "annotations": anns}


def amodal_entries(inst) -> dict:
    """`bbox_amodal` (xywh of the whole object projected; may reach beyond the image) and, with labels.amodal_mask,
    `segmentation_amodal` (RLE). Extra keys: pycocotools and torchvision ignore them."""
    out: dict = {}
    if inst.bbox_amodal is not None:
        x0, y0, x1, y1 = (round(v, 3) for v in inst.bbox_amodal)
        out["bbox_amodal"] = [x0, y0, round(x1 - x0, 3), round(y1 - y0, 3)]
    if inst.mask_amodal is not None:
        out["segmentation_amodal"] = rle(inst.mask_amodal)
    return out


def write_record(out: Path, rec: Record, cat_ids: dict[str, int], image_format: str, depth: str | None, semantic: bool) -> dict:
    """Write one record's files and its label part; returns the part."""
    s = stem(rec.index)
    file_name = f"images/{s}.{image_format}"
    files: dict[str, dict] = {}

    def put(name: str, data: bytes) -> None:
        atomic_write(out / name, data, durable=False)
        # What resume checks before keeping this image: a file cut short by a crash fails it.
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    put(file_name, encode_image(rec.rgb, image_format, rec.jpeg_quality))
    extra: dict[str, str] = {}
    if depth and rec.depth is not None:
        if depth == "png16":
            mm = np.clip(np.round(rec.depth * 1000.0), 0, 65535).astype(np.uint16)  # millimetres, 0 = no surface
            extra["depth_file"] = f"depth/{s}.png"
            put(extra["depth_file"], cv2.imencode(".png", mm)[1].tobytes())
        else:
            import io

            buf = io.BytesIO()
            np.save(buf, rec.depth.astype(np.float32))
            extra["depth_file"] = f"depth/{s}.npy"
            put(extra["depth_file"], buf.getvalue())
    if semantic:
        sem = np.zeros((rec.camera.height, rec.camera.width), np.uint8)
        for inst in rec.instances:
            sem[inst.mask] = cat_ids[inst.category]
        extra["semantic_file"] = f"semantic/{s}.png"
        put(extra["semantic_file"], cv2.imencode(".png", sem)[1].tobytes())
    part = {**record_entries(rec, cat_ids, file_name, extra), "files": files}
    atomic_json(out / PARTS / f"{s}.json", part, durable=False)
    return part


def file_is(path: Path, expect: dict) -> bool:
    """True when ``path`` has exactly the size and sha256 recorded when it was written."""
    if path.stat().st_size != expect["bytes"]:
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == expect["sha256"]


def done_indices(out: Path) -> set[int]:
    """Indices whose label part (written last, after its files) is on disk, whole, and whose files are
    byte for byte what was written (size and sha256 recorded in the part).

    After a kill every part on disk is whole. After a machine crash, or a copy cut short, a part or a
    file it names can be empty, truncated or changed (they are not fsynced one by one): such a part is
    removed, so that image is rendered again instead of ending up in a dataset that looks complete."""
    d = out / PARTS
    if not d.is_dir():
        return set()
    done = set()
    for p in d.glob("*.json"):
        if not p.stem.isdigit():
            continue
        try:
            part = json.loads(p.read_text())
            files = part["files"]
            names = [part["image"]["file_name"]] + [part["image"][k] for k in ("depth_file", "semantic_file") if k in part["image"]]
            whole = set(names) <= set(files) and all(file_is(out / f, files[f]) for f in names)
        except (OSError, ValueError, KeyError, TypeError):
            whole = False
        if whole:
            done.add(int(p.stem))
        else:
            p.unlink(missing_ok=True)
    return done


def load_parts(out: Path, indices: list[int]) -> list[dict]:
    parts = []
    for i in indices:
        p = out / PARTS / f"{stem(i)}.json"
        try:
            parts.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            raise DatasetError(f"label part {p} is missing or corrupt; delete it and rerun the same command to re-render that image.") from None
    return parts


def coco_document(parts: list[dict], categories: list[str], info: dict) -> dict:
    return {"info": info, "licenses": [],
            "images": [p["image"] for p in parts],
            "annotations": [a for p in parts for a in p["annotations"]],
            "categories": [{"id": k + 1, "name": c, "supercategory": "object"} for k, c in enumerate(categories)]}
