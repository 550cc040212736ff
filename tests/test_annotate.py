import numpy as np

from simgen.annotate import annotate, tight_box
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


def test_tight_box_is_half_open_pixels():
    m = np.zeros((10, 10), bool)
    m[2:5, 3:7] = True
    assert tight_box(m) == (3.0, 2.0, 7.0, 5.0)


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


def test_truncation_at_image_border():
    inst = np.full((48, 64), -1, np.int32)
    # a box centred at x = 0.55 m projects around u = 32 + 33 = 65: beyond the right border
    state = SceneState(objects=(placed(0, pos=(0.52, 0, 0)),), sim_steps=0, settled=True, n_dropped=0)
    inst[21:27, 60:64] = 0
    (i,) = annotate(frame(inst), state, LabelSpec(min_visible_fraction=0.0, min_area_px=1))
    assert i.truncated
    assert i.bbox_xyxy[2] <= 64 and i.visible_fraction < 1.0
    assert np.allclose(i.pose_t, (0.52, 0, 1.0))
