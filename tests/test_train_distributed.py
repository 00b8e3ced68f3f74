"""torchrun with 2 CPU ranks (gloo, --device cpu) trains to the same weights as 1 process on the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from dopr_robot.checkpoint import load_checkpoint
from dopr_robot.cli import main

ARGS = ["train", "--policy", "mlp", "--optimizer", "dopr-adamw", "--steps", "12", "--batch-size", "32",
        "--warmup-steps", "2", "--checkpoint-every", "6", "--val-every", "6", "--log-every", "6", "--lr", "3e-3",
        "--policy-options", '{"width": 32, "depth": 1}', "--no-progress",
        "--device", "cpu"]  # gloo on CPUs, also on a GPU machine (test_device.py runs NCCL on two GPUs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_two_ranks_match_one_process(tmp_path: Path, demo_file) -> None:
    data = demo_file("Reach-v0", 4)
    # The single process in this one (what is under test is the launch of two ranks).
    assert main([*ARGS, "--threads", "1", "--data", str(data), "--out", str(tmp_path / "one")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", str(free_port()), "-m", "dopr_robot"]
    double = subprocess.run([*launcher, *ARGS, "--data", str(data), "--out", str(tmp_path / "two")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]

    one, two = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    assert one["step"] == two["step"] == 12
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    # Rank 0 alone wrote the run's files: as many log lines as the single process.
    lines = [(tmp_path / run / "metrics.jsonl").read_text().count("\n") for run in ("one", "two")]
    assert lines[0] == lines[1] == 4  # train loss and validation loss at steps 6 and 12
