"""Realism: photographic ground textures, a ground that fills every view, lens and sensor effects."""
import dataclasses

import cv2
import numpy as np
import pytest

from simgen import config, textures
from simgen.dists import dist
from simgen.errors import ConfigError
from simgen.sample import sample_sensor
from simgen.sensor import apply_sensor, disc_kernel, motion_kernel
from simgen.textures import DEFAULT_TILE_M, GRAPHIC_KINDS, KINDS, PHOTO_KINDS, TILE_M, make_texture, tile_size
from simgen.types import Sensor

from .conftest import compose_dict, small_config


def texture(kind: str, seed: int, size: int = 96, tileable: bool = True) -> np.ndarray:
    return make_texture(kind, np.random.default_rng(seed), size, tileable)


# ----------------------------------------------------------------------------------------- textures
@pytest.mark.parametrize("kind", KINDS)
def test_texture_kind_deterministic_and_seeded(kind):
    a, b, c = texture(kind, 1), texture(kind, 1), texture(kind, 2)
    assert a.dtype == np.uint8 and a.shape == (96, 96, 3)
    assert np.array_equal(a, b), "the same seed must draw the same texture"
    assert not np.array_equal(a, c), "another seed must draw another texture"


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "solid"])
def test_ground_textures_tile_without_seams(kind):
    """Repeated on the ground, a tile's last column meets its first: that step must be no bigger than
    the steps between neighbouring columns (and rows) inside the tile."""
    for seed in range(3):
        img = texture(kind, seed, 128).astype(float)
        for a in (img, img.transpose(1, 0, 2)):
            assert seam_step(a) <= 1.1 * inner_steps(a).max() + 1.0, (kind, seed)


def seam_step(a: np.ndarray) -> float:
    return float(np.abs(a[:, -1] - a[:, 0]).mean())


def inner_steps(a: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(a, axis=1)).mean(axis=(0, 2))


def test_untileable_stripes_do_show_a_seam():
    """The seam check above can fail: stripes drawn for objects (not tileable) break at the tile edge."""
    seams = [seam_step(a) > 1.1 * inner_steps(a).max() + 1.0
             for a in (texture("stripes", seed, 128, tileable=False).astype(float) for seed in range(6))]
    assert any(seams)


def saturation(img: np.ndarray) -> float:
    return float(cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1].mean() / 255)


def test_photographic_palettes_are_paler_than_graphic_ones():
    draws = {k: [saturation(texture(k, s, 32)) for s in range(24)] for k in ("felt", "paper", "concrete", "marble", "noise")}
    assert max(draws["paper"]) < 0.45 and np.median(draws["paper"]) < 0.06
    assert np.median(draws["felt"]) < 0.15 and np.median(draws["concrete"]) < 0.1 and np.median(draws["marble"]) < 0.1
    assert np.median(draws["felt"]) < np.median(draws["noise"]) / 2
    assert max(draws["felt"]) > 0.25, "felt keeps a coloured minority (coverage)"


def test_photographic_textures_have_fine_structure():
    """Not flat: felt, paper, fabric, wood, concrete and marble all vary a little, paper least."""
    std = {k: float(texture(k, 0, 128).astype(float).std(axis=(0, 1)).mean()) for k in PHOTO_KINDS}
    assert all(v > 0.5 for v in std.values()), std
    assert std["paper"] < std["wood"] and std["paper"] < std["fabric"]


def test_tile_sizes_and_kinds_agree_with_config():
    assert tile_size("ground/felt/3") == TILE_M["felt"] and tile_size("felt/0") == TILE_M["felt"]
    assert tile_size("ground/image/0") == DEFAULT_TILE_M == tile_size("ground/stripes/1") and tile_size(None) == DEFAULT_TILE_M
    assert config.TEXTURE_KINDS == KINDS and set(PHOTO_KINDS) | set(GRAPHIC_KINDS) == set(KINDS)


