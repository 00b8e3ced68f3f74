"""SB3 experts: resumable training, export to a plain torch actor, shipped experts, bad inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from dopr_robot import cli, sb3_experts
from dopr_robot.errors import UserError
from envs import seeds as seed_ranges
from envs.experts import sb3 as sb3_weights

TINY = ["--hp", "learning_starts=100", "--hp", "buffer_size=1000", "--hp", "batch_size=32", "--hp", 'policy_kwargs={"net_arch": [32, 32]}']


def _train_args(out: Path, steps: int, *extra: str) -> list[str]:
    return ["expert", "train", "--task", "Hopper-v5", "--algo", "sac", "--steps", str(steps), "--out", str(out),
            "--checkpoint-every", "100", "--eval-every", "100", "--eval-episodes", "1", *extra]


def test_train_tiny_budget_then_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert cli.main(_train_args(out, 200, *TINY)) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["steps_done"] == 200 and run["hyperparams"]["learning_starts"] == 100
    assert sb3_experts.checkpoint_steps(out / "checkpoints") == [200, 100]
    assert (out / "checkpoints" / "model_replay_buffer_200_steps.pkl").is_file()
    assert (out / "best" / "model.zip").is_file() and "eval return" in (out / "progress.log").read_text()

    assert cli.main(_train_args(out, 200, *TINY)) == 2  # the folder holds a run: --resume is needed
    assert "continue it with --resume" in capsys.readouterr().err
    (out / "checkpoints" / "model_250_steps.zip").write_bytes(b"cut short")  # a session killed mid-save
    best_before = json.loads((out / "best" / "best.json").read_text())
    assert cli.main(_train_args(out, 300, "--resume", "--eval-episodes", "2")) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["steps_done"] == 300 and len(run["commands"]) == 2 and "--resume" in run["commands"][1]
    assert run["hyperparams"]["buffer_size"] == 1000  # the run's own hyperparameters, not the file's
    assert "skipping checkpoint at 250 steps" in (log := (out / "progress.log").read_text())
    assert "resumed from" in log and sb3_experts.checkpoint_steps(out / "checkpoints") == [300, 200]  # the last two are kept
    # Resumed with more evaluation episodes, the kept best model is measured again on them before any comparison.
    assert f"best model (steps {best_before['steps']}): eval return" in log and "over 2 episodes (was" in log
    assert json.loads((out / "best" / "best.json").read_text())["episodes"] == 2

    manifest = sb3_experts.export_run(out, tmp_path / "export", which="latest", episodes=2)
    assert manifest["steps_trained"] == 300 and manifest["evaluation"]["episodes"] == 2
    assert len(manifest["evaluation"]["lengths"]) == 2 and np.mean(manifest["evaluation"]["lengths"]) == manifest["evaluation"]["length_mean"]
    assert manifest["commands"] == run["commands"] and manifest["versions"]["stable_baselines3"]
    assert cli.main(["expert", "eval", "--task", "Hopper-v5", "--expert", str(tmp_path / "export"), "--episodes", "1"]) == 0
    assert "Hopper-v5: return" in (printed := capsys.readouterr().out)
    length, early = map(int, re.search(r"mean length (\d+), (\d+) ended before the horizon", printed).groups())
    assert early == int(length < envs.task_spec("Hopper-v5").horizon)  # one episode: it fell, or it lasted
    assert f"(seeds {seed_ranges.EXPERT_MANIFEST.start}..{seed_ranges.EXPERT_MANIFEST.start})" in printed  # the default --seed
    assert not [p.name for p in tmp_path.rglob("*") if p.name.startswith((".", "partial")) or ".tmp" in p.name]  # written atomically


def test_tqc_trains_resumes_and_exports(tmp_path: Path, capsys) -> None:
    pytest.importorskip("sb3_contrib", reason="TQC needs sb3-contrib: pip install -e '.[experts]'")
    out = tmp_path / "run"
    args = ["expert", "train", "--task", "Hopper-v5", "--algo", "tqc", "--out", str(out), "--checkpoint-every", "100",
            "--eval-every", "100", "--eval-episodes", "1"]
    assert cli.main([*args, "--steps", "200", *TINY, "--hp", "n_quantiles=5"]) == 2  # a policy argument, not TQC's
    assert "unknown hyperparameter for TQC: TQC.__init__() got an unexpected keyword argument 'n_quantiles'" in capsys.readouterr().err
    assert not (out / "run.json").exists()
    assert cli.main([*args, "--steps", "200", *TINY[:-1], 'policy_kwargs={"net_arch": [32, 32], "n_quantiles": 5}']) == 0
    assert cli.main([*args, "--steps", "300", "--resume"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["steps_done"] == 300 and run["algo"] == "tqc" and run["versions"]["sb3_contrib"]
    assert "resumed from" in (out / "progress.log").read_text()
    manifest = sb3_experts.export_run(out, tmp_path / "export", which="latest", episodes=1)
    assert manifest["algo"] == "tqc" and manifest["steps_trained"] == 300


def test_a_missing_optional_algorithm_package_is_one_clear_error(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # as if not installed: import raises ModuleNotFoundError
    with pytest.raises(UserError, match=r"algorithm tqc needs the sb3-contrib package: pip install -e '\.\[experts\]'"):
        sb3_experts.algorithm_class("tqc")


def _tiny_model(algo: str, task: str, normalize: bool):
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    vec_env = DummyVecEnv([lambda: Monitor(envs.make(task))])
    if normalize:
        vec_env = VecNormalize(vec_env)
    kwargs = {"policy_kwargs": {"net_arch": [16, 8]}, "seed": 0, "device": "cpu"}
    if algo != "ppo":
        kwargs["buffer_size"] = 100
    model = sb3_experts.algorithm_class(algo)("MlpPolicy", vec_env, **kwargs)
    with torch.no_grad():  # move the weights off their initialization so the output layer matters
        for p in model.policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_env.reset()
        for _ in range(30):
            vec_env.step(np.stack([vec_env.action_space.sample()]))
        vec_normalize.training = False
    return model, vec_normalize


@pytest.mark.parametrize(("algo", "task", "normalize"), [("sac", "Humanoid-v5", False), ("td3", "Hopper-v5", False), ("ppo", "Hopper-v5", True), ("tqc", "Humanoid-v5", False)])
def test_exported_actor_equals_sb3_deterministic_predict(tmp_path: Path, algo: str, task: str, normalize: bool) -> None:
    if algo == "tqc":
        pytest.importorskip("sb3_contrib", reason="TQC needs sb3-contrib: pip install -e '.[experts]'")
    model, vec_normalize = _tiny_model(algo, task, normalize)
    actor, config = sb3_experts.actor_from_sb3(model, vec_normalize)
    sb3_experts.save_actor(actor, config, tmp_path)
    assert set(torch.load(tmp_path / "actor.pt", weights_only=True)) >= {"net.0.weight", "action_low"}
    expert = sb3_weights.load_expert_folder(tmp_path, model.observation_space.shape[0], task)

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, model.observation_space.shape[0])) * 2.0
    normalized = vec_normalize.normalize_obs(obs) if vec_normalize is not None else obs
    expected, _ = model.predict(normalized, deterministic=True)
    if algo == "ppo":
        expected = np.clip(expected, model.action_space.low, model.action_space.high)
    actions = expert.act(obs)
    assert actions.dtype == np.float32 and actions.shape == expected.shape
    np.testing.assert_allclose(actions, expected, atol=1e-6, rtol=0)
    assert np.all(actions >= model.action_space.low) and np.all(actions <= model.action_space.high)
    assert np.abs(expected).max() > 0.5 * model.action_space.high.max()  # the squashing/scaling is exercised
    # Row i alone = row i of the batch, up to float32 rounding: a one-row matmul and a batched one sum
    # in different orders (seen: 1.2e-6 on Humanoid's 376-wide input while other processes held cores).
    np.testing.assert_allclose(expert.act(obs[3]), actions[3], atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", sb3_experts.SB3_TASKS)
def test_shipped_expert_passes_its_short_check(task: str) -> None:
    folder = sb3_weights.weights_dir(task)
    if not (folder / sb3_weights.ACTOR_FILE).is_file():
        pytest.skip(f"no shipped expert for {task} (envs/experts/weights/{task}/actor.pt)")
    manifest = json.loads((folder / sb3_weights.MANIFEST_FILE).read_text())
    assert (folder / sb3_weights.ACTOR_FILE).stat().st_size < 5_000_000
    for key in ("commands", "versions", "wall_time_s", "steps_trained", "evaluation"):
        assert key in manifest
    assert manifest["evaluation"]["episodes"] == 20
    check = manifest["test_check"]
    returns, _, _ = sb3_experts.episode_returns(envs.make_expert(task), task, check["seeds"], horizon=check["horizon"])
    assert np.all(returns >= check["min_return"]), f"{task}: returns {returns} below {check['min_return']}"


def test_sb3_tasks_come_from_the_registry(tmp_path: Path) -> None:
    assert sb3_experts.SB3_TASKS == tuple(t for t in envs.list_tasks() if envs.task_spec(t).expert_kind == "sb3")
    assert {"Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5"} <= set(sb3_experts.SB3_TASKS)
    with pytest.raises(UserError, match=r"unknown task 'Push-v0' for expert training; valid: Hopper-v5"):
        sb3_experts.ExpertTrainConfig(task="Push-v0", algo="sac", steps=10, out=tmp_path)


def test_episode_returns_replay_a_plain_step_loop() -> None:
    """The toolkit's rollout loop gives the episodes a one-env reset(seed)/step loop gives."""
    task, seeds, horizon = "Hopper-v5", [7, 8], 60
    if not sb3_weights.has_weights(task):
        pytest.skip(f"no shipped expert for {task}")
    expert = envs.make_expert(task)
    returns, lengths, successes = sb3_experts.episode_returns(expert, task, seeds, horizon=horizon)
    env = envs.make(task, horizon=horizon)
    for i, seed in enumerate(seeds):
        obs, _ = env.reset(seed=seed)
        rewards, done = [], False
        while not done:
            obs, reward, terminated, truncated, info = env.step(expert.act(obs[None])[0])
            rewards.append(reward)
            done = terminated or truncated
        assert (lengths[i], successes[i]) == (len(rewards), info["is_success"])
        assert returns[i] == np.sum(rewards)  # same actions, same states: the same rewards, bit for bit
    env.close()


