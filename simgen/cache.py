"""Where simgen keeps what one run builds and later runs on the same machine read back (texture banks, BMP copies of
textures, visibility tables, renderer answers), and how it writes there. Kept free of heavy imports: the EGL probe
reads it before numpy and OpenCV are loaded."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = Path(os.environ.get("SIMGEN_CACHE", Path.home() / ".cache" / "simgen"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: concurrent writers of the same bytes (workers, runs) never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
