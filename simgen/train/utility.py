"""Sim-to-real utility: train one detector per arm, score each on the real holdout, report.

Arms (same model, trainer budget and holdout for all; each for every seed):
  TSTR   train on synthetic only (synthetic_fraction 1.0)
  TRTR   train on the real training folder only (0.0), when ``data.real`` is given
  mix-f  real plus synthetic, a synthetic sample drawn with probability f, when ``data.real`` is given
  finetune  synthetic only for ``utility.finetune_split`` of the budget, then real only (one schedule), with ``data.real``
  <arm>-nN  the data-size curve: TSTR (and the best mix) on nested subsets of N synthetic images (``utility.synthetic_sizes``)
The holdout is only ever predicted on; :mod:`simgen.train.guard` refuses training folders that hold
any holdout image.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..data import CocoDataset, collate, load_coco
from ..errors import ConfigError, DatasetError, did_you_mean
from .engine import (Mosaic, Phase, TrainerConfig, TrainResult, eval_transforms, finished, load_checkpoint, phase_skips, predict,
                     resolve_device, resumable, train, train_transforms)
from .evaluate import any_class_scores, coco_evaluate, coco_results, label_to_category, write_json
from .files import atomic_text, disk_full_guard, save_figure
from .guard import check_no_leak, dataset_identity, holdout_identity
from ..provenance import file_sha256
from ..datasheet import write_run_datasheet, write_utility_datasheet
from .mix import MixedDataset, concat, share
from .models import ModelConfig, build_model
from .sizes import SyntheticSplit, gap_warnings, mean_std, plan_sizes, plot_sizes, size_summary, size_table, split_indices, val_set
from .threads import apply_threads
from .config import (AGNOSTIC, FINETUNE_SPLIT_BOUNDS, FINETUNE_SPLIT_MINUTES, DataConfig, Job, UtilityConfig,  # noqa: F401
                     job_config, utility_config)  # (the last two re-exported)

@dataclass(frozen=True)
class Arm:
    """What one run trains on; the model, budget and holdout are the job's."""

    name: str
    fraction: float | None = 1.0  # synthetic share the sampler draws; None: in proportion to the folders' sizes
    kind: str = "mix"  # how the report groups it: "mix" (TSTR, TRTR, mixes), "finetune", "size"
    finetune_split: float | None = None  # sequential: synthetic only for this share of the budget, then real only
    subset: SyntheticSplit | None = None  # a data-size run: train on a nested subset of the synthetic images
    series: str | None = None  # a data-size run: the arm it shrinks ("TSTR", "mix-0.7")


RUN_FILES = ("metrics.json", "predictions.json", "checkpoint.pt", "provenance.json", "DATASHEET.md")


def other_run(out: Path, keys: tuple[str, str]) -> str | None:
    """What in ``out`` says it holds a run made with other settings than ``keys`` (:func:`run_keys`; None: nothing, the
    same run, or the same command whose holdout has changed since). A checkpoint that cannot be read is not counted here:
    :func:`simgen.train.engine.resumable` says so and replaces it."""
    key, config = keys

    def other(got: dict) -> bool:
        return got.get("settings_hash") not in (None, key) and got.get("config_hash") != config

    metrics = out / "metrics.json"
    if metrics.is_file():
        try:
            got = json.loads(metrics.read_text())
        except (OSError, ValueError):  # unreadable: not evidence of another run (the run says what is wrong with it)
            got = {}
        if isinstance(got, dict) and got.get("settings_hash"):
            # written last, from the same run as the checkpoint beside it: no need to load that (a few hundred MB for
            # the larger models) on every rerun
            return f"{metrics} is from other settings" if other(got) else None
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        try:
            meta = load_checkpoint(ckpt).get("meta", {})
        except Exception:  # damaged: handled where the run starts
            return None
        if isinstance(meta, dict) and other(meta):
            return f"{ckpt} is from other settings"
    return None


def claim_run_folder(out: Path, keys: tuple[str, str], overwrite: bool, name: str) -> None:
    """Keep a run made with other settings unless ``overwrite``: a changed command must not silently replace the
    results it would otherwise have read back (``simgen render`` refuses the same way). With ``overwrite`` that
    run's files go first, so that a kill half-way leaves no stale scores beside the new checkpoint."""
    why = other_run(out, keys)
    if why is None:
        return
    if not overwrite:
        raise DatasetError(f"{name}: {out} holds a run made with other settings ({why}); pass overwrite=true to replace it, "
                           "or a new out=<folder>.")
    for f in RUN_FILES:
        (out / f).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- data


class Relabeled(torch.utils.data.Dataset):
    """A :class:`CocoDataset` whose labels are re-indexed into the model's category list by name."""

    def __init__(self, ds: CocoDataset, lut: list[int]) -> None:
        self.ds, self.lut = ds, torch.tensor(lut, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, idx: int):
        img, t = self.ds[idx]
        t = dict(t)
        t["labels"] = self.lut[t["labels"]]
        return img, t


def _training_names(data: DataConfig, used: bool = False) -> list[tuple[Path, str]]:
    """(folder, category name as written) of every training folder's categories, in id order within each; ``used``:
    only those with at least one annotation."""
    out = []
    for root in (*data.synthetic, *data.real):
        doc = load_coco(root)
        ids = {a["category_id"] for a in doc["annotations"]} if used else None
        out += [(Path(root), c["name"]) for c in sorted(doc["categories"], key=lambda c: c["id"]) if ids is None or c["id"] in ids]
    return out


