"""Leakage: did a real (holdout) image get into the synthetic data, or into training?

(a) generation sources: every file `simgen render` read (textures, backgrounds, meshes), recorded in the
    synthetic manifest under "sources", against every real image: same bytes (SHA-256) or, for images,
    a near-duplicate perceptual hash (a resized or recompressed copy);
(b) distance to closest record (DCR, as in SDMetrics) in feature space: each real image's nearest
    synthetic neighbour against real-to-real nearest-neighbour distances; plus exact byte matches;
(c) the training holdout guard's verdict recorded in the run's provenance.json.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..provenance import file_sha256

PHASH_SOURCE = 6  # Hamming distance at or below which a source image counts as a copy of a real image


def _resolve(p: str, roots: Sequence[Path]) -> Path | None:
    q = Path(p).expanduser()
    if q.is_absolute():
        return q if q.is_file() else None
    for r in roots:
        if (r / q).is_file():
            return r / q
    return None


def source_matches(real_paths: Sequence[Path], sources: list[dict], roots: Sequence[Path], max_dist: int = PHASH_SOURCE) -> dict:
    """Real images that are generation sources: by recorded/actual SHA-256, or by pHash for image sources."""
    from .diversity import hamming_pairs, phash_bits

    real_sha = {file_sha256(p): p for p in real_paths}
    exact, missing, img_src = [], 0, []
    for s in sources:
        f = _resolve(str(s.get("path", "")), roots)
        sha = s.get("sha256") or (file_sha256(f) if f else None)
        if f is None:
            missing += 1
        if sha in real_sha:
            exact.append((real_sha[sha].name, str(s.get("path")), "same bytes"))
        elif f is not None:
            try:
                with Image.open(f) as im:
                    im.verify()  # only files PIL reads as images take part in the perceptual match
                img_src.append(f)
            except Exception:  # not an image (mesh, URDF, ...): bytes match only
                pass
    near = []
    if img_src:
        pairs = hamming_pairs(phash_bits(real_paths), phash_bits(img_src), max_dist)
        near = [(real_paths[i].name, str(img_src[j]), f"pHash distance {d}") for i, j, d in pairs]
    return {"exact": exact, "near": near, "n_sources": len(sources), "n_image_sources": len(img_src), "missing_files": missing}


def dcr(real: np.ndarray, syn: np.ndarray) -> dict:
    """Nearest synthetic distance per real image vs the real set's own nearest-neighbour distances."""
    from scipy.spatial.distance import cdist

    d_rs = cdist(real, syn).min(1)
    rr = cdist(real, real)
    np.fill_diagonal(rr, np.inf)
    d_rr = rr.min(1)
    p1 = float(np.percentile(d_rr, 1))
    tiny = 1e-6 * max(float(np.median(d_rr)), 1e-12)  # "essentially identical" relative to the typical spacing
    return {"d_real_syn": d_rs, "d_real_real": d_rr, "p1": p1, "close": np.nonzero(d_rs < p1)[0], "identical": np.nonzero(d_rs <= tiny)[0]}


def holdout_verdict(run: Path, real_root: Path, real_doc: dict) -> list[dict]:
    """Per provenance.json under ``run``: does its holdout identity match the real set, did the guard pass?"""
    from ..train.guard import image_hashes

    hashes = image_hashes(real_root, real_doc)
    ours = hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest()
    out = []
    for prov in sorted([run / "provenance.json"] if (run / "provenance.json").is_file() else Path(run).glob("**/provenance.json")):
        h = json.loads(prov.read_text()).get("holdout", {})
        # run_one writes provenance only after check_no_leak returned: its presence is the guard's pass
        out.append({"run": str(prov.parent.relative_to(run)) if prov.parent != run else ".", "holdout_path": h.get("path"),
                    "same_images": h.get("images_sha256") == ours, "guard_passed": True, "images_scored": h.get("images_scored")})
    return out


