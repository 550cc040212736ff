"""Command line: the only place that knows Hydra.

    simgen render [key=value ...]        render a dataset (Hydra app: --help, --cfg job, -m work)
    simgen preview <dataset> [--out F]   contact sheet with boxes, masks and class names
    simgen merge <dir> <dir> ... out=<dir>
    simgen export <dir> format=yolo out=<dir>   a finished COCO dataset as an Ultralytics YOLO folder
    simgen train / simgen utility        sim-to-real trainer and protocol (Hydra apps)
    simgen report data.synthetic=<dir> data.real=<dir> out=<dir>   validation report (report.html, report.json)
    simgen fit data.real=<dir> scene=<name> out=<file.yaml>      randomization ranges fitted to real photos (an overlay)
    simgen render overlay=<file.yaml> [key=value ...]            render with a fitted overlay; explicit overrides win
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError, SimgenError, did_you_mean

CONF = Path(__file__).resolve().parent.parent / "conf"
COMMANDS = ("render", "preview", "merge", "export", "train", "utility", "report", "fit")


USAGE = """usage: simgen <command> [args]   (`simgen <command> --help` for details)

  render    render a labelled COCO dataset     simgen render scene=tabletop n_images=500 out=datasets/tt
  preview   contact sheet of a dataset         simgen preview datasets/tt
  merge     join shard outputs into one        simgen merge datasets/big/shards/* out=datasets/big-merged
  export    COCO dataset as YOLO (Ultralytics) simgen export datasets/dice format=yolo out=datasets/dice-yolo
  train     train a detector, score on real    simgen train data.synthetic=datasets/dice out=runs/dice
  utility   sim-to-real protocol (TSTR, mixes) simgen utility data.synthetic=datasets/dice out=runs/utility
  report    synthetic vs real validation       simgen report data.synthetic=datasets/dice data.real=<dir> out=reports/dice
  fit       ranges fitted to real photos       simgen fit data.real=<dir> scene=dice out=fits/real.yaml  (then: simgen render overlay=fits/real.yaml)"""


def fail(msg: str, code: int = 2) -> None:
    print(f"simgen: error: {msg}", file=sys.stderr)
    sys.exit(code)


def conf_dir() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("simgen.conf")))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def refuse_code_overrides(overrides: list[str]) -> None:
    """Refuse command-line overrides that make Hydra call a function: ``hydra.callbacks`` and any ``_target_``.

    The launcher is chosen with ``hydra/launcher=<name>`` and tuned with ``+hydra.launcher.<key>=<value>``; both stay
    allowed as long as they name no ``_target_``. Code to run belongs in a config file, not an override."""
    for a in overrides:
        if a.startswith("-"):
            continue
        key, sep, value = a.partition("=")
        key = key.lstrip("+~").strip()
        if key.replace("/", ".").startswith("hydra.callbacks") or key.endswith("_target_") or "_target_" in value:
            fail(f"override `{a}` is refused: hydra.callbacks and `_target_` make Hydra call functions named on the command line; "
                 "choose a launcher with hydra/launcher=<name> and tune it with +hydra.launcher.<key>=<value>.")


def precheck(config_name: str, overrides: list[str]) -> Any:
    """Compose once before Hydra's app does, to turn composition errors into one line each. Returns the composed
    config (an OmegaConf DictConfig), or None where Hydra's own flags (help, --cfg, multirun) leave it to Hydra."""
    if any(a in ("--help", "-h", "--hydra-help", "--info") or a.startswith("--shell-completion") for a in overrides):
        return None
    # before Hydra's own flags too: `--cfg job scene=dcie` says what is wrong in one line as well
    check_group_options(overrides, sweeps=True)
    if any(a in ("-m", "--multirun") or a.startswith(("--cfg", "-c")) for a in overrides):
        return None
    return compose_checked(config_name, [a for a in overrides if not a.startswith("hydra")])


def check_group_options(overrides: list[str], sweeps: bool) -> None:
    """A config group's option that does not exist (``scene=dcie``) is one ConfigError with the closest ones; with
    ``sweeps``, a comma-separated value (a multirun's sweep) is left to Hydra."""
    for a in overrides:
        key, sep, value = a.lstrip("+~").partition("=")
        swept = sweeps and ("," in value or value.startswith(("glob(", "choice(", "range(", "interval(")))  # Hydra's sweeps
        if sep and "/" not in key and (conf_dir() / key).is_dir() and not swept:
            options = group_options(key)
            if value not in options:
                raise ConfigError(f"unknown {key} `{value}`." + did_you_mean(value, options))


def compose_checked(config_name: str, overrides: list[str]) -> Any:
    """Hydra's composition of ``overrides`` (an OmegaConf DictConfig); an override that cannot work is one ConfigError:
    the key's closest names, the quoting a value needs, or Hydra's own first line."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_module("simgen.conf", version_base="1.3"):
            return compose(config_name, overrides=overrides)
    except Exception as e:  # Hydra raises several types; all mean "this override cannot work"
        raise ConfigError(_compose_error(config_name, overrides, e)) from None
    finally:
        GlobalHydra.instance().clear()


def _compose_error(config_name: str, overrides: list[str], e: Exception) -> str:
    """One line for an override Hydra could not compose: the key's closest names, the quoting a value needs, or Hydra's
    own first line."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    _clear_hydra()
    return (unknown_key(config_name, overrides, first) or quoting_hint(first)
            or f"bad override: {first} (check the key's spelling; `simgen {config_name} --cfg job` prints the whole config)")


def _clear_hydra() -> None:
    """unknown_key composes again: not inside another initialisation."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


def quoting_hint(first: str) -> str | None:
    """Hydra's lexer refuses an unquoted value with characters outside its plain set (an accent, ``&``, ``(``...), and
    says only "LexerNoViableAltException: <override>": the key is fine, the value needs quotes."""
    if not first.startswith("LexerNoViableAltException"):
        return None
    override = first.split(":", 1)[1].strip()
    key, sep, value = override.partition("=")
    if not sep:
        return None
    plain = key.lstrip("+~")
    if not all(c.isascii() and (c.isalnum() or c in "._-[]") for c in plain):
        # the key is what Hydra cannot lex (a category named with a space or an accent): quoting the value cannot help
        group = plain.rsplit(".", 1)
        return (f"override `{override}`: a key cannot hold `{plain}` (Hydra keys are plain ASCII words); give the group a "
                f"plain name and set the category's own name inside, e.g. '{key[:len(key) - len(plain)]}{group[0]}.mygroup="
                f"{{..., category: \"{group[-1]}\"}}'.")
    return (f"override `{override}`: Hydra needs quotes around a value with characters like these; write it as "
            f"'{key}=\"{value}\"' (single quotes for the shell, double quotes for Hydra).")


def render_config_of(overrides: list[str] | tuple[str, ...] = ()):
    """The :class:`simgen.config.RenderConfig` that ``simgen render <overrides>`` would run, for Python callers
    (:meth:`simgen.data.RenderedDataset.from_overrides`): composed by Hydra here, at the edge, with the command line's
    syntax and checks. Raises ConfigError with the line the command line would print."""
    from omegaconf import OmegaConf

    from .config import render_config

    overrides = [str(a) for a in overrides]
    if any(a.lstrip("+").startswith("overlay=") for a in overrides):  # as the command line: its overrides first
        from .fit import expand_overlay

        overrides = expand_overlay(overrides, lambda g: (conf_dir() / g).is_dir(), lambda g, o: o in group_options(g),
                                   lambda groups: composed("render", groups))
    for a in overrides:
        if a.lstrip("+~").startswith("hydra") or "_target_" in a or a.startswith("-"):
            raise ConfigError(f"override `{a}`: only render settings compose here (no Hydra flags, hydra.* or _target_).")
    check_group_options(overrides, sweeps=False)
    cfg = compose_checked("render", overrides)
    try:
        d = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an interpolation that does not resolve
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"bad override: {first} (check the key's spelling; `simgen render --cfg job` prints the whole config)") from None
    d.pop("hydra", None)  # type: ignore[union-attr]
    return render_config(d)  # type: ignore[arg-type]


def _is_sweep(value: str) -> bool:
    """Whether an override's value is a Hydra sweep (``1,2``, ``range(0,3)``, ``choice(a,b)``, ``glob(*)``) rather than
    one value (a list ``[1,2]`` or a quoted string may hold commas too)."""
    v = value.strip()
    if v.startswith(("range(", "choice(", "glob(", "interval(")):
        return True
    depth, quote = 0, ""
    for ch in v:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False


def _out_value(cmd: str, overrides: list[str]) -> str | None:
    """The command's ``out`` as written (its interpolations unresolved): the override's, else the config's default."""
    for a in reversed(overrides):
        key, sep, value = a.lstrip("+").partition("=")
        if sep and key == "out":
            return value
    for line in (conf_dir() / f"{cmd}.yaml").read_text().splitlines():
        if line.startswith("out:"):
            return line.split(":", 1)[1].split("#", 1)[0].strip() or None
    return None


def check_sweep_outs(cmd: str, overrides: list[str]) -> None:
    """A multirun whose jobs differ in keys its ``out`` does not name writes every job into one folder: the second job
    finds the first's dataset (or run) and stops, after the first has run. Said before any job. Render shards
    (shard.index) go to out/shards/<k>-of-<n> by themselves."""
    swept = []
    for a in overrides:
        key, sep, value = a.lstrip("+~").partition("=")
        if sep and not a.startswith("-") and not key.startswith("hydra") and _is_sweep(value):
            swept.append(key)
    out = _out_value(cmd, overrides)
    if out is None or "out" in swept:
        return
    free = ("shard.index", "shard.count") if cmd == "render" else ()
    missing = [k for k in swept if k not in free and "${" + k not in out and f"choices.{k}" not in out]
    if missing:
        k = missing[0]
        # a config group's choice: the scene's own name field, else Hydra's record of the choice
        ref = k if not (conf_dir() / k).is_dir() else "scene.name" if k == "scene" else f"hydra:runtime.choices.{k}"
        raise ConfigError(f"-m sweeps {', '.join(missing)} but every job would write into out={out}, so the second would find "
                          f"the first's output and stop; name the swept keys in out, e.g. 'out={out}_${{{ref}}}'.")


SWEEP_JOBS_CHECKED = 64  # a sweep's jobs composed and checked before the first runs (each ~0.05 s)


def check_sweep_jobs(cmd: str, overrides: list[str]) -> None:
    """Every job of a ``-m`` sweep composed and checked before the first job runs: a bad value in one (shard.index=0,1
    with shard.count=1; a value Hydra cannot lex) stopped the sweep after the jobs before it had written their output,
    and a lexer error was Hydra's raw message. Up to SWEEP_JOBS_CHECKED jobs, composed under one Hydra initialisation;
    a sweep a sweeper draws from (``interval(0,1)``) cannot be listed and is left to Hydra."""
    import itertools

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    plain = [a for a in overrides if not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except Exception as e:  # the grammar's own refusal: the same hint as a single run gets
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(quoting_hint(first) or f"bad override: {first}") from None
    choices = []
    for o, text in zip(parsed, plain):
        if not o.is_sweep_override():
            choices.append([text])
            continue
        try:
            values = list(o.sweep_string_iterator())
        except Exception:  # glob() (needs the config's options) or interval() (only a sweeper that draws can take it)
            if not o.is_discrete_sweep() and not any(a.lstrip("+").startswith("hydra/sweeper=") for a in overrides):
                raise ConfigError(f"override `{text}`: the basic sweeper runs listed values only (a,b,c, range(a,b) or "
                                  "glob(...)); interval() and the like need a sweeper that draws values "
                                  "(hydra/sweeper=<one installed>).") from None
            choices.append([None])  # left at the config's own value: the other overrides are still checked
            continue
        prefix = text[: len(text) - len(text.lstrip("+~"))]
        choices.append([f"{prefix}{o.get_key_element()}={v}" for v in values])
    jobs = [[a for a in job if a is not None] for job in itertools.islice(itertools.product(*choices), SWEEP_JOBS_CHECKED)]
    try:
        with initialize_config_module("simgen.conf", version_base="1.3"):
            for job in jobs:
                try:
                    d = compose(cmd, overrides=list(job))
                except Exception as e:  # the single run's message for it (which composes again, outside this context)
                    raise ConfigError(_compose_error(cmd, list(job), e)) from None
                if cmd == "render":
                    from .config import render_config

                    try:
                        values = OmegaConf.to_container(d, resolve=True)
                    except Exception:  # an interpolation only Hydra's app resolves (${hydra:...}): composition is checked
                        continue
                    render_config(values)  # type: ignore[arg-type]
    finally:
        GlobalHydra.instance().clear()


def unknown_key(config_name: str, overrides: list[str], first: str) -> str | None:
    """For Hydra's "Could not override 'a.b'" (a key the config does not have): which keys ``a`` has, and
    the closest one; None when that cannot be told."""
    import re

    m = re.match(r"Could not override '([^']+)'", first)
    if not m:
        return None
    key = m.group(1)
    parent, _, leaf = key.rpartition(".")
    rest = [a for a in overrides if a.lstrip("+~").partition("=")[0] != key]
    node: object = composed(config_name, rest)
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or not node:
        return None
    where = f" in `{parent}`" if parent else ""
    return (f"bad override `{key}`: there is no key `{leaf}`{where}." + did_you_mean(leaf, [str(k) for k in node if k != "hydra"])
            + f" (`simgen {config_name} --cfg job` prints the whole config)")


HELP_TEMPLATE = """${hydra.help.header}
== Configuration groups ==
Compose your configuration from those groups (group=option)

GROUPS

== Config ==
Override anything in the config (foo.bar=value)

$CONFIG

${hydra.help.footer}"""


def command_groups(config_name: str, overrides: list[str]) -> list[str] | None:
    """The config groups this command's config is composed from (its defaults list, nested ones included:
    `fit` uses render's), not every folder under conf/; None when the overrides do not compose."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_module("simgen.conf", version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
            return sorted(g for g in cfg.hydra.runtime.choices if not g.startswith("hydra/") and (conf_dir() / g).is_dir())
    except Exception:  # Hydra raises several types; --help then shows Hydra's own text or error
        return None
    finally:
        GlobalHydra.instance().clear()


def help_override(config_name: str, args: list[str]) -> str | None:
    """For ``--help``: a ``hydra.help.template`` override that lists only this command's groups. Hydra's own
    ``$APP_CONFIG_GROUPS`` lists every group under conf/, so `simgen render --help` offered model/ and
    trainer/, and `simgen train --help` scene/ and renderer/. None when the user set a template."""
    overrides = [a for a in args if not a.startswith("-") and not a.startswith("hydra")]
    if any(a.lstrip("+~").startswith("hydra.help.template") for a in args):
        return None
    groups = command_groups(config_name, overrides)
    if groups is None:
        return None
    lines = "\n".join(f"{g}: {', '.join(group_options(g))}" for g in groups) or "(none: every setting is a key=value override)"
    return "hydra.help.template='" + HELP_TEMPLATE.replace("GROUPS", lines).replace("'", "") + "'"


def composed(config_name: str, overrides: list[str]) -> dict:
    """The composed config as a plain dict, unresolved; {} when the overrides do not compose (precheck then says why)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    try:
        with initialize_config_module("simgen.conf", version_base="1.3"):
            return OmegaConf.to_container(compose(config_name, overrides=overrides), resolve=False)  # type: ignore[return-value]
    except Exception:  # Hydra raises several types
        return {}
    finally:
        GlobalHydra.instance().clear()


def hydra_app(config_name: str, task: Callable[[dict], None]) -> Callable[[], None]:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(config_path="pkg://simgen.conf", config_name=config_name, version_base="1.3")
    def app(cfg: DictConfig) -> None:
        run_task(task, cfg)

    return app


OVERLAY: list[tuple[str, tuple[str, ...]]] = []  # (overlay= file, keys typed beside it) of the command being run


def run_task(task: Callable[[dict], None], cfg: Any) -> None:
    """Run a command's task on its composed config, with simgen's errors as one line each."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        try:
            d = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as e:
            raise ConfigError(f"bad config: {str(e).strip().splitlines()[0]} (check the interpolation it names)") from None
        task(d)  # type: ignore[arg-type]
    except ConfigError as e:  # about a key an overlay set: the overlay is named
        from .fit import blame_overlay

        fail(blame_overlay(str(e), *OVERLAY[0]) if OVERLAY else str(e), e.exit_code)
    except SimgenError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to resume.", 130)


def console() -> None:
    """The ``simgen`` command (and ``python -m simgen``): :func:`main`; then, after a ``simgen render`` that succeeded
    without Hydra's app (no multirun, launcher or hydra.* setting), an exit that skips Python's teardown of every
    module and object: 0.12-0.17 s -> 0.03-0.04 s at the end of a 20-image render (measured), a tenth of a short
    run's tail. What an exit must do still happens: atexit handlers run (multiprocessing's, the probes'), Python's
    output is flushed, and libc's exit, called holding the interpreter lock so that no Python thread runs on, flushes
    C's output and runs the C libraries' exit handlers (Mesa's). Errors, other commands (training holds torch, whose
    exit wants the ordinary order), and a run that leaves a thread Python would wait for exit the ordinary way."""
    import atexit
    import ctypes
    import threading

    cmd, rest = (sys.argv[1] if len(sys.argv) > 1 else ""), sys.argv[2:]  # before main() rewrites sys.argv
    main()
    if cmd != "render" or needs_hydra_app(rest) or os.name != "posix":
        return
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # a closed or full pipe: Python's own exit reports it (status 120)
        return
    ctypes.PyDLL(None).exit(0)  # PyDLL keeps the interpreter lock through the call; CDLL would release it


def gl_probe_wanted(overrides: list[str]) -> bool:
    """Whether a render will ask :func:`simgen.glrender.probe_gl` about the default device: under renderer=auto (the
    default) or gl, with no device named (renderer.devices, CUDA_VISIBLE_DEVICES: those are probed one by one)."""
    renderer = next((a.split("=", 1)[1] for a in reversed(overrides) if a.lstrip("+").startswith("renderer=")), "auto")
    named = any(a.lstrip("+").startswith("renderer.devices=") for a in overrides) or os.environ.get("CUDA_VISIBLE_DEVICES")
    return renderer in ("auto", "gl") and not named


def needs_hydra_app(overrides: list[str]) -> bool:
    """Whether a command line needs Hydra's app (a multirun, a launcher or any hydra.* setting, Hydra's flags) rather
    than the config precheck already composed. Hydra's app composes the config twice more (once to learn the mode,
    once to run: ~0.5 s of a run's start-up) and, with our configs, writes nothing and changes no directory."""
    return any(a.startswith("-") or a.lstrip("+~").startswith("hydra") for a in overrides)


def _render(d: dict) -> None:
    from .run import quiet_stdout

    with quiet_stdout((1, 2)):
        import pybullet  # noqa: F401  (prints its build time on import)
    from .config import render_config
    from .run import render_dataset

    cfg = render_config(d)
    if cfg.writer == "webdataset":
        from .writers.webdataset import render_webdataset

        render_webdataset(cfg, shard_size=int((d.get("writer") or {}).get("shard_size", 1000)), log=lambda m: print(m, file=sys.stderr))
    elif cfg.writer == "yolo":  # COCO as always, then an Ultralytics view of it in the same folder
        from .writers.yolo import YoloOptions, render_yolo

        w = d["writer"] if isinstance(d.get("writer"), dict) else {}  # validated by render_config
        opts = YoloOptions(segments=bool(w.get("segments", False)), val_fraction=float(w.get("val_fraction", 0.0)))
        render_yolo(cfg, opts, log=lambda m: print(m, file=sys.stderr))
    else:
        render_dataset(cfg, log=lambda m: print(m, file=sys.stderr))


def _preview(args: list[str]) -> None:
    import argparse

    from .preview import LIMITS, check_value, contact_sheet, limit_text

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]  # one line, exit 2, like every simgen error
            fail(f"{message} (`simgen preview --help` lists the options)")

    def flag(name: str) -> Callable[[str], int]:
        def parse(v: str) -> int:
            try:
                return check_value(name, v)
            except ConfigError as e:
                raise argparse.ArgumentTypeError(str(e).removeprefix(f"{name} ")) from None
        return parse

    ap = Parser(prog="simgen preview", description="Contact sheet of a COCO dataset with boxes, masks and names.")
    ap.add_argument("dataset", help="dataset folder (with annotations.json)")
    ap.add_argument("--out", default=None, help="PNG path (default: <dataset>/preview.png)")
    for name, what in (("--n", "number of images"), ("--cols", "images per row"), ("--size", "tile size in pixels")):
        ap.add_argument(name, type=flag(name), default=LIMITS[name][2], help=f"{what} ({limit_text(name).removeprefix('must be ')})")
    a = ap.parse_args(args)
    path = contact_sheet(Path(a.dataset), Path(a.out) if a.out else None, n=a.n, cols=a.cols, tile=a.size)
    print(path)


def _merge(args: list[str]) -> None:
    from .merge import merge_datasets

    outs = [a for a in args if a.startswith("out=")]
    dirs = [a for a in args if not a.startswith("out=") and not a.startswith("-")]
    if "-h" in args or "--help" in args:
        print("usage: simgen merge <dir> [<dir> ...] out=<dir> [overwrite=true]\n"
              "Joins shard outputs of one config into one COCO dataset with consistent ids.")
        return
    if not outs or not dirs:
        fail("usage: simgen merge <dir> [<dir> ...] out=<dir>")
    overwrite = any(a.lower() in ("overwrite=true", "--overwrite") for a in args)
    dirs = [d for d in dirs if not d.startswith("overwrite=")]
    merged = merge_datasets([Path(d) for d in dirs], Path(outs[-1][4:]), overwrite=overwrite, log=lambda m: print(m, file=sys.stderr))
    import json

    m = json.loads((merged / "manifest.json").read_text())
    print(f"{merged}: {m['n_images']} images, {m['n_annotations']} annotations from {len(dirs)} shard{'s' * (len(dirs) != 1)}")


def _no_job(d: dict) -> None:
    raise AssertionError("Hydra ran a job for --help, --cfg or --info")  # it prints and returns for each of them


def hydra_task(cmd: str) -> Callable[[dict], None]:
    """The plain-dict task behind each Hydra app (imported late: train and report pull in torch)."""
    if cmd == "render":
        return _render
    if cmd == "report":
        from .report.cli import report_task

        return report_task
    if cmd == "fit":
        from .fit import fit_task

        return fit_task
    from .train import cli as train_cli

    return train_cli.train_task if cmd == "train" else train_cli.utility_task


def main(argv: list[str] | None = None) -> None:
    # Before anything imports torch: OpenMP reads its wait policy once, when torch loads it, and its default
    # lets idle workers spin, which collapses training on a shared machine (simgen/train/threads.py). A user's
    # own OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        fail(f"unknown command `{cmd}`." + did_you_mean(cmd, COMMANDS))
    if cmd not in ("preview", "merge", "export"):  # the Hydra apps
        refuse_code_overrides(rest)
    try:
        if cmd == "preview":
            return _preview(rest)
        if cmd == "merge":
            return _merge(rest)
        if cmd == "export":
            from .export import export_cli

            return export_cli(rest)
        overlay = None  # the overlay file, whose keys an error may be about
        if cmd == "render":  # overlay=<file> becomes overrides placed first: explicit ones, applied later, win
            if not any(a.lstrip("+").startswith(("renderer=tiny", "-", "hydra")) for a in rest):
                # renderer=auto and egl load EGL in a probe process first: start it now, beside composing the config
                from .eglprobe import start_gl_probe, start_probe

                start_probe()
                if gl_probe_wanted(rest):
                    start_gl_probe()
            if any(a.lstrip("+").startswith("overlay=") for a in rest):  # simgen.fit costs ~0.15 s to import: only then
                from .fit import expand_overlay

                overlay = next(a for a in rest if a.lstrip("+").startswith("overlay=")).split("=", 1)[1].strip("'\"")
                typed = tuple(a.lstrip("+~").split("=", 1)[0] for a in rest if "=" in a and not a.lstrip("+").startswith("overlay="))
                OVERLAY[:] = [(overlay, typed)]
                rest = expand_overlay(rest, lambda g: (conf_dir() / g).is_dir(), lambda g, o: o in group_options(g),
                                      lambda groups: composed("render", groups))
                refuse_code_overrides(rest)
        try:
            cfg = precheck(cmd, rest)
        except ConfigError as e:
            if overlay is None:
                raise
            from .fit import blame_overlay

            raise ConfigError(blame_overlay(str(e), *OVERLAY[0])) from None
        sweep_dir = None
        prints = any(a in ("--cfg", "-c", "--info", "-i") or a.startswith(("--cfg=", "--info=")) for a in rest)
        shows = prints or any(a in ("--help", "-h", "--hydra-help") for a in rest)  # no job runs
        if prints and any(a in ("-m", "--multirun") for a in rest):
            raise ConfigError("Hydra takes one of -m, --cfg and --info at a time; to see a sweep job's config, run --cfg job "
                              "with that job's values (without -m and the commas).")
        if any(a in ("-m", "--multirun") for a in rest) and not shows:
            check_sweep_jobs(cmd, rest)
        if any(a in ("-m", "--multirun") for a in rest) and not shows and not any(a.startswith("hydra.sweep.dir=") for a in rest):
            check_sweep_outs(cmd, rest)
            out = _out_value(cmd, rest)
            if out is not None and "${" in out:  # Hydra resolves sweep.dir (${out}/...) with the base config's values: a
                import tempfile                  # stray folder for a job nobody asked for; its multirun.yaml goes here

                sweep_dir = tempfile.mkdtemp(prefix="simgen-multirun-")
                rest = [*rest, f"hydra.sweep.dir={sweep_dir}"]
        if any(a in ("--help", "-h") for a in rest):
            extra = help_override(cmd, rest)
            rest = [*rest, extra] if extra else rest
        sys.argv = [f"simgen {cmd}", *rest]
        if cfg is not None and not needs_hydra_app(rest):
            return run_task(hydra_task(cmd), cfg)
        try:
            # --help, --cfg and --info print and run no job: no task to import (train's and report's pull in torch,
            # 6-8 s of a `simgen train --help`)
            return hydra_app(cmd, _no_job if shows else hydra_task(cmd))()
        finally:
            if sweep_dir is not None:
                import shutil

                shutil.rmtree(sweep_dir, ignore_errors=True)
    except SimgenError as e:
        fail(str(e), e.exit_code)
    except BrokenPipeError:  # e.g. `simgen render --help | head`: the reader left, that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    console()
