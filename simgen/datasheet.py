"""Documentation written beside every dataset and every training run, filled from what the run recorded.

- ``DATASHEET.md``: the seven sections of Datasheets for Datasets (Gebru et al., arXiv 1803.09010) plus
  known limitations, from ``manifest.json`` and the COCO document (never hand-typed numbers).
- ``croissant.json``: Croissant 1.0 JSON-LD with the Responsible-AI (``rai:``) vocabulary, so that
  ``mlcroissant`` and dataset hubs can read the dataset's files, fields and generation process.
- :func:`write_run_datasheet`: ``DATASHEET.md`` for one ``simgen train``/``utility`` run, from its provenance.
"""
from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from .writers.coco import atomic_write

SECTIONS = ("Motivation", "Composition", "Collection process", "Preprocessing, cleaning and labelling", "Uses",
            "Distribution", "Maintenance")
FIELD_DOCS = {
    "id": "integer id", "file_name": "image path relative to the dataset folder", "width": "pixels", "height": "pixels",
    "seed": "`[seed, i]`: regenerates this image alone", "K": "3x3 camera intrinsics",
    "world_to_camera": "4x4 world-to-camera transform (OpenCV axes)", "scene": "physics stats of the scene (steps, settled, dropped objects)",
    "depth_file": "depth image path", "semantic_file": "semantic mask path",
    "image_id": "image the object is in", "category_id": "class id (see `categories`)",
    "bbox": "`[x, y, w, h]`, tight box of the visible mask", "segmentation": "visible mask, COCO RLE", "area": "visible mask pixels",
    "iscrowd": "always 0", "visible_fraction": "visible pixels / unoccluded silhouette inside and outside the image",
    "truncated": "the object's silhouette crosses the image border", "object_index": "index of the object in its scene",
    "pose": "`R`, `t`: the object's file frame (mesh or URDF link) in the camera frame (metres); `scale`: file units to metres; `asset`: that file (or built-in name)",
    "bbox_amodal": "`[x, y, w, h]` of the whole object projected (occluded and out-of-frame parts included; may leave the image)",
    "segmentation_amodal": "the whole object's projected mesh, clipped to the image, COCO RLE (labels.amodal_mask)",
}
CONVEX = {"die", "die_round", "box", "can", "sphere"}  # simgen's procedural convex meshes
COUNTERS = {
    "objects_dropped": "objects that fell out of the drop region or off the table during physics (never labelled)",
    "placement_retries": "object placements re-drawn because they overlapped",
    "scene_redraws": "scenes re-drawn from [seed, i, attempt] because a draw could not be placed or its physics blew up",
    "scene_redraw_reasons": "why those scenes were re-drawn",
    "unsettled_scenes": "scenes still moving when the physics step budget ran out (rendered as they were)",
    "objects_unlabelled": "labelled objects placed but left without a label, by reason (not visible at all, smaller on screen than "
                          "labels.min_area_px, less visible than labels.min_visible_fraction)",
}


# ---------------------------------------------------------------------------- helpers


