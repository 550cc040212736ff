"""Detector builders: torchvision models, including light ones that learn from scratch on a CPU.

``frcnn_lite`` and ``fcos_lite`` are torchvision ``FasterRCNN`` / ``FCOS`` on a short trunk (ResNet-18
up to layer3, or a few plain conv layers) with two FPN levels at stride 8 and 16 and anchors sized
for objects of ~15-50 px at the training resolution. The standard ``fasterrcnn_resnet50_fpn_v2`` and
``maskrcnn_resnet50_fpn_v2`` are there for GPU users (with ``weights=DEFAULT`` on a machine that can
download them).
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

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
    from ..config import bad_value

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
    from ..config import Fields, bad_value, check_choice
    from ..errors import did_you_mean

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


# ---------------------------------------------------------------------------- trunks


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyTrunk(nn.Module):
    """Plain conv-BN-ReLU stages; returns stride-8 and stride-16 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.s4 = nn.Sequential(_conv(3, 24, 2), _conv(24, 32), _conv(32, 48, 2), _conv(48, 48))
        self.s8 = nn.Sequential(_conv(48, 96, 2), _conv(96, 96), _conv(96, 96))
        self.s16 = nn.Sequential(_conv(96, 160, 2), _conv(160, 160), _conv(160, 160))
        self.out_channels_list = [96, 160]

    def forward(self, x):
        c3 = self.s8(self.s4(x))
        return OrderedDict([("0", c3), ("1", self.s16(c3))])


class ResNetTrunk(nn.Module):
    """ResNet-18 stem..layer3 (layer4 dropped): stride-8 (128 ch) and stride-16 (256 ch) maps."""

    def __init__(self, weights_backbone: str | None) -> None:
        super().__init__()
        from torchvision.models import resnet18

        r = _download(lambda: resnet18(weights=weights_backbone), "resnet18 backbone", "model.weights_backbone")
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.layer2, self.layer3 = r.layer2, r.layer3
        self.out_channels_list = [128, 256]

    def forward(self, x):
        c3 = self.layer2(self.stem(x))
        return OrderedDict([("0", c3), ("1", self.layer3(c3))])


class LiteBackbone(nn.Module):
    def __init__(self, trunk: str, channels: int, weights_backbone: str | None) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = TinyTrunk() if trunk == "tiny" else ResNetTrunk(weights_backbone)
        self.fpn = FeaturePyramidNetwork(self.body.out_channels_list, channels)
        self.out_channels = channels

    def forward(self, x):
        return self.fpn(self.body(x))


