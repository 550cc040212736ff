"""The training engine: augmentations, one budgeted training loop, prediction, checkpoints.

Like torchvision's references/detection, the engine is two short functions (:func:`train` and
:func:`predict`); everything else is plain data. The budget is ``max_steps`` and/or ``max_minutes``:
the learning-rate schedule follows whichever runs out first, so arms of a comparison that get the
same budget get the same schedule. A run may be split into :class:`Phase` s (pretrain on synthetic,
fine-tune on real) that share that schedule, and may keep an EMA of its weights (``trainer.ema``).
"""
from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from ..errors import ConfigError
from .config import TrainerConfig, trainer_config  # noqa: F401  (re-exported)


def resolve_device(name: str) -> torch.device:
    """The torch device for ``trainer.device``; one that this machine lacks is a one-line ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available here; use trainer.device=auto or cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"trainer.device={name} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); e.g. trainer.device=cuda:0")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"trainer.device={name} but Apple's MPS is not available here; use trainer.device=auto or cpu.")
    return dev


# ---------------------------------------------------------------------------- augmentations


def train_transforms(t: TrainerConfig, input_size: int) -> v2.Compose:
    """Scale to the model's resolution (with jitter), crop, flip, photometric noise; float images."""
    ops: list = []
    if t.crop:
        lo, hi = (max(8, round(input_size * s)) for s in t.scale_jitter)
        ops += [v2.RandomResize(lo, hi + 1, antialias=True), v2.RandomCrop(t.crop, pad_if_needed=True)]
    if t.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if t.vflip:
        ops.append(v2.RandomVerticalFlip())
    if t.color_jitter:
        c = t.color_jitter
        ops.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c, hue=min(0.5, c / 10)))
    if t.grayscale_p:
        ops.append(v2.RandomGrayscale(t.grayscale_p))
    if t.blur_p:
        ops.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.3, 1.5))], p=t.blur_p))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes(min_size=3)]
    return v2.Compose(ops)


