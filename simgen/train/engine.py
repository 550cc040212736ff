"""The training engine: augmentations, one budgeted training loop, prediction, checkpoints.

Like torchvision's references/detection, the engine is two short functions (:func:`train` and
:func:`predict`); everything else is plain data. The budget is ``max_steps`` and/or ``max_minutes``:
the learning-rate schedule follows whichever runs out first, so arms of a comparison that get the
same budget get the same schedule.
"""
from __future__ import annotations

import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import v2

from ..errors import ConfigError


@dataclass(frozen=True)
class TrainerConfig:
    max_steps: int | None = 2000
    max_minutes: float | None = None
    batch_size: int = 8
    crop: int | None = 320  # train on square crops of this size at the model's scale; None: whole images
    scale_jitter: tuple[float, float] = (0.7, 1.3)
    hflip: bool = True
    vflip: bool = True
    color_jitter: float = 0.3  # brightness/contrast/saturation; hue gets a tenth
    grayscale_p: float = 0.05
    blur_p: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_frac: float = 0.05  # cosine decays to this fraction of lr
    grad_clip: float = 10.0
    num_workers: int = 0
    threads: int = 2  # torch CPU threads
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision where the device is CUDA
    checkpoint_minutes: float = 5.0
    progress: bool = True
    eval_batch_size: int = 4

    def budget(self) -> str:
        parts = [f"{self.max_steps} steps" if self.max_steps else "", f"{self.max_minutes:g} min" if self.max_minutes else ""]
        return " or ".join(p for p in parts if p)


