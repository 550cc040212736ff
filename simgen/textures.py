"""Procedural textures and images from a folder, as a fixed bank.

Kinds: the graphic ones (solid, noise, checker, stripes) and photographic grounds (felt, wood, paper,
fabric, concrete, marble) that look like the surfaces real photos are taken on: low-saturation
colours from explicit palettes, fine fibre/grain structure, low contrast.

Banks are drawn once from their own seed, so every worker and shard sees the same textures and a
scene only stores a key such as ``noise/3``. Files land in a content-addressed cache so that
concurrent workers write identical bytes (atomic rename) and PyBullet loads each one once.

Ground textures (``tileable=True``) are periodic: the renderer repeats them at a fixed physical size
(:func:`tile_size`) over a ground that fills the view, instead of stretching one image over it, so a
felt fibre is the same size in every scene. Periodicity comes from construction: spectral noise is
made with an FFT (periodic by nature) and every pattern has a whole number of periods per tile.
"""
from __future__ import annotations

import colorsys
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .cache import atomic_write_bytes, cache_dir  # noqa: F401  (imported from here by the modules that render)
from .errors import AssetError, ConfigError

GRAPHIC_KINDS = ("solid", "noise", "checker", "stripes")
PHOTO_KINDS = ("felt", "wood", "paper", "fabric", "concrete", "marble")
# Append only: a kind's index seeds its bank entries, so reordering would change every existing bank.
KINDS = GRAPHIC_KINDS + PHOTO_KINDS
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

# Metres of ground covered by one repeat of a 512 px ground texture. Dice photos resolve ~0.5 mm per
# pixel, so 0.2-0.3 m per 512 px keeps felt fibres and wood grain about one texel per pixel (sharp, not
# magnified blobs) and fabric threads 2-4 mm wide. Finer repeats alias into moire far away (TinyRenderer
# does not mip-map).
TILE_M = {"felt": 0.2, "paper": 0.25, "fabric": 0.2, "wood": 0.3, "concrete": 0.3, "marble": 0.4}
# Graphic kinds and folder images: the 1.2 m the dice ground used to stretch one texture over, so their
# stripes and checks stay as coarse as before.
DEFAULT_TILE_M = 1.2


def tile_size(key: str | None) -> float:
    """Physical repeat (m) of the ground texture ``key`` (``ground/felt/3`` -> felt's)."""
    parts = (key or "").split("/")
    return TILE_M.get(parts[-2] if len(parts) >= 2 else "", DEFAULT_TILE_M)