def test_bank_is_cached_per_entry_and_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMGEN_CACHE", str(tmp_path))
    a = textures.build_bank(("felt", "noise"), 2, seed=5, size=64, prefix="ground/", tileable=True)
    b = textures.build_bank(("felt", "noise"), 2, seed=5, size=64, prefix="ground/", tileable=True)
    c = textures.build_bank(("felt", "noise"), 2, seed=6, size=64, prefix="ground/", tileable=True)
    assert a.files == b.files and set(a.files) == {"ground/felt/0", "ground/felt/1", "ground/noise/0", "ground/noise/1"}
    assert a.files["ground/felt/0"] != c.files["ground/felt/0"]
    expected = make_texture("felt", np.random.default_rng(textures.texture_seed(5, "felt", 0, 64, True)), 64, True)
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(a.files["ground/felt/0"])), cv2.COLOR_BGR2RGB), expected)
    # Object banks keep the seeds (so the textures) they always had; tileable ground variants get their own.
    assert textures.texture_seed(0, "noise", 1, 128).entropy == [0, 1, 1, 128]
    assert textures.texture_seed(0, "noise", 1, 128, tileable=True).entropy == [0, 1, 1, 128, 1]
    assert not np.array_equal(texture("noise", 3, 64, tileable=False), texture("noise", 3, 64, tileable=True))


# ------------------------------------------------------------------------------------------- sensor
def scene_like(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(30, 225, (12, 16, 3), dtype=np.uint8), (160, 120), interpolation=cv2.INTER_CUBIC)


EFFECTS = {
    "vignette": Sensor(vignette=0.3),
    "defocus": Sensor(defocus_radius=2.0),
    "motion": Sensor(motion_length=5.0, motion_angle=30.0),
    "grey noise": Sensor(noise_std=3.0, noise_chroma=0.0),
    "mixed noise": Sensor(noise_std=3.0, noise_chroma=0.5),
}


@pytest.mark.parametrize("name", EFFECTS)
def test_effect_keeps_shape_changes_pixels_and_is_deterministic(name):
    img = scene_like()
    out = apply_sensor(img, EFFECTS[name], np.random.default_rng(4))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out != img).mean() > 0.2
    assert np.array_equal(out, apply_sensor(img, EFFECTS[name], np.random.default_rng(4)))
    assert np.array_equal(img, scene_like()), "the input is never modified in place"


def test_vignette_darkens_corners_only():
    out = apply_sensor(np.full((60, 80, 3), 200, np.uint8), Sensor(vignette=0.3), np.random.default_rng(0)).astype(int)
    assert abs(out[30, 40] - 200).max() <= 1 and abs(out[0, 0] - 140).max() <= 1 and out[0, 40, 0] > out[0, 0, 0]


def test_blur_kernels_spread_a_point_as_their_lens_would():
    dot = np.zeros((41, 41, 3), np.uint8)
    dot[20, 20] = 255
    disc = apply_sensor(dot, Sensor(defocus_radius=4.0), np.random.default_rng(0))[..., 0] > 0
    ys, xs = np.nonzero(disc)
    assert ys.min() == xs.min() == 16 and ys.max() == xs.max() == 24  # radius 4
    assert disc[20 - 3, 20 - 3] and not disc[16, 16]  # round, not square
    streak = apply_sensor(dot, Sensor(motion_length=8.0, motion_angle=0.0), np.random.default_rng(0))[..., 0] > 0
    ys, xs = np.nonzero(streak)
    assert xs.max() - xs.min() >= 8 and ys.max() - ys.min() <= 2  # horizontal
    for k in (disc_kernel(2.3), motion_kernel(5.0, 37.0)):
        n = k.shape[0]
        yy, xx = np.mgrid[0:n, 0:n]
        assert abs(k.sum() - 1) < 1e-5 and abs((k * xx).sum() - (n - 1) / 2) < 1e-3 and abs((k * yy).sum() - (n - 1) / 2) < 1e-3


def test_grey_noise_is_the_same_in_every_channel():
    flat = np.full((64, 64, 3), 128, np.uint8)
    grey = apply_sensor(flat, Sensor(noise_std=4.0, noise_chroma=0.0), np.random.default_rng(1)).astype(float)
    colour = apply_sensor(flat, Sensor(noise_std=4.0, noise_chroma=1.0), np.random.default_rng(1)).astype(float)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and 3.0 < grey.std() < 5.0
    assert (colour[..., 0] - colour[..., 1]).std() > 3.0 and 3.0 < colour.std() < 5.0


