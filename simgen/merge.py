"""Join shard outputs of one config into one COCO dataset, equal to a single run with that seed.

Like a render, a merge can be killed and rerun: every check runs before anything is written, the output
folder is marked as simgen's (``.simgen/state.json``) before its first file, so the rerun may write into
what the killed one left, and ``manifest.json``, written last, says the merge is finished."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .data import load_coco, safe_path
from .errors import DatasetError
from .run import DISK_FULL, STATE, check_out, disk_full, out_lock, remove_partial_files, unlabelled_counts
from .writers.coco import atomic_json, flush_all
from .datasheet import flat_keys, write_dataset_docs

FILE_KEYS = ("file_name", "depth_file", "semantic_file")


def link_or_copy(src: Path, dst: Path) -> bool:
    """``dst`` as a hard link to ``src`` (same filesystem: no bytes copied, and it cannot point outside its
    folder as a symlink would), else a copy; written under a temporary name and renamed. True when linked."""
    if dst.exists() and os.path.samefile(src, dst):
        # Linked by an earlier (killed) run. Linking again would leave the temporary name behind: rename()
        # between two links to one file does nothing.
        return True
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        os.link(src, tmp)
        linked = True
    except OSError:  # another filesystem (EXDEV), or links not allowed there
        shutil.copy2(src, tmp)
        linked = False
    os.replace(tmp, dst)
    return linked


def webdataset_render(d: Path) -> bool:
    """Whether ``d`` holds a finished ``writer=webdataset`` render: tar shards and a manifest saying
    ``"format": "webdataset"``, no annotations.json."""
    try:
        man = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(man, dict) and man.get("format") == "webdataset"


def shard_folders(d: Path) -> list[Path]:
    """The folders under ``d/shards``, where a render with shard.count > 1 writes shard k of n
    (``d/shards/0000k-of-0000n``, :func:`simgen.run.shard_out`); [] when there are none."""
    sub = d / "shards"
    return sorted(p for p in sub.iterdir() if p.is_dir()) if sub.is_dir() else []


def check_folders(dirs: list[Path], out: Path) -> None:
    """Name what each folder really is, before reading any: missing, a WebDataset render, or the ``out=`` of a
    sharded render (its datasets are the folders under ``shards/``)."""
    for d in dirs:
        if not d.exists():
            raise DatasetError(f"{d} does not exist; pass the folders a render wrote (its out=, or each out/shards/<k>-of-<n> "
                               "of a render with shard.count > 1).")
        if not d.is_dir():
            raise DatasetError(f"{d} is not a folder; pass dataset folders (each holds manifest.json and annotations.json).")
    parents = [d for d in dirs if not (d / "manifest.json").exists() and shard_folders(d)]
    folders = [s for d in dirs for s in (shard_folders(d) if d in parents else [d])]
    for d in folders:
        if webdataset_render(d):
            raise DatasetError(f"{d} is a WebDataset render (writer=webdataset: tar shards, no annotations.json) and merge joins "
                               "COCO renders; its shard-*.tar files need no merge (stream them with simgen.data.webdataset(\"<out>\"), the "
                               "render's out= folder, or a list of its shard folders), or render with writer=coco to get folders "
                               "merge can join.")
    if parents:
        which = " and ".join(str(d) for d in parents)
        raise DatasetError(f"{which} {'holds' if len(parents) == 1 else 'hold'} no dataset, only the shard folders of a render "
                           f"with shard.count > 1 (under shards/); pass those: simgen merge {' '.join(str(f) for f in folders)} out={out}")


def read_shards(dirs: list[Path]) -> tuple[list[dict], list[dict]]:
    """Manifest and COCO document of every folder, each a finished simgen dataset."""
    manifests, docs = [], []
    for d in dirs:
        m = d / "manifest.json"
        if not m.is_file():
            raise DatasetError(f"{d} has no manifest.json: it is not a finished simgen dataset (rerun its render command to finish it).")
        try:
            man = json.loads(m.read_text())
            _ = man["state"]["config_hash"], man["shard"]["count"], man["config"]["n_images"]  # the keys the checks read
        except (ValueError, KeyError, TypeError):
            raise DatasetError(f"{m} is corrupt or not a simgen COCO manifest; rerun that folder's render command with overwrite=true.") from None
        manifests.append(man)
        docs.append(load_coco(d))
    return manifests, docs


def config_difference(a: dict, b: dict) -> str:
    """The first setting two manifests' configs disagree on, as ``key: x vs y`` ('' when none shows)."""
    from .run import NON_CONTENT_KEYS

    fa, fb = (dict(flat_keys({k: v for k, v in c.items() if k not in NON_CONTENT_KEYS})) for c in (a, b))
    for k in sorted(set(fa) | set(fb)):
        if fa.get(k) != fb.get(k):
            return f"{k}: {fa.get(k)} vs {fb.get(k)}"
    return ""


