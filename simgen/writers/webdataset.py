"""WebDataset writer: ``out/shard-000000.tar`` ... with one sample per image (``jpg``/``png``, ``json`` holding the
COCO image entry, its annotations and the categories, and ``depth.npy`` / ``semantic.png`` where those labels are
asked for).

Images are rendered exactly as for COCO (:func:`simgen.run.render_images`: every worker count, the run's own process
rendering beside its workers, the pool restarted after a worker dies) into a staging folder, ``out/.simgen/stage``,
one image file and one label part each. A shard is packed as soon as its last image is staged: written under a
temporary name, fsynced, renamed, and only then are its staged files deleted. So a kill or a crash loses at most the
images in flight, never a shard's worth: the same command resumes, skipping finished tars and staged images alike.
Images are handed out in index order, so what waits in staging besides the tars is about the shards in progress."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..config import RenderConfig
from . import coco
from ..datasheet import write_dataset_docs
from ..errors import DatasetError
from ..provenance import generation_sources

TAR_MTIME = float(os.environ.get("SOURCE_DATE_EPOCH", "946684800"))
STAGE = Path(".simgen") / "stage"  # images and label parts waiting for their shard; removed when the run is done
SHARD_COUNTS = Path(".simgen") / "shards"  # per packed shard: its annotation and unlabelled-object counts
LAYOUT = Path(".simgen") / "webdataset.json"  # the shard size the run was started with (a resume must keep it)
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
    try:
        members = {key: (stage / image.pop(key)).read_bytes() for key in LABEL_FILES if key in image}
        sample = {"__key__": s, image_format: (stage / image["file_name"]).read_bytes()}
    except FileNotFoundError as e:
        raise DatasetError(f"staged file {e.filename} is missing; delete {stage / coco.PARTS / (s + '.json')} and rerun the same "
                           "command to render that image again.") from None
    image["file_name"] = f"{s}.{image_format}"
    sample["json"] = json.dumps({"image": image, "annotations": part["annotations"],
                                 "categories": [{"id": k + 1, "name": c} for k, c in enumerate(categories)]}).encode()
    sample.update({LABEL_FILES[key]: data for key, data in members.items()})
    return sample


def _write_tars(job, shard_size: int, log) -> Path:
    from collections import Counter

    from tqdm import tqdm

    from ..errors import ConfigError
    from ..provenance import user_files
    from ..run import (check_files_unchanged, config_hash, git_commit, render_images, summary_line, timing_means,
                       unlabelled_warning, versions)

    cfg, categories, cat_ids, indices = job.cfg, job.categories, job.cat_ids, job.indices
    tars = [indices[j:j + shard_size] for j in range(0, len(indices), shard_size)]
    names = [f"shard-{j:06d}.tar" for j in range(len(tars))]
    layout = cfg.out / LAYOUT
    try:
        started = json.loads(layout.read_text()).get("shard_size")
    except (OSError, ValueError, AttributeError):
        started = None
    if started is not None and started != shard_size:  # the finished tars were cut at another size: they would not fit
        raise ConfigError(f"out={cfg.out} was started with shard_size={started}, not {shard_size}; rerun with "
                          f"writer.shard_size={started} to resume it, or overwrite=true to start again.")
    coco.atomic_json(layout, {"shard_size": shard_size})
    todo = [j for j, n in enumerate(names) if not (cfg.out / n).exists()]
    scfg = stage_config(cfg)
    stage = scfg.out
    staged = coco.done_indices(stage)
    missing = {j: set(tars[j]) - staged for j in todo}
    shard_of = {i: j for j in todo for i in tars[j]}
    packed: list[int] = []

    def pack_ready(j: int) -> None:
        if not missing[j] and j not in packed:
            pack(cfg.out, stage, names[j], coco.load_parts(stage, tars[j]), categories, cfg.image_format)
            packed.append(j)

    def on_image(s: dict) -> None:  # a shard is packed as soon as its last image is staged
        j = shard_of[s["index"]]
        missing[j].discard(s["index"])
        pack_ready(j)

    for j in todo:  # wholly staged by a run that was killed before packing them
        pack_ready(j)
    render = [i for j in todo for i in sorted(missing[j])]
    bar = tqdm(total=len(indices), initial=len(indices) - len(render), unit="img",
               desc=f"render {cfg.scene.name} (webdataset)", disable=not cfg.progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    stats = render_images(scfg, render, cat_ids, bar, log, on_image)
    bar.close()
    # images a worker finished just before its pool broke were never reported (the restart found them staged)
    staged = coco.done_indices(stage)
    for j in todo:
        missing[j] -= staged
        pack_ready(j)
    wall = time.perf_counter() - t0
    check_files_unchanged(cfg)
    counts = [shard_counts(cfg.out, n) for n in names]
    known = all(c is not None for c in counts)  # a shard packed by an older simgen has no counts
    unlabelled: Counter = Counter()
    for c in counts if known else ():
        unlabelled.update(c["unlabelled"])
    n_ann = sum(c["n_annotations"] for c in counts) if known else None
    timings = timing_means(stats) if stats else None
    manifest = {"format": "webdataset", "shards": names, "shard_size": shard_size, "n_images": len(indices), "n_annotations": n_ann,
                "categories": categories, "seed": cfg.seed, "renderer": cfg.renderer, "renderer_choice": cfg.renderer_note,
                "objects_unlabelled": dict(sorted(unlabelled.items())) if known else None,
                "images_per_second": round(len(render) / wall, 3) if render and wall > 0 else None,
                # what was missing when this run started: a killed worker's last stats never came back
                "rendered_this_run": len(render), "workers": cfg.workers, "processes": len({s["pid"] for s in stats if "pid" in s}),
                "timings_ms": timings,
                "versions": versions(), "git_commit": git_commit(), "state": {"config_hash": config_hash(cfg), "user_files": user_files(cfg)}, "config": cfg.resolved,
                "sources": generation_sources(cfg)}
    coco.atomic_json(cfg.out / "manifest.json", manifest, indent=2)
    write_dataset_docs(cfg.out, manifest)  # DATASHEET.md (no croissant.json: no annotations.json here)
    shutil.rmtree(cfg.out / ".simgen", ignore_errors=True)
    warn = unlabelled_warning(dict(unlabelled), n_ann) if known else None
    if warn:  # before the closing line, which stays the last
        log(warn)
    # the COCO writer's closing line (annotations, and after a resume what was already done), then the shards
    line = summary_line(cfg.out, len(indices), n_ann if n_ann is not None else 0, len(indices) - len(render), len(render), wall)
    log(f"{line}; {len(names)} WebDataset shard{'s' if len(names) != 1 else ''}" if known else
        f"{cfg.out}: {len(indices)} images in {len(names)} WebDataset shard{'s' if len(names) != 1 else ''}")
    return cfg.out


def pack(out: Path, stage: Path, name: str, parts: list[dict], categories: list[str], image_format: str) -> None:
    """Write shard ``name`` from its staged ``parts`` (index order), then delete what it was made from. The tar is
    written under a temporary name, fsynced and renamed: a finished tar name always means a whole tar. Its label
    counts go beside it first (``.simgen/shards``), for the manifest of the run that finishes the dataset."""
    import webdataset as wds

    from ..run import unlabelled_counts

    tmp = out / f".{name}.{os.getpid()}.tmp"
    # Fixed member times (SOURCE_DATE_EPOCH, the reproducible-builds convention, else 2000-01-01): identical runs
    # give byte-identical tars, so shards can be checksummed, deduplicated and compared across machines.
    with wds.TarWriter(str(tmp), mtime=TAR_MTIME) as sink:
        for part in parts:
            sink.write(sample_from_part(stage, part, categories, image_format))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    coco.atomic_json(out / SHARD_COUNTS / f"{name}.json", {"n_annotations": sum(len(p["annotations"]) for p in parts),
                                                          "unlabelled": unlabelled_counts([p["image"] for p in parts])})
    os.replace(tmp, out / name)
    for part in parts:  # packed: its staged files go (label part last, so a crash here leaves nothing half-staged)
        for f in part["files"]:
            (stage / f).unlink(missing_ok=True)
        (stage / coco.PARTS / f"{coco.stem(part['image']['id'] - 1)}.json").unlink(missing_ok=True)


def shard_counts(out: Path, name: str) -> dict | None:
    """The label counts recorded when shard ``name`` was packed; None where there are none (packed by an older simgen)."""
    try:
        return json.loads((out / SHARD_COUNTS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
