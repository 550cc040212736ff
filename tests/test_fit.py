"""`simgen fit` and `simgen render overlay=`: a known-answer fit, the overlay file, and bad input.

The known answer: a small dice set rendered with chosen camera distance, object count, JPEG quality and
noise (plain grounds and untextured objects, so that 32 images carry little content spread), then fitted
with a calibration of 24 images per stage. The fit must recover the settings within what 24-32 images
allow; the numbers it gave when written are in the comments."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from simgen.errors import ConfigError
from .conftest import compose_dict

PLAIN = ["scene=dice", "randomization.ground=false", "randomization.textures=false", "workers=1", "width=320", "height=320"]
TRUE = {"distance": [0.5, 0.6], "count": [2, 4], "jpeg_quality": [55, 60], "noise_std": [3, 4]}


def simgen(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simgen.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> Path:
    from simgen.config import render_config
    from simgen.run import render_dataset

    out = tmp_path_factory.mktemp("fit") / "known"
    d = compose_dict("render", [*PLAIN, "n_images=32", "seed=7", "progress=false", f"out={out}"])
    # Set on the composed dict, not as overrides: the defaults' forms (a list, {loguniform: ...}) may change.
    d["randomization"]["sensor"].update(jpeg_quality=TRUE["jpeg_quality"], noise_std=TRUE["noise_std"])
    d["scene"]["camera"]["distance"] = TRUE["distance"]
    d["scene"]["objects"]["die"]["count"] = TRUE["count"]
    render_dataset(render_config(d), log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def fitted(known) -> dict:
    from simgen.fit import FitOptions, fit

    return fit(known, compose_dict("render", PLAIN), FitOptions(calibration_images=24, progress=False), log=lambda m: None)


def test_known_answer_is_recovered(fitted):
    o = fitted["overlay"]
    sensor, camera = o["randomization"]["sensor"], o["scene"]["camera"]
    # JPEG straight from the quantisation tables: [52, 63] for [55, 60] (the +-3 margin)
    assert abs(sensor["jpeg_quality"][0] - 55) <= 5 and abs(sensor["jpeg_quality"][1] - 60) <= 5
    # distance (log-uniform): [0.373, 0.758] when written; it must cover the true centre and stay within 2.5x of itself
    lo, hi = camera["distance"]["loguniform"]
    assert lo <= 0.55 <= hi and lo < 0.6 and hi > 0.5 and hi / lo < 2.5
    # count: [2, 6]; contains the true [2, 4] and is not absurdly wider
    lo, hi = o["scene"]["objects"]["die"]["count"]
    assert lo <= 2 and hi >= 4 and hi - lo <= 6
    # noise: [0.0, 3.61]; JPEG at 55-60 hides most of a noise of 3-4, so only a sane band can be asked for
    lo, hi = sensor["noise_std"]
    assert lo <= 4 and 2.5 <= hi <= 9
    # brightness gain: [0.83, 1.14] for a true [0.85, 1.15]
    lo, hi = sensor["brightness"]
    assert lo <= 1.0 <= hi and 0.6 <= lo and hi <= 1.5
    # contrast: [0.48, 0.87] for a true [0.85, 1.15]: std L* is mostly content (dice, tray), see docs/fit.md
    assert 0.3 <= sensor["contrast"][0] <= sensor["contrast"][1] <= 2.5
    assert 0.0 <= sensor["blur_probability"] <= 1.0
    assert "box" not in o.get("labels", {})  # tight boxes on both sides: no square-box convention
    assert o["scene"]["name"] == "dice" and o["width"] == 320 and o["height"] == 320


def test_overlay_file_says_where_each_value_came_from(fitted, tmp_path):
    from simgen import __version__
    from simgen.fit import write_overlay

    path = write_overlay(fitted, tmp_path / "sub" / "fit.yaml")
    text = path.read_text()
    assert yaml.safe_load(text) == fitted["overlay"]
    head = [line for line in text.splitlines() if line.startswith("# ")][:4]
    assert any(str(fitted["meta"]["real"]) in h and "32 images" in h for h in head)
    assert any(f"simgen {__version__}" in h and fitted["meta"]["created_utc"] in h for h in head)
    lines = text.splitlines()
    for key, statistic in (("jpeg_quality:", "quantisation tables"), ("distance:", "object size"), ("count:", "objects per image"),
                           ("noise_std:", "Immerkaer"), ("brightness:", "mean L*")):
        i = next(i for i, line in enumerate(lines) if line.strip().startswith(key))
        comment = []
        while lines[i - 1].strip().startswith("#"):
            i -= 1
            comment.insert(0, lines[i])
        assert statistic in " ".join(comment), (key, comment)
    assert "tilt_deg not fitted" in text
    assert [p.name for p in path.parent.iterdir()] == ["fit.yaml"]  # no temporary file left beside it


def test_render_with_overlay_uses_the_fitted_values_and_explicit_overrides_win(fitted, tmp_path):
    from simgen.fit import write_overlay

    path = write_overlay(fitted, tmp_path / "fit.yaml")
    out = tmp_path / "ds"
    r = simgen("render", f"overlay={path}", "n_images=2", "workers=1", "progress=false", f"out={out}",
               "randomization.sensor.jpeg_quality=[90,95]")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "manifest.json").read_text())["config"]
    o = fitted["overlay"]
    assert cfg["scene"]["name"] == "dice"
    assert cfg["scene"]["camera"]["distance"] == o["scene"]["camera"]["distance"]
    assert cfg["scene"]["objects"]["die"]["count"] == o["scene"]["objects"]["die"]["count"]
    assert cfg["randomization"]["sensor"]["noise_std"] == o["randomization"]["sensor"]["noise_std"]
    assert cfg["randomization"]["sensor"]["brightness"] == o["randomization"]["sensor"]["brightness"]
    assert [cfg["width"], cfg["height"]] == [320, 320]
    assert cfg["randomization"]["sensor"]["jpeg_quality"] == [90, 95]  # the command line wins over the overlay


def test_overlay_overrides_replace_and_merge(tmp_path):
    """Values land on the composed config: a list replaces a {loguniform: ...} default, mappings merge, an
    explicit override placed later wins, and an overlay for another scene is refused."""
    from simgen.fit import expand_overlay

    f = tmp_path / "o.yaml"
    f.write_text("scene: {name: dice, camera: {distance: [0.3, 0.4]}}\n"
                 "randomization: {sensor: {noise_std: {loguniform: [0.5, 2.0]}, jpeg_quality: [60, 65]}}\nlabels: {box: square}\n")
    from simgen.cli import composed, conf_dir, group_options

    def expand(args):
        return expand_overlay(args, lambda g: (conf_dir() / g).is_dir(), lambda g, o: o in group_options(g),
                              lambda groups: composed("render", groups))

    args = expand([f"overlay={f}", "randomization.sensor.jpeg_quality=[80,85]"])
    d = compose_dict("render", args)
    assert d["scene"]["name"] == "dice" and d["scene"]["camera"]["distance"] == [0.3, 0.4]
    assert d["scene"]["camera"]["fov_deg"] == compose_dict("render")["scene"]["camera"]["fov_deg"]  # merged, not replaced
    assert d["randomization"]["sensor"]["noise_std"] == {"loguniform": [0.5, 2.0]}
    assert d["randomization"]["sensor"]["jpeg_quality"] == [80, 85]
    assert d["labels"]["box"] == "square"
    with pytest.raises(ConfigError, match="fitted for scene=dice"):
        expand([f"overlay={f}", "scene=tabletop"])
    with pytest.raises(ConfigError, match="not found"):
        expand([f"overlay={tmp_path / 'missing.yaml'}"])
    (tmp_path / "bad.yaml").write_text("scene: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        expand([f"overlay={tmp_path / 'bad.yaml'}"])


def test_square_and_padded_boxes_are_read_as_the_annotators_convention(tmp_path):
    """Every real box grown to a square while the same objects' tight boxes are not: labels.box square, and no
    padding (squaring is not padding); the same squares grown by 3 px a side: labels.box_pad_px ~3; the tight set
    itself: neither. Dice ~25 px wide: at ~10 px most tight boxes of a die are square within 1 px anyway."""
    from simgen.config import render_config
    from simgen.fit import FitOptions, real_boxes
    from simgen.report.build import load_side
    from simgen.run import render_dataset

    tight = tmp_path / "tight"
    d = compose_dict("render", [*PLAIN, "n_images=8", "progress=false", f"out={tight}"])
    d["scene"]["camera"]["distance"], d["scene"]["objects"]["die"]["count"] = [0.25, 0.3], [4, 6]
    render_dataset(render_config(d), log=lambda m: None)

    def boxed(name: str, pad: float) -> Path:
        doc = json.loads((tight / "annotations.json").read_text())
        for a in doc["annotations"]:
            x, y, w, h = a["bbox"]
            s = max(w, h) + 2 * pad
            a["bbox"] = [x + w / 2 - s / 2, y + h / 2 - s / 2, s, s]
        out = tmp_path / name
        out.mkdir()
        shutil.copytree(tight / "images", out / "images")
        (out / "annotations.json").write_text(json.dumps(doc))
        return out

    opts, calib = FitOptions(progress=False), load_side("calibration", tight)
    box, pad = real_boxes(load_side("real", boxed("square", 0.0)), calib, opts)[1]
    assert box.value == "square" and "100% of" in box.source, box.source
    assert pad.value is None or abs(pad.value) < 1.0, pad.source
    box, pad = real_boxes(load_side("real", boxed("padded", 3.0)), calib, opts)[1]
    assert box.value == "square" and pad.value is not None and 2.0 <= pad.value <= 4.0, pad.source
    box, pad = real_boxes(load_side("real", tight), calib, opts)[1]
    assert box.value is None and "not set" in box.source, box.source
    assert pad.value is None and "not set" in pad.source, pad.source


@pytest.mark.parametrize("args, match", [
    (["scene=dice"], "data.real is required"),
    (["data.real={empty}", "scene=dice"], "annotations.json` not found"),
    (["data.real={known}", "scene=dcie"], "unknown scene `dcie`. Did you mean `dice`?"),
    (["data.real={known}", "scene=dice", "out={existing}"], "already exists; choose another file or pass overwrite=true"),
    (["data.real={known}", "scene=dice", "out={tmp}/fit.txt"], "must end in .yaml"),
    (["data.real={known}", "scene=dice", "fit.margin=3"], "fit.margin must be"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(known, tmp_path, args, match):
    (tmp_path / "empty").mkdir()
    existing = tmp_path / "existing.yaml"
    existing.write_text("keep: me\n")
    fmt = {"empty": tmp_path / "empty", "known": known, "existing": existing, "tmp": tmp_path}
    args = [a.format(**fmt) for a in args]
    if not any(a.startswith("out=") for a in args):
        args.append(f"out={tmp_path / 'fit.yaml'}")
    r = simgen("fit", *args, "workers=1", "progress=false")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simgen: error:") and match in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "existing.yaml"]
    assert existing.read_text() == "keep: me\n"


def test_overlay_write_is_atomic(fitted, tmp_path, monkeypatch):
    """A write that fails at the rename leaves the earlier file whole and no temporary file beside it."""
    import simgen.fit as fit_mod

    path = tmp_path / "fit.yaml"
    path.write_text("old: 1\n")
    with pytest.raises(ConfigError, match="already exists"):
        fit_mod.write_overlay(fitted, path)

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fit_mod.os, "replace", broken)
    with pytest.raises(ConfigError, match="No space left"):
        fit_mod.write_overlay(fitted, path, overwrite=True)
    assert path.read_text() == "old: 1\n" and [p.name for p in tmp_path.iterdir()] == ["fit.yaml"]
    monkeypatch.undo()
    fit_mod.write_overlay(fitted, path, overwrite=True)
    assert yaml.safe_load(path.read_text()) == fitted["overlay"]


def test_fit_is_listed_and_has_help():
    r = simgen()
    assert r.returncode == 0 and "\n  fit " in r.stdout and "overlay=" in r.stdout
    r = simgen("fit", "--help")
    assert r.returncode == 0 and "simgen fit data.real=<dir> scene=<name> out=<overlay.yaml>" in r.stdout
    r = simgen("render", "--help")
    assert r.returncode == 0 and "overlay=" in r.stdout


def test_a_narrow_real_set_gets_the_median_gain_not_the_span_of_every_percentile():
    """Renders spread L* 30-95, the real photos 70-72: the matched gains run from 0.75 to 2.3, but a gain drawn
    blind to the image must only shift the centre (a bright render at 2.3 washes out)."""
    from simgen.fit import Matched, gain_range

    levels = np.linspace(5, 95, 19)
    row = np.linspace(30, 95, 19)  # the renders' mean L* at gain 1, per percentile
    m = Matched(levels, 71.0 / row, 0.0)  # the gain that takes each render percentile to 71
    narrow = gain_range(m, (0.5, 3.0), list(np.linspace(70, 72, 25)), row, levels, margin=0.1)
    assert 0.9 < narrow[0] < 71 / 62.5 < narrow[1] < 1.35 and narrow[1] - narrow[0] < 0.4  # about the median gain, 1.14
    wide_real = list(np.linspace(25, 100, 25))  # as spread as the renders: every percentile's setting counts
    wide = gain_range(m, (0.5, 3.0), wide_real, row, levels, margin=0.1)
    assert wide[0] < 0.8 and wide[1] > 2.0


def test_box_pads_match_each_real_box_with_the_model_box_over_it():
    """fit.run's measure: per real box, its best-overlapping confident prediction; half the side difference."""
    from simgen.fit import box_pads

    gt = np.array([[10.0, 10, 50, 50], [100, 100, 130, 130], [200, 200, 220, 220]])
    pred = np.array([[12.0, 12, 48, 48],     # 2 px a side inside the first
                     [101, 101, 129, 129],   # 1 px inside the second
                     [300, 300, 320, 320]])  # on nothing: the third real box has no match
    assert box_pads(gt, pred, np.array([0.9, 0.9, 0.9])) == [2.0, 1.0]
    assert box_pads(gt, pred, np.array([0.9, 0.1, 0.9])) == [2.0]  # unconfident predictions are not matched
    assert box_pads(gt, pred[:0], np.array([])) == []