def check_shards(dirs: list[Path], manifests: list[dict], docs: list[dict]) -> None:
    """Refuse, before anything is written, folders that do not join into the whole dataset of one config."""
    if len({m["state"]["config_hash"] for m in manifests}) != 1:
        first = manifests[0]
        other = next(k for k, m in enumerate(manifests) if m["state"]["config_hash"] != first["state"]["config_hash"])
        diff = config_difference(first["config"], manifests[other]["config"])
        versions = {"user_files" in (m.get("state") or {}) for m in (first, manifests[other])}
        why = f" ({dirs[0]} and {dirs[other]} differ in {diff})" if diff else \
            f" ({dirs[0]} and {dirs[other]}: the same settings, but made by simgen versions that hash the user's mesh and " \
            "texture files differently; render the older one again)" if len(versions) > 1 else \
            f" ({dirs[0]} and {dirs[other]}: the same settings, but a mesh or texture file of the user's changed in between)"
        raise DatasetError(f"the folders were rendered with different configs (or seeds){why}; merge only shards of one render command.")
    counts = {m["shard"]["count"] for m in manifests}
    # shards of different splits can still cover the dataset exactly (checked below); where they do not, that is why
    splits = ("; they are shards of different splits (shard.count " + " and ".join(str(c) for c in sorted(counts)) + ")") \
        if len(counts) > 1 else ""
    drawn: dict[str, list[str]] = {}
    for d, m in zip(dirs, manifests):
        drawn.setdefault(str(m.get("renderer")), []).append(d.name)
    if len(drawn) > 1:
        # renderer=auto picks by a speed probe, so shards on different machines can differ; their labels would differ by
        # a pixel at the edges, and the merge would not be one render
        which = "; ".join(f"{r}: {', '.join(names)}" for r, names in drawn.items())
        most = max(drawn, key=lambda r: len(drawn[r]))
        raise DatasetError(f"the shards were drawn by different renderers ({which}), whose labels differ by a pixel at edges; render "
                           f"the others again with renderer={most} overwrite=true (the same command with that override), then merge.")
    if len({json.dumps(doc["categories"]) for doc in docs}) != 1:
        raise DatasetError("the folders have different categories; merge only shards of one render command.")
    ids: dict[int, Path] = {}
    for d, doc in zip(dirs, docs):
        for im in doc["images"]:
            for k in FILE_KEYS:  # a file missing halfway through the copy would leave a half merge
                if k in im and not safe_path(d, im[k]).is_file():
                    raise DatasetError(f"`{im[k]}` listed in {d / 'annotations.json'} is missing; restore it, or rerun that "
                                       "folder's render command with overwrite=true.")
            if im["id"] in ids:
                raise DatasetError(f"image id {im['id']} is in both {ids[im['id']]} and {d}" + (splits or "; a shard was given twice")
                                   + ".")
            ids[im["id"]] = d
    want = manifests[0]["config"]["n_images"]
    if len(ids) != want:  # a merge that is not the whole dataset would pass for it: refuse it
        counts = {m["shard"]["count"] for m in manifests}
        missing = ""
        if len(counts) == 1:
            have = {m["shard"].get("index") for m in manifests}
            missing = " (shard " + ", ".join(str(k) for k in range(max(counts)) if k not in have) + f" of {max(counts)})"
        raise DatasetError(f"these folders hold {len(ids)} images but the config asks for {want}; a shard is missing{missing}{splits}: "
                           "pass every folder under <out>/shards, rendering any missing shard first.")


def merged_already(out: Path, dirs: list[Path], manifests: list[dict]) -> bool:
    """Whether ``out`` is the finished merge of exactly these folders, as they are now (their annotations unchanged)."""
    try:
        done = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(done, dict) or not isinstance(done.get("merged_from"), list) or not isinstance(done.get("merged_annotations_sha256"), list):
        return False
    now = sorted(zip([str(d.resolve()) for d in dirs], [m.get("annotations_sha256") for m in manifests]))  # in any order
    return sorted(zip(done["merged_from"], done["merged_annotations_sha256"])) == now and len(done["merged_from"]) == len(dirs)