def render_texture(path: Path) -> Path:
    """The texture file the renderers are given for ``path``: an uncompressed BMP copy of a PNG, made once per
    machine (named by the source's path, size and modification time, so an edited PNG gets a new copy), else
    ``path`` itself.

    Why: PyBullet decodes a texture with stb_image every time a visual shape that uses it is made (each new
    object scale, each ground look), and under EGL twice (once for its own mesh data, once for the plugin).
    A 512 px ground costs 17.6 ms to create from PNG and 8.0 ms from BMP (llvmpipe; 7.7 vs 2.7 ms on
    TinyRenderer). PNG is lossless and 8-bit RGB BMP holds the same pixels, so nothing drawn changes. Only files
    that are PNGs by their signature are converted: JPEGs (another decoder could round differently), and PNGs with
    alpha or 16 bits a channel, whose conversion would not be exact, are left alone."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        return path
    try:
        st = path.stat()
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":  # a JPEG named .png, say
                return path
    except OSError:
        return path  # missing: let PyBullet's loader say so, as before
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir() / "textures" / "render" / f"{path.stem}-{key}.bmp"
    if out.exists():
        return out
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint8 or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        return path
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    ok, buf = cv2.imencode(".bmp", img)
    if not ok:
        return path
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.tobytes())
    return out


def _color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


# ------------------------------------------------------------------------------------------ palettes
@dataclass(frozen=True)
class Palette:
    """Weighted HSV boxes a base colour is drawn from: (weight, hue, saturation, value), each a range
    in [0, 1] (hue in turns). Real grounds are mostly pale and grey; the coloured boxes keep coverage."""

    boxes: tuple[tuple[float, tuple[float, float], tuple[float, float], tuple[float, float]], ...]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        w = np.array([b[0] for b in self.boxes], float)
        _, hue, sat, val = self.boxes[int(rng.choice(len(w), p=w / w.sum()))]
        h, s, v = rng.uniform(*hue), rng.uniform(*sat), rng.uniform(*val)
        return 255.0 * np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


ANY = (0.0, 1.0)
PALETTES = {
    # white/grey felt dominates dice photos; beige, brown and card-table green are common; the rest coloured
    "felt": Palette(((0.55, ANY, (0.0, 0.06), (0.55, 0.95)), (0.12, (0.07, 0.14), (0.08, 0.25), (0.6, 0.92)),
                     (0.08, (0.04, 0.1), (0.25, 0.5), (0.25, 0.6)), (0.1, (0.3, 0.45), (0.3, 0.6), (0.25, 0.55)),
                     (0.15, ANY, (0.25, 0.7), (0.2, 0.75)))),
    "paper": Palette(((0.8, ANY, (0.0, 0.04), (0.85, 1.0)), (0.2, (0.07, 0.12), (0.08, 0.4), (0.6, 0.95)))),
    "wood": Palette(((0.35, (0.07, 0.11), (0.25, 0.45), (0.65, 0.9)), (0.35, (0.05, 0.1), (0.4, 0.6), (0.4, 0.65)),
                     (0.15, (0.03, 0.08), (0.35, 0.6), (0.18, 0.4)), (0.15, (0.06, 0.12), (0.05, 0.15), (0.5, 0.8)))),
    "fabric": Palette(((0.35, ANY, (0.0, 0.08), (0.4, 0.95)), (0.2, (0.09, 0.13), (0.1, 0.25), (0.6, 0.9)),
                       (0.15, (0.58, 0.63), (0.35, 0.6), (0.3, 0.6)), (0.3, ANY, (0.3, 0.75), (0.25, 0.8)))),
    "concrete": Palette(((0.7, ANY, (0.0, 0.05), (0.45, 0.8)), (0.3, (0.08, 0.12), (0.04, 0.12), (0.5, 0.8)))),
    "marble": Palette(((0.5, ANY, (0.0, 0.04), (0.8, 0.97)), (0.25, ANY, (0.0, 0.05), (0.5, 0.75)),
                       (0.15, (0.08, 0.12), (0.08, 0.2), (0.7, 0.9)), (0.1, (0.3, 0.5), (0.1, 0.3), (0.1, 0.3)))),
}


# ------------------------------------------------------------------------------------ periodic noise
@functools.lru_cache(maxsize=4)
def _freqs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer frequencies (cycles per tile) of an rfft2 of a size x size image."""
    return (np.fft.fftfreq(size, 1.0 / size)[:, None].astype(np.float32),
            np.fft.rfftfreq(size, 1.0 / size)[None, :].astype(np.float32))


