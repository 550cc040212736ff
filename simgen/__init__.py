"""simgen: randomized PyBullet scenes to labelled image datasets, checked against real photos."""

__version__ = "0.1.0"