class Mosaic(torch.utils.data.Dataset):
    """Mosaic augmentation (YOLOv4, Bochkovskiy et al. 2020), scale-preserving.

    With probability ``p`` an item is built from four images of the same set (``base[idx]`` and three drawn at
    random): each resized to the first one's size and tiled 2x2 on a canvas twice that size, then a window of
    the first image's size is cut at a random centre in the middle half of the canvas. Objects keep their pixel
    size (a mosaic that shrank them would shift the scale the simulator was fitted to); each crop shows up to four
    scenes, grounds and lightings, and objects cut by the window's edges. A box keeps its label when at least
    ``min_kept`` of its area stays inside; smaller remnants are dropped. Then ``transforms`` as for any item.
    Draws come from torch's global generator, like the other augmentations (so a resumed run continues them).
    Mosaic items are drawn within ``base`` only: wrap each source separately so that mixes keep their shares.
    """

    def __init__(self, base, transforms, p: float, min_kept: float = 0.25) -> None:
        self.base, self.transforms, self.p, self.min_kept = base, transforms, p, min_kept

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int):
        img, target = self.base[idx]
        if self.p > 0 and len(self.base) > 1 and float(torch.rand(())) < self.p:
            others = [int(j) for j in torch.randint(len(self.base), (3,))]
            img, target = self._mosaic([(img, target)] + [self.base[j] for j in others])
        return self.transforms(img, target) if self.transforms is not None else (img, target)

    def _mosaic(self, items: list) -> tuple:
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        h, w = items[0][0].shape[-2:]
        canvas = torch.full((3, 2 * h, 2 * w), 114, dtype=items[0][0].dtype)
        has_masks = all("masks" in t for _, t in items)
        boxes, labels, masks = [], [], []
        for k, (im, t) in enumerate(items):
            b = t["boxes"]
            if im.shape[-2:] != (h, w):
                im, b = F.resize(im, [h, w], antialias=True), F.resize(b, [h, w])
                if has_masks:
                    t = {**t, "masks": F.resize(t["masks"], [h, w])}
            oy, ox = (k // 2) * h, (k % 2) * w
            canvas[:, oy:oy + h, ox:ox + w] = im
            boxes.append(b.as_subclass(torch.Tensor) + torch.tensor([ox, oy, ox, oy], dtype=torch.float32))
            labels.append(t["labels"])
            if has_masks:
                m = torch.zeros((len(b), 2 * h, 2 * w), dtype=torch.uint8)
                m[:, oy:oy + h, ox:ox + w] = t["masks"]
                masks.append(m)
        cx = int(torch.randint(w // 2, w + w // 2 + 1, ()))
        cy = int(torch.randint(h // 2, h + h // 2 + 1, ()))
        x0, y0 = cx - w // 2, cy - h // 2
        box = torch.cat(boxes) - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
        clipped = torch.stack([box[:, 0].clamp(0, w), box[:, 1].clamp(0, h), box[:, 2].clamp(0, w), box[:, 3].clamp(0, h)], 1)
        kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = kept_area >= self.min_kept * area.clamp(min=1e-6)
        out = {**items[0][1], "boxes": tv_tensors.BoundingBoxes(clipped[keep], format="XYXY", canvas_size=(h, w)),
               "labels": torch.cat(labels)[keep]}
        if has_masks:
            out["masks"] = tv_tensors.Mask(torch.cat(masks)[keep][:, y0:y0 + h, x0:x0 + w])
        return tv_tensors.Image(canvas[:, y0:y0 + h, x0:x0 + w]), out


def eval_transforms() -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])


def set_model_sizes(model: nn.Module, input_size: int, max_size: int, crop: int | None, training: bool) -> None:
    """Crops arrive already at the model's scale: the model's own resize must leave them alone."""
    tr = getattr(model, "transform", None)
    if tr is None:
        return
    if training and crop:
        tr.min_size, tr.max_size = (crop,), crop
    else:
        tr.min_size, tr.max_size = (input_size,), max_size


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model: nn.Module, meta: dict, optimizer=None, extra: dict | None = None) -> None:
    """Tensors and plain values only, so ``torch.load(weights_only=True)`` reads it back. Written whole or not
    at all (:func:`simgen.train.files.atomic_save`): a full disk or a kill mid-write leaves the previous
    checkpoint in place. Through a Python file object, so a full disk is an ``OSError`` (ENOSPC), not the
    RuntimeError torch's own file writer raises."""
    from .files import atomic_save

    obj = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta, **(extra or {})}
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    atomic_save(path, lambda f: torch.save(obj, f))


def resumable(path: Path, settings_hash: str, warn: Callable[[str], None] | None = None) -> dict | None:
    """The periodic checkpoint of an unfinished run with the same settings, or None. A run killed
    mid-training restarts from it (model, optimizer, step, budget used, RNG) instead of from scratch.

    A file that cannot be read (cut short by a machine crash or a full disk, or not a checkpoint) is not
    fatal: the run trains from scratch and replaces it, and says so in one line (``warn``, default stderr),
    since the user expected a resume."""
    if not path.is_file():
        return None
    try:
        obj = load_checkpoint(path)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
        (warn or _warn)(f"simgen: warning: checkpoint {path} cannot be read ({type(e).__name__}: it is damaged or not a "
                        "checkpoint); training this run from scratch, which replaces it.")
        return None
    meta = obj.get("meta", {}) if isinstance(obj, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    if not meta.get("partial") or meta.get("settings_hash") != settings_hash or "optimizer" not in obj:
        return None
    return obj


def finished(path: Path, settings_hash: str) -> dict | None:
    """The final checkpoint of a run with the same settings that finished training (it holds the run's
    :class:`TrainResult`) but did not get to write its scores (a full disk, a kill), or None. The rerun
    loads it instead of training again. A checkpoint that cannot be read is None: :func:`resumable` says so."""
    if not path.is_file():
        return None
    try:
        obj = load_checkpoint(path)
    except Exception:  # damaged: resumable() warns and the run trains from scratch
        return None
    meta = obj.get("meta", {}) if isinstance(obj, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("partial") or meta.get("settings_hash") != settings_hash or not isinstance(meta.get("result"), dict):
        return None
    return obj


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr)


def load_checkpoint(path: Path, model: nn.Module | None = None, optimizer=None) -> dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if model is not None:
        model.load_state_dict(obj["model"])
    if optimizer is not None and "optimizer" in obj:
        optimizer.load_state_dict(obj["optimizer"])
    return obj


# ---------------------------------------------------------------------------- training


WARMUP_SHARE = 5  # the warmup takes at most a fifth of a step budget: the recipes' 200 of 1,000 steps, unchanged


def warmup_steps(t: TrainerConfig) -> int:
    """``trainer.warmup_steps``, capped at a fifth of ``max_steps`` where that is the budget: a 30-step run under
    trainer=cpu's 200-step warmup peaked at 4% of trainer.lr (warmup x cosine) and every arm scored 0."""
    return min(t.warmup_steps, max(1, t.max_steps // WARMUP_SHARE)) if t.max_steps else t.warmup_steps


def _lr_factor(progress: float, step: int, t: TrainerConfig) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup_steps(t)))
    cos = t.min_lr_frac + (1 - t.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return warm * cos


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device) for k, v in t.items() if isinstance(v, torch.Tensor)} for t in targets]
    return images, targets


