"""`simgen report`: known answers on tiny hand-made COCO folders (no rendering), bad input, fail_on, a real browser."""
from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from simgen.errors import DatasetError
from simgen.report import props
from simgen.report.build import build_report, exit_code, load_side
from simgen.report.model import ReportContext

LABEL_GEOMETRY = ("objects per image", "box width / image width", "box height / image height", "box area / image area",
                  "box aspect w/h", "box centre x / W", "box centre y / H", "class balance", "per-class box area")


def make_dataset(root: Path, n: int = 10, seed: int = 0, transform=None, box_pad: int = 0) -> Path:
    """``n`` 128x96 JPEGs: a smooth noisy background, 1-3 solid rectangles with pixel-exact COCO boxes
    (or boxes ``box_pad`` px looser on every side, like a padded labelling convention)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        H, W = 96, 128
        bg = rng.normal(rng.uniform(100, 140), 6, (H, W, 3)).astype(np.float32)
        img = np.clip(cv2.GaussianBlur(bg, (0, 0), 1.0) + rng.normal(0, 3, (H, W, 3)), 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            w, h = (int(v) for v in rng.integers(14, 36, 2))
            x, y = int(rng.integers(4, W - w - 4)), int(rng.integers(4, H - h - 4))
            colour = [int(c) for c in rng.choice([25, 170], 3)]  # +60 brightness stays below 255: no clipping
            img[y:y + h, x:x + w] = colour  # pixel-exact: the box [x, y, w, h] touches the object's outer pixels
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 3)), "bbox": [x - box_pad, y - box_pad, w + 2 * box_pad, h + 2 * box_pad],
                         "area": w * h, "iscrowd": 0})
        if transform is not None:
            img = transform(img)
        cv2.imwrite(str(root / "images" / f"{i:03d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": i + 1, "file_name": f"images/{i:03d}.jpg", "width": W, "height": H})
    cats = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("report-data")
    return {"base": make_dataset(base / "base"),
            "bright": make_dataset(base / "bright", transform=lambda im: cv2.add(im, np.full_like(im, 60))),
            "blur": make_dataset(base / "blur", transform=lambda im: cv2.GaussianBlur(im, (0, 0), 2.5)),
            "padded": make_dataset(base / "padded", box_pad=3)}


def ctx_for(real: Path, syn: Path, out: Path, sections: tuple[str, ...] | None = ("labels", "pixels")) -> ReportContext:
    """Only this file's sections by default: fast, and independent of the other sections' own tests."""
    return ReportContext(real=load_side("real", real), synthetic=load_side("synthetic", syn), out=out,
                         features=("stats",), progress=False, options={"sections": sections})


def checks(section) -> dict[str, object]:
    return {c.name: c for c in section.checks}


# ------------------------------------------------------------------ building blocks
def test_similarity_scores():
    assert props.ks_similarity([1, 2, 3], [1, 2, 3]) == 1.0
    assert props.ks_similarity([1, 2, 3], [10, 11]) == 0.0
    assert props.tv_similarity(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx(2 / 3)
    assert props.ks_similarity([], [1.0]) is None


def test_noise_jpeg_quality_and_margins(tmp_path):
    rng = np.random.default_rng(0)
    noisy = np.clip(128 + rng.normal(0, 5, (200, 200)), 0, 255)
    assert props.noise_sigma(noisy) == pytest.approx(5, rel=0.15)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "q75.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 75])
    cv2.imwrite(str(tmp_path / "a.png"), img)
    assert props.file_info(tmp_path / "q75.jpg") == ("JPEG", 75.0)
    assert props.file_info(tmp_path / "a.png") == ("PNG", None)
    gray = np.full((100, 100), 200, np.uint8)
    gray[30:60, 20:70] = 40  # object: columns 20..69, rows 30..59
    for grow, expect in ((0, 0.0), (3, 3.0), (-2, -2.0)):
        m = props.box_margin(gray, [20 - grow, 30 - grow, 50 + 2 * grow, 30 + 2 * grow])
        assert m is not None and all(v == pytest.approx(expect, abs=0.01) for v in m.values()), (grow, m)


# ------------------------------------------------------------------ sections: known answers
def test_dataset_against_itself_scores_one(sets, tmp_path):
    ctx = ctx_for(sets["base"], sets["base"], tmp_path / "r")
    labels, pixels = props.label_section(ctx), props.pixel_section(ctx)
    for section in (labels, pixels):
        sims = {k: v for k, v in section.data["similarity"].items() if v is not None}
        assert sims and all(v == pytest.approx(1.0) for v in sims.values()), sims
        assert section.status == "pass"
    assert checks(labels)[props.MARGIN_CHECK].value == pytest.approx(0.0)
    assert labels.data["thresholds"] == {"similarity_pass": 0.8, "similarity_warn": 0.6}
    assert (tmp_path / "r" / "figures" / "labels.png").is_file() and (tmp_path / "r" / "figures" / "pixels_image.png").is_file()


def test_brightness_shift_flags_brightness_not_boxes(sets, tmp_path):
    ctx = ctx_for(sets["base"], sets["bright"], tmp_path / "r")
    pixels, labels = checks(props.pixel_section(ctx)), checks(props.label_section(ctx))
    assert pixels["brightness (L*)"].status == "fail"
    assert pixels["sharpness (Laplacian var)"].status == "pass"
    assert all(labels[name].status == "pass" for name in LABEL_GEOMETRY)


def test_blur_flags_sharpness(sets, tmp_path):
    section = props.pixel_section(ctx_for(sets["base"], sets["blur"], tmp_path / "r"))
    c = checks(section)
    assert c["sharpness (Laplacian var)"].status == "fail" and c["object sharpness (Laplacian var)"].status != "pass"
    assert c["brightness (L*)"].status == "pass"
    assert "sharpness" in section.summary


def test_padded_boxes_flag_label_convention(sets, tmp_path):
    labels = props.label_section(ctx_for(sets["base"], sets["padded"], tmp_path / "r"))
    c = checks(labels)[props.MARGIN_CHECK]
    assert c.status == "warn" and c.value == pytest.approx(3.0, abs=0.5), labels.data["box_margin"]
    assert labels.data["box_margin"]["real_median_px"] == pytest.approx(0.0, abs=0.25)


def test_a_real_class_the_synthetic_set_lacks_is_warned_about(sets, tmp_path):
    """A real class the synthetic set never shows cannot be detected by a model trained on it: the labels section passed
    with one missing and said so only in its text. A class whose name differs only in case is named as such."""
    import json
    import shutil

    real = tmp_path / "real"
    shutil.copytree(sets["base"], real)
    doc = json.loads((real / "annotations.json").read_text())
    used = sorted({a["category_id"] for a in doc["annotations"]})
    for c in doc["categories"]:
        if c["id"] == used[0]:
            renamed, c["name"] = c["name"], c["name"].upper()
    (real / "annotations.json").write_text(json.dumps(doc))
    c = checks(props.label_section(ctx_for(real, sets["base"], tmp_path / "r")))["real classes in the synthetic set"]
    assert c.status == "warn" and c.value < 1.0 and renamed.upper() in c.detail and f"only their spelling differs from {renamed}" in c.detail
    same = checks(props.label_section(ctx_for(sets["base"], sets["base"], tmp_path / "r2")))["real classes in the synthetic set"]
    assert same.status == "pass" and same.value == 1.0


def test_category_map_renames_synthetic_classes_before_comparing(sets, tmp_path, capsys):
    """A run trained with +data.category_map.die=dice compares renders of `die` with photos of `dice`; its report did
    not: every class was on one side only and the per-class table was empty. data.category_map (or the map report.run
    was trained with) renames the synthetic classes first; a key naming no synthetic class is refused."""
    from simgen.errors import ConfigError
    from simgen.report.cli import report_context

    syn = tmp_path / "syn"
    shutil.copytree(sets["base"], syn)
    doc = json.loads((syn / "annotations.json").read_text())
    for c in doc["categories"]:
        c["name"] = "syn_" + c["name"]
    (syn / "annotations.json").write_text(json.dumps(doc))
    base = {"data": {"synthetic": str(syn), "real": str(sets["base"])}, "out": str(tmp_path / "r"),
            "report": {"progress": False, "features": ["stats"], "sections": ["labels"]}}
    plain = checks(props.label_section(report_context(base)))
    assert plain["real classes in the synthetic set"].value == 0.0 and plain["class balance"].value == 0.0
    run = tmp_path / "run"  # a `simgen train` folder trained with the map
    run.mkdir()
    (run / "predictions.json").write_text("[]")
    # the run's map also names its real training folders' classes (pip1): not the synthetic set's, left out
    (run / "provenance.json").write_text(json.dumps({"category_map": {"syn_red": "red", "syn_blue": "blue", "pip1": "red"}}))
    for d in ({**base, "data": {**base["data"], "category_map": {"syn_red": "red", "syn_blue": "blue"}}},
              {**base, "report": {**base["report"], "run": str(run)}}):
        ctx = report_context(d)
        mapped = checks(props.label_section(ctx))
        assert mapped["real classes in the synthetic set"].value == 1.0 and mapped["class balance"].value == 1.0
        assert ctx.options["category_map"]["map"] == {"syn_red": "red", "syn_blue": "blue"}
    with pytest.raises(ConfigError, match="`syn_rde` is not a class of the synthetic set.*Did you mean `syn_red`"):
        report_context({**base, "data": {**base["data"], "category_map": {"syn_rde": "red"}}})
    capsys.readouterr()
    report_context({**base, "data": {**base["data"], "category_map": {"syn_red": "rde"}}})  # a value the real set lacks
    assert "maps onto rde, which the real set" in capsys.readouterr().err


# ------------------------------------------------------------------ whole report, files, atomicity
def test_build_report_is_self_contained_and_atomic(sets, tmp_path):
    out = tmp_path / "rep"
    report = build_report(ctx_for(sets["base"], sets["bright"], out))
    assert report["verdict"] == "fail" and {s["key"] for s in report["sections"]} >= {"labels", "pixels"}
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["verdict"] == "fail" and on_disk["sections"][0]["checks"][0]["threshold"]
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page and "<script" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no temp folder left beside it
    # a failing rebuild (corrupt image) keeps the previous report untouched and leaves nothing behind
    broken = tmp_path / "broken"
    shutil.copytree(sets["bright"], broken)
    (broken / "images" / "003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="003.jpg"):
        build_report(ctx_for(sets["base"], broken, out))
    assert json.loads((out / "report.json").read_text())["created"] == on_disk["created"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "rep"]


def test_exit_code_semantics():
    for verdict, expect in {"pass": (0, 0, 0), "info": (0, 0, 0), "warn": (1, 0, 0), "fail": (1, 1, 0)}.items():
        assert tuple(exit_code({"verdict": verdict}, f) for f in ("warn", "fail", "never")) == expect


def test_max_images_sample_is_seeded(sets):
    a, b = load_side("x", sets["base"], 4, seed=1), load_side("x", sets["base"], 4, seed=1)
    assert a.image_ids == b.image_ids and len(a.image_ids) == 4 and list(a.image_ids) == sorted(a.image_ids)


# ------------------------------------------------------------------ command line
def simgen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simgen", "report", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _bad(kind: str, root: Path) -> Path:
    d = root / kind
    if kind == "missing":
        return d
    d.mkdir()
    if kind == "corrupt":
        (d / "annotations.json").write_text("{not json")
    elif kind == "empty":
        (d / "annotations.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    return d  # "no-annotations": a folder without annotations.json


@pytest.mark.parametrize("kind,match", [("missing", "does not exist"), ("no-annotations", "annotations.json"),
                                        ("corrupt", "not valid JSON"), ("empty", "lists no images")])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(sets, tmp_path, kind, match):
    bad = _bad(kind, tmp_path)
    r = simgen(f"data.synthetic={bad}", f"data.real={sets['base']}", f"out={tmp_path / 'out'}", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("simgen: error:") and match in lines[0], r.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_cli_fail_on(sets, tmp_path):
    common = [f"data.real={sets['base']}", f"data.synthetic={sets['bright']}", "report.features=[stats]", "report.progress=false",
              "report.sections=[labels,pixels]"]
    r = simgen(*common, f"out={tmp_path / 'a'}", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "verdict: FAIL" in r.stdout and (tmp_path / "a" / "report.html").is_file()
    r = simgen(*common, f"out={tmp_path / 'a'}", "report.fail_on=never", cwd=tmp_path)  # replaces the earlier report
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    r = simgen(*common, f"out={tmp_path / 'foreign'}", cwd=tmp_path)
    assert r.returncode == 2 and "not a report folder" in r.stderr and (tmp_path / "foreign" / "keep.txt").is_file()


# ------------------------------------------------------------------ a real browser
def test_report_renders_in_chromium(sets, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed")
    out = tmp_path / "rep"
    report = build_report(ctx_for(sets["base"], sets["blur"], out, sections=None))  # every section
    url = (out / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
    shot = subprocess.run([exe, *flags, f"--screenshot={tmp_path / 'shot.png'}", "--window-size=1400,2400", url],
                          capture_output=True, text=True, timeout=120)
    dom = subprocess.run([exe, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in report["sections"]:
        assert html.escape(section["title"], quote=False) in dom.stdout, section["title"]
    console = [line for line in (shot.stderr + dom.stderr).splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    img = cv2.imread(str(tmp_path / "shot.png"))
    assert img is not None and img.shape[:2] == (2400, 1400) and img.std() > 10  # rendered something, not blank


def test_progress_into_a_log_has_no_cursor_escapes(sets, tmp_path):
    """With progress on and stderr a pipe (a log, CI), only the report's own bar is drawn: the per-image and feature bars
    nested under it would move the cursor up, which in a log is a stream of escape codes."""
    r = simgen(f"data.real={sets['base']}", f"data.synthetic={sets['bright']}", "report.features=[stats]",
               "report.sections=[labels,pixels]", "report.fail_on=never", f"out={tmp_path / 'a'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "report" in r.stderr and "\x1b[A" not in r.stderr, r.stderr[-500:]


def test_large_and_small_numbers_share_one_compact_format(tmp_path):
    """User audit: `random_cnn: KID` read 1,326,681 in the HTML beside a floor of 0.9365 (and 1.327e+06 in its table).
    A value and its threshold or floor now use one format: 3 significant digits, scientific at >= 1e4 and < 1e-3."""
    from simgen.report import distance as D
    from simgen.report.html import num, render_html
    from simgen.report.model import Section

    assert [num(v) for v in (1326681.4, 0.93655, 4.123e-4, -0.3934, 15.28, 1234.5, 12.0, 50, 0.0, None)] == \
        ["1.33e+06", "0.937", "4.12e-04", "-0.393", "15.3", "1234", "12", "50", "0", "—"]
    prdc = {"precision": (0.0, 0.0), "recall": (1.0, 0.0), "density": (0.0, 0.0), "coverage": (0.0, 0.0)}
    ms = [{"kid": 1326681.4, "kid_ci95": (1.19e6, 1.46e6), "kid_subset_size": 20, "precision": 0.0, "recall": 1.0, "density": 0.0,
           "coverage": 0.0, "auc": 0.9, "auc_null_std": 0.08, "auc_floor": (0.5, 0.1), "matched": {"kid": (1326681.4, 495.0), **prdc},
           "floor": {"kid": (-0.39345, 0.665), **{k: (0.95, 0.05) for k in prdc}}}]
    kid = D._checks("random_cnn", ms)[0]
    assert num(kid.value) == "1.33e+06" and kid.threshold.startswith("pass <= floor mean + 2 std = 0.937,"), kid.threshold
    row = D._table("random_cnn", ms).rows[0]
    assert row[1:] == ("1.33e+06 (95% CI 1.19e+06..1.46e+06)", "1.33e+06 ± 495", "-0.393 ± 0.665"), row
    report = {"verdict": "fail", "counts": {"pass": 0, "warn": 0, "fail": 1, "info": 0}, "created": "now", "options": {},
              "unavailable_sections": [], "inputs": {s: {"root": s, "images_sampled": 1, "images_total": 1} for s in ("real", "synthetic")} | {"run": None},
              "sections": [Section("features", "Features", "", (kid,), (), (D._table("random_cnn", ms),)).as_dict()]}
    page = render_html(report, tmp_path)
    assert "1,326,681" not in page and "1.327e+06" not in page and ">1.33e+06<" in page


def test_numeric_columns_get_right_aligned_headers():
    """A column of numbers is right-aligned, its header too: a left-aligned header over right-aligned numbers put each
    number under the next column's header (the per-arm table read TSTR's fraction 1 as its mAP)."""
    from simgen.report.html import TEMPLATE, numeric_columns

    t = {"columns": ["arm", "synthetic fraction", "mAP", "status"], "rows": [["TSTR", 1, 0.51, "pass"], ["TRTR", 0, None, "warn"]]}
    assert numeric_columns(t) == [False, True, True, False]
    assert numeric_columns({"columns": ["a"], "rows": []}) == [False]
    assert "th.num { text-align: right; }" in TEMPLATE