def test_fit_run_must_have_trained_on_synthetic_only(tmp_path):
    from simgen.fit import fit_options, synthetic_only_checkpoint

    def arm(name: str, real: int) -> None:
        (tmp_path / "u" / "runs" / name).mkdir(parents=True)
        (tmp_path / "u" / "runs" / name / "checkpoint.pt").write_bytes(b"x")
        (tmp_path / "u" / "runs" / name / "provenance.json").write_text(json.dumps({"sources_seen": {"real": real, "synthetic": 80}}))

    arm("TRTR-s0", 80)
    with pytest.raises(ConfigError, match="no run trained on synthetic images only"):
        synthetic_only_checkpoint(tmp_path / "u")
    arm("TSTR-s0", 0)
    assert synthetic_only_checkpoint(tmp_path / "u").name == "TSTR-s0"
    with pytest.raises(ConfigError, match="fit.run `.*` is not a folder"):
        fit_options({"fit": {"run": str(tmp_path / "missing")}})
    assert fit_options({"fit": {"run": str(tmp_path / "u")}}).run == tmp_path / "u"


def test_fit_run_pad_adds_what_the_detector_misses_to_its_training_padding(tmp_path, holdout, monkeypatch):
    """Known answer: a 'detector' whose boxes are the real boxes 2 px a side smaller, trained on data padded 0.5 px:
    the annotators pad 2.5 px."""
    from simgen.fit import Key, run_pad_key

    run = _shrinking_run(tmp_path, monkeypatch, {"labels": {"box": "square", "box_pad_px": 0.5}})
    key = run_pad_key(run, holdout, Key(("labels", "box_pad_px"), 1.3, ""), lambda m: None)
    assert key.path == ("labels", "box_pad_px") and key.value == 2.5, key.source
    assert "padded 0.5 px" in key.source and "the edge measure said 1.3 px" in key.source


