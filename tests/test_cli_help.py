"""`simgen <command> --help` lists the config groups that command is composed from, not every folder under conf/
(Hydra's $APP_CONFIG_GROUPS does: render offered model/ and trainer/, train offered scene/ and renderer/)."""
import subprocess
import sys

import pytest

RENDER_GROUPS = {"scene", "renderer", "randomization", "writer"}
TRAIN_GROUPS = {"data", "model", "trainer"}


def help_groups(cmd: str, *args: str) -> tuple[str, dict[str, list[str]]]:
    """The help text and its groups section as {group: options}."""
    r = subprocess.run([sys.executable, "-m", "simgen.cli", cmd, "--help", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    section = r.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    groups = {}
    for line in section.splitlines():
        name, sep, options = line.partition(": ")
        if sep and " " not in name:
            groups[name] = options.split(", ")
    return r.stdout, groups


@pytest.mark.parametrize("cmd,groups,header", [
    ("render", RENDER_GROUPS, "simgen render: "),
    ("train", TRAIN_GROUPS, "simgen train: "),
    ("utility", TRAIN_GROUPS, "simgen utility: "),
])
def test_help_lists_only_the_commands_own_groups(cmd, groups, header):
    text, listed = help_groups(cmd)
    assert set(listed) == groups, listed
    assert text.startswith(header), text[:200]
    assert "is powered by Hydra" not in text  # train/utility had Hydra's default header ("cli is powered by Hydra.")
    if cmd == "render":
        assert listed["scene"] == ["custom", "dice", "tabletop"] and "tiny" in listed["renderer"]
    else:
        assert {"fcos_lite", "frcnn_lite"} <= set(listed["model"]) and listed["trainer"] == ["cpu", "gpu", "smoke"]
    assert "== Config ==" in text and "out:" in text  # the composed config still follows


def test_help_with_overrides_shows_them_in_the_config():
    text, listed = help_groups("train", "model=frcnn_lite", "trainer.lr=0.005")
    assert set(listed) == TRAIN_GROUPS
    assert "name: frcnn_lite" in text and "lr: 0.005" in text
