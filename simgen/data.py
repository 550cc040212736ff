"""Datasets for PyTorch: any COCO folder (ours or a real holdout) as ``(image, target)`` with
torchvision ``tv_tensors``, ready for ``torchvision.transforms.v2``."""
from __future__ import annotations

import contextlib
import json
import math
import os
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


def show(value: object, limit: int = 60) -> str:
    """A value from a file, fit for a one-line message: repr (escapes newlines and control characters), cut short."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


def printable(path: str | Path) -> str:
    """A path for a one-line message: control characters (a newline in a file_name) escaped, the rest as is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def safe_path(root: Path, rel: object) -> Path:
    """``root/rel``, refusing absolute paths and ``..`` that leave the dataset folder."""
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"file_name {show(rel)} in {root} is not a file name; file names must be relative paths inside the dataset folder.")
    try:
        p = (root / rel).resolve()
    except (ValueError, OSError):  # a NUL byte, a path too long or a symlink loop: no file it could name
        raise DatasetError(f"file_name {show(rel)} in {root} is not a usable path; fix it or re-render the dataset.") from None
    if Path(rel).is_absolute() or not p.is_relative_to(root.resolve()):
        link = _link_out(root, rel)
        if link is not None:  # inside by name, outside through a link: say which, it is most often a linked images/ folder
            raise DatasetError(f"file_name {show(rel)} in {root} leads outside the dataset folder through the symbolic link {link} "
                               f"(-> {os.readlink(link)}); simgen reads only files inside a dataset folder: copy or hard-link "
                               "the files in, or use the folder the link leads to as the dataset.")
        raise DatasetError(f"file_name {show(rel)} points outside the dataset folder {root}; file names must be relative paths inside it.")
    return p


def found_elsewhere(root: Path, rel: object) -> str:
    """For a listed image that is not at ``root/rel``: " (a file of that name is at images/x.jpg: ...)" where one of that
    name lies elsewhere in the folder, else "". Exports of labelling tools often list bare names for images kept in a
    subfolder (CVAT's images/default/), which otherwise reads as a lost photo."""
    if not isinstance(rel, str) or not rel:
        return ""
    import glob

    hits = []
    for hit in Path(root).rglob(glob.escape(Path(rel).name)):
        if hit.is_file():
            hits.append(hit)
            if len(hits) > 1:  # several of that name: no guess
                return ""
    if not hits:
        return ""
    at = hits[0].relative_to(root).as_posix()
    return (f" (a file of that name is at `{at}`: file_name is relative to the folder holding annotations.json; list it "
            f"as `{at}`, or move the file to `{rel}`)")


def _link_out(root: Path, rel: str) -> Path | None:
    """The first symbolic link on the way from ``root`` to ``rel`` when ``rel`` stays inside ``root`` by name."""
    parts = Path(os.path.normpath(rel)).parts
    if not parts or parts[0] == ".." or Path(rel).is_absolute():
        return None
    here = root
    for part in parts:
        here = here / part
        if here.is_symlink():
            return here
    return None


_coco_memo: dict[tuple, dict] | None = None  # load_coco's documents while a coco_cache() block is open


@contextlib.contextmanager
def coco_cache():
    """Within this block :func:`load_coco` parses and checks each file once and returns that same dict again while the
    file is unchanged (path, folder, size, modification time). One training command reads a folder's file in several
    places (class names, unscored classes, the leak guard, the dataset itself): a 100k-annotation file costs seconds
    each time. The dict is shared, so code inside the block must not change it. Nested blocks share the outer cache;
    outside any block every call reads the file afresh, as before."""
    global _coco_memo
    outer = _coco_memo
    if outer is None:
        _coco_memo = {}
    try:
        yield
    finally:
        _coco_memo = outer


