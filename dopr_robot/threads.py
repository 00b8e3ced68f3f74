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
3. Processes started at the same instant all see every core free. So each adapting process also
   leaves a claim (a file named by its pid in ``$XDG_RUNTIME_DIR/dopr-robot-threads``, else the temp
   directory's ``dopr-robot-threads-UID``; no server), takes at most its share of the cores among the
   live claims (the cores that processes with a fixed count claimed are left to them), and removes
   its claim at exit. The claim is made before the start window, so that processes started within it
   see each other; one started later is seen by the others at their next ``rebalance()``. Claims of
   processes that died without removing them are ignored and removed (their pid is gone, or is
   another process's now).

Background jobs (``expert train``) default to one thread. Off Linux (no ``/proc/stat``) the budget
is the process's cores, fixed. ``benchmarks/side_by_side.py`` measures what the budget buys.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

try:
    import fcntl
except ImportError:  # Windows: no claims, the measurement alone decides
    fcntl = None

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
                 clock: Callable[[], float] = time.monotonic, ticks_per_second: float | None = None,
                 claims: Claims | None = None):
        self.cores = cores or machine_cores()
        self.claims = claims
        self.fixed = fixed
        self._apply = apply or _set_torch_threads
        self._sample, self._own_seconds, self._clock = sample, own_seconds, clock
        self._ticks = ticks_per_second or (float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0)
        self._last = None
        self.threads = fixed if fixed is not None else self.cores
        self.adaptive = fixed is None and sample() is not None

    def start(self, window_s: float = 0.1) -> int:
        """Claim cores (with ``claims``), measure what is free now (a short window) and apply it, at most
        this process's share among the claims; returns the thread count."""
        if self.claims is not None:
            try:
                self.claims.register(self.fixed)
            except OSError:
                self.claims = None  # no usable directory: the measurement alone decides
        if self.adaptive:
            self._mark()
            time.sleep(window_s)
            self.threads = self._within_share(self._free_cores())
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
        threads = self._within_share(self._free_cores())
        self._mark()
        if threads != self.threads:
            self.threads = threads
            self._apply(threads)
        return self.threads

    def _within_share(self, threads: int) -> int:
        return threads if self.claims is None else min(threads, self.claims.share(self.cores))

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


class Claim(NamedTuple):
    """A live process's claim: its pid, its start time (clock ticks since boot: a reused pid is another
    process), and its thread count when fixed (``None``: it adapts, and takes a share)."""

    pid: int
    started: int
    fixed: int | None


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (``/proc/PID/stat`` field 22), ``None`` when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def claims_directory() -> Path:
    """Where the claims of this user's processes live (``$XDG_RUNTIME_DIR`` is per user already)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "dopr-robot-threads"
    return Path(tempfile.gettempdir()) / f"dopr-robot-threads-{os.getuid()}"


class Claims:
    """This process's claim on the cores among the other processes' claims, one file each in
    ``directory``; registering (and removing dead processes' claims) is serialized by a lock file."""

    def __init__(self, directory: Path, pid: int | None = None):
        self.directory = directory
        self.pid = pid or os.getpid()
        self.started = _process_start(self.pid) or 0
        self._mine = directory / str(self.pid)

    def register(self, fixed: int | None) -> None:
        """Leave (or replace) this process's claim; raises OSError where the directory is unusable."""
        if fcntl is None:
            raise OSError("no file locks on this platform")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.directory / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.live()  # drops the claims of dead processes
            temporary = self._mine.with_suffix(".tmp")
            temporary.write_text(f"{self.started} {fixed if fixed is not None else 'adapt'}\n")
            os.replace(temporary, self._mine)  # whole or absent to a reader

    def live(self) -> list[Claim]:
        """The claims of live processes (this one's included), oldest first; dead ones' are removed."""
        claims = []
        for path in self.directory.iterdir():
            if not path.name.isdigit():
                continue
            try:
                started, fixed = path.read_text().split()
            except (OSError, ValueError):
                continue  # removed meanwhile, or not a claim
            pid = int(path.name)
            if _process_start(pid) != int(started) and pid != self.pid:
                path.unlink(missing_ok=True)  # its process is gone (or its pid is another process's)
                continue
            claims.append(Claim(pid, int(started), None if fixed == "adapt" else int(fixed)))
        return sorted(claims, key=lambda claim: (claim.started, claim.pid))

    def share(self, cores: int) -> int:
        """This process's share of ``cores``: what the fixed claims leave, split evenly among the adapting
        ones (the oldest take the remainder), at least one."""
        try:
            claims = self.live()
        except OSError:
            return cores
        free = cores - sum(claim.fixed for claim in claims if claim.fixed is not None)
        adapting = [claim.pid for claim in claims if claim.fixed is None]
        if self.pid not in adapting:
            return max(1, free)
        base, remainder = divmod(max(free, 0), len(adapting))
        return max(1, base + (adapting.index(self.pid) < remainder))

    def remove(self) -> None:
        self._mine.unlink(missing_ok=True)


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
    elif _budget.claims is not None:
        _budget.claims.remove()
    _budget = ThreadBudget(requested_threads(explicit), claims=Claims(claims_directory()))
    _budget.start()
    return _budget


def release() -> None:
    """Forget the budget and give torch back the thread count it had before :func:`configure`, so
    that code running after a command in the same process (a test, a notebook) is not rebalanced."""
    global _budget, _threads_before
    if _budget is not None and _budget.claims is not None:
        _budget.claims.remove()
    if _budget is not None and _threads_before is not None:
        _set_torch_threads(_threads_before)
    _budget, _threads_before = None, None


atexit.register(release)  # the claim goes with the process, however its command ended


def rebalance() -> int | None:
    """Adapt the process's budget if one is configured (cheap: two small reads); its thread count."""
    return _budget.rebalance() if _budget is not None else None
