"""YOLO: `simgen render writer=yolo` (a view in place) and `simgen export` (a copy), read back with Ultralytics' own
dataset code and compared with the COCO labels they came from."""
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simgen.config import render_config
from simgen.errors import ConfigError, DatasetError
from simgen.export import ExportRequest, export_dataset
from simgen.writers.yolo import YoloOptions, label_text, render_yolo

from .conftest import compose_dict, small_config

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-settings-"))  # Ultralytics writes settings there


def ultralytics():
    """Ultralytics' data utilities; a skip only off CI (.ci/run installs it, and CI must run this)."""
    try:
        import ultralytics.data  # noqa: F401
        import ultralytics.data.utils as utils
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("ultralytics is not installed: pip install --no-deps ultralytics ultralytics-thop psutil (as .ci/run does)")
    return utils


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A tiny dice render with writer=yolo: COCO plus the YOLO view in the same folder."""
    cfg = small_config(tmp_path_factory.mktemp("yolo"), "width=160", "height=160", "writer=yolo")
    return render_yolo(cfg, YoloOptions(), log=lambda m: None)


def coco_boxes(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Image stem -> (0-based class ids, normalized cx cy w h) from annotations.json, in annotation order."""
    doc = json.loads((root / "annotations.json").read_text())
    cls = {c["id"]: k for k, c in enumerate(sorted(doc["categories"], key=lambda c: c["id"]))}
    out = {}
    for im in doc["images"]:
        anns = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
        W, H = im["width"], im["height"]
        boxes = [[(x + w / 2) / W, (y + h / 2) / H, w / W, h / H] for x, y, w, h in (a["bbox"] for a in anns)]
        out[Path(im["file_name"]).stem] = (np.array([cls[a["category_id"]] for a in anns]), np.array(boxes).reshape(-1, 4))
    return out


def load_yolo(data_yaml: Path, split: str = "train", task: str = "detect") -> tuple[dict, list[dict]]:
    """check_det_dataset on data.yaml, then YOLODataset's labels for one split (Ultralytics' own parsing and checks)."""
    utils = ultralytics()
    from ultralytics.data import YOLODataset

    data = utils.check_det_dataset(str(data_yaml))
    ds = YOLODataset(img_path=data[split], data=data, task=task, imgsz=160, augment=False)
    return data, ds.labels


def assert_same_boxes(labels: list[dict], root: Path, tol: float = 1e-5) -> None:
    coco = coco_boxes(root)
    assert {Path(lb["im_file"]).stem for lb in labels} <= set(coco)
    for lb in labels:
        cls, boxes = coco[Path(lb["im_file"]).stem]
        assert (lb["cls"].ravel().astype(int) == cls).all()
        assert np.abs(lb["bboxes"] - boxes).max() <= tol


def test_render_writer_yolo_is_an_ultralytics_dataset(rendered):
    data, labels = load_yolo(rendered / "data.yaml")
    names = json.loads((rendered / "manifest.json").read_text())["categories"]
    assert data["names"] == dict(enumerate(names)) and Path(data["path"]) == rendered.resolve()
    assert len(labels) == 3 and sum(len(lb["cls"]) for lb in labels) > 0
    assert_same_boxes(labels, rendered)
    assert (rendered / "manifest.json").exists() and sorted(p.name for p in (rendered / "labels").glob("*.txt")) == \
        ["00000000.txt", "00000001.txt", "00000002.txt"]


def test_export_boxes_match_coco_and_images_are_hard_links(rendered, tmp_path):
    out = tmp_path / "yolo"
    record = export_dataset(ExportRequest(rendered, out))
    assert record["images"] == {"hardlinked": 3, "copied": 0} and record["classes"] == ["one", "two", "three", "four", "five", "six"]
    for p in (out / "images").iterdir():
        assert not p.is_symlink() and p.stat().st_ino == (rendered / "images" / p.name).stat().st_ino
    data, labels = load_yolo(out / "data.yaml")
    assert Path(data["train"]) == (out / "images").resolve() and data["nc"] == 6
    assert_same_boxes(labels, rendered)
    utils = ultralytics()
    for img in sorted((out / "images").iterdir()):
        res = utils.verify_image_label((str(img), str(out / "labels" / f"{img.stem}.txt"), "", False, 6, 0, 0, False))
        assert res[8] == 0 and res[6] == 1, res[-1]  # not corrupt, label file found


