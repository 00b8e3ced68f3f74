"""The command line under faults a user causes: a reader that goes away, Ctrl-C, a killed grid,
an unreachable Ray address, and optimizer-demo values that would fail after printing a row."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dopr_robot.cli import main

# Training far longer than a test waits: the process is stopped while it trains.
ENDLESS = ["--steps", "100000", "--batch-size", "16", "--policy-options", '{"width": 16, "depth": 1}',
           "--checkpoint-every", "5", "--threads", "1", "--device", "cpu", "--no-progress"]
WAIT_S = 180  # the longest a test waits for a process to reach the state it needs (a bound, not a measurement)


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dopr_robot", *args]


def interruptible() -> None:
    """In the child before it starts: Ctrl-C's default action, which a test run started in the
    background of a non-interactive shell would otherwise pass on as ignored (Python then installs
    no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    from demos import collect

    path = tmp_path_factory.mktemp("demos") / "reach.hdf5"
    collect("Reach-v0", 3, path, progress=False)
    return path


def wait_for(predicate, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (rc {process.returncode}) before {what}: {process.stderr.read()}")
        assert time.monotonic() < deadline, f"waited {WAIT_S} s for {what}"
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to whatever is left of the process group a test started (nothing stays behind)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    process.stderr.close()


def grid_args(out: Path, demos: Path) -> list[str]:
    """``compare --workers 2``: two endless cells, one per worker."""
    return ["compare", "--out", str(out), "--tasks", "Reach-v0", "--optimizers", "adamw", "--seeds", "2",
            "--data", json.dumps({"Reach-v0": str(demos)}), "--eval-episodes", "2", "--workers", "2", *ENDLESS]


def start_grid(out: Path, demos: Path) -> subprocess.Popen:
    """The grid of ``grid_args`` in its own process group; returns once both workers train."""
    process = subprocess.Popen(command(*grid_args(out, demos)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True, preexec_fn=interruptible)
    wait_for(lambda: len(list(out.glob("runs/Reach-v0/adamw/seed*/checkpoint.pt"))) == 2, "both cells to train",
             process)
    return process


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc")
def test_the_workers_of_a_killed_grid_die_with_it(tmp_path: Path, demos: Path) -> None:
    process = start_grid(tmp_path / "grid", demos)
    try:
        workers = children(process.pid)
        assert len(workers) >= 2  # the two workers (and Python's resource tracker)
        process.kill()  # SIGKILL: the grid's process gets no chance to stop its workers
        process.wait()
        wait_for(lambda: not any(alive(pid) for pid in workers), "the orphaned workers to end")
    finally:
        kill_group(process)


def test_ctrl_c_stops_a_grid_with_one_line_that_says_how_to_resume(tmp_path: Path, demos: Path) -> None:
    process = start_grid(tmp_path / "grid", demos)
    try:
        workers = children(process.pid)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        _, err = process.communicate(timeout=WAIT_S)
        assert process.returncode == 130
        resume = shlex.join(["dopr-robot", *grid_args(tmp_path / "grid", demos)])
        assert err == f"dopr-robot compare: interrupted; resume with: {resume}\n"
        wait_for(lambda: not any(alive(pid) for pid in workers), "the workers to end")
    finally:
        kill_group(process)


def test_ctrl_c_stops_training_with_one_line_that_says_how_to_resume(tmp_path: Path, demos: Path) -> None:
    run = tmp_path / "run"
    process = subprocess.Popen(command("train", "--data", str(demos), "--out", str(run), *ENDLESS),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=interruptible)
    try:
        wait_for((run / "checkpoint.pt").exists, "the first checkpoint", process)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=WAIT_S)
        assert process.returncode == 130
        assert err == f"dopr-robot train: interrupted; resume with: dopr-robot train --resume {run}\n"
    finally:
        kill_group(process)


@pytest.mark.parametrize("args", [["optimizers"]])  # every command's output goes through the one handler in cli.main
def test_a_reader_that_goes_away_ends_the_command_quietly(args: list[str]) -> None:
    """``dopr-robot optimizers | head -1``: the reader is gone before the command writes (so every run
    sees it, not one in a few): exit 141 as a shell reports a writer stopped by SIGPIPE, no traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(command(*args, "--threads", "1"), stdout=write, stderr=subprocess.PIPE, text=True,
                                timeout=WAIT_S)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


def test_inspect_into_a_reader_that_went_away_ends_quietly(demos: Path) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(command("inspect", str(demos), "--threads", "1"), stdout=write, stderr=subprocess.PIPE,
                                text=True, timeout=WAIT_S)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


def closed_port() -> int:
    """A local port nothing listens on (taken from the OS, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_ray_address_is_one_line_before_any_work(tmp_path: Path, capsys) -> None:
    pytest.importorskip("ray", reason='compare --ray needs ray (pip install "dopr-robot[ray]")')
    address = f"127.0.0.1:{closed_port()}"
    assert main(["compare", "--out", str(tmp_path / "grid"), "--tasks", "Reach-v0", "--seeds", "1", "--steps", "20",
                 "--demo-episodes", "3", "--ray", address, "--threads", "1", "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"dopr-robot compare: error: --ray {address}: no Ray cluster answers there")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "grid").exists()  # refused before collecting demonstrations


def test_a_ray_address_is_checked_by_connecting_to_it() -> None:
    from dopr_robot.errors import UserError
    from dopr_robot.grid import check_ray_address

    with socket.socket() as server:  # something that answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_ray_address(f"127.0.0.1:{server.getsockname()[1]}")
        check_ray_address(f"ray://127.0.0.1:{server.getsockname()[1]}")
    check_ray_address("auto")  # Ray's to resolve
    with pytest.raises(UserError, match=r"^--ray head-node: give the head node as HOST:PORT"):
        check_ray_address("head-node")


@pytest.mark.parametrize("args, message", [
    (["--damping", "-1"], "--damping: Invalid damping: -1.0"),
    (["--damping", "nan"], "--damping: Invalid damping: nan"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--condition", "inf"], "--condition must be a finite number >= 1, got inf"),
    (["--target", "nan"], "--target must be a finite number > 0, got nan"),
    (["--optimizers", ","], "--optimizers names no optimizer"),
])
def test_optimizer_demo_refuses_bad_values_before_printing_anything(capsys, args: list[str], message: str) -> None:
    assert main(["optimizer-demo", "--optimizers", "adamw,dopr-adamw", "--max-steps", "10", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"dopr-robot optimizer-demo: error: {message}") and len(err.splitlines()) == 1, err