def _holdout_names(data: DataConfig) -> list[str]:
    """The holdout's scored class names: categories with at least one annotation. An empty one (a labelling tool's
    full class list, of which these photos show a few) is never scored, and blocked training with a made-up map hint."""
    doc = load_coco(data.holdout)
    used = {a["category_id"] for a in doc["annotations"]}
    return [AGNOSTIC if data.class_agnostic else c["name"] for c in doc["categories"] if c["id"] in used]


def _closest(name: str, options: list[str]) -> str | None:
    """The option most likely to be ``name`` under another spelling (case-blind first, then difflib), or None."""
    import difflib

    same = [o for o in options if o.casefold() == name.casefold()]
    if same:
        return same[0]
    close = difflib.get_close_matches(name.casefold(), [o.casefold() for o in options], n=1, cutoff=0.75)  # mug ~ Mugs, not cat ~ car
    return next((o for o in options if close and o.casefold() == close[0]), None)


def model_categories(data: DataConfig) -> list[str]:
    """Training category names after mapping, first seen first; checked against the holdout's, and every
    data.category_map key against the training names (a misspelt key was silently ignored)."""
    raw = list(dict.fromkeys(name for _, name in _training_names(data)))
    cats = list(dict.fromkeys(data.name_of(n) for n in raw))
    unknown = [k for k, _ in data.category_map if k not in raw]
    if unknown:
        raise DatasetError(f"data.category_map key `{unknown[0]}` is not a training category name (they are "
                           f"{raw}); keys name training categories, values holdout ones." + did_you_mean(unknown[0], raw))
    hold = _holdout_names(data)
    missing = [n for n in dict.fromkeys(hold) if n not in cats]
    if missing:
        # suggest a training name the holdout does not use yet, and only one spelled like the missing class: the first
        # spare name was suggested before, whatever it was (map `teddy` onto `mug`)
        spares = [n for n in raw if data.name_of(n) not in hold]
        spare = _closest(missing[0], spares) or (spares[0] if len(spares) == 1 else None)
        key = spare if spare is not None else "<training name>"
        raise DatasetError(f"holdout category `{missing[0]}` is not in the training data (which has {cats}); render it, or map a training "
                           f"category onto it with data.category_map (+data.category_map.{key}={missing[0]}).")
    return cats


def unscored_categories(data: DataConfig) -> str | None:
    """A warning when training folders name categories the holdout does not: the model learns them and they are never
    scored, which is most often two names for one class (a real folder labelled `pip1` where the renders say `one`)."""
    hold = set(_holdout_names(data))
    extra: dict[str, list[str]] = {}
    for root, name in _training_names(data, used=True):  # a class with no box is not learnt either
        if data.name_of(name) not in hold:
            extra.setdefault(data.name_of(name), []).append(str(root))
    if not extra:
        return None
    names = list(extra)
    return (f"warning: training categories {', '.join(names[:8])}{', ...' if len(names) > 8 else ''} (in "
            f"{', '.join(dict.fromkeys(r for v in extra.values() for r in v))}) are not in the holdout: the model learns them "
            f"and they are never scored; if they are holdout classes under other names, map them "
            f"(+data.category_map.{names[0]}=<holdout name>).")


def _train_set(root: Path, cats: list[str], data: DataConfig, transforms, masks: bool) -> Relabeled:
    ds = CocoDataset(root, transforms=transforms, masks=masks)
    lut = [0] + [cats.index(data.name_of(n)) + 1 for n in ds.categories]
    return Relabeled(ds, lut)


def scorable(doc: dict) -> tuple[dict, int, int]:
    """(the COCO doc with every box clipped to its image and the boxes left without area dropped, boxes clipped, boxes
    dropped). A hand-labelled holdout can hold both; scored as they were, a detector that found every object exactly
    lost AP on them (0.96-0.98 for a perfect one)."""
    size = {im["id"]: (im.get("width"), im.get("height")) for im in doc["images"]}
    anns, clipped, dropped = [], 0, 0
    for a in doc["annotations"]:
        W, H = size.get(a["image_id"], (None, None))
        x, y, w, h = (float(v) for v in a["bbox"])
        if isinstance(W, (int, float)) and isinstance(H, (int, float)):
            x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
            if (x0, y0, x1, y1) != (x, y, x + w, y + h):
                clipped += 1
            x, y, w, h = x0, y0, x1 - x0, y1 - y0
        if w <= 0 or h <= 0:
            dropped += 1
            continue
        anns.append({**a, "bbox": [x, y, w, h]} if [x, y, w, h] != list(a["bbox"]) else a)
    return ({**doc, "annotations": anns} if clipped or dropped else doc), clipped, dropped


def holdout_box_warning(data: DataConfig) -> str | None:
    """One line when the holdout's boxes are clipped or dropped for scoring (:func:`scorable`)."""
    _, clipped, dropped = scorable(load_coco(data.holdout))
    if not clipped and not dropped:
        return None
    return (f"warning: holdout {data.holdout}: {clipped} box(es) reach outside their image (scored clipped to it) and "
            f"{dropped} have no area inside it (not scored); fix them in its annotations.json to score them as labelled.")


def _holdout_doc(data: DataConfig) -> dict:
    doc = scorable(load_coco(data.holdout))[0]
    if data.class_agnostic:
        doc = {**doc, "categories": [{"id": 1, "name": AGNOSTIC}], "annotations": [{**a, "category_id": 1} for a in doc["annotations"]]}
    return doc


