"""The values every report part exchanges: a check with its threshold and verdict, a figure, a section.

Sections are plain data so that report.json holds every number and every threshold, and report.html is
only a view of the same objects."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

Status = Literal["pass", "warn", "fail", "info"]
ORDER = {"info": 0, "pass": 1, "warn": 2, "fail": 3}


FAIL_ON = ("warn", "fail", "never")  # report.fail_on


@dataclass(frozen=True)
class Check:
    """One number compared with its thresholds. ``threshold`` says the rule in words, e.g. ">= 0.8 pass, >= 0.6 warn"."""

    name: str
    value: float | None
    status: Status
    threshold: str = ""
    detail: str = ""  # one sentence: what it means, what to change

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "status": self.status, "threshold": self.threshold, "detail": self.detail}


def fmt_num(v: Any) -> str:
    """A number for people, in the one format used wherever a value and its threshold or noise floor stand side by side:
    3 significant digits, scientific notation at or above 1e4 and below 1e-3 (so a KID of 1.33e+06 is never printed
    as 1,326,681 beside a floor of 0.936); integers as they are, None as a dash."""
    if v is None:
        return "—"
    kind = getattr(getattr(v, "dtype", None), "kind", "")  # numpy scalars
    if isinstance(v, bool) or kind == "b" or not (isinstance(v, (int, float)) or kind in ("i", "u", "f")):
        return str(v)
    if isinstance(v, int) or kind in ("i", "u"):
        return str(int(v))
    v = float(v)
    a = abs(v)
    if not math.isfinite(v) or a == 0:
        return "0" if a == 0 else str(v)
    if a < 1e-3 or float(f"{a:.3g}") >= 1e4:
        return f"{v:.2e}"
    return f"{v:.0f}" if a >= 100 else f"{v:.3g}"


def graded(name: str, value: float | None, pass_at: float, warn_at: float, higher_is_better: bool = True,
           detail: str = "", fmt: str = ".3f") -> Check:
    """A check that passes at ``pass_at``, warns down to ``warn_at`` and fails beyond (or the mirror image)."""
    if value is None:
        return Check(name, None, "info", "", detail or "not computed")
    ok = (lambda a, b: a >= b) if higher_is_better else (lambda a, b: a <= b)
    op = ">=" if higher_is_better else "<="
    status: Status = "pass" if ok(value, pass_at) else "warn" if ok(value, warn_at) else "fail"
    return Check(name, float(value), status, f"pass {op} {pass_at:{fmt}}, warn {op} {warn_at:{fmt}}, else fail", detail)


def pyplot():
    """matplotlib.pyplot on the Agg backend: no display needed, the same PNGs on every machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Figure:
    """A PNG written under the report folder; ``path`` is relative to it."""

    path: str
    caption: str


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class Section:
    key: str  # stable id: "labels", "pixels", "features", "diversity", "leakage", "errors"
    title: str
    summary: str  # one or two sentences a person reads first
    checks: tuple[Check, ...] = ()
    figures: tuple[Figure, ...] = ()
    tables: tuple[Table, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)  # every other number, JSON-able

    @property
    def status(self) -> Status:
        worst = max((c.status for c in self.checks), key=ORDER.__getitem__, default="info")
        return worst  # type: ignore[return-value]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "summary": self.summary, "status": self.status,
                "checks": [c.as_dict() for c in self.checks],
                "figures": [{"path": f.path, "caption": f.caption} for f in self.figures],
                "tables": [{"title": t.title, "columns": list(t.columns), "rows": [list(r) for r in t.rows]} for t in self.tables],
                "data": self.data}


@dataclass(frozen=True)
class Side:
    """One dataset of the comparison: its folder, its COCO document and the image ids the report samples."""

    name: str  # "real" or "synthetic"
    root: Path
    doc: dict  # COCO document as loaded by simgen.data.load_coco (validated)
    image_ids: tuple[int, ...]  # the seeded sample (report.max_images), sorted
    manifest: dict | None = None  # manifest.json of a simgen dataset, None for real photos

    def image_path(self, image_id: int) -> Path:
        from ..data import safe_path

        im = self.images_by_id[image_id]
        return safe_path(self.root, im["file_name"])

    @cached_property  # computed once: image_path() is called per image (frozen dataclasses allow this)
    def images_by_id(self) -> dict[int, dict]:
        return {im["id"]: im for im in self.doc["images"]}


@dataclass(frozen=True)
class ReportContext:
    real: Side
    synthetic: Side
    out: Path  # report folder; figures go to out / "figures"
    seed: int = 0
    run: Path | None = None  # a `simgen train` or `simgen utility` output folder
    features: tuple[str, ...] = ("stats", "random_cnn")
    weights: Path | None = None  # a local torchvision weights file for the `weights` feature extractor
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # the rest of report.* (thresholds, sizes)

    @property
    def figures(self) -> Path:
        d = self.out / "figures"
        d.mkdir(parents=True, exist_ok=True)
        return d
