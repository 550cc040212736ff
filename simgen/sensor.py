"""Sensor effects after rendering (colour jitter, blur, noise). JPEG quality is applied by the writer.
They change pixels only, never labels. OpenCV on uint8 throughout: this runs on every image."""
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


def apply_sensor(rgb: np.ndarray, s: Sensor, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter, blur, then additive Gaussian noise; uint8 in and out (OpenCV rounds and clips)."""
    if s == Sensor():
        return rgb
    img = rgb
    if s.saturation != 1.0 or s.contrast != 1.0 or s.brightness != 1.0:
        img = cv2.transform(img, colour_matrix(s, np.array(cv2.mean(img)[:3], np.float32)))
    if s.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), s.blur_sigma)
    if s.noise_std > 0:
        img = cv2.addWeighted(img, 1.0, _noise(img.shape, rng), float(s.noise_std), 0.0, dtype=cv2.CV_8U)
    return img if img is not rgb else rgb.copy()
