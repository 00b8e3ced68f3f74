"""BC training: loss goes down, resume is bit-exact, checkpoints load weights_only, errors are clear."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import dopr_robot.evaluate as evaluate_module
from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
from dopr_robot.cli import main
from dopr_robot.config import TrainConfig
from dopr_robot.errors import UserError
from dopr_robot.train import train
from envs.seeds import POLICY_EVAL

TINY_POLICY = {"mlp": {"width": 32, "depth": 2}, "transformer": {"d_model": 16, "n_layers": 1, "n_heads": 2}}


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), out=str(out), policy="mlp", optimizer="adamw", steps=40, batch_size=32,
                    lr=3e-3, warmup_steps=5, val_every=20, checkpoint_every=10, log_every=10,
                    policy_options=TINY_POLICY[overrides.get("policy", "mlp")])
    settings.update(overrides)
    return TrainConfig(**settings)


def logged(run_dir: Path, key: str) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line[key] for line in lines if key in line]


@pytest.mark.parametrize("policy", ["mlp", "transformer"])
@pytest.mark.parametrize("optimizer", ["adamw", "dopr-adamw"])
def test_training_decreases_the_loss(reach_demos: Path, tmp_path: Path, policy: str, optimizer: str) -> None:
    history, chunk = (3, 4) if policy == "transformer" else (1, 1)
    config = tiny_config(reach_demos, tmp_path / "run", policy=policy, optimizer=optimizer, steps=60,
                         history=history, chunk=chunk)
    result = train(config, progress=False)
    losses = logged(result.run_dir, "train_loss")
    assert losses[-1] < 0.5 * losses[0]
    assert result.final_val_loss is not None and result.final_val_loss == logged(result.run_dir, "val_loss")[-1]
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["optimizer"] == optimizer and saved["history"] == history


class Interrupt(Exception):
    """Stands in for a kill between two checkpoints."""


@pytest.mark.parametrize("optimizer, policy", [("dopr-adamw", "mlp"), ("dopr-muon", "transformer")])
def test_resume_after_a_kill_reaches_the_same_weights_even_moved(reach_demos: Path, tmp_path: Path, optimizer: str, policy: str) -> None:
    options = dict(TINY_POLICY[policy], dropout=0.1)  # dropout: the global RNG must be restored too
    config = tiny_config(reach_demos, tmp_path / "whole", optimizer=optimizer, policy=policy, steps=30,
                         policy_options=options, optimizer_options={"refresh_every": 3, "cov_ema": 0.5})
    whole = train(config, progress=False)

    killed = replace(config, out=str(tmp_path / "killed"))

    def kill_at_25(policy, step: int) -> dict:
        if step == 25:
            raise Interrupt
        return {}

    with pytest.raises(Interrupt):
        train(killed, evaluator=kill_at_25, evaluate_every=5, progress=False)
    assert load_checkpoint(tmp_path / "killed")["step"] == 20
    # Moved elsewhere (copied off a cluster, renamed), it is the same run: it resumes, and its config names its new place.
    moved = replace(killed, out=str(tmp_path / "moved"))
    (tmp_path / "killed").rename(moved.out)
    resumed = train(moved, resume=True, progress=False)
    assert json.loads((resumed.run_dir / "config.json").read_text())["out"] == moved.out

    final_whole = load_checkpoint(whole.run_dir)
    final_resumed = load_checkpoint(resumed.run_dir)
    for key in ("model", "ema"):
        for name, value in final_whole[key].items():
            assert torch.equal(value, final_resumed[key][name]), f"{key}.{name}"
    assert logged(whole.run_dir, "train_loss") == logged(resumed.run_dir, "train_loss")


def test_a_resumed_run_counts_the_training_time_of_the_calls_before(reach_demos: Path, tmp_path: Path) -> None:
    config = tiny_config(reach_demos, tmp_path / "run", steps=20, val_every=0, log_every=5)

    def kill_at_15(policy, step: int) -> dict:
        if step == 15:
            raise Interrupt
        return {}

    with pytest.raises(Interrupt):
        train(config, evaluator=kill_at_15, evaluate_every=5, progress=False)
    first = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    at_checkpoint = logged(tmp_path / "run", "elapsed_s")[1]  # logged at steps 5, 10 (the checkpoint's), 15
    assert first["step"] == 10 and first["elapsed_s"] >= at_checkpoint > 0
    # An earlier call that trained for 1000 s: the resumed run's log and checkpoint continue from there.
    torch.save({**first, "elapsed_s": 1000.0}, tmp_path / "run" / "checkpoint.pt")
    resumed = train(config, resume=True, progress=False)
    assert resumed.resumed_elapsed_s == 1000.0
    times = logged(tmp_path / "run", "elapsed_s")
    assert len(times) == 4 and times == sorted(times) and times[2] >= 1000.0 and times[1] < 1000.0
    assert load_checkpoint(tmp_path / "run")["elapsed_s"] >= times[-1]
    assert train(replace(config, out=str(tmp_path / "fresh")), progress=False).resumed_elapsed_s == 0.0


def test_checkpoint_is_self_contained_and_weights_only(reach_demos: Path, tmp_path: Path) -> None:
    result = train(tiny_config(reach_demos, tmp_path / "run", optimizer="dopr-adamw", steps=10), progress=False)
    raw = torch.load(result.run_dir / "checkpoint.pt", weights_only=True)
    assert raw["step"] == 10 and raw["config"]["optimizer"] == "dopr-adamw"
    assert raw["dataset"]["task"] == "Reach-v0" and raw["dataset"]["obs_dim"] == 18
    assert "base" in raw["optimizer"]  # DoPr's state, base optimizer included
    assert torch.count_nonzero(raw["model"]["obs_normalizer.std"] != 1.0) > 0  # statistics travel inside
    policy = policy_from_checkpoint(raw)
    assert policy.predict(torch.zeros(2, 1, 18)).shape == (2, 1, 3)


def test_refuses_a_run_dir_holding_another_run(reach_demos: Path, tmp_path: Path) -> None:
    config = tiny_config(reach_demos, tmp_path / "run", steps=5)
    train(config, progress=False)
    with pytest.raises(UserError, match=r"already holds a run; pass --resume to continue it or --overwrite"):
        train(replace(config, lr=1e-4), progress=False)
    with pytest.raises(UserError, match=r"cannot resume .* with a different config \(changed: lr\)"):
        train(replace(config, lr=1e-4), resume=True, progress=False)
    train(replace(config, lr=1e-4), overwrite=True, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 1e-4


def test_chunk_longer_than_episodes_is_refused_and_leaves_nothing(reach_demos: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--chunk 500 is longer than the shortest training episode \(100 steps\)"):
        train(tiny_config(reach_demos, tmp_path / "run", chunk=500), progress=False)
    assert not (tmp_path / "run").exists()


def test_overwrite_removes_only_run_files(reach_demos: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty and holds no run"):
        train(tiny_config(reach_demos, tmp_path, steps=2), overwrite=True, progress=False)
    run_dir = tmp_path / "run"
    train(tiny_config(reach_demos, run_dir, steps=2), progress=False)
    (run_dir / "notes.txt").write_text("mine")
    train(tiny_config(reach_demos, run_dir, steps=3), overwrite=True, progress=False)
    assert (run_dir / "notes.txt").read_text() == "mine" and load_checkpoint(run_dir)["step"] == 3


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(reach_demos: Path, tmp_path: Path) -> None:
    config = tiny_config(reach_demos, tmp_path / "run", optimizer="sgd", lr=1e12, grad_clip=0.0, warmup_steps=0,
                         checkpoint_every=1, steps=200, ema_decay=0.0)
    with pytest.raises(UserError, match=r"the (training loss|weights) became non-finite \(nan or inf\) (at|by) step \d+; the last good checkpoint is kept"):
        train(config, progress=False)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "cnn"], "unknown policy 'cnn'; valid: mlp, transformer"),
        (["--optimizer", "lion"], "unknown optimizer 'lion'; valid: sgd, adam, adamw"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--policy-options", '{"layers": 2}'], "policy 'mlp' has no option(s) layers"),
        (["--policy-options", '{"width": 0}'], '--policy-options {"width": 0}: invalid MLP config'),
        (["--optimizer-options", '{"refresh_every": 10}'],
         "--optimizer-options refresh_every: a DoPr option that --optimizer adamw would ignore; use --optimizer dopr-adamw"),
    ],
)
def test_cli_errors_are_one_line(reach_demos: Path, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    code = main(["train", "--data", str(reach_demos), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_trains_from_a_config_file_and_resumes(reach_demos: Path, tmp_path: Path, capsys) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"steps": 10, "batch_size": 16, "policy_options": TINY_POLICY["mlp"]}))
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(reach_demos), "--out", str(run_dir), "--config", str(config_file),
                 "--lr", "2e-3", "--no-progress"]) == 0
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["steps"] == 10 and saved["lr"] == 2e-3 and saved["batch_size"] == 16
    assert "trained 10 steps" in capsys.readouterr().out
    assert main(["train", "--resume", str(run_dir), "--lr", "1e-3", "--no-progress"]) == 2
    assert "--resume continues the saved config; drop --lr" in capsys.readouterr().err


def test_an_evaluator_without_ema_leaves_dopr_preconditioning(reach_demos: Path, tmp_path: Path) -> None:
    """With ema_decay=0 the evaluator sees the policy being trained; training must resume in train mode,
    or DoPr's hooks record nothing and every later step hands the raw gradient to the base."""
    config = tiny_config(reach_demos, tmp_path / "run", optimizer="dopr-adamw", ema_decay=0.0, steps=40, log_every=10)
    modes = []

    def evaluator(policy, step: int) -> dict:
        modes.append(policy.training)
        return {"calls": len(modes)}

    train(config, evaluator=evaluator, evaluate_every=10, progress=False)
    assert modes == [False] * 4  # evaluated in eval mode
    skipped, layer_steps = logged(tmp_path / "run", "dopr_skipped"), logged(tmp_path / "run", "dopr_layer_steps")
    assert skipped == [0, 0, 0, 0]
    assert layer_steps[-1] == 40 * 6  # 6 linear layers in the tiny MLP (embed, 2 x 2 per block, head), 40 steps
    coverage = (tmp_path / "run" / "dopr_coverage.txt").read_text()
    assert "get AP" in coverage and "6 linear layers hooked" in coverage


