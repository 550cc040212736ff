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
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .config import ModelConfig, model_config  # noqa: F401  (model_config re-exported)

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
