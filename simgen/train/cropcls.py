"""Two-stage recognition for small objects whose class is a fine detail (pips on a die, a digit, a label):
a class-agnostic detector finds the objects, a small CNN reads each one from a crop of the image.

Why: a dense detector head classifies from stride-8 features pooled over a few cells. Measured on dice
(docs/sim2real.md), fcos_lite trained on 1,500 synthetic images finds 95% of the dice of fresh synthetic
images (AP50 ignoring class) but names their top face at 0.35 AP50: the pips, 3-5 px at the model's scale,
are not read even in the simulator's own domain. A crop of the object resampled to a fixed size gives the
classifier every pixel of the object at one scale, whatever its size in the photo (the recipe of two-stage
detectors, Faster R-CNN's RoI head, applied to image pixels instead of features).

Both parts train together, on the same batches and steps as the detector alone (one budget): the detector on
the boxes with one class, the classifier on crops of the ground-truth boxes, jittered like a detector's boxes.
At inference every detected box is classified and emitted with its ``top_k`` most likely classes, scored
detection score x class probability (a doubted box counts for both readings, as in the per-class NMS of the
one-stage model).

Optionally (``refine`` > 0) a third small CNN moves each detected box's edges, read from a wider crop, before the
box is classified: a pixel-space counterpart of a two-stage detector's box head. Why: on the dice holdout the
boxes, not the classes, bound the score. Ignoring class, the detector's AP is 0.97 at IoU 0.5 but 0.46 at 0.8 and
0.09 at 0.9 (real photos, 2026-11-26), because FCOS regresses a 26 px die's edges from stride-8 features. The
refiner sees the die's own pixels at the model's scale and learns to put edges where the labels put them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CropClassifier(nn.Module):
    """Conv stages at 1, 1/2 and 1/4 of the crop, then global average pooling: the pooled response of a
    pip-like detector grows with the number of pips, whatever the die's rotation."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(_conv(3, w), _conv(w, w), nn.MaxPool2d(2), _conv(w, 2 * w), _conv(2 * w, 2 * w), nn.MaxPool2d(2),
                                      _conv(2 * w, 4 * w), _conv(4 * w, 4 * w))
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.45) / 0.25  # images arrive in [0, 1]
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class BoxRefiner(nn.Module):
    """Edge offsets of a box from a crop around it: conv stages at 1, 1/2 and 1/4 of the crop, then a fully
    connected layer over the whole spatial map (position matters here, so no global pooling). Outputs are
    (x1, y1, x2, y2) offsets in units of ``STEP`` of the box's width or height."""

    STEP = 0.1  # offsets are predicted in tenths of the box side: targets of about unit size

    def __init__(self, crop: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(_conv(3, w), _conv(w, w), nn.MaxPool2d(2), _conv(w, 2 * w), _conv(2 * w, 2 * w), nn.MaxPool2d(2),
                                      _conv(2 * w, 2 * w), nn.Conv2d(2 * w, 16, 1))
        side = crop // 4
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(16 * side * side, 256), nn.ReLU(inplace=True), nn.Linear(256, 4))
        nn.init.zeros_(self.fc[-1].weight)  # starts as "leave the box where it is"
        nn.init.zeros_(self.fc[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features((x - 0.45) / 0.25))


def offsets(boxes: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """What :class:`BoxRefiner` learns: the edges of ``target`` relative to ``boxes``, in STEPs of their side."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0).repeat(1, 2)
    return (target - boxes) / wh / BoxRefiner.STEP


def apply_offsets(boxes: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0).repeat(1, 2)
    return boxes + d * BoxRefiner.STEP * wh


def _scale(transform, h: int, w: int) -> float:
    """The factor the detector's own transform (GeneralizedRCNNTransform) resizes an h x w image by."""
    lo, hi = float(min(h, w)), float(max(h, w))
    return min(float(transform.min_size[-1]) / lo, float(transform.max_size) / hi)


def rescaled(image: torch.Tensor, scale: float) -> torch.Tensor:
    """``image`` (C, H, W) resized by ``scale``, antialiased: how the detector's transform sees it."""
    if abs(scale - 1.0) <= 1e-3:
        return image
    h, w = image.shape[-2:]
    return F.interpolate(image[None], size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                         antialias=True, align_corners=False)[0]


def crops(image: torch.Tensor, boxes: torch.Tensor, size: int, scale: float, context: float) -> torch.Tensor:
    """``size`` x ``size`` crops of ``boxes`` (xyxy, image pixels), each widened by ``context`` of its side,
    sampled from the image resized by ``scale`` (the model's scale: crops look the same in training, where
    images come already scaled, and at inference, where they come at their own size)."""
    if len(boxes) == 0:
        return image.new_zeros((0, 3, size, size))
    if abs(scale - 1.0) > 1e-3:
        image = rescaled(image, scale)
        boxes = boxes * scale
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0) * (0.5 + context)
    rois = torch.cat([c - half, c + half], 1)
    return roi_align(image[None], [rois], output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def jitter(boxes: torch.Tensor, amount: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """Boxes moved and resized by up to ``amount`` of their side: what a detector's boxes look like."""
    if amount <= 0 or len(boxes) == 0:
        return boxes
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0)
    c = (boxes[:, :2] + boxes[:, 2:]) / 2 + (torch.rand(wh.shape, generator=gen) * 2 - 1) * amount * wh
    s = 1 + (torch.rand(wh.shape, generator=gen) * 2 - 1) * amount
    half = wh * s / 2
    return torch.cat([c - half, c + half], 1)


class TwoStage(nn.Module):
    """A class-agnostic torchvision detector plus a :class:`CropClassifier`, with a torchvision detector's
    interface: ``model(images, targets)`` returns a dict of losses in training, ``model(images)`` a list of
    ``{"boxes", "scores", "labels"}`` (labels 1..num_classes) in eval."""

    def __init__(self, detector: nn.Module, num_classes: int, crop: int = 32, context: float = 0.15, box_jitter: float = 0.1,
                 top_k: int = 2, width: int = 32, refine: int = 0, refine_crop: int = 40, refine_context: float = 0.3,
                 refine_jitter: float = 0.15) -> None:
        super().__init__()
        self.detector = detector
        self.classifier = CropClassifier(num_classes, width)
        self.crop, self.context, self.box_jitter, self.top_k = crop, context, box_jitter, min(top_k, num_classes)
        # refine: how many times inference moves each box's edges (0: no refiner; its weights then do not exist,
        # so checkpoints from before it load unchanged). The crop is wider than the classifier's so that edges a
        # detector misplaces by refine_jitter of the side are still inside it.
        self.refine, self.refine_crop, self.refine_context, self.refine_jitter = refine, refine_crop, refine_context, refine_jitter
        self.refiner = BoxRefiner(refine_crop, width) if refine > 0 else None

    @property
    def transform(self):  # set_model_sizes adjusts the detector's resize through this
        return self.detector.transform

    @property
    def backbone(self):  # the report's detector features read it
        return self.detector.backbone

    def _crops(self, images, boxes_per_image, size: int | None = None, context: float | None = None) -> torch.Tensor:
        size = self.crop if size is None else size
        context = self.context if context is None else context
        out = []
        for im, b in zip(images, boxes_per_image):
            h, w = im.shape[-2:]
            out.append(crops(im, b, size, _scale(self.detector.transform, h, w), context))
        return torch.cat(out) if out else images[0].new_zeros((0, 3, size, size))

    def _at_model_scale(self, images):
        """Each image resized once to the model's scale, and that scale: inference crops it several times."""
        scales = [_scale(self.detector.transform, *im.shape[-2:]) for im in images]
        return [(rescaled(im, s), s) for im, s in zip(images, scales)]

    def refine_boxes(self, images, boxes_per_image) -> list[torch.Tensor]:
        """Boxes (image pixels) moved ``self.refine`` times by the refiner, kept inside their image."""
        scaled = self._at_model_scale(images)
        boxes = [b * s for b, (_, s) in zip(boxes_per_image, scaled)]  # work at the model's scale
        for _ in range(self.refine):
            x = torch.cat([crops(im, b, self.refine_crop, 1.0, self.refine_context) for b, (im, _) in zip(boxes, scaled)])
            if not len(x):
                break
            d, k0 = self.refiner(x), 0
            moved = []
            for b, (im, _) in zip(boxes, scaled):
                n = len(b)
                nb = apply_offsets(b, d[k0:k0 + n])
                k0 += n
                h, w = im.shape[-2:]
                x1, y1 = nb[:, 0].clamp(0, w - 1), nb[:, 1].clamp(0, h - 1)
                # never inverted or empty, whatever the offsets: NMS and IoU need x2 > x1
                nb = torch.stack([x1, y1, torch.maximum(nb[:, 2].clamp(0, w), x1 + 1), torch.maximum(nb[:, 3].clamp(0, h), y1 + 1)], 1)
                moved.append(nb)
            boxes = moved
        return [b / s for b, (_, s) in zip(boxes, scaled)]

    def forward(self, images, targets=None):
        if self.training:
            assert targets is not None
            one = [{**t, "labels": torch.ones_like(t["labels"])} for t in targets]
            losses = self.detector(images, one)
            boxes = [jitter(torch.as_tensor(t["boxes"]).float(), self.box_jitter) for t in targets]
            labels = torch.cat([t["labels"] for t in targets]) - 1
            x = self._crops(images, boxes)
            # Every loss term is a tensor on the graph, also for a batch without objects (loss 0 then).
            logits = self.classifier(x) if len(x) else None
            losses["crop_classifier"] = (F.cross_entropy(logits, labels) if logits is not None
                                         else sum(p.sum() for p in self.classifier.parameters()) * 0.0)
            if self.refiner is not None:
                truth = [torch.as_tensor(t["boxes"]).float() for t in targets]
                start = [jitter(b, self.refine_jitter) for b in truth]
                x = self._crops(images, start, self.refine_crop, self.refine_context)
                # L1 on the offsets, in tenths of the side: the error that IoU 0.75-0.95 punishes.
                losses["box_refiner"] = (F.l1_loss(self.refiner(x), offsets(torch.cat(start), torch.cat(truth))) if len(x)
                                         else sum(p.sum() for p in self.refiner.parameters()) * 0.0)
            return losses
        dets = self.detector(images)
        if self.refiner is not None and any(len(d["boxes"]) for d in dets):
            from torchvision.ops import nms

            refined = self.refine_boxes(images, [d["boxes"] for d in dets])
            thresh = float(getattr(self.detector, "nms_thresh", 0.6))
            out_d = []
            for d, b in zip(dets, refined):  # two detections refined onto one die would be one box counted twice
                keep = nms(b, d["scores"], thresh)
                out_d.append({**{k: v[keep] for k, v in d.items()}, "boxes": b[keep]})
            dets = out_d
        x = self._crops(images, [d["boxes"] for d in dets])
        probs = torch.softmax(self.classifier(x), 1) if len(x) else x.new_zeros((0, self.classifier.fc.out_features))
        out, k0 = [], 0
        for d in dets:
            n = len(d["boxes"])
            p, k0 = probs[k0:k0 + n], k0 + n
            top_p, top_c = p.topk(self.top_k, dim=1) if n else (p[:, :0], p[:, :0].long())
            out.append({"boxes": d["boxes"].repeat_interleave(self.top_k, 0),
                        "scores": (d["scores"][:, None] * top_p).reshape(-1),
                        "labels": (top_c + 1).reshape(-1)})
        return out
