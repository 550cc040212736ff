"""The configuration of ``simgen train`` and ``simgen utility``: frozen dataclasses and the functions that check
every field of the composed config and build them.

Nothing here imports torch (~3-8 s on a small machine): a typo in the command line is one line at once, before the
training modules load. :mod:`.engine`, :mod:`.models` and :mod:`.utility` re-export these names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import SEED_MAX, Fields, bad_value, check_choice, check_numbers
from ..errors import ConfigError, DatasetError, did_you_mean

# ---------------------------------------------------------------------------- trainer


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
    threads: int | str = "auto"  # torch CPU threads: "auto" (the free cores, see threads.py) or a number
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision where the device is CUDA
    checkpoint_minutes: float = 5.0
    progress: bool = True
    eval_batch_size: int = 4
    ema: float | None = None  # decay of an exponential moving average of the weights (e.g. 0.999); None: off
    mosaic: float = 0.0  # probability that a training item is a 2x2 mosaic of four images of its set (see Mosaic)

    def budget(self) -> str:
        parts = [f"{self.max_steps} steps" if self.max_steps else "", f"{self.max_minutes:g} min" if self.max_minutes else ""]
        return " or ".join(p for p in parts if p)


def trainer_config(d: dict) -> TrainerConfig:
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
        num_workers=f.integer("num_workers", t0.num_workers, lo=0), threads=_threads(f), device=device,  # type: ignore[arg-type]
        amp=f.flag("amp", t0.amp), checkpoint_minutes=f.number("checkpoint_minutes", t0.checkpoint_minutes, lo=0),  # type: ignore[arg-type]
        progress=f.flag("progress", t0.progress), eval_batch_size=f.integer("eval_batch_size", t0.eval_batch_size, lo=1),  # type: ignore[arg-type]
        ema=f.number("ema", t0.ema, lo=0, hi=1, lo_open=True, hi_open=True, optional=True, example=0.999),  # type: ignore[arg-type]
        mosaic=f.prob("mosaic", t0.mosaic))  # type: ignore[arg-type]
    if not cfg.max_steps and not cfg.max_minutes:
        raise ConfigError("trainer needs a budget: set trainer.max_steps and/or trainer.max_minutes.")
    return cfg


def _threads(f) -> int | str:
    v = f.get("threads", "auto")
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise bad_value("trainer.threads", "auto or an integer >= 1", v, "auto")
    return v


# ---------------------------------------------------------------------------- model

MODELS = ("frcnn_lite", "fcos_lite", "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn")
MASK_MODELS = ("maskrcnn_resnet50_fpn_v2",)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "frcnn_lite"
    weights: str | None = None  # None | "DEFAULT" | path to a .pt/.pth (ours or a state_dict)
    weights_backbone: str | None = None  # None | "DEFAULT" (ImageNet; needs internet)
    input_size: int = 416  # shorter image side the model sees (torchvision's min_size)
    max_size: int = 693  # longer side cap
    trunk: str = "resnet18"  # lite models: resnet18 | tiny
    channels: int = 64  # FPN channels of the lite models
    head_convs: int = 2  # fcos_lite: conv layers in each head tower (classification, box) before its output
    classifier: str = "none"  # none | crop: a class-agnostic detector + a CNN that reads each object from a crop (cropcls.py)
    classifier_crop: int = 32  # side of that crop in pixels, taken at the model's scale
    refine: int = 0  # classifier=crop: times a crop CNN moves each detected box's edges before it is named (0: off; cropcls.py)
    anchor_sizes: tuple[tuple[int, ...], ...] = ((16, 24), (32, 48))  # per FPN level (stride 8, 16)
    aspect_ratios: tuple[float, ...] = (0.8, 1.0, 1.25)
    rpn_pre_nms: tuple[int, int] = (600, 300)  # train, test
    rpn_post_nms: tuple[int, int] = (300, 150)
    box_batch_size: int = 128  # RoIs per image for the box head
    detections: int = 100
    score_thresh: float = 0.01

    @property
    def masks(self) -> bool:
        return self.name in MASK_MODELS


LITE_MODELS = ("frcnn_lite", "fcos_lite")
# Keys only the lite models read; the torchvision models take them from torchvision and would ignore them.
LITE_KEYS = ("trunk", "channels", "anchor_sizes", "aspect_ratios", "rpn_pre_nms", "rpn_post_nms", "box_batch_size")
FPN_LEVELS = 2  # the lite models' FPN: stride 8 and 16, one anchor-size list per level
BACKBONES = {"frcnn_lite": "resnet18", "fcos_lite": "resnet18", "fasterrcnn_resnet50_fpn_v2": "resnet50",
             "maskrcnn_resnet50_fpn_v2": "resnet50", "fasterrcnn_mobilenet_v3_large_fpn": "mobilenet_v3_large"}


def _none(v):
    return None if v is None or str(v).lower() in ("none", "null", "") else v


def _int_list(v, name: str, example, n: int | None = None, lo: int = 1) -> tuple[int, ...]:
    """A list of integers >= lo (exactly ``n`` of them when given)."""
    ok = isinstance(v, (list, tuple)) and (len(v) == n if n else len(v) >= 1) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= lo for x in v)
    if not ok:
        count = f"{n} integers" if n else "integers"
        raise bad_value(name, f"a list of {count} >= {lo}", v, example)
    return tuple(v)


def _weights_names(model: str) -> tuple[str, ...]:
    """torchvision's names for the backbone's pretrained weights (DEFAULT, IMAGENET1K_V1, ...)."""
    try:
        from torchvision.models import get_model_weights

        return tuple(dict.fromkeys(("DEFAULT", *get_model_weights(BACKBONES[model]).__members__)))
    except Exception:  # an old torchvision without the registry
        return ("DEFAULT",)


def model_config(d: dict) -> ModelConfig:
    """The ``model`` group, every field checked by type and range: a bad one is one line naming the field
    and a valid value, raised before anything is built or written."""
    f, m0 = Fields(d, "model", ModelConfig.__dataclass_fields__, example="fcos_lite"), ModelConfig()
    name = f.get("name", m0.name)
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"unknown model `{name}`." + did_you_mean(str(name), MODELS))
    lite = name in LITE_MODELS
    trunk = check_choice(f.get("trunk", m0.trunk), "model.trunk", ("resnet18", "tiny"), "tiny")
    input_size = f.integer("input_size", m0.input_size, lo=32)
    max_size = f.get("max_size", m0.max_size)
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < input_size:
        raise bad_value("model.max_size", f"an integer >= model.input_size ({input_size}): the cap on the longer side", max_size,
                        max(m0.max_size, input_size))
    channels = f.integer("channels", m0.channels, lo=1, example=64)
    if name == "fcos_lite" and channels % 32:
        raise bad_value("model.channels", "a multiple of 32 for fcos_lite (its head uses GroupNorm(32))", channels, 64)

    example_anchors = [list(a) for a in m0.anchor_sizes]
    anchors = f.get("anchor_sizes", m0.anchor_sizes)
    if not isinstance(anchors, (list, tuple)) or len(anchors) != FPN_LEVELS or not all(isinstance(a, (list, tuple)) for a in anchors):
        raise bad_value("model.anchor_sizes", f"a list of {FPN_LEVELS} lists of anchor sizes in pixels, one per FPN level (stride 8, 16)",
                        anchors, example_anchors)
    anchors = tuple(_int_list(a, "model.anchor_sizes", example_anchors, lo=2) for a in anchors)
    if name == "frcnn_lite" and len({len(a) for a in anchors}) > 1:
        raise bad_value("model.anchor_sizes", "the same number of sizes on every level (the RPN head has one anchor count)",
                        [list(a) for a in anchors], example_anchors)
    ratios = f.get("aspect_ratios", m0.aspect_ratios)
    if not isinstance(ratios, (list, tuple)) or not ratios or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r < float("inf") for r in ratios):
        raise bad_value("model.aspect_ratios", "a list of numbers > 0 (height / width)", ratios, list(m0.aspect_ratios))

    weights = _none(f.get("weights", m0.weights))
    if weights is not None:
        if not isinstance(weights, str):
            raise bad_value("model.weights", "none, DEFAULT or the path of a checkpoint file", weights, "none")
        if weights == "DEFAULT" and lite:
            raise ConfigError(f"model.weights=DEFAULT: {name} has no pretrained weights (it learns from scratch); "
                              "use model.weights=none or the path of a checkpoint, e.g. model.weights=runs/dice/checkpoint.pt")
        if weights != "DEFAULT" and not Path(weights).is_file():
            raise ConfigError(f"model.weights `{weights}` is not a file; pass none, DEFAULT or the path of a checkpoint, "
                              "e.g. model.weights=runs/dice/checkpoint.pt")
    backbone = _none(f.get("weights_backbone", m0.weights_backbone))
    if backbone is not None:
        names = _weights_names(name)
        if backbone not in names:
            raise bad_value("model.weights_backbone", f"none or one of {', '.join(names)} (pretrained {BACKBONES[name]})", backbone, "none")
        if lite and trunk == "tiny":
            raise ConfigError(f"model.weights_backbone={backbone} needs model.trunk=resnet18: the tiny trunk has no pretrained "
                              "weights; e.g. model.weights_backbone=none")

    cfg = ModelConfig(
        name=name, weights=weights, weights_backbone=backbone, input_size=input_size, max_size=max_size, trunk=trunk,
        channels=channels, head_convs=f.integer("head_convs", m0.head_convs, lo=1, example=2),
        classifier=check_choice(f.get("classifier", m0.classifier), "model.classifier", ("none", "crop"), "crop"),
        classifier_crop=f.integer("classifier_crop", m0.classifier_crop, lo=8, example=32),
        refine=f.integer("refine", m0.refine, lo=0, hi=5, example=1), anchor_sizes=anchors, aspect_ratios=tuple(float(r) for r in ratios),
        rpn_pre_nms=_int_list(f.get("rpn_pre_nms", m0.rpn_pre_nms), "model.rpn_pre_nms", list(m0.rpn_pre_nms), n=2),  # type: ignore[arg-type]
        rpn_post_nms=_int_list(f.get("rpn_post_nms", m0.rpn_post_nms), "model.rpn_post_nms", list(m0.rpn_post_nms), n=2),  # type: ignore[arg-type]
        box_batch_size=f.integer("box_batch_size", m0.box_batch_size, lo=1),
        detections=f.integer("detections", m0.detections, lo=1),
        score_thresh=f.number("score_thresh", m0.score_thresh, lo=0, hi=1, hi_open=True))
    if cfg.refine and cfg.classifier != "crop":
        raise ConfigError(f"model.refine={cfg.refine} moves the boxes of the crop classifier's detector: add model.classifier=crop, "
                          "or set model.refine=0.")
    if cfg.classifier == "crop" and cfg.masks:
        raise ConfigError(f"model.classifier=crop reads boxes only; {name} also predicts masks: use model.classifier=none with it.")
    if name != "fcos_lite" and cfg.head_convs != m0.head_convs:
        raise ConfigError(f"model.head_convs applies only to fcos_lite ({name} has other heads): remove it or pick model=fcos_lite.")
    if not lite:  # set but ignored would look like it took effect: refuse (the defaults, as provenance records them, pass)
        for k in LITE_KEYS:
            if getattr(cfg, k) != getattr(m0, k):
                raise ConfigError(f"model.{k} applies only to {' and '.join(LITE_MODELS)}; {name} takes it from torchvision, "
                                  f"so remove model.{k} (or pick model=fcos_lite).")
    return cfg


# ---------------------------------------------------------------------------- data and job

AGNOSTIC = "object"


@dataclass(frozen=True)
class DataConfig:
    synthetic: tuple[Path, ...] = ()
    real: tuple[Path, ...] = ()
    holdout: Path | None = None
    category_map: tuple[tuple[str, str], ...] = ()  # training name -> holdout name
    class_agnostic: bool = False  # one class "object" on both sides: does it find the objects at all?
    synthetic_fraction: float | None = None  # `simgen train`: None = in proportion to the folders' sizes
    holdout_limit: int | None = None  # score only the first N holdout images (quick checks, tests)

    def name_of(self, name: str) -> str:
        return AGNOSTIC if self.class_agnostic else dict(self.category_map).get(name, name)


@dataclass(frozen=True)
class Job:
    model: ModelConfig
    trainer: TrainerConfig
    data: DataConfig
    out: Path
    seed: int = 0
    resolved: dict = field(default_factory=dict, compare=False)
    overwrite: bool = False  # replace a run in ``out`` (or an arm's folder) that was made with other settings


# The real phase of the finetune arm, in passes over the real training images (``utility.finetune_split=auto``).
# Measured on dice, 1000 steps of 8, 3 seeds (docs/sim2real.md, tenth and eleventh rounds): with 10 photos, 80
# passes (split 0.9) beat 240 (0.7) on every seed, +0.029 mAP; with 25 photos, 32 passes (0.9) lost to 96 (0.7)
# on every seed, -0.017. One share of the budget over-fits a few photos and starves more: the passes are what
# the photos bear.
FINETUNE_PASSES = 80.0
FINETUNE_SPLIT_MINUTES = 0.7  # a minute budget has no step count to turn passes into: the fixed share
FINETUNE_SPLIT_BOUNDS = (0.5, 0.95)  # at least half the budget pretrains; at least 5% fine-tunes


@dataclass(frozen=True)
class UtilityConfig:
    job: Job
    fractions: tuple[float, ...] = (0.3, 0.5, 0.7)
    seeds: tuple[int, ...] = (0,)
    tstr: bool = True
    trtr: bool = True
    finetune: bool = True  # pretrain on synthetic, fine-tune on real (only with data.real)
    finetune_split: float | str = "auto"  # share of the budget on synthetic before the switch to real; "auto": from finetune_passes
    finetune_passes: float = FINETUNE_PASSES  # "auto": the real phase's length in passes over the real training images
    synthetic_sizes: tuple[int, ...] = ()  # the data-size curve: numbers of synthetic images (empty: off)
    synthetic_val: int = 100  # synthetic images held out from every size, to score the size runs on
    sizes_fraction: float | None = None  # the mix of the size curve; None: the best mix by mean mAP


def _is_fraction(f) -> bool:
    return isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1


def _paths(v, key: str) -> tuple[Path, ...]:
    if v is None or v == "" or str(v).lower() == "none":
        return ()
    vs = v if isinstance(v, (list, tuple)) else [v]
    out = []
    for p in vs:
        p = Path(str(p)).expanduser()
        if not (p / "annotations.json").is_file():
            raise DatasetError(f"{key}: `{p}` has no annotations.json; render one (`simgen render out={p}`) or fix the path.")
        out.append(p)
    return tuple(out)


def data_config(d: dict) -> DataConfig:
    f = Fields(d, "data", (*DataConfig.__dataclass_fields__, "name"), example="dice")
    d = dict(f.d)
    f.text("name", None, optional=True, example="dice")  # a label for people (dice, coco); nothing reads it
    frac = f.number("synthetic_fraction", None, lo=0, hi=1, optional=True, example=0.5)
    limit = None if d.get("holdout_limit") in (None, 0) else f.integer("holdout_limit", None, lo=0, example=10)
    class_agnostic = f.flag("class_agnostic", False)
    holdout = d.get("holdout")
    if not holdout or str(holdout).lower() == "none":
        raise ConfigError("data.holdout is not set; pass data.holdout=<real COCO folder> (e.g. ../shared/holdouts/dice-real-50).")
    holdout = Path(str(holdout)).expanduser()
    if not (holdout / "annotations.json").is_file():
        raise DatasetError(f"holdout `{holdout}` has no annotations.json; pass data.holdout=<folder of real images with COCO annotations>.")
    cm = d.get("category_map") or {}
    if not isinstance(cm, dict) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in cm.values()):
        raise bad_value("data.category_map", "a mapping {training name: holdout name}", cm, {"die": "dice"})
    cfg = DataConfig(synthetic=_paths(d.get("synthetic"), "data.synthetic"), real=_paths(d.get("real"), "data.real"), holdout=holdout,
                     category_map=tuple(sorted((str(k), str(v)) for k, v in cm.items())), class_agnostic=class_agnostic,
                     synthetic_fraction=frac, holdout_limit=limit)
    return cfg


def job_config(d: dict, utility: bool = False) -> Job:
    """The model, trainer and data groups and the top-level keys (``utility`` too when ``utility``, for
    :func:`utility_config`), every field checked: a bad one is one line, raised before anything is written."""
    top = Fields({k: v for k, v in d.items() if k != "hydra"}, "",
                 ("model", "trainer", "data", "out", "seed", "overwrite", *(("utility",) if utility else ())))
    seed = top.integer("seed", 0, lo=0, hi=SEED_MAX)
    overwrite = top.flag("overwrite", False)
    for k in ("model", "trainer", "data"):
        if not isinstance(d.get(k), dict):
            raise ConfigError(f"config has no `{k}` group; compose conf/train.yaml (simgen train) or pass {k}=<option>.")
    out = d.get("out")
    if out is None or isinstance(out, (bool, list, dict)) or not str(out).strip():
        raise ConfigError("out is not set; pass out=<folder for checkpoints and reports>, e.g. out=runs/dice.")
    model, trainer = model_config(d["model"]), trainer_config(d["trainer"])
    if trainer.device not in ("auto", "cpu"):  # a device this machine lacks: one line now, not after the first log lines
        from .engine import resolve_device  # imports torch: only where a device has to be looked for

        resolve_device(trainer.device)
    job = Job(model, trainer, data_config(d["data"]), Path(str(out)), seed,  # type: ignore[arg-type]
              resolved={k: v for k, v in d.items() if k != "hydra"}, overwrite=overwrite)
    if not job.data.synthetic and not job.data.real:
        raise ConfigError("no training data: pass data.synthetic=<folder> (or a list [a,b]) and/or data.real=<folder>.")
    check_out_folder(job)
    return job


def check_out_folder(job: Job) -> None:
    """Refuse an ``out`` that is not a run's own folder, before anything is written: a run writes checkpoint.pt,
    metrics.json, predictions.json, provenance.json and DATASHEET.md there, which would land inside a dataset (and
    replace its datasheet) or inside the holdout."""
    out = job.out.resolve()
    data = [("data.holdout", job.data.holdout), *(("data.synthetic", r) for r in job.data.synthetic),
            *(("data.real", r) for r in job.data.real)]
    for key, root in data:
        root = Path(root).resolve()
        if out == root or out.is_relative_to(root):
            raise ConfigError(f"out={job.out} is {'the' if out == root else 'inside the'} {key} folder {root}: a run writes its "
                              "checkpoint, scores and DATASHEET.md into out; give it a folder of its own, e.g. out=runs/<name>.")
    for marker in ("annotations.json", "manifest.json"):
        if (out / marker).is_file():
            raise ConfigError(f"out={job.out} holds a dataset ({marker}): a run writes its checkpoint, scores and DATASHEET.md "
                              "into out, which would replace the dataset's; give the run a folder of its own, e.g. out=runs/<name>.")


def utility_config(d: dict) -> UtilityConfig:
    job = job_config(d, utility=True)
    uf = Fields(d.get("utility"), "utility", ("fractions", "seeds", "tstr", "trtr", *NEW_UTILITY_KEYS), example="{fractions: [0.5]}")
    u = uf.d
    fr = () if u.get("fractions") is None else u["fractions"]  # null or []: no mix arms
    if not isinstance(fr, (list, tuple)) or not all(_is_fraction(f) for f in fr) or len(set(fr)) != len(fr):
        raise bad_value("utility.fractions", "a list of different synthetic fractions strictly between 0 and 1 (TSTR is 1, TRTR is 0)",
                        fr, [0.3, 0.5, 0.7])
    fr = tuple(float(f) for f in fr)
    seeds = u.get("seeds")
    seeds = (job.seed,) if seeds is None or (isinstance(seeds, (list, tuple)) and not seeds) else [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if (not isinstance(seeds, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= SEED_MAX for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise bad_value("utility.seeds", "a list of different integers >= 0 (every arm runs once per seed)", u.get("seeds"), [0, 1, 2])
    seeds = tuple(seeds)
    if not job.data.synthetic:
        raise ConfigError("simgen utility needs synthetic data: pass data.synthetic=<folder rendered by simgen render>.")
    cfg = UtilityConfig(job, fr, seeds, uf.flag("tstr", True), uf.flag("trtr", True), **_arm_settings(uf, job))
    if not _has_arm(cfg) and not cfg.synthetic_sizes:
        raise ConfigError("no arm to run: " + ("utility.tstr, utility.trtr and utility.finetune are off and utility.fractions is empty"
                          if job.data.real else "without data.real only TSTR can run, and utility.tstr=false")
                          + "; e.g. utility.tstr=true")
    return cfg


NEW_UTILITY_KEYS = ("finetune", "finetune_split", "finetune_passes", "synthetic_sizes", "synthetic_val", "sizes_fraction")


def _arm_settings(uf: Fields, job: Job) -> dict:
    """The finetune arm and data-size curve keys of ``utility``, checked against the job they will run in."""
    u0 = UtilityConfig(job)
    finetune = uf.flag("finetune", u0.finetune)
    split = uf.get("finetune_split", u0.finetune_split)
    if split != "auto":
        if not _is_fraction(split):
            raise bad_value("utility.finetune_split", "a number in (0, 1), the synthetic share of the budget, or auto "
                            "(the real phase lasts utility.finetune_passes passes over the real photos)", split, "auto")
        split = float(split)
    passes = uf.number("finetune_passes", u0.finetune_passes, lo=0, lo_open=True, example=FINETUNE_PASSES)
    if finetune and job.data.real and job.trainer.max_steps == 1:
        raise ConfigError("the finetune arm needs trainer.max_steps >= 2 (one step per phase); raise it or pass utility.finetune=false.")
    sizes = uf.get("synthetic_sizes") or ()
    if not isinstance(sizes, (list, tuple)) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise bad_value("utility.synthetic_sizes", "a list of image counts >= 1 (empty: no data-size curve)", sizes, [250, 500, 1000])
    sf = None if uf.get("sizes_fraction") is None else uf.number("sizes_fraction", None, lo=0, hi=1, lo_open=True, hi_open=True, example=0.7)
    if sf is not None and not job.data.real:
        raise ConfigError("utility.sizes_fraction needs a real training folder: pass data.real=<folder> or utility.sizes_fraction=null.")
    return {"finetune": finetune, "finetune_split": split, "finetune_passes": float(passes), "synthetic_sizes": tuple(sizes),
            "synthetic_val": uf.integer("synthetic_val", u0.synthetic_val, lo=1, example=100), "sizes_fraction": sf}


def _has_arm(u: UtilityConfig) -> bool:
    """Whether :func:`simgen.train.utility.arms` has anything to run (without resolving the finetune split, which reads
    the real folders' annotations)."""
    return u.tstr or bool(u.job.data.real and (u.fractions or u.trtr or u.finetune))
