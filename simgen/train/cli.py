"""Entry points for ``simgen train`` and ``simgen utility``: they receive the composed config as a
plain dict (Hydra stays in :mod:`simgen.cli`) and turn it into frozen dataclasses first. Every config
error is raised there, before anything is written; a full disk later is one line (:mod:`.files`)."""
from __future__ import annotations

import sys

from .config import job_config, utility_config


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def train_task(d: dict) -> None:
    job = job_config(d)  # every field checked before torch loads: a typo is one line in ~1 s, not ~8
    from ..data import coco_cache
    from .files import disk_full_guard
    from .utility import holdout_box_warning, run_one, unscored_categories

    with coco_cache():  # each COCO file parsed once for the whole command (it is read in several places)
        for warning in (unscored_categories(job.data), holdout_box_warning(job.data)):
            if warning:
                _log(warning)
        with disk_full_guard(job.out):  # run_one names its own folder; this catches what happens around it
            entry = run_one(job, job.out, job.data.synthetic_fraction, job.seed, name="train", log=_log)
    print(f"mAP {entry['map']:.3f}  AP50 {entry['map50']:.3f}  -> {job.out}/metrics.json, predictions.json, checkpoint.pt")


def utility_task(d: dict) -> None:
    u = utility_config(d)
    from ..data import coco_cache
    from .files import disk_full_guard
    from .utility import holdout_box_warning, run_utility, unscored_categories

    with coco_cache():
        for warning in (unscored_categories(u.job.data), holdout_box_warning(u.job.data)):
            if warning:
                _log(warning)
        with disk_full_guard(u.job.out):
            report = run_utility(u, log=_log)
    print((u.job.out / "report.md").read_text())
    print(f"report: {u.job.out}/report.json, report.md, map_vs_fraction.png" + (", map_vs_size.png" if "sizes" in report else ""))