def _tiny_real(root: Path, names: list[str]) -> Path:
    """Two 64x64 PNGs with one box per category: just enough for `simgen fit` to load the set."""
    import cv2

    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(2):
        img = np.full((64, 64, 3), 90, np.uint8)
        img[10:30, 10:30] = 220
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"images/{i}.png", "width": 64, "height": 64})
        anns += [{"id": len(anns) + k + 1, "image_id": i + 1, "category_id": k + 1, "bbox": [10, 10, 20, 20], "area": 400,
                  "iscrowd": 0} for k in range(len(names))]
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def test_a_scene_sharing_no_category_with_the_real_set_is_warned_about(tmp_path, monkeypatch, capsys):
    """Dice photos fitted with scene=tabletop: one warning line naming both sets and the scene that matches, before any
    render. A warning, not a refusal: a one-class real set ("die") against the dice scene shares no name either."""
    import simgen.fit as fit_mod
    from simgen.fit import FitOptions, fit

    class Stop(Exception):
        pass

    def stop(*a, **kw):
        raise Stop

    monkeypatch.setattr(fit_mod, "pixel_stats", stop)  # the first measurement: the category check has run by then
    real = _tiny_real(tmp_path / "real", ["one", "two", "three", "four", "five", "six"])
    with pytest.raises(Stop):
        fit(real, compose_dict("render", ["scene=tabletop"]), FitOptions(progress=False), log=lambda m: None)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("simgen: warning: none of the categories of scene=tabletop"), line
    assert "(duck, teddy, mug, lego, can, ball)" in line and "(one, two, three, four, five, six)" in line
    assert "pick the scene whose categories match (scene=dice)" in line and "+scene.objects.duck.category=one" in line


