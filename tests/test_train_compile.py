"""``train --compile``: the compiled step trains the curve eager trains (within float round-off), and a
compiled run resumes bit-exactly. Kept tiny: compilation, not training, is what these tests pay for."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dopr_robot.checkpoint import load_checkpoint
from dopr_robot.config import TrainConfig
from dopr_robot.optim import make_optimizer
from dopr_robot.train import WeightEMA, _step_counters_on_device, train

# DoPr's exact path runs under dopr-muon, its AdamW base under the amortized run (whose refresh steps take the
# exact path too): an exact dopr-adamw case would add a compilation (~12 s on 2 cores) and no path.
OPTIMIZERS = [("adamw", {}), ("dopr-adamw", {"refresh_every": 5}), ("dopr-muon", {})]


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), out=str(out), policy="mlp", policy_options={"width": 16, "depth": 1},
                    steps=50, batch_size=16, lr=3e-3, warmup_steps=5, log_every=5, val_every=50,
                    checkpoint_every=50)
    settings.update(overrides)
    return TrainConfig(**settings)


def logged(run_dir: Path, key: str) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line[key] for line in lines if key in line]


@pytest.mark.parametrize("optimizer, options", OPTIMIZERS, ids=["adamw", "dopr-adamw-amortized", "dopr-muon"])
def test_the_compiled_step_trains_the_eager_curve(reach_demos: Path, tmp_path: Path, one_thread, monkeypatch,
                                                  optimizer: str, options: dict) -> None:
    config = tiny_config(reach_demos, tmp_path / "eager", optimizer=optimizer, optimizer_options=options)
    eager = train(config, progress=False, device="cpu")
    averaged_eagerly, average = [], WeightEMA.average

    def spy(ema: WeightEMA, policy) -> None:  # the EMA's averaging is in the compiled update, never run eagerly
        if not torch.compiler.is_compiling():
            averaged_eagerly.append(True)
        average(ema, policy)

    monkeypatch.setattr(WeightEMA, "average", spy)
    torch._dynamo.utils.counters.clear()
    compiled = train(replace(config, out=str(tmp_path / "compiled"), compile=True), progress=False, device="cpu")
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] > 0  # it did compile
    assert not averaged_eagerly
    # Whole: the forward (with DoPr's hooks) is one graph, the clip, DoPr's solve, the base step (both of
    # Muon's parts) and the EMA's averaging another, and an amortized run has each twice (recording and not);
    # nothing breaks them apart (torch.optim's step decorator would, and the schedule's wrapper of the step).
    assert not counters["graph_break"], list(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == (4 if options else 2)

    # Muon orthogonalizes in bfloat16: its round-off is larger than float32's.
    rel = 1e-3 if optimizer.endswith("muon") else 1e-4
    assert logged(compiled.run_dir, "train_loss") == pytest.approx(logged(eager.run_dir, "train_loss"), rel=rel)
    assert logged(compiled.run_dir, "lr") == pytest.approx(logged(eager.run_dir, "lr"), rel=1e-6)
    if optimizer.startswith("dopr"):  # AP worked in both (no layer-step fell back to the raw gradient)
        assert logged(compiled.run_dir, "dopr_skipped") == logged(eager.run_dir, "dopr_skipped")
    final_eager, final_compiled = load_checkpoint(eager.run_dir), load_checkpoint(compiled.run_dir)
    for key in ("model", "ema"):  # the weights, and their average (compiled into the update)
        for name, value in final_eager[key].items():  # relative to the size: an elementwise test trips on Muon's ~0 entries
            difference = float((final_compiled[key][name] - value).norm() / value.norm().clamp(min=1e-12))
            assert difference <= 10 * rel, f"{key}.{name}: {difference:.2g}"


def test_a_compiled_run_resumes_bit_exactly(reach_demos: Path, tmp_path: Path, one_thread) -> None:
    # Exact DoPr: its two compiled graphs per run keep this test's compilations affordable (amortized
    # compiles four); amortized's compiled numerics are checked by the eager-curve test above.
    config = tiny_config(reach_demos, tmp_path / "whole", optimizer="dopr-adamw", steps=30, checkpoint_every=10,
                         compile=True,
                         policy_options={"width": 16, "depth": 1, "dropout": 0.1})  # dropout: compiled RNG replayed
    killed = tmp_path / "killed"

    def copy_at_25(policy, step: int) -> dict:
        # What a kill at step 25 leaves on disk (the step-20 checkpoint, metrics logged up to 25), taken
        # from the uninterrupted run itself: one compilation fewer than running a second, killed copy.
        if step == 25:
            shutil.copytree(tmp_path / "whole", killed)
        return {}

    whole = train(config, evaluator=copy_at_25, evaluate_every=5, progress=False, device="cpu")
    assert load_checkpoint(killed)["step"] == 20
    resumed = train(replace(config, out=str(killed)), resume=True, progress=False, device="cpu")

    final_whole, final_resumed = load_checkpoint(whole.run_dir), load_checkpoint(resumed.run_dir)
    for key in ("model", "ema"):
        for name, value in final_whole[key].items():
            assert torch.equal(value, final_resumed[key][name]), f"{key}.{name}"
    assert logged(whole.run_dir, "train_loss") == logged(resumed.run_dir, "train_loss")


def test_step_counters_follow_the_mode_of_each_run() -> None:
    # A captured CUDA run keeps torch.optim's step counters on the device (capturable), and its checkpoint
    # saves that; an eager CPU run resumed from it must turn it off again, or AdamW refuses to step.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = make_optimizer("dopr-muon", model, lr=1e-3)  # DoPr -> Muon with AdamW -> AdamW: found inside
    _step_counters_on_device(optimizer, True)
    assert optimizer.base.adamw.param_groups[0]["capturable"]
    model(torch.randn(8, 3)).square().mean().backward()
    with pytest.raises(AssertionError, match="capturable=True"):
        optimizer.step()
    _step_counters_on_device(optimizer, False)
    optimizer.step()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA-graph capture of the compiled step needs a GPU")
@pytest.mark.parametrize("optimizer, options", [("adamw", {}), ("dopr-adamw", {}), ("dopr-adamw", {"refresh_every": 5})],
                         ids=["adamw", "dopr-adamw", "dopr-adamw-amortized"])
def test_the_captured_step_on_cuda_trains_the_eager_curve(reach_demos: Path, tmp_path: Path, optimizer: str,
                                                          options: dict) -> None:
    config = tiny_config(reach_demos, tmp_path / "eager", optimizer=optimizer, optimizer_options=options)
    eager = train(config, progress=False, device="cuda")
    torch._dynamo.utils.counters.clear()
    captured = train(replace(config, out=str(tmp_path / "captured"), compile=True), progress=False, device="cuda")
    # Every compiled piece was captured (inductor logs why it skipped one: "skipping cudagraphs due to ...").
    assert not torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
    assert logged(captured.run_dir, "train_loss") == pytest.approx(logged(eager.run_dir, "train_loss"), rel=1e-3)
