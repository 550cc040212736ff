"""Property tests (hypothesis): label invariants of annotate() on random instance images, and a hostile COCO
reader that must either load a file or refuse it with simgen's one-line DatasetError, never crash otherwise."""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from simgen.annotate import annotate
from simgen.config import LabelSpec
from simgen.data import CocoDataset, load_coco
from simgen.errors import DatasetError
from simgen.types import Camera, Frame, ObjectSample, PlacedObject, SceneState
from simgen.writers.coco import rle

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------- annotate


@st.composite
def instance_images(draw) -> tuple[np.ndarray, list[str | None]]:
    """An instance-id image: rectangles and random blobs of random objects painted in random order, so later
    shapes occlude earlier ones; some objects are distractors (category None), some end up hidden."""
    h, w = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    n = draw(st.integers(1, 6))
    cats = draw(st.lists(st.sampled_from(["a", "b", None]), min_size=n, max_size=n))
    inst = np.full((h, w), -1, np.int32)
    for _ in range(draw(st.integers(0, 10))):
        k = draw(st.integers(0, n - 1))
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
        if draw(st.booleans()):
            inst[y0:y1, x0:x1] = k
        else:  # a blob: scattered pixels, holes, several pieces
            rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
            inst[y0:y1, x0:x1][rng.random((y1 - y0, x1 - x0)) < draw(st.floats(0.05, 0.95))] = k
    return inst, cats


def scene_for(cats: list[str | None], positions: list[tuple[float, float]]) -> SceneState:
    objs = []
    for i, (c, (x, y)) in enumerate(zip(cats, positions)):
        s = ObjectSample("box", c, 0.1, (x, y, 0.0), (0, 0, 0, 1), (1, 1, 1, 1))
        objs.append(PlacedObject(i, s, (x, y, 0.0), (0, 0, 0, 1), c))
    return SceneState(objects=tuple(objs), sim_steps=0, settled=True, n_dropped=0)


def frame_for(inst: np.ndarray) -> Frame:
    h, w = inst.shape
    cam = Camera(width=w, height=h, fx=w, fy=w, cx=w / 2, cy=h / 2, eye=(0, 0, 1), target=(0, 0, 0), up=(0, 1, 0), near=0.1, far=2)
    w2c = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1.0], [0, 0, 0, 1]])  # 1 m above the ground, looking down
    return Frame(rgb=np.zeros((h, w, 3), np.uint8), depth=np.ones((h, w), np.float32), instance=inst, camera=cam, world_to_cam=w2c)


def extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@FAST
@given(instance_images(), st.data())
def test_annotate_invariants(image, data):
    inst, cats = image
    positions = data.draw(st.lists(st.tuples(st.floats(-0.6, 0.6), st.floats(-0.6, 0.6)), min_size=len(cats), max_size=len(cats)))
    spec = LabelSpec(min_visible_fraction=data.draw(st.sampled_from([0.0, 0.0, 0.3])), min_area_px=data.draw(st.integers(1, 12)),
                     box=data.draw(st.sampled_from(["tight", "square"])))
    h, w = inst.shape
    counts = np.bincount(inst[inst >= 0], minlength=len(cats))
    out = annotate(frame_for(inst), scene_for(cats, positions), spec)

    eligible = {k for k, c in enumerate(cats) if c is not None and counts[k] >= spec.min_area_px}
    got = [a.object_index for a in out]
    assert len(got) == len(set(got)) and set(got) <= eligible  # distractors, hidden and tiny objects never annotated
    if spec.min_visible_fraction == 0.0:
        assert set(got) == eligible
    for a in out:
        assert a.category == cats[a.object_index] is not None
        assert np.array_equal(a.mask, inst == a.object_index)  # the visible pixels, exactly
        assert a.area == int(a.mask.sum()) == counts[a.object_index]
        assert 0.0 <= a.visible_fraction <= 1.0 and a.visible_fraction >= spec.min_visible_fraction
        tight = extent(a.mask)
        x0, y0, x1, y1 = a.bbox_xyxy
        if spec.box == "tight":
            assert (x0, y0, x1, y1) == tight  # contains the mask, and no row or column more
        else:  # contains the tight box, inside the image, square unless the image border cut it
            assert x0 <= tight[0] and y0 <= tight[1] and x1 >= tight[2] and y1 >= tight[3]
            assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h
            assert math.isclose(x1 - x0, y1 - y0) or x0 == 0 or y0 == 0 or x1 == w or y1 == h
        r = rle(a.mask)  # what the COCO writer stores
        decoded = mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), a.mask)
        assert int(mask_utils.area({"size": r["size"], "counts": r["counts"].encode()})) == a.area
        bx, by, bw, bh = mask_utils.toBbox({"size": r["size"], "counts": r["counts"].encode()})
        assert (bx, by, bx + bw, by + bh) == tight


@FAST
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0), st.booleans())
def test_rle_round_trip(h, w, seed, p, fortran):
    mask = np.random.default_rng(seed).random((h, w)) < p  # empty and full masks included
    mask = np.asfortranarray(mask) if fortran else np.ascontiguousarray(mask)
    r = rle(mask)
    assert r["size"] == [h, w] and isinstance(r["counts"], str)
    json.loads(json.dumps(r))  # plain JSON
    back = mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()})
    assert back.shape == (h, w) and np.array_equal(back.astype(bool), mask)


# ---------------------------------------------------------------------------- a hostile COCO reader