def load_coco(root: Path, ann_file: str | Path | None = None) -> dict:
    """Read and sanity-check a COCO detection file, with one-line errors that say how to fix it (inside
    :func:`coco_cache`, once per unchanged file)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder `{root}` does not exist; pass a folder that holds annotations.json.")
    path = Path(ann_file) if ann_file else root / "annotations.json"
    if not path.is_file():
        if ann_file is None:
            from .merge import webdataset_render

            if webdataset_render(root):  # rendered, as tar shards: "render one" would send the user round in a circle
                raise DatasetError(f"{root} is a WebDataset render (writer=webdataset: tar shards, no annotations.json); this "
                                   "command reads a COCO dataset: render with writer=coco, or stream the shards with "
                                   "simgen.data.webdataset.")
        if ann_file is None:  # a labelling tool's export under its own name (Roboflow's _annotations.coco.json, CVAT's
            # annotations/instances_default.json): say which file to rename, not "render one"
            named = sorted(str(q.relative_to(root)) for q in [*root.glob("*.json"), *root.glob("annotations/*.json")] if _looks_coco(q))
            if named:
                raise DatasetError(f"`{path}` not found; simgen reads a folder's COCO file as annotations.json beside the images' "
                                   f"paths, and this folder has {', '.join(named[:3])}: if that is its COCO file, copy or rename it "
                                   f"to {root / 'annotations.json'} (file names in it are read relative to that folder).")
        raise DatasetError(f"`{path}` not found; a dataset folder needs annotations.json (render one with `simgen render out={root}`).")
    memo, key = _coco_memo, None
    if memo is not None:
        try:
            st = path.stat()
            key = (str(path.resolve()), str(root.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:  # said below, where the file is read
            pass
        if key in memo:
            return memo[key]
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"`{path}` is not valid JSON ({e.msg.removesuffix(' at')} at line {e.lineno}, column {e.colno}); the file is corrupt: re-render it or restore it.") from None
    except UnicodeDecodeError:
        raise DatasetError(f"`{path}` is not a text JSON file; the file is corrupt: re-render it or restore it.") from None
    except RecursionError:
        raise DatasetError(f"`{path}` nests too deeply to be COCO; the file is corrupt: re-render it or restore it.") from None
    except OSError as e:
        raise DatasetError(f"`{path}` cannot be read ({e.strerror}); check its permissions.") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")):
        raise DatasetError(f"`{path}` is not COCO: it needs lists `images`, `annotations` and `categories`.")
    check_coco(doc, root, path)
    if memo is not None and key is not None:
        memo[key] = doc
    return doc


def _looks_coco(path: Path) -> bool:
    """Does a JSON file hold an "images" list near its start (a COCO file; not simgen's own manifest or metadata)?"""
    import re

    if path.name in ("manifest.json", "croissant.json"):
        return False
    try:
        with open(path, "rb") as f:
            return re.search(rb'"images"\s*:\s*\[', f.read(1 << 16)) is not None
    except OSError:
        return False


MAX_SIDE = 1 << 16  # pixels; beyond this a width or height is damage, and its masks would not fit in memory


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


ORIENTATION = 0x0112  # EXIF tag: how to turn the stored pixels to show them (1: as stored)


def _shown_size(p: Path, im: dict, bad) -> tuple[int, int]:
    """(width, height) of an image file as shown (EXIF orientation applied), from its header."""
    try:
        with Image.open(p) as pil:
            w, h = pil.size
            turned = pil.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)  # the four that swap the sides
    except (OSError, ValueError, Image.DecompressionBombError):
        raise bad(f"image {im['id']} gives no width/height and its file `{im.get('file_name')}` cannot be read as an image "
                  "to take them from (add them, or restore the file)") from None
    return (h, w) if turned else (w, h)


def check_coco(doc: dict, root: Path, path: Path) -> None:
    """Every field a reader trusts, checked once, before anything uses it: unique integer ids, images with a
    usable file_name and size, categories with a name, annotations on a listed image and category whose bbox is
    four finite numbers. A bad file gets one line naming the first bad entry, never a crash further on."""

    def bad(what: str) -> DatasetError:
        return DatasetError(f"`{path}`: {what}; fix or re-render the file.")

    for group in ("images", "annotations", "categories"):
        seen: set[int] = set()
        for x in doc[group]:
            if not isinstance(x, dict):
                raise bad(f"an entry of `{group}` is {show(x)}, not an object")
            if not _is_int(x.get("id")):
                raise bad(f"an entry of `{group}` has id {show(x.get('id'))}, not an integer")
            if x["id"] in seen:
                raise bad(f"{group} id {x['id']} appears twice (ids must be unique)")
            seen.add(x["id"])
    for c in doc["categories"]:
        if not isinstance(c.get("name"), str):
            raise bad(f"category {c['id']} has name {show(c.get('name'))}, not a string")
    for im in doc["images"]:
        p = safe_path(root, im.get("file_name"))
        if im.get("width") is None or im.get("height") is None:
            # a labelling tool's export without the image size: read it from the file (as shown: EXIF-turned photos
            # are read turned), where "has width None" sent the user to look it up by hand for every image
            w, h = _shown_size(p, im, bad)
            im["width"] = w if im.get("width") is None else im["width"]  # one given is kept, and checked below
            im["height"] = h if im.get("height") is None else im["height"]
        for k in ("width", "height"):
            if not _is_int(im.get(k)) or not 0 < im[k] <= MAX_SIDE:
                raise bad(f"image {im['id']} has {k} {show(im.get(k))}; it must be an integer from 1 to {MAX_SIDE}")
    img_ids, cat_ids = {im["id"] for im in doc["images"]}, {c["id"] for c in doc["categories"]}
    for a in doc["annotations"]:
        if not (_is_int(a.get("image_id")) and a["image_id"] in img_ids and _is_int(a.get("category_id")) and a["category_id"] in cat_ids):
            raise bad(f"annotation {a['id']} refers to image {show(a.get('image_id'))} and category {show(a.get('category_id'))}, "
                      "which are not both listed")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)):
            raise bad(f"annotation {a['id']} has bbox {show(box)}; it must be 4 finite numbers [x, y, width, height]")


