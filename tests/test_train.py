"""The sim-to-real trainer: evaluation against pycocotools, category matching, the holdout guard,
checkpoints, mixing ratios, configs, and a few-step smoke run of `simgen utility`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simgen.errors import ConfigError, DatasetError
from simgen.train.engine import load_checkpoint, save_checkpoint
from simgen.train.evaluate import coco_evaluate, coco_results, label_to_category
from simgen.train.guard import check_no_leak
from simgen.data import MixedDataset, mix_share as share
from simgen.train.models import ModelConfig, build_model, model_config

from .conftest import compose_dict, small_config

# ---------------------------------------------------------------------------- helpers


def gt_doc() -> dict:
    """Two images, three boxes, two categories whose ids are *not* in the model's order."""
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}, {"id": 2, "file_name": "b.jpg", "width": 100, "height": 100}],
        "categories": [{"id": 7, "name": "two"}, {"id": 3, "name": "one"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 30, 20], "area": 600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [5, 60, 25, 25], "area": 625, "iscrowd": 0},
        ],
    }


def preds_from_gt(doc: dict, cats: list[str], shift: float = 0.0) -> dict:
    names = {c["id"]: c["name"] for c in doc["categories"]}
    out: dict[int, dict] = {im["id"]: {"boxes": [], "scores": [], "labels": []} for im in doc["images"]}
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        p = out[a["image_id"]]
        p["boxes"].append([x + shift, y + shift, x + w + shift, y + h + shift])
        p["scores"].append(0.9)
        p["labels"].append(cats.index(names[a["category_id"]]) + 1)
    return {k: {kk: np.array(vv, dtype=np.float32 if kk != "labels" else np.int64) for kk, vv in v.items()} for k, v in out.items()}


