from collections import Counter

import numpy as np

from simgen.annotate import annotate, pad_box, square_box, tight_box
from simgen.config import LabelSpec
from simgen.types import Camera, Frame, ObjectSample, PlacedObject, SceneState

CAM = Camera(width=64, height=48, fx=60, fy=60, cx=32, cy=24, eye=(0, 0, 1), target=(0, 0, 0), up=(0, 1, 0), near=0.1, far=2)
W2C = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1.0], [0, 0, 0, 1]])  # camera 1 m above, looking down


def placed(i, pos=(0, 0, 0), category="box", scale=0.1):
    s = ObjectSample("box", category, scale, pos, (0, 0, 0, 1), (1, 1, 1, 1))
    return PlacedObject(i, s, pos, (0, 0, 0, 1), category)


def frame(inst):
    h, w = inst.shape
    return Frame(rgb=np.zeros((h, w, 3), np.uint8), depth=np.ones((h, w), np.float32), instance=inst, camera=CAM, world_to_cam=W2C)


def test_frame_columns_is_the_instance_map_transposed_for_every_shape_and_dtype():
    """Frame.columns takes OpenCV's transpose for the int32 maps the renderers give and numpy's for anything else:
    the same C-contiguous WxH array either way."""
    rng = np.random.default_rng(5)
    for shape in ((48, 64), (1, 7), (7, 1), (480, 640), (0, 5)):
        for dtype in (np.int32, np.int64, np.int16):
            inst = rng.integers(-1, 9, shape).astype(dtype)
            cols = frame(inst).columns if inst.size else Frame(None, None, inst, CAM, W2C).columns
            assert cols.dtype == dtype and cols.flags.c_contiguous and np.array_equal(cols, inst.T)
    view = rng.integers(-1, 9, (40, 60)).astype(np.int32)[::2, 1:]  # not contiguous
    assert np.array_equal(frame(view).columns, view.T)


def test_boxes_from_the_maps_runs_are_each_masks_tight_box():
    """annotate takes every instance's box from one pass over the map (Frame.runs, run_boxes) instead of a pass per
    instance: each equals tight_box of that instance's mask, for blobs, single pixels, runs that cross from one column
    into the next (an object touching the bottom and top rows), whole columns, and ids that are absent."""
    from simgen.annotate import run_boxes

    rng = np.random.default_rng(11)
    for trial in range(300):
        h, w = (int(x) for x in rng.integers(1, 40, 2))
        n = int(rng.integers(1, 6))
        inst = np.full((h, w), -1, np.int32)
        for i in range(n - 1):  # the last id is never drawn
            kind = rng.integers(3)
            if kind == 0:
                y, x = rng.integers(0, h), rng.integers(0, w)
                inst[y:y + rng.integers(1, h + 1), x:x + rng.integers(1, w + 1)] = i
            elif kind == 1:
                inst[rng.random((h, w)) < 0.05] = i
            else:  # bottom rows of one column and top rows of the next: one run in column-major order
                c = int(rng.integers(0, max(1, w - 1)))
                inst[h - 1, c] = i
                if c + 1 < w:
                    inst[0, c + 1] = i
        f = frame(inst)
        boxes = run_boxes(f.runs, h, n)
        for i in range(n):
            m = inst == i
            if m.any():
                assert tuple(boxes[i]) == tight_box(m), (trial, i)
            else:
                assert boxes[i, 0] > boxes[i, 2]


def test_tight_box_is_half_open_pixels():
    m = np.zeros((10, 10), bool)
    m[2:5, 3:7] = True
    assert tight_box(m) == (3.0, 2.0, 7.0, 5.0)


def test_tight_box_is_the_extent_of_the_mask_in_any_memory_layout():
    """tight_box reads C- and F-ordered masks with OpenCV (x and y swapped for F order, as annotate's transposed masks
    are) and anything else with numpy: every layout gives the rows' and columns' extent."""
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(400):
        h, w = (int(x) for x in rng.integers(1, 50, 2))
        m = rng.random((h, w)) < rng.choice([0.002, 0.05, 0.5])
        if not m.any():
            continue
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        want = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        for layout in (m, np.asfortranarray(m), m.astype(np.uint8), np.asfortranarray(m.astype(np.uint8)),
                       np.ascontiguousarray(m.T).T, np.pad(m, 1)[1:-1, 1:-1]):
            assert tight_box(layout) == want, (layout.flags, h, w)
            checked += 1
    assert checked > 1000


def test_square_boxes_grow_about_the_centre_and_clip_to_the_image():
    assert square_box((10.0, 20.0, 14.0, 30.0), 64, 48) == (7.0, 20.0, 17.0, 30.0)
    assert square_box((0.0, 0.0, 4.0, 2.0), 64, 48) == (0.0, 0.0, 4.0, 3.0)  # clipped at the top
    inst = np.full((48, 64), -1, np.int32)
    inst[21:27, 29:33] = 0  # 4 wide, 6 tall
    state = SceneState(objects=(placed(0),), sim_steps=0, settled=True, n_dropped=0)
    (t,) = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.0, min_area_px=1))
    (q,) = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.0, min_area_px=1, box="square"))
    assert t.bbox_xyxy == (29.0, 21.0, 33.0, 27.0)
    assert q.bbox_xyxy == (28.0, 21.0, 34.0, 27.0) and q.area == t.area and (q.mask == t.mask).all()