def _download(fn, what: str, key: str):
    try:
        return fn()
    except Exception as e:  # urllib/ssl/socket errors differ by platform; all mean "cannot fetch"
        if isinstance(e, (ConfigError, TypeError, ValueError)) and "weights" not in str(e).lower():
            raise
        raise ConfigError(f"cannot get pretrained {what} ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                          f"this machine may be offline: set {key}=none or {key}=<local .pth file>.") from None


# ---------------------------------------------------------------------------- builders


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """A torchvision detector for ``num_classes`` foreground classes (labels 1..num_classes); with
    ``classifier=crop``, a one-class detector whose boxes a crop classifier names (:mod:`.cropcls`)."""
    if cfg.classifier == "crop":
        from .cropcls import TwoStage

        model = TwoStage(_build_detector(replace(cfg, weights="DEFAULT" if cfg.weights == "DEFAULT" else None), 1), num_classes, crop=cfg.classifier_crop,
                         refine=cfg.refine)
        if cfg.weights and cfg.weights != "DEFAULT":
            load_weights(model, Path(cfg.weights))
        return model
    return _build_detector(cfg, num_classes)


def _build_detector(cfg: ModelConfig, num_classes: int) -> nn.Module:
    from torchvision.models import detection as D
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = dict(min_size=cfg.input_size, max_size=cfg.max_size)
    nc = num_classes + 1
    if cfg.name in ("frcnn_lite", "fcos_lite"):
        backbone = LiteBackbone(cfg.trunk, cfg.channels, cfg.weights_backbone if cfg.trunk == "resnet18" else None)
        if cfg.name == "fcos_lite":
            from torchvision.models.detection.fcos import FCOSHead

            anchors = AnchorGenerator(tuple((s[0] // 2,) for s in cfg.anchor_sizes), ((1.0,),) * len(cfg.anchor_sizes))
            model = D.FCOS(backbone, nc, anchor_generator=anchors, head=FCOSHead(cfg.channels, 1, nc, num_convs=cfg.head_convs),
                           score_thresh=cfg.score_thresh, detections_per_img=cfg.detections, topk_candidates=300, **sizes)
        else:
            from torchvision.ops import MultiScaleRoIAlign

            anchors = AnchorGenerator(cfg.anchor_sizes, (cfg.aspect_ratios,) * len(cfg.anchor_sizes))
            roi = MultiScaleRoIAlign(["0", "1"], output_size=7, sampling_ratio=2)
            model = D.FasterRCNN(backbone, nc, rpn_anchor_generator=anchors, box_roi_pool=roi,
                                 rpn_pre_nms_top_n_train=cfg.rpn_pre_nms[0], rpn_pre_nms_top_n_test=cfg.rpn_pre_nms[1],
                                 rpn_post_nms_top_n_train=cfg.rpn_post_nms[0], rpn_post_nms_top_n_test=cfg.rpn_post_nms[1],
                                 rpn_batch_size_per_image=128, box_batch_size_per_image=cfg.box_batch_size,
                                 box_detections_per_img=cfg.detections, box_score_thresh=cfg.score_thresh,
                                 representation_size=256, **sizes)
    else:
        builder = getattr(D, cfg.name)
        kw = dict(weights_backbone=cfg.weights_backbone, box_score_thresh=cfg.score_thresh, box_detections_per_img=cfg.detections, **sizes)
        if cfg.weights == "DEFAULT":
            model = _download(lambda: builder(weights="DEFAULT", **kw), f"{cfg.name} weights", "model.weights")
            _replace_heads(model, nc)
        else:
            model = _download(lambda: builder(weights=None, num_classes=nc, **kw), f"{cfg.name} backbone", "model.weights_backbone")
    if cfg.weights and cfg.weights != "DEFAULT":
        load_weights(model, Path(cfg.weights))
    return model


def model_from_run(folder: Path) -> tuple[nn.Module, ModelConfig, dict]:
    """The trained model of a run folder (checkpoint.pt + provenance.json), its config and its provenance."""
    import json

    from .engine import load_checkpoint

    prov = json.loads((Path(folder) / "provenance.json").read_text())
    cfg = model_config({**prov["model"], "weights": None, "weights_backbone": None})
    model = build_model(cfg, len(prov["categories"]))
    load_checkpoint(Path(folder) / "checkpoint.pt", model)
    return model, cfg, prov


def _replace_heads(model: nn.Module, nc: int) -> None:
    """COCO-pretrained heads -> our number of classes (the standard fine-tuning recipe)."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    rh = model.roi_heads
    rh.box_predictor = FastRCNNPredictor(rh.box_predictor.cls_score.in_features, nc)
    if getattr(rh, "mask_predictor", None) is not None:
        rh.mask_predictor = MaskRCNNPredictor(rh.mask_predictor.conv5_mask.in_channels, 256, nc)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a checkpoint written by :func:`simgen.train.engine.save_checkpoint` or a bare state_dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read weights `{path}` ({type(e).__name__}); pass a checkpoint saved by simgen train or a state_dict .pth.") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"`{path}` holds no state_dict; pass a checkpoint saved by simgen train or a state_dict .pth.")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        heads = class_heads(model.state_dict(), state)
        if heads is None:
            raise ConfigError(f"weights `{path}` do not fit this model ({str(e).splitlines()[0][:150]}); use the same model and "
                              "categories they were trained with.") from None
        # the same network for another set of classes: everything but the class-sized outputs carries over, and those
        # start fresh (the usual fine-tuning recipe, as for COCO-pretrained heads)
        model.load_state_dict({k: v for k, v in state.items() if k not in heads}, strict=False)
        print(f"simgen: weights `{path}` were trained for other classes: {len(state) - len(heads)} of {len(state)} tensors "
              f"loaded; the class outputs ({', '.join(sorted(heads))}) start fresh for this run's classes.", file=sys.stderr)


# the layers whose size follows the number of classes: FCOS's logits, Faster/Mask R-CNN's predictors, the crop classifier's
CLASS_SIZED = ("cls_logits", "cls_score", "bbox_pred", "mask_fcn_logits", "classifier.fc.")


def class_heads(mine: dict, theirs: dict) -> set[str] | None:
    """The keys of ``theirs`` that differ from ``mine`` only in the class-sized layers' shapes, or None when the two
    are other networks (other keys, or other shapes elsewhere)."""
    if set(mine) != set(theirs):
        return None
    differ = {k for k in mine if tuple(mine[k].shape) != tuple(theirs[k].shape)}
    if not differ or not all(any(part in k for part in CLASS_SIZED) for k in differ):
        return None
    return differ