def trainer_config(d: dict) -> TrainerConfig:
    from ..config import Fields, check_numbers

    f, t0 = Fields(d, "trainer", TrainerConfig.__dataclass_fields__, example="cpu"), TrainerConfig()
    device = f.text("device", t0.device)
    if device not in ("auto", "cpu", "cuda", "mps") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"trainer.device must be auto, cpu, cuda or cuda:N, got {device!r}; e.g. trainer.device=auto")
    jitter = check_numbers(f.get("scale_jitter", t0.scale_jitter), "trainer.scale_jitter", list(t0.scale_jitter), 2, lo=0, lo_open=True)
    if jitter[0] > jitter[1]:
        raise ConfigError(f"trainer.scale_jitter must be [low, high] with low <= high, got {list(jitter)}; e.g. trainer.scale_jitter=[0.7,1.3]")
    cfg = TrainerConfig(
        max_steps=f.integer("max_steps", t0.max_steps, lo=1, optional=True), max_minutes=f.number("max_minutes", t0.max_minutes, lo=0, lo_open=True, optional=True, example=10),
        batch_size=f.integer("batch_size", t0.batch_size, lo=1), crop=f.integer("crop", t0.crop, lo=32, optional=True), scale_jitter=jitter,  # type: ignore[arg-type]
        hflip=f.flag("hflip", t0.hflip), vflip=f.flag("vflip", t0.vflip), color_jitter=f.number("color_jitter", t0.color_jitter, lo=0),  # type: ignore[arg-type]
        grayscale_p=f.prob("grayscale_p", t0.grayscale_p), blur_p=f.prob("blur_p", t0.blur_p), lr=f.number("lr", t0.lr, lo=0, lo_open=True),  # type: ignore[arg-type]
        weight_decay=f.number("weight_decay", t0.weight_decay, lo=0), warmup_steps=f.integer("warmup_steps", t0.warmup_steps, lo=0),  # type: ignore[arg-type]
        min_lr_frac=f.prob("min_lr_frac", t0.min_lr_frac), grad_clip=f.number("grad_clip", t0.grad_clip, lo=0),  # type: ignore[arg-type]
        num_workers=f.integer("num_workers", t0.num_workers, lo=0), threads=f.integer("threads", t0.threads, lo=0), device=device,  # type: ignore[arg-type]
        amp=f.flag("amp", t0.amp), checkpoint_minutes=f.number("checkpoint_minutes", t0.checkpoint_minutes, lo=0),  # type: ignore[arg-type]
        progress=f.flag("progress", t0.progress), eval_batch_size=f.integer("eval_batch_size", t0.eval_batch_size, lo=1))  # type: ignore[arg-type]
    if not cfg.max_steps and not cfg.max_minutes:
        raise ConfigError("trainer needs a budget: set trainer.max_steps and/or trainer.max_minutes.")
    return cfg


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available here; use trainer.device=auto or cpu.")
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
    """Tensors and plain values only, so ``torch.load(weights_only=True)`` reads it back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta, **(extra or {})}
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def resumable(path: Path, settings_hash: str) -> dict | None:
    """The periodic checkpoint of an unfinished run with the same settings, or None. A run killed
    mid-training restarts from it (model, optimizer, step, budget used, RNG) instead of from scratch."""
    if not path.is_file():
        return None
    try:
        obj = load_checkpoint(path)
    except Exception:  # a damaged or foreign file: train from scratch and overwrite it
        return None
    meta = obj.get("meta", {}) if isinstance(obj, dict) else {}
    if not meta.get("partial") or meta.get("settings_hash") != settings_hash or "optimizer" not in obj:
        return None
    return obj


def load_checkpoint(path: Path, model: nn.Module | None = None, optimizer=None) -> dict:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if model is not None:
        model.load_state_dict(obj["model"])
    if optimizer is not None and "optimizer" in obj:
        optimizer.load_state_dict(obj["optimizer"])
    return obj


# ---------------------------------------------------------------------------- training


def _lr_factor(progress: float, step: int, t: TrainerConfig) -> float:
    warm = min(1.0, (step + 1) / max(1, t.warmup_steps))
    cos = t.min_lr_frac + (1 - t.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return warm * cos


def _to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device) for k, v in t.items() if isinstance(v, torch.Tensor)} for t in targets]
    return images, targets


@dataclass
class TrainResult:
    steps: int
    minutes: float
    images_seen: int
    sources_seen: dict  # {"real": n, "synthetic": n} from the samples' ``source``
    final_loss: float
    device: str

    def as_dict(self) -> dict:
        return asdict(self)


def train(model: nn.Module, loader, t: TrainerConfig, device: torch.device, *, input_size: int, max_size: int,
          checkpoint: Path | None = None, meta: dict | None = None, log=None, resume: dict | None = None) -> TrainResult:
    """Train until the step or time budget runs out. ``loader`` yields ``(images, targets)`` forever.

    ``resume`` is a checkpoint from :func:`resumable`; the caller's loader must already skip the samples
    its ``step`` consumed (``MixSampler(skip=...)``), so the run continues the same sample stream."""
    set_model_sizes(model, input_size, max_size, t.crop, training=True)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=t.lr)
    use_amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    # Before any RNG restore: creating a DataLoader iterator draws a base seed from torch's generator.
    it = iter(loader)
    step, seen, sources, ema, used_minutes = 0, 0, Counter(), float("nan"), 0.0
    if resume is not None:
        rm = resume["meta"]
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        if "scaler" in resume:
            scaler.load_state_dict(resume["scaler"])
        if "rng" in resume:
            torch.set_rng_state(resume["rng"])  # augmentations draw from torch's global generator
        step, seen, sources, ema, used_minutes = rm["step"], rm["seen"], Counter(rm["sources"]), rm["ema"], rm["minutes"]
        if log:
            log(f"resuming from step {step} ({used_minutes:.1f} min already trained)")
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
        images, targets = next(it)
        sources.update(tg.get("source", "unknown") for tg in targets)
        seen += len(images)
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
        step += 1
        ema = loss.item() if math.isnan(ema) else 0.95 * ema + 0.05 * loss.item()
        if pbar is not None:
            pbar.update(1)
            pbar.set_postfix(loss=f"{ema:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}", min=f"{minutes:.1f}")
        if checkpoint is not None and t.checkpoint_minutes and time.monotonic() - last_ckpt > 60 * t.checkpoint_minutes:
            # Everything a resumed run needs to continue as if never stopped (see ``resumable``).
            state = {"partial": True, "step": step, "seen": seen, "sources": dict(sources), "ema": ema,
                     "minutes": (time.monotonic() - start) / 60}
            save_checkpoint(checkpoint, model, {**(meta or {}), **state}, opt,
                            extra={"rng": torch.get_rng_state(), "scaler": scaler.state_dict()})
            last_ckpt = time.monotonic()
    if pbar is not None:
        pbar.close()
    minutes = (time.monotonic() - start) / 60
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, {**(meta or {}), "step": step})
    if log:
        log(f"trained {step} steps in {minutes:.1f} min on {device} (loss {ema:.3f})")
    return TrainResult(step, round(minutes, 3), seen, dict(sources), round(ema, 4), str(device))


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
