"""Feature extractors for the report: every image of a list -> one row of a matrix.

Nothing here downloads anything. Extractors:
  stats       a hand-made vector of image statistics (named columns), the one a person can read
  random_cnn  ResNet-18 with fixed-seed random weights (Lee et al. 2022, arXiv 2208.09218: random CNNs
              are about as good as trained ones for evaluating generated images), one Features per seed
  detector    the pooled FPN features of the user's own `simgen train` model
  weights     a local torchvision ResNet-18/50 state_dict (ctx.weights)
Each result carries ``sha``: a hash of the extractor's source code, its seed and its weights bytes, so
the report says exactly which feature space a number was measured in.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from PIL import Image

from ..errors import SimgenError
from . import props
from .props import HIST_BINS, image_statistics

CNN_SIZE = 128  # px; resnet18 at 128 px runs ~45 img/s on one CPU thread (224 px: ~18 img/s)
CNN_SEEDS = (0, 1, 2)
BATCH = 32
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass(frozen=True)
class Features:
    name: str  # e.g. "stats", "random_cnn/seed0"
    sha: str  # identifies the extractor exactly (code + seed + weights)
    X: np.ndarray  # (n, d) float32, rows in the order of the paths given
    names: tuple[str, ...] | None = None  # column names (stats only)


def _sha(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return h.hexdigest()[:16]


def _progress(it, total: int, desc: str, show: bool):
    import sys

    if not show or not sys.stderr.isatty():  # a bar nested under the report's own moves the cursor up: escapes in a log
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, leave=False)


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch at one thread: on a small shared machine more threads collapse throughput."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


# ---------------------------------------------------------------------------- image statistics

STAT_NAMES = (
    "brightness", "contrast", "colourfulness", "lab_a", "lab_b", "log_sharpness", "noise_sigma",
    "jpeg_quality", "spectrum_slope", "edge_density", "saturation",
    *(f"hist_{c}{i}" for c in "rgb" for i in range(HIST_BINS)),
)


def image_stats(path: Path) -> np.ndarray:
    """The ``STAT_NAMES`` vector of one image, from the statistics the pixels section measured
    (props.image_statistics: one measurement per image per report)."""
    st = image_statistics(path)
    v = [st["brightness"], st["contrast"], st["colourfulness"], st["lab_a"], st["lab_b"], np.log(st["sharpness"] + 1e-6),
         st["noise_sigma"], 100.0 if st["jpeg_quality"] is None else st["jpeg_quality"],  # PNG: lossless = best quality
         st["spectrum_slope"], st["edge_density"], st["saturation"], *st["hist"]]
    return np.asarray(v, np.float32)


def stats(paths: Sequence[Path], progress: bool = False) -> Features:
    X = np.stack([image_stats(p) for p in _progress(paths, len(paths), "image stats", progress)]) if len(paths) else np.zeros((0, len(STAT_NAMES)), np.float32)
    src = "".join(inspect.getsource(f) for f in (image_stats, props._image_statistics, props.colour_stats, props.noise_sigma,
                                                 props.spectrum_slope, props.jpeg_quality))
    return Features("stats", _sha(src, STAT_NAMES), X, STAT_NAMES)


# ---------------------------------------------------------------------------- networks


def thumbnails(paths: Sequence[Path], size: int, progress: bool = False, desc: str = "load") -> np.ndarray:
    """(n, size, size, 3) uint8, each image squashed to a square (aspect is a property we want to see too)."""
    from ..data import upright

    out = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(_progress(paths, len(paths), desc, progress)):
        with Image.open(p) as im:
            im.draft("RGB", (size * 2, size * 2))  # JPEG DCT-domain downscale: much faster decode
            out[i] = np.asarray(upright(im).convert("RGB").resize((size, size), Image.BILINEAR))
    return out


def _run_net(net, thumbs: np.ndarray, progress: bool, desc: str) -> np.ndarray:
    import torch

    net.eval()
    rows = []
    batches = range(0, len(thumbs), BATCH)
    with one_thread(), torch.inference_mode():
        for i in _progress(batches, len(batches), desc, progress):
            x = (thumbs[i:i + BATCH].astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
            rows.append(net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).float().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def _resnet_trunk(net):
    from torch import nn

    net.fc = nn.Identity()  # output = global-average-pooled penultimate features
    return net


def random_cnn(paths: Sequence[Path], seeds: Sequence[int] = CNN_SEEDS, size: int = CNN_SIZE, progress: bool = False,
               thumbs: np.ndarray | None = None) -> list[Features]:
    """One Features per seed: ResNet-18 with torch.manual_seed(seed) random init, eval-mode BN, GAP features."""
    import torch
    from torchvision.models import resnet18

    thumbs = thumbnails(paths, size, progress) if thumbs is None else thumbs
    out = []
    for s in seeds:
        state = torch.random.get_rng_state()
        torch.manual_seed(s)
        net = _resnet_trunk(resnet18(weights=None))
        torch.random.set_rng_state(state)  # leave the caller's torch RNG as it was
        wsha = _sha(*(t.numpy().tobytes() for t in net.state_dict().values()))
        X = _run_net(net, thumbs, progress, f"random cnn seed {s}")
        out.append(Features(f"random_cnn/seed{s}", _sha("resnet18", size, s, wsha), X.astype(np.float32)))
    return out


def weights(paths: Sequence[Path], path: Path, progress: bool = False, size: int = 224) -> Features:
    """A local torchvision ResNet-18/50 state_dict (never downloads); GAP features of the last stage."""
    import torch
    from torchvision.models import resnet18, resnet50

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    arch = resnet50 if any(k.endswith("conv3.weight") for k in state) else resnet18
    n_cls = state["fc.weight"].shape[0] if "fc.weight" in state else 1000
    net = arch(weights=None, num_classes=n_cls)
    net.load_state_dict(state)
    X = _run_net(_resnet_trunk(net), thumbnails(paths, size, progress), progress, f"{arch.__name__} weights")
    return Features(f"weights/{arch.__name__}", _sha(arch.__name__, size, Path(path).read_bytes()), X.astype(np.float32))


# ---------------------------------------------------------------------------- the user's detector


def best_checkpoint(run: Path) -> tuple[Path, str]:
    """The checkpoint of a `simgen train` folder, or of the best arm (by metrics.json mAP) of a `simgen utility` folder."""
    run = Path(run)
    if (run / "checkpoint.pt").is_file():
        return run, "the train run itself"
    scored = []
    for m in sorted(run.glob("**/metrics.json")):
        if (m.parent / "checkpoint.pt").is_file():
            try:
                scored.append((float(json.loads(m.read_text())["entry"]["map"]), m.parent))
            except (KeyError, ValueError, json.JSONDecodeError):
                continue
    if not scored:
        raise FileNotFoundError(f"no checkpoint.pt under {run}; pass report.run=<a simgen train or utility output folder>.")
    best_map, best = max(scored, key=lambda t: t[0])
    return best, f"best of {len(scored)} arms by mAP: {best.relative_to(run)} (mAP {best_map:.3f})"


def detector(paths: Sequence[Path], run: Path, progress: bool = False) -> tuple[Features, str]:
    """Pooled FPN features (each level global-average-pooled, concatenated) of a trained simgen detector."""
    import torch

    from ..train.models import model_from_run

    folder, why = best_checkpoint(run)
    model, _, prov = model_from_run(folder)
    model.eval()
    from ..data import upright

    rows = []
    with one_thread(), torch.inference_mode():
        for p in _progress(paths, len(paths), "detector features", progress):
            with Image.open(p) as im:
                x = torch.from_numpy(np.asarray(upright(im).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)
            images, _ = model.transform([x])  # the model's own resize + normalisation
            fmap = model.backbone(images.tensors)
            rows.append(torch.cat([f.mean(dim=(2, 3)) for f in fmap.values()], 1)[0].numpy())
    X = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
    wsha = _sha((folder / "checkpoint.pt").read_bytes())
    return Features(f"detector/{prov['model']['name']}", _sha("detector", wsha, inspect.getsource(detector)), X), why


# ---------------------------------------------------------------------------- shared, cached per report

EXTRACTORS = ("stats", "random_cnn", "detector", "weights")  # the names report.features takes (checked by report.cli)
_CACHE: dict[tuple, object] = {}
# what a missing run, a foreign checkpoint or an unreadable weights file raises: the section says so and goes on
EXTRACT_ERRORS = (ValueError, KeyError, OSError, RuntimeError, SimgenError)


def side_paths(side) -> list[Path]:
    return [side.image_path(i) for i in side.image_ids]


def cache_key(ctx, name: str) -> tuple:
    """What identifies one extractor's features in one report: the images of both sides and the extractor's settings."""
    seeds = tuple(ctx.options.get("cnn_seeds", CNN_SEEDS))
    size = int(ctx.options.get("cnn_size", CNN_SIZE))
    return (name, str(ctx.real.root), ctx.real.image_ids, str(ctx.synthetic.root), ctx.synthetic.image_ids, seeds, size,
            str(ctx.run), str(ctx.weights))


def extract(ctx, name: str) -> list[tuple[Features, Features]]:
    """(real, synthetic) Features pairs for one extractor named in ctx.features, computed once per report.

    random_cnn gives one pair per seed; the others one pair. Cached in memory: the feature, diversity and
    leakage sections all ask for the same spaces."""
    seeds = tuple(ctx.options.get("cnn_seeds", CNN_SEEDS))
    size = int(ctx.options.get("cnn_size", CNN_SIZE))
    key = cache_key(ctx, name)
    if key in _CACHE:
        return _CACHE[key]  # type: ignore[return-value]
    pr, ps = side_paths(ctx.real), side_paths(ctx.synthetic)
    if name == "stats":
        pairs = [(stats(pr, ctx.progress), stats(ps, ctx.progress))]
    elif name == "random_cnn":
        pairs = list(zip(random_cnn(pr, seeds, size, ctx.progress), random_cnn(ps, seeds, size, ctx.progress)))
    elif name == "detector":
        if ctx.run is None:
            raise ValueError("the detector extractor needs report.run=<simgen train/utility folder>")
        (fr, why), (fs, _) = detector(pr, ctx.run, ctx.progress), detector(ps, ctx.run, ctx.progress)
        _CACHE[("why", key)] = why
        pairs = [(fr, fs)]
    elif name == "weights":
        if ctx.weights is None:
            raise ValueError("the weights extractor needs report.weights=<local torchvision .pth>")
        pairs = [(weights(pr, ctx.weights, ctx.progress), weights(ps, ctx.weights, ctx.progress))]
    else:
        raise ValueError(f"unknown feature extractor `{name}`; known: {', '.join(EXTRACTORS)}")
    _CACHE[key] = pairs
    return pairs


def detector_choice(ctx) -> str | None:
    """Which checkpoint the detector extractor used, in words (after :func:`extract`)."""
    for k, v in _CACHE.items():
        if k[0] == "why" and k[1][0] == "detector" and k[1][-2] == str(ctx.run):
            return str(v)
    return None


# ---------------------------------------------------------------------------- figures


def contact_sheet(paths: Sequence[Path], captions: Sequence[str], out: Path, cols: int = 6, size: int = 160) -> Path:
    """A grid of thumbnails with one caption line each, written as PNG."""
    n = max(1, len(paths))
    rows = (n + cols - 1) // cols
    sheet = np.full((rows * (size + 18), cols * size, 3), 255, np.uint8)
    from ..data import upright

    for i, (p, c) in enumerate(zip(paths, captions)):
        r, k = divmod(i, cols)
        with Image.open(p) as im:
            im = upright(im)
            im.thumbnail((size, size))
            a = np.asarray(im.convert("RGB"))
        y, x = r * (size + 18), k * size
        sheet[y:y + a.shape[0], x:x + a.shape[1]] = a
        cv2.putText(sheet, str(c)[:26], (x + 2, y + size + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out)
    return out

