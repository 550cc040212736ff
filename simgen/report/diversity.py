"""Diversity: near-duplicates inside the synthetic set, and real images nothing synthetic resembles.

Near-duplicates by 64-bit perceptual hash (imagehash pHash): all pairs at once as a matrix product of
bit vectors (Hamming = a.(1-b) + (1-a).b), in row chunks, so no BK-tree and no Python double loop.
The uncovered real images follow FiftyOne Brain's representativeness idea: a real image whose nearest
synthetic neighbour is far compared with its own k-NN radius among real images is not represented.
Coverage is graded as in the features section, with its numbers (distance.measurements, computed once per
report): a real half's coverage by an equal-size synthetic sample against the real-vs-real floor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

PHASH_DUP = 4  # Hamming distance (of 64 bits) at or below which two images count as near-duplicates
CHUNK = 1024


def phash_bits(paths: Sequence[Path]) -> np.ndarray:
    """(n, 64) bool pHash bits of each image."""
    import imagehash

    out = np.zeros((len(paths), 64), bool)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = imagehash.phash(im).hash.ravel()
    return out


def hamming_pairs(a: np.ndarray, b: np.ndarray | None = None, max_dist: int = PHASH_DUP) -> list[tuple[int, int, int]]:
    """All (i, j, distance) with Hamming(a_i, b_j) <= max_dist; with b None, pairs i < j inside a."""
    same = b is None
    b = a if b is None else b
    fb, nb = b.astype(np.float32), (~b).astype(np.float32)
    out = []
    for s in range(0, len(a), CHUNK):
        fa = a[s:s + CHUNK].astype(np.float32)
        d = fa @ nb.T + (1 - fa) @ fb.T  # exact small integers in float32
        ii, jj = np.nonzero(d <= max_dist + 0.5)
        for i, j in zip(ii + s, jj):
            if not same or i < j:
                out.append((int(i), int(j), int(round(d[i - s, j]))))
    return out


def duplicate_groups(n: int, pairs: list[tuple[int, int, int]]) -> list[list[int]]:
    """Connected components of the near-duplicate graph with more than one member (union-find)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def near_duplicates(paths: Sequence[Path], max_dist: int = PHASH_DUP) -> dict:
    """Pairs, groups and the redundant share: images that add nothing (group size - 1 per group) / n."""
    bits = phash_bits(paths)
    pairs = hamming_pairs(bits, None, max_dist)
    groups = duplicate_groups(len(paths), pairs)
    redundant = sum(len(g) - 1 for g in groups)
    return {"n": len(paths), "pairs": pairs, "groups": groups, "redundant": redundant,
            "rate": redundant / max(1, len(paths)), "in_duplicates": sum(len(g) for g in groups)}


def uncovered(real: np.ndarray, syn: np.ndarray, k: int = 5) -> np.ndarray:
    """Per real image: distance to its nearest synthetic image / its k-NN radius among real images.

    <= 1 means some synthetic image lies inside the real image's ball (it counts for PRDC coverage)."""
    from scipy.spatial.distance import cdist

    from .distance import knn_radii

    d = cdist(real, syn).min(1)
    return d / np.maximum(knn_radii(real, k), 1e-12)


def _pair_sheet(ctx, paths: Sequence[Path], pairs: list[tuple[int, int, int]], name: str):
    from .features import contact_sheet
    from .model import Figure

    shown = sorted(pairs, key=lambda t: t[2])[:9]
    ps, caps = [], []
    for i, j, d in shown:
        ps += [paths[i], paths[j]]
        caps += [f"{paths[i].name}", f"= {paths[j].name} (d {d})"]
    contact_sheet(ps, caps, ctx.figures / name, cols=6)
    return Figure(f"figures/{name}", "Near-duplicate synthetic image pairs (side by side, pHash Hamming distance d).")


