"""Sensor and lens effects after rendering: colour jitter, blur (Gaussian, defocus disc, motion
streak), vignetting and noise (luminance and chroma). JPEG quality is applied by the writer.

They change pixels only, never labels. OpenCV on uint8 throughout: this runs on every image. The order
follows the light path: the ISP's colour rendition is folded in first (a linear map, so its place does
not matter much and it keeps the fused uint8 transform), then the optics (blur, vignetting), then the
sensor's noise on top.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from .types import Sensor

NOISE_SIZE = 1024
_noise_fields: dict[bool, np.ndarray] = {}


def _field(grey: bool) -> np.ndarray:
    """The fixed noise field: independent per channel, or (grey) one channel copied to all three."""
    if False not in _noise_fields:
        _noise_fields[False] = np.random.default_rng(np.random.SeedSequence(20261122)).standard_normal(
            (NOISE_SIZE, NOISE_SIZE, 3), dtype=np.float32)
    if grey and True not in _noise_fields:
        _noise_fields[True] = np.ascontiguousarray(np.repeat(_noise_fields[False][..., 2:3], 3, axis=2))
    return _noise_fields[grey]


def warm() -> None:
    """Build the noise fields now (~0.1 s): a run's process does before its workers fork, so they inherit them."""
    _field(False)
    _field(True)


def _noise(shape: tuple[int, ...], rng: np.random.Generator, grey: bool = False) -> np.ndarray:
    """Unit Gaussian noise of ``shape``: a window at a random offset into a fixed field (drawing a
    fresh 640x480x3 field costs more than the rest of the sensor model); larger images draw afresh.
    ``grey``: the same value in every channel."""
    h, w, c = shape
    if h > NOISE_SIZE or w > NOISE_SIZE:
        noise = rng.standard_normal((h, w, 1) if grey else shape, dtype=np.float32)
        return np.repeat(noise, c, axis=2) if grey else noise
    y, x = int(rng.integers(0, NOISE_SIZE - h + 1)), int(rng.integers(0, NOISE_SIZE - w + 1))
    return _field(grey)[y:y + h, x:x + w, :c]


# ITU-R 601 luma, the weights cv2.COLOR_RGB2GRAY uses
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def colour_matrix(s: Sensor, channel_means: np.ndarray) -> np.ndarray:
    """Saturation, contrast and brightness as one 3x4 affine colour transform.

    Saturation mixes each pixel with its grey value (``S = s*I + (1-s)*1 LUMA^T``); contrast scales about
    the mean of the saturated image and brightness scales that mean. All three are linear, so they fold
    into one matrix and ``cv2.transform`` applies them in a single uint8 pass (no float image)."""
    S = s.saturation * np.eye(3, dtype=np.float32) + (1.0 - s.saturation) * np.outer(np.ones(3, np.float32), LUMA)
    mean = float((S @ channel_means).mean())
    M = np.zeros((3, 4), np.float32)
    M[:, :3] = s.contrast * S
    M[:, 3] = mean * (s.brightness - s.contrast)
    return M


