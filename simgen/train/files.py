"""Files that `simgen train` and `simgen utility` write, written so that a fault never leaves half of one.

Every file (checkpoints, metrics, predictions, reports, plots) is written under a temporary name in its
folder, flushed to disk and renamed over the old one; a write that fails (a full disk, a kill) removes
its temporary file, so the old file (say the last periodic checkpoint) stays whole for the rerun.

A full disk is the user's to fix, not a bug: :func:`disk_full_guard` turns it into the render's one line
(:func:`simgen.run.disk_full`: the folder, its free space, "rerun the same command: it resumes"), exit
code 1. The rerun does resume: a run whose ``metrics.json`` is written is read back, a run killed
mid-training continues from its periodic checkpoint, and a run that finished training but could not write
its scores loads its final checkpoint instead of training again (:func:`simgen.train.engine.finished`).
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ..run import DISK_FULL, disk_full


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_save(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write(f)`` into a temporary file next to ``path``, fsync, rename over ``path``. On any failure the
    temporary file is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_bytes(path: Path, data: bytes) -> None:
    atomic_save(path, lambda f: f.write(data))


def atomic_text(path: Path, text: str) -> None:
    atomic_bytes(path, text.encode())


def save_figure(fig, path: Path) -> None:
    """A matplotlib figure as a PNG, atomically (rendered in memory first)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_bytes(path, buf.getvalue())


def remove_own_temporaries(folder: Path) -> None:
    """Temporary files this process left in ``folder`` and below (a writer outside this module cut short)."""
    pid = os.getpid()
    with contextlib.suppress(OSError):
        for p in folder.rglob(f".*.{pid}.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def disk_full_guard(folder: Path) -> Iterator[None]:
    """A full disk (ENOSPC, EDQUOT) inside the block becomes one line naming ``folder`` and its free space
    (a :class:`~simgen.errors.RenderError`, exit code 1); other errors pass unchanged. Nest freely: the
    innermost guard, the most specific folder, names it."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        remove_own_temporaries(folder)
        raise disk_full(folder, e) from None
