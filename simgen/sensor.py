"""Sensor effects after rendering (colour jitter, blur, noise). JPEG quality is applied by the writer.
They change pixels only, never labels. float32 and OpenCV throughout: this runs on every image."""
from __future__ import annotations

import cv2
import numpy as np

from .types import Sensor

NOISE_SIZE = 1024
_noise_field: np.ndarray | None = None


def _noise(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Unit Gaussian noise of ``shape``: a window at a random offset into a fixed field (drawing a
    fresh 640x480x3 field costs more than the rest of the sensor model); larger images draw afresh."""
    global _noise_field
    h, w, c = shape
    if h > NOISE_SIZE or w > NOISE_SIZE:
        return rng.standard_normal(shape, dtype=np.float32)
    if _noise_field is None:
        _noise_field = np.random.default_rng(np.random.SeedSequence(20261122)).standard_normal((NOISE_SIZE, NOISE_SIZE, c), dtype=np.float32)
    y, x = int(rng.integers(0, NOISE_SIZE - h + 1)), int(rng.integers(0, NOISE_SIZE - w + 1))
    return _noise_field[y:y + h, x:x + w]


def apply_sensor(rgb: np.ndarray, s: Sensor, rng: np.random.Generator) -> np.ndarray:
    if s == Sensor():
        return rgb
    img = rgb.astype(np.float32)
    if s.saturation != 1.0:
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
        img = cv2.addWeighted(img, s.saturation, np.broadcast_to(grey, img.shape).astype(np.float32), 1.0 - s.saturation, 0.0)
    if s.contrast != 1.0 or s.brightness != 1.0:
        mean = float(img.mean())
        img = cv2.addWeighted(img, s.contrast, img, 0.0, mean * (s.brightness - s.contrast))
    if s.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), s.blur_sigma)
    if s.noise_std > 0:
        img = cv2.scaleAdd(_noise(img.shape, rng), float(s.noise_std), img)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
