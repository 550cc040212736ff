"""The sensor model: one fused uint8 colour transform must equal the textbook float formulas."""
import numpy as np

from simgen.sensor import apply_sensor
from simgen.types import Sensor


def reference(rgb: np.ndarray, s: Sensor) -> np.ndarray:
    """Saturation about the pixel's grey, then contrast about the image mean and brightness, in float."""
    img = rgb.astype(np.float64)
    grey = img @ np.array([0.299, 0.587, 0.114])[:, None]  # the luma weights of cv2.COLOR_RGB2GRAY
    img = s.saturation * img + (1 - s.saturation) * grey
    mean = img.mean()
    img = s.contrast * (img - mean) + s.brightness * mean
    return np.clip(np.round(img), 0, 255)


def test_colour_jitter_matches_float_reference():
    rng = np.random.default_rng(0)
    rgb = rng.integers(60, 190, (48, 64, 3), dtype=np.uint8)  # mid-range: no clipping hides an error
    for s in [Sensor(saturation=1.2), Sensor(contrast=0.85), Sensor(brightness=1.15),
              Sensor(saturation=0.8, contrast=1.1, brightness=0.9)]:
        out = apply_sensor(rgb, s, np.random.default_rng(1))
        assert out.dtype == np.uint8 and out.shape == rgb.shape
        assert np.abs(out.astype(int) - reference(rgb, s)).max() <= 1, s


def test_identity_noise_and_blur():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert np.array_equal(apply_sensor(rgb, Sensor(), rng), rgb)
    flat = np.full((48, 64, 3), 128, np.uint8)
    noisy = apply_sensor(flat, Sensor(noise_std=4.0), np.random.default_rng(2)).astype(float)
    assert 3.0 < noisy.std() < 5.0 and abs(noisy.mean() - 128) < 0.5
    again = apply_sensor(flat, Sensor(noise_std=4.0), np.random.default_rng(2))
    assert np.array_equal(noisy, again)  # the same generator gives the same noise
    blurred = apply_sensor(rgb, Sensor(blur_sigma=1.0), rng).astype(float)
    assert blurred.std() < rgb.astype(float).std() * 0.8
