"""How many intra-op threads a process of the toolkit uses: its share of the cores, not all of them.

torch starts one OpenMP thread per core. Two such processes on a small machine do not each run at
half speed: their worker threads spin-wait for each other and both slow down 5x to 100x. So every
command takes a thread budget:

1. ``--threads N`` given to the command, else ``DOPR_ROBOT_THREADS=N`` (``all``: torch's own
   default), else ``OMP_NUM_THREADS`` when set: that many threads, fixed.
2. Otherwise the cores that are free when the process starts (the machine's busy cores measured
   from ``/proc/stat`` over a short window, this process excluded), at least one, and the budget
   adapts: at each ``rebalance()`` (the training loop calls it when it logs) the process measures
   the cores the *other* processes used since the last call and shrinks, or grows back, to the
   rest. A training started alone takes both cores; a second one started beside it takes the one
   left, and the first gives it up at its next log point.

Background jobs (``expert train``) default to one thread. Off Linux (no ``/proc/stat``) the budget
is the process's cores, fixed. ``benchmarks/side_by_side.py`` measures what the budget buys.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

PROC_STAT = Path("/proc/stat")
ENV_VARIABLE = "DOPR_ROBOT_THREADS"


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _busy_and_total_jiffies() -> tuple[int, int] | None:
    """Busy and total CPU time of the whole machine since boot, in clock ticks (``/proc/stat``)."""
    try:
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system  # this process, all its threads


class ThreadBudget:
    """The intra-op thread count of this process, fixed or adapting to what other processes use.

    ``fixed``: a thread count (from ``--threads`` or the environment), or ``None`` to adapt.
    ``apply`` sets torch's thread count (injectable for tests); ``sample`` reads the machine's
    (busy, total) CPU ticks, ``own_seconds`` this process's CPU seconds, ``clock`` wall seconds.
    """

    def __init__(self, fixed: int | None = None, *, cores: int | None = None,
                 apply: Callable[[int], None] | None = None,
                 sample: Callable[[], tuple[int, int] | None] = _busy_and_total_jiffies,
                 own_seconds: Callable[[], float] = _own_cpu_seconds,
                 clock: Callable[[], float] = time.monotonic, ticks_per_second: float | None = None):
        self.cores = cores or machine_cores()
        self.fixed = fixed
        self._apply = apply or _set_torch_threads
        self._sample, self._own_seconds, self._clock = sample, own_seconds, clock
        self._ticks = ticks_per_second or (float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0)
        self._last = None
        self.threads = fixed if fixed is not None else self.cores
        self.adaptive = fixed is None and sample() is not None

    def start(self, window_s: float = 0.1) -> int:
        """Measure what is free now (a short window) and apply it; returns the thread count."""
        if self.adaptive:
            self._mark()
            time.sleep(window_s)
            self.threads = self._free_cores()
            self._mark()
        self._apply(self.threads)
        return self.threads

    def rebalance(self) -> int:
        """Resize to the cores other processes left free since the last call; returns the thread count."""
        if not self.adaptive:
            return self.threads
        if self._last is None:
            self._mark()
            return self.threads
        threads = self._free_cores()
        self._mark()
        if threads != self.threads:
            self.threads = threads
            self._apply(threads)
        return self.threads

    def _mark(self) -> None:
        self._last = (self._sample(), self._own_seconds(), self._clock())

    def _free_cores(self) -> int:
        (busy0, total0), own0, wall0 = self._last
        sample = self._sample()
        if sample is None:
            return self.threads
        busy1, total1 = sample
        wall = max(self._clock() - wall0, 1e-3)
        # Cores busy with other processes: the machine's busy time minus our own, per wall second.
        others = max(0.0, (busy1 - busy0) / self._ticks - (self._own_seconds() - own0)) / wall
        return max(1, min(self.cores, int(self.cores - others + 0.5)))


def _set_torch_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def requested_threads(explicit: int | None) -> int | None:
    """The fixed thread count asked for (``--threads``, then the environment), or ``None`` to adapt.

    ``DOPR_ROBOT_THREADS=all`` returns the machine's cores (torch's own default, no budget).
    """
    if explicit is not None:
        return explicit
    for name in (ENV_VARIABLE, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value == "all" and name == ENV_VARIABLE:
            return machine_cores()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


_budget: ThreadBudget | None = None
_threads_before: int | None = None


def configure(explicit: int | None = None) -> ThreadBudget:
    """Set this process's budget (the CLI calls it before a command runs, :func:`release` after)."""
    global _budget, _threads_before
    import torch

    if _budget is None:
        _threads_before = torch.get_num_threads()
    _budget = ThreadBudget(requested_threads(explicit))
    _budget.start()
    return _budget


def release() -> None:
    """Forget the budget and give torch back the thread count it had before :func:`configure`, so
    that code running after a command in the same process (a test, a notebook) is not rebalanced."""
    global _budget, _threads_before
    if _budget is not None and _threads_before is not None:
        _set_torch_threads(_threads_before)
    _budget, _threads_before = None, None


def rebalance() -> int | None:
    """Adapt the process's budget if one is configured (cheap: two small reads); its thread count."""
    return _budget.rebalance() if _budget is not None else None
