"""The holdout guard: never train on an image that is in the holdout.

Images are compared by content (SHA-256 of the file bytes), so a copied or renamed holdout image is
caught wherever it sits. Dataset identity (for provenance) is the manifest's
``annotations_sha256`` when the folder is a simgen dataset, else the hash of annotations.json.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..data import found_elsewhere, load_coco, safe_path
from ..errors import DatasetError
from ..provenance import file_sha256


def image_hashes(root: Path, doc: dict | None = None, unique: bool = False) -> dict[str, str]:
    """``{sha256: file_name}`` for every image listed in ``root``'s annotations.json. ``unique``: one photo listed
    twice (two ids, one file or two copies) is refused: a holdout scores it twice, its objects counted double."""
    root = Path(root)
    doc = doc if doc is not None else load_coco(root)
    out: dict[str, str] = {}
    ids: dict[str, int] = {}
    for im in doc["images"]:
        p = safe_path(root, im["file_name"])
        if not p.is_file():  # said now, before training: it was found when scoring, after the whole training budget
            raise DatasetError(f"image `{im['file_name']}` listed in {root / 'annotations.json'} is missing"
                               + (found_elsewhere(root, im["file_name"]) or "; restore it, or remove its entry (and its "
                                  "annotations) from annotations.json") + ".")
        h = file_sha256(p)
        if unique and h in out:
            same = "is listed twice" if out[h] == im["file_name"] else f"and `{out[h]}` are the same photo"
            raise DatasetError(f"holdout {root}: `{im['file_name']}` {same} (image ids {ids[h]} and {im['id']}): it would be scored "
                               "twice; remove one entry (and its annotations) from annotations.json.")
        out[h], ids[h] = im["file_name"], im["id"]
    return out


def check_no_leak(train_roots: list[Path], holdout: Path, holdout_hashes: dict[str, str] | None = None) -> dict[str, str]:
    """Raise :class:`DatasetError` if a training folder is the holdout or holds any of its images."""
    holdout = Path(holdout).resolve()
    hh = holdout_hashes if holdout_hashes is not None else image_hashes(holdout, unique=True)
    for root in train_roots:
        root = Path(root).resolve()
        if root == holdout or holdout.is_relative_to(root) or root.is_relative_to(holdout):
            raise DatasetError(f"training folder {root} is (or contains, or is inside) the holdout {holdout}; never train on the holdout: pick another folder.")
        hits = [(fn, hh[h]) for h, fn in image_hashes(root).items() if h in hh]
        if hits:
            fn, hfn = hits[0]
            raise DatasetError(f"training folder {root} holds {len(hits)} holdout image(s) by content (e.g. {fn} = holdout {hfn}); "
                               f"remove them from the training data: the holdout must never be trained on.")
    return hh


def dataset_identity(root: Path) -> dict:
    """Path, size and content hashes of a dataset folder, for provenance."""
    root = Path(root).resolve()
    ann = root / "annotations.json"
    ident = {"path": str(root), "annotations_sha256": file_sha256(ann) if ann.is_file() else None}
    m = root / "manifest.json"
    if m.is_file():
        try:
            man = json.loads(m.read_text())
            ident["manifest_annotations_sha256"] = man.get("annotations_sha256")
            ident["manifest_sha256"] = file_sha256(m)
            ident["simgen_seed"] = man.get("seed")
            ident["git_commit"] = man.get("git_commit")
        except json.JSONDecodeError:
            ident["manifest_sha256"] = file_sha256(m)
    try:  # load_coco: parsed once per command inside coco_cache()
        doc = load_coco(root)
        ident["n_images"], ident["n_annotations"] = len(doc["images"]), len(doc["annotations"])
    except DatasetError:
        pass
    return ident


def holdout_identity(root: Path, hashes: dict[str, str]) -> dict:
    ident = dataset_identity(root)
    ident["images_sha256"] = hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest()
    return ident
