"""Where a run executes: --device resolution and its errors, checkpoints across devices, bf16 autocast,
and (on a machine with CUDA) training, resuming and evaluating on the GPU without per-step host syncs.

The CUDA tests skip here; ``benchmarks/gpu_check.sh`` runs them on a GPU machine.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import demos
import dopr_robot.train as train_module
from dopr_robot import threads
from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
from dopr_robot.cli import main
from dopr_robot.config import EvalConfig, TrainConfig
from dopr_robot.devices import module_device, resolve_device
from dopr_robot.errors import UserError
from dopr_robot.evaluate import evaluate_checkpoint, policy_actions
from dopr_robot.optim.activation import InputSums
from dopr_robot.train import train

HORIZON = 20
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@pytest.fixture(scope="module")
def reach_demos(demo_file) -> Path:
    """Five short Reach-v0 demonstrations (the shared file of six has the task's full horizon)."""
    return demo_file("Reach-v0", 5, env_kwargs={"horizon": HORIZON})


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), out=str(out), policy="mlp", optimizer="dopr-adamw", steps=30, batch_size=32,
                    lr=3e-3, warmup_steps=5, val_every=10, checkpoint_every=10, log_every=10,
                    policy_options={"width": 32, "depth": 2})
    settings.update(overrides)
    return TrainConfig(**settings)


