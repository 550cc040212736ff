"""Our COCO output opens unchanged in pycocotools and torchvision; the reader refuses bad input."""
import json

import numpy as np
import pytest
import torch
import torchvision
from pycocotools.coco import COCO
from torchvision.transforms import v2 as T

from simgen.data import CocoDataset, collate
from simgen.errors import DatasetError
from simgen.run import render_dataset

from .conftest import small_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coco")
    return render_dataset(small_config(tmp), log=lambda m: None)


def test_pycocotools_round_trip(dataset):
    coco = COCO(str(dataset / "annotations.json"))
    doc = json.loads((dataset / "annotations.json").read_text())
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == len(doc["annotations"])
    for a in coco.loadAnns(coco.getAnnIds()):
        m = coco.annToMask(a)
        assert m.sum() == a["area"]
        assert coco.annToRLE(a)["counts"] == a["segmentation"]["counts"]


def test_torchvision_cocodetection_unchanged(dataset):
    ds = torchvision.datasets.CocoDetection(str(dataset), str(dataset / "annotations.json"))
    ds = torchvision.datasets.wrap_dataset_for_transforms_v2(ds, target_keys=("boxes", "labels", "masks", "image_id"))
    img, target = ds[0]
    ours_img, ours = CocoDataset(dataset)[0]
    assert torch.equal(target["boxes"], ours["boxes"]) and torch.equal(target["labels"], ours["labels"])
    assert torch.equal(target["masks"].bool(), ours["masks"].bool())
    assert tuple(ours_img.shape) == (3, 128, 128)


def test_reader_with_transforms_v2(dataset):
    tf = T.Compose([T.RandomHorizontalFlip(1.0), T.Resize((64, 64)), T.ToDtype(torch.float32, scale=True)])
    ds = CocoDataset(dataset, transforms=tf)
    plain = CocoDataset(dataset)
    img, t = ds[0]
    _, t0 = plain[0]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32
    # flipped and halved: x1' = (128 - x2) / 2
    assert torch.allclose(t["boxes"][:, 0], (128 - t0["boxes"][:, 2]) / 2)
    assert t["masks"].shape[-2:] == (64, 64)
    batch = collate([ds[0], ds[1]])
    assert len(batch[0]) == 2


def test_holdout_reads(holdout):
    ds = CocoDataset(holdout)
    img, t = ds[0]
    assert len(ds) == 50 and ds.categories == ["one", "two", "three", "four", "five", "six"]
    assert "masks" not in t and t["boxes"].shape[1] == 4


def test_corrupt_and_unsafe_coco(tmp_path, dataset):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "annotations.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match="not valid JSON"):
        CocoDataset(bad)
    (bad / "annotations.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "../../etc/passwd", "width": 1, "height": 1}],
                                                      "annotations": [], "categories": []}))
    with pytest.raises(DatasetError, match="outside the dataset"):
        CocoDataset(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        CocoDataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="not among"):
        CocoDataset(dataset, categories=["one", "two"])


def test_preview(dataset, tmp_path):
    from simgen.preview import contact_sheet

    out = contact_sheet(dataset, tmp_path / "p.png", n=3, cols=2, tile=100)
    import cv2

    img = cv2.imread(str(out))
    assert img.shape == (200, 200, 3)
    # cells take the images' shape: a 4:3 render in a square cell left a white band under every row
    wide = render_dataset(small_config(tmp_path, "width=160", "height=120", name="wide"), log=lambda m: None)
    img = cv2.imread(str(contact_sheet(wide, tmp_path / "q.png", n=3, cols=2, tile=100)))
    assert img.shape == (150, 200, 3) and img[-1, :100].mean() < 250  # the second row's image reaches the bottom