def test_every_locomotion_task_has_buildable_hyperparameters() -> None:
    pytest.importorskip("sb3_contrib", reason="TQC needs sb3-contrib: pip install -e '.[experts]'")
    for algo in sb3_experts.ALGOS:
        for task in sb3_experts.SB3_TASKS:
            hp = sb3_experts.load_hyperparams(task, algo) | ({"buffer_size": 10} if algo in sb3_experts.OFF_POLICY else {})
            kwargs, _ = sb3_experts._algorithm_kwargs(algo, hp, envs.task_spec(task).act_dim)
            env = envs.make(task)
            sb3_experts.algorithm_class(algo)("MlpPolicy", env, device="cpu", **kwargs)
            env.close()
    assert "RL Baselines3 Zoo" in json.loads(sb3_experts.HYPERPARAMS_FILE.read_text())["_source"]


def test_bad_inputs_are_user_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError, match=r"unknown task 'Hopper-v9'.*valid: Hopper-v5"):
        sb3_experts.ExpertTrainConfig(task="Hopper-v9", algo="sac", steps=10, out=tmp_path)
    with pytest.raises(UserError, match=r"unknown algorithm 'ddqn'; valid: sac, td3, ppo, tqc"):
        sb3_experts.ExpertTrainConfig(task="Hopper-v5", algo="ddqn", steps=10, out=tmp_path)
    with pytest.raises(UserError, match="steps must be >= 1"):
        sb3_experts.ExpertTrainConfig(task="Hopper-v5", algo="sac", steps=0, out=tmp_path)
    with pytest.raises(UserError, match="eval-episodes between 1 and 100"):
        sb3_experts.ExpertTrainConfig(task="Hopper-v5", algo="sac", steps=10, out=tmp_path, eval_episodes=101)
    with pytest.raises(UserError, match="not KEY=VALUE"):
        sb3_experts.parse_override("learning_starts")
    with pytest.raises(UserError, match="nothing to resume"):
        sb3_experts.train_expert(sb3_experts.ExpertTrainConfig(task="Hopper-v5", algo="sac", steps=10, out=tmp_path / "none", resume=True))
    with pytest.raises(UserError, match="neither an exported expert folder"):
        sb3_experts.evaluate_expert("Hopper-v5", tmp_path / "missing", episodes=1, seed=0)
    with pytest.raises(UserError, match="not a training run folder"):
        sb3_experts.export_run(tmp_path, tmp_path / "export")
    assert cli.main(["expert", "eval", "--task", "Hopper-v5", "--expert", str(tmp_path / "missing"), "--episodes", "1"]) == 2
    assert cli.main(["expert", "train", "--task", "Nope-v0", "--algo", "sac", "--steps", "5", "--out", str(tmp_path / "x")]) == 2
    assert "unknown task 'Nope-v0'" in capsys.readouterr().err
    assert cli.main(["expert"]) == 2 and "missing action" in capsys.readouterr().err