def leakage_section(ctx) -> "object":
    from .distance import scaled_spaces
    from .features import side_paths
    from .model import Check, Section, Table

    checks, tables, data = [], [], {}
    real_paths = side_paths(ctx.real)
    real_all = [ctx.real.image_path(im["id"]) for im in ctx.real.doc["images"]]  # every real image, not only the sample
    # (a) generation sources
    man = ctx.synthetic.manifest or {}
    if "sources" not in man:
        checks.append(Check("real images used as generation sources", None, "warn", "fail on any match",
                            "manifest has no source list: re-render with a newer simgen"))
    else:
        roots = [ctx.synthetic.root, Path.cwd()]
        m = source_matches(real_all, man["sources"], roots, int(ctx.options.get("phash_source", PHASH_SOURCE)))
        hits = m["exact"] + m["near"]
        checks.append(Check("real images used as generation sources", float(len(hits)), "fail" if hits else "pass",
                            f"fail on any exact SHA-256 match or pHash Hamming <= {PHASH_SOURCE}",
                            ("real image(s) also used to generate the synthetic set: " + "; ".join(f"{a} = {b} ({c})" for a, b, c in hits[:10]))
                            if hits else f"none of {m['n_sources']} sources ({m['n_image_sources']} images) is a real image"))
        if hits:
            tables.append(Table("Real images that are generation sources", ("real image", "source", "match"), tuple(hits)))
        data["sources"] = {k: v for k, v in m.items()}
    # (b) exact bytes and feature-space DCR
    syn_sha = {file_sha256(ctx.synthetic.image_path(i)): i for i in ctx.synthetic.image_ids}
    same = [p.name for p in real_all if file_sha256(p) in syn_sha]
    checks.append(Check("real images copied into the synthetic set (same bytes)", float(len(same)), "fail" if same else "pass",
                        "fail on any", ", ".join(same[:10]) if same else "no synthetic image file equals a real one"))
    data["byte_copies"] = same

    def not_computed(name: str, e: Exception) -> None:
        checks.append(Check(f"{name}: distance to closest synthetic record", None, "warn", "", f"not computed: {e}"))

    for fname, r, s in scaled_spaces(ctx, not_computed):
        d = dcr(r, s)
        n_close, n_same = len(d["close"]), len(d["identical"])
        status = "fail" if n_same else "warn" if n_close else "pass"
        names = [real_paths[i].name for i in (d["identical"] if n_same else d["close"])][:10]
        checks.append(Check(f"{fname}: real images with a suspiciously close synthetic neighbour", float(n_close), status,
                            "warn when a real image's nearest synthetic image is closer than the 1st percentile of real-to-real "
                            "nearest-neighbour distances, fail when essentially identical",
                            ", ".join(names) if names else "every real image is farther from all synthetic images than real images are from each other"))
        data[f"dcr_{fname.split('/')[0]}"] = {"p1_real_real": d["p1"], "median_real_real": float(np.median(d["d_real_real"])),
                               "median_real_synthetic": float(np.median(d["d_real_syn"])), "close": names, "n_identical": n_same}
    # (c) the training run's holdout guard
    if ctx.run is not None:
        v = holdout_verdict(Path(ctx.run), ctx.real.root, ctx.real.doc)
        bad = [x for x in v if not x["same_images"]]
        if not v:
            checks.append(Check("training holdout guard", None, "warn", "", f"no provenance.json under {ctx.run}"))
        else:
            checks.append(Check("training holdout guard", float(len(v) - len(bad)), "warn" if bad else "pass",
                                "pass when every run's holdout is exactly these real images and its guard passed",
                                f"{len(bad)} of {len(v)} runs were scored on a different holdout: their mAP is not about these images"
                                if bad else f"{len(v)} run(s) scored on exactly these real images; the no-training-on-holdout guard passed"))
            tables.append(Table("Training runs and their holdout", ("run", "holdout path", "same images", "guard passed", "images scored"),
                                tuple((x["run"], x["holdout_path"], x["same_images"], x["guard_passed"], x["images_scored"]) for x in v)))
            data["runs"] = v
    fails = [c for c in checks if c.status == "fail"]
    warns = [c for c in checks if c.status == "warn"]
    summary = (f"{len(fails)} leakage check(s) failed: " + "; ".join(c.name for c in fails) + "." if fails
               else "No real image was found among the generation sources or the synthetic images"
               + (f"; not checked or suspicious: {'; '.join(f'{c.name} ({c.detail})' for c in warns)}." if warns else "."))
    return Section("leakage", "Leakage: real images in synthetic data or training", summary, tuple(checks), (), tuple(tables), data)