def test_a_scene_sharing_some_categories_warns_once_on_stderr(tmp_path, monkeypatch, capsys):
    """Some categories shared: one warning line on stderr before any render (and in the overlay's notes); the same
    categories on both sides: no warning."""
    import simgen.fit as fit_mod
    from simgen.fit import FitOptions, fit

    class Stop(Exception):
        pass

    def stop(*a, **kw):
        raise Stop

    monkeypatch.setattr(fit_mod, "pixel_stats", stop)  # the first measurement: the category check has run by then
    render = compose_dict("render", PLAIN)
    with pytest.raises(Stop):
        fit(_tiny_real(tmp_path / "some", ["one", "two", "seven"]), render, FitOptions(progress=False), log=lambda m: None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("simgen: warning: scene=dice categories three, four, five, six are not in"), err
    assert "real categories seven are not in scene=dice" in err[0]
    with pytest.raises(Stop):
        fit(_tiny_real(tmp_path / "same", ["one", "two", "three", "four", "five", "six"]), render, FitOptions(progress=False),
            log=lambda m: None)
    assert capsys.readouterr().err == ""


def _squares(root: Path, side: int, pad: float, n: int = 8) -> Path:
    """``n`` photos of ``side`` x ``side`` px, each with 4 light squares of 36-50 px at 640 (the same framing at any
    size: positions and sizes scale with ``side``) on a darker ground, antialiased; boxed ``pad`` px a side (at
    ``side``) outside each square."""
    import cv2

    rng, s, sup = np.random.default_rng(3), side / 640, 4
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        big = np.full((side * sup, side * sup), int(rng.integers(50, 100)), np.uint8)
        for cx, cy in ((160, 160), (480, 160), (160, 480), (480, 480)):
            a = float(rng.uniform(36, 50))
            x, y = cx + float(rng.uniform(-60, 60)) - a / 2, cy + float(rng.uniform(-60, 60)) - a / 2
            x0, y0, w = round(x * s * sup), round(y * s * sup), round(a * s * sup)  # whole pixels of the supersampled image
            big[y0:y0 + w, x0:x0 + w] = int(rng.integers(170, 230))
            bx, by, bw = x0 / sup, y0 / sup, w / sup  # the square's exact extent at ``side``
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [bx - pad, by - pad, bw + 2 * pad, bw + 2 * pad],
                         "area": bw * bw, "iscrowd": 0})
        cv2.imwrite(str(root / "images" / f"{i}.png"), cv2.resize(big, (side, side), interpolation=cv2.INTER_AREA))
        images.append({"id": i + 1, "file_name": f"images/{i}.png", "width": side, "height": side})
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "one"}]}))
    return root


