"""Targeted generation (docs/targeted.md): class weights, dice face balance, clusters, walls, truncation,
occluders and extreme light, each a config switch; labels stay exact and independent of workers."""
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simgen import assets
from simgen.config import render_config
from simgen.errors import ConfigError
from simgen.run import render_dataset
from simgen.sample import allocate, labelled_groups, sample_scene, sample_view

from .conftest import compose_dict, small_config

QUIET = dict(log=lambda m: None)
BANKS = {"bank": ("noise/0", "checker/1"), "dice": ("dice/0", "dice/1", "dice/2"), "ground": ("ground/noise/0",)}
CRATE = "+scene.objects.crate={asset: box, count: [1, 3], scale: [0.03, 0.06], weight: 1}"
ALL_ON = ["scene.cluster.probability=0.5", "scene.tray.probability=1", "scene.tray.wall_bias=0.5", "scene.face_balance.probability=0.7",
          "scene.camera.truncation_probability=0.7", "randomization.occluders.probability=0.7",
          "randomization.light.extreme_probability=0.7"]


def cfg_of(*overrides: str, out="/tmp/unused"):
    return render_config(compose_dict("render", [f"out={out}", *overrides]))


def settled(cfg, n: int):
    """The settled, labelled scenes of images 0..n-1 (physics only, no rendering)."""
    from simgen.physics import PhysicsWorld
    from simgen.pipeline import draw_scene
    from simgen.scenes_api import labeler

    label = labeler(cfg.scene.labeler)
    with PhysicsWorld(cfg.physics) as world:
        states = [draw_scene(cfg, BANKS, i, lambda s: world.simulate(s, cfg.scene.area)[0])[1] for i in range(n)]
    return [[(o, label(o)) for o in st.objects if o.category is not None] for st in states]


# ---------------------------------------------------------------------------- class weights


def test_allocate_hits_each_quota_within_one():
    rng = np.random.default_rng(0)
    for n in range(0, 12):
        for w in ([3, 1], [1, 1, 1], [0, 2, 5], [0.2, 0.3, 0.5]):
            counts = np.bincount(allocate(rng, n, w), minlength=len(w))
            quota = n * np.array(w, float) / sum(w)
            assert counts.sum() == n and np.all(np.abs(counts - quota) < 1) and np.all(counts[np.array(w) == 0] == 0)
    # expected counts are exact: over many draws the shares converge to the weights
    total = sum(np.bincount(allocate(rng, 5, [3, 1]), minlength=2) for _ in range(2000))
    assert abs(total[0] / total.sum() - 0.75) < 0.005


def test_sampled_categories_follow_the_weights():
    cfg = cfg_of("scene=custom", CRATE, "scene.objects.box.weight=3")
    cats = [g.category for i in range(400) for g in labelled_groups(np.random.default_rng(i), cfg.scene)]
    assert abs(cats.count("box") / len(cats) - 0.75) < 0.02
    # objects_total sets the count per scene, whatever the groups' count ranges say
    cfg = cfg_of("scene=custom", CRATE, "scene.objects_total=[7,7]")
    assert all(len(labelled_groups(np.random.default_rng(i), cfg.scene)) == 7 for i in range(20))