def test_a_run_whose_dopr_skips_ap_stops_with_a_clear_error(reach_demos: Path, tmp_path: Path, monkeypatch) -> None:
    from dopr_robot.optim.dopr import DoPr

    # From step 10 on, the hooks record nothing (as with a policy left in eval mode).
    monkeypatch.setattr(DoPr, "_records_now", lambda self: self._steps_done < 10)
    config = tiny_config(reach_demos, tmp_path / "run", optimizer="dopr-adamw", steps=40, log_every=10)
    with pytest.raises(UserError, match=r"DoPr skipped activation preconditioning on 60 of the last 60 layer-steps \(up to step 20\)"):
        train(config, progress=False)
    assert load_checkpoint(tmp_path / "run")["step"] == 10  # the last good checkpoint is kept


def test_plain_optimizers_log_no_dopr_numerics(reach_demos: Path, tmp_path: Path) -> None:
    train(tiny_config(reach_demos, tmp_path / "run", steps=20), progress=False)
    assert logged(tmp_path / "run", "dopr_skipped") == []
    assert not (tmp_path / "run" / "dopr_coverage.txt").exists()


@pytest.mark.parametrize("optimizer", ["adamw", "dopr-adamw"])
def test_the_loop_reads_device_values_only_when_it_logs(reach_demos: Path, tmp_path: Path, monkeypatch, optimizer: str) -> None:
    """No per-step host synchronization: tensor-to-Python conversions do not grow with the number of
    steps between log points (the NaN check, the loss and DoPr's counters are read when logging)."""
    import sys

    counts = {"n": 0}

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            # torch's Adam/AdamW read their step counters, which live on the CPU by design: no device wait.
            callers = {sys._getframe(k).f_code.co_filename for k in (1, 2, 3)}
            if not any(f.endswith(("optim/adam.py", "optim/adamw.py")) for f in callers):
                counts["n"] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    seen = []
    for steps in (5, 10, 30):  # the first run pays one-time initializations
        counts["n"] = 0
        config = tiny_config(reach_demos, tmp_path / f"run{steps}", optimizer=optimizer, steps=steps, log_every=steps,
                             val_every=steps, checkpoint_every=steps, warmup_steps=0)
        train(config, progress=False)
        seen.append(counts["n"])
    assert seen[1] == seen[2], f"conversions grew with steps: {seen}"


