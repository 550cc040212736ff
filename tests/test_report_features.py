"""Known answers for the report's feature-space, diversity and leakage parts."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from simgen.data import load_coco
from simgen.report import distance as D
from simgen.report.diversity import diversity_section, hamming_pairs, near_duplicates
from simgen.report.features import best_checkpoint, stats
from simgen.report.props import jpeg_quality
from simgen.report.leakage import holdout_verdict, leakage_section
from simgen.report.model import ReportContext, Side


# ---------------------------------------------------------------------------- tiny datasets


def blobs(rng: np.random.Generator, n: int, lo: int, hi: int, size: int = 96) -> list[np.ndarray]:
    """Smooth random images (upsampled 6x6 noise) with pixel values in [lo, hi]: distinct pHashes."""
    out = []
    for _ in range(n):
        small = rng.uniform(lo, hi, (6, 6, 3)).astype(np.float32)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        out.append(np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8))
    return out


def write_set(root: Path, images: list[np.ndarray], manifest: dict | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    ims, anns = [], []
    for i, img in enumerate(images):
        fn = f"images/{i:04d}.jpg"
        cv2.imwrite(str(root / fn), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        h, w = img.shape[:2]
        ims.append({"id": i + 1, "file_name": fn, "width": w, "height": h})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps({"images": ims, "annotations": anns, "categories": [{"id": 1, "name": "die"}]}))
    if manifest is not None:
        (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def side(name: str, root: Path) -> Side:
    doc = load_coco(root)
    man = root / "manifest.json"
    return Side(name, root, doc, tuple(sorted(im["id"] for im in doc["images"])), json.loads(man.read_text()) if man.is_file() else None)


def context(tmp_path: Path, real: Path, syn: Path, features=("stats",), **kw) -> ReportContext:
    return ReportContext(side("real", real), side("synthetic", syn), tmp_path / "report", features=features, progress=False,
                         options={"cnn_seeds": [0], "cnn_size": 64}, **kw)


def by_name(section, prefix: str):
    return next(c for c in section.checks if c.name.startswith(prefix))


# ---------------------------------------------------------------------------- metrics on arrays


def test_mmd_matches_brute_force_and_detects_shift():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / 72
    xy = sum(k(a, b) for a in x for b in y) / 63
    assert D.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy)
    same = D.kid(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), rng, n_subsets=20)
    shifted = D.kid(rng.normal(size=(200, 8)), rng.normal(1.0, size=(200, 8)), rng, n_subsets=20)
    assert abs(same.mean) < 0.1 < shifted.mean and shifted.ci95[0] > same.ci95[1]


def test_prdc_identical_and_duplicated_sets_score_one():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5))
    # identical sets: every point sits in its own ball too, so density is exactly (k + 1) / k
    assert D.prdc(x, x.copy(), 5) == pytest.approx({"precision": 1, "recall": 1, "density": 1.2, "coverage": 1})
    big = D.prdc(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)), 5)  # same distribution: density ~1
    assert big["density"] == pytest.approx(1, abs=0.15) and big["coverage"] > 0.9
    dup = np.vstack([x, x])  # every point twice: radius counts duplicates; the strict `<` would give coverage 0 here
    assert D.prdc(dup, dup.copy(), 1)["coverage"] == 1.0


def test_floor_same_distribution_within_and_shift_far_above():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(50, 6))
    same = D.floor_and_matched(real, rng.normal(size=(200, 6)), rng, splits=8)
    far = D.floor_and_matched(real, rng.normal(2.0, size=(200, 6)), rng, splits=8)
    thr = D.kid_check_threshold(same["floor"]["kid"])
    assert same["matched"]["kid"][0] <= thr and far["matched"]["kid"][0] > 5 * D.kid_check_threshold(far["floor"]["kid"])
    assert same["matched"]["coverage"][0] > 0.7 and far["matched"]["coverage"][0] < 0.2


def test_classifier_auc_chance_for_same_and_high_for_shift():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(50, 4))
    assert 0.3 < D.detect(real, rng.normal(size=(200, 4)), rng).auc < 0.7
    det = D.detect(real, np.c_[rng.normal(size=(200, 3)), rng.normal(3, size=200)], rng, names=("a", "b", "c", "giveaway"))
    assert det.auc > 0.9 and det.importances[0][0] == "giveaway" and det.importances[0][2] > 0


# ---------------------------------------------------------------------------- on image folders


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    rng = np.random.default_rng(4)
    t = tmp_path_factory.mktemp("sets")
    return {"real": write_set(t / "real", blobs(rng, 24, 120, 200)), "dark": write_set(t / "dark", blobs(rng, 40, 10, 70))}


def test_same_set_is_within_floor(tmp_path, sets):
    sec = D.feature_section(context(tmp_path, sets["real"], sets["real"], features=("stats", "random_cnn")))
    for name in ("stats", "random_cnn"):
        assert by_name(sec, f"{name}: KID").status == "pass"
        assert 0.3 <= by_name(sec, f"{name}: real-vs-synthetic").value <= 0.7
        m = sec.data[name][0]
        assert m["density"] == pytest.approx(1.2, abs=0.01) and m["coverage"] == 1.0  # identical sets: (k + 1) / k
    assert all((tmp_path / "report" / f.path).is_file() for f in sec.figures)
    json.dumps(sec.as_dict())  # report.json must be able to hold every number


def test_bright_vs_dark_is_caught(tmp_path, sets):
    sec = D.feature_section(context(tmp_path, sets["real"], sets["dark"]))
    assert by_name(sec, "stats: real-vs-synthetic").value > 0.9
    assert by_name(sec, "stats: KID").status == "fail"
    imps = {t.title: t for t in sec.tables}["stats: what gives synthetic images away (top 10)"]
    assert any(r[0] in ("brightness", "lab_L") for r in imps.rows[:5])


def test_injected_duplicates_counted_exactly(tmp_path):
    rng = np.random.default_rng(5)
    imgs = blobs(rng, 12, 0, 255)
    root = write_set(tmp_path / "syn", imgs + [imgs[1], imgs[4], imgs[4]])  # 3 redundant images, 4 duplicate pairs
    paths = sorted((root / "images").glob("*.jpg"))
    nd = near_duplicates(paths)
    assert (nd["redundant"], len(nd["pairs"]), nd["in_duplicates"]) == (3, 4, 5)
    sec = diversity_section(context(tmp_path, root, root))
    assert sec.checks[0].value == pytest.approx(3 / 15) and sec.checks[0].status == "fail"
    a = rng.integers(0, 2, (5, 64)).astype(bool)
    b = a.copy()
    b[2, :3] ^= True
    assert (2, 2, 3) in hamming_pairs(a, b, 3) and (2, 2, 3) not in hamming_pairs(a, b, 2)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_leakage_source_bytes_and_resized_copy(tmp_path, sets):
    real_img = sorted((sets["real"] / "images").glob("*.jpg"))[3]
    copy = tmp_path / "tex" / "wood.png"  # resized + re-encoded copy of a real image used as a texture
    copy.parent.mkdir()
    cv2.imwrite(str(copy), cv2.resize(cv2.imread(str(real_img)), (150, 150)))
    other = tmp_path / "tex" / "other.png"
    cv2.imwrite(str(other), blobs(np.random.default_rng(9), 1, 0, 255)[0])
    src = [{"path": str(real_img), "sha256": _sha(real_img), "kind": "texture"}]
    syn = write_set(tmp_path / "syn_a", blobs(np.random.default_rng(6), 20, 10, 70), {"sources": src})
    sec = leakage_section(context(tmp_path, sets["real"], syn))
    assert by_name(sec, "real images used as generation sources").status == "fail"
    src = [{"path": str(copy), "sha256": _sha(copy), "kind": "texture"}, {"path": str(other), "sha256": _sha(other), "kind": "background"}]
    syn = write_set(tmp_path / "syn_b", blobs(np.random.default_rng(6), 20, 10, 70), {"sources": src})
    c = by_name(leakage_section(context(tmp_path, sets["real"], syn)), "real images used as generation sources")
    assert c.status == "fail" and c.value == 1 and "pHash" in c.detail
    syn = write_set(tmp_path / "syn_c", blobs(np.random.default_rng(6), 20, 10, 70), {})
    assert by_name(leakage_section(context(tmp_path, sets["real"], syn)), "real images used as generation sources").status == "warn"


def test_leakage_real_image_copied_into_synthetic(tmp_path, sets):
    imgs = [cv2.imread(str(p)) for p in sorted((sets["real"] / "images").glob("*.jpg"))[:2]]
    syn = write_set(tmp_path / "syn", blobs(np.random.default_rng(7), 20, 10, 70) + imgs, {"sources": []})
    # byte-identical copies of the real files too: write_set re-encodes, so copy two files over verbatim
    for i, p in enumerate(sorted((sets["real"] / "images").glob("*.jpg"))[:2]):
        (syn / "images" / f"{20 + i:04d}.jpg").write_bytes(p.read_bytes())
    sec = leakage_section(context(tmp_path, sets["real"], syn))
    assert by_name(sec, "real images copied").status == "fail" and by_name(sec, "real images copied").value == 2
    assert by_name(sec, "stats: real images with").status == "fail"


def test_run_folders_best_arm_and_holdout_verdict(tmp_path, sets):
    from simgen.train.guard import holdout_identity, image_hashes

    for arm, m in (("TSTR-s0", 0.1), ("mix-0.5-s0", 0.3)):
        d = tmp_path / "util" / "runs" / arm
        d.mkdir(parents=True)
        (d / "checkpoint.pt").write_bytes(b"")
        (d / "metrics.json").write_text(json.dumps({"entry": {"map": m}}))
        (d / "provenance.json").write_text(json.dumps({"holdout": {**holdout_identity(sets["real"], image_hashes(sets["real"])), "images_scored": 24}}))
    folder, why = best_checkpoint(tmp_path / "util")
    assert folder.name == "mix-0.5-s0" and "0.300" in why
    v = holdout_verdict(tmp_path / "util", sets["real"], load_coco(sets["real"]))
    assert len(v) == 2 and all(x["same_images"] for x in v)
    assert not any(x["same_images"] for x in holdout_verdict(tmp_path / "util", sets["dark"], load_coco(sets["dark"])))


def test_stats_names_and_jpeg_quality(tmp_path, sets):
    from PIL import Image

    p = tmp_path / "q.jpg"
    cv2.imwrite(str(p), blobs(np.random.default_rng(8), 1, 0, 255)[0], [cv2.IMWRITE_JPEG_QUALITY, 40])
    with Image.open(p) as im:
        assert jpeg_quality(im) == pytest.approx(40, abs=3)
    f = stats(sorted((sets["real"] / "images").glob("*.jpg"))[:3])
    assert f.X.shape == (3, len(f.names)) and np.isfinite(f.X).all() and f.X.dtype == np.float32


def test_detector_and_weights_extractors(tmp_path, sets):
    import torch
    from torchvision.models import resnet18

    from simgen.report.features import detector, weights
    from simgen.train.engine import save_checkpoint
    from simgen.train.models import build_model, model_config

    paths = sorted((sets["real"] / "images").glob("*.jpg"))[:2]
    cfg = {"name": "frcnn_lite", "trunk": "tiny", "input_size": 64, "max_size": 96}
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.pt", build_model(model_config(cfg), 2), {})
    (run / "provenance.json").write_text(json.dumps({"model": cfg, "categories": ["a", "b"]}))
    f, why = detector(paths, run)
    assert f.X.shape == (2, 2 * 64) and np.isfinite(f.X).all() and why == "the train run itself"
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    w = weights(paths, tmp_path / "r18.pth", size=64)
    assert w.X.shape == (2, 512) and w.name == "weights/resnet18"


def test_box_tightness_check_points_looser_real_boxes_at_the_padding_setting():
    from simgen.report.props import _margin_check

    def boxes(m: float, n: int = 30) -> list[dict]:
        return [{"left": m, "right": m, "top": m, "bottom": m} for _ in range(n)]

    check, data = _margin_check(boxes(3.0), boxes(0.4), 1.5)  # annotators 3 px outside, renders tight
    assert check.status == "warn" and "labels.box_pad_px" in check.detail and "2.6 px looser" in check.detail
    assert data["real_trimmed_mean_px"] == 3.0
    check, _ = _margin_check(boxes(0.4), boxes(3.0), 1.5)  # the synthetic boxes are the loose ones: no padding advice
    assert check.status == "warn" and "labels.box_pad_px" not in check.detail
    check, _ = _margin_check(boxes(1.0), boxes(0.4), 1.5)
    assert check.status == "pass" and "same convention" in check.detail


def test_diversity_grades_coverage_with_the_feature_sections_numbers(tmp_path, sets, monkeypatch):
    """User audit: the Diversity chip read PASS beside "coverage 0, 50 of 50 real images not covered". Coverage is graded
    there by the features section's rule (matched coverage >= floor - 2 std), with its numbers, computed once."""
    ctx = context(tmp_path, sets["real"], sets["dark"])
    feat = D.feature_section(ctx)
    calls = []
    measure = D.measure
    monkeypatch.setattr(D, "measure", lambda *a, **kw: calls.append(1) or measure(*a, **kw))
    div = diversity_section(ctx)
    assert not calls  # reused from the features section, not computed again
    fc, dc = by_name(feat, "stats: coverage"), by_name(div, "stats: coverage")
    assert (dc.value, dc.status, dc.threshold) == (fc.value, fc.status, fc.threshold) and dc.status == "fail"
    assert by_name(div, "synthetic near-duplicate rate").status == "pass" and div.status == "fail"
    row = next(r for r in div.tables[0].rows if r[0] == "stats")
    assert float(row[1]) == pytest.approx(dc.value, abs=1e-3) and "±" in row[2]  # the graded number, its floor beside it
    same = diversity_section(context(tmp_path / "same", sets["real"], sets["real"]))
    assert by_name(same, "stats: coverage").status == "pass" and same.status == "pass"