def randomization(**sensor_changes) -> config.RandomizationSpec:
    r = config.randomization_spec(compose_dict("render")["randomization"])
    return dataclasses.replace(r, sensor=dataclasses.replace(r.sensor, **sensor_changes))


def test_sampled_lens_effects_follow_their_probabilities():
    off = randomization(vignette_probability=0.0, defocus_probability=0.0, motion_blur_probability=0.0)
    on = randomization(vignette_probability=1.0, defocus_probability=1.0, motion_blur_probability=1.0,
                       vignette=dist([0.1, 0.2]), defocus_radius=dist([1.0, 2.0]), motion_blur_length=dist([3.0, 4.0]))
    for seed in range(20):
        s = sample_sensor(off, np.random.default_rng(seed))
        assert s.vignette == s.defocus_radius == s.motion_length == 0.0
        t = sample_sensor(on, np.random.default_rng(seed))
        assert 0.1 <= t.vignette <= 0.2 and 1.0 <= t.defocus_radius <= 2.0 and 3.0 <= t.motion_length <= 4.0
        assert 0.0 <= t.motion_angle <= 180.0 and 0.0 <= t.noise_chroma <= 1.0
        assert t == sample_sensor(on, np.random.default_rng(seed))


def test_sensor_effects_change_pixels_never_labels(tmp_path):
    from simgen.pipeline import Generator

    lens = ["randomization.sensor.vignette_probability=1", "randomization.sensor.defocus_probability=1",
            "randomization.sensor.motion_blur_probability=1"]
    with Generator(small_config(tmp_path, *lens)) as g:
        on = [g.generate(i) for i in range(2)]
    with Generator(small_config(tmp_path, "randomization.sensor.enabled=false")) as g:
        off = [g.generate(i) for i in range(2)]
    assert [[i.bbox_xyxy for i in r.instances] for r in on] == [[i.bbox_xyxy for i in r.instances] for r in off]
    assert all(not np.array_equal(a.rgb, b.rgb) for a, b in zip(on, off))


# --------------------------------------------------------------------------------------- the ground
def ground_coverage(tmp_path, *overrides: str, n: int = 4) -> list[tuple[float, float]]:
    """(share of pixels with nothing drawn, share showing neither an object, the tray nor the ground)."""
    from simgen.pipeline import Generator, image_seeds
    from simgen.sample import sample_view

    cfg = small_config(tmp_path, "width=48", "height=48", *overrides)
    out = []
    with Generator(cfg) as g:
        for i in range(n):
            state, _ = g.scene(i)
            view = sample_view(cfg.scene, cfg.randomization, cfg.width, cfg.height, np.random.default_rng(image_seeds(cfg.seed, i)[1]))
            g.world.stage(state)
            g.world.frame(view.camera)
            _, _, seg = g.renderer.raw(g.world, view.camera, view.light)
            uid = np.where(seg >= 0, seg & 0xFFFFFF, -1)
            known = np.isin(uid, [*g.world.ground_ids, *g.world.active])
            out.append((float((seg < 0).mean()), float((~known).mean())))
    return out


@pytest.mark.parametrize("renderer", ["tiny", "egl"])
def test_ground_fills_steep_views(tmp_path, renderer):
    """Tilted 60-70 degrees the camera sees above the horizon: the backdrop catches every such ray."""
    if renderer == "egl":
        from .test_render import egl_or_skip

        egl_or_skip()
    cover = ground_coverage(tmp_path, "scene=custom", "scene.camera.tilt_deg=[60,70]", f"renderer={renderer}")
    assert all(nothing == 0.0 and other == 0.0 for nothing, other in cover), cover


def test_a_bare_plane_would_not_fill_them(tmp_path, monkeypatch):
    """The check above can fail: without the backdrop the same views show empty background."""
    from simgen import render

    monkeypatch.setattr(render, "backdrop_for", lambda cam, floor=None: render.Box(half=0.01, height=0.0, tile=1.0))
    cover = ground_coverage(tmp_path, "scene=custom", "scene.camera.tilt_deg=[60,70]")
    assert max(nothing for nothing, _ in cover) > 0.05


