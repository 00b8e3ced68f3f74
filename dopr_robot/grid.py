"""How the cells of a grid run: one after another, in local worker processes, or as Ray tasks.

``compare`` decides *what* runs (the cells without an eval.json) and hands them here with the cell
body: a top-level function ``cell(config, task, optimizer, seed, data, device)`` that trains,
evaluates and writes the cell's eval.json atomically (:func:`dopr_robot.compare.run_cell`). Every
cell is seeded on its own, so the executor changes the wall time, not the results: the same files
and the same numbers (given the same intra-op thread count per cell: a matmul may round differently
with more threads).

- ``serial``: in this process, in grid order; the first failure stops the grid, as a kill would.
- ``processes``: ``workers`` spawned local processes, each with ``threads`` intra-op threads
  (default: its share of the cores, cores // workers) and, on a machine with several GPUs and a
  device without an index (``auto``, ``cuda``), a GPU of its own (``CUDA_VISIBLE_DEVICES``,
  round-robin over the visible GPUs). Workers are spawned, not forked: a script that calls
  ``compare`` with this executor needs the ``if __name__ == "__main__":`` guard. They die with the
  grid's process, even when it is killed, and Ctrl-C stops the cells they run (each resumes from
  its last checkpoint).
- ``ray``: one Ray task per cell on the cluster at ``address`` (``"local"``: a Ray instance started
  here on this machine's cores; a Ray already initialized in this process is used as it is). A task
  asks for ``threads`` CPUs (default 1) and one GPU when the device is ``cuda`` (or ``auto`` on a
  cluster that has GPUs); Ray gives it that GPU as ``cuda``. A task lost with its worker or node is
  rerun by Ray (``max_retries``) and resumes from the cell's last checkpoint. Cells write under the
  grid's directory, so on several nodes it must be on a filesystem every node mounts at the same
  path, and every node needs the same dopr-robot installed.

With ``processes`` and ``ray`` a failed cell does not stop the others: each failure is printed as it
happens, and when every cell has ended they are raised together in one UserError naming each cell.
Either way a failure of the cells themselves (not of the setup around them) is a :class:`CellsFailed`,
so that a caller running many grids (``dopr-robot sweep``) can record it and go on.
Finished cells keep their eval.json, so running the same command again runs only the missing ones.
Progress is a bar, or with --no-progress (a grid writing to a log for hours) a line per finished cell:
``compare: [3/20] <task> adamw seed 2 done, 1 h 05 min since the start, about 6 h 30 min left``.

Execution settings (:class:`Execution`, whose fields are the command line's --workers, --ray,
--device and --no-progress) are not grid settings: they are never saved and never part of the
resume check, so a grid started one way can be finished another.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import multiprocessing
import operator
import os
import signal
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from dopr_robot import threads
from dopr_robot.config import SettingError, check_ranges
from dopr_robot.devices import DEVICE_HELP, resolve_device
from dopr_robot.errors import UserError

EXECUTORS = ("serial", "processes", "ray")
RAY_INSTALL = 'pip install "dopr-robot[ray]"'
LOCAL_RAY = "local"  # ray.init's own word for "start a new Ray instance on this machine"
# Reruns of a Ray task whose worker process or node died (a cell that raises is not rerun).
RAY_MAX_RETRIES = 3

Cell = tuple[str, str, int]  # (task, optimizer, seed)
# cell(config, task, optimizer, seed, data, device): top-level, so worker processes can import it.
CellBody = Callable[[Any, str, str, int, Path, str], None]


class CellsFailed(UserError):
    """Cells of a grid failed (training diverged, a bad file, ...): the message names them. Serially
    the first failure stops the grid and its message is the cell's own."""

    def __init__(self, message: str, cells: list[Cell]) -> None:
        super().__init__(message)
        self.cells = cells


def _flag(flag: str, help: str, to_field: Callable[[Any], Any] = lambda value: value, **argparse_kwargs: Any) -> dict:
    """A field's command-line option: its flag, help and argparse settings, and how the parsed
    value becomes the field's (``to_field``; a value of None means "not given")."""
    return {"flag": flag, "help": help, "to_field": to_field, "argparse": argparse_kwargs}


