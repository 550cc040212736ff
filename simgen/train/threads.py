"""CPU threads for training: how many, chosen so that training never collapses on a shared machine.

Why this exists: torch's CPU kernels run on an OpenMP team. Under OpenMP's default wait policy idle
workers spin while they wait for their siblings, so when another process holds one of the cores, one
sibling is descheduled and the rest burn their time slices spinning for it: `simgen utility` with
threads=2 on a 2-core machine ran at 6.9 s/step beside one busy process, 0.66 s/step with threads=1
(`benchmarks/threads.py` reproduces it). Two defences, both on by default:

- ``OMP_WAIT_POLICY=PASSIVE``: idle workers sleep instead of spinning. OpenMP reads it once, when
  torch loads its runtime, so :mod:`simgen.cli` sets it (``os.environ.setdefault``: a user's own
  value wins) before anything imports torch; setting it later, or ``torch.set_num_threads``, cannot
  change it (measured: a policy set after ``import torch`` collapses like the default).
- ``trainer.threads=auto`` (:func:`apply_threads`). With the passive policy in the environment it uses
  every core this process may run on (``os.sched_getaffinity``, a cgroup quota): sleeping workers cost a
  contended machine nothing, and beside a busy process two passive threads ran 25-50% faster than one.
  Without it (a user's ``OMP_WAIT_POLICY=ACTIVE``, or torch imported before simgen could set it) more
  threads than free cores is what collapses, so it uses the cores free when the command starts,
  measured from ``/proc/stat`` over half a second (the 1-minute load average where that file is missing).

The choice is made once per process and kept for every run of that command, so the arms of one
``simgen utility`` (which are compared on the same minute budget) all get the same thread count.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

AUTO = "auto"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    setting: str | int  # what the config asked for: "auto" or a number
    usable_cores: int  # CPUs this process may run on
    busy_cores: float | None  # cores other processes kept busy while we measured (None: not measured)
    load1: float | None  # 1-minute load average of the whole machine
    omp_wait_policy: str | None  # the environment's value (what OpenMP read if it was set before torch loaded)

    def line(self) -> str:
        load = (f"{self.busy_cores:.1f} busy" if self.busy_cores is not None else f"1-min load {self.load1:.1f}" if self.load1 is not None
                else "load unknown")
        how = "as set" if self.setting != AUTO else (
            f"auto: {self.usable_cores} usable cores, all of them under the passive wait policy ({load} now)" if passive(self.omp_wait_policy)
            else f"auto: {self.usable_cores} usable cores, {load}: the free ones")
        return f"threads: {self.threads} ({how}; OMP_WAIT_POLICY={self.omp_wait_policy or 'unset'})"

    def as_dict(self) -> dict:
        return asdict(self)


def usable_cores() -> int:
    """CPUs in this process's affinity mask, capped by a cgroup CPU quota (containers) when there is one."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(n, math.ceil(quota)) if quota else n)


def _cgroup_quota() -> float | None:
    """CPUs granted by a cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` limit; None when unlimited or unknown."""
    try:
        q, p = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        return None if q == "max" else int(q) / int(p)
    except (OSError, ValueError):
        pass
    try:
        q = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        p = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        return None if q <= 0 else q / p
    except (OSError, ValueError):
        return None


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]] | None:
    """``{cpu: (busy, total)}`` jiffies from /proc/stat for the given CPUs; None where unreadable."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    out = {}
    for ln in lines:
        name, *vals = ln.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in vals[:8]]
            idle = v[3] + v[4]  # idle + iowait
            out[int(name[3:])] = (sum(v) - idle, sum(v))
    return out or None


def busy_cores(window_s: float = 0.5) -> float | None:
    """Cores kept busy by other processes right now (we sleep while measuring), within our affinity."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    a = _cpu_times(cpus)
    time.sleep(window_s)
    b = _cpu_times(cpus)
    if not a or not b:
        return None
    busy = 0.0
    for c in a.keys() & b.keys():
        dt = b[c][1] - a[c][1]
        busy += (b[c][0] - a[c][0]) / dt if dt > 0 else 0.0
    return busy


def decide(usable: int, busy: float | None) -> int:
    """Threads for ``usable`` cores of which ``busy`` are taken: the free ones, rounded, at least 1."""
    free = usable - max(0.0, busy or 0.0)
    return max(1, min(usable, math.floor(free + 0.5)))


def passive(policy: str | None) -> bool:
    return (policy or "").strip().upper() == "PASSIVE"


def choose(setting: str | int) -> ThreadChoice:
    usable = usable_cores()
    try:
        load1: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load1 = None
    policy = os.environ.get("OMP_WAIT_POLICY")
    if setting != AUTO:
        return ThreadChoice(int(setting), setting, usable, None, load1, policy)
    busy = busy_cores()  # measured under either policy: provenance shows what the machine was doing
    if passive(policy):
        return ThreadChoice(usable, setting, usable, busy, load1, policy)
    # /proc/stat sees now; the load average lags a minute (a neighbour that just stopped still counts)
    # but is all there is on systems without /proc.
    return ThreadChoice(decide(usable, busy if busy is not None else load1), setting, usable, busy, load1, policy)


_chosen: dict[str | int, ThreadChoice] = {}


def apply_threads(setting: str | int, log=None) -> ThreadChoice:
    """Choose (once per process and setting; ``log`` gets the one line when it is made) and set torch's
    intra-op thread count."""
    import torch

    if setting not in _chosen:
        _chosen[setting] = choose(setting)
        if log:
            log(_chosen[setting].line())
    c = _chosen[setting]
    torch.set_num_threads(c.threads)
    return c