def prepare(out: Path, dirs: list[Path], overwrite: bool) -> None:
    """Claim ``out`` before its first file: the marker lets a rerun finish what a killed merge left."""
    if (out / "manifest.json").exists() and not overwrite:
        raise DatasetError(f"out={out} already holds a dataset that is not the merge of these folders as they are now; choose "
                           "another folder or pass overwrite=true.")
    for name in ("manifest.json", "annotations.json"):
        (out / name).unlink(missing_ok=True)
    remove_partial_files(out)  # copies cut short by the kill: never valid files
    atomic_json(out / STATE, {"merging": [str(d) for d in dirs]})


def merge_datasets(dirs: list[Path], out: Path, overwrite: bool = False, log=lambda m: None) -> Path:
    if not dirs:
        raise DatasetError("merge needs at least one dataset folder.")
    check_folders(dirs, out)
    manifests, docs = read_shards(dirs)
    check_shards(dirs, manifests, docs)
    check_out(out)  # the render's ownership rule: never write into a non-empty folder that is not a simgen dataset
    with out_lock(out):  # two merges (or a render) into one folder at once would interleave
        if not overwrite and merged_already(out, dirs, manifests):
            if not (out / "DATASHEET.md").is_file():  # killed between the manifest and its documents
                write_dataset_docs(out)
            shutil.rmtree(out / STATE.parent, ignore_errors=True)
            log(f"{out}: already the merge of these folders; nothing to do.")
            return out  # the same command again, as a render's rerun: already complete
        prepare(out, dirs, overwrite)
        try:
            _write(dirs, manifests, docs, out)
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            raise disk_full(out, e) from None  # one line, exit 1; the rerun links what is already there for free
    return out


def _write(dirs: list[Path], manifests: list[dict], docs: list[dict], out: Path) -> None:
    images, anns = [], []
    for d, doc in zip(dirs, docs):
        for im in doc["images"]:
            for k in FILE_KEYS:
                if k in im:
                    link_or_copy(safe_path(d, im[k]), safe_path(out, im[k]))
        images += doc["images"]
        anns += doc["annotations"]
    first = docs[0]
    merged = {"info": first["info"], "licenses": first.get("licenses", []),
              "images": sorted(images, key=lambda im: im["id"]), "annotations": sorted(anns, key=lambda a: a["id"]),
              "categories": first["categories"]}
    flush_all()  # copied images reach the disk before annotations.json says the merge is done
    atomic_json(out / "annotations.json", merged)
    total: dict[str, int] = {}
    for m in manifests:
        for k, v in m["counts_per_category"].items():
            total[k] = total.get(k, 0) + v
    # What describes the whole merge, not shard 0: its folder and split in the config; the render work summed; timings
    # stay in each shard's own manifest (a merge renders nothing)
    config = {**manifests[0]["config"], "out": str(out), "shard": {"index": 0, "count": 1}}
    manifest = {**manifests[0], "config": config, "n_images": len(images), "n_annotations": len(anns), "counts_per_category": total,
                "shard": {"index": None, "count": 1}, "merged_from": [str(d.resolve()) for d in dirs],
                "merged_annotations_sha256": [m.get("annotations_sha256") for m in manifests],
                "rendered_this_run": sum(m.get("rendered_this_run") or 0 for m in manifests),
                "workers": sum(m.get("workers") or 0 for m in manifests) or None,
                "processes": sum(m.get("processes") or 0 for m in manifests) or None,
                "images_per_second": None, "timings_ms": None, "writer_thread_share": None, "physics_process_share": None,
                "shard_counts": sorted({m["shard"]["count"] for m in manifests}),
                "objects_dropped": sum(m["objects_dropped"] for m in manifests),
                "objects_unlabelled": unlabelled_counts(merged["images"]),
                "scene_redraws": sum(m.get("scene_redraws", 0) for m in manifests),
                "unsettled_scenes": sum(m["unsettled_scenes"] for m in manifests),
                "annotations_sha256": hashlib.sha256((out / "annotations.json").read_bytes()).hexdigest()}
    atomic_json(out / "manifest.json", manifest, indent=2)
    shutil.rmtree(out / STATE.parent, ignore_errors=True)  # finished: manifest.json marks the folder from now on
    write_dataset_docs(out, manifest, merged)  # DATASHEET.md + croissant.json