def test_box_padding_grows_every_side_after_square_and_clips_to_the_image():
    assert pad_box((10.0, 20.0, 14.0, 30.0), 3.0, 64, 48) == (7.0, 17.0, 17.0, 33.0)
    assert pad_box((1.0, 2.0, 62.0, 47.0), 3.0, 64, 48) == (0.0, 0.0, 64.0, 48.0)
    inst = np.full((48, 64), -1, np.int32)
    inst[21:27, 29:33] = 0  # 4 wide, 6 tall
    state = SceneState(objects=(placed(0),), sim_steps=0, settled=True, n_dropped=0)
    (p,) = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.0, min_area_px=1, box="square", box_pad_px=2.5))
    assert p.bbox_xyxy == (25.5, 18.5, 36.5, 29.5) and p.area == 24  # square 6 x 6, then 2.5 px a side; the mask stays exact


def test_boxes_masks_and_occlusion():
    inst = np.full((48, 64), -1, np.int32)
    # object 0: a 0.1 m box at the centre projects to 6x6 px; paint it fully
    inst[21:27, 29:35] = 0
    # object 1 at the same spot but mostly hidden: only one column visible
    state = SceneState(objects=(placed(0), placed(1), placed(2, category=None)), sim_steps=0, settled=True, n_dropped=0)
    inst[21:27, 35] = 1
    inst[0:5, 0:5] = 2  # a distractor: never annotated
    out = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.0, min_area_px=1))
    assert [i.object_index for i in out] == [0, 1]
    a, b = out
    assert a.bbox_xyxy == (29.0, 21.0, 35.0, 27.0) and a.area == 36
    assert a.visible_fraction > 0.9
    assert b.area == 6 and b.visible_fraction < 0.25
    # filters drop the occluded one
    out2 = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.5, min_area_px=1))
    assert [i.object_index for i in out2] == [0]
    out3 = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.0, min_area_px=10))
    assert [i.object_index for i in out3] == [0]
    # every labelled object left out is counted once, by its reason; distractors are not counted
    hidden = SceneState(objects=(*state.objects, placed(3)), sim_steps=0, settled=True, n_dropped=0)  # object 3: no pixel
    for spec, want in ((LabelSpec(min_visible_fraction=0.5, min_area_px=1), {"below_min_visible_fraction": 1, "not_visible": 1}),
                       (LabelSpec(min_visible_fraction=0.0, min_area_px=10), {"below_min_area_px": 1, "not_visible": 1}),
                       (LabelSpec(min_visible_fraction=0.0, min_area_px=1), {"not_visible": 1})):
        skipped = Counter()
        annotate(frame(inst), hidden, spec, skipped)
        assert skipped == want


def test_masks_are_cut_on_first_read_and_areas_come_from_the_runs():
    """annotate no longer cuts a full-image mask per instance (the COCO writer encodes them from the map's runs) and
    counts pixels from the runs: each mask, read, is exactly ``instance == its index`` (Fortran-ordered, as RLE reads
    it), its area is its pixel count, under any map dtype; a mask given explicitly is kept as given."""
    import dataclasses

    rng = np.random.default_rng(3)
    for dtype in (np.int32, np.int64):
        inst = np.full((48, 64), -1, dtype)
        for i in range(4):
            y, x = rng.integers(0, 40), rng.integers(0, 56)
            inst[y:y + 8, x:x + 8] = i
        inst[rng.random(inst.shape) < 0.03] = 1  # scattered pixels: many short runs
        state = SceneState(objects=tuple(placed(i) for i in range(4)), sim_steps=0, settled=True, n_dropped=0)
        out = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.0, min_area_px=1))
        assert len(out) == len({int(v) for v in np.unique(inst) if v >= 0})
        for a in out:
            want = inst == a.object_index
            assert a.mask.dtype == bool and np.array_equal(a.mask, want) and a.mask.flags.f_contiguous
            assert a.area == int(want.sum()) and a.bbox_xyxy == tight_box(want)
        own = np.zeros_like(out[0].mask)
        assert dataclasses.replace(out[0], mask=own).mask is own
        # the map is no field: asdict copies each mask, not the whole map into every instance; replace(mask=None) is none
        fresh = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.0, min_area_px=1))[0]
        assert "mask_source" not in dataclasses.asdict(fresh) and dataclasses.replace(fresh, mask=None).mask is None
        assert np.array_equal(dataclasses.replace(fresh, area=1).mask, inst == fresh.object_index)