def diversity_section(ctx) -> "object":
    """Near-duplicate rate inside the synthetic set, coverage of the real set, real images nothing resembles."""
    from .distance import coverage_check, coverage_numbers, measurements, scaled_spaces
    from .features import contact_sheet, side_paths
    from .model import Check, Figure, Section, Table, graded

    max_d = int(ctx.options.get("phash_duplicate", PHASH_DUP))
    k = int(ctx.options.get("prdc_k", 5))
    syn_paths, real_paths = side_paths(ctx.synthetic), side_paths(ctx.real)
    nd = near_duplicates(syn_paths, max_d)
    checks = [graded("synthetic near-duplicate rate", nd["rate"], 0.01, 0.05, higher_is_better=False,
                     detail=f"redundant images (pHash Hamming <= {max_d}) / synthetic images; high = the randomization repeats "
                            "itself: widen the ranges or check seeds.")]
    figures, tables, data = [], [], {"near_duplicates": {k2: v for k2, v in nd.items() if k2 != "pairs"} | {"n_pairs": len(nd["pairs"])},
                                     "phash_threshold": max_d}
    if nd["pairs"]:
        figures.append(_pair_sheet(ctx, syn_paths, nd["pairs"], "diversity_near_duplicates.png"))
        data["near_duplicates"]["examples"] = [(syn_paths[i].name, syn_paths[j].name, d) for i, j, d in nd["pairs"][:20]]
    rows, said = [], []

    def not_computed(name: str, e: Exception) -> None:
        checks.append(Check(f"{name}: coverage", None, "warn", "", f"not computed: {e}"))

    for fname, r, s in scaled_spaces(ctx, not_computed):
        name = fname.split("/")[0]
        ms = measurements(ctx, name)  # the features section's numbers (computed there first when it is built)
        matched, floor, floor_std = coverage_numbers(ms)
        said.append(f"{name} covers {matched:.0%} of a real half (real-vs-real floor {floor:.0%})")
        checks.append(coverage_check(name, ms, " The same numbers and rule as the features section's check of this name "
                                               "(so it counts in both parts)."))
        data[f"coverage_{name}"] = {"matched": matched, "floor": floor, "floor_std": floor_std, "pass_at": floor - 2 * floor_std,
                                    "all_real_vs_all_synthetic": ms[0]["coverage"], "space": fname}
        ratio = uncovered(r, s, k)
        order = np.argsort(-ratio)
        rows.append((fname, f"{matched:.3f}", f"{floor:.3f} ± {floor_std:.3f}", f"{ms[0]['coverage']:.3f}",
                     f"{int((ratio > 1).sum())} of {len(ratio)}", round(float(np.median(ratio)), 3)))
        data[f"uncovered_{name}"] = [(real_paths[i].name, round(float(ratio[i]), 3)) for i in order[:20]]
        sheet = f"diversity_uncovered_{name}.png"
        sel = order[:12]
        contact_sheet([real_paths[i] for i in sel], [f"{ratio[i]:.1f}x {real_paths[i].name}" for i in sel], ctx.figures / sheet)
        figures.append(Figure(f"figures/{sheet}", f"{fname}: real images that nothing synthetic resembles: distance to the nearest "
                                                  f"synthetic image as a multiple of the image's own {k}-NN radius among real images."))
    if rows:
        tables.append(Table("Coverage of the real set (share of real images with a synthetic image in their k-NN ball)",
                            ("feature space", "graded: real half vs equal-size synthetic sample (mean over splits and over seeds)",
                             "noise floor: real half vs other real half (mean ± std)", "all real vs all synthetic",
                             "real images not covered", "median distance ratio"), tuple(rows)))
    summary = (f"{nd['redundant']} of {nd['n']} synthetic images are near-duplicates of another ({nd['rate']:.1%}); "
               + "; ".join(said) + ".")
    return Section("diversity", "Diversity and coverage", summary, tuple(checks), tuple(figures), tuple(tables), data)