@dataclass(frozen=True)
class Phase:
    """One stretch of a training run with its own sample stream. It trains until ``until`` of the budget is
    used (the progress that drives the schedule: steps or minutes, whichever runs out first); then the next
    phase takes over with the same model, optimizer and learning-rate schedule."""

    name: str
    loader: Any
    until: float = 1.0


def phase_skips(resume: dict | None, n: int) -> list[int]:
    """Samples each phase's stream already gave a resumed run: its loader's sampler must skip them."""
    if resume is None:
        return [0] * n
    rec = resume["meta"].get("phases") or [{"images": resume["meta"]["seen"]}]
    return [int(rec[i]["images"]) if i < len(rec) else 0 for i in range(n)]


@dataclass
class TrainResult:
    steps: int
    minutes: float
    images_seen: int
    sources_seen: dict  # {"real": n, "synthetic": n} from the samples' ``source``
    final_loss: float
    device: str
    phases: list = field(default_factory=list)  # per phase: name, until, start_step, steps, images, sources
    ema: float | None = None  # the EMA decay when the model holds averaged weights

    def as_dict(self) -> dict:
        return asdict(self)


def _ema_model(model: nn.Module, decay: float):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    # use_buffers: BatchNorm statistics are averaged along with the weights, so the averaged model is
    # evaluated with statistics that belong to it (otherwise it would need a pass of update_bn).
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _as_phases(loader) -> list[Phase]:
    if isinstance(loader, (list, tuple)) and loader and all(isinstance(p, Phase) for p in loader):
        return list(loader)
    return [Phase("train", loader, 1.0)]


