"""Mixing real and synthetic training data at a chosen synthetic fraction.

:class:`MixedDataset` concatenates a real and a synthetic dataset, tags every sample's target with
``source`` ("real" or "synthetic"), and hands out an endless sampler that draws a synthetic sample
with probability ``synthetic_fraction`` (uniformly within each side). The share actually seen is
counted from the samples themselves (``MixedDataset.count`` or the training loop's tally), so the
report states what the model saw, not what was asked for.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import torch

SOURCES = ("real", "synthetic")


class MixedDataset(torch.utils.data.Dataset):
    """``real`` and ``synthetic`` (either may be None) as one dataset with per-sample ``source``.

    Indices ``0..len(real)-1`` are real, the rest synthetic. ``synthetic_fraction`` (0..1) is the
    probability that :meth:`sampler` draws a synthetic sample; 1.0 is train-on-synthetic (TSTR),
    0.0 train-on-real (TRTR).
    """

    def __init__(self, real=None, synthetic=None, synthetic_fraction: float = 0.5) -> None:
        if not 0.0 <= synthetic_fraction <= 1.0:
            raise ValueError(f"synthetic_fraction={synthetic_fraction} must lie in [0, 1]")
        n_real, n_syn = (len(real) if real is not None else 0), (len(synthetic) if synthetic is not None else 0)
        if synthetic_fraction > 0 and n_syn == 0:
            raise ValueError(f"synthetic_fraction={synthetic_fraction} but there is no synthetic data")
        if synthetic_fraction < 1 and n_real == 0:
            raise ValueError(f"synthetic_fraction={synthetic_fraction} needs real data; give a real folder or use 1.0")
        self.real, self.synthetic, self.synthetic_fraction = real, synthetic, float(synthetic_fraction)
        self.n_real, self.n_synthetic = n_real, n_syn
        self.sources = ["real"] * n_real + ["synthetic"] * n_syn

    def __len__(self) -> int:
        return self.n_real + self.n_synthetic

    def source(self, idx: int) -> str:
        return self.sources[idx]

    def __getitem__(self, idx: int):
        if idx < self.n_real:
            img, target = self.real[idx]
        else:
            img, target = self.synthetic[idx - self.n_real]
        target = dict(target)
        target["source"] = self.sources[idx]
        return img, target

    def sampler(self, seed: int = 0, num_samples: int | None = None, skip: int = 0) -> MixSampler:
        return MixSampler(self.n_real, self.n_synthetic, self.synthetic_fraction, seed, num_samples, skip)

    @property
    def used_sizes(self) -> dict:
        """Images available to the sampler from each side (a side with probability 0 is unused)."""
        return {"real": self.n_real if self.synthetic_fraction < 1 else 0,
                "synthetic": self.n_synthetic if self.synthetic_fraction > 0 else 0}

    def count(self, indices: Iterable[int]) -> dict:
        """Share of each source among ``indices``: ``{"real": n, "synthetic": n, "synthetic_share": f}``."""
        return share(self.sources[i] for i in indices)


def share(sources: Iterable[str]) -> dict:
    c = Counter(sources)
    n = sum(c[s] for s in SOURCES)
    return {"real": c["real"], "synthetic": c["synthetic"], "synthetic_share": round(c["synthetic"] / n, 4) if n else None}


class MixSampler(torch.utils.data.Sampler[int]):
    """Endless (or ``num_samples`` long) stream of indices: synthetic with probability ``fraction``,
    otherwise real; uniform with replacement within a side. Seeded, so runs repeat; ``skip`` leaves out
    the first indices of that same stream (a resumed training run continues where it stopped)."""

    def __init__(self, n_real: int, n_synthetic: int, fraction: float, seed: int = 0, num_samples: int | None = None,
                 skip: int = 0) -> None:
        self.n_real, self.n_synthetic, self.fraction = n_real, n_synthetic, fraction
        self.seed, self.num_samples, self.skip = seed, num_samples, skip

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed)
        k = 0
        while self.num_samples is None or k < self.num_samples:
            block = 256
            syn = torch.rand(block, generator=g) < self.fraction
            ri = torch.randint(max(1, self.n_real), (block,), generator=g)
            si = torch.randint(max(1, self.n_synthetic), (block,), generator=g) + self.n_real
            for s, r, i in zip(syn.tolist(), ri.tolist(), si.tolist()):
                if self.num_samples is not None and k >= self.num_samples:
                    return
                if k >= self.skip:  # a resumed run continues the stream where the checkpoint left it
                    yield i if s else r
                k += 1

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("an endless MixSampler has no length; pass num_samples")
        return self.num_samples


def concat(datasets: Sequence) -> torch.utils.data.Dataset | None:
    if not datasets:
        return None
    return datasets[0] if len(datasets) == 1 else torch.utils.data.ConcatDataset(list(datasets))
