"""model.classifier=crop: a one-class detector whose boxes a small CNN names from crops of the image."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from simgen.errors import ConfigError
from simgen.train.cropcls import TwoStage, crops, jitter
from simgen.train.models import ModelConfig, build_model, model_config

from .conftest import compose_dict, small_config


def test_crop_shows_the_box_and_is_the_same_at_any_image_scale():
    """The crop covers the box (plus context) and, taken at the model's scale, does not depend on the photo's
    resolution: a die shot at 2x looks the same to the classifier as at 1x."""
    img = torch.zeros(3, 100, 100)
    img[:, 40:60, 40:60] = 1.0  # a white square, the box exactly
    box = torch.tensor([[40.0, 40, 60, 60]])
    c = crops(img, box, 16, 1.0, context=0.0)
    assert c.shape == (1, 3, 16, 16) and c[0, :, 2:14, 2:14].min() > 0.99
    wide = crops(img, box, 16, 1.0, context=0.5)  # twice the side: the square fills the middle half
    assert wide[0, :, 6:10, 6:10].min() > 0.99 and wide[0, :, :2, :].max() < 0.01
    big = torch.nn.functional.interpolate(img[None], scale_factor=2, mode="nearest")[0]
    c2 = crops(big, box * 2, 16, 0.5, context=0.15)
    assert (c2 - crops(img, box, 16, 1.0, context=0.15)).abs().mean() < 0.03
    assert crops(img, torch.zeros((0, 4)), 16, 1.0, 0.1).shape == (0, 3, 16, 16)


def test_jitter_moves_boxes_within_the_asked_share():
    g = torch.Generator().manual_seed(0)
    b = torch.tensor([[10.0, 10, 30, 50]]).repeat(500, 1)
    j = jitter(b, 0.1, g)
    wh = torch.tensor([20.0, 40])
    centre_shift = ((j[:, :2] + j[:, 2:]) / 2 - torch.tensor([20.0, 30])).abs() / wh
    scale = (j[:, 2:] - j[:, :2]) / wh
    assert centre_shift.max() <= 0.1 + 1e-5 and centre_shift.max() > 0.05
    assert scale.min() >= 0.9 - 1e-5 and scale.max() <= 1.1 + 1e-5
    assert torch.equal(jitter(b, 0.0), b)


def _dots(gen: torch.Generator, n_img: int, size: int = 96):
    """Grey squares with one or two white dots on a dark ground: the class is the detail inside."""
    images, targets = [], []
    for _ in range(n_img):
        im = torch.rand(3, size, size, generator=gen) * 0.2
        boxes, labels = [], []
        for k in range(2):
            s = 24
            x0, y0 = 8 + k * 44 + int(torch.randint(0, 8, (1,), generator=gen)), 8 + int(torch.randint(0, 60, (1,), generator=gen))
            im[:, y0:y0 + s, x0:x0 + s] = 0.5
            cls = int(torch.randint(1, 3, (1,), generator=gen))
            spots = [(12, 12)] if cls == 1 else [(6, 6), (18, 18)]
            for u, v in spots:
                im[:, y0 + v - 2:y0 + v + 2, x0 + u - 2:x0 + u + 2] = 1.0
            boxes.append([x0, y0, x0 + s, y0 + s])
            labels.append(cls)
        images.append(im)
        targets.append({"boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(size, size)),
                        "labels": torch.tensor(labels)})
    return images, targets


def test_two_stage_learns_the_class_from_the_crop_and_keeps_a_detector_interface():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(ModelConfig(name="fcos_lite", trunk="tiny", input_size=96, max_size=96, channels=32, classifier="crop"), 2)
    assert isinstance(model, TwoStage) and model.transform is model.detector.transform
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        images, targets = _dots(gen, 4)
        losses = model(images, targets)
        assert set(losses) >= {"classification", "bbox_regression", "crop_classifier"}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    model.eval()
    images, targets = _dots(gen, 16)
    with torch.no_grad():
        x = model._crops(images, [torch.as_tensor(t["boxes"]) for t in targets])
        pred = model.classifier(x).argmax(1) + 1
    truth = torch.cat([t["labels"] for t in targets])
    assert (pred == truth).float().mean() >= 0.9  # untrained: about 0.5
    with torch.no_grad():
        out = model(images[:2])
    for o in out:  # each box twice: its two most likely classes, scored detection x class probability
        assert len(o["boxes"]) == 2 * len(o["boxes"][::2]) and torch.equal(o["boxes"][0::2], o["boxes"][1::2])
        assert set(o["labels"].tolist()) <= {1, 2} and (o["scores"] <= 1).all()
        if len(o["labels"]):
            assert (o["labels"][0::2] != o["labels"][1::2]).all() and (o["scores"][0::2] >= o["scores"][1::2]).all()


def test_crop_classifier_config():
    cfg = model_config({"name": "fcos_lite", "trunk": "tiny", "classifier": "crop", "classifier_crop": 24})
    assert cfg.classifier == "crop" and cfg.classifier_crop == 24
    with pytest.raises(ConfigError, match="model.classifier must be one of none, crop"):
        model_config({"name": "fcos_lite", "classifier": "roi"})
    with pytest.raises(ConfigError, match="reads boxes only"):
        model_config({"name": "maskrcnn_resnet50_fpn_v2", "classifier": "crop"})


def test_train_with_the_crop_classifier_end_to_end(tmp_path, holdout):
    """`simgen train model.classifier=crop` trains both parts, scores the holdout per class, and its
    provenance names the classifier (a run without it is another run)."""
    import json

    from simgen.run import render_dataset
    from simgen.train.utility import job_config, run_one

    syn = render_dataset(small_config(tmp_path, "seed=1", name="syn"), log=lambda m: None)
    d = compose_dict("train", ["trainer=smoke", "trainer.max_steps=2", "model.trunk=tiny", "model.input_size=96", "model.max_size=96",
                               "model.channels=32", "model.classifier=crop", f"data.synthetic=[{syn}]", f"data.holdout={holdout}",
                               "data.holdout_limit=2", f"out={tmp_path / 'run'}"])
    entry = run_one(job_config(d), tmp_path / "run", 1.0, 0)
    assert entry["steps"] == 2 and set(entry["per_class"]) == {"one", "two", "three", "four", "five", "six"}
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["model"]["classifier"] == "crop"
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert any(k.startswith("classifier.") for k in ck["model"]) and any(k.startswith("detector.") for k in ck["model"])


def test_box_refiner_moves_jittered_boxes_onto_the_objects():
    """model.refine: a crop CNN trained on jittered ground-truth boxes puts them back on the objects' edges
    (what IoU 0.75-0.95 scores), and the model's output keeps the detector interface."""
    from torchvision.ops import box_iou

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(ModelConfig(name="fcos_lite", trunk="tiny", input_size=96, max_size=96, channels=32, classifier="crop", refine=2), 2)
    assert isinstance(model, TwoStage) and model.refiner is not None
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        images, targets = _dots(gen, 4)
        losses = model(images, targets)
        assert "box_refiner" in losses
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    model.eval()
    images, targets = _dots(gen, 16)
    truth = [torch.as_tensor(t["boxes"]).float() for t in targets]
    start = [jitter(b, 0.15, gen) for b in truth]
    with torch.no_grad():
        moved = model.refine_boxes(images, start)

    def mean_iou(a, b):
        return torch.cat([box_iou(x, y).diag() for x, y in zip(a, b)]).mean().item()

    before, after = mean_iou(start, truth), mean_iou(moved, truth)
    assert before < 0.8 and after > before + 0.1  # measured: 0.73 -> 0.94
    with torch.no_grad():
        out = model(images[:2])
    for o in out:
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["scores"]) == len(o["labels"])
        assert (o["boxes"][:, 2:] >= o["boxes"][:, :2]).all() and o["boxes"].min() >= 0 and o["boxes"].max() <= 96