def test_floor_texture_is_fixed_to_the_world(tmp_path):
    from simgen.render import backdrop_for, floor_for
    from simgen.sample import look_at_camera

    cfg = small_config(tmp_path, "scene=custom")
    cams = [look_at_camera(cfg.scene.camera, 64, 64, np.random.default_rng(s)) for s in range(5)]
    floors = {floor_for(c, "ground/felt/0") for c in cams}
    assert len(floors) == 1  # one mesh for every view: pooled, and its texture never slides under the objects
    (floor,) = floors
    assert floor.half >= cfg.scene.camera.far and abs(floor.half / floor.tile - round(floor.half / floor.tile)) < 1e-6
    box = backdrop_for(cams[0], floor)
    corner = np.hypot(np.sqrt(2) * box.half, box.height)
    assert corner < cfg.scene.camera.far  # every backdrop point lies inside the far plane of an eye at the floor
    # The backdrop brings a base of its own only where the floor does not reach under all of it.
    far_off = dataclasses.replace(cams[0], eye=(floor.half - 0.1, 0.0, 0.5), target=(floor.half - 0.1, 0.3, 0.0))
    assert not box.base and backdrop_for(far_off, floor).base


def test_tiny_renderer_draws_shadows(tmp_path):
    """TinyRenderer only shadows with a light distance inside the far plane (it used 10 m: no shadow ever)."""
    from simgen.pipeline import Generator, image_seeds
    from simgen.sample import sample_view

    cfg = small_config(tmp_path, "width=96", "height=96", "randomization.sensor.enabled=false")
    with Generator(cfg) as g:
        state, _ = g.scene(0)
        view = sample_view(cfg.scene, cfg.randomization, 96, 96, np.random.default_rng(image_seeds(cfg.seed, 0)[1]))
        g.world.stage(state)
        lit = [g.renderer.render(g.world, view.camera, dataclasses.replace(view.light, shadow=s)).rgb for s in (False, True)]
    changed = np.abs(lit[0].astype(int) - lit[1].astype(int)).sum(-1) > 0
    assert 0.002 < changed.mean() < 0.5 and (lit[1].astype(int) <= lit[0].astype(int)).all()


# ----------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("override, message", [
    ("randomization.sensor.vignette=[0.1,1.5]", "randomization.sensor.vignette must be"),
    ("randomization.sensor.vignette_probability=2", "randomization.sensor.vignette_probability must be a number in [0, 1]"),
    ("randomization.sensor.defocus_radius=[-1,2]", "randomization.sensor.defocus_radius must be"),
    ("randomization.sensor.motion_blur_length=[2,500]", "randomization.sensor.motion_blur_length must be"),
    ("randomization.sensor.motion_blur_probability=-0.1", "randomization.sensor.motion_blur_probability must be"),
    ("randomization.sensor.noise_chroma=[0,2]", "randomization.sensor.noise_chroma must be"),
    ("randomization.ground_kinds=[felt,velvet]", "randomization.ground_kinds must be a non-empty list drawn from solid"),
    ("randomization.ground_kinds=[]", "randomization.ground_kinds must be a non-empty list"),
    ("randomization.texture_kinds=[wood,plush]", "randomization.texture_kinds must be a non-empty list"),
    ("randomization.ground_saturation=[0,2]", "randomization.ground_saturation must be"),
])
def test_config_refuses_bad_realism_values_in_one_line(override, message):
    with pytest.raises(ConfigError) as e:
        config.render_config(compose_dict("render", ["out=/tmp/simgen-never-written", override]))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_default_config_reads_the_realism_keys():
    r = config.render_config(compose_dict("render", ["out=/tmp/simgen-never-written"])).randomization
    assert set(PHOTO_KINDS) <= set(r.ground_kinds) and set(GRAPHIC_KINDS) <= set(r.ground_kinds)  # broad coverage kept
    assert r.texture_kinds == GRAPHIC_KINDS  # objects keep their own kinds
    assert r.sensor.vignette_probability > 0 and r.sensor.defocus_probability > 0 and r.sensor.motion_blur_probability > 0
    assert r.ground_saturation.min == 0.0 and r.sensor.noise_std.min == 0.0  # still reach the old flat looks
    none = config.render_config(compose_dict("render", ["out=/tmp/simgen-never-written", "randomization=none"])).randomization
    assert sample_sensor(none, np.random.default_rng(0)) == Sensor()
