"""The thread budget: explicit counts win, otherwise a process takes the cores other processes leave free."""

from __future__ import annotations

import pytest

from dopr_robot import threads
from dopr_robot.cli import main


class FakeMachine:
    """/proc/stat and this process's CPU time, advanced by hand: ``run(wall, others, own)`` in cores."""

    def __init__(self, ticks_per_second: float = 100.0):
        self.busy = self.total = 0.0
        self.own = self.wall = 0.0
        self.ticks = ticks_per_second

    def run(self, wall: float, others: float, own: float, cores: int = 4) -> None:
        self.wall += wall
        self.own += own * wall
        self.busy += (others + own) * wall * self.ticks
        self.total += cores * wall * self.ticks

    def budget(self, fixed=None, cores: int = 4):
        applied = []
        budget = threads.ThreadBudget(fixed, cores=cores, apply=applied.append,
                                      sample=lambda: (int(self.busy), int(self.total)),
                                      own_seconds=lambda: self.own, clock=lambda: self.wall,
                                      ticks_per_second=self.ticks)
        return budget, applied


def test_a_process_takes_the_cores_others_leave_and_follows_them(monkeypatch) -> None:
    machine = FakeMachine()
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: machine.run(seconds, others=1.0, own=0.0))
    budget, applied = machine.budget()
    assert budget.start() == 3 and applied == [3]  # another job busy on one of 4 cores
    machine.run(10.0, others=3.0, own=1.0)  # three more jobs started beside it
    assert budget.rebalance() == 1 and applied == [3, 1]
    machine.run(10.0, others=0.0, own=1.0)  # they finished
    assert budget.rebalance() == 4 and applied == [3, 1, 4]
    machine.run(10.0, others=9.0, own=1.0)  # overloaded: never below one thread
    assert budget.rebalance() == 1


def test_a_fixed_count_never_adapts() -> None:
    machine = FakeMachine()
    budget, applied = machine.budget(fixed=2)
    assert budget.start() == 2 and applied == [2]
    machine.run(10.0, others=4.0, own=1.0)
    assert budget.rebalance() == 2 and applied == [2]


@pytest.mark.parametrize("explicit, env, expected", [
    (3, {"DOPR_ROBOT_THREADS": "1", "OMP_NUM_THREADS": "2"}, 3),
    (None, {"DOPR_ROBOT_THREADS": "1", "OMP_NUM_THREADS": "2"}, 1),
    (None, {"OMP_NUM_THREADS": "2"}, 2),
    (None, {}, None),
    (None, {"OMP_NUM_THREADS": "garbage"}, None),
])
def test_who_decides_the_thread_count(monkeypatch, explicit, env, expected) -> None:
    for name in ("DOPR_ROBOT_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert threads.requested_threads(explicit) == expected


def test_all_means_every_core(monkeypatch) -> None:
    monkeypatch.setenv("DOPR_ROBOT_THREADS", "all")
    assert threads.requested_threads(None) == threads.machine_cores()


def test_the_cli_rejects_a_bad_thread_count(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tasks", "--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads: must be an integer >= 1, got '0'" in capsys.readouterr().err


def test_the_cli_applies_an_explicit_count_and_gives_it_back(monkeypatch, capsys) -> None:
    import torch

    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr("dopr_robot.commands.tasks.run", lambda args: seen.append(torch.get_num_threads()) or 0)
    assert main(["tasks", "--threads", "1"]) == 0
    assert seen == [1]
    # After the command the process is as before: no budget rebalances later library calls.
    assert torch.get_num_threads() == before and threads.rebalance() is None


WORKER = """
import sys, time, types
from pathlib import Path
# torch's thread setting stubbed: importing torch takes seconds, and what is tested is the budget
sys.modules["torch"] = types.SimpleNamespace(get_num_threads=lambda: 1, set_num_threads=lambda n: None)
from dopr_robot import threads
threads.PROC_STAT = Path(sys.argv[3])  # an idle machine: at the same instant, every core looks free to both
Path(sys.argv[2]).touch()
while not Path(sys.argv[1]).exists():
    time.sleep(0.002)
print(threads.configure().threads, flush=True)
sys.stdin.read()  # hold the claim until the test has read both budgets
"""


def test_processes_started_together_split_the_cores_and_give_them_back(tmp_path) -> None:
    import os
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", threads.ENV_VARIABLE)}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    claims = tmp_path / "dopr-robot-threads"
    claims.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (claims / gone.stdout.strip()).write_text("1 adapt\n")  # a process that died without removing its claim
    go, idle = tmp_path / "go", tmp_path / "stat"
    idle.write_text("cpu  0 0 0 100000 0 0 0 0 0 0\n")
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(go), str(tmp_path / f"ready{i}"), str(idle)], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(2)]
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        time.sleep(0.01)
    go.touch()
    budgets = [int(worker.stdout.readline()) for worker in workers]
    assert sorted(path.name for path in claims.iterdir() if path.name.isdigit()) == sorted(str(w.pid) for w in workers)
    for worker in workers:
        worker.communicate("")
    cores = threads.machine_cores()
    assert min(budgets) >= 1 and sum(budgets) <= max(cores, 2), budgets
    assert not [path for path in claims.iterdir() if path.name.isdigit()]  # given back at exit


def test_a_share_leaves_fixed_claims_their_cores_and_splits_the_rest_oldest_first(tmp_path) -> None:
    import os
    import subprocess
    import sys

    others = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
              for _ in range(2)]
    try:
        fixed, adapting = others
        for process, claim in ((fixed, "1"), (adapting, "adapt")):  # claims of live processes younger than this one
            (tmp_path / str(process.pid)).write_text(f"{threads._process_start(process.pid)} {claim}\n")
        mine = threads.Claims(tmp_path)
        mine.register(None)
        assert {claim.pid: claim.fixed for claim in mine.live()} == {os.getpid(): None, fixed.pid: 1, adapting.pid: None}
        # 4 cores: 1 to the fixed process, 3 split between the two adapting ones, the older (this one) taking 2.
        assert mine.share(4) == 2
        assert threads.Claims(tmp_path, pid=adapting.pid).share(4) == 1
        assert mine.share(1) == 1  # never below one thread
    finally:
        for process in others:
            process.communicate(b"")
    assert mine.share(4) == 4  # they ended: their claims are ignored, and removed
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["lock", str(os.getpid())])
