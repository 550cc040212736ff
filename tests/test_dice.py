"""Dice labels come from the settled pose: check top_face on known orientations and in a render."""
import math

import numpy as np
import pybullet as p
import pytest

from simgen.sample import random_quaternion
from simgen.scenes.dice import top_face


@pytest.mark.parametrize("euler,value", [((0, 0, 0), 1), ((math.pi, 0, 0), 6), ((0, -math.pi / 2, 0), 2), ((0, math.pi / 2, 0), 5),
                                         ((math.pi / 2, 0, 0), 3), ((-math.pi / 2, 0, 0), 4), ((0, 0, 1.0), 1)])
def test_top_face_known_orientations(euler, value):
    assert top_face(p.getQuaternionFromEuler(euler)) == value


def test_opposite_faces_sum_to_seven():
    rng = np.random.default_rng(0)
    flip = p.getQuaternionFromEuler((math.pi, 0, 0))
    for _ in range(50):
        q = random_quaternion(rng)
        _, q2 = p.multiplyTransforms((0, 0, 0), flip, (0, 0, 0), q)  # flip the world upside down
        assert top_face(q) + top_face(q2) == 7


def count_pips(crop: np.ndarray) -> int:
    """Count dark blobs on a white die face (a real image measurement, independent of the labeler)."""
    import cv2

    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    _, bw = cv2.threshold(grey, 100, 255, cv2.THRESH_BINARY_INV)
    n, _, stats, _ = cv2.connectedComponentsWithStats(bw)
    return sum(1 for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= 8)