@dataclass(frozen=True)
class Execution:
    """How the cells run (not what they compute). The fields with a ``flag`` are the command line's
    options (:func:`add_execution_arguments`); ``executor`` follows from them (``--ray``: ray,
    ``--workers N`` > 1: processes), and ``threads`` is the global ``--threads`` every command takes."""

    executor: str = "serial"  # one of EXECUTORS
    workers: int = field(default=1, metadata=_flag(
        "--workers", "run N cells at once in local processes, each with --threads threads (default: cores // N) and, "
        "with several GPUs, a GPU of its own; the same results as one at a time", type=int, metavar="N", default=1))
    address: str = field(default=LOCAL_RAY, metadata=_flag(
        "--ray", "run each cell as a Ray task on the cluster at ADDRESS (HEAD:6379, or auto), or on a local Ray on "
        "this machine when no ADDRESS is given; each asks for --threads CPUs (default 1) and, on cuda, one GPU. On "
        "several nodes --out must be a path on a filesystem every node mounts at the same place (needs Ray: "
        f"{RAY_INSTALL})", nargs="?", const=LOCAL_RAY, default=None, metavar="ADDRESS"))
    threads: int | None = None  # intra-op threads per cell (None: processes cores // workers, ray 1)
    device: str = field(default="auto", metadata=_flag(
        "--device", DEVICE_HELP, default="auto", metavar="DEVICE"))
    progress: bool = field(default=True, metadata=_flag(  # progress bars (the commands pass it to compare, sweep)
        "--no-progress", "no progress bars (a grid prints a line per finished cell instead)",
        to_field=operator.not_, action="store_true"))

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UserError(f"unknown executor {self.executor!r}; valid: {', '.join(EXECUTORS)}")
        check_ranges(self, at_least_1=("workers", *(("threads",) if self.threads is not None else ())))
        if self.executor == "ray" and self.workers != 1:
            raise SettingError(lambda n: f"{n('workers')} runs cells in local processes, {n('address')} on a Ray "
                                         "cluster: give one of them")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:  # before any work
            raise UserError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}")
        if self.executor == "ray" and self.device.startswith("cuda:"):
            raise UserError(f"--device {self.device}: Ray gives each cell its own GPU; use --device cuda (or auto)")
        if self.executor == "ray":
            check_ray_address(self.address)
        else:  # here, before any work; a Ray cluster's GPUs may be on other machines than this one
            resolve_device(self.device)


def add_execution_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """The options of ``Execution``'s fields (those in ``names``; default: all): --workers, --ray,
    --device, --no-progress. Never saved, never part of a grid's resume check."""
    for f in fields(Execution):
        if "flag" in f.metadata and (names is None or f.name in names):
            parser.add_argument(f.metadata["flag"], help=f.metadata["help"], **f.metadata["argparse"])


def execution_from_args(args: argparse.Namespace) -> Execution:
    """The Execution the parsed options say (``args.threads``: the global --threads), checked by
    ``Execution`` itself."""
    values: dict[str, Any] = {"threads": getattr(args, "threads", None)}
    for f in fields(Execution):
        dest = f.metadata["flag"].lstrip("-").replace("-", "_") if "flag" in f.metadata else None
        if dest is not None and getattr(args, dest, None) is not None:
            values[f.name] = f.metadata["to_field"](getattr(args, dest))
    executor = "ray" if "address" in values else "processes" if values.get("workers", 1) > 1 else "serial"
    try:
        return Execution(executor, **values)
    except SettingError as err:  # named by the options that set the fields
        flags = {f.name: f.metadata["flag"] for f in fields(Execution) if "flag" in f.metadata}
        raise err.renamed(lambda name: flags.get(name, "--" + name)) from None


RAY_CONNECT_TIMEOUT_S = 5.0


