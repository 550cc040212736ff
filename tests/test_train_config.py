"""`simgen train` / `simgen utility` configs: every field of the model, trainer and data groups and the utility
keys is checked by type and range before anything runs, so a bad value is one line (what is wrong and a valid
value), exit code 2 and nothing written; and a full disk while a run writes its files is one line naming the
folder and its free space, exit code 1, leaving no half-written checkpoint, and the same command resumes."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from .test_train import noise, write_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("train-config")
    return {"syn": write_folder(tmp / "syn", [noise(100 + i, 64) for i in range(4)]),
            "hold": write_folder(tmp / "hold", [noise(300 + i, 64) for i in range(2)])}


def cli(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """``simgen <args>`` in this process (fast; monkeypatches reach the writers): exit code and stderr lines."""
    from simgen.cli import main

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() rewrites sys.argv for Hydra
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


CUDA_99 = "trainer.device=cuda:99"
BAD = [
    # model group
    ("train", ["model.min_size=abc"], "bad override `model.min_size`: there is no key `min_size` in `model`. Did you mean `input_size`?"),
    ("train", ["model.num_classes=-1"], "there is no key `num_classes` in `model`"),
    ("train", ["+model.foo=1"], "unknown key `model.foo`"),
    ("train", ["model.name=nope"], "unknown model `nope`"),
    ("train", ["model.name=5"], "unknown model `5`"),
    ("train", ["model.input_size=abc"], "model.input_size must be an integer >= 32, got 'abc'; e.g. model.input_size=416"),
    ("train", ["model.input_size=10"], "model.input_size must be an integer >= 32, got 10"),
    ("train", ["model.input_size=1.5"], "model.input_size must be an integer >= 32, got 1.5"),
    ("train", ["model.input_size=true"], "model.input_size must be an integer >= 32, got True"),
    ("train", ["model.max_size=100"], "model.max_size must be an integer >= model.input_size (416): the cap on the longer side, got 100; e.g. model.max_size=693"),
    ("train", ["model.max_size=abc"], "model.max_size must be an integer"),
    ("train", ["model.anchor_sizes=5"], "model.anchor_sizes must be a list of 2 lists of anchor sizes"),
    ("train", ["model.anchor_sizes=[abc]"], "model.anchor_sizes must be a list of 2 lists"),
    ("train", ["model.anchor_sizes=[]"], "model.anchor_sizes must be a list of 2 lists"),
    ("train", ["model.anchor_sizes=[[16,-1],[32]]"], "model.anchor_sizes must be a list of integers >= 2"),
    ("train", ["model=frcnn_lite", "model.anchor_sizes=[[16,24],[32]]"], "the same number of sizes on every level"),
    ("train", ["model.aspect_ratios=abc"], "model.aspect_ratios must be a list of numbers > 0"),
    ("train", ["model.aspect_ratios=[0]"], "model.aspect_ratios must be a list of numbers > 0"),
    ("train", ["model.rpn_pre_nms=[1]"], "model.rpn_pre_nms must be a list of 2 integers >= 1"),
    ("train", ["model.rpn_post_nms=abc"], "model.rpn_post_nms must be a list of 2 integers >= 1"),
    ("train", ["model.box_batch_size=0"], "model.box_batch_size must be an integer >= 1"),
    ("train", ["model.detections=abc"], "model.detections must be an integer >= 1"),
    ("train", ["model.score_thresh=2"], "model.score_thresh must be a number in [0, 1)"),
    ("train", ["model.score_thresh=abc"], "model.score_thresh must be a number in [0, 1)"),
    ("train", ["model.channels=abc"], "model.channels must be an integer >= 1"),
    ("train", ["model.channels=0"], "model.channels must be an integer >= 1"),
    ("train", ["model.channels=48"], "model.channels must be a multiple of 32 for fcos_lite"),
    ("train", ["model.head_convs=0"], "model.head_convs must be an integer >= 1"),
    ("train", ["model=frcnn_lite", "+model.head_convs=4"], "model.head_convs applies only to fcos_lite"),
    ("train", ["model=fasterrcnn_resnet50_fpn_v2", "+model.head_convs=4"], "model.head_convs applies only to fcos_lite"),
    ("train", ["model.trunk=big"], "model.trunk must be one of resnet18, tiny"),
    ("train", ["model.weights=5"], "model.weights must be none, DEFAULT or the path of a checkpoint file"),
    ("train", ["model.weights=DEFAULT"], "fcos_lite has no pretrained weights"),
    ("train", ["model.weights=/no/such/checkpoint.pt"], "is not a file"),
    ("train", ["model.weights_backbone=foo"], "model.weights_backbone must be none or one of DEFAULT"),
    ("train", ["model.weights_backbone=DEFAULT"], "needs model.trunk=resnet18"),
    ("train", ["model=fasterrcnn_resnet50_fpn_v2", "+model.channels=128"], "model.channels applies only to frcnn_lite and fcos_lite"),
    # trainer group
    ("train", ["trainer.lr=-1"], "trainer.lr must be a number > 0, got -1; e.g. trainer.lr=0.001"),
    ("train", ["trainer.lr=nan"], "trainer.lr must be a number > 0"),
    ("train", ["trainer.max_steps=0"], "trainer.max_steps must be an integer >= 1 or null"),
    ("train", ["trainer.max_steps=1.5"], "trainer.max_steps must be an integer >= 1 or null"),
    ("train", ["trainer.max_steps=null", "trainer.max_minutes=null"], "trainer needs a budget"),
    ("train", ["trainer.batch_size=abc"], "trainer.batch_size must be an integer >= 1, got 'abc'"),
    ("train", ["trainer.threads=abc"], "trainer.threads must be auto or an integer >= 1"),
    ("train", ["trainer.threads=0"], "trainer.threads must be auto or an integer >= 1"),
    ("train", ["trainer.crop=0"], "trainer.crop must be an integer >= 32 or null"),
    ("train", ["trainer.scale_jitter=[2,1]"], "trainer.scale_jitter must be [low, high] with low <= high"),
    ("train", ["trainer.ema=1"], "trainer.ema must be a number in (0, 1) or null"),
    ("train", ["trainer.mosaic=1.5"], "trainer.mosaic must be a number in [0, 1]"),
    ("train", ["trainer.hflip=maybe"], "trainer.hflip must be true or false"),
    ("train", ["trainer.device=gpu"], "trainer.device must be auto, cpu, cuda or cuda:N"),
    ("train", [CUDA_99], "trainer.device=cuda:99 but"),
    ("train", ["+trainer.foo=1"], "unknown key `trainer.foo`"),
    ("train", ["trainer.lrr=1"], "there is no key `lrr` in `trainer`. Did you mean `lr`?"),
    # data group and top-level keys
    ("train", ["data.synthetic_fraction=abc"], "data.synthetic_fraction must be a number in [0, 1] or null"),
    ("train", ["data.holdout_limit=-1"], "data.holdout_limit must be an integer >= 0"),
    ("train", ["data.class_agnostic=maybe"], "data.class_agnostic must be true or false"),
    ("train", ["data.category_map=abc"], "data.category_map must be a mapping {training name: holdout name}"),
    ("train", ["data.name=5"], "data.name must be a non-empty string or null"),
    ("train", ["+data.foo=1"], "unknown key `data.foo`"),
    ("train", ["data.synthetic=/no/such/folder"], "has no annotations.json"),
    ("train", ["seed=-1"], "seed must be an integer >= 0 and < 2**63"),
    ("train", ["seed=abc"], "seed must be an integer"),
    ("train", ["out="], "out is not set"),
    ("train", ["+utility.fractions=[0.5]"], "unknown key `utility`"),
    ("train", ["nosuch=1"], "there is no key `nosuch`"),
    # utility keys
    ("utility", ["utility.fractions=[2]"], "utility.fractions must be a list of different synthetic fractions strictly between 0 and 1"),
    ("utility", ["utility.fractions=0"], "utility.fractions must be a list"),
    ("utility", ["utility.fractions=abc"], "utility.fractions must be a list"),
    ("utility", ["utility.fractions=[0.5,0.5]"], "utility.fractions must be a list of different"),
    ("utility", ["utility.seeds=abc"], "utility.seeds must be a list of different integers >= 0"),
    ("utility", ["utility.seeds=[0,0]"], "utility.seeds must be a list of different integers >= 0"),
    ("utility", ["utility.seeds=[-1]"], "utility.seeds must be a list of different integers >= 0"),
    ("utility", ["utility.seeds=[1.5]"], "utility.seeds must be a list of different integers >= 0"),
    ("utility", ["utility.tstr=maybe"], "utility.tstr must be true or false"),
    ("utility", ["utility.finetune_split=1"], "utility.finetune_split must be a number in (0, 1)"),
    ("utility", ["utility.synthetic_sizes=5"], "utility.synthetic_sizes must be a list of image counts >= 1"),
    ("utility", ["utility.synthetic_val=0"], "utility.synthetic_val must be an integer >= 1"),
    ("utility", ["utility.sizes_fraction=abc"], "utility.sizes_fraction must be a number in (0, 1)"),
    ("utility", ["+utility.foo=1"], "unknown key `utility.foo`"),
    ("utility", ["utility.tstr=false"], "no arm to run"),
    ("utility", ["utility.synthetic_sizes=[2]"], "utility.synthetic_val=100 leaves no training images"),
]


@pytest.mark.parametrize("cmd,args,match", BAD, ids=[f"{c}:{' '.join(a)}" for c, a, _ in BAD])
def test_bad_value_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, folders, cmd, args, match):
    out = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, cmd, f"data.synthetic={folders['syn']}", f"data.holdout={folders['hold']}", "trainer=smoke",
                    f"out={out}", *args)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("simgen: error: "), err
    assert match in err[0], err[0]
    if " must be " in err[0]:
        assert "; e.g. " in err[0], err[0]  # an example of a valid value, written as an override
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_value_from_the_real_command_line(tmp_path, folders):
    """The same contract through the installed entry point (a fresh process, Hydra's own error handling)."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "simgen.cli", "train", f"data.synthetic={folders['syn']}", f"data.holdout={folders['hold']}",
                        f"out={out}", "model.anchor_sizes=5"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "model.anchor_sizes must be a list of 2 lists" in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout and not out.exists()


@pytest.mark.parametrize("cmd,bad", [("train", "trainer.batch_size=0"), ("utility", "utility.seeds=[1,1]"),
                                     ("train", "model.name=fcos_lit"), ("utility", "data.real=/nowhere")])
def test_bad_value_is_refused_before_torch_loads(tmp_path, folders, cmd, bad):
    """Config checks import no torch (train.config): a typo costs ~1 s, not the ~3-8 s torch takes to load first.
    A fresh process, so that nothing this test session imported counts."""
    args = [cmd, f"data.synthetic={folders['syn']}", f"data.holdout={folders['hold']}", f"out={tmp_path / 'run'}", bad]
    code = ("import sys\nfrom simgen.cli import main\n"
            f"try:\n    main({args!r})\n"
            "except SystemExit as e:\n    print('exit', e.code)\n"
            "print('loaded', sorted(m for m in ('torch', 'torchvision', 'pybullet') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "exit 2" in r.stdout and "loaded []" in r.stdout, r.stdout + r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr

@pytest.mark.parametrize("model", ["frcnn_lite", "fcos_lite", "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2",
                                   "fasterrcnn_mobilenet_v3_large_fpn"])
def test_every_shipped_model_config_passes_and_round_trips_through_provenance(model):
    """The shipped configs are valid, and provenance.json's `model` (asdict, through JSON) reads back as the same
    config: `simgen report` rebuilds a run's detector from it."""
    from simgen.train.models import model_config

    from .conftest import compose_dict

    cfg = model_config(compose_dict("train", [f"model={model}"])["model"])
    assert cfg.name == model
    again = model_config({**json.loads(json.dumps(asdict(cfg))), "weights": None, "weights_backbone": None})
    assert again == cfg


def test_valid_utility_values_still_parse(folders):
    from simgen.train.utility import utility_config

    from .conftest import compose_dict

    base = [f"data.synthetic={folders['syn']}", f"data.holdout={folders['hold']}"]
    assert utility_config(compose_dict("utility", [*base, "utility.seeds=3"])).seeds == (3,)
    assert utility_config(compose_dict("utility", [*base, "utility.seeds=[]", "seed=5"])).seeds == (5,)
    assert utility_config(compose_dict("utility", [*base, "utility.fractions=null"])).fractions == ()


# ---------------------------------------------------------------------------- disk full

TINY = ["trainer=smoke", "model.trunk=tiny", "model.input_size=64", "model.max_size=64", "model.channels=32", "trainer.crop=64",
        "trainer.batch_size=2", "trainer.max_steps=2", "trainer.checkpoint_minutes=1e-9", "trainer.threads=1"]


def full_disk_on(monkeypatch, name: str, nth: int = 1):
    """Make the ``nth`` write of a file called ``name`` hit a full disk half way (ENOSPC from the file write, after
    part of it reached the temporary file), as a real full disk does."""
    from simgen.train import files

    real, seen = files.atomic_save, {"n": 0}

    def atomic_save(path, write):
        if Path(path).name == name:
            seen["n"] += 1
            if seen["n"] == nth:
                def half(f):
                    f.write(b"\0" * 1000)
                    raise OSError(errno.ENOSPC, "No space left on device")

                return real(path, half)
        return real(path, write)

    monkeypatch.setattr(files, "atomic_save", atomic_save)
    return real


def check_disk_full(code: int, err: list[str], folder: Path) -> None:
    assert code == 1, err
    errors = [ln for ln in err if ln.startswith("simgen: error:")]
    assert len(errors) == 1 and errors[0] == err[-1] and not any("Traceback" in ln for ln in err), err
    assert errors[0].startswith(f"simgen: error: disk full writing to {folder} ("), errors[0]
    assert " free there; No space left on device)" in errors[0] and "rerun the same command: it resumes" in errors[0], errors[0]
    assert not list(folder.parent.rglob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize("fails_on,nth,then", [
    ("checkpoint.pt", 1, "no checkpoint yet: trains again"),
    ("checkpoint.pt", 3, "the final write: resumes from the whole step-2 checkpoint"),
    ("predictions.json", 1, "trained: scores the final checkpoint without training"),
    ("metrics.json", 1, "trained: scores the final checkpoint without training"),
])
def test_disk_full_in_train_is_one_line_and_the_rerun_resumes(tmp_path, monkeypatch, capsys, folders, fails_on, nth, then):
    out = tmp_path / "run"
    args = ["train", f"data.synthetic={folders['syn']}", f"data.holdout={folders['hold']}", *TINY, f"out={out}"]
    real = full_disk_on(monkeypatch, fails_on, nth)
    code, err = cli(monkeypatch, capsys, *args)
    check_disk_full(code, err, out)
    assert not (out / "metrics.json").exists()
    if (out / "checkpoint.pt").exists():  # whichever checkpoint is there is whole
        meta = torch.load(out / "checkpoint.pt", weights_only=True)["meta"]
        assert meta["step"] == 2

    from simgen.train import files

    monkeypatch.setattr(files, "atomic_save", real)  # space freed
    code, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["entry"]["steps"] == 2
    if nth == 3:
        assert any("resuming from step 2" in ln for ln in err), err
    if fails_on.endswith(".json"):
        assert any("training finished in an earlier run" in ln for ln in err) and not any(ln.startswith("trained ") for ln in err), err
    assert not list(out.rglob(".*.tmp"))


def test_disk_full_in_a_writer_outside_train_leaves_no_temporary_file(tmp_path, monkeypatch, capsys, folders):
    """DATASHEET.md goes through the render's atomic_write, which leaves its temporary file when the write fails:
    the guard removes it (this process's own), so the folder holds only whole files."""
    import os

    import simgen.datasheet as datasheet

    real = datasheet.atomic_write

    def full(path, data, durable=True):
        tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
        tmp.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    out = tmp_path / "run"
    args = ["train", f"data.synthetic={folders['syn']}", f"data.holdout={folders['hold']}", *TINY, f"out={out}"]
    monkeypatch.setattr(datasheet, "atomic_write", full)
    code, err = cli(monkeypatch, capsys, *args)
    check_disk_full(code, err, out)
    monkeypatch.setattr(datasheet, "atomic_write", real)
    code, err = cli(monkeypatch, capsys, *args)
    assert code == 0 and (out / "DATASHEET.md").is_file() and (out / "metrics.json").is_file(), err


@pytest.mark.parametrize("fails_on,folder", [("report.md", "."), ("checkpoint.pt", "runs/TSTR-s0"), ("map_vs_fraction.png", ".")])
def test_disk_full_in_utility_names_the_folder_and_the_rerun_finishes(tmp_path, monkeypatch, capsys, folders, fails_on, folder):
    out = tmp_path / "u"
    args = ["utility", f"data.synthetic={folders['syn']}", f"data.holdout={folders['hold']}", *TINY, f"out={out}"]
    real = full_disk_on(monkeypatch, fails_on)
    code, err = cli(monkeypatch, capsys, *args)
    check_disk_full(code, err, (out / folder) if folder != "." else out)
    assert not (out / fails_on).exists()

    from simgen.train import files

    monkeypatch.setattr(files, "atomic_save", real)
    code, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert (out / "report.md").is_file() and (out / "map_vs_fraction.png").stat().st_size > 1000
    if fails_on != "checkpoint.pt":
        assert any("already done" in ln for ln in err), err  # the finished run is read back, not retrained
    assert not list(out.rglob(".*.tmp"))


def test_training_categories_the_holdout_lacks_are_warned_about(tmp_path):
    """A real folder labelled pip1/pip2 where the renders say one/two trained a model of four classes, two never scored,
    without a word; now one warning line names them and the mapping that would join them."""
    from simgen.train.utility import job_config, unscored_categories

    from .conftest import compose_dict

    syn = write_folder(tmp_path / "syn", [noise(1, 64), noise(4, 64)], every_category=True)
    real = write_folder(tmp_path / "real", [noise(2, 64), noise(5, 64)], categories=("pip1", "pip2"), every_category=True)
    hold = write_folder(tmp_path / "hold", [noise(3, 64), noise(6, 64)], every_category=True)
    base = ["trainer=smoke", f"data.synthetic=[{syn}]", f"data.holdout={hold}", f"out={tmp_path / 'run'}"]
    w = unscored_categories(job_config(compose_dict("train", [*base, f"data.real={real}"])).data)
    assert w is not None and w.startswith("warning: training categories pip1, pip2") and "+data.category_map.pip1=" in w
    mapped = [*base, f"data.real={real}", "+data.category_map.pip1=one", "+data.category_map.pip2=two"]
    assert unscored_categories(job_config(compose_dict("train", mapped)).data) is None
    assert unscored_categories(job_config(compose_dict("train", base)).data) is None
    # a training class with no box is not learnt: not warned about (a folder's whole class list, as the holdout's)
    sparse = write_folder(tmp_path / "sparse", [noise(7, 64)], categories=("one", "pip9"))
    assert unscored_categories(job_config(compose_dict("train", [*base, f"data.real={sparse}"])).data) is None


def test_a_short_step_budget_still_reaches_its_learning_rate():
    """trainer=cpu warms up over 200 steps; a 30-step run used to peak at 4% of trainer.lr and learn nothing. The warmup
    now takes at most a fifth of max_steps; the recipes' 1,000 steps keep their 200."""
    from dataclasses import replace as dc_replace

    from simgen.train.engine import _lr_factor, trainer_config, warmup_steps

    from .conftest import compose_dict

    cpu = trainer_config(compose_dict("train", ["trainer=cpu"])["trainer"])
    assert cpu.warmup_steps == 200 and warmup_steps(dc_replace(cpu, max_steps=1000)) == 200
    short = dc_replace(cpu, max_steps=30)
    assert warmup_steps(short) == 6
    assert max(_lr_factor(s / 30, s, short) for s in range(30)) > 0.9
    assert warmup_steps(dc_replace(cpu, max_steps=None, max_minutes=5)) == 200  # a minute budget: steps unknown


def test_category_map_keys_must_be_training_names(tmp_path):
    """+data.category_map.onee=one (a typo) was silently ignored; a missing holdout class's hint named a holdout name as
    the key. Now the typo is one line with the closest name, and the hint names a spare training category."""
    from simgen.errors import DatasetError
    from simgen.train.utility import job_config, model_categories

    from .conftest import compose_dict

    syn = write_folder(tmp_path / "syn", [noise(1, 64)], categories=("one", "pip2"))
    hold = write_folder(tmp_path / "hold", [noise(3, 64), noise(4, 64)], categories=("one", "two"), every_category=True)
    base = ["trainer=smoke", f"data.synthetic=[{syn}]", f"data.holdout={hold}", f"out={tmp_path / 'run'}"]
    with pytest.raises(DatasetError, match="key `onee` is not a training category name.*Did you mean `one`"):
        model_categories(job_config(compose_dict("train", [*base, "+data.category_map.onee=one"])).data)
    with pytest.raises(DatasetError, match=r"holdout category `two` is not in the training data.*\+data.category_map.pip2=two"):
        model_categories(job_config(compose_dict("train", base)).data)
    assert model_categories(job_config(compose_dict("train", [*base, "+data.category_map.pip2=two"])).data) == ["one", "two"]
    # the hint names a spare training name only where one is spelled like the missing class or is the only spare: it
    # named the first spare whatever it was (map `teddy` onto `mug`)
    for names, key in ((("one", "teddy", "Mugs"), "Mugs"), (("one", "teddy", "lamp"), "<training name>")):
        s3 = write_folder(tmp_path / f"s-{names[-1]}", [noise(1, 64)], categories=names)
        h3 = write_folder(tmp_path / f"h-{names[-1]}", [noise(3, 64), noise(4, 64)], categories=("one", "mug"), every_category=True)
        with pytest.raises(DatasetError, match=rf"holdout category `mug`.*\+data.category_map.{key}=mug"):
            model_categories(job_config(compose_dict("train", ["trainer=smoke", f"data.synthetic=[{s3}]", f"data.holdout={h3}",
                                                                f"out={tmp_path / 'run3'}"])).data)