@pytest.mark.parametrize("value", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("mesh", ["die", "die_round"])
def test_rendered_top_face_shows_the_labelled_pips(tmp_path, value, mesh):
    """Render one white die with black pips lying on face `value`, straight from above, and count pips."""
    from simgen.config import render_config
    from simgen.pipeline import Generator
    from simgen.scenes.dice import NAMES, atlas
    from simgen.textures import save_png
    from simgen.types import ObjectSample, PlacedObject, SceneState

    from .conftest import compose_dict

    d = compose_dict("render", [f"out={tmp_path}", "randomization=none", "width=200", "height=200", "scene.camera.tilt_deg=0",
                                "scene.camera.distance=0.12", "scene.camera.target_jitter=0", "scene.camera.roll_deg=0"])
    cfg = render_config(d)
    up = {1: (0, 0, 0), 6: (math.pi, 0, 0), 2: (0, -math.pi / 2, 0), 5: (0, math.pi / 2, 0), 3: (math.pi / 2, 0, 0), 4: (-math.pi / 2, 0, 0)}
    q = p.getQuaternionFromEuler(up[value])
    with Generator(cfg) as g:
        tex = save_png(atlas(np.array([250.0, 250, 250]), np.array([0.0, 0, 0]), np.random.default_rng(0)), stem="testdie")
        g.world.textures["dice/test"] = tex
        s = ObjectSample(mesh, "die", 0.03, (0, 0, 0.015), q, (1, 1, 1, 1), "dice/test")
        obj = PlacedObject(0, s, (0, 0, 0.015), q, NAMES[top_face(q)])
        state = SceneState(objects=(obj,), sim_steps=0, settled=True, n_dropped=0, ground_rgba=(0.5, 0.5, 0.5, 1))
        from simgen.sample import sample_view

        view = sample_view(cfg.scene, cfg.randomization, 200, 200, np.random.default_rng(0))
        g.world.stage(state)
        frame = g.renderer.render(g.world, view.camera, view.light)
    ys, xs = np.nonzero(frame.instance == 0)
    crop = frame.rgb[ys.min() + 3:ys.max() - 2, xs.min() + 3:xs.max() - 2]
    assert obj.category == NAMES[value]
    assert count_pips(crop) == value


def test_dice_bank_covers_marbled_bodies_and_painted_pips_that_stand_out():
    """The bank's looks: about a third marbled (two colours swirled), some pips painted (not white or black), and
    the pips legible: each differs clearly from the body right around it, on nearly every face of every look."""
    import cv2

    from simgen.scenes.dice import PIPS, textures

    bank = textures(0)
    assert len(bank) == 192
    marbled = painted = 0
    contrast = []
    for path in bank.values():
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32)
        cell = img.shape[0] // 2
        yy, xx = (np.mgrid[0:cell, 0:cell] + 0.5) / cell
        body_spread = []
        pip_colours = []
        for v, spots in PIPS.items():
            face = img[(v - 1) // 3 * cell:((v - 1) // 3 + 1) * cell, (v - 1) % 3 * cell:((v - 1) % 3 + 1) * cell]
            centre = (np.abs(xx - 0.5) < 0.3) & (np.abs(yy - 0.5) < 0.3)
            away = np.ones_like(centre)
            for u, w in spots:
                d = np.hypot(xx - u, yy - (1 - w))
                away &= d > 0.13
                inner, ring = face[d < 0.05], face[(d > 0.12) & (d < 0.16)]
                pip_colours.append(inner.mean(0))
                contrast.append(np.abs(inner.mean(0) - np.median(ring, 0)).max())
            body_spread.append(face[centre & away].std(0).max())
        marbled += float(np.median(body_spread)) > 25
        pip = np.mean(pip_colours, 0)
        painted += float(pip.max() - pip.min()) > 60  # a hue, not white, grey or black
    assert 0.2 * len(bank) <= marbled <= 0.5 * len(bank), marbled
    assert painted >= 0.1 * len(bank), painted
    assert np.mean(np.array(contrast) > 40) > 0.9, np.mean(np.array(contrast) > 40)


def test_die_finishes_fade_show_far_pips_faintly_and_glint():
    """Each finish does what it says on a plain blue die with white pips: a fade changes the body towards its colour;
    translucent plastic shows the far face's pips (mirrored) fainter than the face's own; a glint brightens a patch."""
    from simgen.scenes.dice import PIPS, Finish, atlas

    body, pip, cell = np.array([40.0, 60, 200]), np.array([245.0, 245, 245]), 64

    def draw(finish: Finish) -> np.ndarray:
        return atlas(body, pip, np.random.default_rng(1), cell=cell, finish=finish,
                     finish_rng=np.random.default_rng(2)).astype(np.float32)

    plain = draw(Finish())
    assert np.array_equal(plain, draw(Finish(glint=0.0, ghost=0.0)))  # off means off
    faded = draw(Finish(fade=np.array([250.0, 200, 20])))
    assert np.abs(faded - plain).max(axis=2).mean() > 30  # a large part of each face changed colour

    ghosted = draw(Finish(ghost=0.3))
    yy, xx = (np.mgrid[0:cell, 0:cell] + 0.5) / cell
    face1 = (slice(0, cell), slice(0, cell))  # the face with one pip: the six of the far face show through
    own = np.hypot(xx - 0.5, yy - 0.5) < 0.05
    far = np.zeros_like(own)
    for u, w in PIPS[6]:
        far |= np.hypot(xx - (1 - u), yy - (1 - w)) < 0.04
    lift_far = (ghosted[face1][far] - plain[face1][far]).mean(axis=1).mean()
    assert 15 < lift_far < 0.5 * (plain[face1][own].mean() - plain[face1][far].mean())
    assert np.abs(ghosted[face1][own] - plain[face1][own]).max() <= 2  # the face's own pip (the six has none there) as it was

    glinted = draw(Finish(glint=1.0))
    diff = glinted - plain
    brighter = (diff.mean(axis=2) > 40) & (diff.min(axis=2) >= 0)  # towards white in every channel
    for v in range(1, 7):  # every face got one, small
        r, c = (v - 1) // 3, (v - 1) % 3
        share = brighter[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell].mean()
        assert 0.002 < share < 0.2, (v, share)


@pytest.mark.parametrize("spread,pip_scale", [(0.88, 1.2), (1.12, 1.2), (0.88, 0.85), (1.0, 1.0)])
def test_pip_layouts_keep_every_pip_separate_and_inside_its_face(spread, pip_scale):
    """Pip size and spacing vary per look (dice makers differ); at the bank's extremes every face still shows exactly
    its number of separate pips, none reaching the face's shaded border."""
    import cv2

    from simgen.scenes.dice import atlas

    cell = 128
    img = atlas(np.array([250.0, 250, 250]), np.array([0.0, 0, 0]), np.random.default_rng(3), cell=cell, spread=spread,
                pip_scale=pip_scale)
    for v in range(1, 7):
        r, c = (v - 1) // 3, (v - 1) % 3
        face = img[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell].min(axis=2)
        dark = (face < 100).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(dark)
        assert n - 1 == v, (v, n - 1)
        x, y, w, h = stats[1:, 0], stats[1:, 1], stats[1:, 2], stats[1:, 3]
        margin = 0.1 * cell
        assert (x > margin).all() and (y > margin).all() and (x + w < cell - margin).all() and (y + h < cell - margin).all()


def test_bank_size_is_a_config_key_and_a_larger_bank_keeps_the_smaller_ones_looks(tmp_path):
    """`scene.texture_banks.dice.count` sets how many looks the bank draws; look i is the same whatever the count
    (each has its own random stream), so a larger bank only adds looks. A count on a bank that cannot take one is
    refused up front."""
    import hashlib

    from simgen.config import render_config
    from simgen.errors import ConfigError
    from simgen.pipeline import texture_banks
    from simgen.run import validate

    from .conftest import compose_dict

    def bank(count: int) -> dict[str, str]:
        cfg = render_config(compose_dict("render", [f"out={tmp_path}", f"scene.texture_banks.dice.count={count}"]))
        assert cfg.scene.texture_banks == (("dice", "dice:textures", count),)
        return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in texture_banks(cfg)["dice"].items()}

    small, large = bank(5), bank(12)
    assert len(small) == 5 and len(large) == 12
    assert all(large[k] == h for k, h in small.items())
    cfg = render_config(compose_dict("render", [f"out={tmp_path}", "scene=tabletop", "+scene.texture_banks.x.ref=dice:luma",
                                                "+scene.texture_banks.x.count=3"]))
    with pytest.raises(ConfigError, match="takes no `n`"):
        validate(cfg)


