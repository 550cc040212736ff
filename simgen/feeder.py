"""Physics in a process of its own: settle the next scenes while this process renders the current one.

PyBullet holds the GIL through every ``stepSimulation`` and every frame, so a thread cannot overlap the two; a
process can. A feeder is one ``spawn`` process with its own physics world: it runs :func:`simgen.pipeline.settled_scene`,
the very function the generator runs in-process, on the scenes planned next, so the labels are the same bytes
with or without it (a scene is a function of its index alone: the physics world is reset for every scene).

It pays only where a core is free for it: on the 2-core development machine, ``workers=1``, tabletop 640x480,
generation went from ~120 to ~87 ms an image (``benchmarks/vs_script.py`` has the end-to-end numbers). With every
core already rendering, it would only take time from the renderers, so ``physics_process=auto`` starts one per
render process only where there are at least two cores per render process, enough scenes to pay for its start-up,
and the program is simgen's own command line (:func:`wanted`).

Failure is never worse than no feeder: the scenes asked for while it is still starting, and any it failed on (an
error, a dead process), are settled here instead, by the same function, so errors read exactly as they do without
it. Like ``workers`` > 1, it starts a ``spawn`` process, which imports the caller's main module: a script that
calls :func:`simgen.run.render_dataset` needs the usual ``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as ResultTimeout  # the builtin TimeoutError only from Python 3.11
from multiprocessing import util

from .config import RenderConfig
from .types import SceneState

AHEAD = 2  # scenes settled ahead: one to hand over while the next settles

_STATE: tuple | None = None  # in the feeder process: (cfg, banks, PhysicsWorld)


def _init(cfg: RenderConfig, banks: dict[str, tuple[str, ...]]) -> None:
    global _STATE
    from .run import mute_stdout, quiet_stdout

    with quiet_stdout((1, 2)):  # importing pybullet prints its build time on fd 2
        from .physics import PhysicsWorld
    mute_stdout()
    _STATE = (cfg, banks, PhysicsWorld(cfg.physics))


def _settle(first: int) -> tuple[SceneState, dict]:
    from .pipeline import settled_scene

    assert _STATE is not None, "feeder process not initialised"
    cfg, banks, world = _STATE
    state, stats = settled_scene(cfg, banks, world, first)
    return state, {**stats, "physics_process": True}


MIN_SCENES = 32  # per render process, for `auto`: a feeder costs ~1 s of a core to start and saves ~35 ms a scene
RESULT_TIMEOUT_S = 600  # a settle takes well under a second: a feeder this late is stuck, and is given up


def wanted(setting: bool | str, processes: int, scenes: int) -> bool:
    """Whether each of ``processes`` render processes, sharing ``scenes`` scenes, gets a feeder: ``physics_process``
    true or false as set; ``auto``: only where the machine has two cores per render process (the feeder's core would
    otherwise be taken from a renderer), each has at least MIN_SCENES scenes to render (so the start-up pays), and
    the program is simgen's own command line (see :func:`main_is_safe`)."""
    if setting not in (True, False, "auto"):
        raise ValueError(f"physics_process must be true, false or auto, got {setting!r}")
    if setting != "auto":
        return bool(setting)
    from .train.threads import usable_cores  # no torch: the affinity mask, capped by a cgroup quota

    return usable_cores() >= 2 * processes and scenes >= MIN_SCENES * processes and main_is_safe()


def main_is_safe() -> bool:
    """Whether a ``spawn`` child may import this program's main module: simgen's command line (the console script,
    ``python -m simgen``) or no file at all (``python -c``, a notebook). Another script might run its top-level code
    again in the child (one without an ``if __name__ == "__main__":`` guard would): ``auto`` leaves such callers
    without a feeder, and they can ask for one with ``physics_process=true``."""
    import sys

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name or "").split(".")[0] == "simgen":
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.basename(path) == "simgen"


def _hello() -> int:
    return os.getpid()


