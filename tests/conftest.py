"""Shared fixtures: compose the real Hydra config (as the CLI does) and shrink it for fast tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Import torchvision's ops (and through them torch._dynamo and triton) before any test loads PyBullet's
# EGL plugin into this process: importing triton after Mesa's EGL is loaded segfaults (seen when a
# subset of tests ran EGL first). The full suite happened to import them first at collection.
import torchvision.ops  # noqa: E402,F401

import simgen

SHARED = Path(os.environ.get("SIMGEN_SHARED", Path(simgen.__file__).resolve().parents[2] / "shared"))
HOLDOUT = SHARED / "holdouts" / "dice-real-50"


def compose_dict(config_name: str = "render", overrides: list[str] | None = None) -> dict:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("simgen.conf", version_base="1.3"):
        cfg = compose(config_name, overrides=overrides or [])
    d = OmegaConf.to_container(cfg, resolve=True)
    d.pop("hydra", None)
    return d


def small_config(tmp_path: Path, *overrides: str, name: str = "ds"):
    """A real composed config, shrunk to a few small images."""
    from simgen.config import render_config

    # TinyRenderer unless a test asks: the default `auto` picks by a speed probe, and pixel-level tests need one renderer
    base = [f"out={tmp_path / name}", "n_images=3", "width=128", "height=128", "workers=1", "progress=false", "renderer=tiny"]
    return render_config(compose_dict("render", base + list(overrides)))


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory):
    # Keep generated meshes/textures out of the user's home during tests.
    os.environ.setdefault("SIMGEN_CACHE", str(tmp_path_factory.mktemp("simgen-cache")))


@pytest.fixture
def holdout() -> Path:
    if not (HOLDOUT / "annotations.json").exists():
        pytest.skip(f"real holdout not found at {HOLDOUT} (set SIMGEN_SHARED to the folder that holds holdouts/)")
    return HOLDOUT
