"""``simgen export <coco folder> format=yolo out=<dir>``: a finished COCO dataset (simgen's or any other) as an
Ultralytics YOLO folder: ``images/`` (hard links to the source images when on the same filesystem, else copies; never
symlinks), ``labels/<stem>.txt``, ``data.yaml`` and ``export.json`` (what it came from).

COCO stays the format simgen renders, resumes, shards and merges; YOLO is an export of the result. Everything is
checked before anything is written, the folder is built under a temporary name beside ``out`` and renamed into place,
so ``out`` is either a whole export or untouched."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .data import found_elsewhere, load_coco, safe_path
from .errors import ConfigError, DatasetError, did_you_mean
from .merge import link_or_copy, webdataset_render
from .provenance import sha256_file
from .writers.coco import atomic_json, flush_all
from .writers.yolo import DATA_YAML, YoloLabels, YoloOptions, data_yaml, remove_stale, write_texts, yolo_labels

FORMATS = ("yolo",)
KEYS = ("format", "out", "overwrite", "segments", "val_fraction")
MARKER = "export.json"  # says simgen made the folder: overwrite=true replaces only such a folder
USAGE = ("usage: simgen export <coco dataset folder> format=yolo out=<dir> [overwrite=true] [segments=true] [val_fraction=0.1]\n"
         "Writes an Ultralytics YOLO copy (images hard-linked when possible, labels/, data.yaml) of a finished COCO dataset.")


@dataclass(frozen=True)
class ExportRequest:
    src: Path
    out: Path
    fmt: str = "yolo"
    overwrite: bool = False
    options: YoloOptions = field(default_factory=YoloOptions)


# ------------------------------------------------------------------ arguments
def _flag(key: str, v: str) -> bool:
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"{key} must be true or false, got `{v}`; e.g. {key}=true")


def _fraction(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        f = -1.0
    if not 0.0 <= f < 1.0:
        raise ConfigError(f"val_fraction must be a number in [0, 1), got `{v}`; e.g. val_fraction=0.1")
    return f


def parse_args(args: list[str]) -> ExportRequest:
    """``<dataset> key=value ...`` -> an :class:`ExportRequest`; unknown keys and bad values are one-line errors."""
    kv: dict[str, str] = {}
    dirs = []
    for a in args:
        key, sep, value = a.partition("=")
        if not sep:
            dirs.append(a)
        elif key not in KEYS:
            raise ConfigError(f"unknown option `{key}`." + did_you_mean(key, KEYS))
        else:
            kv[key] = value
    if len(dirs) != 1 or not kv.get("out"):
        raise ConfigError("simgen export needs one dataset folder and out=<dir>; e.g. simgen export datasets/dice format=yolo out=datasets/dice-yolo")
    fmt = kv.get("format", "yolo")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format `{fmt}`." + did_you_mean(fmt, FORMATS))
    opts = YoloOptions(segments=_flag("segments", kv.get("segments", "false")), val_fraction=_fraction(kv.get("val_fraction", "0")))
    return ExportRequest(Path(dirs[0]), Path(kv["out"]), fmt, _flag("overwrite", kv.get("overwrite", "false")), opts)


# ------------------------------------------------------------------ checks (nothing written yet)
def flat_names(doc: dict) -> dict[int, str]:
    """Image id -> ``images/<name>`` in the export: the source path without a leading images/, folders joined by "__"
    (one flat folder: Ultralytics finds labels by swapping the last images/ of a path for labels/). Should two names
    still collide, every name gets its image id in front, so the mapping stays a function of the document alone."""
    def flat(rel: str) -> str:
        parts = Path(rel).parts
        return "__".join(parts[1:] if len(parts) > 1 and parts[0] == "images" else parts)

    names = {im["id"]: flat(im["file_name"]) for im in doc["images"]}
    if len(set(names.values())) < len(names):
        names = {i: f"{i}_{n}" for i, n in names.items()}
    return {i: f"images/{n}" for i, n in names.items()}


def source_files(src: Path, doc: dict) -> dict[int, Path]:
    """Each image's file, all of which must exist (a half export is worse than none)."""
    files = {im["id"]: safe_path(src, im["file_name"]) for im in doc["images"]}
    for im in doc["images"]:
        if not files[im["id"]].is_file():
            raise DatasetError(f"image `{im['file_name']}` listed in {src / 'annotations.json'} is missing"
                               + (found_elsewhere(src, im["file_name"]) or "; restore it, or re-render the dataset") + ".")
    return files