def test_box_padding_is_written_in_px_of_the_render_size(tmp_path):
    """The same real photos (640 px, boxes 3 px a side outside 36-50 px squares) against tight calibrations of the same
    framing at 640 and at 320 px: labels.box_pad_px ~3 at 640 and half that at 320, where the squares, and the same
    annotators' habit, are half the px. The real boxes are shrunk by the same photo px at both sizes. (Comparing the
    photos' 640-px margins with 320-px calibration margins wrote ~3 at both: boxes 2x too loose at 320.)"""
    from simgen.fit import FitOptions, real_boxes
    from simgen.report.build import load_side

    real = load_side("real", _squares(tmp_path / "real", 640, pad=3.0))
    pads, loose = {}, {}
    for side in (640, 320):
        calib = load_side("calibration", _squares(tmp_path / f"calib{side}", side, pad=0.0))
        _, (box, pad), loose[side] = real_boxes(real, calib, FitOptions(progress=False))
        assert box.value is None, box.source  # squares are square when tight: no square-box convention
        pads[side] = pad.value
    assert pads[640] is not None and 2.5 <= pads[640] <= 3.5, pads
    assert pads[320] is not None and abs(pads[320] - pads[640] / 2) <= 0.25, pads
    assert abs(loose[320] - loose[640]) <= 0.3, loose  # px of the photos: the objects' size is corrected alike


