"""Find the small Python that a scene spec names: ``module:function``, where the module is one of simgen's own
scene modules (``scenes/<module>.py``), an importable module of the user's (``mypackage.labels:top_face``), or a
Python file (``path/to/labels.py:top_face``, relative to the working directory), so that a user's own labeler or
texture bank needs no edit inside the installed package."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError
from .types import PlacedObject


def builtin_modules() -> list[str]:
    """simgen's own scene modules, wherever the package is installed (an editable checkout or a wheel)."""
    import simgen.scenes

    return sorted(m.name for m in pkgutil.iter_modules(simgen.scenes.__path__))


def _from_file(path: Path, ref: str, what: str, shown: str = ""):
    if not path.is_file():
        raise ConfigError(f"{what} `{ref}`: no file {shown or path} (a path is read relative to the working directory).")
    # one name per file in every process (str hashes differ between processes)
    name = "simgen_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    if name in sys.modules:  # loaded once per process: every scene asks again
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what} `{ref}`: {path} is not a Python file.")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        del sys.modules[name]
        raise ConfigError(f"{what} `{ref}`: importing {path} failed ({type(e).__name__}: {e}).") from None
    return mod


def scene_ref(ref: str, what: str) -> Callable:
    module, _, func = ref.rpartition(":") if ref.count(":") > 1 else ref.partition(":")  # a Windows drive letter aside
    if not func or not module:
        raise ConfigError(f"{what} `{ref}` must look like `module:function`: one of simgen's scene modules "
                          f"({', '.join(builtin_modules())}), your own importable module, or a file (path/to/file.py:function).")
    if module.endswith(".py") or "/" in module or "\\" in module:
        mod = _from_file(Path(module), ref, what, module)
        where = module
    else:
        where = f"scenes/{module}.py"
        try:
            mod = importlib.import_module(f"simgen.scenes.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"simgen.scenes.{module}":  # the module exists but imports something missing
                raise ConfigError(f"{what} `{ref}`: scenes/{module}.py needs `{e.name}`, which is not installed.") from None
            local = Path(*module.split(".")).with_suffix(".py")
            try:  # the user's own module, importable from PYTHONPATH, or a file of that name in the working directory
                # (which the `simgen` console script does not put on sys.path, unlike `python -m simgen`)
                mod = importlib.import_module(module)
                where = module
            except ModuleNotFoundError as e2:
                if local.is_file():
                    return _checked(getattr(_from_file(local, ref, what, str(local)), func, None), ref, what, str(local), func)
                if e2.name is not None and not module.startswith(e2.name) and e2.name != module:
                    raise ConfigError(f"{what} `{ref}`: module `{module}` needs `{e2.name}`, which is not installed.") from None
                raise ConfigError(f"{what} `{ref}`: no scenes/{module}.py and no importable module `{module}`; simgen's scene "
                                  f"modules: {', '.join(builtin_modules())}; or name your own (mypackage.module:function, on "
                                  "PYTHONPATH) or a file (path/to/file.py:function).") from None
    return _checked(getattr(mod, func, None), ref, what, where, func)


def _checked(fn, ref: str, what: str, where: str, func: str) -> Callable:
    if not callable(fn):
        raise ConfigError(f"{what} `{ref}`: {where} has no function `{func}`.")
    return fn


def category_label(obj: PlacedObject) -> str | None:
    """The default labeler: an object's category is its group's category."""
    return obj.category


def labeler(ref: str) -> Callable[[PlacedObject], str | None]:
    return category_label if ref == "category" else scene_ref(ref, "scene.labeler")