def train(model: nn.Module, loader, t: TrainerConfig, device: torch.device, *, input_size: int, max_size: int,
          checkpoint: Path | None = None, meta: dict | None = None, log=None, resume: dict | None = None) -> TrainResult:
    """Train until the step or time budget runs out. ``loader`` yields ``(images, targets)`` forever, or is a
    list of :class:`Phase` (e.g. pretrain on synthetic, then fine-tune on real) that share one schedule.

    ``resume`` is a checkpoint from :func:`resumable`; the caller's loaders must already skip the samples it
    consumed (``MixSampler(skip=...)`` with :func:`phase_skips`), so the run continues the same streams.
    With ``t.ema`` the model ends holding its exponential moving average: what is evaluated and saved."""
    phases = _as_phases(loader)
    if warmup_steps(t) < t.warmup_steps and log is not None and resume is None:
        log(f"trainer.warmup_steps={t.warmup_steps} is more than a fifth of trainer.max_steps={t.max_steps}: warming up over "
            f"{warmup_steps(t)} steps")
    set_model_sizes(model, input_size, max_size, t.crop, training=True)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=t.lr)
    use_amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    # Every phase's iterator is made now, before any RNG restore: creating a DataLoader iterator draws a
    # base seed from torch's generator, so making one mid-run would differ between a resumed run and a whole one.
    its = [iter(p.loader) for p in phases]
    records = [{"name": p.name, "until": p.until, "start_step": None, "steps": 0, "images": 0, "sources": {}} for p in phases]
    step, seen, sources, loss_avg, used_minutes, k = 0, 0, Counter(), float("nan"), 0.0, 0
    if resume is not None:
        rm = resume["meta"]
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        if "scaler" in resume:
            scaler.load_state_dict(resume["scaler"])
        if "rng" in resume:
            torch.set_rng_state(resume["rng"])  # augmentations draw from torch's global generator
        step, seen, sources, loss_avg, used_minutes = rm["step"], rm["seen"], Counter(rm["sources"]), rm["loss_avg"], rm["minutes"]
        records, k = rm.get("phases") or records, rm.get("phase", 0)
        if log:
            log(f"resuming from step {step} ({used_minutes:.1f} min already trained)")
    ema = _ema_model(model, t.ema) if t.ema else None  # after a resume's load: a fresh average starts from it...
    if ema is not None and resume is not None and "ema_model" in resume:
        ema.load_state_dict(resume["ema_model"])  # ...unless the checkpoint holds the average itself
    pbar = None
    if t.progress:
        from tqdm import tqdm

        pbar = tqdm(total=t.max_steps or None, initial=step, desc="train", file=sys.stderr, dynamic_ncols=True, leave=False)
    # A minute budget counts the minutes spent before a resume too.
    start = time.monotonic() - 60 * used_minutes
    last_ckpt = time.monotonic()
    while True:
        minutes = (time.monotonic() - start) / 60
        progress = max(step / t.max_steps if t.max_steps else 0.0, minutes / t.max_minutes if t.max_minutes else 0.0)
        if progress >= 1.0:
            break
        while k < len(phases) - 1 and progress >= phases[k].until:
            k += 1
            if log:
                log(f"phase {phases[k].name} from step {step} ({minutes:.1f} min)")
        rec = records[k]
        if rec["start_step"] is None:
            rec["start_step"] = step
        images, targets = next(its[k])
        batch_sources = [tg.get("source", "unknown") for tg in targets]
        sources.update(batch_sources)
        rec["sources"] = dict(Counter(rec["sources"]) + Counter(batch_sources))
        seen += len(images)
        rec["steps"], rec["images"] = rec["steps"] + 1, rec["images"] + len(images)
        images, targets = _to_device(images, targets, device)
        for g in opt.param_groups:
            g["lr"] = t.lr * _lr_factor(progress, step, t)
        with torch.autocast(device.type, enabled=use_amp):
            losses = model(images, targets)
            loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}: lower trainer.lr or raise trainer.warmup_steps.")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        scaler.step(opt)
        scaler.update()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss.item()
        if pbar is not None:
            pbar.update(1)
            pbar.set_postfix(loss=f"{loss_avg:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}", min=f"{minutes:.1f}")
        if checkpoint is not None and t.checkpoint_minutes and time.monotonic() - last_ckpt > 60 * t.checkpoint_minutes:
            # Everything a resumed run needs to continue as if never stopped (see ``resumable``).
            state = {"partial": True, "step": step, "seen": seen, "sources": dict(sources), "loss_avg": loss_avg,
                     "minutes": (time.monotonic() - start) / 60, "phases": records, "phase": k}
            extra = {"rng": torch.get_rng_state(), "scaler": scaler.state_dict()}
            if ema is not None:
                extra["ema_model"] = ema.state_dict()
            save_checkpoint(checkpoint, model, {**(meta or {}), **state}, opt, extra=extra)
            last_ckpt = time.monotonic()
    if pbar is not None:
        pbar.close()
    minutes = (time.monotonic() - start) / 60
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())  # evaluate and save the averaged weights
    result = TrainResult(step, round(minutes, 3), seen, dict(sources), round(loss_avg, 4), str(device), records, t.ema)
    if checkpoint is not None:  # with the result: a rerun that finds it (scores not written) need not train again
        save_checkpoint(checkpoint, model, {**(meta or {}), "step": step, "ema": t.ema, "result": result.as_dict()})
    if log:
        log(f"trained {step} steps in {minutes:.1f} min on {device} (loss {loss_avg:.3f})" + (f", EMA {t.ema:g} weights" if ema else ""))
    return result


@torch.no_grad()
def predict(model: nn.Module, dataset, device: torch.device, *, input_size: int, max_size: int, batch_size: int = 4,
            threshold: float = 0.0) -> dict[int, dict]:
    """``{image_id: {"boxes" (N,4 xyxy, original pixels), "scores", "labels"}}`` on CPU tensors."""
    set_model_sizes(model, input_size, max_size, None, training=False)
    model.to(device).eval()
    out: dict[int, dict] = {}
    for i in range(0, len(dataset), batch_size):
        batch = [dataset[j] for j in range(i, min(len(dataset), i + batch_size))]
        images = [im.to(device) for im, _ in batch]
        preds = model(images)
        for (_, tg), p in zip(batch, preds):
            keep = p["scores"] >= threshold
            out[int(tg["image_id"])] = {k: p[k][keep].detach().float().cpu() if k != "labels" else p[k][keep].cpu() for k in ("boxes", "scores", "labels")}
    return out
