"""Detector builders: torchvision models, including light ones that learn from scratch on a CPU.

``frcnn_lite`` and ``fcos_lite`` are torchvision ``FasterRCNN`` / ``FCOS`` on a short trunk (ResNet-18
up to layer3, or a few plain conv layers) with two FPN levels at stride 8 and 16 and anchors sized
for objects of ~15-50 px at the training resolution. The standard ``fasterrcnn_resnet50_fpn_v2`` and
``maskrcnn_resnet50_fpn_v2`` are there for GPU users (with ``weights=DEFAULT`` on a machine that can
download them).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
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


def _none(v):
    return None if v is None or str(v).lower() in ("none", "null", "") else v


def model_config(d: dict) -> ModelConfig:
    d = dict(d or {})
    name = d.get("name", "frcnn_lite")
    if name not in MODELS:
        from ..errors import did_you_mean

        raise ConfigError(f"unknown model `{name}`." + did_you_mean(name, MODELS))
    known = set(ModelConfig.__dataclass_fields__)
    extra = sorted(set(d) - known)
    if extra:
        raise ConfigError(f"model: unknown key(s) {extra}; known: {sorted(known)}.")
    for k in ("anchor_sizes",):
        if k in d:
            d[k] = tuple(tuple(int(x) for x in lvl) for lvl in d[k])
    for k in ("aspect_ratios",):
        if k in d:
            d[k] = tuple(float(x) for x in d[k])
    for k in ("rpn_pre_nms", "rpn_post_nms"):
        if k in d:
            d[k] = tuple(int(x) for x in d[k])
    d["weights"] = _none(d.get("weights"))
    d["weights_backbone"] = _none(d.get("weights_backbone"))
    if d.get("trunk", "resnet18") not in ("resnet18", "tiny"):
        raise ConfigError(f"model.trunk `{d['trunk']}` unknown; use resnet18 or tiny.")
    cfg = ModelConfig(**d)
    if cfg.input_size < 32 or cfg.max_size < cfg.input_size:
        raise ConfigError(f"model.input_size={cfg.input_size} / max_size={cfg.max_size}: need 32 <= input_size <= max_size.")
    if cfg.name == "fcos_lite" and cfg.channels % 32:
        raise ConfigError(f"model.channels={cfg.channels}: FCOS's head uses GroupNorm(32), so use a multiple of 32.")
    if cfg.weights and cfg.weights != "DEFAULT" and not Path(cfg.weights).is_file():
        raise ConfigError(f"model.weights `{cfg.weights}` is not a file; pass none, DEFAULT or the path of a checkpoint.")
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
    """A torchvision detector for ``num_classes`` foreground classes (labels 1..num_classes)."""
    from torchvision.models import detection as D
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = dict(min_size=cfg.input_size, max_size=cfg.max_size)
    nc = num_classes + 1
    if cfg.name in ("frcnn_lite", "fcos_lite"):
        backbone = LiteBackbone(cfg.trunk, cfg.channels, cfg.weights_backbone if cfg.trunk == "resnet18" else None)
        if cfg.name == "fcos_lite":
            from torchvision.models.detection.fcos import FCOSHead

            anchors = AnchorGenerator(tuple((s[0] // 2,) for s in cfg.anchor_sizes), ((1.0,),) * len(cfg.anchor_sizes))
            model = D.FCOS(backbone, nc, anchor_generator=anchors, head=FCOSHead(cfg.channels, 1, nc, num_convs=2),
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
        raise ConfigError(f"weights `{path}` do not fit this model ({str(e).splitlines()[0][:150]}); use the same model and categories they were trained with.") from None
