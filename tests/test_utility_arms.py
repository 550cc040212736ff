"""`simgen utility` arms beyond the mixes: synthetic-then-real fine-tuning, the data-size curve on nested
synthetic subsets, weight EMA, and the CPU thread choice. Everything trains a tiny FCOS for a few steps on
small noise folders written here (no render), so these tests are fast and independent of the renderer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simgen.errors import ConfigError, DatasetError
from simgen.train import engine
from simgen.train.sizes import SyntheticSplit, gap_warnings, plan_sizes, split_indices
from simgen.train.threads import ThreadChoice, apply_threads, choose, decide
from simgen.train.utility import Arm, finetune_until, job_config, resolve_finetune_split, run_one, run_utility, utility_config

from .conftest import compose_dict
from .test_train import noise, write_folder

TINY = ["model.trunk=tiny", "model.input_size=64", "model.max_size=64", "model.channels=32",
        "trainer=smoke", "trainer.crop=64", "trainer.batch_size=2"]


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    """Synthetic (8 images), a stand-in real training folder (3) and a holdout (2): noise with one box each."""
    return {"syn": write_folder(tmp_path / "syn", [noise(100 + i, 64) for i in range(8)]),
            "real": write_folder(tmp_path / "real", [noise(200 + i, 64) for i in range(3)]),
            "hold": write_folder(tmp_path / "hold", [noise(300 + i, 64) for i in range(2)])}


def overrides(f: dict, out: Path, *extra: str, real: bool = True) -> list[str]:
    return [*TINY, f"data.synthetic=[{f['syn']}]", f"data.holdout={f['hold']}", f"out={out}",
            *([f"data.real={f['real']}"] if real else []), *extra]


# ---------------------------------------------------------------------------- finetune


def test_finetune_arm_spends_the_budget_once_synthetic_then_real(tmp_path, folders):
    d = compose_dict("utility", overrides(folders, tmp_path / "u", "trainer.max_steps=10", "utility.tstr=false", "utility.trtr=false",
                                          "utility.fractions=[]", "utility.finetune_split=0.7"))
    report = run_utility(utility_config(d))
    [r] = report["runs"]
    assert r["name"] == "finetune" and r["kind"] == "finetune" and r["steps"] == 10
    syn, real = r["phases"]
    assert (syn["name"], syn["steps"], syn["sources"]) == ("synthetic", 7, {"synthetic": 14})  # phase 1: only synthetic samples
    assert (real["name"], real["steps"], real["sources"]) == ("real", 3, {"real": 6})  # phase 2: only real ones
    assert r["synthetic_share_seen"] == 0.7 and r["train_images_by_source"] == {"real": 3, "synthetic": 8}
    assert report["summary"][0]["kind"] == "finetune" and report["finetune"]["switch_at"] == 0.7
    on_disk = json.loads((tmp_path / "u/report.json").read_text())
    assert on_disk["runs"] == report["runs"]
    md = (tmp_path / "u/report.md").read_text()
    assert "| finetune |" in md and "synthetic only for the first 70% of the budget" in md
    assert "| finetune | 0 | 0.7 of the budget, then real (0.70) |" in md  # its number is a split of the budget, not a mix
    assert (tmp_path / "u/map_vs_fraction.png").stat().st_size > 1000
    prov = json.loads((tmp_path / "u/runs/finetune-s0/provenance.json").read_text())
    assert [(p["name"], p["start_step"], p["steps"]) for p in prov["phases"]] == [("synthetic", 0, 7), ("real", 7, 3)]
    assert prov["finetune_split"] == 0.7 and prov["threads"]["threads"] >= 1 and prov["threads"]["setting"] == "auto"
    sheet = (tmp_path / "u/runs/finetune-s0/DATASHEET.md").read_text()
    assert "Training phases (one schedule): synthetic: steps 0-6 (7 steps, 14 images" in sheet


def test_killed_finetune_run_resumes_in_its_phase(tmp_path, folders, monkeypatch):
    """Killed in phase 2, the rerun continues both streams where they stopped and ends like an uninterrupted run."""
    job = job_config(compose_dict("train", overrides(folders, tmp_path / "x", "trainer.max_steps=10", "trainer.threads=1",
                                                     "trainer.checkpoint_minutes=1e-9")))
    arm = Arm("finetune", 0.7, kind="finetune", finetune_split=0.7)
    whole = run_one(job, tmp_path / "whole", 0.7, 0, arm=arm)

    real_to_device, calls = engine._to_device, {"n": 0}

    def dies_at_step_9(*a):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt  # stands in for a kill
        return real_to_device(*a)

    monkeypatch.setattr(engine, "_to_device", dies_at_step_9)
    with pytest.raises(KeyboardInterrupt):
        run_one(job, tmp_path / "cut", 0.7, 0, arm=arm)
    monkeypatch.setattr(engine, "_to_device", real_to_device)
    ck = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)
    assert ck["meta"]["step"] == 8 and ck["meta"]["phase"] == 1 and [p["steps"] for p in ck["meta"]["phases"]] == [7, 1]
    lines: list[str] = []
    again = run_one(job, tmp_path / "cut", 0.7, 0, arm=arm, log=lines.append)
    assert any("resuming from step 8" in ln for ln in lines), lines
    assert again["phases"] == whole["phases"] and again["steps"] == 10
    a = torch.load(tmp_path / "whole/checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a), "resumed weights differ"


def test_finetune_split_on_step_and_minute_budgets():
    from simgen.train.engine import TrainerConfig

    assert finetune_until(TrainerConfig(max_steps=10), 0.7) == 0.7
    assert finetune_until(TrainerConfig(max_steps=2), 0.7) == 0.5  # at least one step in each phase
    assert finetune_until(TrainerConfig(max_steps=3), 0.99) == 2 / 3
    assert finetune_until(TrainerConfig(max_steps=None, max_minutes=10), 0.7) == 0.7  # minutes split likewise


def test_auto_finetune_split_sizes_the_real_phase_in_passes_over_the_real_photos(tmp_path, folders):
    # 3 real images (the fixture), batch 2: 4 passes = 12 images = 6 real steps of 20, so the switch is at 70%
    cfg = lambda *o: utility_config(compose_dict("utility", overrides(folders, tmp_path / "u", "utility.tstr=false", "utility.trtr=false",
                                                                       "utility.fractions=[]", *o)))
    u = cfg("trainer.max_steps=20", "utility.finetune_passes=4")
    assert u.finetune_split == "auto"  # the default
    split, how = resolve_finetune_split(u)
    assert split == 0.7 and "4 passes over 3 real images at batch 2 = 6 steps of 20" in how, how
    # more photos or passes, a longer real phase; bounded so that half the budget still pretrains, and 5% fine-tunes
    assert resolve_finetune_split(cfg("trainer.max_steps=20", "utility.finetune_passes=2"))[0] == 0.85
    split, how = resolve_finetune_split(cfg("trainer.max_steps=20", "utility.finetune_passes=100"))
    assert split == 0.5 and "(bounded)" in how
    assert resolve_finetune_split(cfg("trainer.max_steps=1000", "utility.finetune_passes=4"))[0] == 0.95
    # a minute budget has no step count to turn passes into; a number is taken as given
    assert resolve_finetune_split(cfg("trainer.max_steps=null", "trainer.max_minutes=1"))[0] == 0.7
    assert resolve_finetune_split(cfg("trainer.max_steps=20", "utility.finetune_split=0.6")) == (0.6, "utility.finetune_split")
    # the arm trains on the resolved split, and the report says how it was chosen
    report = run_utility(cfg("trainer.max_steps=20", "utility.finetune_passes=4"))
    [r] = report["runs"]
    assert [p["steps"] for p in r["phases"]] == [14, 6] and r["phases"][1]["sources"] == {"real": 12}
    assert report["finetune"]["split"] == 0.7 and "4 passes" in report["finetune"]["chosen_by"]
    assert "Split: auto: 4 passes over 3 real images" in (tmp_path / "u/report.md").read_text()


def test_arm_config_errors(tmp_path, folders):
    base = overrides(folders, tmp_path / "u")
    with pytest.raises(ConfigError, match="utility.finetune_split must be"):
        utility_config(compose_dict("utility", [*base, "utility.finetune_split=1.0"]))
    with pytest.raises(ConfigError, match="or auto"):
        utility_config(compose_dict("utility", [*base, "utility.finetune_split=half"]))
    with pytest.raises(ConfigError, match="utility.finetune_passes must be"):
        utility_config(compose_dict("utility", [*base, "utility.finetune_passes=0"]))
    with pytest.raises(ConfigError, match="max_steps >= 2"):
        utility_config(compose_dict("utility", [*base, "trainer.max_steps=1"]))
    assert not utility_config(compose_dict("utility", [*base, "trainer.max_steps=1", "utility.finetune=false"])).finetune
    with pytest.raises(ConfigError, match="utility.synthetic_sizes must be a list of image counts"):
        utility_config(compose_dict("utility", [*base, "utility.synthetic_sizes=[0,10]"]))
    with pytest.raises(ConfigError, match="sizes_fraction needs a real training folder"):
        utility_config(compose_dict("utility", [*overrides(folders, tmp_path / "u", real=False), "utility.sizes_fraction=0.5"]))
    with pytest.raises(ConfigError, match="unknown key `utility.synthetic_size`"):
        utility_config(compose_dict("utility", [*base, "+utility.synthetic_size=[3]"]))


# ---------------------------------------------------------------------------- data-size curve


def test_size_subsets_are_nested_and_disjoint_from_validation():
    sizes, note = plan_sizes((40, 5, 100, 20, 10, 70), 50, 10)
    assert sizes == (5, 10, 20, 40) and "[70, 100] capped at 40" in note and "\n" not in note
    assert plan_sizes((5, 10), 50, 10) == ((5, 10), None)
    subsets = [split_indices(50, SyntheticSplit(seed=3, val=10, size=n)) for n in sizes]
    val = subsets[0][1]
    assert len(val) == 10 and len(set(val.tolist())) == 10
    for (small, v1), (big, v2) in zip(subsets, subsets[1:]):
        assert np.array_equal(v1, v2)  # one validation split for every size
        assert set(small.tolist()) < set(big.tolist())  # nested
    for train, v in subsets:
        assert not set(train.tolist()) & set(v.tolist()) and len(set(train.tolist())) == len(train)
    assert set(subsets[-1][0].tolist()) | set(val.tolist()) == set(range(50))
    other = split_indices(50, SyntheticSplit(seed=4, val=10, size=5))
    assert not np.array_equal(other[0], subsets[0][0])  # the seed draws the permutation
    with pytest.raises(ConfigError, match="leaves no training images"):
        plan_sizes((5,), 10, 10)


def test_data_size_curve_report(tmp_path, folders):
    d = compose_dict("utility", overrides(folders, tmp_path / "u", "trainer.max_steps=2", "utility.tstr=false", "utility.trtr=false",
                                          "utility.finetune=false", "utility.fractions=[0.5]", "utility.synthetic_sizes=[2,4,100]",
                                          "utility.synthetic_val=2", "seed=5"))
    report = run_utility(utility_config(d))
    sz = report["sizes"]
    assert sz["sizes"] == [2, 4, 6] and "[100] capped at 6" in sz["note"]
    assert sz["mix_fraction"] == 0.5 and sz["mix_fraction_from"] == "best mix by mean mAP"
    assert [(e["series"], e["synthetic_size"]) for e in sz["summary"]] == [
        ("TSTR", 2), ("TSTR", 4), ("TSTR", 6), ("mix-0.5", 2), ("mix-0.5", 4), ("mix-0.5", 6)]
    for e in sz["summary"]:
        assert 0 <= e["synthetic_val_map_mean"] <= 1 and e["gap"] == pytest.approx(e["synthetic_val_map_mean"] - e["map_mean"], abs=1e-4)
    for r in sz["runs"]:
        assert r["kind"] == "size" and r["train_images_by_source"]["synthetic"] == r["synthetic_size"]
    assert [r["name"] for r in report["runs"]] == ["mix-0.5"]  # size runs live in the sizes section only
    assert json.loads((tmp_path / "u/report.json").read_text())["sizes"]["summary"] == sz["summary"]
    md = (tmp_path / "u/report.md").read_text()
    assert "## Data-size curve" in md and "| mix-0.5 | 6 |" in md and "capped at 6" in md
    assert (tmp_path / "u/map_vs_size.png").stat().st_size > 1000
    provs = {n: json.loads((tmp_path / f"u/runs/TSTR-n{n}-s0/provenance.json").read_text())["synthetic_subset"] for n in (2, 4, 6)}
    assert {p["val_hash"] for p in provs.values()} == {provs[2]["val_hash"]}  # the same validation images for every size
    assert len({p["train_hash"] for p in provs.values()}) == 3 and provs[4]["seed"] == 5 and provs[4]["val_images"] == 2
    assert "Synthetic subset: the first 4 images" in (tmp_path / "u/runs/TSTR-n4-s0/DATASHEET.md").read_text()


def test_growing_sim_to_real_gap_warns():
    def row(n, real, syn):
        return {"series": "TSTR", "synthetic_size": n, "map_mean": real, "synthetic_val_map_mean": syn, "gap": syn - real}

    growing = [row(250, 0.10, 0.20), row(500, 0.11, 0.30), row(1000, 0.12, 0.45)]
    [w] = gap_warnings(growing)
    assert w.startswith("warning: TSTR: the synthetic-val minus real mAP gap grows with size") and "\n" not in w
    assert gap_warnings([row(250, 0.10, 0.20), row(500, 0.20, 0.30), row(1000, 0.30, 0.40)]) == []  # both rise together
    assert gap_warnings([row(250, 0.10, 0.40)]) == []


# ---------------------------------------------------------------------------- EMA


def test_ema_weights_differ_from_raw_and_survive_a_resume(tmp_path, folders, monkeypatch):
    ov = overrides(folders, tmp_path / "x", "trainer.max_steps=4", "trainer.threads=1", "trainer.checkpoint_minutes=1e-9", real=False)
    plain = job_config(compose_dict("train", ov))
    ema_job = job_config(compose_dict("train", [*ov, "trainer.ema=0.5"]))
    assert plain.trainer.ema is None and ema_job.trainer.ema == 0.5
    run_one(plain, tmp_path / "plain", 1.0, 0)
    run_one(ema_job, tmp_path / "whole", 1.0, 0)
    raw = torch.load(tmp_path / "plain/checkpoint.pt", weights_only=True)
    avg = torch.load(tmp_path / "whole/checkpoint.pt", weights_only=True)
    assert avg["meta"]["ema"] == 0.5 and raw["meta"]["ema"] is None
    # EMA does not change training, so the plain run's weights are the EMA run's raw ones: the saved ones differ.
    floats = [k for k, v in raw["model"].items() if v.is_floating_point()]
    assert any(not torch.allclose(raw["model"][k], avg["model"][k]) for k in floats)

    real_to_device, calls = engine._to_device, {"n": 0}

    def dies_at_step_3(*a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_to_device(*a)

    monkeypatch.setattr(engine, "_to_device", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_one(ema_job, tmp_path / "cut", 1.0, 0)
    monkeypatch.setattr(engine, "_to_device", real_to_device)
    part = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)
    assert part["meta"]["partial"] and int(part["ema_model"]["n_averaged"]) == 2
    assert any(not torch.allclose(part["model"][k], part["ema_model"][f"module.{k}"]) for k in floats)  # average != raw
    run_one(ema_job, tmp_path / "cut", 1.0, 0)
    again = torch.load(tmp_path / "cut/checkpoint.pt", weights_only=True)["model"]
    assert all(torch.allclose(avg["model"][k].float(), again[k].float(), atol=1e-5) for k in avg["model"]), "resumed EMA differs"


def test_ema_config_is_checked(tmp_path, folders):
    with pytest.raises(ConfigError, match=r"trainer.ema must be"):
        job_config(compose_dict("train", [*overrides(folders, tmp_path / "x", real=False), "trainer.ema=1.0"]))


# ---------------------------------------------------------------------------- CPU threads


def test_thread_choice(monkeypatch):
    from simgen.train import threads

    assert decide(2, 0.1) == 2 and decide(2, 1.0) == 1 and decide(2, 2.7) == 1  # never below one
    assert decide(16, 3.2) == 13 and decide(4, None) == 4 and decide(4, 0.6) == 3
    fixed = choose(3)
    assert (fixed.threads, fixed.setting, fixed.busy_cores) == (3, 3, None) and "threads: 3 (as set" in fixed.line()
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda: 2.9)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # spinning workers: no more threads than free cores
    spin = choose("auto")
    assert spin.threads == 1 and spin.line() == "threads: 1 (auto: 4 usable cores, 2.9 busy: the free ones; OMP_WAIT_POLICY=ACTIVE)"
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")  # sleeping workers: every usable core
    sleep = choose("auto")
    assert sleep.threads == 4 and sleep.busy_cores == 2.9 and "all of them under the passive wait policy" in sleep.line()
    monkeypatch.undo()
    before = torch.get_num_threads()
    try:
        c = apply_threads("auto")
        assert isinstance(c, ThreadChoice) and 1 <= c.threads <= c.usable_cores and torch.get_num_threads() == c.threads
        assert apply_threads("auto") is c  # chosen once per process: every arm of a command gets the same count
        assert c.line().startswith(f"threads: {c.threads} (auto: {c.usable_cores} usable cores")
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", ["0", "two", "-1", "1.5"])
def test_threads_config_is_auto_or_a_positive_integer(tmp_path, folders, bad):
    with pytest.raises(ConfigError, match="trainer.threads must be auto or an integer >= 1"):
        job_config(compose_dict("train", [*overrides(folders, tmp_path / "x", real=False), f"trainer.threads={bad}"]))


def test_trainer_defaults_are_auto_threads_and_no_ema(tmp_path, folders):
    for trainer in ("cpu", "gpu", "smoke"):
        t = job_config(compose_dict("train", [f"data.synthetic={folders['syn']}", f"data.holdout={folders['hold']}",
                                              f"trainer={trainer}"])).trainer
        assert t.threads == "auto" and t.ema is None


def test_cli_sets_a_passive_omp_wait_policy_before_torch_loads():
    code = ("import os, sys\n"
            "from simgen import cli\n"
            "assert 'torch' not in sys.modules\n"
            "cli.main(['--help'])\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE", out.stderr[-500:]
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True, timeout=120)
    assert mine.stdout.strip().splitlines()[-1] == "ACTIVE"  # the user's own setting wins


def test_run_identity_ignores_display_settings_and_unused_folders(tmp_path, folders):
    """A finished TRTR run is reused when only progress/threads/checkpointing or the (unused) synthetic
    folder change; a setting that changes what is learned is refused, and retrains with overwrite=true."""
    base = ["trainer.max_steps=2", "utility.tstr=false", "utility.fractions=[]", "utility.finetune=false"]
    run_utility(utility_config(compose_dict("utility", overrides(folders, tmp_path / "u", *base))))
    metrics = tmp_path / "u/runs/TRTR-s0/metrics.json"
    before = metrics.stat().st_mtime_ns
    other_syn = write_folder(tmp_path / "syn2", [noise(400 + i, 64) for i in range(4)])
    same = overrides(folders, tmp_path / "u", *base, "trainer.progress=false", "trainer.threads=1", "trainer.checkpoint_minutes=3")
    same[same.index(f"data.synthetic=[{folders['syn']}]")] = f"data.synthetic=[{other_syn}]"
    run_utility(utility_config(compose_dict("utility", same)))
    assert metrics.stat().st_mtime_ns == before  # read back, not retrained
    with pytest.raises(DatasetError, match="other settings.*overwrite=true"):  # never silently replaced
        run_utility(utility_config(compose_dict("utility", overrides(folders, tmp_path / "u", *base, "trainer.lr=0.0005"))))
    assert metrics.stat().st_mtime_ns == before
    run_utility(utility_config(compose_dict("utility", overrides(folders, tmp_path / "u", *base, "trainer.lr=0.0005", "overwrite=true"))))
    assert metrics.stat().st_mtime_ns != before


def test_utility_claims_every_arm_folder_before_training_any(tmp_path, folders, monkeypatch):
    """One arm made with other settings stops the whole command before the first arm trains: nothing half-done."""
    base = ["trainer.max_steps=2", "utility.fractions=[]", "utility.finetune=false"]
    run_utility(utility_config(compose_dict("utility", overrides(folders, tmp_path / "u", *base, "utility.tstr=false"))))  # TRTR only
    trained = []
    monkeypatch.setattr("simgen.train.utility.train", lambda *a, **k: trained.append(1))
    with pytest.raises(DatasetError, match="TRTR \\(seed 0\\).*other settings"):  # TSTR comes first but must not train
        run_utility(utility_config(compose_dict("utility", overrides(folders, tmp_path / "u", *base, "trainer.lr=0.0005"))))
    assert not trained and not (tmp_path / "u/runs/TSTR-s0").exists()


def test_a_run_never_writes_into_a_dataset_or_a_data_folder(tmp_path, folders):
    """out that is a dataset, the holdout, or inside a training folder is refused before anything is written there."""
    (folders["syn"] / "manifest.json").write_text("{}")
    before = {p: p.stat().st_mtime_ns for p in folders["syn"].rglob("*")}
    for out, says in ((folders["syn"], "is the data.synthetic folder"), (folders["hold"], "is the data.holdout folder"),
                      (folders["real"] / "run", "inside the data.real folder")):
        with pytest.raises(ConfigError, match=says):
            job_config(compose_dict("train", overrides(folders, out)))
    elsewhere = tmp_path / "other"
    write_folder(elsewhere, [noise(900, 64)])  # a dataset that is not one of this run's folders
    with pytest.raises(ConfigError, match="holds a dataset \\(annotations.json\\)"):
        job_config(compose_dict("train", overrides(folders, elsewhere)))
    assert {p: p.stat().st_mtime_ns for p in folders["syn"].rglob("*")} == before
    assert not (folders["real"] / "run").exists() and not (elsewhere / "DATASHEET.md").exists()


# ---------------------------------------------------------------------------- mosaic


def test_mosaic_trains_each_source_on_its_own_mosaics(tmp_path, folders, monkeypatch):
    """trainer.mosaic reaches the training sets: every item of the mix is built by Mosaic from its own source
    (synthetic items from the synthetic folder only), and the run trains its budget."""
    seen: list[tuple[int, str]] = []
    real_getitem = engine.Mosaic.__getitem__

    def spy(self, idx):
        seen.append((len(self.base), self.transforms.__class__.__name__))
        return real_getitem(self, idx)

    monkeypatch.setattr(engine.Mosaic, "__getitem__", spy)
    d = compose_dict("utility", overrides(folders, tmp_path / "u", "trainer.max_steps=3", "trainer.mosaic=1.0", "utility.tstr=false",
                                          "utility.trtr=false", "utility.fractions=[0.5]", "utility.finetune=false"))
    [r] = run_utility(utility_config(d))["runs"]
    assert r["steps"] == 3 and seen
    assert {n for n, _ in seen} == {8, 3} and {k for _, k in seen} == {"Compose"}  # both sources, each its own, then the transforms
    prov = json.loads((tmp_path / "u/runs/mix-0.5-s0/provenance.json").read_text())
    assert prov["trainer"]["mosaic"] == 1.0