def write_folder(root: Path, images: list[np.ndarray], categories=("one", "two"), every_category: bool = False) -> Path:
    """One 10x10 box an image, all of the first category (``every_category``: image k's of category k mod n)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    doc = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": n} for k, n in enumerate(categories)]}
    for i, arr in enumerate(images):
        fn = f"images/{i:03d}.png"
        Image.fromarray(arr).save(root / fn)
        doc["images"].append({"id": i + 1, "file_name": fn, "width": arr.shape[1], "height": arr.shape[0]})
        doc["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": i % len(categories) + 1 if every_category else 1, "bbox": [4, 4, 10, 10], "area": 100, "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


def noise(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------- evaluation


def test_perfect_predictions_score_one():
    doc, cats = gt_doc(), ["one", "two"]
    res = coco_results(preds_from_gt(doc, cats), label_to_category(cats, doc))
    m = coco_evaluate(doc, res)
    assert m["map"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0)
    assert m["per_class"] == {"two": pytest.approx(1.0), "one": pytest.approx(1.0)}
    assert {r["category_id"] for r in res} == {3, 7}  # matched by name, written with the holdout's ids


def test_shifted_boxes_score_lower_and_match_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    doc, cats = gt_doc(), ["one", "two"]
    res = coco_results(preds_from_gt(doc, cats, shift=2.0), label_to_category(cats, doc))
    m = coco_evaluate(doc, res)
    assert 0.0 < m["map"] < 1.0 and m["map50"] == pytest.approx(1.0)  # IoU of a 2 px shift is 0.68-0.72 here
    far = coco_evaluate(doc, coco_results(preds_from_gt(doc, cats, shift=12.0), label_to_category(cats, doc)))
    assert far["map"] < m["map"] and far["map50"] < 1.0
    gt = COCO()
    gt.dataset = json.loads(json.dumps(doc))
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(res))), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert m["map"] == pytest.approx(ev.stats[0]) and m["map50"] == pytest.approx(ev.stats[1])


def test_wrong_labels_and_no_predictions_score_zero():
    doc, cats = gt_doc(), ["two", "one"]  # model order differs from the holdout's: names decide
    good = coco_evaluate(doc, coco_results(preds_from_gt(doc, cats), label_to_category(cats, doc)))
    assert good["map"] == pytest.approx(1.0)
    swapped = coco_results(preds_from_gt(doc, cats), label_to_category(["one", "two"], doc))  # labels read in the wrong order
    assert coco_evaluate(doc, swapped)["map"] == 0.0
    empty = coco_evaluate(doc, [])
    assert empty["map"] == 0.0 and empty["per_class"] == {"two": 0.0, "one": 0.0}


def test_any_class_score_counts_a_box_doubted_between_classes_once():
    """A per-class NMS leaves one object boxed once per class it doubts between; "AP50 any class" asks whether
    the object is found, so the collapsed detections go through class-agnostic NMS first. Objects boxed once
    with the wrong class are found; a box on nothing still costs precision."""
    from simgen.train.evaluate import class_agnostic

    doc, cats = gt_doc(), ["one", "two"]
    right = coco_results(preds_from_gt(doc, cats), label_to_category(cats, doc))
    right[-1] = {**right[-1], "score": 0.3}  # one object found with little confidence
    doubted = right + [{**r, "category_id": 3 if r["category_id"] == 7 else 7, "score": 0.6} for r in right]
    assert coco_evaluate(*class_agnostic(doc, doubted))["map50"] == pytest.approx(1.0)
    # without the NMS every second box is a false positive ranked above lower-scored true ones
    assert coco_evaluate(*class_agnostic(doc, doubted, iou=None))["map50"] < coco_evaluate(*class_agnostic(doc, doubted))["map50"]
    wrong = coco_results(preds_from_gt(doc, cats), label_to_category(["two", "one"], doc))
    assert coco_evaluate(doc, wrong)["map"] == 0.0 and coco_evaluate(*class_agnostic(doc, wrong))["map50"] == pytest.approx(1.0)
    on_nothing = [{**right[0], "bbox": [200.0, 200.0, 10.0, 10.0], "score": 1.0, "image_id": right[0]["image_id"]}]
    assert coco_evaluate(*class_agnostic(doc, right + on_nothing))["map50"] < 1.0


# ---------------------------------------------------------------------------- categories and data config


def test_category_matching(tmp_path):
    from simgen.train.utility import DataConfig, model_categories

    train = write_folder(tmp_path / "train", [noise(1)], categories=("one", "two", "three"))
    hold = write_folder(tmp_path / "hold", [noise(2)], categories=("two", "one"))
    assert model_categories(DataConfig(synthetic=(train,), holdout=hold)) == ["one", "two", "three"]
    bad = write_folder(tmp_path / "hold2", [noise(3), noise(4)], categories=("one", "seven"), every_category=True)
    with pytest.raises(DatasetError, match="holdout category `seven` is not in the training data"):
        model_categories(DataConfig(synthetic=(train,), holdout=bad))
    # a holdout category with no box (a labelling tool's whole class list) is never scored: it blocks nothing
    empty = write_folder(tmp_path / "hold3", [noise(3)], categories=("one", "seven"))
    assert model_categories(DataConfig(synthetic=(train,), holdout=empty)) == ["one", "two", "three"]
    mapped = DataConfig(synthetic=(train,), holdout=bad, category_map=(("three", "seven"),))
    assert model_categories(mapped) == ["one", "two", "seven"]
    assert model_categories(DataConfig(synthetic=(train,), holdout=bad, class_agnostic=True)) == ["object"]


def test_configs_compose_and_convert(tmp_path):
    from simgen.train.utility import job_config, utility_config

    hold = write_folder(tmp_path / "hold", [noise(2)])
    syn = write_folder(tmp_path / "syn", [noise(3)])
    for model in ("frcnn_lite", "fcos_lite", "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn"):
        for trainer in ("cpu", "gpu", "smoke"):
            d = compose_dict("train", [f"model={model}", f"trainer={trainer}", f"data.synthetic={syn}", f"data.holdout={hold}", f"out={tmp_path}/o"])
            job = job_config(d)
            assert job.model.name == model and job.data.synthetic == (syn,)
    u = utility_config(compose_dict("utility", [f"data.synthetic=[{syn}]", f"data.holdout={hold}", "utility.seeds=[0,1]"]))
    assert u.fractions == (0.3, 0.5, 0.7) and u.seeds == (0, 1)
    with pytest.raises(DatasetError, match="has no annotations.json"):
        job_config(compose_dict("train", [f"data.synthetic={tmp_path}/nope", f"data.holdout={hold}"]))
    with pytest.raises(ConfigError, match="budget"):
        job_config(compose_dict("train", [f"data.synthetic={syn}", f"data.holdout={hold}", "trainer.max_minutes=null", "trainer.max_steps=null"]))
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        utility_config(compose_dict("utility", [f"data.synthetic={syn}", f"data.holdout={hold}", "utility.fractions=[1.0]"]))


def test_cli_error_is_one_line(tmp_path, capsys):
    from simgen.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", f"data.synthetic={tmp_path}/missing", f"data.holdout={tmp_path}", "trainer=smoke"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("simgen: error:")


# ---------------------------------------------------------------------------- the holdout guard


def test_guard_refuses_holdout_images(tmp_path):
    hold = write_folder(tmp_path / "hold", [noise(1), noise(2)])
    clean = write_folder(tmp_path / "clean", [noise(3), noise(4)])
    check_no_leak([clean], hold)
    leaky = write_folder(tmp_path / "leaky", [noise(5)])
    shutil.copy(hold / "images/001.png", leaky / "images/000.png")  # same bytes under another name
    with pytest.raises(DatasetError, match="holds 1 holdout image") as e:
        check_no_leak([clean, leaky], hold)
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match="is .* the holdout"):
        check_no_leak([hold], hold)
    # one photo in the holdout twice (a copy under another name, or one file under two ids) would be scored twice
    doubled = write_folder(tmp_path / "doubled", [noise(1), noise(2), noise(1)])
    with pytest.raises(DatasetError, match=r"`images/002.png` and `images/000.png` are the same photo \(image ids 1 and 3\)"):
        check_no_leak([clean], doubled)
    doc = json.loads((hold / "annotations.json").read_text())
    doc["images"].append({**doc["images"][0], "id": 9})
    (hold / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"`images/000.png` is listed twice \(image ids 1 and 9\).*remove one entry"):
        check_no_leak([clean], hold)


# ---------------------------------------------------------------------------- models and checkpoints


def tiny_model(trunk: str = "tiny", name: str = "frcnn_lite", classifier: str = "none"):
    return build_model(ModelConfig(name=name, trunk=trunk, input_size=64, max_size=64, channels=32, classifier=classifier), num_classes=3)


def test_fcos_head_convs_sets_the_tower_depth():
    """model.head_convs is the depth of both FCOS towers (2 by default, torchvision's own FCOS uses 4)."""
    from torch import nn

    for n in (2, 4):
        model = build_model(ModelConfig(name="fcos_lite", trunk="tiny", input_size=64, max_size=64, channels=32, head_convs=n), 3)
        for tower in (model.head.classification_head.conv, model.head.regression_head.conv):
            assert sum(isinstance(m, nn.Conv2d) for m in tower) == n


@pytest.mark.parametrize("name,classifier", [("frcnn_lite", "none"), ("fcos_lite", "none"), ("fcos_lite", "crop")])
def test_checkpoint_round_trip(tmp_path, name, classifier):
    torch.manual_seed(0)
    model = tiny_model(name=name, classifier=classifier).eval()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, {"categories": ["a", "b", "c"], "step": 3})
    obj = torch.load(path, weights_only=True)
    assert obj["meta"]["categories"] == ["a", "b", "c"]
    torch.manual_seed(1)
    again = tiny_model(name=name, classifier=classifier).eval()
    load_checkpoint(path, again)
    x = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        a, b = model(x)[0], again(x)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    cfg = model_config({"name": name, "trunk": "tiny", "input_size": 64, "max_size": 64, "channels": 32, "weights": str(path),
                        "classifier": classifier})
    loaded = build_model(cfg, num_classes=3)  # model.weights=<path> loads it too
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    # other classes: the network carries over and only the class-sized outputs start fresh (fine-tuning to new classes)
    other = build_model(cfg, num_classes=5).state_dict()
    fresh = {k for k, v in model.state_dict().items() if v.shape != other[k].shape}
    assert fresh and all(any(p in k for p in ("cls_logits", "cls_score", "bbox_pred", "classifier.fc.")) for k in fresh)
    assert all(torch.equal(v, other[k]) for k, v in model.state_dict().items() if k not in fresh)
    with pytest.raises(ConfigError, match="do not fit this model"):  # another network: refused
        build_model(model_config({**cfg.__dict__, "channels": 64}), num_classes=3)