def check_ray_address(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address that nothing answers on is one UserError now,
    instead of Ray retrying for minutes (``local`` and ``auto`` are Ray's to resolve)."""
    if address in (LOCAL_RAY, "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray {address}: give the head node as HOST:PORT (e.g. 10.0.0.1:6379), auto, "
                        "or nothing for a local Ray")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise UserError(f"--ray {address}: no Ray cluster answers there ({err.strerror or err}); start one with "
                        "`ray start --head` or check the address") from None


def run_cells(cell: CellBody, config: Any, cells: list[Cell], data: dict[str, Path],
              execution: Execution = Execution(), progress: bool = True, done: int = 0, label: str = "compare") -> None:
    """Run ``cell(config, task, optimizer, seed, data[task], device)`` for each of ``cells`` as
    ``execution`` says, with a progress bar that starts at ``done`` (cells finished before) and
    advances as cells finish; without bars, a line per finished cell (:class:`Tally`). Raises a
    UserError naming every failed cell (``processes``, ``ray``)."""
    tally = Tally(done + len(cells), done, progress, label)
    try:
        if execution.executor == "serial" or not cells:
            for task, optimizer, seed in cells:
                tally.bar.set_postfix_str(f"{task} {optimizer} seed {seed}")
                try:
                    cell(config, task, optimizer, seed, data[task], execution.device)
                except UserError as err:  # a user's error in the cell (e.g. training diverged): kept as it reads
                    raise CellsFailed(str(err), [(task, optimizer, seed)]) from err
                tally.finished((task, optimizer, seed), failed=False)
            return
        run = _in_processes if execution.executor == "processes" else _on_ray
        failures = run(cell, config, cells, data, execution, tally)
    finally:
        tally.bar.close()
    if failures:
        lines = "\n".join(f"  {_name(c)}: {_describe(error)}" for c, error in failures)
        raise CellsFailed(f"{len(failures)} of {len(cells)} cells failed (the others finished and are kept; the same "
                          f"command runs only the missing cells):\n{lines}", [c for c, _ in failures])


class Tally:
    """A grid's progress as its cells finish: a tqdm bar, or, with bars off (``--no-progress``: a grid
    running for hours into a log file), one line per cell on stderr with the time since the start
    and a rough time left (this call's mean time per finished cell, times the cells left)."""

    def __init__(self, total: int, done: int, progress: bool, label: str):
        self.bar = tqdm(total=total, initial=done, desc=label, disable=not progress)
        self.total, self.done, self.label = total, done, label
        self.finished_here, self.started = 0, time.monotonic()

    def finished(self, c: Cell, failed: bool) -> None:
        state = "failed" if failed else "done"
        self.bar.set_postfix_str(f"{_name(c)} {state}")
        self.bar.update()
        self.done += 1
        self.finished_here += 1
        if self.bar.disable:
            elapsed = time.monotonic() - self.started
            line = f"{self.label}: [{self.done}/{self.total}] {_name(c)} {state}, {_duration(elapsed)} since the start"
            if self.done < self.total:
                line += f", about {_duration(elapsed / self.finished_here * (self.total - self.done))} left"
            print(line, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _in_processes(cell: CellBody, config: Any, cells: list[Cell], data: dict[str, Path], execution: Execution,
                  tally: Tally) -> list[tuple[Cell, BaseException]]:
    workers = min(execution.workers, len(cells))
    per_cell = threads.requested_threads(execution.threads) or max(1, threads.machine_cores() // execution.workers)
    context = multiprocessing.get_context("spawn")  # a fork of a process that ran torch is unsafe
    slots = context.Queue()  # worker i takes slot i: its GPU
    for slot in range(workers):
        slots.put(slot)
    failures = []
    # A device with an index is the user's choice for every cell; otherwise each worker gets a GPU.
    gpus = [] if ":" in execution.device else _visible_gpus()
    others = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(slots, gpus, per_cell, os.getpid()))
    try:
        futures = {pool.submit(cell, config, *c, data[c[0]], execution.device): c for c in cells}
        for future in as_completed(futures):
            c = futures[future]
            error = future.exception()
            if error is not None:
                failures.append((c, error))
                _report_failure(c, error, tally)
            tally.finished(c, failed=error is not None)
    except BaseException:  # Ctrl-C: stop the running cells too (each resumes from its last checkpoint)
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in set(multiprocessing.active_children()) - others:
            worker.kill()
        pool.shutdown()  # quick now that no worker runs: it releases the pool's queues and locks
        raise
    pool.shutdown()
    return failures


def _start_worker(slots: Any, gpus: list[str], thread_count: int, parent: int) -> None:
    """A worker process's setup, before it imports torch: it dies with the grid's process, leaves
    Ctrl-C to it (which stops the workers), and takes its GPU and its thread budget."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a multiprocessing one, which a worker stopped by SIGKILL would leave for
    # Python's resource tracker to warn about; the cells' bars need no lock shared between processes.
    tqdm.set_lock(threading.RLock())
    slot = slots.get()
    if len(gpus) > 1:  # one GPU per worker: --device cuda (or auto) then means this one
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    os.environ["OMP_NUM_THREADS"] = str(thread_count)
    threads.configure(thread_count)


PR_SET_PDEATHSIG = 1  # linux/prctl.h
ORPHAN_POLL_S = 1.0


def _die_with(parent: int) -> None:
    """End this process when ``parent`` ends, even by SIGKILL, rather than finish the grid's queued cells
    as an orphan: Linux sends SIGKILL at the parent's death (prctl); elsewhere, or if the parent is
    already gone, a daemon thread that sees this process re-parented exits it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl in this libc: the thread below still watches
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (none without CUDA)."""
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in visible.split(",") if name.strip()] if visible else [str(i) for i in range(count)]
    return names[:count]


def _on_ray(cell: CellBody, config: Any, cells: list[Cell], data: dict[str, Path], execution: Execution,
            tally: Tally) -> list[tuple[Cell, BaseException]]:
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    per_cell = threads.requested_threads(execution.threads) or 1
    started_here = not ray.is_initialized()
    if started_here:
        if execution.address == LOCAL_RAY:
            ray.init(address=LOCAL_RAY, num_cpus=max(per_cell, threads.machine_cores()))
        else:
            ray.init(address=execution.address)
    on_gpu = execution.device == "cuda" or (execution.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    remote = ray.remote(_ray_cell).options(num_cpus=per_cell, num_gpus=1 if on_gpu else 0, max_retries=RAY_MAX_RETRIES)
    failures, pending = [], {}
    try:
        for c in cells:
            pending[remote.remote(cell, config, *c, data[c[0]], execution.device, per_cell, os.getcwd())] = c
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                c = pending.pop(ref)
                try:
                    ray.get(ref)
                    error = None
                except ray.exceptions.RayError as err:  # the cell raised, or its worker died past the retries
                    error = err.cause if isinstance(err, ray.exceptions.RayTaskError) and err.cause else err
                    failures.append((c, error))
                    _report_failure(c, error, tally, remote_traceback=str(err))
                tally.finished(c, failed=error is not None)
    except BaseException:  # Ctrl-C: stop the cells still running or queued
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return failures


def _ray_cell(cell: CellBody, config: Any, task: str, optimizer: str, seed: int, data: Path, device: str,
              thread_count: int, cwd: str) -> None:
    """One cell in a Ray worker: the driver's thread budget and working directory, then the cell."""
    if os.path.isdir(cwd):  # relative paths (--out, --data) mean what they meant to the driver
        os.chdir(cwd)
    elif not Path(config.out).is_absolute():
        raise UserError(f"this Ray node has no {cwd}, the directory --out {config.out} is relative to: "
                        "give --out as an absolute path on a filesystem every node mounts")
    threads.configure(thread_count)
    cell(config, task, optimizer, seed, data, device)


def _name(c: Cell) -> str:
    task, optimizer, seed = c
    return f"{task} {optimizer} seed {seed}"


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


def _report_failure(c: Cell, error: BaseException, tally: Tally, remote_traceback: str | None = None) -> None:
    """One line for a user's error; the worker's traceback for anything else."""
    if isinstance(error, UserError):
        detail = str(error)
    else:
        detail = remote_traceback or "".join(traceback.format_exception(error)).rstrip()
    tally.bar.write(f"{tally.label}: {_name(c)} failed: {detail}", file=sys.stderr)