def test_scene_bank_is_drawn_once_per_cache_and_redrawn_when_a_file_is_gone(tmp_path, monkeypatch):
    """Every process of a run needs the bank; after the first draw the others read an index instead of drawing the
    192 looks again. The index is used only while each file it names exists, and a torn index is drawn again."""
    from simgen.pipeline import scene_bank
    from simgen.scenes import dice

    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path))
    calls = []

    def bank(seed: int, n: int = 4):
        calls.append(n)
        return dice.textures(seed, n=n)

    bank.__module__, bank.__qualname__ = dice.__name__, "textures_for_test"  # hashed with scenes/dice.py's source
    first = scene_bank(bank, 0, 3)
    assert len(first) == 3 and calls == [3]
    assert scene_bank(bank, 0, 3) == first and calls == [3]  # from the index, nothing drawn
    assert len(scene_bank(bank, 0, 5)) == 5 and calls == [3, 5]  # another count is another bank
    next(iter(first.values())).unlink()  # a cache cleaned by hand: draw again
    assert scene_bank(bank, 0, 3) == first and calls == [3, 5, 3]
    indexes = sorted(tmp_path.glob("textures/scene-bank-*.json"))
    assert len(indexes) == 2
    for f in indexes:
        f.write_text("{torn")
    assert scene_bank(bank, 0, 3) == first and calls == [3, 5, 3, 3]
    assert sum(f.read_text().startswith('{"') for f in indexes) == 1  # the count-3 index, rewritten whole
