"""`simgen report` as a Hydra task: the composed config (a plain dict) in, a report folder and an exit code out."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError

USAGE = "simgen report data.synthetic=<dir> data.real=<dir> out=<dir>"


def _folder(d: dict[str, Any], key: str) -> Path:
    value = (d.get("data") or {}).get(key)
    if isinstance(value, (list, tuple)):  # data.synthetic=[a] as in `simgen train`; one folder per side here
        if len(value) != 1:
            raise ConfigError(f"data.{key} takes one folder for a report, got {len(value)}; merge them first (`simgen merge`).")
        value = value[0]
    if not value:
        raise ConfigError(f"data.{key} is required: {USAGE}")
    return Path(str(value))


def _check_options(d: dict[str, Any], r: dict[str, Any]) -> tuple[int, int | None]:
    """Type and range of every report.* scalar, and no keys that conf/report.yaml does not have (one line each)."""
    from omegaconf import OmegaConf

    from ..config import SEED_MAX, Fields

    from ..cli import conf_dir

    known = OmegaConf.to_container(OmegaConf.load(conf_dir() / "report.yaml"))
    Fields({k: v for k, v in d.items() if k != "hydra"}, "", [k for k in known if k not in ("defaults", "hydra")])  # type: ignore[union-attr]
    Fields(d.get("data"), "data", ("synthetic", "real", "category_map"))
    f = Fields(r, "report", known.get("report") or {})  # type: ignore[union-attr]
    f.flag("progress", True)
    for key, default in (("similarity_pass", 0.8), ("similarity_warn", 0.6)):
        f.prob(key, default)
    f.number("margin_warn_px", 1.5, lo=0)
    f.integer("prdc_k", 5, lo=1, hi=100)
    f.integer("cnn_size", 128, lo=32, hi=1024)
    f.integer("phash_duplicate", 4, lo=0, hi=64)
    f.integer("phash_source", 6, lo=0, hi=64)
    seeds = r.get("cnn_seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds):
        raise ConfigError(f"report.cnn_seeds must be a non-empty list of integers >= 0, got {seeds!r}; e.g. report.cnn_seeds=[0,1]")
    return f.integer("seed", 0, lo=0, hi=SEED_MAX), f.integer("max_images", None, lo=1, optional=True, example=200)  # type: ignore[return-value]


def _check_features(features: list[Any], run: Path | None, weights: Path | None) -> None:
    """report.features: known extractor names only, and those that need an input have it (before any work).
    A weights file or checkpoint that turns out unreadable stays a "not computed" warn in the report."""
    from .features import EXTRACTORS

    unknown = [f for f in features if f not in EXTRACTORS]
    if unknown:
        raise ConfigError(f"unknown report.features {unknown}; known: {', '.join(EXTRACTORS)} "
                          "(e.g. report.features=[stats,random_cnn]).")
    if "detector" in features and run is None:
        raise ConfigError("report.features=[detector] uses the features of your trained detector and needs report.run=<simgen train "
                          "or simgen utility output folder>; add it, or drop detector from report.features.")
    if "weights" in features and weights is None:
        raise ConfigError("report.features=[weights] needs report.weights=<local torchvision ResNet-18/50 .pth file>; add it, "
                          "or drop weights from report.features.")


def _category_map(d: dict[str, Any], run: Path | None) -> tuple[dict[str, str], str]:
    """data.category_map (synthetic name -> real name), else the map report.run was trained with: a run trained with
    +data.category_map.die=dice compared renders of `die` with photos of `dice`, so its report must too (without it
    every class showed as on one side only and the per-class comparisons were empty)."""
    import json

    cm = (d.get("data") or {}).get("category_map") or {}
    # a class named 6 is read as a number by Hydra, as in simgen train: names are compared as text
    if not isinstance(cm, dict) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) for v in cm.values()):
        raise ConfigError(f"data.category_map must map synthetic class names to real ones (e.g. +data.category_map.die=dice), got {cm!r}.")
    if cm:
        return {str(k): str(v) for k, v in cm.items()}, "data.category_map"
    if run is not None:
        from .errors import find_run

        try:
            prov = json.loads((find_run(run)[0] / "provenance.json").read_text())
        except (OSError, ValueError, DatasetError):  # no predictions or no provenance: the errors section says so
            return {}, ""
        got = prov.get("category_map") or {}
        if isinstance(got, dict) and got:
            return {str(k): str(v) for k, v in got.items()}, RUN_MAP
    return {}, ""


RUN_MAP = "the map report.run was trained with"


def renamed(side, cmap: dict[str, str], source: str):
    """(``side`` with its categories renamed by ``cmap``, the part of ``cmap`` applied). A key of the user's own map that
    names none of its classes is refused (a typo would leave the classes unmatched without a word); the run's map also
    names the classes of its real training folders, which a synthetic set need not have: those keys are left out."""
    from dataclasses import replace

    from ..errors import did_you_mean

    names = [c["name"] for c in side.doc["categories"]]
    if source == RUN_MAP:
        cmap = {k: v for k, v in cmap.items() if k in names}
    unknown = [k for k in cmap if k not in names]
    if unknown:
        raise ConfigError(f"{source}: `{unknown[0]}` is not a class of the synthetic set {side.root}; keys name synthetic classes, "
                          "values real ones." + did_you_mean(unknown[0], set(names)))
    cats = [{**c, "name": cmap.get(c["name"], c["name"])} for c in side.doc["categories"]]
    return replace(side, doc={**side.doc, "categories": cats}), cmap


def report_context(d: dict[str, Any]):
    """The ReportContext for a composed config; loads and samples both sides (DatasetError on bad input)."""
    # the checks below come first: loading the sides imports simgen.data, and with it torch (~3-6 s), which a typo
    # in a report.* value kept the user waiting for
    from .model import FAIL_ON, ReportContext

    r = dict(d.get("report") or {})
    if r.get("fail_on", "fail") not in FAIL_ON:
        raise ConfigError(f"report.fail_on must be one of {', '.join(FAIL_ON)}, not `{r.get('fail_on')}`.")
    if not d.get("out"):
        raise ConfigError(f"out is required: {USAGE}")
    seed, max_images = _check_options(d, r)
    run = Path(r["run"]) if r.get("run") else None
    if run is not None and not run.is_dir():
        raise ConfigError(f"report.run `{run}` is not a folder; pass a `simgen train` or `simgen utility` output folder.")
    if r.get("compare") is not None:  # other runs on the same holdout: the box-precision part compares the analysed run with them
        comp = [r["compare"]] if isinstance(r["compare"], str) else list(r["compare"])
        if run is None:
            raise ConfigError("report.compare needs report.run (the run it is compared with); add report.run=<run folder>.")
        for c in comp:
            if not Path(str(c)).is_dir():
                raise ConfigError(f"report.compare `{c}` is not a folder; pass `simgen train` or `simgen utility` output folders.")
        r["compare"] = [str(c) for c in comp]
    weights = Path(r["weights"]) if r.get("weights") else None
    features = r.get("features") or ["stats"]
    features = [features] if isinstance(features, str) else list(features)
    _check_features(features, run, weights)
    if r.get("sections") is not None:  # validated here so that a typo fails before any work
        from .build import section_functions

        r["sections"] = [r["sections"]] if isinstance(r["sections"], str) else list(r["sections"])
        unknown = sorted(set(r["sections"]) - {k for k, _ in section_functions()})
        if unknown:
            raise ConfigError(f"unknown report.sections {unknown}; known: {', '.join(k for k, _ in section_functions())}.")
    options = {k: v for k, v in r.items() if k not in ("run", "features", "weights", "seed", "progress")}
    from .build import load_side

    synthetic = load_side("synthetic", _folder(d, "synthetic"), max_images, seed)
    real = load_side("real", _folder(d, "real"), max_images, seed)
    cmap, source = _category_map(d, run)
    if cmap:
        synthetic, cmap = renamed(synthetic, cmap, source)
    if cmap:
        options["category_map"] = {"map": cmap, "from": source}  # in report.json's options
        print(f"report: synthetic classes renamed {', '.join(f'{k} -> {v}' for k, v in cmap.items())} ({source})", file=sys.stderr)
        real_names = {c["name"] for c in real.doc["categories"]}
        off = sorted({v for v in cmap.values() if v not in real_names})
        if off:  # a misspelt value leaves the class unmatched: said, not refused (the real set may lack that class)
            print(f"report: warning: {source} maps onto {', '.join(off)}, which the real set {real.root} does not name "
                  f"(it has {', '.join(sorted(real_names))})", file=sys.stderr)
    return ReportContext(real=real, synthetic=synthetic,
                         out=Path(str(d["out"])), seed=seed, run=run, features=tuple(features), weights=weights,
                         progress=bool(r.get("progress", True)), options=options)


def report_task(d: dict[str, Any]) -> None:
    """Build the report, print where it is and the verdict, then exit 1 when the verdict reaches report.fail_on."""
    ctx = report_context(d)
    from .build import build_report, exit_code

    report = build_report(ctx)
    fail_on = (d.get("report") or {}).get("fail_on", "fail")
    c = report["counts"]
    print(f"report: {ctx.out / 'report.html'}  verdict: {report['verdict'].upper()} "
          f"({c['pass']} pass, {c['warn']} warn, {c['fail']} fail)")
    code = exit_code(report, fail_on)
    if code:
        sys.stdout.flush()
        raise SystemExit(code)
