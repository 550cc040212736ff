"""Compose the real Hydra config with every option of every group and build the plain objects."""
import pytest

from simgen.cli import group_options
from simgen.config import render_config
from simgen.errors import ConfigError

from .conftest import compose_dict


@pytest.mark.parametrize("group", ["scene", "renderer", "randomization", "writer"])
def test_every_group_option_composes(group, tmp_path):
    options = group_options(group)
    assert options
    for opt in options:
        cfg = render_config(compose_dict("render", [f"{group}={opt}", f"out={tmp_path}"]))
        assert cfg.n_images > 0


def test_defaults_are_the_dice_scene():
    d = compose_dict("render")
    cfg = render_config(d)
    assert cfg.scene.name == "dice" and cfg.renderer == "auto" and cfg.width == cfg.height == 640
    assert str(cfg.out) == "datasets/dice" and cfg.workers >= 1
    assert cfg.scene.categories == ("one", "two", "three", "four", "five", "six")


@pytest.mark.parametrize("override,match", [("n_images=0", "n_images"), ("width=8", "width"), ("height=99999", "height"),
                                            ("shard.index=3", "shard"), ("views_per_scene=0", "views_per_scene"),
                                            ("labels.depth=exr", "labels.depth"), ("image_format=gif", "image_format"),
                                            ("scene.camera.near=0", "near"),
                                            # a reversed range names its key
                                            ("scene.camera.distance=[0.8,0.5]", r"^scene\.camera\.distance: range \[0\.8, 0\.5\] is reversed"),
                                            # counts past max_objects silently starved the last categories
                                            ("+scene.max_objects=10", r"allow 14 labelled objects .* would lose some of `die`")])
def test_impossible_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        render_config(compose_dict("render", [override]))


def test_launcher_configs_compose():
    from hydra import compose, initialize_config_module

    with initialize_config_module("simgen.conf", version_base="1.3"):
        cfg = compose("render", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
    assert "joblib" in cfg.hydra.launcher._target_.lower()


def test_workers_auto_counts_the_cores_a_container_grants(monkeypatch, tmp_path):
    """workers=auto is every core this process may use: the affinity mask, capped by a cgroup CPU quota (a container
    granted 2.5 CPUs on a 16-core host gets 3 workers, not 16 processes fighting over 2.5 CPUs)."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr("simgen.train.threads._cgroup_quota", lambda: None)
    assert render_config(compose_dict("render", [f"out={tmp_path}", "workers=auto"])).workers == 16
    monkeypatch.setattr("simgen.train.threads._cgroup_quota", lambda: 2.5)
    assert render_config(compose_dict("render", [f"out={tmp_path}", "workers=auto"])).workers == 3
    assert render_config(compose_dict("render", [f"out={tmp_path}", "workers=5"])).workers == 5


def test_documented_override_forms_need_no_plus():
    """README's `scene.camera.K=[fx,fy,cx,cy]` and docs/targeted.md's `scene.objects.<name>.weight=3` are plain
    overrides on every built-in scene: the keys are in the scene configs (null and 1 by default)."""
    from simgen.config import render_config

    for scene, name in (("dice", "die"), ("tabletop", "duck"), ("custom", "box")):
        cfg = render_config(compose_dict("render", [f"scene={scene}", "scene.camera.K=[500,500,320,240]",
                                                    f"scene.objects.{name}.weight=3"]))
        assert cfg.scene.camera.K is not None
        assert [g.weight for g in cfg.scene.objects if g.category == name or g.asset == name] == [3.0]


def test_an_object_larger_than_the_view_is_warned_about():
    """A URDF at its own size in a scene made for small objects: legal (the scene holds it), but its boxes would cover
    most of every image, so the run says so; the built-in scenes say nothing."""
    import pybullet_data

    from simgen.run import framing_warnings

    for scene in ("dice", "tabletop", "custom"):
        assert framing_warnings(render_config(compose_dict("render", [f"scene={scene}"]))) == []
    r2 = f"+scene.objects.r2={{asset: {pybullet_data.getDataPath()}/r2d2.urdf, count: [1, 2]}}"
    cfg = render_config(compose_dict("render", ["scene=custom", "~scene.objects.box", r2]))
    (w,) = framing_warnings(cfg)
    assert w.startswith("warning: scene.objects.r2:") and "more than half" in w and "lower its scale" in w
    small = render_config(compose_dict("render", ["scene=custom", "~scene.objects.box", r2.replace("count", "scale: 0.1, count")]))
    assert framing_warnings(small) == []
