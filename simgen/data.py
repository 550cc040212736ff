"""Datasets for PyTorch: any COCO folder (ours or a real holdout) as ``(image, target)`` with
torchvision ``tv_tensors``, ready for ``torchvision.transforms.v2``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

from .errors import DatasetError
# Real+synthetic mixing lives with the trainer that uses it, but it is a dataset/sampler like the
# rest of this module, so users reach it here: ``from simgen.data import MixedDataset``.
from .train.mix import MixedDataset, MixSampler, share as mix_share  # noqa: F401


def safe_path(root: Path, rel: str) -> Path:
    """``root/rel``, refusing absolute paths and ``..`` that leave the dataset folder."""
    p = (root / rel).resolve()
    if Path(rel).is_absolute() or not p.is_relative_to(root.resolve()):
        raise DatasetError(f"file_name `{rel}` points outside the dataset folder {root}; file names must be relative paths inside it.")
    return p


def load_coco(root: Path, ann_file: str | Path | None = None) -> dict:
    """Read and sanity-check a COCO detection file, with one-line errors that say how to fix it."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder `{root}` does not exist; pass a folder that holds annotations.json.")
    path = Path(ann_file) if ann_file else root / "annotations.json"
    if not path.is_file():
        raise DatasetError(f"`{path}` not found; a dataset folder needs annotations.json (render one with `simgen render out={root}`).")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"`{path}` is not valid JSON ({e.msg} at line {e.lineno}); the file is corrupt: re-render it or restore it.") from None
    except UnicodeDecodeError:
        raise DatasetError(f"`{path}` is not a text JSON file; the file is corrupt: re-render it or restore it.") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")):
        raise DatasetError(f"`{path}` is not COCO: it needs lists `images`, `annotations` and `categories`.")
    try:
        img_ids = {im["id"] for im in doc["images"]}
        cat_ids = {c["id"] for c in doc["categories"]}
        for a in doc["annotations"]:
            if a["image_id"] not in img_ids or a["category_id"] not in cat_ids or len(a["bbox"]) != 4:
                raise DatasetError(f"`{path}`: annotation {a.get('id')} refers to a missing image or category, or has a bad bbox; fix or re-render the file.")
        for im in doc["images"]:
            safe_path(root, im["file_name"])
    except (KeyError, TypeError) as e:
        raise DatasetError(f"`{path}` is not valid COCO (missing or wrong field {e}); fix or re-render the file.") from None
    return doc


class CocoDataset(torch.utils.data.Dataset):
    """A COCO detection folder as ``(tv_tensors.Image, target)``.

    target: ``boxes`` (BoundingBoxes, XYXY float), ``labels`` (int64), ``masks`` (Mask, uint8; only when
    the file has segmentations and ``masks=True``), ``image_id`` (int).
    ``categories``: names to map to labels 1..N in that order (match by name across datasets); by
    default the file's own categories in id order. Annotations of other categories are an error unless
    ``ignore_unknown``.
    """

    def __init__(self, root: str | Path, ann_file: str | Path | None = None, transforms=None, masks: bool = True,
                 categories: list[str] | None = None, ignore_unknown: bool = False) -> None:
        self.root = Path(root)
        self.doc = load_coco(self.root, ann_file)
        self.transforms = transforms
        own = sorted(self.doc["categories"], key=lambda c: c["id"])
        self.categories = list(categories) if categories is not None else [c["name"] for c in own]
        index = {n: k + 1 for k, n in enumerate(self.categories)}
        self.cat_to_label: dict[int, int] = {}
        for c in own:
            if c["name"] in index:
                self.cat_to_label[c["id"]] = index[c["name"]]
            elif not ignore_unknown:
                raise DatasetError(f"{self.root}: category `{c['name']}` is not among {self.categories}; map it explicitly or drop it.")
        self.images = sorted(self.doc["images"], key=lambda im: im["id"])
        self.anns: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for a in self.doc["annotations"]:
            if a.get("iscrowd", 0) == 0 and a["category_id"] in self.cat_to_label and a["bbox"][2] > 0 and a["bbox"][3] > 0:
                self.anns[a["image_id"]].append(a)
        self.has_masks = masks and any("segmentation" in a for a in self.doc["annotations"])
        self.sources = ["coco"] * len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, idx: int) -> Path:
        return safe_path(self.root, self.images[idx]["file_name"])

    def target(self, idx: int) -> dict:
        im = self.images[idx]
        anns = self.anns[im["id"]]
        h, w = im["height"], im["width"]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
                             dtype=torch.float32).reshape(-1, 4)
        target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
                  "labels": torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
                  "image_id": int(im["id"])}
        if self.has_masks:
            ms = np.zeros((len(anns), h, w), np.uint8)
            for k, a in enumerate(anns):
                seg = a.get("segmentation")
                if isinstance(seg, dict):
                    rle = seg if isinstance(seg.get("counts"), (str, bytes)) else mask_utils.frPyObjects(seg, h, w)
                    ms[k] = mask_utils.decode(rle)
                elif isinstance(seg, list) and seg:
                    ms[k] = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
            target["masks"] = tv_tensors.Mask(torch.from_numpy(ms))
        return target

    def __getitem__(self, idx: int):
        path = self.image_path(idx)
        try:
            with Image.open(path) as pil:
                img = tv_tensors.Image(F.pil_to_tensor(pil.convert("RGB")))
        except FileNotFoundError:
            raise DatasetError(f"image `{path}` listed in annotations.json is missing; restore it or re-render the dataset.") from None
        except (UnidentifiedImageError, OSError):
            raise DatasetError(f"image `{path}` cannot be decoded; the file is corrupt: re-render or remove it.") from None
        target = self.target(idx)
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target


