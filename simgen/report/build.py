"""Load both sides, run every report section, and write report.json, report.html and figures/ atomically.

The report is built in a temporary folder beside ``out`` and renamed into place at the end, so an error
(a corrupt image, a bug in a section) leaves either the previous report or nothing, never half of one."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..data import found_elsewhere, load_coco
from ..run import check_out
from ..errors import ConfigError, DatasetError
from .model import FAIL_ON, ORDER, ReportContext, Section, Side
from .props import label_section, pixel_section

SectionFn = Callable[[ReportContext], "Section | None"]


def load_side(name: str, root: str | Path, max_images: int | None = None, seed: int = 0) -> Side:
    """A validated COCO folder with a seeded sample of at most ``max_images`` image ids (all when None)."""
    root = Path(root)
    doc = load_coco(root)  # one-line DatasetError for missing folder / file, bad JSON, not COCO
    ids = sorted(im["id"] for im in doc["images"])
    if not ids:
        raise DatasetError(f"`{root / 'annotations.json'}` lists no images; the {name} side of a report needs at least one.")
    if max_images is not None:
        if int(max_images) < 1:
            raise ConfigError(f"report.max_images must be a positive number or null (all images), not {max_images}.")
        if int(max_images) < len(ids):  # same seed, same sample: reports of one dataset stay comparable
            ids = sorted(np.random.default_rng(seed).choice(ids, size=int(max_images), replace=False).tolist())
    manifest = None
    if (root / "manifest.json").is_file():
        try:
            manifest = json.loads((root / "manifest.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DatasetError(f"`{root / 'manifest.json'}` is not valid JSON; restore it or delete it.") from None
    side = Side(name, root, doc, tuple(int(i) for i in ids), manifest)
    for i in side.image_ids:
        if not side.image_path(i).is_file():
            fn = side.images_by_id[i]["file_name"]
            raise DatasetError(f"`{side.image_path(i)}` is listed in {root / 'annotations.json'} but missing"
                               + (found_elsewhere(root, fn) or "; restore it or re-render the dataset") + ".")
    return side


def section_functions() -> list[tuple[str, SectionFn]]:
    """The report's parts in the order the page shows them."""
    from .distance import feature_section
    from .diversity import diversity_section
    from .errors import error_section
    from .leakage import leakage_section

    return [("labels", label_section), ("pixels", pixel_section), ("features", feature_section),
            ("diversity", diversity_section), ("leakage", leakage_section), ("errors", error_section)]


def verdict(sections: list[Section]) -> str:
    """The worst status of any check; "info" when nothing was graded."""
    return max((s.status for s in sections), key=ORDER.__getitem__, default="info")


def exit_code(report: dict[str, Any], fail_on: str) -> int:
    """1 when the report's verdict reaches ``fail_on`` (warn: warn or fail; fail: fail; never: never)."""
    if fail_on not in FAIL_ON:
        raise ConfigError(f"report.fail_on must be one of {', '.join(FAIL_ON)}, not `{fail_on}`.")
    if fail_on == "never":
        return 0
    return int(ORDER[report["verdict"]] >= ORDER[fail_on])


def jsonable(x: Any) -> Any:
    """Plain JSON: numpy scalars/arrays to Python, NaN/inf to null, paths to strings."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def side_info(side: Side) -> dict[str, Any]:
    wanted = set(side.image_ids)
    names = {c["id"]: c["name"] for c in side.doc["categories"]}
    anns = [a for a in side.doc["annotations"] if a["image_id"] in wanted]
    return {"root": str(side.root.resolve()), "images_total": len(side.doc["images"]), "images_sampled": len(side.image_ids),
            "annotations_sampled": len(anns), "categories": sorted(set(names.values())),
            "objects_per_class": dict(Counter(names[a["category_id"]] for a in anns)), "manifest": side.manifest}


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def run_sections(ctx: ReportContext) -> tuple[list[Section], list[str]]:
    """Every section, or those named in ``report.sections``; returns the sections and the keys not built."""
    parts = section_functions()
    wanted = (ctx.options or {}).get("sections") or [k for k, _ in parts]
    unknown = sorted(set(wanted) - {k for k, _ in parts})
    if unknown:
        raise ConfigError(f"unknown report.sections {unknown}; known: {', '.join(k for k, _ in parts)}.")
    sections, unavailable = [], []
    bar = tqdm(parts, desc="report", unit="section", disable=not ctx.progress)
    for key, fn in bar:
        bar.set_postfix_str(key)
        if key not in wanted:
            unavailable.append(key)
            continue
        t0 = time.perf_counter()
        s = fn(ctx)  # exceptions propagate: a broken section must not look like a passing report
        if s is not None:
            # seconds per part, in report.json: what benchmarks/report_speed.py prints
            sections.append(replace(s, data={**s.data, "seconds": round(time.perf_counter() - t0, 2)}))
    return sections, unavailable


def build_report(ctx: ReportContext) -> dict[str, Any]:
    """Run the sections and write out/report.json, out/report.html and out/figures/*.png; returns report.json's dict."""
    from .html import render_html

    out = Path(ctx.out).resolve()
    check_out(out, ("report.json",), "a report folder (no report.json)")  # replace an earlier report, never anything else
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the report folder should look like any other
    except OSError as e:
        raise ConfigError(f"cannot write the report next to `{out}` ({e.strerror}); pick a writable out=.") from None
    try:
        sections, unavailable = run_sections(replace(ctx, out=tmp))
        counts = Counter(c.status for s in sections for c in s.checks)
        report = jsonable({
            "simgen_report": 1, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "verdict": verdict(sections), "counts": {k: counts.get(k, 0) for k in ("pass", "warn", "fail", "info")},
            "inputs": {"real": side_info(ctx.real), "synthetic": side_info(ctx.synthetic), "run": str(ctx.run) if ctx.run else None},
            "options": {"seed": ctx.seed, "features": list(ctx.features), "weights": ctx.weights, **(ctx.options or {})},
            "sections": [s.as_dict() for s in sections], "unavailable_sections": unavailable,
        })
        (tmp / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False))
        (tmp / "report.html").write_text(render_html(report, tmp), encoding="utf-8")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