def test_detector_pad_is_in_px_of_the_render_size():
    """fit.run's measure in one unit: real boxes 2 px a side larger than the detector's in 640-px photos, the detector
    trained on 640-px renders padded 1 px: 3 px for a 640 render, 1.5 for a 320 one; trained on 320-px renders padded
    0.5 px (the same padding relative to the image): 3 px at 640 again."""
    from simgen.fit import detector_pad

    pads, sides = [2.0, 2.0, 1.0, 3.0, 2.0], [640.0] * 5
    assert detector_pad(pads, sides, 1.0, 640, 640)[0] == pytest.approx(3.0)
    assert detector_pad(pads, sides, 1.0, 640, 320)[0] == pytest.approx(1.5)
    assert detector_pad(pads, sides, 0.5, 320, 640)[0] == pytest.approx(3.0)
    assert detector_pad([4.0, 4.0, 2.0], [1280.0, 1280.0, 640.0], 1.0, 640, 640)[0] == pytest.approx(3.0)  # mixed photo sizes
    assert detector_pad(pads, sides, 1.0, None, None)[0] == pytest.approx(3.0)  # no size: px as measured


def test_fit_run_pad_is_scaled_to_the_overlay_size(tmp_path, holdout, monkeypatch):
    """run_pad_key for a 320x320 overlay: the detector draws boxes 2 px a side smaller than the annotators in the 640-px
    holdout photos and was trained on 640x640 renders padded 1 px: (1 + 2) / 2 = 1.5 px at 320."""
    from simgen.fit import Key, run_pad_key

    run = _shrinking_run(tmp_path, monkeypatch, {"width": 640, "height": 640, "labels": {"box": "square", "box_pad_px": 1.0}})
    edge = Key(("labels", "box_pad_px"), 0.7, "")
    assert run_pad_key(run, holdout, edge, lambda m: None, (640, 640)).value == 3.0
    key = run_pad_key(run, holdout, edge, lambda m: None, (320, 320))
    assert key.value == 1.5, key.source
    assert "320x320" in key.source and "the edge measure said 0.7 px" in key.source


def _shrinking_run(tmp_path, monkeypatch, render_config: dict):
    """A run folder (checkpoint, provenance) trained on a synthetic folder rendered with ``render_config``, and a
    detector (engine.predict patched) that draws every holdout box 2 px a side smaller than the annotators did."""
    import torch

    import simgen.train.engine as engine
    from simgen.train.engine import save_checkpoint
    from simgen.train.models import ModelConfig, build_model

    syn = tmp_path / "syn"
    syn.mkdir()
    (syn / "manifest.json").write_text(json.dumps({"config": render_config}))
    run = tmp_path / "run"
    run.mkdir()
    m = ModelConfig(name="fcos_lite", trunk="tiny", input_size=64, max_size=64, channels=32)
    save_checkpoint(run / "checkpoint.pt", build_model(m, 6), {"categories": ["one", "two", "three", "four", "five", "six"]})
    (run / "provenance.json").write_text(json.dumps({
        "sources_seen": {"real": 0, "synthetic": 16}, "categories": ["one", "two", "three", "four", "five", "six"],
        "datasets": {"synthetic": [{"path": str(syn)}]},
        "model": {"name": "fcos_lite", "trunk": "tiny", "input_size": 64, "max_size": 64, "channels": 32}}))

    def shrunk(model, dataset, device, **kw):
        out = {}
        for i in range(len(dataset)):
            _, t = dataset[i]
            b = torch.as_tensor(t["boxes"]).float() + torch.tensor([2.0, 2.0, -2.0, -2.0])
            out[int(t["image_id"])] = {"boxes": b, "scores": torch.ones(len(b)), "labels": torch.ones(len(b), dtype=torch.int64)}
        return out

    monkeypatch.setattr(engine, "predict", shrunk)
    return run