def collate(batch):
    """Detection batches are lists: images differ in their number of boxes."""
    return tuple(zip(*batch))


def decode_wds_sample(sample: dict, masks: bool = True):
    """A WebDataset sample written by simgen -> ``(tv_tensors.Image, target)`` like :class:`CocoDataset`."""
    import io

    meta = json.loads(sample["json"])
    key = next(k for k in ("jpg", "png") if k in sample)
    with Image.open(io.BytesIO(sample[key])) as pil:
        img = tv_tensors.Image(F.pil_to_tensor(pil.convert("RGB")))
    im, anns = meta["image"], meta["annotations"]
    h, w = im["height"], im["width"]
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
                         dtype=torch.float32).reshape(-1, 4)
    target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
              "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64), "image_id": int(im["id"])}
    if masks:
        ms = np.stack([mask_utils.decode(a["segmentation"]) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
        target["masks"] = tv_tensors.Mask(torch.from_numpy(ms))
    return img, target


def _check_local(urls, allow_pipe: bool) -> None:
    """Refuse ``pipe:`` (a shell command) and other scheme URLs (opened through curl and friends) unless allowed."""
    import re

    for u in [urls] if isinstance(urls, (str, Path)) else (urls if isinstance(urls, (list, tuple)) else []):
        u = str(u)
        if not allow_pipe and re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", u) and not u.startswith("file:"):
            raise DatasetError(f"webdataset: `{u[:60]}` is not a local path ({u.split(':', 1)[0]}: runs a command or a download); "
                               "pass local shard paths or a folder, or allow_pipe=True if you trust it.")


def webdataset(urls, transforms=None, masks: bool = True, allow_pipe: bool = False, **kwargs):
    """Stream a simgen WebDataset (tar shards: local paths, a folder or brace patterns) as ``(image, target)``.

    ``pipe:`` and remote URLs (http, gs, s3, ...) make webdataset run a shell command or a downloader; they are
    refused unless ``allow_pipe=True``."""
    _check_local(urls, allow_pipe)
    import webdataset as wds

    def to_pair(sample):
        img, target = decode_wds_sample(sample, masks)
        return transforms(img, target) if transforms is not None else (img, target)

    if isinstance(urls, (str, Path)) and Path(urls).is_dir():
        urls = sorted(str(p) for p in Path(urls).glob("shard-*.tar"))
        if not urls:
            raise DatasetError("no shard-*.tar files in that folder; render with writer=webdataset first.")
    kwargs.setdefault("shardshuffle", False)
    return wds.WebDataset(urls, **kwargs).map(to_pair)


class RenderedDataset(torch.utils.data.Dataset):
    """Images rendered on the fly, inside the DataLoader worker that asks for them.

    Map-style over image indices ``0..n_images-1``: the DataLoader's sampler hands every index to
    exactly one worker, and sample i equals image i of ``simgen render`` with the same config and seed
    (pixels identical for ``image_format=png``; JPEG on disk adds its compression). Each worker
    process builds its own PyBullet worlds on first use; with ``renderer=egl`` use
    ``DataLoader(..., multiprocessing_context="spawn")`` (EGL does not survive fork).
    """

    def __init__(self, cfg, transforms=None, masks: bool = True) -> None:
        from .config import RenderConfig, render_config

        self.cfg: RenderConfig = cfg if isinstance(cfg, RenderConfig) else render_config(dict(cfg))
        self.transforms = transforms
        self.masks = masks
        self.categories = list(self.cfg.scene.categories)
        self._cat_ids = {c: k + 1 for k, c in enumerate(self.categories)}
        self._gen = None
        self._pid = None

    def __len__(self) -> int:
        return self.cfg.n_images

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_gen"] = None  # PyBullet clients cannot cross processes: each worker makes its own
        return state

    def _generator(self):
        import os

        if self._gen is None or self._pid != os.getpid():
            from .pipeline import Generator
            from .render import share_software_gl
            from .run import quiet_stdout

            info = torch.utils.data.get_worker_info()
            share_software_gl(info.num_workers if info is not None else 1)
            with quiet_stdout((1, 2)):
                self._gen = Generator(self.cfg)
            self._pid = os.getpid()
        return self._gen

    def record(self, idx: int):
        from .run import quiet_stdout

        if not 0 <= idx < len(self):
            raise IndexError(idx)
        with quiet_stdout():
            return self._generator().generate(idx)

    def __getitem__(self, idx: int):
        rec = self.record(idx)
        h, w = rec.rgb.shape[:2]
        boxes = torch.tensor([list(i.bbox_xyxy) for i in rec.instances], dtype=torch.float32).reshape(-1, 4)
        target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
                  "labels": torch.tensor([self._cat_ids[i.category] for i in rec.instances], dtype=torch.int64),
                  "image_id": idx + 1}
        if self.masks:
            ms = np.stack([i.mask for i in rec.instances]).astype(np.uint8) if rec.instances else np.zeros((0, h, w), np.uint8)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(ms))
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rec.rgb)).permute(2, 0, 1))
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target