def segmentation_mask(a: dict, h: int, w: int, root: Path) -> np.ndarray:
    """The mask of one annotation (RLE, uncompressed RLE or polygons) at its image's size; zeros without one."""
    seg = a.get("segmentation")
    try:
        if isinstance(seg, dict):
            rle = seg if isinstance(seg.get("counts"), (str, bytes)) else mask_utils.frPyObjects(seg, h, w)
            m = mask_utils.decode(rle)
        elif isinstance(seg, list) and seg:
            m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
        else:
            return np.zeros((h, w), np.uint8)
    except Exception:  # pycocotools raises bare Exception, ValueError, TypeError, OverflowError... for a malformed one
        raise DatasetError(f"{root}: annotation {a.get('id')} has a segmentation pycocotools cannot decode ({show(seg)}); "
                           "fix or re-render the file.") from None
    if m.shape != (h, w):
        raise DatasetError(f"{root}: annotation {a.get('id')} has a {m.shape[1]}x{m.shape[0]} mask on a {w}x{h} image; "
                           "fix the segmentation size or the image's width/height.")
    return m


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
                ms[k] = segmentation_mask(a, h, w, self.root)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(ms))
        return target

    def __getitem__(self, idx: int):
        path = self.image_path(idx)
        try:
            with Image.open(path) as pil:
                img = tv_tensors.Image(F.pil_to_tensor(upright(pil).convert("RGB")))
        except FileNotFoundError:
            raise DatasetError(f"image `{printable(path)}` listed in annotations.json is missing; restore it or re-render the dataset.") from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            raise DatasetError(f"image `{printable(path)}` cannot be decoded; the file is corrupt: re-render or remove it.") from None
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

    folders = [urls] if isinstance(urls, (str, Path)) else list(urls) if isinstance(urls, (list, tuple)) else []
    if folders and all(Path(u).is_dir() for u in folders):
        # a render's folder, the out= of a sharded one (its shards/<k>-of-<n> folders, each with its own shard-*.tar),
        # or several such folders: every tar in them, in order
        urls = [str(t) for d in folders for t in _wds_tars(Path(d))]
        if not urls:
            raise DatasetError(f"no shard-*.tar files in {', '.join(str(d) for d in folders)} (nor under shards/); render with "
                               "writer=webdataset first, or pass the tar files.")
    kwargs.setdefault("shardshuffle", False)
    return wds.WebDataset(urls, **kwargs).map(to_pair)


def _wds_tars(d: Path) -> list[Path]:
    """The tar shards of a writer=webdataset render folder, or of each shard folder under its shards/."""
    tars = sorted(d.glob("shard-*.tar"))
    if not tars and (d / "shards").is_dir():
        tars = [t for sub in sorted(p for p in (d / "shards").iterdir() if p.is_dir()) for t in sorted(sub.glob("shard-*.tar"))]
    return tars


def worker_context() -> str:
    """The ``multiprocessing_context`` for a DataLoader over :class:`RenderedDataset`: ``fork`` where this process has
    loaded no GL, EGL or GPU driver library, else ``spawn`` (a GL context does not survive fork); the rule simgen's own
    render workers follow (:func:`simgen.run.start_method`; ``SIMGEN_START_METHOD`` sets it). A forked DataLoader
    worker imports nothing again: over a tabletop RenderedDataset with 2 workers the first batch came 1.6 s after the
    iterator started instead of 5.2-5.6 s spawned, and a DataLoader without ``persistent_workers`` pays that every epoch."""
    from .run import start_method

    return start_method()