# -- output paths, replacing experts, bad options ---------------------------------------------------------


def _fake_run(tmp_path: Path, task: str = "Hopper-v5") -> Path:
    """A run folder as `expert train` leaves it, with an untrained tiny SAC model as its latest checkpoint."""
    model, _ = _tiny_model("sac", task, False)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model.save(run / "checkpoints" / "model_100_steps.zip")
    record = {"task": task, "algo": "sac", "seed": 0, "hyperparams": {}, "commands": ["(test)"], "wall_time_s": 1.0, "steps_done": 100}
    (run / "run.json").write_text(json.dumps(record))
    return run


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _shipped_copy(tmp_path: Path, monkeypatch, task: str = "Hopper-v5") -> Path:
    """The weights root moved to a copy holding ``task``'s shipped expert: nothing here can touch the real one."""
    import shutil

    if not sb3_weights.has_weights(task):
        pytest.skip(f"no shipped expert for {task}")
    root = tmp_path / "weights"
    shutil.copytree(sb3_weights.weights_dir(task), root / task)
    monkeypatch.setattr(sb3_weights, "WEIGHTS_ROOT", root)
    return root / task


def test_export_replaces_an_expert_only_with_overwrite(tmp_path: Path, capsys) -> None:
    run = _fake_run(tmp_path)
    to = tmp_path / "expert"
    args = ["expert", "export", "--run", str(run), "--which", "latest", "--episodes", "1", "--to", str(to)]
    assert cli.main(args) == 0
    before = _contents(to)
    assert set(before) == {"actor.pt", "actor.json", "manifest.json"}
    capsys.readouterr()
    assert cli.main([*args, "--note", "second"]) == 2
    assert "already holds the Hopper-v5 expert; pass --overwrite to replace it" in capsys.readouterr().err
    assert _contents(to) == before
    assert cli.main([*args, "--note", "second", "--overwrite"]) == 0
    assert json.loads((to / "manifest.json").read_text())["note"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expert", "run"]  # no staging or old folder left

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "x.txt").write_text("keep")
    for dest, message in ((tmp_path / "mine", "is not empty and holds no expert"), (tmp_path / "x.txt", "x.txt is a file")):
        assert cli.main([*args[:-1], str(dest), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep" and (tmp_path / "x.txt").read_text() == "keep"


def test_export_never_replaces_the_shipped_expert_by_default(tmp_path: Path, monkeypatch, capsys) -> None:
    shipped = _shipped_copy(tmp_path, monkeypatch)
    before = _contents(shipped)
    run = _fake_run(tmp_path)
    args = ["expert", "export", "--run", str(run), "--which", "latest", "--episodes", "1"]
    for extra, message in (([], "holds the shipped expert; export elsewhere with --to DIR"),
                           (["--overwrite"], "holds the shipped expert; export elsewhere with --to DIR"),
                           (["--to", str(shipped)], "already holds the Hopper-v5 expert shipped with the toolkit; pass --overwrite")):
        assert cli.main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert _contents(shipped) == before
    assert cli.main([*args, "--to", str(shipped), "--overwrite"]) == 0  # asked for by name
    assert _contents(shipped)["actor.pt"] != before["actor.pt"]


def test_an_export_that_fails_midway_leaves_the_old_expert_whole(tmp_path: Path, monkeypatch) -> None:
    run = _fake_run(tmp_path)
    to = tmp_path / "expert"
    sb3_experts.export_run(run, to, which="latest", episodes=1)
    before = _contents(to)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the evaluation interrupted after the new actor was written

    monkeypatch.setattr(sb3_experts, "episode_returns", killed)
    with pytest.raises(KeyboardInterrupt):
        sb3_experts.export_run(run, to, which="latest", episodes=1, note="new", overwrite=True)
    assert _contents(to) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expert", "run"]


def test_expert_train_refuses_bad_outputs_before_training(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sb3_experts, "_make_vec_env", lambda *a: pytest.fail("training started"))
    (tmp_path / "x.txt").write_text("keep")
    (tmp_path / "expert").mkdir()
    (tmp_path / "expert" / "manifest.json").write_text('{"task": "Hopper-v5"}')
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep")
    base = ["expert", "train", "--task", "Hopper-v5", "--algo", "sac", "--steps", "100"]
    for extra, message in ((["--out", str(tmp_path / "x.txt")], "x.txt is a file"),
                           (["--out", str(tmp_path / "x.txt" / "run")], "x.txt is a file, not a directory"),
                           (["--out", str(tmp_path / "full")], "is not empty and holds no expert training run"),
                           (["--out", str(tmp_path / "r"), "--export-to", str(tmp_path / "x.txt")], "x.txt is a file"),
                           (["--out", str(tmp_path / "r"), "--export-to", str(tmp_path / "expert")],
                            "already holds the Hopper-v5 expert; pass --overwrite"),
                           (["--out", str(tmp_path / "r"), "--hp", "learning_rate=abc"],
                            'hyperparameter learning_rate must be a number (like 0.0003), got "abc"'),
                           (["--out", str(tmp_path / "r"), "--hp", "buffer_size=1.5"], "buffer_size must be an integer"),
                           (["--out", str(tmp_path / "r"), "--seed", "-1"], "seed must be >= 0")):
        assert cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists() and (tmp_path / "x.txt").read_text() == "keep"


def test_expert_train_threads_zero_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["expert", "train", "--task", "Hopper-v5", "--algo", "sac", "--steps", "100", "--out", "x", "--threads", "0"])
    assert exited.value.code == 2
    assert "argument --threads: must be an integer >= 1, got '0'" in capsys.readouterr().err


def test_expert_eval_refuses_a_negative_seed_and_another_tasks_expert(tmp_path: Path, capsys) -> None:
    assert cli.main(["expert", "eval", "--task", "Hopper-v5", "--seed", "-1", "--episodes", "1"]) == 2
    assert "seed must be >= 0" in capsys.readouterr().err
    expert = tmp_path / "walker"
    sb3_experts.save_actor(*sb3_experts.actor_from_sb3(_tiny_model("sac", "HalfCheetah-v5", False)[0]), expert)
    (expert / "manifest.json").write_text(json.dumps({"task": "Walker2d-v5"}))  # the same sizes as HalfCheetah-v5
    assert envs.task_spec("Walker2d-v5").obs_dim == envs.task_spec("HalfCheetah-v5").obs_dim
    assert cli.main(["expert", "eval", "--task", "HalfCheetah-v5", "--expert", str(expert), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained on Walker2d-v5, not HalfCheetah-v5" in err, err


def test_expert_train_options_are_the_config_fields(capsys) -> None:
    """Every ExpertTrainConfig field the command line sets is an option with the field's default."""
    from dataclasses import fields

    from dopr_robot.commands.expert import TRAIN_OWN_FIELDS, _train_command
    from dopr_robot.config import resolve_config

    parser = cli.build_parser()
    args = parser.parse_args(["expert", "train", "--task", "Hopper-v5", "--algo", "SAC", "--steps", "7", "--out", "r"])
    cfg = resolve_config(sb3_experts.ExpertTrainConfig, args, exclude=TRAIN_OWN_FIELDS)
    assert cfg == sb3_experts.ExpertTrainConfig(task="Hopper-v5", algo="sac", steps=7, out="r")
    with pytest.raises(SystemExit):
        parser.parse_args(["expert", "train", "--help"])
    help_text = capsys.readouterr().out
    for f in fields(sb3_experts.ExpertTrainConfig):
        if f.name not in TRAIN_OWN_FIELDS:
            assert "--" + f.name.replace("_", "-") in help_text
    args = parser.parse_args(["expert", "train", "--task", "Hopper-v5", "--algo", "sac", "--steps", "7", "--out", "r",
                              "--eval-episodes", "3", "--resume", "--hp", "batch_size=32"])
    assert _train_command(args) == ("dopr-robot expert train --task Hopper-v5 --algo sac --steps 7 --out r --resume "
                                    "--eval-episodes 3 --hp batch_size=32")


def test_an_interrupted_expert_train_says_how_to_resume(tmp_path: Path, monkeypatch, capsys) -> None:
    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(sb3_experts, "train_expert", interrupted)
    out = tmp_path / "run"
    assert cli.main(["expert", "train", "--task", "Hopper-v5", "--algo", "sac", "--steps", "100", "--out", str(out)]) == 130
    assert capsys.readouterr().err == (f"dopr-robot expert: interrupted; resume with: dopr-robot expert train --task "
                                       f"Hopper-v5 --algo sac --steps 100 --out {out} --resume\n")


def test_a_terminated_expert_train_checkpoints_where_it_stopped(tmp_path: Path, monkeypatch, capsys) -> None:
    """SIGTERM (a session's end) mid-run: the steps since the last periodic checkpoint are saved, not lost."""
    import os
    import signal

    make_callback = sb3_experts._make_callback

    def terminating_at_150(*args, **kwargs):
        callback = make_callback(*args, **kwargs)
        on_step = callback._on_step

        def _on_step() -> bool:
            if callback.num_timesteps == 150:
                os.kill(os.getpid(), signal.SIGTERM)
            return on_step()

        callback._on_step = _on_step
        return callback

    monkeypatch.setattr(sb3_experts, "_make_callback", terminating_at_150)
    handler_before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    assert cli.main(_train_args(out, 1000, *TINY)) == 130
    assert "interrupted; resume with:" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert sb3_experts.checkpoint_steps(out / "checkpoints") == [150, 100]
    assert json.loads((out / "run.json").read_text())["steps_done"] == 150
    assert "stopped by SIGTERM at 150 steps, checkpoint saved" in (out / "progress.log").read_text()
    monkeypatch.setattr(sb3_experts, "_make_callback", make_callback)
    assert cli.main(_train_args(out, 200, "--resume")) == 0
    assert "resumed from" in (log := (out / "progress.log").read_text()) and "150" in log.split("resumed from")[1].splitlines()[0]
    assert json.loads((out / "run.json").read_text())["steps_done"] == 200