def base_doc() -> dict:
    """A small valid file: two images, two annotations (RLE and polygon), two categories."""
    m = np.zeros((6, 8), bool)
    m[1:3, 1:4] = True
    return {"info": {}, "images": [{"id": 1, "file_name": "images/ok.png", "width": 8, "height": 6},
                                   {"id": 2, "file_name": "images/ok.png", "width": 8, "height": 6}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2], "area": 6, "iscrowd": 0, "segmentation": rle(m)},
                            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0,
                             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.sampled_from([2**31, -(2**63), 10**12]),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6))
JSON = st.recursive(LEAVES, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=5), c, max_size=4)), max_leaves=10)
HOSTILE_NAMES = st.one_of(st.sampled_from(["../x.png", "/etc/passwd", "images/../../x.png", "a/../../b.png", "", ".", "images",
                                           "images/../images/ok.png", "images/missing.png", "\x00.png", "x" * 300, "~/x.png",
                                           "C:\\x.png", "images\\..\\..\\x.png", "images/ok.png\n"]), st.text(max_size=10))
NUMBERS = st.one_of(st.integers(-5, 50), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.none())


def paths(doc, prefix=()) -> list[tuple]:
    """Every key path into ``doc`` (dict keys and list indices)."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in items:
        out.append((*prefix, k))
        out += paths(v, (*prefix, k))
    return out


def mutate(doc: dict, data) -> dict | list | str:
    """One hostile edit: drop or replace any field, damage a bbox, a file_name, a size or an id, or replace everything."""
    kind = data.draw(st.sampled_from(["drop", "replace", "bbox", "file_name", "duplicate", "size", "whole"]))
    if kind == "whole":
        return data.draw(JSON)
    entries = {g: [x for x in doc[g] if isinstance(x, dict)] for g in ("images", "annotations", "categories")}  # earlier edits may have broken some
    if kind == "bbox" and entries["annotations"]:
        data.draw(st.sampled_from(entries["annotations"]))["bbox"] = data.draw(st.lists(NUMBERS, min_size=0, max_size=5))
    elif kind == "file_name" and entries["images"]:
        data.draw(st.sampled_from(entries["images"]))["file_name"] = data.draw(HOSTILE_NAMES)
    elif kind == "size" and entries["images"]:
        data.draw(st.sampled_from(entries["images"]))[data.draw(st.sampled_from(["width", "height"]))] = data.draw(NUMBERS)
    elif kind == "duplicate":
        group = entries[data.draw(st.sampled_from(sorted(entries)))]
        if len(group) >= 2:
            group[1]["id"] = group[0].get("id")
    elif kind in ("drop", "replace"):
        where = data.draw(st.sampled_from(paths(doc)))
        parent = doc
        for k in where[:-1]:
            parent = parent[k]
        if kind == "drop":
            del parent[where[-1]]
        else:
            parent[where[-1]] = data.draw(st.one_of(JSON, HOSTILE_NAMES, NUMBERS))
    return doc


@pytest.fixture(scope="module")
def folder():
    root = Path(tempfile.mkdtemp(prefix="hostile-coco-"))
    (root / "images").mkdir()
    Image.fromarray(np.full((6, 8, 3), 127, np.uint8)).save(root / "images" / "ok.png")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def one_line(e: DatasetError) -> None:
    assert str(e).strip() and "\n" not in str(e) and "\r" not in str(e), repr(str(e))


def read_all(root: Path) -> None:
    """Load ``root`` every way a user does; anything refused must be refused with one line."""
    try:
        doc = load_coco(root)
    except DatasetError as e:
        one_line(e)
        with pytest.raises(DatasetError):  # the dataset class refuses what the loader refuses
            CocoDataset(root)
        return
    for group in ("images", "annotations", "categories"):
        ids = [x["id"] for x in doc[group]]
        assert len(ids) == len(set(ids)), f"duplicate {group} ids accepted"
    for a in doc["annotations"]:
        assert len(a["bbox"]) == 4 and all(math.isfinite(v) for v in a["bbox"]), a["bbox"]
    try:
        ds = CocoDataset(root)
    except DatasetError as e:
        one_line(e)
        return
    for i in range(len(ds)):
        assert ds.image_path(i).is_relative_to(root.resolve())
        try:
            img, target = ds[i]
        except DatasetError as e:
            one_line(e)
            continue
        assert target["boxes"].shape[-1] == 4 and bool(target["boxes"].isfinite().all())
        assert all(1 <= int(lb) <= len(ds.categories) for lb in target["labels"])


@FAST
@given(st.data())
def test_hostile_coco_loads_or_is_refused_in_one_line(folder, data):
    doc = base_doc()
    for _ in range(data.draw(st.integers(1, 3))):
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")):
            break
        doc = mutate(doc, data)
    (folder / "annotations.json").write_text(json.dumps(doc))  # NaN and Infinity as Python writes them
    read_all(folder)


@FAST
@given(st.binary(max_size=64))
def test_random_bytes_as_annotations_are_refused_in_one_line(folder, blob):
    (folder / "annotations.json").write_bytes(blob)
    read_all(folder)


def test_the_valid_base_file_loads(folder):
    """The hostile tests start from a file that must load, or they would prove nothing."""
    (folder / "annotations.json").write_text(json.dumps(base_doc()))
    ds = CocoDataset(folder)
    img, t = ds[0]
    assert len(ds) == 2 and t["boxes"].tolist() == [[1.0, 1.0, 4.0, 3.0]] and int(t["masks"].sum()) == 6
    assert ds[1][1]["masks"].shape == (1, 6, 8)
