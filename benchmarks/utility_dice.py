"""Dice sim-to-real, end to end on a CPU: render synthetic dice, train on them only (TSTR), score on
the 50 real photos of ``../shared/holdouts/dice-real-50``, print the table.

    python benchmarks/utility_dice.py                   # ~30 min on 2 cores: 2000 images + 20 min training
    python benchmarks/utility_dice.py --minutes 5 --images 500    # a quicker, weaker check
    python benchmarks/utility_dice.py --real <folder>   # adds TRTR and real+synthetic mixes (same budget each)
    python benchmarks/utility_dice.py --split-real 25 --steps 1000  # no real training set? split the 50
        # real photos: 25 train TRTR and the mixes, the other 25 score every arm (TSTR included)
    python benchmarks/utility_dice.py --split-real 25 --steps 1000 --seeds 0,1,2 --fit \
        --render "scene.cluster.probability=0.5" utility.fractions=[0.7]
        # the loop of docs/sim2real.md: simgen fit on the 25 training photos only, render with the overlay,
        # then TSTR, TRTR, mix-0.7 and the finetune arm; prints mean ± std per arm and issue 12's targets

Everything goes under --work (default /tmp/simgen-bench); a finished render or run is reused.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import simgen

SHARED = Path(os.environ.get("SIMGEN_SHARED", Path(simgen.__file__).resolve().parents[2] / "shared"))


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def split_real(src: Path, n_train: int, dst: Path, seed: int = 0) -> tuple[Path, Path]:
    """Split a real COCO folder into disjoint train/test folders (images copied, ids kept).

    For the protocol demo only: with one small real set, half trains the TRTR and mixed arms and the
    other half scores every arm, so no arm is ever scored on an image it trained on (the trainer's
    content-hash guard checks that too)."""
    coco = json.loads((src / "annotations.json").read_text())
    ids = sorted(im["id"] for im in coco["images"])
    if not 0 < n_train < len(ids):
        sys.exit(f"--split-real must be between 1 and {len(ids) - 1} (the folder has {len(ids)} images)")
    import numpy as np
    train_ids = set(np.random.default_rng(seed).permutation(ids)[:n_train].tolist())
    out = {}
    for part, keep in (("train", lambda i: i in train_ids), ("test", lambda i: i not in train_ids)):
        d = dst / f"{src.name}-{part}{n_train if part == 'train' else len(ids) - n_train}"
        if not (d / "annotations.json").is_file():
            tmp = d.with_name(d.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "images").mkdir(parents=True)
            images = [im for im in coco["images"] if keep(im["id"])]
            for im in images:
                shutil.copy2(src / im["file_name"], tmp / im["file_name"])
            for extra in ("LICENSE", "README.md"):  # keep the photos' licence notice with every copy
                if (src / extra).is_file():
                    shutil.copy2(src / extra, tmp / extra)
            sub = dict(coco, images=images, annotations=[a for a in coco["annotations"] if keep(a["image_id"])])
            (tmp / "annotations.json").write_text(json.dumps(sub))
            shutil.rmtree(d, ignore_errors=True)
            tmp.rename(d)
        out[part] = d
    return out["train"], out["test"]


def targets(summary: list[dict]) -> list[str]:
    """Issue 12's targets, checked on the report's per-arm mean and std (several seeds)."""
    arm = {e["name"]: e for e in summary}
    lines = []
    trtr, tstr = arm.get("TRTR"), arm.get("TSTR")
    if trtr and tstr:
        ok = tstr["map_mean"] >= trtr["map_mean"]
        lines.append(f"TSTR mAP {tstr['map_mean']:.3f} >= TRTR {trtr['map_mean']:.3f}: {'met' if ok else 'NOT met'}")
    mixed = [e for e in summary if e["name"] not in ("TSTR", "TRTR")]
    if trtr and mixed:
        best = max(mixed, key=lambda e: e["map_mean"])
        ratio = best["map_mean"] / max(trtr["map_mean"], 1e-9)
        gap = best["map_mean"] - trtr["map_mean"]
        ok = ratio >= 1.5 and gap > max(best["map_std"], trtr["map_std"])
        lines.append(f"best real+synthetic ({best['name']}) mAP {best['map_mean']:.3f} ± {best['map_std']:.3f} = {ratio:.2f}x TRTR "
                     f"{trtr['map_mean']:.3f} ± {trtr['map_std']:.3f} (target >= 1.5x, gap > both stds): {'met' if ok else 'NOT met'}")
        a = best.get("map50_agnostic_mean", float("nan"))
        lines.append(f"best recipe AP50 any class {a:.3f} (target >= 0.9): {'met' if a >= 0.9 else 'NOT met'}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/simgen-bench")
    ap.add_argument("--images", type=int, default=2000, help="synthetic dice to render")
    ap.add_argument("--minutes", type=float, default=20, help="training budget per run")
    ap.add_argument("--steps", type=int, default=None,
                    help="budget in steps instead of minutes: fair between arms even when the machine is busy")
    ap.add_argument("--workers", default="2")
    ap.add_argument("--holdout", default=str(SHARED / "holdouts" / "dice-real-50"))
    ap.add_argument("--real", default=None, help="a real *training* folder (never the holdout): adds TRTR and mixes")
    ap.add_argument("--split-real", type=int, default=0, metavar="K",
                    help="no real training folder? train TRTR/mixes on K holdout photos, score all arms on the rest")
    ap.add_argument("--fit", action="store_true",
                    help="fit the scene to the real *training* photos first (simgen fit) and render with that overlay")
    ap.add_argument("--render", default="", help="more simgen render overrides, space-separated, e.g. 'labels.box=square'")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    ap.add_argument("--out", default=None, help="utility output folder (default: named after the data and budget, under --work)")
    ap.add_argument("extra", nargs="*", help="more simgen utility overrides, e.g. model.trunk=tiny")
    a = ap.parse_args()
    if not (Path(a.holdout) / "annotations.json").is_file():
        sys.exit(f"holdout not found at {a.holdout}; set SIMGEN_SHARED or pass --holdout")
    work = Path(a.work)
    if a.split_real:
        if a.real:
            sys.exit("give --real or --split-real, not both")
        a.real, a.holdout = (str(p) for p in split_real(Path(a.holdout), a.split_real, work))
    render_args = a.render.split()
    tag = f"dice-{a.images}"
    if a.fit:
        if not a.real:
            sys.exit("--fit needs real training photos: pass --real <folder> or --split-real K (never the scored holdout)")
        overlay = work / f"fit-{Path(a.real).name}.yaml"
        if not overlay.is_file():
            run(["simgen", "fit", f"data.real={a.real}", "scene=dice", f"out={overlay}"])
        render_args.append(f"overlay={overlay}")
        tag += "-fit"
    if a.render:
        tag += "-" + hashlib.sha256(a.render.encode()).hexdigest()[:8]
    syn = work / tag
    t0 = time.monotonic()
    if not (syn / "manifest.json").is_file():
        run(["simgen", "render", "scene=dice", f"n_images={a.images}", f"out={syn}", f"workers={a.workers}", "width=640", "height=640",
             "seed=0", "progress=false", *render_args])
    t_render = time.monotonic() - t0
    budget = [f"trainer.max_steps={a.steps}", "trainer.max_minutes=null"] if a.steps else [f"trainer.max_minutes={a.minutes}"]
    out = Path(a.out) if a.out else work / (f"utility-{syn.name}-" + (f"{a.steps}steps" if a.steps else f"{a.minutes:g}min") + (f"-split{a.split_real}" if a.split_real else ""))
    cmd = ["simgen", "utility", "model=fcos_lite", "trainer=cpu", *budget, f"data.synthetic=[{syn}]",
           f"data.holdout={a.holdout}", f"utility.seeds=[{a.seeds}]", f"out={out}"]
    if a.real:
        cmd.append(f"data.real={a.real}")
    run(cmd + list(a.extra))
    report = json.loads((out / "report.json").read_text())
    print(f"\nrender {t_render / 60:.1f} min, total {(time.monotonic() - t0) / 60:.1f} min; report in {out}")
    for r in report["runs"]:
        print(f"{r['name']:>8} seed {r['seed']} (synthetic {r.get('synthetic_fraction')}): mAP {r['map']:.3f}  AP50 {r['map50']:.3f}  AP50(any class) {r.get('map50_agnostic', float('nan')):.3f}"
              f"  {r['steps']} steps  {r['minutes']:.1f} min")
    print()
    for e in report["summary"]:
        print(f"{e['name']:>8} x{len(e['seeds'])}: mAP {e['map_mean']:.3f} ± {e['map_std']:.3f}  AP50 {e['map50_mean']:.3f} ± {e['map50_std']:.3f}"
              f"  AP50 any class {e.get('map50_agnostic_mean', float('nan')):.3f} ± {e.get('map50_agnostic_std', float('nan')):.3f}")
    for line in report.get("warnings", []):  # seeds that failed to train (simgen.train.utility.failed_seeds)
        print(line)
    for line in targets(report["summary"]):
        print(line)


if __name__ == "__main__":
    main()