def _md_table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def flat_keys(d, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) of every leaf of a nested mapping; lists and mappings as JSON text."""
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out += flat_keys(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        out.append((prefix, json.dumps(d) if isinstance(d, (list, tuple, dict)) else d))
    return out


def _sha256(path: Path) -> str | None:
    from .provenance import sha256_file

    return sha256_file(path) if path.is_file() else None


def _stats(doc: dict | None) -> dict:
    """Counts from the COCO document: per category instances and images, objects per image, sizes."""
    if not doc:
        return {}
    names = {c["id"]: c["name"] for c in doc["categories"]}
    per_img = Counter(a["image_id"] for a in doc["annotations"])
    n_per = [per_img.get(im["id"], 0) for im in doc["images"]]
    inst = Counter(names.get(a["category_id"], str(a["category_id"])) for a in doc["annotations"])
    imgs = {c: len({a["image_id"] for a in doc["annotations"] if names.get(a["category_id"]) == c}) for c in names.values()}
    sizes = Counter(f"{im.get('width')}x{im.get('height')}" for im in doc["images"])
    fmts = Counter(Path(im.get("file_name", "")).suffix.lstrip(".") or "?" for im in doc["images"])
    image_fields = list(dict.fromkeys(k for im in doc["images"] for k in im))
    ann_fields = list(dict.fromkeys(k for a in doc["annotations"] for k in a))
    vis = [a["visible_fraction"] for a in doc["annotations"] if "visible_fraction" in a]
    trunc = sum(1 for a in doc["annotations"] if a.get("truncated"))
    return {"n_images": len(doc["images"]), "n_annotations": len(doc["annotations"]), "categories": list(names.values()),
            "instances": inst, "images_with": imgs, "per_image": n_per, "sizes": sizes, "formats": fmts,
            "image_fields": image_fields, "ann_fields": ann_fields, "visible": vis, "truncated": trunc}


def _counts_section(manifest: dict, s: dict) -> list[str]:
    L = []
    n_img = s.get("n_images", manifest.get("n_images"))
    n_ann = s.get("n_annotations", manifest.get("n_annotations"))
    L.append(f"- **Instances**: {n_img} images" + (f", {n_ann} labelled objects" if n_ann is not None else "") + ".")
    cats = s.get("categories") or manifest.get("categories") or []
    counts = s.get("instances") if s else Counter(manifest.get("counts_per_category") or {})
    total = sum(counts.values()) or 1
    L.append(f"- **Classes** ({len(cats)}): " + ", ".join(f"`{c}`" for c in cats) + ".")
    if not s and "counts_per_category" not in manifest:
        return L + ["- Per-class counts: not summarised for this format (each sample's `json` holds its annotations).", ""]
    L += ["", "Class balance:", ""]
    rows = [[c, counts.get(c, 0), f"{100 * counts.get(c, 0) / total:.1f}%",
             s["images_with"].get(c, 0) if s else "-"] for c in cats]
    L += [_md_table(["class", "objects", "share", "images containing it"], rows), ""]
    nz = [counts.get(c, 0) for c in cats]
    if nz and min(nz) > 0:
        L.append(f"- Most/least frequent class ratio: {max(nz) / min(nz):.2f}.")
    elif nz:
        L.append(f"- Classes with no instance: {', '.join(c for c in cats if counts.get(c, 0) == 0)}.")
    if s:
        per = s["per_image"]
        if per:
            L.append(f"- **Objects per image**: min {min(per)}, median {statistics.median(per):g}, mean {statistics.mean(per):.2f}, "
                     f"max {max(per)}; {sum(1 for x in per if x == 0)} image(s) with no labelled object.")
        L.append("- **Image size**: " + ", ".join(f"{k} px ({v} images)" for k, v in s["sizes"].items()) + "; format: "
                 + ", ".join(f"{k} ({v})" for k, v in s["formats"].items()) + ".")
        if s["visible"]:
            v = s["visible"]
            L.append(f"- **Visibility**: visible_fraction min {min(v):.2f}, median {statistics.median(v):.2f}; "
                     f"{s['truncated']} object(s) truncated by the image border.")
        L += ["", "Label types and fields (COCO detection + instance segmentation):", ""]
        rows = [["image", k, FIELD_DOCS.get(k, "")] for k in s["image_fields"]]
        rows += [["annotation", k, FIELD_DOCS.get(k, "")] for k in s["ann_fields"]]
        L += [_md_table(["entry", "field", "meaning"], rows), ""]
    return L


def _sources_rows(sources: list[dict]) -> tuple[list[list], list[list]]:
    groups: dict[tuple, list] = {}
    for e in sources:
        groups.setdefault((e.get("kind"), e.get("source"), e.get("licence") or "unknown (user-supplied)"), []).append(e)
    summary = [[k, src, lic, len(v), sum(x.get("bytes", 0) for x in v)] for (k, src, lic), v in groups.items()]
    named = [[e.get("kind"), e.get("source"), f"`{e['path']}`", e.get("sha256", "")[:16], e.get("licence") or "unknown"]
             for e in sources if e.get("source") != "procedural (simgen)"]
    return summary, named


def licence_list(sources: list[dict]) -> list[str]:
    from .provenance import licences

    return [f"{lic}: files from {', '.join(srcs)}" for lic, srcs in licences(sources).items()]


# ---------------------------------------------------------------------------- dataset datasheet


def datasheet_markdown(manifest: dict, doc: dict | None) -> str:
    cfg = manifest.get("config") or {}
    scene = cfg.get("scene") or {}
    labels = cfg.get("labels") or {}
    sources = manifest.get("sources") or []
    s = _stats(doc)
    name = scene.get("name", "?")
    cats = s.get("categories") or manifest.get("categories") or []
    fmt = manifest.get("format", "coco")
    L = [f"# Datasheet: simgen `{name}` dataset", "",
         f"Written by simgen {manifest.get('simgen_version') or (manifest.get('versions') or {}).get('simgen', '')} from `manifest.json`"
         + (" and `annotations.json`" if doc else "") + "; every number below is computed from those files. "
         "Structure: Datasheets for Datasets (Gebru et al., arXiv 1803.09010)."
         + (" Machine-readable twin: `croissant.json`." if fmt == "coco" else ""), ""]

    L += [f"## 1. {SECTIONS[0]}", "",
          f"- **Purpose**: synthetic, automatically labelled images of the `{name}` scene ({len(cats)} classes) for training and "
          "testing object detectors and instance segmenters, and for checking whether such training transfers to real photos "
          "(`simgen utility`: train on synthetic, test on real).",
          "- **Created by**: the simgen procedural generator (PyBullet physics + rendering), run by the person or job that "
          f"issued the command below, on {manifest.get('created_utc', 'an unrecorded date')}.",
          "- **Funding**: not recorded by the generator.", ""]

    L += [f"## 2. {SECTIONS[1]}", ""]
    L += _counts_section(manifest, s)
    L += ["- **What an instance is**: one rendered image of a randomized, physically settled scene, with one COCO annotation per "
          "visible labelled object. Distractors, the tray and the ground are never annotated.",
          f"- **Sample or complete set**: each image is an independent draw from the generator's distributions; image *i* is made from "
          f"`SeedSequence([{manifest.get('seed')}, i])` alone, so any image can be regenerated.",
          "- **Splits**: none; hold out by image index or render another seed. "
          + (f"This folder is shard {manifest['shard'].get('index')} of {manifest['shard'].get('count')}." if (manifest.get("shard") or {}).get("count", 1) > 1 else ""),
          "- **Personal or sensitive data**: none. Scenes contain only rendered objects; no people, no real photographs "
          "(unless a user-supplied texture folder holds photos: see the sources below).", ""]

    L += [f"## 3. {SECTIONS[2]}", "",
          f"- **Scene**: `{name}` (labeler `{scene.get('labeler', 'category')}`); objects are sampled, dropped and settled by the PyBullet "
          "physics engine, then rendered.",
          f"- **Renderer**: `{manifest.get('renderer')}`" + (f" (devices {manifest['renderer_device']})" if manifest.get("renderer_device") else "")
          + f"; {cfg.get('width')}x{cfg.get('height')} px; {cfg.get('views_per_scene', 1)} view(s) per settled scene; writer `{fmt}`.",
          f"- **Seeds**: base seed {manifest.get('seed')}; texture bank seed {(cfg.get('randomization') or {}).get('bank_seed')}; "
          f"config hash `{(manifest.get('state') or {}).get('config_hash')}`.",
          f"- **Code**: git commit `{manifest.get('git_commit')}`; command `{' '.join(map(str, manifest.get('command') or [])) or 'not recorded'}`.",
          (f"- **Timing**: merged from {len(manifest['merged_from'])} shard folders, {manifest.get('rendered_this_run', '?')} images "
           "rendered in their last runs; each shard's manifest.json has its own rate and timings." if manifest.get("merged_from") else
           f"- **Timing**: {manifest.get('images_per_second')} images/s over {manifest.get('rendered_this_run', '?')} images rendered in the last run"
           f" with {manifest.get('workers', '?')} worker(s)."), ""]
    if sources:
        summary, named = _sources_rows(sources)
        L += ["Assets and textures read during generation (each file's path, SHA-256 and size are in `manifest.json` `sources`):", "",
              _md_table(["kind", "source", "licence", "files", "bytes"], summary), ""]
        if named:
            L += ["Files not generated by simgen:", "", _md_table(["kind", "source", "path", "sha256 (first 16)", "licence"], named), ""]
    else:
        L += ["- **Assets**: not recorded (this manifest predates `sources`).", ""]
    rand = flat_keys(cfg.get("randomization") or {}, "randomization") + flat_keys(
        {k: v for k, v in scene.items() if k not in ("name",)}, "scene")
    if rand:
        L += ["Randomization ranges and scene settings (resolved config; `[a, b]` is a range sampled per image/object):", "",
              _md_table(["setting", "value"], [[k, v] for k, v in rand]), ""]
    if manifest.get("versions"):
        L += ["Software versions:", "", _md_table(["package", "version"], [[k, v] for k, v in manifest["versions"].items()]), ""]

    L += [f"## 4. {SECTIONS[3]}", "",
          "- **Labels are computed from scene state, never by hand**: the renderer's segmentation buffer gives each object's visible "
          "mask; `bbox` is the mask's tight box, `area` its pixel count, `segmentation` its RLE; `pose` comes from the physics state "
          "and `K` from the camera. The category comes from the scene's labeler"
          + (" (for dice: the number of pips on the top face read from the settled pose)." if name == "dice" else "."),
          f"- **Filters**: an object is labelled only if its visible mask has at least `labels.min_area_px` = {labels.get('min_area_px')} pixels "
          f"and its `visible_fraction` is at least `labels.min_visible_fraction` = {labels.get('min_visible_fraction')}; the rest are "
          "left unannotated (they still appear in the image).",
          "- **Sensor effects** (noise, blur, colour, JPEG quality) are applied to the image after labelling; they do not move labels.",
          f"- **Raw data**: the config and seeds in `manifest.json` regenerate every image and label; optional extras: depth `{labels.get('depth')}`, "
          f"semantic masks `{labels.get('semantic')}`.", ""]

    L += [f"## 5. {SECTIONS[4]}", "",
          "- **Intended**: training and pre-training detectors/segmenters for these classes; ablations of domain randomization; "
          "sim-to-real checks against a real holdout (`simgen utility`).",
          "- **Not for**: measuring real-world accuracy (score on real photos instead); deployment without a real-image evaluation; "
          "safety-critical decisions; any claim about people or places (there are none in the data).",
          "- **Risks**: a model trained only on these images can look good on synthetic test data and fail on real photos "
          "(the sim-to-real gap); check on the real holdout before trusting it.", ""]

    lic = licence_list(sources)
    L += [f"## 6. {SECTIONS[5]}", "",
          "- **Licence of the generated data**: the images are renderings of the assets and textures listed in section 3, so they "
          "inherit those assets' licences; simgen's procedural meshes and textures are Apache-2.0 like simgen. Licences involved:"]
    L += [f"  - {x}" for x in lic] or ["  - not recorded (no `sources` in the manifest)"]
    L += ["- **Files**: " + (f"`annotations.json` (sha256 `{manifest.get('annotations_sha256')}`), `manifest.json`, `croissant.json`, `images/`."
                             if fmt == "coco" else f"`manifest.json` and WebDataset shards {manifest.get('shards')}."),
          "- **Distribution**: however the creator shares this folder; simgen does not publish it.", ""]

    L += [f"## 7. {SECTIONS[6]}", "",
          "- **Maintainer**: whoever rendered it; the generator is maintained in the simgen repository (commit above).",
          "- **Updates and errata**: rerender with the same command and commit; a changed config gets a new config hash, and simgen "
          "refuses to mix two configs in one folder.",
          "- **Versioning**: identify a dataset by its `annotations_sha256` and config hash; `simgen train`/`utility` record both in "
          "each run's provenance.", ""]

    L += ["## Known limitations", ""]
    objs = scene.get("objects") or {}
    named = [g.get("asset") for g in objs.values() if isinstance(g, dict)]
    other = sorted({str(x) for v in named for x in (v if isinstance(v, (list, tuple)) else [v])} - CONVEX)
    L.append("- Synthetic look: rasterized rendering with simple lighting and no global illumination; textures are procedural "
             "or from a small bank; real photos differ in materials, reflections, noise and clutter.")
    L.append("- `visible_fraction` is exact for convex objects; for concave meshes it is approximated from a cached silhouette "
             "per asset and one of 512 view directions (a few percent off), which can move objects across the "
             "`min_visible_fraction` threshold. " + (f"Labelled assets here that may be concave: {', '.join(f'`{a}`' for a in other)}."
                                                     if other else "Every labelled asset here is a convex procedural shape: exact."))
    for key, meaning in COUNTERS.items():
        if manifest.get(key) not in (None, {}):
            L.append(f"- `{key}` = {json.dumps(manifest[key])}: {meaning}.")
    if s and s.get("instances"):
        nz = [s["instances"].get(c, 0) for c in cats]
        if nz and max(nz) > 2 * max(1, min(nz)):
            L.append(f"- Class imbalance: most frequent class has {max(nz)} objects, least frequent {min(nz)}.")
    L.append("- Distributions (camera, light, poses, counts) are the ranges in section 3, not measurements of any real setting.")
    return "\n".join(L) + "\n"


def write_datasheet(out: Path, manifest: dict, doc: dict | None) -> Path:
    """Write ``out/DATASHEET.md`` from the manifest and the COCO document (atomically)."""
    path = Path(out) / "DATASHEET.md"
    atomic_write(path, datasheet_markdown(manifest, doc).encode())
    return path


# ---------------------------------------------------------------------------- Croissant


def croissant_context() -> dict:
    return {
        "@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/", "cr": "http://mlcommons.org/croissant/",
        "rai": "http://mlcommons.org/croissant/RAI/", "dct": "http://purl.org/dc/terms/",
        "citeAs": "cr:citeAs", "column": "cr:column", "conformsTo": "dct:conformsTo", "data": {"@id": "cr:data", "@type": "@json"},
        "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "examples": {"@id": "cr:examples", "@type": "@json"},
        "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
        "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
        "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
        "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
        "replace": "cr:replace", "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",
        "transform": "cr:transform", "samplingRate": "cr:samplingRate", "equivalentProperty": "cr:equivalentProperty",
    }


def _field(rs: str, name: str, dtype: str, json_path: str, desc: str, references: str | None = None) -> dict:
    f = {"@type": "cr:Field", "@id": f"{rs}/{name}", "name": name, "description": desc, "dataType": dtype,
         "source": {"fileObject": {"@id": "annotations.json"}, "extract": {"jsonPath": json_path}}}
    if references:
        f["references"] = {"field": {"@id": references}}
    return f


def croissant_document(out: Path, manifest: dict, doc: dict | None) -> dict:
    out = Path(out)
    cfg = manifest.get("config") or {}
    scene = (cfg.get("scene") or {}).get("name", "dataset")
    s = _stats(doc)
    cats = s.get("categories") or manifest.get("categories") or []
    ch = (manifest.get("state") or {}).get("config_hash") or "unknown"
    sources = manifest.get("sources") or []
    exts = sorted((s.get("formats") or {cfg.get("image_format", "jpg"): 1}).keys())
    mime = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png"}
    labels = cfg.get("labels") or {}
    dist = [{"@type": "cr:FileObject", "@id": "annotations.json", "name": "annotations.json",
             "description": "COCO detection + instance segmentation: images[], categories[], annotations[] (bbox xywh, "
             "segmentation RLE, area, visible_fraction, truncated, pose)", "contentUrl": "annotations.json",
             "encodingFormat": "application/json", "sha256": _sha256(out / "annotations.json") or manifest.get("annotations_sha256")}]
    for e in exts:
        dist.append({"@type": "cr:FileSet", "@id": f"images-{e}", "name": f"images-{e}", "description": f"rendered images (.{e})",
                     "encodingFormat": mime.get(e, "application/octet-stream"), "includes": f"images/*.{e}"})
    record_sets = [
        {"@type": "cr:RecordSet", "@id": "images", "name": "images", "description": "COCO `images[]`: one entry per rendered image",
         "key": {"@id": "images/id"},
         "field": [_field("images", "id", "sc:Integer", "$.images[*].id", "image id"),
                   _field("images", "file_name", "sc:Text", "$.images[*].file_name", "image path relative to the dataset folder"),
                   _field("images", "width", "sc:Integer", "$.images[*].width", "width in pixels"),
                   _field("images", "height", "sc:Integer", "$.images[*].height", "height in pixels")]},
        # Inline: mlcroissant reads every field sourced from one JSON file into one table, so a second
        # record set over annotations.json (categories: 6 rows vs images: N rows) cannot be read by it.
        {"@type": "cr:RecordSet", "@id": "categories", "name": "categories", "description": "COCO `categories[]` (class ids and names)",
         "key": {"@id": "categories/id"},
         "field": [{"@type": "cr:Field", "@id": "categories/id", "name": "id", "description": "category id", "dataType": "sc:Integer"},
                   {"@type": "cr:Field", "@id": "categories/name", "name": "name", "description": "category name", "dataType": "sc:Text"}],
         "data": [{"categories/id": c["id"], "categories/name": c["name"]} for c in (doc or {}).get("categories", [])]
         or [{"categories/id": k + 1, "categories/name": c} for k, c in enumerate(cats)]},
    ]
    counts = s.get("instances") or manifest.get("counts_per_category") or {}
    lic = licence_list(sources)
    n_img = s.get("n_images", manifest.get("n_images"))
    return {
        "@context": croissant_context(), "@type": "sc:Dataset", "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": f"simgen-{scene}-{ch}",
        "description": f"Synthetic COCO dataset of the `{scene}` scene rendered by simgen: {n_img} images, "
                       f"{s.get('n_annotations', manifest.get('n_annotations'))} labelled objects in {len(cats)} classes "
                       f"({', '.join(cats)}). See DATASHEET.md.",
        "version": f"0.0.0+{ch}" if ch != "unknown" else "0.0.0",
        "datePublished": (manifest.get("created_utc") or "")[:10] or None,
        "license": "Inherits the licences of the assets it was rendered from: " + "; ".join(lic) if lic else "unknown",
        "citeAs": f"simgen synthetic dataset `{scene}`, config hash {ch}, seed {manifest.get('seed')}, git {manifest.get('git_commit')}",
        "url": out.resolve().as_uri(),
        "keywords": ["synthetic data", "object detection", "instance segmentation", "domain randomization", "PyBullet", "COCO"],
        "creator": {"@type": "sc:Organization", "name": "simgen (procedural generator)"},
        "isAccessibleForFree": True,
        "rai:dataCollection": f"Generated, not collected: PyBullet scenes (scene `{scene}`) sampled from randomized distributions "
                              f"(objects, textures, ground, lights, camera, distractors, sensor effects), settled by physics and "
                              f"rendered with the `{manifest.get('renderer')}` renderer; base seed {manifest.get('seed')}, image i "
                              f"from SeedSequence([seed, i]); simgen {manifest.get('simgen_version')}, git {manifest.get('git_commit')}. "
                              "Full resolved config, versions and command in manifest.json.",
        "rai:dataCollectionType": ["Synthetic"],
        "rai:dataCollectionRawData": "None: every image and label is regenerated from the config and seeds in manifest.json.",
        "rai:dataCollectionMissingData": f"Objects with fewer than {labels.get('min_area_px')} visible pixels or a visible fraction below "
                                         f"{labels.get('min_visible_fraction')} are in the images but not annotated; "
                                         f"{manifest.get('objects_dropped', 0)} objects left the scene during physics.",
        "rai:dataAnnotationProtocol": "Computed from scene state: visible masks from the renderer's segmentation buffer, boxes as the "
                                      "masks' tight boxes, poses from physics; categories from the scene's labeler. No human annotation.",
        "rai:dataAnnotationPlatform": "simgen (automatic)",
        "rai:machineAnnotationTools": [f"simgen {manifest.get('simgen_version')}", f"pybullet {(manifest.get('versions') or {}).get('pybullet')}"],
        "rai:dataPreprocessingProtocol": "Sensor effects (noise, blur, brightness/contrast/saturation, JPEG quality) applied to images "
                                         "after labelling.",
        "rai:dataUseCases": "Training and pre-training detectors/segmenters for the listed classes; domain-randomization ablations; "
                            "sim-to-real checks against a real holdout. Not for measuring real-world accuracy.",
        "rai:dataLimitations": "Synthetic look (simple lighting, procedural textures); visible_fraction approximated for concave meshes; "
                               "distributions are configured ranges, not measurements of a real setting"
                               + "".join(f"; {k}={json.dumps(manifest[k])}" for k in COUNTERS if manifest.get(k) not in (None, {})) + ".",
        "rai:dataBiases": "Class balance follows the configured object counts and labeler: "
                          + ", ".join(f"{k}: {v}" for k, v in dict(counts).items())
                          + ". Poses, lighting and viewpoints cover only the configured ranges.",
        "rai:personalSensitiveInformation": "None: rendered scenes of objects only; no people or personal data.",
        "rai:dataSocialImpact": "Low: synthetic object images; models trained on them may be over-trusted without real-image evaluation.",
        "rai:dataReleaseMaintenancePlan": "Regenerable from manifest.json (config, seed, git commit); no scheduled updates.",
        "distribution": dist,
        "recordSet": record_sets,
    }


def write_croissant(out: Path, manifest: dict, doc: dict | None) -> Path:
    """Write ``out/croissant.json`` (Croissant 1.0 + RAI) atomically."""
    path = Path(out) / "croissant.json"
    jd = croissant_document(out, manifest, doc)
    jd = {k: v for k, v in jd.items() if v is not None}
    atomic_write(path, json.dumps(jd, indent=2).encode())
    return path


def write_dataset_docs(out: Path, manifest: dict | None = None, doc: dict | None = None) -> None:
    """DATASHEET.md and croissant.json for a finished dataset folder (manifest/doc read from disk if not given)."""
    out = Path(out)
    if manifest is None:
        manifest = json.loads((out / "manifest.json").read_text())
    if doc is None and (out / "annotations.json").is_file():
        doc = json.loads((out / "annotations.json").read_text())
    write_datasheet(out, manifest, doc)
    if (out / "annotations.json").is_file():
        write_croissant(out, manifest, doc)


# ---------------------------------------------------------------------------- runs


def _ident_rows(role: str, idents: list[dict]) -> list[list]:
    return [[role, f"`{d.get('path')}`", d.get("n_images", "?"), d.get("n_annotations", "?"), f"`{d.get('annotations_sha256')}`",
             f"`{d.get('manifest_sha256') or '-'}`", d.get("git_commit") or "-"] for d in idents]


def _arm_lines(p: dict) -> list[str]:
    """Composition lines of the `simgen utility` arms that train on a schedule or a subset: phase sizes, synthetic subset."""
    out = []
    phases = p.get("phases") or []
    if len(phases) > 1:
        out.append("- Training phases (one schedule): " + "; ".join(
            f"{ph.get('name')}: steps {ph.get('start_step')}-{(ph.get('start_step') or 0) + ph.get('steps', 0) - 1} ({ph.get('steps')} step{'s' * (ph.get('steps') != 1)}, "
            f"{ph.get('images')} images, sources {json.dumps(ph.get('sources'))})" for ph in phases) + ".")
    sub = p.get("synthetic_subset")
    if sub:
        out.append(f"- Synthetic subset: the first {sub.get('train_images')} images of a permutation drawn from seed {sub.get('seed')} "
                   f"(hash `{sub.get('train_hash')}`); {sub.get('val_images')} others held out as synthetic validation "
                   f"(hash `{sub.get('val_hash')}`).")
    return out


def run_datasheet_markdown(p: dict, metrics: dict | None = None) -> str:
    ds = p.get("datasets") or {}
    hold = p.get("holdout") or {}
    seen = p.get("sources_seen") or {}
    model, trainer = p.get("model") or {}, p.get("trainer") or {}
    L = [f"# Datasheet: training run `{p.get('run')}` (seed {p.get('seed')})", "",
         "Written by simgen from this run's `provenance.json`; datasets are identified by content hashes. "
         "Structure follows Datasheets for Datasets (Gebru et al., arXiv 1803.09010), applied to the data this run used.", "",
         "## 1. Motivation", "",
         f"- Sim-to-real check: a `{model.get('name')}` detector trained on the data below, scored on a real holdout it never saw.", "",
         "## 2. Composition", "",
         _md_table(["role", "path", "images", "objects", "annotations.json sha256", "manifest.json sha256", "git commit"],
                   _ident_rows("synthetic", ds.get("synthetic") or []) + _ident_rows("real", ds.get("real") or [])
                   + _ident_rows("holdout", [hold] if hold else [])), "",
         f"- Requested synthetic fraction: {p.get('synthetic_fraction')}; synthetic share actually seen in training: "
         f"{seen.get('synthetic_share')}" + (f" ({json.dumps({k: v for k, v in seen.items() if k != 'synthetic_share'})})" if len(seen) > 1 else "") + ".",
         *_arm_lines(p),
         f"- Categories ({len(p.get('categories') or [])}): {', '.join(map(str, p.get('categories') or []))}"
         + (" (class-agnostic)" if p.get("class_agnostic") else "") + (f"; category map {p['category_map']}" if p.get("category_map") else "") + ".", "",
         "## 3. Collection process", "",
         f"- Holdout `{hold.get('path')}`: images sha256 `{hold.get('images_sha256')}`, annotations sha256 "
         f"`{hold.get('annotations_sha256')}`, {hold.get('images_scored')} images scored.",
         "- **Holdout guard: passed**: no training folder is, contains or lies inside the holdout, and none holds a holdout "
         "image by content (SHA-256 of the file bytes); a failure stops the run before training.",
         f"- Command: `{' '.join(map(str, p.get('command') or []))}`; settings hash `{p.get('settings_hash')}`; device `{p.get('device')}`.", "",
         "## 4. Preprocessing, cleaning and labelling", "",
         "- Training labels come from the datasets' own annotations (synthetic: computed by simgen from scene state); "
         "holdout labels are the real set's.", "",
         "## 5. Uses", "",
         "- The metrics below estimate real-world accuracy on this holdout only; they are not a deployment guarantee.", "",
         "## 6. Distribution", "",
         "- Run folder: `checkpoint.pt`, `predictions.json`, `metrics.json`, `provenance.json`; the model inherits the training "
         "data's licences (see each dataset's DATASHEET.md).", "",
         "## 7. Maintenance", "",
         "- Rerunning with the same settings reads this run back (settings hash); changed data changes the hashes above.", "",
         "## Model, budget, seed", "",
         _md_table(["setting", "value"], [[k, v] for k, v in flat_keys(model, "model") + flat_keys(trainer, "trainer")]
                   + [["seed", p.get("seed")]]), ""]
    train = p.get("train") or {}
    if train:
        L += ["Training:", "", _md_table(["key", "value"], [[k, v] for k, v in flat_keys(train)]), ""]
    if p.get("versions"):
        L += ["Versions:", "", _md_table(["package", "version"], [[k, v] for k, v in p["versions"].items()]), ""]
    if metrics:
        rows = [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))]
        L += ["## Metrics (holdout)", "", _md_table(["metric", "value"], rows), ""]
        pc, pc50 = metrics.get("per_class") or {}, metrics.get("per_class_ap50") or {}
        if isinstance(pc, dict) and isinstance(pc50, dict) and (pc or pc50):
            L += ["Per class:", "", _md_table(["class", "AP", "AP50"], [[c, pc.get(c), pc50.get(c)] for c in dict.fromkeys([*pc, *pc50])]), ""]
    L += ["## Known limitations", "",
          "- A small holdout gives noisy metrics; compare arms over several seeds.",
          "- The guard compares file bytes: a re-encoded or cropped copy of a holdout photo is not caught."]
    return "\n".join(L) + "\n"


def write_run_datasheet(out: Path, provenance: dict, metrics: dict | None = None) -> Path:
    """``out/DATASHEET.md`` for one training run, from its provenance (and its metrics entry)."""
    path = Path(out) / "DATASHEET.md"
    provenance = json.loads(json.dumps(provenance, default=str))  # Paths and tuples as provenance.json holds them
    atomic_write(path, run_datasheet_markdown(provenance, metrics).encode())
    return path


def write_utility_datasheet(out: Path, report: dict) -> Path:
    """``out/DATASHEET.md`` for a `simgen utility` folder: what each run trained on, linking the runs' own datasheets."""
    report = json.loads(json.dumps(report, default=str))
    runs = report.get("runs") or []
    rows = [[r.get("name"), r.get("seed"), r.get("synthetic_fraction"), r.get("synthetic_share_seen"), r.get("train_images"),
             r.get("map"), r.get("map50"), f"runs/{r.get('name')}-s{r.get('seed')}/DATASHEET.md"] for r in runs]
    text = "\n".join([
        "# Datasheet: sim-to-real utility", "",
        f"Holdout `{report.get('holdout')}`; model `{report.get('model')}`; budget {report.get('budget')} per run; seeds {report.get('seeds')}"
        + ("; class-agnostic" if report.get("class_agnostic") else "") + ".", "",
        "Each run's DATASHEET.md lists its datasets with content hashes, the holdout identity and the guard verdict.", "",
        _md_table(["arm", "seed", "synthetic fraction", "synthetic share seen", "train images", "mAP", "AP50", "run datasheet"], rows), "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in (report.get("versions") or {}).items()), ""])
    path = Path(out) / "DATASHEET.md"
    atomic_write(path, text.encode())
    return path
