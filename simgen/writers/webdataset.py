"""WebDataset writer: ``out/shard-000000.tar`` ... with one sample per image (``jpg``/``png``, ``json`` holding the
COCO image entry, its annotations and the categories, and ``depth.npy`` / ``semantic.png`` where those labels are
asked for).

Images are rendered exactly as for COCO (:func:`simgen.run.render_images`: every worker count, the run's own process
rendering beside its workers, the pool restarted after a worker dies) into a staging folder, ``out/.simgen/stage``,
one image file and one label part each. A shard is packed once all of its images are staged: written under a
temporary name, fsynced, renamed, and only then are its staged files deleted. So a kill or a crash loses at most the
images in flight, never a shard's worth: the same command resumes, skipping finished tars and staged images alike.
The disk holds at most the staged images plus the tars, about one dataset and a shard."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..config import RenderConfig
from . import coco
from ..datasheet import write_dataset_docs
from ..provenance import generation_sources

TAR_MTIME = float(os.environ.get("SOURCE_DATE_EPOCH", "946684800"))
STAGE = Path(".simgen") / "stage"  # images and label parts waiting for their shard; removed when the run is done
LABEL_FILES = {"depth_file": "depth.npy", "semantic_file": "semantic.png"}  # part key -> tar member extension


def render_webdataset(cfg: RenderConfig, shard_size: int = 1000, log=print) -> Path:
    from ..run import begin, shard_out

    with begin(cfg, log) as job:
        if job is None:
            return shard_out(cfg).out
        return _write_tars(job, shard_size, log)


def stage_config(cfg: RenderConfig) -> RenderConfig:
    """The config images are staged with: ``out`` is the staging folder, and depth (if asked) is kept as float32
    ``.npy``, what a shard holds, whatever ``labels.depth`` says (a PNG16 in millimetres would round it)."""
    from dataclasses import replace

    labels = replace(cfg.labels, depth="npy") if cfg.labels.depth else cfg.labels
    return replace(cfg, out=cfg.out / STAGE, labels=labels)


def sample_from_part(stage: Path, part: dict, categories: list[str], image_format: str) -> dict:
    """One tar sample from a staged image's label part and files: the image as encoded, and its COCO entries with
    ``file_name`` the member's own name (the staged paths mean nothing inside a tar)."""
    image = dict(part["image"])
    s = coco.stem(image["id"] - 1)
    members = {key: (stage / image.pop(key)).read_bytes() for key in LABEL_FILES if key in image}
    sample = {"__key__": s, image_format: (stage / image["file_name"]).read_bytes()}
    image["file_name"] = f"{s}.{image_format}"
    sample["json"] = json.dumps({"image": image, "annotations": part["annotations"],
                                 "categories": [{"id": k + 1, "name": c} for k, c in enumerate(categories)]}).encode()
    sample.update({LABEL_FILES[key]: data for key, data in members.items()})
    return sample


def _write_tars(job, shard_size: int, log) -> Path:
    import webdataset as wds
    from tqdm import tqdm

    from collections import Counter

    from ..run import config_hash, git_commit, render_images, unlabelled_warning, versions

    cfg, categories, cat_ids, indices = job.cfg, job.categories, job.cat_ids, job.indices
    tars = [indices[j:j + shard_size] for j in range(0, len(indices), shard_size)]
    names = [f"shard-{j:06d}.tar" for j in range(len(tars))]
    todo = [j for j, n in enumerate(names) if not (cfg.out / n).exists()]
    scfg = stage_config(cfg)
    stage = scfg.out
    staged = coco.done_indices(stage)
    render = [i for j in todo for i in tars[j] if i not in staged]
    bar = tqdm(total=len(indices), initial=len(indices) - len(render), unit="img",
               desc=f"render {cfg.scene.name} (webdataset)", disable=not cfg.progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    stats = render_images(scfg, render, cat_ids, bar, log)
    bar.close()
    unlabelled: Counter = Counter()  # over the shards packed by this run (the others' parts are gone)
    n_ann = 0
    for j in todo:
        tmp = cfg.out / f".{names[j]}.{os.getpid()}.tmp"
        parts = coco.load_parts(stage, tars[j])
        # Fixed member times (SOURCE_DATE_EPOCH, the reproducible-builds convention, else 2000-01-01): identical runs
        # give byte-identical tars, so shards can be checksummed, deduplicated and compared across machines.
        with wds.TarWriter(str(tmp), mtime=TAR_MTIME) as sink:
            for part in parts:  # index order: tar order = index order, whatever order the images were rendered in
                sink.write(sample_from_part(stage, part, categories, cfg.image_format))
                unlabelled.update(part["image"].get("scene", {}).get("unlabelled", {}))
                n_ann += len(part["annotations"])
        with open(tmp, "rb+") as f:  # a finished tar name must mean a whole tar, even after a machine crash
            os.fsync(f.fileno())
        os.replace(tmp, cfg.out / names[j])
        for part in parts:  # packed: its staged files go (label part last, so a crash here leaves nothing half-staged)
            for name in part["files"]:
                (stage / name).unlink(missing_ok=True)
            (stage / coco.PARTS / f"{coco.stem(part['image']['id'] - 1)}.json").unlink(missing_ok=True)
    wall = time.perf_counter() - t0
    timings = {k: round(sum(s[k] for s in stats) / len(stats), 3) for k in ("sample_ms", "simulate_ms", "render_ms", "annotate_ms",
                                                                             "write_ms", "total_ms")} if stats else None
    manifest = {"format": "webdataset", "shards": names, "n_images": len(indices), "categories": categories, "seed": cfg.seed,
                "renderer": cfg.renderer, "renderer_choice": cfg.renderer_note,
                "images_per_second": round(len(stats) / wall, 3) if stats and wall > 0 else None,
                "rendered_this_run": len(stats), "workers": cfg.workers, "processes": len({s["pid"] for s in stats if "pid" in s}),
                "timings_ms": timings,
                "versions": versions(), "git_commit": git_commit(), "state": {"config_hash": config_hash(cfg)}, "config": cfg.resolved,
                "sources": generation_sources(cfg)}
    coco.atomic_json(cfg.out / "manifest.json", manifest, indent=2)
    write_dataset_docs(cfg.out, manifest)  # DATASHEET.md (no croissant.json: no annotations.json here)
    shutil.rmtree(cfg.out / ".simgen", ignore_errors=True)
    warn = unlabelled_warning(dict(unlabelled), n_ann)
    if warn:  # before the closing line, which stays the last
        log(warn)
    log(f"{cfg.out}: {len(indices)} images in {len(names)} WebDataset shards")
    return cfg.out