def check_source(src: Path) -> None:
    """A WebDataset render has no annotations.json: say that, not "render one" (it was rendered, as tar shards)."""
    if not (src / "annotations.json").is_file() and webdataset_render(src):
        raise DatasetError(f"{src} is a WebDataset render (writer=webdataset: tar shards, no annotations.json) and export reads "
                           "a COCO dataset; render with writer=coco and export that, or with writer=yolo for COCO plus a YOLO view in one folder.")


def check_target(src: Path, out: Path, overwrite: bool) -> None:
    s, o = src.resolve(), out.resolve()
    # Inside the source, the export would sit among the dataset's own files: a re-render with overwrite=true of the
    # source keeps it (stale labels over new images), and ``out=<src>/images`` or ``<src>/labels`` mixes the two.
    if o == s or s.is_relative_to(o) or o.is_relative_to(s):
        where = "is" if o == s else ("holds" if s.is_relative_to(o) else "is inside")
        beside = src.parent / f"{src.name}-yolo" if src.name not in ("", "..") else s.parent / f"{s.name}-yolo"
        raise ConfigError(f"out={out} {where} the source dataset {src}; choose a folder outside it (e.g. out={beside}). "
                          "(A new render with writer=yolo writes COCO and its YOLO view into one folder.)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file; choose a folder path for the export.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"out={out} is not empty; choose another folder, or pass overwrite=true to replace a previous export.")
        if not (out / MARKER).is_file():
            raise ConfigError(f"out={out} is not empty and was not made by simgen export, so overwrite=true will not delete it; "
                              "choose an empty or new folder.")


# ------------------------------------------------------------------ writing
def install(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; a previous export there is moved aside first and deleted after."""
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.simgen-old.{os.getpid()}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)  # out absent, or an empty folder (rename replaces that)


def build(tmp: Path, req: ExportRequest, doc: dict, files: dict[int, Path]) -> dict:
    """Fill ``tmp`` with the export; returns its export.json record."""
    names = flat_names(doc)
    linked = sum(link_or_copy(files[i], tmp / rel) for i, rel in names.items())
    labels: YoloLabels = yolo_labels(doc, names, req.options)
    write_texts(tmp, labels)
    (tmp / "labels").mkdir(exist_ok=True)
    for name, rels in labels.lists.items():
        (tmp / name).write_text("".join(r + "\n" for r in rels))
    ann = req.src / "annotations.json"
    record = {"format": req.fmt, "source": str(req.src.resolve()), "annotations_sha256": sha256_file(ann),
              "n_images": len(names), "n_objects": labels.n_objects, "classes": labels.names,
              "segments": req.options.segments, "val_fraction": req.options.val_fraction,
              "images": {"hardlinked": linked, "copied": len(names) - linked},
              "simgen_version": __version__, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_json(tmp / MARKER, record, indent=2)
    (tmp / DATA_YAML).write_text(data_yaml(req.out, labels, f"{req.src.resolve()} (annotations sha256 {record['annotations_sha256'][:16]})"))
    return record


def export_dataset(req: ExportRequest) -> dict:
    """Check everything, build the export beside ``out`` and rename it into place. Returns the export.json record."""
    check_source(req.src)
    doc = load_coco(req.src)  # missing or corrupt annotations.json: one line, before anything is written
    files = source_files(req.src, doc)
    check_target(req.src, req.out, req.overwrite)
    req.out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{req.out.name}.simgen-export."
    remove_stale(req.out.parent, prefix)
    tmp = req.out.parent / f"{prefix}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        record = build(tmp, req, doc, files)
        flush_all()  # the files are on disk before the name says the export is whole
        install(tmp, req.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def export_cli(args: list[str]) -> None:
    import shlex
    import sys

    if "-h" in args or "--help" in args:
        print(USAGE)
        return
    req = parse_args(args)
    r = export_dataset(req)
    how = "hard-linked" if not r["images"]["copied"] else ("copied" if not r["images"]["hardlinked"] else "hard-linked or copied")
    print(f"{req.out}: {r['n_images']} images ({how}), {r['n_objects']} {'polygons' if req.options.segments else 'boxes'}, "
          f"{len(r['classes'])} classes; train with `yolo train {shlex.quote(f'data={req.out / DATA_YAML}')}`", file=sys.stderr)
