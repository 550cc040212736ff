"""WebDataset writer: ``out/shard-000000.tar`` ... with one sample per image (``jpg``/``png`` and
``json`` holding the COCO image entry, its annotations and the categories). Each tar is written
under a temporary name and renamed when full, so a rerun skips finished tars and redoes the rest."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np

from ..config import RenderConfig
from . import coco
from ..datasheet import write_dataset_docs
from ..provenance import generation_sources


def sample_payload(rec, cat_ids: dict[str, int], categories: list[str], image_format: str, depth: str | None) -> dict:
    s = coco.stem(rec.index)
    entries = coco.record_entries(rec, cat_ids, f"{s}.{image_format}", {})
    sample = {"__key__": s, image_format: coco.encode_image(rec.rgb, image_format, rec.jpeg_quality),
              "json": json.dumps({**entries, "categories": [{"id": k + 1, "name": c} for k, c in enumerate(categories)]}).encode()}
    if depth and rec.depth is not None:
        buf = io.BytesIO()
        np.save(buf, rec.depth.astype(np.float32))
        sample["depth.npy"] = buf.getvalue()
    return sample


_GEN = None
TAR_MTIME = float(os.environ.get("SOURCE_DATE_EPOCH", "946684800"))


def _init(cfg: RenderConfig, physics_process: bool = False) -> None:
    global _GEN
    from ..run import mute_stdout, quiet_stdout

    mute_stdout()  # a worker: PyBullet's banners and the EGL plugin's lines must not reach the user's terminal
    with quiet_stdout((1, 2)):  # importing pybullet prints its build time on fd 2
        from ..pipeline import Generator

        _GEN = Generator(cfg, physics_process=physics_process)


def _payloads(args):
    cfg, indices, cat_ids, categories = args
    from ..run import quiet_stdout

    out = []
    _GEN.plan(indices)  # a physics feeder, where the worker has one, settles these scenes ahead
    for i in indices:
        with quiet_stdout():
            rec = _GEN.generate(i)
        out.append(sample_payload(rec, cat_ids, categories, cfg.image_format, cfg.labels.depth))
    return out


def render_webdataset(cfg: RenderConfig, shard_size: int = 1000, log=print) -> Path:
    from ..run import begin, shard_out

    with begin(cfg, log) as job:
        if job is None:
            return shard_out(cfg).out
        return _write_tars(job, shard_size, log)


def _write_tars(job, shard_size: int, log) -> Path:
    import webdataset as wds
    from tqdm import tqdm

    from ..run import config_hash, git_commit, versions, worker_pool

    cfg, categories, cat_ids, indices = job.cfg, job.categories, job.cat_ids, job.indices
    tars = [indices[j:j + shard_size] for j in range(0, len(indices), shard_size)]
    names = [f"shard-{j:06d}.tar" for j in range(len(tars))]
    todo = [j for j, n in enumerate(names) if not (cfg.out / n).exists()]
    bar = tqdm(total=len(indices), initial=sum(len(tars[j]) for j in range(len(tars)) if j not in todo), unit="img",
               desc=f"render {cfg.scene.name} (webdataset)", disable=not cfg.progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    from ..feeder import wanted as feeder_wanted
    from ..run import scene_count

    todo_indices = [i for j in todo for i in tars[j]]
    feeders = feeder_wanted(cfg.physics_process, max(1, cfg.workers), scene_count(todo_indices, cfg.views_per_scene))
    with worker_pool(max(1, cfg.workers), _init, (cfg, feeders)) as pool:
        for j in todo:
            tmp = cfg.out / f".{names[j]}.{os.getpid()}.tmp"
            # Fixed member times (SOURCE_DATE_EPOCH, the reproducible-builds convention, else 2000-01-01): identical runs
            # give byte-identical tars, so shards can be checksummed, deduplicated and compared across machines.
            with wds.TarWriter(str(tmp), mtime=TAR_MTIME) as sink:
                chunks = [tars[j][k:k + 8] for k in range(0, len(tars[j]), 8)]
                for res in pool.map(_payloads, [(cfg, c, cat_ids, categories) for c in chunks]):  # ordered: tar order = index order
                    for sample in res:
                        sink.write(sample)
                    bar.update(len(res))
            with open(tmp, "rb+") as f:  # a finished tar name must mean a whole tar, even after a machine crash
                os.fsync(f.fileno())
            os.replace(tmp, cfg.out / names[j])
    bar.close()
    wall = time.perf_counter() - t0
    manifest = {"format": "webdataset", "shards": names, "n_images": len(indices), "categories": categories, "seed": cfg.seed,
                "renderer": cfg.renderer, "renderer_choice": cfg.renderer_note, "images_per_second": round(sum(len(tars[j]) for j in todo) / wall, 3) if todo else None,
                "versions": versions(), "git_commit": git_commit(), "state": {"config_hash": config_hash(cfg)}, "config": cfg.resolved,
                "sources": generation_sources(cfg)}
    coco.atomic_json(cfg.out / "manifest.json", manifest, indent=2)
    write_dataset_docs(cfg.out, manifest)  # DATASHEET.md (no croissant.json: no annotations.json here)
    import shutil

    shutil.rmtree(cfg.out / ".simgen", ignore_errors=True)
    log(f"{cfg.out}: {len(indices)} images in {len(names)} WebDataset shards")
    return cfg.out