def test_unlabelled_warning_names_the_commonest_reason_and_what_to_change():
    from simgen.run import unlabelled_warning

    assert unlabelled_warning({"not_visible": 11, "below_min_visible_fraction": 1}, 293) is None  # dice: 4% left out
    assert "no labelled object was placed in any image" in unlabelled_warning({}, 0)  # every count drew 0: said, not silent
    line = unlabelled_warning({"below_min_area_px": 39, "not_visible": 1}, 3)
    assert line.startswith("warning: only 3 of the 43 objects placed got a label; 39 were smaller on screen than labels.min_area_px")
    assert "scene.objects.<name>.scale" in line and "\n" not in line
    assert "scene.camera.distance" in unlabelled_warning({"not_visible": 30}, 10)


def test_truncation_at_image_border():
    inst = np.full((48, 64), -1, np.int32)
    # a box centred at x = 0.55 m projects around u = 32 + 33 = 65: beyond the right border
    state = SceneState(objects=(placed(0, pos=(0.52, 0, 0)),), sim_steps=0, settled=True, n_dropped=0)
    inst[21:27, 60:64] = 0
    (i,) = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.0, min_area_px=1))
    assert i.truncated
    assert i.bbox_xyxy[2] <= 64 and i.visible_fraction < 1.0
    assert np.allclose(i.pose_t, (0.52, 0, 1.0))


def _l_prism(path):
    """An L-shaped slab (three 1x1 squares of a 2x2 square, 0.2 thick): concave seen from above."""
    poly = [(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)]
    v = [(x, y, 0.0) for x, y in poly] + [(x, y, 0.2) for x, y in poly]
    caps = [(0, 1, 2), (0, 2, 3), (0, 3, 4), (0, 4, 5)]  # fan from (0,0) covers the L exactly
    f = caps + [(a + 6, b + 6, c + 6) for a, b, c in caps]
    for i in range(6):
        j = (i + 1) % 6
        f += [(i, j, j + 6), (i, j + 6, i + 6)]
    path.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in v) + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in f))
    return path


def test_convexity_of_shipped_and_concave_meshes(tmp_path):
    from simgen import assets

    for name in ("die", "die_round", "box", "can", "sphere"):
        assert assets.resolve(name).convex, name
    for name in ("mug", "duck", "teddy"):
        assert not assets.resolve(name).convex, name
    assert not assets.resolve(str(_l_prism(tmp_path / "l.obj"))).convex


def test_silhouette_counts_overlapping_triangles_once():
    """cv2.fillPoly's even-odd rule would cancel the overlap; the union area must not."""
    from simgen.annotate import silhouette_area

    tris = np.array([[[0, 0], [60, 0], [0, 60]], [[20, 20], [80, 20], [20, 80]]], float)
    # union = 1800 + 1800 - overlap, the overlap being the triangle (20,20),(40,20),(20,40): 200
    assert abs(silhouette_area(tris, max_side=128) - 3400) / 3400 < 0.02


def test_visible_fraction_of_a_concave_object_uses_its_silhouette(tmp_path):
    """Seen from above, an L covers 3 of its hull's 3.5 units: an unoccluded L must read ~1.0 visible,
    not 3/3.5; seen edge-on, its silhouette is its hull."""
    from simgen import assets
    from simgen.annotate import amodal_area, silhouette_hull_ratio

    a = assets.resolve(str(_l_prism(tmp_path / "l.obj")))
    assert abs(silhouette_hull_ratio(a, np.array([0.0, 0.0, -1.0])) - 3 / 3.5) < 0.02
    assert silhouette_hull_ratio(a, np.array([1.0, 0.0, 0.0])) > 0.95  # the nearest bin is a few degrees off edge-on
    # camera 10 m above, looking down: 1 unit = 100 px, so the L's silhouette is 30,000 px
    obj = PlacedObject(0, ObjectSample(a.key, "l", 0.01, (0, 0, 0), (0, 0, 0, 1), (1, 1, 1, 1)), (0, 0, 0), (0, 0, 0, 1), "l")
    K = np.array([[100000.0, 0, 320], [0, 100000.0, 240], [0, 0, 1]])
    area, truncated = amodal_area(obj, np.diag([1.0, -1.0, -1.0]), np.array([-0.01, 0.01, 10.0]), K, 640, 480)
    assert abs(area - 30000) / 30000 < 0.02 and not truncated


def test_visibility_table_is_kept_on_disk_and_read_back(tmp_path, monkeypatch):
    """Silhouette/hull ratios computed by one process are read back by the next (same values, nothing recomputed)."""
    import numpy as np

    from simgen import annotate, assets

    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(annotate, "_RATIO_CACHE", {})
    monkeypatch.setattr(annotate, "_LOADED", {})
    monkeypatch.setattr(annotate, "_DIRTY", set())
    mug = assets.resolve("mug")
    dirs = annotate.VIEW_BINS[[3, 200, 411]]
    first = [annotate.silhouette_hull_ratio(mug, d) for d in dirs]
    annotate.save_ratio_cache()
    assert len(list((tmp_path / "visibility").glob("*.npy"))) == 1
    monkeypatch.setattr(annotate, "_RATIO_CACHE", {})
    monkeypatch.setattr(annotate, "_LOADED", {})
    monkeypatch.setattr(annotate, "silhouette_area", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert [annotate.silhouette_hull_ratio(mug, d) for d in dirs] == first
    assert np.isfinite(first).all()
