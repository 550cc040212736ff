"""Sensor effects after rendering (noise, blur, colour jitter). JPEG quality is applied by the writer.
They change pixels only, never labels."""
from __future__ import annotations

import cv2
import numpy as np

from .types import Sensor


def apply_sensor(rgb: np.ndarray, s: Sensor, rng: np.random.Generator) -> np.ndarray:
    img = rgb.astype(np.float32)
    if s.saturation != 1.0:
        grey = img.mean(axis=2, keepdims=True)
        img = grey + (img - grey) * s.saturation
    if s.contrast != 1.0 or s.brightness != 1.0:
        mean = img.mean()
        img = (img - mean) * s.contrast + mean * s.brightness
    if s.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), s.blur_sigma)
    if s.noise_std > 0:
        img = img + rng.normal(0.0, s.noise_std, size=img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