def test_rendered_class_balance_is_the_asked_one(tmp_path):
    """Weights 3:1 over a few hundred rendered, settled and annotated objects give ~75/25."""
    cfg = small_config(tmp_path, "scene=custom", CRATE, "scene.objects.box.weight=3", "scene.objects_total=[5,6]", "n_images=60",
                       "width=128", "height=128", "randomization.distractors=false", "randomization.sensor.enabled=false",
                       "scene.camera.distance=[0.45,0.55]", "scene.camera.target_jitter=0")
    doc = json.loads((render_dataset(cfg, **QUIET) / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    cats = [names[a["category_id"]] for a in doc["annotations"]]
    assert len(cats) > 250
    assert abs(cats.count("box") / len(cats) - 0.75) < 0.05, (cats.count("box"), len(cats))


# ---------------------------------------------------------------------------- dice faces


def test_face_balance_raises_the_share_of_the_asked_face():
    """Weights 5:1:1:1:1:1 ask for half the dice showing one pip; tumbling dice show it on a sixth."""
    asked = settled(cfg_of("scene.face_balance.probability=1", "scene.face_balance.weights=[5,1,1,1,1,1]"), 16)
    tumbled = settled(cfg_of(), 16)
    share = [sum(lab == "one" for s in states for _, lab in s) / sum(len(s) for s in states) for states in (asked, tumbled)]
    assert sum(len(s) for s in asked) > 80
    assert share[0] > 0.4 and share[1] < 0.3, share


def test_face_up_puts_the_face_up():
    from simgen.sample import face_up
    from simgen.scenes.dice import top_face

    rng = np.random.default_rng(1)
    assert all(top_face(face_up(f, rng)) == f for f in range(1, 7) for _ in range(20))


# ---------------------------------------------------------------------------- where objects start


def nearest(states) -> float:
    """Mean nearest-neighbour distance between settled labelled objects, in object sizes."""
    out = []
    for s in states:
        xy = np.array([o.position[:2] for o, _ in s])
        if len(xy) < 2:
            continue
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        out += list(d.min(axis=1) / np.array([o.sample.scale for o, _ in s]))  # die size = its scale (unit cube)
    return float(np.mean(out))


def test_clusters_bring_objects_together():
    near, apart = nearest(settled(cfg_of("scene.cluster.probability=1"), 16)), nearest(settled(cfg_of(), 16))
    assert near < 0.7 * apart, (near, apart)


def test_wall_bias_starts_objects_against_a_tray_wall():
    cfg = cfg_of("scene.tray.probability=1", "scene.tray.wall_bias=1")
    for i in range(20):
        s = sample_scene(cfg.scene, cfg.randomization, BANKS, np.random.default_rng(i))
        hx, hy = s.tray.half_extents
        for o in s.objects:
            if o.labelled:
                r = assets.resolve(o.asset).radius * o.scale
                gap = min(hx - abs(o.position[0]), hy - abs(o.position[1])) - r
                assert -1e-6 <= gap < 0.5 * r
                towards = np.array(o.linear_velocity[:2]) @ np.sign(o.position[:2])
                assert towards > 0  # pushed at the wall, not away


def test_occluders_are_set_down_on_labelled_objects():
    """Occluders name a labelled object (``anchor``), start a little off its centre, and mostly come to rest on it."""
    from simgen.physics import PhysicsWorld
    from simgen.pipeline import draw_scene

    cfg = cfg_of("randomization.occluders.probability=1", "randomization.occluders.count=[2,2]",
                 "scene.distractors=[{asset: box, count: 0, scale: [0.01, 0.02]}]")
    near = []
    with PhysicsWorld(cfg.physics) as world:
        for i in range(10):
            s, st, _ = draw_scene(cfg, BANKS, i, lambda x: world.simulate(x, cfg.scene.area)[0])
            occ = [(k, o) for k, o in enumerate(s.objects) if o.anchor is not None]
            assert len(occ) == 2 and all(s.objects[o.anchor].labelled and not o.labelled for _, o in occ)
            pos = {o.index: np.array(o.position) for o in st.objects}
            for k, o in occ:
                below = s.objects[o.anchor]
                r = assets.resolve(below.asset).radius * below.scale
                assert np.hypot(*o.position[:2]) < 2 * r  # the start offset from the anchor's settled position
                if k in pos and o.anchor in pos:
                    near.append(np.hypot(*(pos[k][:2] - pos[o.anchor][:2])) < r)
    assert np.mean(near) > 0.4, np.mean(near)  # most stay on (or against) their object


def test_knobs_at_zero_draw_exactly_what_no_knobs_draw():
    """A switched-off knob consumes no random draw: existing datasets keep their labels."""
    zero = cfg_of()
    absent = cfg_of("~scene.cluster", "~scene.face_balance", "~randomization.occluders", "scene.tray.wall_bias=0")
    for i in range(30):
        rng_a, rng_b = np.random.default_rng(i), np.random.default_rng(i)
        assert sample_scene(zero.scene, zero.randomization, BANKS, rng_a) == sample_scene(absent.scene, absent.randomization, BANKS, rng_b)
        assert sample_view(zero.scene, zero.randomization, 64, 64, rng_a) == sample_view(absent.scene, absent.randomization, 64, 64, rng_b)


# ---------------------------------------------------------------------------- views


def touches_border(box, w, h) -> bool:
    x, y, bw, bh = box
    return x <= 0.5 or y <= 0.5 or x + bw >= w - 0.5 or y + bh >= h - 0.5


def test_truncation_cuts_objects_at_the_border_with_exact_labels(tmp_path):
    W = H = 160
    common = ["n_images=6", f"width={W}", f"height={H}", "randomization.sensor.enabled=false"]
    on = json.loads((render_dataset(small_config(tmp_path, *common, "scene.camera.truncation_probability=1", name="on"), **QUIET)
                     / "annotations.json").read_text())
    off = json.loads((render_dataset(small_config(tmp_path, *common, name="off"), **QUIET) / "annotations.json").read_text())
    cut = [a for a in on["annotations"] if touches_border(a["bbox"], W, H)]
    assert len({a["image_id"] for a in cut}) >= 5  # (nearly) every image has an object cut by the frame
    assert len(cut) > sum(touches_border(a["bbox"], W, H) for a in off["annotations"])
    for a in cut:
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        assert a["bbox"] == [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]  # clipped
        assert a["area"] == int(m.sum()) and a["truncated"] and 0 < a["visible_fraction"] < 1


def test_extreme_light_leaves_the_usual_ranges():
    cfg = cfg_of("randomization.light.extreme_probability=1")
    usual = cfg_of()
    lights = [sample_view(cfg.scene, cfg.randomization, 64, 64, np.random.default_rng(i)) for i in range(60)]
    kinds = {"dark" if v.light.ambient < 0.3 else "bright" if v.light.ambient > 0.8 else "glare" if v.light.specular >= 0.6 else "?"
             for v in lights}
    assert kinds == {"dark", "bright", "glare"}
    base = [sample_view(usual.scene, usual.randomization, 64, 64, np.random.default_rng(i)) for i in range(60)]
    dark = [(v.sensor.brightness, b.sensor.brightness) for v, b in zip(lights, base) if v.light.ambient < 0.3]
    assert all(x < y for x, y in dark)  # exposure follows the light (EGL ignores the light coefficients)


# ---------------------------------------------------------------------------- determinism and config


def test_all_knobs_on_same_labels_with_one_or_two_workers(tmp_path):
    common = ["n_images=6", "width=160", "height=160", *ALL_ON]
    one = render_dataset(small_config(tmp_path, *common, "workers=1", name="w1"), **QUIET)
    two = render_dataset(small_config(tmp_path, *common, "workers=2", name="w2"), **QUIET)
    assert (one / "annotations.json").read_bytes() == (two / "annotations.json").read_bytes()
    doc = json.loads((one / "annotations.json").read_text())
    assert len(doc["annotations"]) > 12
    for im in doc["images"]:
        assert (one / im["file_name"]).read_bytes() == (two / im["file_name"]).read_bytes()


@pytest.mark.parametrize("overrides,match", [
    (["scene.cluster.probability=1.5"], r"scene\.cluster\.probability must be a number in \[0, 1\]"),
    (["+scene.cluster.radius=0.02"], r"unknown key `scene\.cluster\.radius`"),
    (["scene.cluster.size=[0,2]"], r"scene\.cluster\.size must be an integer or a range"),
    (["scene.face_balance.weights=[1,1,1]"], r"scene\.face_balance\.weights must be a list of 6 numbers"),
    (["scene.face_balance.weights=[0,0,0,0,0,0]"], r"at least one > 0"),
    (["scene=custom", "+scene.face_balance={probability: 1}"], r"scene\.face_balance needs dice"),
    (["scene=custom", "scene.objects.box.weight=-1"], r"scene\.objects\.box\.weight must be a number >= 0"),
    (["scene=custom", "scene.objects.box.weight=0"], r"every scene\.objects\.\*\.weight is 0"),
    (["scene=custom", "scene.objects_total=[1,99]"], r"scene\.max_objects is 40"),
    (["scene=custom", "+scene.distractors.0.weight=2"], r"weights balance labelled categories only"),
    (["scene.tray.wall_bias=2"], r"scene\.tray\.wall_bias must be a number in \[0, 1\]"),
    (["scene.camera.truncation_probability=-0.1"], r"truncation_probability must be a number in \[0, 1\]"),
    (["randomization.light.extreme_probability=true"], r"extreme_probability must be a number"),
    (["randomization.occluders.probability=1", "scene.distractors=null"], r"randomization\.occluders .* scene\.distractors"),
    (["+randomization.occluders.counts=2"], r"unknown key `randomization\.occluders\.counts`\. Did you mean `count`"),
])
def test_bad_knobs_are_refused_in_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        cfg_of(*overrides)
    assert "\n" not in str(e.value)


def test_knob_defaults_keep_todays_behaviour():
    for scene in ("dice", "custom", "tabletop"):
        s = cfg_of(f"scene={scene}").scene
        assert s.objects_total is None and all(g.weight == 1 for g in s.objects)
        assert s.cluster.probability == 0 and s.camera.truncation_probability == 0
        assert s.face_balance is None or s.face_balance.probability == 0
        assert s.tray is None or s.tray.wall_bias == 0
    r = cfg_of().randomization
    assert r.occluders.probability == 0 and r.light.extreme_probability == 0
    assert math.isclose(sum(cfg_of().scene.face_balance.weights), 6)
