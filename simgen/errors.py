"""One small exception hierarchy. Every message says what was wrong and how to fix it.

The CLI prints ``str(err)`` as a single line and exits non-zero; nothing below the CLI prints.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class SimgenError(Exception):
    """Base class: a user-facing problem with a one-line explanation."""

    exit_code = 2


class ConfigError(SimgenError):
    """An override or config value that cannot work."""


class AssetError(SimgenError):
    """A mesh, URDF, texture or asset name that cannot be found or loaded."""


class SceneError(SimgenError):
    """One drawn scene cannot be used (placement or physics failed); the pipeline redraws it (bounded)."""


class PlacementError(SceneError):
    """Objects could not be placed; the pipeline redraws the scene from a derived seed (bounded)."""


class SimulationError(SceneError):
    """Physics blew up (non-finite or runaway poses); the pipeline redraws the scene from a derived seed."""


class RendererUnavailable(SimgenError):
    """The requested renderer cannot run on this machine."""


class RenderError(SimgenError):
    """A render that cannot go on (its workers keep dying); rerunning resumes it."""

    exit_code = 1


class DatasetError(SimgenError):
    """A dataset folder or annotation file that is missing, corrupt, or unsafe."""


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Suffix like " did you mean `mug`?" or a list of the options when nothing is close."""
    options = sorted(options)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f" Did you mean `{close[0]}`? Known: {', '.join(options)}."
    return f" Known: {', '.join(options)}."