def test_every_mask_encoded_in_one_pass_is_the_mask_encoded_alone():
    """The writer encodes all of an image's masks from one pass over its instance map (coco.rles_of); each must be the
    string pycocotools gives for that mask alone (coco.rle), and decode back to it: instances touching the first and
    the last pixel, one pixel, a whole column, an id covering the whole image, and an id that is absent."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from simgen.writers import coco

    rng = np.random.default_rng(3)
    maps = [rng.integers(-1, 5, (7, 9)).astype(np.int32), np.full((6, 4), 2, np.int32)]
    blocky = np.full((48, 64), -1, np.int32)
    blocky[0, 0] = 0  # the first pixel (column-major order)
    blocky[-1, -1] = 1  # the last
    blocky[10:20, 5:30] = 2
    blocky[:, 40] = 3  # a whole column
    blocky[30:47, 50:63] = 4
    blocky[35:40, 52:55] = 2  # the same instance again, apart
    maps.append(blocky)
    for m in maps:
        ids = [-1, 0, 1, 2, 3, 4, 7]  # 7: absent
        got = coco.rles_of(np.ascontiguousarray(m.T), ids)
        for i, (r, n) in zip(ids, got):
            alone = coco.rle(m == i)
            assert r == alone and n == int((m == i).sum()), (i, r, alone)
            assert np.array_equal(mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}).astype(bool), m == i)


def test_a_record_whose_instances_were_edited_has_its_masks_encoded_one_by_one(tmp_path):
    """The writer encodes masks from the record's instance map only where the map is that mask: a record built with an
    instance whose mask no longer matches the map (a user's edit) gets that mask's own encoding."""
    import dataclasses

    import numpy as np

    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout
    from simgen.writers import coco

    cfg = small_config(tmp_path, "n_images=1")
    with quiet_stdout(), Generator(cfg) as g:
        rec = g.generate(0)
    assert rec.instances and rec.instance_columns is not None
    cats = {c: k + 1 for k, c in enumerate(cfg.scene.categories)}
    plain = coco.record_entries(rec, cats, "x.jpg", {})["annotations"]
    assert [a["segmentation"] for a in plain] == [coco.rle(i.mask) for i in rec.instances]
    first = rec.instances[0]
    mask = np.zeros_like(first.mask)
    mask[:2, :3] = True
    edited = dataclasses.replace(rec, instances=(dataclasses.replace(first, mask=mask, area=6), *rec.instances[1:]))
    got = coco.record_entries(edited, cats, "x.jpg", {})["annotations"]
    assert got[0]["segmentation"] == coco.rle(mask) != plain[0]["segmentation"]


def test_a_webdataset_render_is_named_as_such_where_coco_is_read(tmp_path):
    """report, train, preview and export read COCO; a writer=webdataset folder (a manifest saying so, tar shards, no
    annotations.json) gets a line naming what it is, not "render one" (it was rendered)."""
    import json

    import pytest

    from simgen.data import load_coco
    from simgen.errors import DatasetError

    (tmp_path / "manifest.json").write_text(json.dumps({"format": "webdataset"}))
    with pytest.raises(DatasetError, match="is a WebDataset render .*writer=coco"):
        load_coco(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "coco"}))
    with pytest.raises(DatasetError, match="not found; a dataset folder needs annotations.json"):
        load_coco(tmp_path)


def test_an_images_folder_linked_from_elsewhere_is_named_as_such(tmp_path):
    """A symlinked images/ leads outside the dataset folder, which simgen refuses to read (a downloaded archive could
    link anywhere); the line names the link and what to do, instead of "points outside" for a name that does not."""
    import json
    import os

    import pytest

    from simgen.data import safe_path
    from simgen.errors import DatasetError

    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    (elsewhere / "a.jpg").write_bytes(b"x")
    ds = tmp_path / "ds"
    ds.mkdir()
    os.symlink(elsewhere, ds / "images")
    (ds / "annotations.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DatasetError, match=r"through the symbolic link .*images \(-> .*photos\).*copy or hard-link"):
        safe_path(ds, "images/a.jpg")
    with pytest.raises(DatasetError, match="points outside the dataset folder"):
        safe_path(ds, "../photos/a.jpg")


def test_a_phone_photo_turned_by_exif_is_read_upright(tmp_path):
    """A phone stores a portrait JPEG's pixels as the sensor read them and an EXIF Orientation saying how to turn
    them; the annotator boxed the turned image. CocoDataset (training, scoring) read it on its side under upright boxes,
    while OpenCV (the report's statistics) turned it: both read it as shown now."""
    from PIL import Image

    from simgen.data import CocoDataset

    shown = np.zeros((240, 320, 3), np.uint8)
    shown[:20] = (255, 0, 0)  # a red band along the top of the photo as shown
    (tmp_path / "images").mkdir()
    im = Image.fromarray(np.ascontiguousarray(np.rot90(shown, 1)))  # stored turned, as the sensor read it
    exif = im.getexif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to show"
    im.save(tmp_path / "images" / "p.jpg", exif=exif.tobytes(), quality=95)
    doc = {"images": [{"id": 1, "file_name": "images/p.jpg", "width": 320, "height": 240}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 0, 300, 20], "area": 6000, "iscrowd": 0}],
           "categories": [{"id": 1, "name": "band"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    img, target = CocoDataset(tmp_path)[0]
    assert tuple(img.shape) == (3, 240, 320) and tuple(target["boxes"].canvas_size) == (240, 320)
    assert img[0, :15].float().mean() > 200 and img[0, 40:].float().mean() < 50  # the band is on top, as boxed


def test_an_image_without_its_size_gets_it_from_its_file(tmp_path):
    """A labelling tool's export without width/height was refused with "image 1 has width None"; the size is read from
    the file's header now, as shown (EXIF-turned photos turned), and an unreadable file is one line saying so."""
    from PIL import Image

    from simgen.data import load_coco

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    turned = Image.fromarray(np.zeros((40, 30, 3), np.uint8))  # stored 30 wide, shown 40 wide
    exif = turned.getexif()
    exif[0x0112] = 6
    turned.save(tmp_path / "images" / "b.jpg", exif=exif.tobytes())
    doc = {"images": [{"id": 1, "file_name": "images/a.png"}, {"id": 2, "file_name": "images/b.jpg", "width": None, "height": None}],
           "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    assert [(im["width"], im["height"]) for im in load_coco(tmp_path)["images"]] == [(40, 30), (40, 30)]
    (tmp_path / "images" / "a.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"image 1 gives no width/height and its file `images/a.png` cannot be read") as e:
        load_coco(tmp_path)
    assert "\n" not in str(e.value)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    doc["images"][0].update(width="40", height=None)  # a size given but not a number is still refused as such
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="image 1 has width '40'"):
        load_coco(tmp_path)


def test_a_labelling_tools_export_layout_is_named_in_the_error(tmp_path):
    """Exports of labelling tools keep their COCO file under another name (Roboflow's _annotations.coco.json) or list
    bare file names for images in a subfolder (CVAT's images/default/): the errors said "render one" and "missing"; they
    name the file to rename and where the image is now."""
    from PIL import Image

    from simgen.data import load_coco
    from simgen.train.guard import image_hashes

    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}], "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "_annotations.coco.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"this folder has _annotations.coco.json: if that is its COCO file, copy or rename it"):
        load_coco(tmp_path)
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    (tmp_path / "images" / "default").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "default" / "a.png")
    with pytest.raises(DatasetError, match=r"`a.png` listed in .* is missing \(a file of that name is at `images/default/a.png`.*list it as") as e:
        image_hashes(tmp_path)
    assert "\n" not in str(e.value)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")  # two of that name: no guess
    with pytest.raises(DatasetError, match=r"`a.png` listed in .* is missing; restore it"):
        image_hashes(tmp_path)


