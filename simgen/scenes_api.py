"""Find the small Python that a scene spec names (``module:function`` inside ``scenes/``)."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError
from .types import PlacedObject


def scene_ref(ref: str, what: str) -> Callable:
    module, _, func = ref.partition(":")
    if not func:
        raise ConfigError(f"{what} `{ref}` must look like `module:function` (a function in scenes/<module>.py).")
    try:
        mod = importlib.import_module(f"simgen.scenes.{module}")
    except ModuleNotFoundError:
        known = sorted(p.stem for p in Path(__file__).resolve().parent.parent.joinpath("scenes").glob("*.py") if p.stem != "__init__")
        raise ConfigError(f"{what} `{ref}`: there is no scenes/{module}.py; known modules: {', '.join(known)}.") from None
    fn = getattr(mod, func, None)
    if fn is None:
        raise ConfigError(f"{what} `{ref}`: scenes/{module}.py has no function `{func}`.")
    return fn


def category_label(obj: PlacedObject) -> str | None:
    """The default labeler: an object's category is its group's category."""
    return obj.category


def labeler(ref: str) -> Callable[[PlacedObject], str | None]:
    return category_label if ref == "category" else scene_ref(ref, "scene.labeler")