def test_an_overlay_takes_out_a_scene_group_with_null(tmp_path):
    """`box: null` under scene.objects in an overlay removes the custom scene's placeholder (it was a TypeError
    traceback; `box: {count: 0}` still left an empty `box` class in the categories)."""
    from simgen.cli import render_config_of

    f = tmp_path / "mine.yaml"
    f.write_text("scene:\n  objects:\n    box: null\n    widget: {asset: can, scale: 0.04}\n")
    cfg = render_config_of(["scene=custom", f"overlay={f}", f"out={tmp_path / 'ds'}"])
    assert cfg.scene.categories == ("widget",)
    f.write_text("scene:\n  objects:\n    box: null\n")
    with pytest.raises(ConfigError, match="scene.objects is empty"):
        render_config_of(["scene=custom", f"overlay={f}", f"out={tmp_path / 'ds'}"])
    f.write_text("base: &cam {distance: [0.31, 0.33]}\nscene:\n  camera:\n    <<: *cam\n")  # YAML merge keys: not "twice"
    from simgen.fit import load_overlay

    assert load_overlay(f)["scene"]["camera"] == {"distance": [0.31, 0.33]}
    f.write_text("? [a, b]\n: 1\n")
    with pytest.raises(ConfigError, match="line 1: a key must be a name, got a list"):
        load_overlay(f)
    f.write_text("scene.camera.distance: [0.31, 0.32]\n")  # a dotted path as a key works, as it always did
    assert render_config_of([f"overlay={f}", f"out={tmp_path / 'ds'}"]).scene.camera.distance.max == 0.32
    f.write_text('scene:\n  objects:\n    "coffee mug": {asset: can}\n')  # a key Hydra cannot take: named as such
    with pytest.raises(ConfigError, match=r"key `coffee mug` under scene.objects is not a plain ASCII word.*category: \"coffee mug\""):
        render_config_of(["scene=custom", f"overlay={f}", f"out={tmp_path / 'ds'}"])


def test_fitted_counts_give_each_group_its_share_of_all_real_objects(monkeypatch):
    """A holdout labelled `Mug`, `Duck`... for the scene's `mug`, `duck`: names match case-blind. And where a real class
    has no group in the scene, each matched group still gets its own share of all real objects: the fit put 100% of the
    count on the one class whose name matched (a render with 12.75 objects an image against 7 real)."""
    from collections import Counter

    import numpy as np

    from simgen import fit
    from simgen.cli import render_config_of

    cfg = render_config_of(["scene=tabletop", "out=unused"])
    names = [g.category for g in cfg.scene.objects]
    render = {"scene": {"objects": {n: {} for n in names}}}
    labels = lambda counts, classes: fit.Labels(np.array(counts, float), np.array([0.1]), 0.0, int(sum(counts)), Counter(classes))  # noqa: E731
    monkeypatch.setattr(fit, "label_stats", lambda side: labels([10] * 8, {}))  # the calibration labelled everything placed
    real = labels([10] * 8, {names[0].upper(): 40, names[1]: 20, "bottle": 20})  # 80 objects in 8 images
    keys = {k.path[2]: k for k in fit.count_keys(real, None, cfg, render, fit.FitOptions(margin=0.0))}
    first, second = keys[names[0]].value, keys[names[1]].value
    assert first == [5, 5] and second == [2, 3]  # 50% and 25% of 10 objects an image (was [10, 10] on the name that matched)
    assert "real classes the scene lacks (bottle: 25% of the real objects) are not placed" in keys[names[0]].source