def test_export_segments_and_val_split(rendered, tmp_path):
    out = tmp_path / "seg"
    export_dataset(ExportRequest(rendered, out, options=YoloOptions(segments=True, val_fraction=0.34)))
    train, val = ((out / n).read_text().split() for n in ("train.txt", "val.txt"))
    assert len(val) == 1 and sorted(train + val) == [f"./images/{i:08d}.jpg" for i in range(3)]
    coco = coco_boxes(rendered)
    for split, names in (("train", train), ("val", val)):
        _, labels = load_yolo(out / "data.yaml", split, task="segment")
        assert sorted(Path(lb["im_file"]).name for lb in labels) == sorted(Path(n).name for n in names)
        for lb in labels:
            cls, boxes = coco[Path(lb["im_file"]).stem]
            assert len(lb["segments"]) == len(cls) and (lb["cls"].ravel().astype(int) == cls).all()
            # Ultralytics takes each box from its polygon: the visible mask's outline through boundary pixel centres
            assert np.abs((lb["bboxes"] - boxes) * 160).max() <= 1.01


def test_label_lines_by_hand():
    """Class ids in category-id order, crowds dropped, boxes clipped, an object in two pieces as one polygon."""
    m = np.zeros((20, 40), np.uint8)
    m[2:8, 2:8] = 1
    m[10:18, 25:35] = 1  # two pieces of one object
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    anns = [{"category_id": 7, "bbox": [2, 2, 33, 16], "segmentation": rle, "iscrowd": 0},
            {"category_id": 3, "bbox": [-4, 10, 10, 20], "iscrowd": 0},  # cut by the left and bottom borders
            {"category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1}]
    text = label_text(anns, {3: 0, 7: 1}, 40, 20, segments=False).splitlines()
    assert text == ["1 0.462500 0.500000 0.825000 0.800000", "0 0.075000 0.750000 0.150000 0.500000"]
    seg = label_text(anns, {3: 0, 7: 1}, 40, 20, segments=True).splitlines()
    assert len(seg) == 2  # the crowd is left out here too
    assert seg[1] == "0 0.000000 0.500000 0.150000 0.500000 0.150000 1.000000 0.000000 1.000000"  # no mask: the clipped box's corners
    poly = np.array(seg[0].split()[1:], float).reshape(-1, 2) * [40, 20]
    filled = np.zeros_like(m)
    cv2.fillPoly(filled, [np.round(poly - 0.5).astype(np.int32)], 1)
    assert (filled & m).sum() == m.sum() and filled.sum() < m.sum() * 1.3  # both pieces, joined by a thin bridge


def test_export_refuses_without_overwrite_and_never_deletes_foreign_folders(rendered, tmp_path):
    out = tmp_path / "yolo"
    export_dataset(ExportRequest(rendered, out))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ConfigError, match="overwrite=true"):
        export_dataset(ExportRequest(rendered, out, options=YoloOptions(segments=True)))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    export_dataset(ExportRequest(rendered, out, overwrite=True, options=YoloOptions(segments=True)))
    assert json.loads((out / "export.json").read_text())["segments"] is True
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not made by simgen export"):
        export_dataset(ExportRequest(rendered, foreign, overwrite=True))
    assert (foreign / "notes.txt").read_text() == "keep me"
    for bad in (rendered, rendered.parent):
        with pytest.raises(ConfigError, match="source dataset"):
            export_dataset(ExportRequest(rendered, bad, overwrite=True))
    assert not [p for p in tmp_path.iterdir() if "simgen" in p.name]  # no temporary folder left behind


@pytest.mark.parametrize("damage", ["corrupt", "missing", "image"])
def test_bad_source_is_one_line_exit_2_and_writes_nothing(rendered, tmp_path, capsys, damage):
    import shutil

    from simgen.cli import main

    src = tmp_path / "src"
    shutil.copytree(rendered, src)
    if damage == "corrupt":
        (src / "annotations.json").write_text('{"images": [')
    elif damage == "missing":
        (src / "annotations.json").unlink()
    else:
        (src / "images" / "00000001.jpg").unlink()
    out = tmp_path / "exports" / "yolo"
    with pytest.raises(SystemExit) as e:
        main(["export", str(src), "format=yolo", f"out={out}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("simgen: error:") and "\n" not in err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_cli_export_and_bad_arguments(rendered, tmp_path, capsys):
    from simgen.cli import main

    out = tmp_path / "y"
    main(["export", str(rendered), "format=yolo", f"out={out}", "val_fraction=0.5"])
    assert (out / "data.yaml").is_file() and (out / "val.txt").is_file()
    for args, msg in ((["format=coco"], "unknown format `coco`"), (["val_fraction=1"], "val_fraction must be"),
                      (["segment=true"], "Did you mean `segments`")):
        with pytest.raises(SystemExit) as e:
            main(["export", str(rendered), f"out={tmp_path / 'z'}", *args])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_writer_yolo_config_checks(tmp_path):
    d = compose_dict("render", [f"out={tmp_path}", "writer=yolo", "writer.segments=true", "writer.val_fraction=0.2"])
    assert render_config(d).writer == "yolo"
    with pytest.raises(ConfigError, match="simgen merge"):
        render_config(compose_dict("render", [f"out={tmp_path}", "writer=yolo", "shard.count=2"]))
    with pytest.raises(ConfigError, match="writer.val_fraction"):
        render_config(compose_dict("render", [f"out={tmp_path}", "writer=yolo", "writer.val_fraction=1"]))


def test_export_refuses_images_outside_the_folder(rendered, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(rendered, src)
    doc = json.loads((src / "annotations.json").read_text())
    doc["images"][0]["file_name"] = "../outside.jpg"
    (src / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        export_dataset(ExportRequest(src, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_export_of_a_webdataset_render_says_it_needs_a_coco_one(tmp_path, capsys):
    from simgen.cli import main
    from simgen.writers.webdataset import render_webdataset

    wds = render_webdataset(small_config(tmp_path, "width=64", "height=48", "writer=webdataset", name="wds"), shard_size=2, log=lambda m: None)
    out = tmp_path / "yolo"
    with pytest.raises(SystemExit) as e:
        main(["export", str(wds), "format=yolo", f"out={out}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err, err
    assert f"{wds} is a WebDataset render (writer=webdataset" in err and "writer=coco" in err and "render one with" not in err, err
    assert not out.exists()


def test_export_refuses_an_out_inside_the_source(rendered, tmp_path):
    """Inside the source the export sits among the dataset's own files (a re-render with overwrite=true keeps it over new
    images; out=<src>/images or <src>/labels mixes into them): refused like out=<src>, with a folder beside it to use."""
    before = sorted(p.relative_to(rendered) for p in rendered.rglob("*"))
    for bad in (rendered / "yolo", rendered / "images", rendered / "labels" / "yolo"):
        with pytest.raises(ConfigError, match=f"out={bad} is inside the source dataset {rendered}; choose a folder outside it "
                                              f"\\(e.g. out={rendered.parent / (rendered.name + '-yolo')}\\)"):
            export_dataset(ExportRequest(rendered, bad))
    assert sorted(p.relative_to(rendered) for p in rendered.rglob("*")) == before


def test_a_json_error_names_line_and_column_without_a_doubled_at(rendered, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(rendered, src)
    (src / "annotations.json").write_text('{"images": [{"file_name": "abc')
    with pytest.raises(DatasetError) as e:
        export_dataset(ExportRequest(src, tmp_path / "out"))
    assert "is not valid JSON (Unterminated string starting at line 1, column 27); the file is corrupt" in str(e.value), e.value
    assert not (tmp_path / "out").exists()
