"""DoPr under DDP with 2 CPU processes (gloo) equals one process on the whole batch."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from dopr_robot.optim import make_optimizer

WORKER = Path(__file__).with_name("distributed_dopr_worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


OPTIMIZERS = ["dopr-adamw", "dopr-muon"]
STEPS = 4


def run_two_ranks(optimizer_names: list[str], steps: int, out_file: Path) -> None:
    port = free_port()
    processes = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        processes.append(subprocess.Popen([sys.executable, str(WORKER), ",".join(optimizer_names), str(steps),
                                           str(out_file)],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in processes:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both optimizers trained by one pair of gloo ranks (each a fresh model in the same process group):
    the ranks' start-up, not their steps, is the cost."""
    out = tmp_path_factory.mktemp("ranks") / "params"
    run_two_ranks(OPTIMIZERS, STEPS, out)
    return out


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_two_gloo_ranks_match_one_process_on_the_whole_batch(optimizer_name: str, two_ranks: Path) -> None:
    worker = SimpleNamespace(**runpy.run_path(str(WORKER)))  # its model and batches, without running main()

    model = worker.make_model()
    optimizer = make_optimizer(optimizer_name, model, lr=1e-2, damping=0.01)
    for inputs, targets in worker.batches(STEPS):
        optimizer.zero_grad()
        (model(inputs) - targets).pow(2).mean().backward()
        optimizer.step()

    for rank in range(2):
        distributed = torch.load(f"{two_ranks}.{optimizer_name}.rank{rank}", weights_only=True)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(distributed[name], value, rtol=1e-4, atol=1e-5, msg=f"rank {rank} {name}")
