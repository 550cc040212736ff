"""Join shard outputs of one config into one COCO dataset, equal to a single run with that seed."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .data import load_coco, safe_path
from .errors import DatasetError
from .run import check_out
from .writers.coco import atomic_json, flush_all
from .datasheet import write_dataset_docs


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        os.link(src, tmp)  # same filesystem: no copy
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def merge_datasets(dirs: list[Path], out: Path, overwrite: bool = False) -> Path:
    if not dirs:
        raise DatasetError("merge needs at least one dataset folder.")
    manifests, docs = [], []
    for d in dirs:
        m = d / "manifest.json"
        if not m.is_file():
            raise DatasetError(f"{d} has no manifest.json: it is not a finished simgen dataset (rerun its render command to finish it).")
        manifests.append(json.loads(m.read_text()))
        docs.append(load_coco(d))
    hashes = {m["state"]["config_hash"] for m in manifests}
    if len(hashes) != 1:
        raise DatasetError("the folders were rendered with different configs (or seeds); merge only shards of one render command.")
    if len({json.dumps(doc["categories"]) for doc in docs}) != 1:
        raise DatasetError("the folders have different categories; merge only shards of one render command.")
    counts = {m["shard"]["count"] for m in manifests}
    ids: dict[int, Path] = {}
    for d, doc in zip(dirs, docs):
        for im in doc["images"]:
            if im["id"] in ids:
                raise DatasetError(f"image id {im['id']} is in both {ids[im['id']]} and {d}; a shard was given twice.")
            ids[im["id"]] = d
    check_out(out)  # the render's ownership rule: never write into a non-empty folder that is not a simgen dataset
    if out.exists() and (out / "manifest.json").exists() and not overwrite:
        raise DatasetError(f"out={out} already holds a dataset; choose another folder or pass overwrite=true.")
    for name in ("manifest.json", "annotations.json"):
        (out / name).unlink(missing_ok=True)
    images, anns, extra_keys = [], [], ("file_name", "depth_file", "semantic_file")
    for d, doc in zip(dirs, docs):
        for im in doc["images"]:
            for k in extra_keys:
                if k in im:
                    _link_or_copy(safe_path(d, im[k]), safe_path(out, im[k]))
        images += doc["images"]
        anns += doc["annotations"]
    first = docs[0]
    merged = {"info": first["info"], "licenses": first.get("licenses", []),
              "images": sorted(images, key=lambda im: im["id"]), "annotations": sorted(anns, key=lambda a: a["id"]),
              "categories": first["categories"]}
    flush_all()  # copied images reach the disk before annotations.json says the merge is done
    atomic_json(out / "annotations.json", merged)
    m0 = manifests[0]
    total = {}
    for m in manifests:
        for k, v in m["counts_per_category"].items():
            total[k] = total.get(k, 0) + v
    manifest = {**m0, "n_images": len(images), "n_annotations": len(anns), "counts_per_category": total,
                "shard": {"index": None, "count": 1}, "merged_from": [str(d) for d in dirs], "shard_counts": sorted(counts),
                "objects_dropped": sum(m["objects_dropped"] for m in manifests),
                "scene_redraws": sum(m.get("scene_redraws", 0) for m in manifests),
                "unsettled_scenes": sum(m["unsettled_scenes"] for m in manifests),
                "annotations_sha256": __import__("hashlib").sha256((out / "annotations.json").read_bytes()).hexdigest()}
    if sorted(counts) == [len(dirs)] and len(images) != m0["config"]["n_images"]:
        raise DatasetError(f"merged {len(images)} images but the config asks for {m0['config']['n_images']}; a shard is missing.")
    atomic_json(out / "manifest.json", manifest, indent=2)
    write_dataset_docs(out, manifest, merged)  # DATASHEET.md + croissant.json
    return out