def test_coco_cache_parses_each_unchanged_file_once(tmp_path, dataset, monkeypatch):
    """Inside coco_cache() a file is parsed and checked once while it is unchanged; outside, or once it changed, afresh."""
    import os
    import shutil

    from simgen import data

    root = tmp_path / "set"
    shutil.copytree(dataset, root)
    parsed = []
    check = data.check_coco
    monkeypatch.setattr(data, "check_coco", lambda doc, *a: (parsed.append(1), check(doc, *a))[1])
    a = data.load_coco(root)
    assert data.load_coco(root) is not a and len(parsed) == 2  # no block: every call reads the file, as before
    with data.coco_cache():
        first = data.load_coco(root)
        with data.coco_cache():  # nested: the same cache
            assert data.load_coco(root) is first and data.load_coco(str(root) + "/") is first
        assert CocoDataset(root).doc is first and len(parsed) == 3
        doc = json.loads((root / "annotations.json").read_text())
        doc["annotations"] = doc["annotations"][:1]
        (root / "annotations.json").write_text(json.dumps(doc))
        st = (root / "annotations.json").stat()
        os.utime(root / "annotations.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a coarse clock: still a change
        again = data.load_coco(root)
        assert again is not first and len(again["annotations"]) == 1 and len(parsed) == 4
    assert data._coco_memo is None and data.load_coco(root) is not again  # the block's end drops the documents