@functools.lru_cache(maxsize=32)
def disc_kernel(radius: float) -> np.ndarray:
    """Normalised disc (an out-of-focus lens's point spread), anti-aliased at its rim so that radii
    between whole pixels blur by in-between amounts."""
    r = int(math.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    k = np.clip(radius + 0.5 - np.hypot(xx, yy), 0.0, 1.0)
    return k / k.sum()


@functools.lru_cache(maxsize=64)
def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Normalised streak of ``length`` pixels at ``angle_deg`` (camera shake during the exposure),
    drawn anti-aliased at 8x and reduced, so sub-pixel lengths and any angle are smooth."""
    r = int(math.ceil(length / 2)) + 1
    n, s = 2 * r + 1, 8
    big = np.zeros((n * s, n * s), np.float32)
    c = (n * s - 1) / 2
    dx, dy = math.cos(math.radians(angle_deg)) * length * s / 2, math.sin(math.radians(angle_deg)) * length * s / 2
    shift = 4  # cv2.line takes fixed-point coordinates with this many fractional bits
    p0 = (int(round((c - dx) * 16)), int(round((c - dy) * 16)))
    p1 = (int(round((c + dx) * 16)), int(round((c + dy) * 16)))
    cv2.line(big, p0, p1, 1.0, thickness=s, lineType=cv2.LINE_AA, shift=shift)
    k = cv2.resize(big, (n, n), interpolation=cv2.INTER_AREA)
    k = k + k[::-1, ::-1]  # a streak through the centre is point-symmetric: this removes the rasteriser's bias,
    return k / k.sum()  # so the image does not shift under its (unchanged) labels


@functools.lru_cache(maxsize=8)
def _falloff(h: int, w: int) -> np.ndarray:
    """``0.6 r^2 + 0.4 r^4`` of the squared distance r^2 from the image centre, 1 at the corners (float32, HxW).
    Kept per size: only the strength changes from image to image (the same float32 steps as computing it each time,
    so the same gains, at 0.38 instead of 0.65 ms a 640x480 vignette)."""
    yy, xx = np.ogrid[0:h, 0:w]
    r2 = (((xx - (w - 1) / 2) ** 2 + (yy - (h - 1) / 2) ** 2) / (((w - 1) / 2) ** 2 + ((h - 1) / 2) ** 2)).astype(np.float32)
    falloff = 0.6 * r2 + 0.4 * r2 * r2
    falloff.flags.writeable = False  # shared by every later call
    return falloff


def vignette_gain(h: int, w: int, strength: float) -> np.ndarray:
    """Per-pixel gain, 1 at the centre and ``1 - strength`` in the corners, falling as r^2 then r^4
    (the cos^4 falloff of a real lens is ~1 - 2(r/f)^2 + ... near the axis, steeper off it)."""
    return 1.0 - strength * _falloff(h, w)


def _vignette(img: np.ndarray, strength: float) -> np.ndarray:
    h, w = img.shape[:2]
    gain = cv2.merge([vignette_gain(h, w, strength)] * img.shape[2])
    return cv2.multiply(img, gain, dtype=cv2.CV_8U)


def _add_noise(img: np.ndarray, s: Sensor, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of sigma ``noise_std`` per channel; a share ``1 - noise_chroma`` of its variance
    is common to the three channels (grey grain), the rest independent per channel (colour speckle)."""
    noise = _noise(img.shape, rng)
    if s.noise_chroma < 1.0:  # weights keep unit variance per channel
        noise = cv2.addWeighted(noise, math.sqrt(s.noise_chroma), _noise(img.shape, rng, grey=True), math.sqrt(1.0 - s.noise_chroma), 0.0)
    return cv2.addWeighted(img, 1.0, noise, float(s.noise_std), 0.0, dtype=cv2.CV_8U)


def apply_sensor(rgb: np.ndarray, s: Sensor, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter, blurs, vignetting, then additive noise; uint8 in and out (OpenCV rounds and clips).
    Draws from ``rng`` only for the noise, in a fixed order."""
    if s == Sensor():
        return rgb
    img = rgb
    if s.saturation != 1.0 or s.contrast != 1.0 or s.brightness != 1.0:
        img = cv2.transform(img, colour_matrix(s, np.array(cv2.mean(img)[:3], np.float32)))
    if s.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), s.blur_sigma)
    if s.defocus_radius > 0:
        img = cv2.filter2D(img, -1, disc_kernel(round(s.defocus_radius, 2)), borderType=cv2.BORDER_REFLECT)
    if s.motion_length > 0:
        img = cv2.filter2D(img, -1, motion_kernel(round(s.motion_length, 2), round(s.motion_angle, 1)), borderType=cv2.BORDER_REFLECT)
    if s.vignette > 0:
        img = _vignette(img, s.vignette)
    if s.noise_std > 0:
        img = _add_noise(img, s, rng)
    return img if img is not rgb else rgb.copy()
