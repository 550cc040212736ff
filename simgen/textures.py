"""Procedural textures (solid, noise, checker, stripes) and images from a folder, as a fixed bank.

Banks are drawn once from their own seed, so every worker and shard sees the same textures and a
scene only stores a key such as ``noise/3``. Files land in a content-addressed cache so that
concurrent workers write identical bytes (atomic rename) and PyBullet loads each one once.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import AssetError, ConfigError

KINDS = ("solid", "noise", "checker", "stripes")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def cache_dir() -> Path:
    root = Path(os.environ.get("SIMGEN_CACHE", Path.home() / ".cache" / "simgen"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def make_texture(kind: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """An RGB uint8 texture of one kind, drawn from ``rng``."""
    a, b = _color(rng), _color(rng)
    if kind == "solid":
        img = np.broadcast_to(a, (size, size, 3)).copy()
    elif kind == "noise":
        # Value noise: a few octaves of upsampled random grids, blended between two colours.
        t = np.zeros((size, size), np.float32)
        for octave, weight in ((4, 0.5), (16, 0.3), (64, 0.2)):
            grid = rng.random((octave, octave)).astype(np.float32)
            t += weight * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        t = np.clip(t, 0, 1)[..., None]
        img = a * t + b * (1 - t)
    elif kind == "checker":
        n = int(rng.integers(2, 12))
        yy, xx = np.mgrid[0:size, 0:size] * n // size
        t = ((xx + yy) % 2).astype(np.float32)[..., None]
        img = a * t + b * (1 - t)
    elif kind == "stripes":
        n = int(rng.integers(2, 16))
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        t = ((np.cos(ang) * xx + np.sin(ang) * yy) * n % 1.0 < 0.5).astype(np.float32)[..., None]
        img = a * t + b * (1 - t)
    else:
        raise ConfigError(f"unknown texture kind `{kind}`; use one of {', '.join(KINDS)}.")
    if kind in ("checker", "stripes"):
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0)  # anti-alias hard edges when magnified
    return np.clip(img, 0, 255).astype(np.uint8)


def save_png(img: np.ndarray, stem: str | None = None) -> Path:
    """Write ``img`` to the cache under its content hash and return the path."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise AssetError("could not encode a texture as PNG; check that opencv-python-headless is installed.")
    data = buf.tobytes()
    digest = hashlib.sha1(data).hexdigest()[:16]
    path = cache_dir() / "textures" / f"{stem or 'tex'}-{digest}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


@dataclass(frozen=True)
class TextureBank:
    """Texture keys (``kind/i`` or ``image/i``) mapped to PNG files."""

    files: dict  # key -> Path

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sorted(self.files))

    def path(self, key: str) -> Path:
        try:
            return self.files[key]
        except KeyError:
            raise AssetError(f"texture `{key}` is not in the bank; the bank has {len(self.files)} textures.") from None


def build_bank(kinds: tuple[str, ...], per_kind: int, seed: int, image_dir: str | None = None, size: int = 128,
               prefix: str = "") -> TextureBank:
    files: dict[str, Path] = {}
    for kind in kinds:
        for i in range(per_kind):
            rng = np.random.default_rng(np.random.SeedSequence([seed, KINDS.index(kind) if kind in KINDS else 99, i, size]))
            files[f"{prefix}{kind}/{i}"] = save_png(make_texture(kind, rng, size), stem=kind)
    if image_dir:
        folder = Path(image_dir).expanduser()
        if not folder.is_dir():
            raise AssetError(f"texture folder `{folder}` does not exist; set randomization.texture_dir to a folder of images or null.")
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise AssetError(f"texture folder `{folder}` holds no {'/'.join(IMAGE_SUFFIXES)} images; add some or set randomization.texture_dir=null.")
        for i, p in enumerate(images):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise AssetError(f"texture `{p}` cannot be read as an image; remove it from the folder.")
            # PyBullet drops alpha and wants modest sizes; normalise to RGB 256x256.
            img = cv2.cvtColor(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            files[f"{prefix}image/{i}"] = save_png(img, stem="image")
    return TextureBank(files)