def test_box_refiner_config_and_old_checkpoints():
    assert model_config({"name": "fcos_lite", "trunk": "tiny", "classifier": "crop", "refine": 1}).refine == 1
    with pytest.raises(ConfigError, match="add model.classifier=crop"):
        model_config({"name": "fcos_lite", "classifier": "none", "refine": 1})
    with pytest.raises(ConfigError, match="model.refine"):
        model_config({"name": "fcos_lite", "classifier": "crop", "refine": -1})
    # refine=0 builds no refiner: checkpoints from before it existed still load
    plain = build_model(ModelConfig(name="fcos_lite", trunk="tiny", input_size=96, max_size=96, channels=32, classifier="crop"), 2)
    assert plain.refiner is None and not any(k.startswith("refiner.") for k in plain.state_dict())


def test_refined_boxes_stay_inside_the_image_and_never_invert():
    """Whatever offsets the refiner outputs (here huge ones), a box stays a box inside its image."""
    model = build_model(ModelConfig(name="fcos_lite", trunk="tiny", input_size=96, max_size=96, channels=32, classifier="crop", refine=1), 2)
    torch.nn.init.constant_(model.refiner.fc[-1].bias, 0.0)
    model.refiner.fc[-1].bias.data = torch.tensor([50.0, 50.0, -50.0, -50.0])  # left/top far right/down, right/bottom far left/up
    model.eval()
    with torch.no_grad():
        [b] = model.refine_boxes([torch.rand(3, 96, 96)], [torch.tensor([[10.0, 10, 40, 40], [0, 0, 96, 96]])])
    assert (b[:, 2:] > b[:, :2]).all() and b.min() >= 0 and b[:, 2].max() <= 96 and b[:, 3].max() <= 96