class PhysicsFeeder:
    """Settles planned scenes ``AHEAD`` of the one being rendered, in one ``spawn`` process that dies with this one.

    Until that process has started (imports and its physics world: ~1 s, longer under load) nothing is queued for
    it: the scenes of that time are settled here, and no settle is spent twice."""

    def __init__(self, cfg: RenderConfig, banks: dict[str, tuple[str, ...]]) -> None:
        from .run import spawn_pool

        self.pool: ProcessPoolExecutor | None = spawn_pool(1, _init, (cfg, banks))
        # A render worker is ended, not closed (the pool's sentinel), and on its way out multiprocessing joins every child
        # it has. A graceful shutdown of the feeder at that point never returned (measured: a worker and its feeder each
        # waited for the other): stop it first (finalizers with a priority run before that join). It holds nothing.
        self._finalizer = util.Finalize(self, _stop, args=(self.pool,), exitpriority=10)
        self.hello = self.pool.submit(_hello)  # done once the process is up and initialised
        self.plan: deque[int] = deque()
        self.planned: set[int] = set()  # the plan's members, for a constant-time "is it planned?"
        self.futures: dict[int, Future] = {}
        self.ready = False

    def _is_ready(self) -> bool:
        if not self.ready and self.pool is not None and self.hello.done():
            if self.hello.exception() is not None:  # it could not start: settle everything here
                self.close()
            else:
                self.ready = True
        return self.ready

    def schedule(self, firsts: Iterable[int]) -> None:
        """The scenes (their first image indices) the generator will ask for, in order. A scene settling for an earlier
        plan and not in this one (its task was abandoned: the render pool broke and restarted) is dropped, so it cannot
        hold one of the AHEAD slots for the rest of the run."""
        firsts = list(firsts)
        wanted = set(firsts)
        for first in [f for f in self.futures if f not in wanted]:
            self.futures.pop(first).cancel()  # running: it finishes unread; queued: it never runs
        self.plan = deque(f for f in firsts if f not in self.futures)
        self.planned = set(self.plan)
        self._top_up()

    def _top_up(self) -> None:
        while self.pool is not None and self.plan and len(self.futures) < AHEAD and self._is_ready():
            first = self.plan.popleft()
            self.planned.discard(first)
            try:
                self.futures[first] = self.pool.submit(_settle, first)
            except RuntimeError:  # the pool broke (its process died): settle here from now on
                self.close()

    def take(self, first: int) -> tuple[SceneState, dict] | None:
        """The settled scene ``first`` from the feeder (waiting for it if it is settling it); None: settle it here."""
        if first in self.planned:  # asked for now: never queue it later (the generator asks in plan order: the head)
            self.planned.discard(first)
            if self.plan and self.plan[0] == first:
                self.plan.popleft()
            else:
                self.plan.remove(first)
        fut = self.futures.pop(first, None)
        got = None
        if fut is not None:
            try:
                got = fut.result(timeout=RESULT_TIMEOUT_S)
            except ResultTimeout:  # stuck (stopped, deadlocked): give it up, settle here from now on
                self.close()
            except Exception:  # a scene error, or a dead feeder: settling here raises the same error, or just works
                if getattr(self.pool, "_broken", False):
                    self.close()
        self._top_up()
        return got

    def close(self) -> None:
        pool, self.pool = self.pool, None
        self.futures.clear()
        self.plan.clear()
        self.planned.clear()
        if pool is not None:
            self._finalizer.cancel()
            procs = _processes(pool)
            pool.shutdown(wait=False, cancel_futures=True)  # it ends after the scene in hand ...
            for proc in procs:
                proc.join(timeout=10)
                if proc.is_alive():  # ... unless it is stuck
                    proc.terminate()
                    proc.join(timeout=10)


def _processes(pool: ProcessPoolExecutor) -> list:
    return list((getattr(pool, "_processes", None) or {}).values())  # the executor keeps no public handle on them


def _stop(pool: ProcessPoolExecutor) -> None:
    for proc in _processes(pool):
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