def test_cli_eval_every_logs_closed_loop_success_and_keeps_the_best_step(reach_demos: Path, tmp_path: Path, capsys,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(reach_demos), "--out", str(run_dir), "--steps", "20", "--batch-size", "16",
                 "--policy-options", json.dumps(TINY_POLICY["mlp"]), "--eval-every", "10", "--eval-episodes", "2",
                 "--checkpoint-every", "10", "--no-progress"]) == 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [line for line in lines if "eval_success_rate" in line]
    assert [line["step"] for line in evaluations] == [10, 20]
    assert all(line["eval_episodes"] == 2 and 0.0 <= line["eval_success_rate"] <= 1.0 for line in evaluations)
    assert json.loads((run_dir / "config.json").read_text())["eval_every"] == 10
    rates = [line["eval_success_rate"] for line in evaluations]
    best = load_checkpoint(run_dir)["best_eval"]
    assert best == {"eval_success_rate": max(rates), "step": evaluations[rates.index(max(rates))]["step"]}
    assert f"best closed-loop success rate {max(rates):.3f} at step {best['step']}" in capsys.readouterr().out
    # What "best" was measured on is saved with the run, and a resume evaluates on it or is refused.
    saved = {"episodes": 2, "seed": POLICY_EVAL, "num_envs": 8, "actions_per_chunk": 1}
    assert json.loads((run_dir / "eval_settings.json").read_text()) == saved
    assert main(["train", "--resume", str(run_dir), "--eval-episodes", "3", "--no-progress"]) == 2
    assert "--resume evaluates with the run's saved" in capsys.readouterr().err
    built = []
    monkeypatch.setattr(evaluate_module, "make_evaluator",
                        lambda task, settings, **kwargs: built.append(settings) or (lambda policy, step: {}))
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0  # not the default 10 episodes
    assert [settings.episodes for settings in built] == [2]


def test_a_resume_with_other_evaluation_settings_is_refused(reach_demos: Path, tmp_path: Path) -> None:
    config = tiny_config(reach_demos, tmp_path / "run", steps=2, eval_every=2, val_every=0)
    no_evaluation = lambda policy, step: {}  # noqa: E731
    train(config, evaluator=no_evaluation, eval_settings={"episodes": 2}, progress=False)
    with pytest.raises(UserError, match=r"cannot resume .* with different evaluation settings \(changed: episodes "
                                        r"\(2 -> 3\)\); resume with the ones in eval_settings.json"):
        train(config, evaluator=no_evaluation, eval_settings={"episodes": 3}, resume=True, progress=False)
    train(config, evaluator=no_evaluation, eval_settings={"episodes": 2}, resume=True, progress=False)


def test_eval_episodes_without_eval_every_is_refused(reach_demos: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", str(reach_demos), "--out", str(tmp_path / "run"), "--eval-episodes", "3"]) == 2
    assert "--eval-episodes sets the evaluations of --eval-every" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