def test_giveaway_strips_never_share_an_image(tmp_path, sets, monkeypatch):
    """User audit: with 20 synthetic images the "most obviously synthetic" and "most real-looking" strips (12 each) shared
    images, so the real-looking strip showed P(synthetic) 0.99. Now each gets half when there are too few, and says so."""
    from simgen.report import features as F

    shown: dict[str, list[str]] = {}
    sheet = F.contact_sheet

    def record(paths, captions, out, **kw):
        shown[out.name] = [p.name for p in paths]
        return sheet(paths, captions, out, **kw)

    monkeypatch.setattr(F, "contact_sheet", record)
    ctx = context(tmp_path, sets["real"], sets["dark"])
    det = D.Detection(1.0, 0.08, np.linspace(0.9, 0.99, 20), np.arange(20), [])  # 20 scored, all look synthetic
    figs = D.giveaway_figures(ctx, "stats", {"detection": det})
    most, real_looking = shown["features_stats_most-synthetic.png"], shown["features_stats_most-real.png"]
    assert len(most) == len(real_looking) == 10 and not set(most) & set(real_looking)
    assert all("Only 10 per strip: 20 synthetic images were scored" in f.caption for f in figs)
    assert "P(synthetic) >= 0.90" in figs[1].caption and "P(synthetic) >=" not in figs[0].caption
    det = D.Detection(0.5, 0.08, np.linspace(0, 1, 40), np.arange(40), [])  # enough images: 12 each, no note
    figs = D.giveaway_figures(ctx, "stats", {"detection": det})
    most, real_looking = shown["features_stats_most-synthetic.png"], shown["features_stats_most-real.png"]
    assert len(most) == len(real_looking) == 12 and not set(most) & set(real_looking)
    assert not any("Only" in f.caption or "Even these" in f.caption for f in figs)