def spectral_noise(rng: np.random.Generator, size: int, beta: float, stretch: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Zero-mean, unit-std noise with power spectrum ~ 1/f**beta, periodic over the tile (it is made
    in the Fourier domain). ``stretch`` > 1 elongates features along direction ``angle`` (radians):
    fibres, grain. beta ~ 0-1 is grainy, ~2-3 cloudy."""
    fy, fx = _freqs(size)
    c, s = np.cos(angle), np.sin(angle)
    f = np.hypot((fx * c + fy * s) * stretch, -fx * s + fy * c)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0  # no DC: zero mean
    white = rng.standard_normal((size, size), dtype=np.float32)
    out = np.fft.irfft2(np.fft.rfft2(white) * amp, s=(size, size)).astype(np.float32)
    return (out - out.mean()) / max(float(out.std()), 1e-6)


def _wrap_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that wraps around the tile edges (keeps a periodic texture periodic)."""
    pad = int(3 * sigma) + 1
    padded = np.pad(img, [(pad, pad), (pad, pad)] + [(0, 0)] * (img.ndim - 2), mode="wrap")
    return cv2.GaussianBlur(padded, (0, 0), sigma)[pad:-pad, pad:-pad]


def _shade(base: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """Base colour times a luminance field (HxW), as HxWx3 floats."""
    return lum[..., None] * base[None, None, :]


# ----------------------------------------------------------------------------- photographic grounds
def _felt(rng: np.random.Generator, size: int) -> np.ndarray:
    """Non-woven felt: fine grain, short fibres in every direction, faint mottling; low contrast."""
    base = PALETTES["felt"].sample(rng)
    fibres = sum(spectral_noise(rng, size, 1.2, stretch=6.0, angle=rng.uniform(0, np.pi)) for _ in range(3)) / np.sqrt(3)
    lum = (1.0 + rng.uniform(0.02, 0.045) * spectral_noise(rng, size, 0.6) + rng.uniform(0.025, 0.05) * fibres
           + rng.uniform(0.01, 0.04) * spectral_noise(rng, size, 3.0))
    return _shade(base, lum)


def _paper(rng: np.random.Generator, size: int) -> np.ndarray:
    """Paper: near-white, very faint fibres and cloudiness (formation)."""
    base = PALETTES["paper"].sample(rng)
    lum = (1.0 + rng.uniform(0.006, 0.015) * spectral_noise(rng, size, 1.0, stretch=4.0, angle=rng.uniform(0, np.pi))
           + rng.uniform(0.005, 0.02) * spectral_noise(rng, size, 2.5))
    return _shade(base, lum)


def _wood(rng: np.random.Generator, size: int) -> np.ndarray:
    """Wood: growth rings as a distorted sawtooth across the grain (rows), long streaks along it,
    sometimes several boards with their own tone and a dark seam. Whole numbers of rings and boards
    per tile keep it periodic."""
    base = PALETTES["wood"].sample(rng)
    y = (np.arange(size, dtype=np.float32) / size)[:, None]
    boards = int(rng.choice([1, 2, 3, 4]))
    board = np.floor(y * boards).astype(int) % boards
    # Flat-sawn boards cut the rings at a shallow angle: the ring phase wanders by several rings, slowly
    # along the grain (x), which draws the arches and waves of real boards.
    warp = spectral_noise(rng, size, 4.5, stretch=3.0)
    rings = int(rng.integers(8, 30))
    # (a wander of more than ~15% of the ring count folds rings into islands: not wood any more)
    t = rings * y + rings * rng.uniform(0.04, 0.12) * warp + rng.uniform(0, 1, boards)[board]
    late = np.mod(t, 1.0) ** rng.uniform(2.0, 5.0)  # latewood: a sharp dark band at the end of each ring
    streaks = spectral_noise(rng, size, 1.0, stretch=12.0)  # fine grain lines along the board
    lum = (1.0 - rng.uniform(0.15, 0.4) * late + rng.uniform(0.03, 0.07) * streaks
           + rng.uniform(-0.08, 0.08, boards)[board])
    if boards > 1:
        seam = np.abs(((y * boards) + 0.5) % 1.0 - 0.5) * size / boards  # pixels to the nearest board edge
        lum = lum * (1.0 - 0.35 * np.exp(-(seam / 1.2) ** 2))
    img = _shade(base, lum)
    img[..., 2] *= 1.0 - 0.08 * late  # latewood is slightly more saturated (less blue)
    return img


def _fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    """Woven cloth: warp and weft threads (plain or twill weave) with per-thread tone and fuzz."""
    warp_col = PALETTES["fabric"].sample(rng)
    weft_col = warp_col * rng.uniform(0.85, 1.05) if rng.random() < 0.75 else PALETTES["fabric"].sample(rng)
    n = 6 * int(rng.integers(8, 21))  # threads per tile; a multiple of 6 tiles both weaves exactly
    pos = (np.arange(size, dtype=np.float32) + 0.5) * n / size
    i, fx = np.floor(pos).astype(int), pos % 1.0
    twill = rng.random() < 0.4
    over = ((i[None, :] + i[:, None]) % 3 == 0) if twill else ((i[None, :] + i[:, None]) % 2 == 0)  # warp on top
    bump_x = np.sin(np.pi * fx)[None, :] ** 0.6  # round thread cross-section, across the warp (columns)
    bump_y = np.sin(np.pi * fx)[:, None] ** 0.6
    tone_warp = 1 + rng.uniform(0.02, 0.06) * rng.standard_normal(n)[i][None, :]
    tone_weft = 1 + rng.uniform(0.02, 0.06) * rng.standard_normal(n)[i][:, None]
    lum_warp = (0.78 + 0.22 * bump_x) * tone_warp
    lum_weft = (0.78 + 0.22 * bump_y) * tone_weft
    fuzz = 1 + 0.03 * spectral_noise(rng, size, 0.5)
    img = np.where(over[..., None], _shade(warp_col, lum_warp * fuzz), _shade(weft_col, lum_weft * fuzz))
    return _wrap_blur(img.astype(np.float32), 0.6)


def _concrete(rng: np.random.Generator, size: int) -> np.ndarray:
    """Concrete / plaster: cloudy tone, fine grit and small dark pores."""
    base = PALETTES["concrete"].sample(rng)
    pores = (rng.random((size, size)) < rng.uniform(0.0001, 0.0008)).astype(np.float32)
    pores = np.clip(_wrap_blur(pores, 0.9) * 8.0, 0, 1)
    lum = (1.0 + rng.uniform(0.02, 0.06) * spectral_noise(rng, size, 2.2) + rng.uniform(0.015, 0.04) * spectral_noise(rng, size, 0.8)
           - rng.uniform(0.1, 0.3) * pores)
    return _shade(base, lum)


def _marble(rng: np.random.Generator, size: int) -> np.ndarray:
    """Marble: pale stone with turbulent veins (thin where a distorted sinusoid crosses zero)."""
    base = PALETTES["marble"].sample(rng)
    x = (np.arange(size, dtype=np.float32) / size)[None, :]
    veins = np.zeros((size, size), np.float32)
    for k, width, depth in ((int(rng.integers(1, 4)), rng.uniform(0.06, 0.12), rng.uniform(0.25, 0.5)),
                            (int(rng.integers(3, 8)), rng.uniform(0.03, 0.06), rng.uniform(0.08, 0.2))):
        turb = spectral_noise(rng, size, 3.6)
        s = np.sin(2 * np.pi * (k * x + rng.uniform(0.15, 0.35) * turb))
        veins += depth * (np.exp(-(s / width) ** 2) + 0.3 * np.exp(-(s / (4 * width)) ** 2))  # vein and its halo
    lum = 1.0 - veins + 0.02 * spectral_noise(rng, size, 2.0)
    return _shade(base, lum)


PHOTO_MAKERS = {"felt": _felt, "paper": _paper, "wood": _wood, "fabric": _fabric, "concrete": _concrete, "marble": _marble}


# ------------------------------------------------------------------------------------- graphic kinds
def _noise_field(rng: np.random.Generator, size: int, tileable: bool) -> np.ndarray:
    """Value noise: a few octaves of upsampled random grids. Tileable: upsample a 3x3 tiling of each
    grid and keep the middle, whose cubic interpolation then wraps across the tile edges."""
    t = np.zeros((size, size), np.float32)
    for octave, weight in ((4, 0.5), (16, 0.3), (64, 0.2)):
        grid = rng.random((octave, octave)).astype(np.float32)
        if tileable:
            big = cv2.resize(np.tile(grid, (3, 3)), (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)
            t += weight * big[size:2 * size, size:2 * size]
        else:
            t += weight * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(t, 0, 1)


def _graphic(kind: str, rng: np.random.Generator, size: int, tileable: bool) -> np.ndarray:
    a, b = _color(rng), _color(rng)
    if kind == "solid":
        return np.broadcast_to(a, (size, size, 3)).copy()
    if kind == "noise":
        t = _noise_field(rng, size, tileable)[..., None]
        return a * t + b * (1 - t)
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == "checker":
        # Tileable: an even number of squares per tile, so the colours match across the edge.
        n = 2 * int(rng.integers(1, 6)) if tileable else int(rng.integers(2, 12))
        iy, ix = np.mgrid[0:size, 0:size] * n // size  # integer cells: exact, as the bank always drew them
        t = ((ix + iy) % 2).astype(np.float32)[..., None]
    else:  # stripes
        n = int(rng.integers(2, 16))
        ang = rng.uniform(0, np.pi)
        if tileable:  # a whole number of stripes along both tile axes: round the wave vector to integers
            kx, ky = round(n * np.cos(ang)), round(n * np.sin(ang))
            kx, ky = (kx, ky) if (kx, ky) != (0, 0) else (n, 0)
            phase = kx * xx + ky * yy
        else:
            phase = (np.cos(ang) * xx + np.sin(ang) * yy) * n
        t = (phase % 1.0 < 0.5).astype(np.float32)[..., None]
    img = a * t + b * (1 - t)
    # anti-alias hard edges when magnified
    return _wrap_blur(img.astype(np.float32), 1.0) if tileable else cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0)


def make_texture(kind: str, rng: np.random.Generator, size: int = 128, tileable: bool = False) -> np.ndarray:
    """An RGB uint8 texture of one kind, drawn from ``rng`` alone. ``tileable``: periodic over the
    image, for textures that are repeated (grounds). Photographic kinds are always periodic."""
    if kind in PHOTO_MAKERS:
        img = PHOTO_MAKERS[kind](rng, size)
    elif kind in GRAPHIC_KINDS:
        img = _graphic(kind, rng, size, tileable)
    else:
        raise ConfigError(f"unknown texture kind `{kind}`; use one of {', '.join(KINDS)}.")
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


def texture_seed(seed: int, kind: str, i: int, size: int, tileable: bool = False) -> np.random.SeedSequence:
    """Seed of bank entry ``kind/i``. The graphic kinds keep the entropy they always had, so object banks
    do not change; tileable (ground) variants get their own stream."""
    key = [seed, KINDS.index(kind) if kind in KINDS else 99, i, size]
    return np.random.SeedSequence(key + [1] if tileable and kind in GRAPHIC_KINDS else key)


@functools.lru_cache(maxsize=None)
def source_tag(path: str) -> str:
    """Hash of a source file: a cached texture is reused only while the code that drew it is unchanged."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


def generator_tag() -> str:
    """:func:`source_tag` of this module, which draws the bank textures."""
    return source_tag(__file__)


def bank_texture(kind: str, seed: int, i: int, size: int, tileable: bool) -> Path:
    """The PNG of bank entry ``kind/i``, drawn once per cache: a small index file named by the entry's
    parameters and :func:`generator_tag` points at the content-addressed PNG, so a new worker process
    skips the drawing (the photographic kinds cost ~50 ms each at 512 px)."""
    key = hashlib.sha1(f"{generator_tag()}|{kind}|{seed}|{i}|{size}|{tileable}".encode()).hexdigest()[:16]
    index = cache_dir() / "textures" / f"index-{key}.txt"
    if index.exists():
        path = index.parent / index.read_text().strip()
        if path.is_file():
            return path
    path = save_png(make_texture(kind, np.random.default_rng(texture_seed(seed, kind, i, size, tileable)), size, tileable), stem=kind)
    atomic_write_bytes(index, path.name.encode())
    return path


def build_bank(kinds: tuple[str, ...], per_kind: int, seed: int, image_dir: str | None = None, size: int = 128,
               prefix: str = "", tileable: bool = False) -> TextureBank:
    files: dict[str, Path] = {}
    for kind in kinds:
        if kind not in KINDS:
            raise ConfigError(f"unknown texture kind `{kind}`; use one of {', '.join(KINDS)}.")
        for i in range(per_kind):
            files[f"{prefix}{kind}/{i}"] = bank_texture(kind, seed, i, size, tileable)
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