def test_default_weights_offline_is_a_clear_error(monkeypatch):
    import urllib.error

    import torchvision.models._api as api

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match="offline: set model.weights=none") as e:
        build_model(model_config({"name": "fasterrcnn_mobilenet_v3_large_fpn", "weights": "DEFAULT"}), 6)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model.weights_backbone"):
        build_model(model_config({"name": "frcnn_lite", "weights_backbone": "DEFAULT"}), 6)


# ---------------------------------------------------------------------------- mixing


class Fake(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(1), {"image_id": i}


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_mixing_ratios(fraction):
    mixed = MixedDataset(Fake(7), Fake(50), fraction)  # very unequal sizes: the fraction decides, not the sizes
    idx = list(mixed.sampler(seed=3, num_samples=4000))
    seen = mixed.count(idx)
    assert abs(seen["synthetic_share"] - fraction) < 0.03
    assert share(mixed[i][1]["source"] for i in idx[:200]) == mixed.count(idx[:200])
    assert mixed[0][1]["source"] == "real" and mixed[7][1]["source"] == "synthetic"
    assert list(mixed.sampler(seed=3, num_samples=50)) == idx[:50]  # seeded
    with pytest.raises(ValueError):
        MixedDataset(None, Fake(3), 0.5)


# ---------------------------------------------------------------------------- smoke: utility end to end


def test_smoke_utility(tmp_path, holdout):
    from simgen.run import render_dataset
    from simgen.train.utility import run_utility, utility_config

    syn = render_dataset(small_config(tmp_path, "seed=1", name="syn"), log=lambda m: None)
    # A stand-in "real" training folder: a second *synthetic* render, labelled real only to drive the
    # TRTR and mix code paths (there is no real training set in this repository).
    fake_real = render_dataset(small_config(tmp_path, "seed=2", name="fake_real"), log=lambda m: None)
    d = compose_dict("utility", ["trainer=smoke", "trainer.max_steps=2", "model.trunk=tiny", "model.input_size=96", "model.max_size=96",
                                 "model.channels=32", f"data.synthetic=[{syn}]", f"data.real={fake_real}", f"data.holdout={holdout}",
                                 "data.holdout_limit=3", "utility.fractions=[0.5]", f"out={tmp_path / 'u'}"])
    report = run_utility(utility_config(d))
    out = tmp_path / "u"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["runs"] == report["runs"]
    assert [r["name"] for r in report["runs"]] == ["TSTR", "mix-0.5", "TRTR", "finetune"]  # finetune: on by default with data.real
    for r in report["runs"]:
        assert {"name", "synthetic_fraction", "train_images", "steps", "map", "map50", "per_class"} <= set(r)
        assert r["steps"] == 2 and 0.0 <= r["map"] <= r["map50"] <= 1.0
        assert set(r["per_class"]) == {"one", "two", "three", "four", "five", "six"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in r["per_class"].values())
    assert report["runs"][0]["synthetic_share_seen"] == 1.0 and report["runs"][2]["synthetic_share_seen"] == 0.0
    assert (out / "report.md").read_text().count("| TSTR |") == 1
    assert [e["name"] for e in report["summary"]] == ["TSTR", "mix-0.5", "TRTR", "finetune"]
    assert all(e["map_std"] == 0.0 and e["map_mean"] == r["map"] for e, r in zip(report["summary"], report["runs"]))
    assert (out / "map_vs_fraction.png").stat().st_size > 1000
    bp = report["box_precision"]  # the best run's boxes against the other three's (2 steps: few or no matches)
    assert bp["run"] in {f"{r['name']}-s0" for r in report["runs"]} and bp["objects"] > 0 and "matched" in bp
    prov = json.loads((out / "runs/TSTR-s0/provenance.json").read_text())
    assert prov["datasets"]["synthetic"][0]["manifest_annotations_sha256"]
    assert prov["datasets"]["real"] == [] and prov["holdout"]["images_scored"] == 3 and prov["versions"]["torch"]
    ck = torch.load(out / "runs/TSTR-s0/checkpoint.pt", weights_only=True)
    assert ck["meta"]["categories"][0] == "one"
    preds = json.loads((out / "runs/TSTR-s0/predictions.json").read_text())
    assert isinstance(preds, list) and all({"image_id", "category_id", "bbox", "score"} <= set(p) for p in preds)
    # a finished run is read back, not retrained
    again = run_utility(utility_config(d))
    assert again["runs"] == report["runs"]


def test_utility_summary_over_seeds():
    """Several seeds per arm fold into one summary row: mean and sample std, arms in run order."""
    from simgen.train.utility import summarize, summary_table

    def run(name, f, seed, m):
        return {"name": name, "synthetic_fraction": f, "seed": seed, "map": m, "map50": 2 * m, "map50_agnostic": None}

    runs = [run("TSTR", 1.0, 0, 0.1), run("TSTR", 1.0, 1, 0.3), run("TRTR", 0.0, 0, 0.2), run("TRTR", 0.0, 1, 0.2)]
    s = summarize(runs)
    assert [e["name"] for e in s] == ["TSTR", "TRTR"] and s[0]["seeds"] == [0, 1]
    assert s[0]["map_mean"] == pytest.approx(0.2) and s[0]["map_std"] == pytest.approx(0.1414, abs=1e-4)
    assert s[0]["map50_mean"] == pytest.approx(0.4) and s[1]["map_std"] == 0.0
    assert "map50_agnostic_mean" not in s[0]  # no values, no made-up number
    table = summary_table(s)
    assert "| TSTR | 1 | 2 | 0.200 ± 0.141 | 0.400 ± 0.283 | - |" in table
    assert "failed_seeds" not in s[0]  # two seeds: which one failed cannot be told


def test_utility_summary_flags_a_seed_that_failed_to_train():
    """With three seeds or more, a run under half the median of its arm's other seeds is flagged (the dice case: 0.108
    beside 0.51-0.53), the arm's mean is also given without it, and the warning says what usually prevents it."""
    from simgen.train.utility import failed_warnings, summarize

    def run(name, seed, m):
        return {"name": name, "synthetic_fraction": 1.0, "seed": seed, "map": m, "map50": m, "map50_agnostic": m}

    runs = [run("TSTR", s, m) for s, m in enumerate([0.526, 0.523, 0.512, 0.108, 0.520, 0.519])]
    runs += [run("TRTR", s, m) for s, m in enumerate([0.30, 0.45, 0.50])]  # low, but not half the others' median
    # barely trained: seed 0 is under half the others' median, but by less than FAILED_GAP (noise, not a failure)
    noisy = [run("mix-0.5", s, m) for s, m in enumerate([0.0086, 0.0098, 0.0264])]
    assert "failed_seeds" not in summarize(noisy)[0] and failed_warnings(noisy, summarize(noisy)) == []
    s = summarize(runs)
    assert s[0]["failed_seeds"] == [3] and s[0]["map_median"] == pytest.approx(0.5195)
    assert s[0]["map_mean_without_failed"] == pytest.approx(0.52, abs=1e-3) and s[0]["map_mean"] == pytest.approx(0.4513, abs=1e-3)
    assert "failed_seeds" not in s[1]
    (line,) = failed_warnings(runs, s)
    assert line.startswith("warning: TSTR seed 3 failed to train: mAP 0.108") and "trainer.warmup_steps" in line
    assert "0.451 ± 0.168 with it, 0.520 ± 0.005 without" in line


def test_killed_training_resumes_from_its_checkpoint(tmp_path, holdout, monkeypatch):
    """A run that dies mid-training continues from its last periodic checkpoint on rerun (same sample
    stream, optimizer and RNG), and ends where an uninterrupted run ends."""
    from simgen.run import render_dataset
    from simgen.train import engine
    from simgen.train.utility import job_config, run_one

    syn = render_dataset(small_config(tmp_path, "seed=1", "n_images=4", name="syn"), log=lambda m: None)
    d = compose_dict("train", ["trainer=smoke", "trainer.max_steps=4", "trainer.checkpoint_minutes=1e-9", "trainer.threads=1",
                               "model.trunk=tiny", "model.input_size=96", "model.max_size=96", "model.channels=32",
                               f"data.synthetic=[{syn}]", f"data.holdout={holdout}", "data.holdout_limit=2", f"out={tmp_path / 'x'}"])
    job = job_config(d)
    whole = run_one(job, tmp_path / "whole", 1.0, 0)

    real_to_device, calls = engine._to_device, {"n": 0}

    def dies_at_step_3(*a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # stands in for a kill: nothing after this point runs
        return real_to_device(*a)

    monkeypatch.setattr(engine, "_to_device", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_one(job, tmp_path / "cut", 1.0, 0)
    monkeypatch.setattr(engine, "_to_device", real_to_device)
    ck = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)
    assert ck["meta"]["partial"] and ck["meta"]["step"] == 2 and not (tmp_path / "cut/metrics.json").exists()

    lines = []
    again = run_one(job, tmp_path / "cut", 1.0, 0, log=lines.append)
    assert any("resuming from step 2" in ln for ln in lines), lines
    assert again["steps"] == 4 and again["images_seen"] == whole["images_seen"]
    a = torch.load(tmp_path / "whole/checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a), "resumed weights differ"
    assert again["map"] == whole["map"]