def upright(pil):
    """The image as it is shown: a phone's JPEG stores its pixels as the sensor read them and says in EXIF how to turn
    them (Orientation), and annotators box the turned image. Without this a portrait photo was read on its side, under
    boxes drawn upright (OpenCV's imread turns it; Pillow does not)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(pil) if pil.getexif().get(ORIENTATION, 1) != 1 else pil


class RenderedDataset(torch.utils.data.Dataset):
    """Images rendered on the fly, inside the DataLoader worker that asks for them.

    Map-style over image indices ``0..n_images-1``: the DataLoader's sampler hands every index to
    exactly one worker, and sample i equals image i of ``simgen render`` with the same config and seed
    (pixels identical for ``image_format=png``; JPEG on disk adds its compression). Each worker
    process builds its own PyBullet worlds on first use. Start the workers with
    ``DataLoader(..., multiprocessing_context=simgen.data.worker_context())``: ``fork`` while this process has no GL
    context (fast), ``spawn`` once it has one (``renderer=egl``, ``gl`` and ``auto`` load GL, and a GL context does not
    survive fork).
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

    @classmethod
    def from_overrides(cls, overrides: list[str] | tuple[str, ...] = (), transforms=None, masks: bool = True) -> "RenderedDataset":
        """The images ``simgen render <overrides>`` would write, rendered on the fly: the same ``key=value`` overrides
        and checks as the command line, e.g. ``RenderedDataset.from_overrides(["scene=dice", "n_images=10000"])``."""
        from .cli import render_config_of

        return cls(render_config_of(overrides), transforms=transforms, masks=masks)

    @classmethod
    def from_dataset(cls, folder: str | Path, transforms=None, masks: bool = True) -> "RenderedDataset":
        """The images of a rendered dataset folder, rendered again on the fly: its manifest's config, with the renderer
        that run used (``renderer=auto`` chooses by a speed probe, which another machine or thread count may answer
        differently; the labels of two renderers differ by a pixel at edges). A shard's folder gives every image of the
        whole dataset (its config's n_images), not only that shard's."""
        from .config import render_config

        folder = Path(folder)
        try:
            man = json.loads((folder / "manifest.json").read_text())
            d = dict(man["config"])
            used = man["renderer"]
        except (OSError, ValueError, KeyError, TypeError):
            raise DatasetError(f"{folder / 'manifest.json'} is missing or not a simgen manifest; pass a folder `simgen render` "
                               "finished.") from None
        if used in ("tiny", "egl", "gl"):
            given = d.get("renderer")  # the composed {name, devices}, or a bare name where a script passed one
            d["renderer"] = {**(given if isinstance(given, dict) else {}), "name": used}
        return cls(render_config(d), transforms=transforms, masks=masks)

    def __len__(self) -> int:
        return self.cfg.n_images

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_gen"] = None  # PyBullet clients cannot cross processes: each worker makes its own
        return state

    def _generator(self):
        import os

        if self._gen is None or self._pid != os.getpid():
            from .run import quiet_stdout

            with quiet_stdout((1, 2)):  # importing pybullet prints its build time on fd 2, in every DataLoader worker
                from .pipeline import Generator
                from .render import share_cv_threads, share_software_gl

            info = torch.utils.data.get_worker_info()
            share_software_gl(info.num_workers if info is not None else 1)
            if info is not None:  # a worker process of its own: the DataLoader's workers share the cores
                share_cv_threads(info.num_workers)
            if info is not None:  # a DataLoader worker: PyBullet's and the EGL plugin's lines must not reach the terminal
                from .run import mute_stdout

                mute_stdout()
            with quiet_stdout((1, 2)):
                self._gen = Generator(self.cfg)
            self._pid = os.getpid()
            if info is not None:
                import atexit

                # Disconnect while the interpreter is whole: the EGL plugin torn down during finalization can abort
                # the worker ("terminate called without an active exception"), which the DataLoader reports.
                atexit.register(self._close)
        return self._gen

    def _close(self) -> None:
        from .run import quiet_stdout

        if self._gen is not None:
            with quiet_stdout((1, 2)):
                self._gen.close()
            self._gen = None

    def record(self, idx: int):
        from .run import quiet_stdout

        import operator

        try:
            idx = operator.index(idx)  # an int or a numpy integer; 1.5 or "3" is the caller's mistake, said as such
        except TypeError:
            raise TypeError(f"RenderedDataset indices are integers, got {idx!r} ({type(idx).__name__}).") from None
        n = len(self)
        if idx < 0:  # counted from the end, as a list (and CocoDataset) count
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"image index {idx if idx >= 0 else idx - n} is out of range for {n} images (0..{n - 1}, or -{n}..-1).")
        with quiet_stdout():
            return self._generator().generate(idx)

    def __getitem__(self, idx: int):
        rec = self.record(idx)
        idx = rec.index
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