def tensors(tree) -> list[torch.Tensor]:
    """Every tensor in nested dicts, lists and tuples."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for value in tree.values() for t in tensors(value)]
    if isinstance(tree, (list, tuple)):
        return [t for value in tree for t in tensors(value)]
    return []


def logged(run_dir: Path, key: str) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line[key] for line in lines if key in line]


class Interrupt(Exception):
    """Stands in for a kill between two checkpoints."""


def kill_at(step_to_die: int):
    def evaluator(policy, step: int) -> dict:
        if step == step_to_die:
            raise Interrupt
        return {}

    return evaluator


class Captured:
    """What train() builds, caught on its way: the optimizer and the windows moved to the device."""

    def __init__(self, monkeypatch):
        self.optimizers, self.windows = [], []
        make, to = train_module.make_optimizer, demos.dataset.WindowDataset.to
        monkeypatch.setattr(train_module, "make_optimizer", lambda *a, **k: self._keep(self.optimizers, make(*a, **k)))
        monkeypatch.setattr(demos.dataset.WindowDataset, "to", lambda w, device: self._keep(self.windows, to(w, device)))

    @staticmethod
    def _keep(where: list, value):
        where.append(value)
        return value


# -- resolving --device ----------------------------------------------------------------------------


def test_auto_is_cuda_when_available_else_cpu() -> None:
    expected = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == resolve_device(None) == expected
    assert resolve_device("cpu") == resolve_device(" CPU ") == resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_is_the_cpu_without_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", local_rank=1) == torch.device("cpu")  # torchrun on CPUs: gloo, every rank on the CPU


@pytest.mark.parametrize("text, message", [
    ("cuda", "--device cuda: CUDA is not available on this machine"),
    ("cuda:0", "--device cuda:0: CUDA is not available on this machine"),
])
def test_cuda_without_cuda_is_one_clear_error(monkeypatch, text: str, message: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=message) as caught:
        resolve_device(text)
    assert "use --device cpu (or auto" in str(caught.value)


def test_a_gpu_index_past_the_last_one_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"--device cuda:3: this machine has 1 CUDA device\(s\) \(cuda:0\.\.cuda:0\)"):
        resolve_device("cuda:3")
    with pytest.raises(UserError, match=r"torchrun started a process with LOCAL_RANK 1, but only 1 CUDA device\(s\) "
                                        r"are visible: use --nproc-per-node 1 or fewer"):
        resolve_device("cuda", local_rank=1)
    with pytest.raises(UserError, match="under torchrun each process takes the GPU of its LOCAL_RANK"):
        resolve_device("cuda:0", local_rank=0)


def test_mps_without_mps_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"--device mps: MPS \(the Apple-silicon GPU\) is not available here"):
        resolve_device("mps")


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "cpu0", ""])
def test_a_string_that_names_no_device_is_refused(text: str) -> None:
    with pytest.raises(UserError, match=r"names no device; valid: auto, cpu, cuda, cuda:N"):
        resolve_device(text)


@pytest.mark.parametrize("command", [["train", "--data", "DATA", "--out", "OUT"], ["eval", "--checkpoint", "RUN"],
                                     ["video", "--checkpoint", "RUN", "--out", "OUT.mp4"], ["quickstart", "--out", "OUT"],
                                     ["compare", "--out", "OUT", "--tasks", "Reach-v0"],  # before any work: no OUT
                                     ["sweep", "--out", "OUT", "--tasks", "Reach-v0"]])
def test_cli_device_errors_are_one_line(reach_demos: Path, tmp_path: Path, monkeypatch, capsys, command: list[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    train(tiny_config(reach_demos, run, steps=2, optimizer="adamw"), progress=False, device="cpu")
    names = {"DATA": str(reach_demos), "OUT": str(tmp_path / "new"), "RUN": str(run), "OUT.mp4": str(tmp_path / "v.mp4")}
    quiet = ["--no-progress"] if command[0] != "video" else []
    for text in ("cuda", "tpu"):
        code = main([*(names.get(arg, arg) for arg in command), "--device", text, *quiet])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"--device {text}" in err and ("CUDA is not available" in err or "names no device" in err)
    assert not (tmp_path / "new").exists() and not (tmp_path / "v.mp4").exists()


# -- CPU, explicitly, end to end -------------------------------------------------------------------


def test_train_and_eval_with_device_cpu_from_the_command_line(reach_demos: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--data", str(reach_demos), "--out", str(run), "--device", "cpu", "--steps", "10",
                 "--batch-size", "16", "--policy-options", '{"width": 16, "depth": 1}', "--no-progress"]) == 0
    assert "device" not in json.loads((run / "config.json").read_text())  # where it ran is not what it is
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run), "--device", "cpu", "--episodes", "3", "--num-envs", "2",
                 "--no-expert", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["closed_loop"]["n"] == 3
    assert "success rate" in capsys.readouterr().out


# -- checkpoints across devices --------------------------------------------------------------------


def test_checkpoints_hold_cpu_tensors_and_resume_bit_exact(reach_demos: Path, tmp_path: Path) -> None:
    """Whatever device wrote it, a checkpoint holds CPU tensors; reloaded (map_location="cpu") into a
    resumed run, it reaches the same weights, EMA and optimizer state as a run never stopped."""
    config = tiny_config(reach_demos, tmp_path / "whole", policy_options={"width": 32, "depth": 2, "dropout": 0.1},
                         optimizer_options={"refresh_every": 3, "cov_ema": 0.5})
    whole = train(config, progress=False, device="cpu")
    killed = replace(config, out=str(tmp_path / "killed"))
    with pytest.raises(Interrupt):
        train(killed, evaluator=kill_at(25), evaluate_every=5, progress=False, device="cpu")
    raw = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)  # no map_location needed
    assert raw["step"] == 20 and all(t.device.type == "cpu" for t in tensors(raw))
    resumed = train(killed, resume=True, progress=False, device="cpu")
    a, b = load_checkpoint(whole.run_dir), load_checkpoint(resumed.run_dir)
    for key in ("model", "ema", "optimizer"):
        for x, y in zip(tensors(a[key]), tensors(b[key]), strict=True):
            assert torch.equal(x, y), key
    assert logged(whole.run_dir, "train_loss") == logged(resumed.run_dir, "train_loss")


def test_a_run_saved_before_amp_existed_resumes(reach_demos: Path, tmp_path: Path) -> None:
    config = tiny_config(reach_demos, tmp_path / "run", steps=20)
    with pytest.raises(Interrupt):
        train(config, evaluator=kill_at(15), evaluate_every=5, progress=False, device="cpu")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["amp"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    assert train(config, resume=True, progress=False, device="cpu").step == 20
    with pytest.raises(UserError, match=r"with a different config \(changed: amp\)"):
        train(replace(config, amp="bf16"), resume=True, progress=False, device="cpu")


# -- mixed precision -------------------------------------------------------------------------------


def test_amp_must_be_a_known_precision() -> None:
    with pytest.raises(UserError, match=r"^amp 'fp16' is not a precision; valid: none, bf16"):
        TrainConfig(data="d", out="o", amp="fp16")


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_trains_with_float32_dopr_statistics(reach_demos: Path, tmp_path: Path, monkeypatch,
                                                           device: str) -> None:
    seen = []
    add = InputSums.add_

    def recording_add(self, inputs, index=0):
        seen.append((inputs.dtype, self.outer.dtype))
        add(self, inputs, index)

    monkeypatch.setattr(InputSums, "add_", recording_add)
    config = tiny_config(reach_demos, tmp_path / "run", amp="bf16", steps=40,
                         optimizer_options={"refresh_every": 2, "cov_ema": 0.5})
    result = train(config, progress=False, device=device)
    assert {outer for _, outer in seen} == {torch.float32}
    assert torch.bfloat16 in {inputs for inputs, _ in seen}  # the layers did run in bf16
    losses = logged(result.run_dir, "train_loss")
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.7 * losses[0]
    state = load_checkpoint(result.run_dir)["optimizer"]["state"]
    factors = [s[key] for s in state.values() for key in ("sigma", "inverse") if key in s]
    assert factors and all(t.dtype == torch.float32 for t in factors)
    assert all(p.dtype == torch.float32 for p in result.policy.parameters())


# -- the windows and evaluation on a device --------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_windows_moved_to_a_device_give_the_same_batches(reach_demos: Path, device: str) -> None:
    windows = demos.load(reach_demos).windows("train", history=3, chunk=2)
    moved = windows.to(device)
    assert moved.device.type == device and len(moved) == len(windows)
    indices = torch.tensor([0, 5, len(windows) - 1])
    for key, value in windows.batch(indices).items():
        assert moved.batch(indices.to(device))[key].device.type == device
        assert torch.equal(moved.batch(indices)[key].cpu(), value), key


# -- CUDA ------------------------------------------------------------------------------------------


@needs_cuda
def test_cuda_training_keeps_everything_on_the_gpu(reach_demos: Path, tmp_path: Path, monkeypatch) -> None:
    captured = Captured(monkeypatch)
    config = tiny_config(reach_demos, tmp_path / "run", optimizer_options={"refresh_every": 3, "cov_ema": 0.5})
    result = train(config, progress=False, device="cuda")
    optimizer, windows = captured.optimizers[0], captured.windows
    assert module_device(result.policy).type == "cuda"  # the EMA policy
    assert all(t.is_cuda for t in (*result.policy.parameters(), *result.policy.buffers()))
    assert windows and all(w.device.type == "cuda" and w.obs_index.is_cuda and w.action_mask.is_cuda for w in windows)
    assert all(p.is_cuda for p in optimizer.param_groups[0]["params"])
    dopr_state = [t for layer in optimizer._layers for t in tensors(dict(optimizer.state[layer.weight]))]
    assert {"sigma", "inverse", "has_inverse", "damping_scale", "skipped"} <= set(optimizer.state[optimizer._layers[0].weight])
    assert dopr_state and all(t.is_cuda for t in dopr_state)
    assert all(layer.sums.outer.is_cuda and layer.sums.count.is_cuda for layer in optimizer._layers)
    # AdamW keeps its step counters on the CPU by design (read without a device wait); the rest is on the GPU.
    base = [t for state in optimizer.base.state.values() for key, t in state.items() if key != "step"]
    assert base and all(t.is_cuda for t in base)
    assert optimizer.numerics()["skipped"] == 0


@needs_cuda
@pytest.mark.parametrize("optimizer", ["adamw", "dopr-adamw", "dopr-muon"])
def test_cuda_steps_between_log_points_never_wait_for_the_device(reach_demos: Path, tmp_path: Path, monkeypatch,
                                                                 optimizer: str) -> None:
    """torch's sync debug mode raises on every host synchronization; it is on for every step but the
    first (state allocation) until the loop reaches a log point (where it reads the loss on purpose)."""
    steps_started = []
    copy_to, rebalance = train_module.copy_to, threads.rebalance

    def guarded_copy_to(tensor, device):  # the first thing a step does on the device
        steps_started.append(1)
        if len(steps_started) > 1:
            torch.cuda.set_sync_debug_mode("error")
        return copy_to(tensor, device)

    def unguarded_rebalance():  # the first thing a log point does
        torch.cuda.set_sync_debug_mode("default")
        return rebalance()

    monkeypatch.setattr(train_module, "copy_to", guarded_copy_to)
    monkeypatch.setattr(threads, "rebalance", unguarded_rebalance)
    config = tiny_config(reach_demos, tmp_path / "run", optimizer=optimizer, steps=30, log_every=15, val_every=15,
                         checkpoint_every=15, policy_options={"width": 32, "depth": 2, "dropout": 0.1})
    try:
        train(config, progress=False, device="cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(steps_started) == 30 and len(logged(tmp_path / "run", "train_loss")) == 2


@needs_cuda
def test_cuda_resume_after_a_kill_is_bit_exact(reach_demos: Path, tmp_path: Path) -> None:
    config = tiny_config(reach_demos, tmp_path / "whole", policy_options={"width": 32, "depth": 2, "dropout": 0.1},
                         optimizer_options={"refresh_every": 3, "cov_ema": 0.5})
    whole = train(config, progress=False, device="cuda")
    killed = replace(config, out=str(tmp_path / "killed"))
    with pytest.raises(Interrupt):
        train(killed, evaluator=kill_at(25), evaluate_every=5, progress=False, device="cuda")
    assert "cuda" in load_checkpoint(tmp_path / "killed")["rng"]  # the GPU's dropout stream travels too
    resumed = train(killed, resume=True, progress=False, device="cuda")
    a, b = load_checkpoint(whole.run_dir), load_checkpoint(resumed.run_dir)
    for key in ("model", "ema", "optimizer"):
        for x, y in zip(tensors(a[key]), tensors(b[key]), strict=True):
            assert torch.equal(x, y), key
    assert logged(whole.run_dir, "train_loss") == logged(resumed.run_dir, "train_loss")


@needs_cuda
@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_run_resumes_on_the_other_device(reach_demos: Path, tmp_path: Path, monkeypatch, first: str, then: str) -> None:
    config = tiny_config(reach_demos, tmp_path / "run", optimizer_options={"refresh_every": 3, "cov_ema": 0.5})
    with pytest.raises(Interrupt):
        train(config, evaluator=kill_at(25), evaluate_every=5, progress=False, device=first)
    raw = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in tensors(raw))  # a GPU's checkpoint reads on a CPU-only machine
    assert policy_from_checkpoint(raw, device="cpu").predict(torch.zeros(2, 1, 18)).shape == (2, 1, 3)
    captured = Captured(monkeypatch)
    resumed = train(config, resume=True, progress=False, device=then)
    optimizer = captured.optimizers[0]
    assert resumed.step == 30 and module_device(resumed.policy).type == then
    state = [t for layer in optimizer._layers for t in tensors(dict(optimizer.state[layer.weight]))]
    assert state and all(t.device.type == then for t in state)  # the optimizer state followed the parameters
    assert all(torch.isfinite(torch.tensor(logged(tmp_path / "run", "train_loss"))))


@needs_cuda
def test_cuda_evaluation_matches_cpu_evaluation(reach_demos: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(reach_demos, run, steps=60), progress=False, device="cpu")
    results = {device: evaluate_checkpoint(run, EvalConfig(episodes=8, num_envs=4), device=device)
               for device in ("cpu", "cuda")}
    cpu, cuda = results["cpu"].closed_loop, results["cuda"].closed_loop
    assert abs(cpu["successes"] - cuda["successes"]) <= 1  # float32 rounding differs between the devices
    assert cuda["mean_return"] == pytest.approx(cpu["mean_return"], rel=0.05, abs=0.05)
    assert results["cuda"].compounding["j_traj"]["mean"] == pytest.approx(results["cpu"].compounding["j_traj"]["mean"],
                                                                         rel=0.1)
    checkpoint = load_checkpoint(run)
    observations = [torch.randn(7, 18).numpy(), torch.randn(4, 18).numpy()]
    on_cpu = policy_actions(policy_from_checkpoint(checkpoint, device="cpu"), observations)
    on_gpu = policy_actions(policy_from_checkpoint(checkpoint, device="cuda"), observations)
    assert on_gpu.shape == (11, 3) and abs(on_gpu - on_cpu).max() < 1e-3


@needs_two_gpus
def test_torchrun_on_two_gpus_matches_one_process(reach_demos: Path, tmp_path: Path) -> None:
    """One process per GPU (cuda:LOCAL_RANK), NCCL, DoPr's statistics all-reduced on the GPUs."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["train", "--policy", "mlp", "--optimizer", "dopr-adamw", "--steps", "12", "--batch-size", "32",
            "--warmup-steps", "2", "--checkpoint-every", "6", "--val-every", "6", "--log-every", "6", "--lr", "3e-3",
            "--policy-options", '{"width": 32, "depth": 1}', "--no-progress", "--data", str(reach_demos),
            "--device", "cuda"]
    single = subprocess.run([sys.executable, "-m", "dopr_robot", *args, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", str(port), "-m", "dopr_robot"]
    double = subprocess.run([*launcher, *args, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-3, atol=1e-4, msg=name)