def _scored_ids(hold: CocoDataset, data: DataConfig) -> list[int]:
    ids = [im["id"] for im in hold.images]
    return ids[: data.holdout_limit] if data.holdout_limit else ids


def _rescored(entry: dict, out: Path, data: DataConfig) -> dict:
    """A finished run's entry with its derived "any class" scores recomputed from its saved predictions: how they
    are computed may have changed since it was trained (cheap: no model is run), while the run itself stays."""
    pred_file = out / "predictions.json"
    if not pred_file.is_file():
        return entry
    gt = _holdout_doc(data)
    ids = _scored_ids(CocoDataset(data.holdout, masks=False, ignore_unknown=True), data)
    agn = any_class_scores(gt, json.loads(pred_file.read_text()), ids, data.class_agnostic)
    return {**entry, "map_agnostic": round(agn["map"], 4), "map50_agnostic": round(agn["map50"], 4)}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    v = {"python": platform.python_version()}
    for p in ("simgen", "torch", "torchvision", "pycocotools", "numpy"):
        try:
            v[p] = version(p)
        except PackageNotFoundError:
            v[p] = None
    return v


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- one run


def resolve_finetune_split(u: UtilityConfig) -> tuple[float, str]:
    """The finetune arm's synthetic share of the budget, and how it was chosen (for the log and report).

    A number is used as given. ``auto`` sizes the real phase in passes over the real training images: on a
    step budget it is ``ceil(passes * n_real / batch_size)`` steps, kept within FINETUNE_SPLIT_BOUNDS of the
    budget; a minute budget alone has no step count, so it takes FINETUNE_SPLIT_MINUTES."""
    if u.finetune_split != "auto":
        return float(u.finetune_split), "utility.finetune_split"
    t = u.job.trainer
    if not t.max_steps:
        return FINETUNE_SPLIT_MINUTES, f"auto: {FINETUNE_SPLIT_MINUTES:g} on a minute budget (set trainer.max_steps to size it from the real photos)"
    n_real = sum(len(load_coco(r)["images"]) for r in u.job.data.real)
    real_steps = -(-int(np.ceil(u.finetune_passes * n_real)) // t.batch_size)
    lo, hi = FINETUNE_SPLIT_BOUNDS
    raw = 1.0 - real_steps / t.max_steps
    split = min(max(raw, lo), hi)
    bound = " (bounded)" if split != raw else ""
    return split, (f"auto: {u.finetune_passes:g} passes over {n_real} real images at batch {t.batch_size} = {real_steps} steps of "
                   f"{t.max_steps}{bound}")


def finetune_until(t: TrainerConfig, split: float) -> float:
    """Budget fraction at which the finetune arm switches from synthetic to real. On a step budget it is a
    whole step, at least one on each side; on a minute budget the minutes split likewise."""
    if not t.max_steps:
        return split
    return min(max(1, round(split * t.max_steps)), t.max_steps - 1) / t.max_steps


def _loader(ds: MixedDataset, t: TrainerConfig, seed: int, skip: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, batch_size=t.batch_size, sampler=ds.sampler(seed, skip=skip), collate_fn=collate,
                                       num_workers=t.num_workers, persistent_workers=t.num_workers > 0)


def _mixed(real, syn, fraction: float) -> MixedDataset:
    try:
        return MixedDataset(real, syn, fraction)
    except ValueError as e:
        raise ConfigError(f"{e}.") from None


def _phases(arm: Arm, real, syn, t: TrainerConfig, seed: int, resume: dict | None) -> tuple[list[Phase], dict, str]:
    """The training streams of one arm, each skipping what a resumed run already consumed; the images each
    source offers; a description for the log."""
    if arm.finetune_split is not None:
        # One cosine schedule over both phases (same optimizer, the data source switches at the split step),
        # not a warm restart: at 70% of the budget the cosine is down to ~1/4 of the peak learning rate, the
        # usual fine-tuning regime, so real data refines the synthetic pretraining instead of a new warmup
        # undoing it; and the arm spends its budget on the schedule every other arm gets, so they compare fairly.
        until = finetune_until(t, arm.finetune_split)
        parts = [_mixed(None, syn, 1.0), _mixed(real, None, 0.0)]
        skips = phase_skips(resume, 2)
        steps = f" ({round(until * t.max_steps)} of {t.max_steps} steps)" if t.max_steps else ""
        return ([Phase("synthetic", _loader(parts[0], t, seed, skips[0]), until), Phase("real", _loader(parts[1], t, seed, skips[1]), 1.0)],
                {"real": parts[1].n_real, "synthetic": parts[0].n_synthetic}, f"synthetic only for {until:.0%} of the budget{steps}, then real only")
    mixed = _mixed(real, syn, arm.fraction)
    return [Phase("train", _loader(mixed, t, seed, phase_skips(resume, 1)[0]), 1.0)], mixed.used_sizes, f"synthetic share {arm.fraction:.2f}"


def _score_synthetic_val(model, roots_s, val_idx, cats: list[str], job: Job, device) -> dict:
    m, t = job.model, job.trainer
    vs, vgt = val_set(roots_s, val_idx, cats, job.data.name_of, eval_transforms())
    preds = predict(model, vs, device, input_size=m.input_size, max_size=m.max_size, batch_size=t.eval_batch_size)
    return coco_evaluate(vgt, coco_results(preds, label_to_category(cats, vgt)))


def _subset_identity(roots_s, idx) -> str:
    names = [f"{r}/{im['file_name']}" for r in roots_s for im in sorted(load_coco(r)["images"], key=lambda im: im["id"])]
    return _hash(sorted(names[i] for i in np.asarray(idx).tolist()))


# Trainer fields that change how a run is shown or scheduled on this machine, not what it learns: a
# finished run is reused (and a killed one resumed) when only these differ.
NOT_IDENTITY = ("progress", "checkpoint_minutes", "threads", "num_workers", "eval_batch_size")


def run_identity(t: TrainerConfig) -> dict:
    d = {k: v for k, v in asdict(t).items() if k not in NOT_IDENTITY}
    if not d.get("mosaic"):  # off: runs keep the identity they had before the setting existed (no retraining)
        d.pop("mosaic", None)
    return d


def model_identity(m: ModelConfig) -> dict:
    d = asdict(m)
    for k in ("head_convs", "classifier", "classifier_crop", "refine"):  # at their defaults: runs keep the identity they had before these existed
        if d.get(k) == getattr(ModelConfig, k):
            d.pop(k)
    return d


def _roots(job: Job, arm: Arm) -> tuple[tuple, tuple]:
    """The synthetic and real folders an arm trains on."""
    data = job.data
    return (data.synthetic if arm.fraction != 0.0 else (),
            data.real if arm.fraction != 1.0 or arm.finetune_split is not None else ())


def content_key(job: Job, arm: Arm) -> str:
    """What the settings hash names by path only: the content of the folders an arm trains on (each one's
    annotations.json: a re-render writes other labels) and of a weights file it starts from. A finished run whose key
    differs is trained again, not read back: the same command on data re-rendered since. Runs written before this
    key existed are read back as before."""
    roots_s, roots_r = _roots(job, arm)
    ident = {}
    for root in (*roots_s, *roots_r):
        ann = Path(root) / "annotations.json"
        ident[str(root)] = file_sha256(ann) if ann.is_file() else None
    w = job.model.weights
    if w and w != "DEFAULT" and Path(w).is_file():
        ident["weights"] = file_sha256(Path(w))
    return _hash(ident)


def run_keys(job: Job, arm: Arm, seed: int, hh: dict, cats: list[str]) -> tuple[str, str]:
    """(settings hash, config hash) of one run. The settings: what it learns from and how (not progress bars, threads or
    checkpoint timing) and the holdout's content, so that a finished run with the same key is read back instead of
    trained again. The config hash leaves the holdout's content out: a run whose holdout was edited since is the same
    command, scored again, not a run made with other settings (:func:`claim_run_folder`). ``cats``: the job's
    :func:`model_categories`, read once by the caller."""
    data = job.data
    roots_s, roots_r = _roots(job, arm)
    settings = {"model": model_identity(job.model), "trainer": run_identity(job.trainer),
                "data": {**asdict(data), "synthetic": roots_s, "real": roots_r},
                "fraction": arm.fraction, "seed": seed, "categories": cats,
                # the holdout by content (images and labels), not only its path: an edited holdout must not
                # reuse stale scores
                "holdout_content": [sorted(hh), file_sha256(data.holdout / "annotations.json")]}
    if arm.finetune_split is not None:
        settings["finetune_split"] = arm.finetune_split
    if arm.subset is not None:
        settings["synthetic_subset"] = asdict(arm.subset)
    return _hash(settings), _hash({k: v for k, v in settings.items() if k != "holdout_content"})


def run_one(job: Job, out: Path, synthetic_fraction: float | None, seed: int, name: str = "train",
            holdout_hashes: dict | None = None, log=None, arm: Arm | None = None) -> dict:
    """Train one model on ``job.data`` at ``synthetic_fraction`` (or as ``arm`` says) and score it on the holdout.

    Writes ``out/{checkpoint.pt, predictions.json, provenance.json, DATASHEET.md, metrics.json}`` (metrics.json
    last: it marks the run done); returns the run's report entry. A finished run with the same settings is read
    back instead of retrained. A full disk stops it with one line naming ``out`` (:mod:`simgen.train.files`).
    """
    with disk_full_guard(out):
        return _run_one(job, out, synthetic_fraction, seed, name, holdout_hashes, log, arm)


def _run_one(job: Job, out: Path, synthetic_fraction: float | None, seed: int, name: str, holdout_hashes: dict | None, log,
             arm: Arm | None) -> dict:
    log = log or (lambda m: None)
    arm = arm or Arm(name, synthetic_fraction)
    name, data, t, m = arm.name, job.data, job.trainer, job.model
    roots_s, roots_r = _roots(job, arm)
    hh = check_no_leak([*roots_s, *roots_r], data.holdout, holdout_hashes)
    cats = model_categories(data)
    key, config_key = run_keys(job, arm, seed, hh, cats)
    claim_run_folder(out, (key, config_key), job.overwrite, f"{name} (seed {seed})")
    content = content_key(job, arm)
    metrics_file = out / "metrics.json"
    if metrics_file.is_file():
        prev = json.loads(metrics_file.read_text())
        if prev.get("settings_hash") == key and prev.get("content_hash") not in (None, content):
            log(f"{name} (seed {seed}): its training data or starting weights changed since {metrics_file} was written; "
                "training again")
        elif prev.get("settings_hash") == key:
            log(f"{name} (seed {seed}): already done, reading {metrics_file}")
            return _rescored(prev["entry"], out, data)

    torch.manual_seed(seed)
    threads = apply_threads(t.threads, log)  # one line per command: the choice is kept for all its runs
    device = resolve_device(t.device)
    tf = train_transforms(t, m.input_size)
    # With mosaic on, the sets are read untransformed and each source (after any subset) is wrapped on its own:
    # a mosaic draws its other three images from the same source, so a mix keeps its real/synthetic share.
    item_tf = None if t.mosaic else tf
    syn = concat([_train_set(r, cats, data, item_tf, m.masks) for r in roots_s])
    real = concat([_train_set(r, cats, data, item_tf, m.masks) for r in roots_r])
    val_idx = None
    if arm.subset is not None:
        train_idx, val_idx = split_indices(len(syn), arm.subset)
        syn = torch.utils.data.Subset(syn, train_idx.tolist())
    if t.mosaic:
        syn, real = (Mosaic(d, tf, t.mosaic) if d else d for d in (syn, real))
    if arm.fraction is None:
        ns, nr = (len(syn) if syn else 0), (len(real) if real else 0)
        arm = replace(arm, fraction=ns / (ns + nr))
    # Trained before but its scores were never written (a full disk, a kill): score that model, do not train again.
    done = finished(out / "checkpoint.pt", key)
    resume = None if done is not None else resumable(out / "checkpoint.pt", key)  # killed mid-training: continue from its checkpoint
    for got in (done, resume):  # a checkpoint of the same settings trained on data (or from weights) since changed
        if got is not None and (got.get("meta") or {}).get("content_hash") not in (None, content):
            done = resume = None
    phases, used, how = _phases(arm, real, syn, t, seed, resume)
    model = build_model(m, len(cats))
    meta = {"categories": cats, "model": m.name, "input_size": m.input_size, "seed": seed, "settings_hash": key, "config_hash": config_key,
            "content_hash": content}
    log(f"{name} (seed {seed}): {m.name} at {m.input_size}px, {len(cats)} classes, {how}, {used} images, budget {t.budget()}")
    if done is not None:
        model.load_state_dict(done["model"])
        res = TrainResult(**done["meta"]["result"])
        log(f"{name} (seed {seed}): training finished in an earlier run ({res.steps} steps); scoring {out / 'checkpoint.pt'}")
    else:
        res = train(model, phases, t, device, input_size=m.input_size, max_size=m.max_size, checkpoint=out / "checkpoint.pt", meta=meta,
                    log=log, resume=resume)

    gt = _holdout_doc(data)
    hold = CocoDataset(data.holdout, transforms=eval_transforms(), masks=False, ignore_unknown=True)
    ids = _scored_ids(hold, data)
    if data.holdout_limit:
        hold = torch.utils.data.Subset(hold, range(min(data.holdout_limit, len(hold))))
    preds = predict(model, hold, device, input_size=m.input_size, max_size=m.max_size, batch_size=t.eval_batch_size)
    results = coco_results(preds, label_to_category(cats, gt))
    metrics = coco_evaluate(gt, results, image_ids=ids)
    agn = any_class_scores(gt, results, ids, data.class_agnostic)  # diagnostic: are the objects found at all?
    metrics["agnostic"] = {"map": agn["map"], "map50": agn["map50"]}
    write_json(out / "predictions.json", results)
    seen = share(s for s, n in res.sources_seen.items() for _ in range(n))
    entry = {"name": name, "kind": arm.kind, "seed": seed, "synthetic_fraction": round(arm.fraction, 4),
             "synthetic_share_seen": seen["synthetic_share"], "train_images": sum(used.values()), "train_images_by_source": used,
             "steps": res.steps, "minutes": res.minutes, "images_seen": res.images_seen, "map": round(metrics["map"], 4),
             "map50": round(metrics["map50"], 4), "map_agnostic": round(agn["map"], 4), "map50_agnostic": round(agn["map50"], 4),
             "per_class": {k: (None if v is None else round(v, 4)) for k, v in metrics["per_class"].items()},
             "per_class_ap50": {k: (None if v is None else round(v, 4)) for k, v in metrics["per_class_ap50"].items()}}
    if len(res.phases) > 1:
        entry["phases"] = [{k: p[k] for k in ("name", "steps", "images", "sources")} for p in res.phases]
    subset = None
    if arm.subset is not None:
        vm = _score_synthetic_val(model, roots_s, val_idx, cats, job, device)
        metrics["synthetic_val"] = vm
        entry.update(series=arm.series, synthetic_size=len(syn), synthetic_val_map=round(vm["map"], 4), synthetic_val_map50=round(vm["map50"], 4))
        subset = {**asdict(arm.subset), "train_images": len(syn), "val_images": len(val_idx),
                  "train_hash": _subset_identity(roots_s, train_idx), "val_hash": _subset_identity(roots_s, val_idx)}
    provenance = {
        "run": name, "kind": arm.kind, "seed": seed, "settings_hash": key, "device": res.device, "threads": threads.as_dict(),
        "command": sys.argv,
        "datasets": {"synthetic": [dataset_identity(r) for r in roots_s], "real": [dataset_identity(r) for r in roots_r]},
        "synthetic_fraction": arm.fraction, "sources_seen": seen, "finetune_split": arm.finetune_split, "phases": res.phases,
        "synthetic_subset": subset,
        "holdout": {**holdout_identity(data.holdout, hh), "images_scored": len(ids)},
        "categories": cats, "category_map": dict(data.category_map), "class_agnostic": data.class_agnostic,
        "model": asdict(m), "trainer": asdict(t), "train": {k: v for k, v in res.as_dict().items() if k != "phases"},
        "versions": versions(), "config": job.resolved,
    }
    write_json(out / "provenance.json", json.loads(json.dumps(provenance, default=str)))
    write_run_datasheet(out, provenance, entry)  # DATASHEET.md: datasets + hashes, holdout, guard, model, metrics
    write_json(metrics_file, {"settings_hash": key, "config_hash": config_key, "content_hash": content, "entry": entry, "metrics": metrics})
    log(f"{name} (seed {seed}): mAP {entry['map']:.3f}  AP50 {entry['map50']:.3f}  ({res.steps} steps, {res.minutes:.1f} min)")
    return entry


# ---------------------------------------------------------------------------- the protocol


def arms(u: UtilityConfig, finetune_split: float | None = None) -> list[Arm]:
    """The arms to train, in order; ``finetune_split``: the finetune arm's split where the caller resolved it already
    (resolving reads the real folders' annotations)."""
    out = []
    if u.tstr:
        out.append(Arm("TSTR", 1.0))
    if u.job.data.real:
        out += [Arm(f"mix-{f:g}", f) for f in u.fractions]
        if u.trtr:
            out.append(Arm("TRTR", 0.0))
        if u.finetune:
            split = resolve_finetune_split(u)[0] if finetune_split is None else finetune_split
            out.append(Arm("finetune", split, kind="finetune", finetune_split=split))
    return out


def best_mix(u: UtilityConfig, summary: list[dict]) -> float | None:
    """The synthetic fraction of the data-size curve's mix: ``utility.sizes_fraction``, else the mix arm with
    the highest mean mAP among those run; None without real data or mixes."""
    if not u.job.data.real:
        return None
    if u.sizes_fraction is not None:
        return u.sizes_fraction
    mixes = [e for e in summary if e.get("kind", "mix") == "mix" and 0 < e["synthetic_fraction"] < 1 and "map_mean" in e]
    return max(mixes, key=lambda e: e["map_mean"])["synthetic_fraction"] if mixes else None


def size_arms(u: UtilityConfig, fraction: float | None) -> tuple[list[Arm], str | None]:
    """TSTR, and the mix at ``fraction`` when given, on every planned subset size; and the capping note."""
    n = sum(len(load_coco(r)["images"]) for r in u.job.data.synthetic)
    sizes, note = plan_sizes(u.synthetic_sizes, n, u.synthetic_val)
    series = [("TSTR", 1.0)] + ([(f"mix-{fraction:g}", fraction)] if fraction is not None else [])
    return [Arm(f"{name}-n{k}", f, kind="size", subset=SyntheticSplit(u.job.seed, u.synthetic_val, k), series=name)
            for name, f in series for k in sizes], note


def run_sizes(u: UtilityConfig, summary: list[dict], hh: dict, log) -> dict:
    """The data-size curve: every size arm for every seed, then its summary, warnings and plot."""
    job = u.job
    fraction = best_mix(u, summary)
    if job.data.real and fraction is None:
        log("data-size curve: no mix arm ran (utility.fractions is empty), so only TSTR; set utility.sizes_fraction to add a mix")
    size_list, note = size_arms(u, fraction)
    if note:
        log(note)
    runs = [run_one(job, job.out / "runs" / f"{a.name}-s{seed}", a.fraction, seed, a.name, hh, log, arm=a) for a in size_list for seed in u.seeds]
    table = size_summary(runs)
    warnings = gap_warnings(table)
    for w in warnings:
        log(w)
    plot_sizes(table, job.out / "map_vs_size.png")
    return {"requested": list(u.synthetic_sizes), "sizes": sorted({a.subset.size for a in size_list}), "note": note,
            "permutation_seed": job.seed, "synthetic_val": u.synthetic_val, "mix_fraction": fraction,
            "mix_fraction_from": None if fraction is None else ("utility.sizes_fraction" if u.sizes_fraction is not None else "best mix by mean mAP"),
            "runs": runs, "summary": table, "warnings": warnings}


def run_utility(u: UtilityConfig, log=None) -> dict:
    log = log or (lambda m: None)
    job = u.job
    hh = check_no_leak([*job.data.synthetic, *job.data.real], job.data.holdout)
    cats = model_categories(job.data)  # fail fast on category mismatch, before any training
    if u.synthetic_sizes:
        size_arms(u, None)  # fail fast on a synthetic_val that leaves nothing to train on
    if not job.data.real and u.fractions:  # after the checks above: an error stays the only line
        log("no data.real given: running TSTR only (mixes, TRTR and finetune need a real training folder)")
    runs = []
    finetune = resolve_finetune_split(u) if u.finetune and job.data.real else None  # (split, how it was chosen)
    if finetune:
        log(f"finetune: synthetic for {finetune_until(job.trainer, finetune[0]):.0%} of the budget, then real; {finetune[1]}")
    planned = arms(u, finetune[0] if finetune else None)
    for arm in planned:  # every arm's folder claimed before the first trains: a refusal leaves nothing half-done
        for seed in u.seeds:
            claim_run_folder(job.out / "runs" / f"{arm.name}-s{seed}", run_keys(job, arm, seed, hh, cats), job.overwrite, f"{arm.name} (seed {seed})")
    for arm in planned:
        for seed in u.seeds:
            runs.append(run_one(job, job.out / "runs" / f"{arm.name}-s{seed}", arm.fraction, seed, arm.name, hh, log, arm=arm))
    summary = summarize(runs)
    report = {"runs": runs, "summary": summary, "holdout": str(job.data.holdout.resolve()), "model": job.model.name,
              "budget": job.trainer.budget(), "seeds": list(u.seeds), "class_agnostic": job.data.class_agnostic, "versions": versions()}
    report["warnings"] = failed_warnings(runs, summary)
    for w in report["warnings"]:
        log(w)
    if finetune:
        report["finetune"] = {"split": finetune[0], "switch_at": finetune_until(job.trainer, finetune[0]), "chosen_by": finetune[1],
                              "schedule": "one cosine schedule over both phases, the data source switches at the split"}
    if u.synthetic_sizes:
        report["sizes"] = run_sizes(u, summary, hh, log)
    bp = box_labels(job, runs)
    if bp is not None:
        report["box_precision"] = bp
    with disk_full_guard(job.out):
        write_json(job.out / "report.json", report)
        atomic_text(job.out / "report.md", report_markdown(u, report))
        plot(runs, summary, job.out / "map_vs_fraction.png")
        write_utility_datasheet(job.out, {**report, "runs": runs + (report.get("sizes") or {}).get("runs", [])})
    return report


def box_labels(job: Job, runs: list[dict]) -> dict | None:
    """How precise the holdout's box labels are, from the best run's boxes against every other run's
    (:mod:`simgen.report.boxnoise`); None with fewer than two runs. Masks and classes play no part."""
    from ..report.boxnoise import across_runs

    results = {}
    for r in runs:
        f = job.out / "runs" / f"{r['name']}-s{r['seed']}" / "predictions.json"
        if f.is_file():
            results[f"{r['name']}-s{r['seed']}"] = json.loads(f.read_text())
    if len(results) < 2:
        return None
    best = max(runs, key=lambda r: r.get("map") or 0.0)
    hold = CocoDataset(job.data.holdout, transforms=None, masks=False, ignore_unknown=True)
    return across_runs(_holdout_doc(job.data), _scored_ids(hold, job.data), results, f"{best['name']}-s{best['seed']}")


def report_markdown(u: UtilityConfig, report: dict) -> str:
    job, runs, summary = u.job, report["runs"], report["summary"]
    md = markdown_table(runs)
    if len(u.seeds) > 1:  # one row per arm: what to read first when seeds disagree
        md = summary_table(summary) + "\n\nEvery run:\n\n" + md
    if report.get("warnings"):
        md = "\n".join(report["warnings"]) + "\n\n" + md
    parts = [f"# Sim-to-real utility on `{job.data.holdout}`", "",
             f"model `{job.model.name}` at {job.model.input_size} px, budget {job.trainer.budget()} per run, seeds {list(u.seeds)}", "", md]
    if "finetune" in report:
        ft = report["finetune"]
        parts += ["", f"`finetune`: synthetic only for the first {ft['switch_at']:.0%} of the budget, then the real training folder "
                      f"for the rest; one cosine schedule and optimizer across both phases. Split: {ft.get('chosen_by', 'utility.finetune_split')}."]
    from ..report.boxnoise import ceiling_line

    line = ceiling_line(report["box_precision"]) if "box_precision" in report else None
    if line:
        parts += ["", line]
    if "sizes" in report:
        sz = report["sizes"]
        parts += ["", "## Data-size curve", "",
                  f"Nested subsets of the synthetic images (first N of one permutation from seed {sz['permutation_seed']}); "
                  f"{sz['synthetic_val']} other synthetic images score every size as synthetic validation"
                  + (f"; the mix is mix-{sz['mix_fraction']:g} ({sz['mix_fraction_from']})" if sz["mix_fraction"] is not None else "")
                  + ". Plot: `map_vs_size.png`.", ""]
        parts += [f"Note: {sz['note']}.", ""] if sz["note"] else []
        parts += [size_table(sz["summary"])]
        parts += ["", *sz["warnings"]] if sz["warnings"] else []
    return "\n".join(parts) + "\n"


SUMMARY_METRICS = ("map", "map50", "map50_agnostic")


# A run whose mAP is under this share of the median of its arm's other seeds did not train (measured on dice: a seed
# of a from-scratch 1000-step recipe ended at 0.08-0.11 where its others reached 0.45-0.53, for synthetic and real
# training alike); with 3+ seeds such a run is flagged, and the arm's mean is given with and without it.
FAILED_SHARE = 0.5


FAILED_GAP = 0.02  # mAP: and at least this far under it, so that seeds of a barely trained arm (0.009 vs 0.018) are noise


def failed_seeds(rs: list[dict]) -> list[int]:
    """Seeds of one arm's runs that failed to train: mAP under FAILED_SHARE of the median of the arm's other runs, and
    FAILED_GAP or more under it. Needs three runs or more (with two, which one failed cannot be told)."""
    if len(rs) < 3:
        return []
    out = []
    for r in rs:
        others = [o["map"] for o in rs if o is not r and o.get("map") is not None]
        if r.get("map") is None or not others:
            continue
        median = float(np.median(others))
        if r["map"] < FAILED_SHARE * median and median - r["map"] >= FAILED_GAP:
            out.append(r["seed"])
    return out


def summarize(runs: list[dict]) -> list[dict]:
    """One entry per arm over its seeds: mean and sample standard deviation (0 for a single seed) of
    mAP, AP50 and class-agnostic AP50, and the median mAP. Arms keep the order they ran in. Seeds that failed to
    train (:func:`failed_seeds`) are listed in ``failed_seeds``, with the mAP mean and std over the other seeds
    beside the full ones: the full mean stays the headline, the other says how much one collapse moved it."""
    by_arm: dict[str, list[dict]] = {}
    for r in runs:
        by_arm.setdefault(r["name"], []).append(r)
    out = []
    for name, rs in by_arm.items():
        e = {"name": name, "kind": rs[0].get("kind", "mix"), "synthetic_fraction": rs[0]["synthetic_fraction"], "seeds": [r["seed"] for r in rs]}
        for k in SUMMARY_METRICS:
            v = [r[k] for r in rs if r.get(k) is not None]
            if v:
                e[f"{k}_mean"], e[f"{k}_std"] = mean_std(v)
        maps = [r["map"] for r in rs if r.get("map") is not None]
        if maps:
            e["map_median"] = round(float(np.median(maps)), 4)
        failed = failed_seeds(rs)
        if failed:
            e["failed_seeds"] = failed
            e["map_mean_without_failed"], e["map_std_without_failed"] = mean_std(
                [r["map"] for r in rs if r["seed"] not in failed and r.get("map") is not None])
        out.append(e)
    return out


def failed_warnings(runs: list[dict], summary: list[dict]) -> list[str]:
    """One line per seed that failed to train, saying what it did to its arm's mean and what usually prevents it."""
    lines = []
    for e in summary:
        for seed in e.get("failed_seeds", []):
            r = next(r for r in runs if r["name"] == e["name"] and r["seed"] == seed)
            lines.append(f"warning: {e['name']} seed {seed} failed to train: mAP {r['map']:.3f}, under {FAILED_SHARE:.0%} of its "
                         f"other seeds' median; the arm's mAP is {e['map_mean']:.3f} ± {e['map_std']:.3f} with it, "
                         f"{e['map_mean_without_failed']:.3f} ± {e['map_std_without_failed']:.3f} without. A longer warmup "
                         f"(trainer.warmup_steps) or a lower trainer.lr usually prevents this; its training loss is in the log.")
    return lines


def fraction_cell(e: dict) -> str:
    """The synthetic-fraction cell of a run or arm: for the finetune arm its number is the share of the budget trained
    on synthetic before the switch to real (nothing is mixed), which the cell says."""
    if e.get("kind") == "finetune":
        return f"{e['synthetic_fraction']:g} of the budget, then real"
    return f"{e['synthetic_fraction']:g}"


def summary_table(summary: list[dict]) -> str:
    def cell(e: dict, k: str) -> str:
        return f"{e[k + '_mean']:.3f} ± {e[k + '_std']:.3f}" if k + "_mean" in e else "-"

    rows = [f"| {e['name']} | {fraction_cell(e)} | {len(e['seeds'])} | {cell(e, 'map')} | {cell(e, 'map50')} | "
            f"{cell(e, 'map50_agnostic')} |" for e in summary]
    return "\n".join(["| arm | synthetic fraction | seeds | mAP (mean ± std) | AP50 | AP50 any class |", "|---|---|---|---|---|---|", *rows])


def markdown_table(runs: list[dict]) -> str:
    classes = list(runs[0]["per_class"]) if runs else []
    head = ("| run | seed | synthetic fraction (seen) | train images | steps | minutes | mAP | AP50 | AP50 any class |"
            + "".join(f" AP {c} |" for c in classes))
    sep = "|---" * (9 + len(classes)) + "|"
    rows = []
    for r in runs:
        pc = "".join(f" {'-' if r['per_class'].get(c) is None else format(r['per_class'][c], '.3f')} |" for c in classes)
        seen = r.get("synthetic_share_seen")
        rows.append(f"| {r['name']} | {r['seed']} | {fraction_cell(r)} ({'-' if seen is None else format(seen, '.2f')}) | "
                    f"{r['train_images']} | {r['steps']} | {r.get('minutes', 0):.1f} | {r['map']:.3f} | {r['map50']:.3f} | "
                    f"{r.get('map50_agnostic', float('nan')):.3f} |{pc}")
    return "\n".join([head, sep, *rows])


def plot(runs: list[dict], summary: list[dict], path: Path) -> None:
    """AP against the synthetic fraction: the TSTR/mix/TRTR arms as a line, the finetune arm as its own star at
    its split (it is sequential, not a mix, so it is not joined to the line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for key, label, marker in (("map", "mAP@[.5:.95]", "o"), ("map50", "AP50", "s")):
        arms = sorted((e for e in summary if e.get("kind", "mix") == "mix"), key=lambda e: e["synthetic_fraction"])
        # One seed per arm: a plain line. Several: each run as a faint dot, the mean with a +-1 std bar.
        mix_runs = [r for r in runs if r.get("kind", "mix") == "mix"]
        dots = ax.scatter([r["synthetic_fraction"] for r in mix_runs], [r[key] for r in mix_runs], marker=marker, alpha=0.4)
        ax.errorbar([e["synthetic_fraction"] for e in arms], [e[f"{key}_mean"] for e in arms], yerr=[e[f"{key}_std"] for e in arms],
                    marker=marker, capsize=3, label=label, color=dots.get_facecolor()[0][:3])
        for e in (e for e in summary if e.get("kind") == "finetune"):
            ax.errorbar([e["synthetic_fraction"]], [e[f"{key}_mean"]], yerr=[e[f"{key}_std"]], marker="*", markersize=12, capsize=3,
                        linestyle="none", color=dots.get_facecolor()[0][:3], markeredgecolor="black",
                        label=f"finetune {label} (synthetic then real, split {e['synthetic_fraction']:g})")
    ax.set_xlabel("synthetic fraction of training samples")
    ax.set_ylabel("AP on real holdout")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(0, max(0.05, *(r["map50"] for r in runs)) * 1.15 if runs else 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
