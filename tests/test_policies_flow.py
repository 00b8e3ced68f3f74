"""Flow-matching policies (policies/flow.py): multimodal demonstrations where regression fails by
construction, seeded sampling, evaluation that does not depend on num_envs, DoPr on every Linear,
training with both validation numbers, resume, checkpoints, and the CLI end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

import demos
from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
from dopr_robot.cli import main
from dopr_robot.config import EvalConfig, TrainConfig
from dopr_robot.evaluate import evaluate
from dopr_robot.optim import DoPr
from dopr_robot.train import train, validation_metrics
from policies import POLICIES, make_policy

TINY = {"flow-mlp": {"width": 32, "depth": 1, "head_depth": 1},
        "flow-transformer": {"d_model": 16, "n_layers": 1, "n_heads": 2, "head_depth": 1}}

# ---------------------------------------------------------------------------------------------------
# A task whose expert is bimodal: a 2-D point must pass a wall on the left or on the right.

STEP = 0.1  # distance per unit action
WALL_Y, WALL_HALF = 0.3, 0.35  # the wall: y = WALL_Y, |x| < WALL_HALF
GAP_X = 0.5  # the expert passes the wall at x = +-GAP_X
GOAL = np.array([0.0, 0.8])


class GapEnv(gymnasium.Env):
    """p_{t+1} = p_t + 0.1 clip(a, -1, 1) in the plane, from p_0 ~ U(-0.002, 0.002)^2 (almost one
    start state). Crossing the wall (y = 0.3, |x| < 0.35) terminates the episode, a failure; reaching
    the goal (0, 0.8) within 0.1 terminates it with success; 30 steps truncate it."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.p, self.t = self.np_random.uniform(-0.002, 0.002, 2), 0
        return self.p.copy(), {"is_success": False}

    def step(self, action):
        old, self.p = self.p, self.p + STEP * np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.t += 1
        if (old[1] < WALL_Y) != (self.p[1] < WALL_Y):
            x = old[0] + (WALL_Y - old[1]) / (self.p[1] - old[1]) * (self.p[0] - old[0])
            if abs(x) < WALL_HALF:
                return self.p.copy(), -1.0, True, False, {"is_success": False}
        success = bool(np.linalg.norm(self.p - GOAL) < 0.1)
        return self.p.copy(), float(success), success, self.t >= 30, {"is_success": success}


def expert_action(p: np.ndarray, side: np.ndarray | float) -> np.ndarray:
    """Below the wall head for the gap on ``side`` (-1 left, +1 right), then for the goal; full speed
    in the largest coordinate. (N, 2) -> (N, 2)."""
    p = np.atleast_2d(p)
    side = np.broadcast_to(side, (len(p),))
    gap = np.stack([side * GAP_X, np.full(len(p), WALL_Y + 0.05)], axis=1)
    direction = (np.where((p[:, 1] < WALL_Y)[:, None], gap, GOAL) - p) / STEP
    return direction / np.maximum(1.0, np.abs(direction).max(axis=1, keepdims=True))


class NearestGapExpert:
    """A stateless stand-in for evaluation's compounding error: the gap on the side the point is on."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        return expert_action(obs, np.where(obs[:, 0] < 0, -1.0, 1.0))


def gap_demos(episodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(obs, actions) of ``episodes`` expert episodes, the side a coin flip per episode (alternating, so
    exactly half each way: the start state tells nothing about the side)."""
    env, obs, actions = GapEnv(), [], []
    for i in range(episodes):
        side = 1.0 if i % 2 else -1.0
        o, _ = env.reset(seed=i)
        done, info = False, {}
        while not done:
            a = expert_action(o, side)[0]
            obs.append(o)
            actions.append(a)
            o, _, terminated, truncated, info = env.step(a)
            done = terminated or truncated
        assert info["is_success"]
    return np.asarray(obs, dtype=np.float32), np.asarray(actions, dtype=np.float32)


def fit(name: str, obs: np.ndarray, actions: np.ndarray, steps: int, **options):
    """``steps`` AdamW steps of the policy's own loss on (obs, action) pairs (history 1, chunk 1)."""
    torch.manual_seed(0)
    policy = make_policy(name, 2, 2, **options)
    policy.obs_normalizer.set_statistics(obs.mean(0), obs.std(0))
    policy.action_normalizer.set_statistics(actions.mean(0), actions.std(0))
    data = {"obs": torch.from_numpy(obs)[:, None], "actions": torch.from_numpy(actions)[:, None],
            "action_mask": torch.ones(len(obs), 1, dtype=torch.bool)}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(steps):
        indices = torch.randint(len(obs), (128,), generator=order)
        loss = policy.loss({key: value[indices] for key, value in data.items()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy.eval()


@pytest.fixture(scope="module")
def gap_policies() -> dict:
    obs, actions = gap_demos(20)
    return {"mlp": fit("mlp", obs, actions, 400, width=64, depth=1),
            "flow-mlp": fit("flow-mlp", obs, actions, 1000, width=64, depth=1)}


START = torch.zeros(1, 1, 2)
MODES = torch.as_tensor(expert_action(np.zeros((2, 2)), np.array([-1.0, 1.0])), dtype=torch.float32)  # (+-1, 0.7)


def near_a_mode(actions: torch.Tensor, tolerance: float = 0.3) -> torch.Tensor:
    return torch.cdist(actions, MODES).min(dim=1).values < tolerance


def test_the_regressor_averages_the_modes_and_the_flow_samples_them(gap_policies: dict) -> None:
    regressed = gap_policies["mlp"].predict(START)[0, 0]
    assert abs(regressed[0]) < 0.35 and regressed[1] == pytest.approx(0.7, abs=0.1)  # between the modes
    assert not near_a_mode(regressed[None], tolerance=0.6).any()

    flow = gap_policies["flow-mlp"]
    samples = flow.predict(START.expand(200, 1, 2), generator=torch.Generator().manual_seed(0))[:, 0]
    assert near_a_mode(samples).float().mean() >= 0.8
    right = (samples[:, 0] > 0).float().mean()
    assert 0.25 <= right <= 0.75  # both modes, roughly as often as the demonstrations

    flow.flow_steps = 1  # one Euler step from noise is x_0 + v(x_0, 0) ≈ E[action]: the regressor again
    try:
        one_step = flow.predict(START.expand(200, 1, 2), generator=torch.Generator().manual_seed(0))[:, 0]
    finally:
        flow.flow_steps = flow.config.flow_steps
    assert near_a_mode(one_step).float().mean() < 0.2


def test_in_closed_loop_the_flow_succeeds_where_the_regressor_walks_into_the_wall(gap_policies: dict) -> None:
    settings = EvalConfig(episodes=20, seed=100, num_envs=4, with_expert=False)
    results = {name: evaluate(policy, "gap", settings, make_env=GapEnv)
               for name, policy in gap_policies.items()}
    assert results["flow-mlp"].closed_loop["success_rate"] >= 0.8
    regressor = results["mlp"]
    assert regressor.closed_loop["success_rate"] <= 0.2
    walled = [r for r in regressor.records if r["terminated"] and not r["success"] and r["length"] < 30]
    assert len(walled) >= 16  # the wall ends its episodes early


def test_evaluation_records_do_not_depend_on_num_envs(gap_policies: dict) -> None:
    flow = gap_policies["flow-mlp"]
    runs = [evaluate(flow, "gap", EvalConfig(episodes=9, seed=200, num_envs=k), make_env=GapEnv,
                     expert=NearestGapExpert())
            for k in (1, 4, 4, 3)]
    assert runs[1].records == runs[2].records  # the same K: bit-identical
    # Another K: each episode draws the same noise (its generator, seeded by its reset seed), so the
    # episodes are the same; only a batched matmul's rounding differs with the batch size (~1e-7 per
    # forward, as for the regressors), which the continuous metrics show at ~1e-6.
    for other in (runs[1], runs[3]):
        for a, b in zip(runs[0].records, other.records):
            assert {k: v for k, v in a.items() if not isinstance(v, float)} == \
                   {k: v for k, v in b.items() if not isinstance(v, float)}
            for key in ("return", "j_traj", "action_error_on_policy", "action_error_on_expert", "final_deviation"):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert len({round(r["j_traj"], 4) for r in runs[0].records}) > 1  # each episode its own noise, not one replayed


# ---------------------------------------------------------------------------------------------------
# Sampling API


def tiny_flow(name: str = "flow-mlp", history: int = 3, chunk: int = 4, **options):
    torch.manual_seed(0)
    policy = make_policy(name, 6, 2, history=history, chunk=chunk, **{**TINY[name], **options}).eval()
    policy.obs_normalizer.set_statistics(torch.arange(6.0), torch.full((6,), 2.0))
    policy.action_normalizer.set_statistics(torch.tensor([10.0, -10.0]), torch.tensor([0.5, 3.0]))
    return policy


def batch(size: int = 5, history: int = 3, chunk: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"obs": torch.randn(size, history, 6, generator=generator),
            "actions": torch.randn(size, chunk, 2, generator=generator),
            "action_mask": torch.ones(size, chunk, dtype=torch.bool)}


@pytest.mark.parametrize("name", list(TINY))
def test_predict_is_reproducible_from_its_generator(name: str) -> None:
    policy = tiny_flow(name)
    obs = batch()["obs"]
    first = policy.predict(obs, generator=torch.Generator().manual_seed(1))
    assert first.shape == (5, 4, 2)
    torch.testing.assert_close(policy.predict(obs, generator=torch.Generator().manual_seed(1)), first, rtol=0, atol=0)
    assert not torch.allclose(policy.predict(obs, generator=torch.Generator().manual_seed(2)), first)

    # One generator per row: a row's sample does not depend on the rows beside it.
    rows = policy.predict(obs, generator=[torch.Generator().manual_seed(s) for s in (7, 8, 9, 10, 11)])
    alone = policy.predict(obs[2:3], generator=[torch.Generator().manual_seed(9)])
    torch.testing.assert_close(rows[2:3], alone)
    with pytest.raises(ValueError, match="got 2 generators for a batch of 5"):
        policy.predict(obs, generator=[torch.Generator(), torch.Generator()])


@pytest.mark.parametrize("name", list(TINY))
def test_normalizers_travel_in_the_state_dict_and_the_whole_history_is_used(name: str) -> None:
    policy = tiny_flow(name)
    obs = batch()["obs"]
    actions = policy.predict(obs, generator=torch.Generator().manual_seed(0))
    clone = make_policy(name, 6, 2, history=3, chunk=4, **TINY[name]).eval()
    clone.load_state_dict(policy.state_dict())
    torch.testing.assert_close(clone.predict(obs, generator=torch.Generator().manual_seed(0)), actions)
    changed = obs.clone()
    changed[:, 0] += 1.0  # the oldest observation
    assert not torch.allclose(policy.predict(changed, generator=torch.Generator().manual_seed(0)), actions)
    with pytest.raises(ValueError, match=r"expected observation histories of shape \(B, 3, 6\), got \(5, 2, 6\)"):
        policy.predict(obs[:, 1:])


def test_regressors_accept_and_ignore_the_generator() -> None:
    torch.manual_seed(0)
    policy = make_policy("mlp", 6, 2, history=3, chunk=4, width=16, depth=1).eval()
    obs = batch()["obs"]
    torch.testing.assert_close(policy.predict(obs, generator=torch.Generator().manual_seed(3)), policy.predict(obs))
    torch.testing.assert_close(policy.predict(obs, generator=[torch.Generator()] * 5), policy.predict(obs))


def test_flow_steps_is_a_config_field_and_settable_for_evaluation() -> None:
    policy = tiny_flow(flow_steps=4)
    obs = batch()["obs"]
    assert policy.flow_steps == 4
    four = policy.predict(obs, generator=torch.Generator().manual_seed(0))
    policy.flow_steps = 2
    assert not torch.allclose(policy.predict(obs, generator=torch.Generator().manual_seed(0)), four)
    # Two Euler steps by hand: x <- x + v(x, k/2) / 2 from the same noise.
    normalized = (obs - torch.arange(6.0)) / 2.0  # tiny_flow's statistics, applied by hand
    x = policy.initial_noise(5, torch.Generator().manual_seed(0))
    for k in range(2):
        x = x + policy(normalized, x, torch.full((5,), k / 2)) / 2
    torch.testing.assert_close(policy.predict(obs, generator=torch.Generator().manual_seed(0)),
                               x * torch.tensor([0.5, 3.0]) + torch.tensor([10.0, -10.0]))
    with pytest.raises(ValueError, match="flow_steps must be an integer >= 1, got 0"):
        policy.flow_steps = 0


# ---------------------------------------------------------------------------------------------------
# Loss, time distribution, config checks, DoPr coverage


@pytest.mark.parametrize("name", list(TINY))
def test_flow_loss_is_reproducible_from_its_generator(name: str) -> None:
    policy = tiny_flow(name)
    data = batch()

    def loss() -> torch.Tensor:
        return policy.loss(data, generator=torch.Generator().manual_seed(0))

    reference = loss()
    assert torch.isfinite(reference) and reference > 0 and torch.equal(loss(), reference)
    data["actions"][:, 0] += 1.0
    assert not torch.isclose(loss(), reference)


def test_masked_steps_carry_no_loss() -> None:
    """With a network that predicts the target velocity exactly on the valid steps, the loss is 0
    whatever it predicts on the padded ones."""
    policy = tiny_flow()
    data = batch()
    data["action_mask"][:, 3] = False
    noise_and_time = torch.Generator().manual_seed(0)
    target = (data["actions"] - torch.tensor([10.0, -10.0])) / torch.tensor([0.5, 3.0])  # tiny_flow's statistics
    noise = torch.randn(target.shape, generator=noise_and_time)

    def oracle(obs, noisy, t):
        velocity = target - noise
        velocity[:, 3] += 50.0  # wrong on the padded step only
        return velocity

    assert policy.loss(data, forward=oracle, generator=torch.Generator().manual_seed(0)) == 0.0


def test_beta_time_sampling_weights_the_noisy_end() -> None:
    generator = torch.Generator().manual_seed(0)
    uniform = tiny_flow().sample_time(20000, generator, None)
    beta = tiny_flow(time_sampling="beta").sample_time(20000, generator, None)
    assert 0.0 <= uniform.min() and uniform.max() < 1.0 and uniform.mean() == pytest.approx(0.5, abs=0.01)
    assert 0.0 <= beta.min() and beta.max() <= 0.999
    assert beta.mean() == pytest.approx(0.999 * 0.4, abs=0.01)  # E[1 - u] = 1 - 3/5 for u ~ Beta(1.5, 1)
    assert (beta < 0.5).float().mean() > 0.6


@pytest.mark.parametrize("options, message", [
    ({"head_depth": 0}, r"head_depth >= 1"),
    ({"time_dim": 7}, r"time_dim must be even and >= 2, got 7"),
    ({"time_sampling": "logit"}, r"unknown time_sampling 'logit'; valid: uniform, beta"),
    ({"flow_steps": 0}, r"flow_steps >= 1"),
    ({"width": 0}, r"invalid MLP config"),
])
def test_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy("flow-mlp", 6, 2, **options)


def test_registry_lists_the_flow_policies_with_their_trunk_options() -> None:
    assert {"flow-mlp", "flow-transformer"} <= set(POLICIES)
    with pytest.raises(ValueError, match=r"policy 'flow-mlp' has no option\(s\) d_model; valid: width, depth, "
                                         r"dropout, head_width, head_depth, time_dim, time_sampling, flow_steps"):
        make_policy("flow-mlp", 6, 2, d_model=8)


@pytest.mark.parametrize("name", list(TINY))
def test_dopr_preconditions_every_linear_of_trunk_and_head(name: str) -> None:
    policy = tiny_flow(name).train()
    optimizer = DoPr(policy, base="adamw", lr=1e-3)
    rows = {r["parameter"]: r["preconditioning"] for r in optimizer.coverage()}
    linears = [n for n, m in policy.named_modules() if isinstance(m, torch.nn.Linear)]
    assert any(n.startswith("trunk.") for n in linears) and any(n.startswith("velocity.") for n in linears)
    for layer in linears:
        assert rows[f"{layer}.weight"] == "AP + adamw" and rows[f"{layer}.bias"] == "AP + adamw", layer
    assert f"{len(linears)} linear layers hooked" in optimizer.format_coverage()
    # One training step: every hooked layer saw a training-mode forward (its statistics are those of
    # the training distribution of t), none fell back to the raw gradient.
    loss = policy.loss(batch())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    numerics = optimizer.numerics()
    assert numerics["layer_steps"] == len(linears) and numerics["skipped"] == 0


# ---------------------------------------------------------------------------------------------------
# Training, validation, resume, checkpoints, CLI


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), out=str(out), policy="flow-mlp", optimizer="adamw", steps=30, batch_size=32,
                    lr=3e-3, warmup_steps=5, val_every=10, checkpoint_every=10, log_every=10, chunk=2,
                    policy_options=TINY["flow-mlp"])
    settings.update(overrides)
    return TrainConfig(**settings)


def logged(run_dir: Path, key: str) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line[key] for line in lines if key in line]


def test_training_logs_the_sampled_error_as_val_loss_and_the_flow_loss(reach_demos: Path, tmp_path: Path) -> None:
    result = train(tiny_config(reach_demos, tmp_path / "run", optimizer="dopr-adamw"), progress=False)
    val_loss, flow_loss = logged(result.run_dir, "val_loss"), logged(result.run_dir, "val_flow_loss")
    assert len(val_loss) == len(flow_loss) == 3 and result.final_val_loss == val_loss[-1]
    assert val_loss != flow_loss and all(np.isfinite(val_loss + flow_loss))
    # A fixed generator: the same policy gives the same numbers on every call.
    windows = demos.load(reach_demos).windows("valid", history=1, chunk=2)
    assert validation_metrics(result.policy, windows) == validation_metrics(result.policy, windows)
    assert set(validation_metrics(result.policy, windows)) == {"val_loss", "val_flow_loss"}

    raw = torch.load(result.run_dir / "checkpoint.pt", weights_only=True)
    assert raw["policy"]["name"] == "flow-mlp" and raw["policy"]["config"]["flow_steps"] == 10
    policy = policy_from_checkpoint(raw)
    assert type(policy).__name__ == "FlowMLPPolicy" and policy.config == result.policy.config
    actions = policy.predict(torch.zeros(3, 1, 18), generator=torch.Generator().manual_seed(0))
    assert actions.shape == (3, 2, 3) and torch.isfinite(actions).all()


class Interrupt(Exception):
    """Stands in for a kill between two checkpoints."""


@pytest.mark.parametrize("name", list(TINY))
def test_resume_after_a_kill_reaches_the_same_weights(reach_demos: Path, tmp_path: Path, name: str) -> None:
    # The flow loss draws x_0 and t from the global RNG, which the checkpoint carries.
    config = tiny_config(reach_demos, tmp_path / "whole", policy=name, optimizer="dopr-adamw", steps=20,
                         history=2 if name == "flow-transformer" else 1, policy_options={**TINY[name], "dropout": 0.1})
    whole = train(config, progress=False)
    killed = replace(config, out=str(tmp_path / "killed"))

    def kill_at_15(policy, step: int) -> dict:
        if step == 15:
            raise Interrupt
        return {}

    with pytest.raises(Interrupt):
        train(killed, evaluator=kill_at_15, evaluate_every=5, progress=False)
    assert load_checkpoint(tmp_path / "killed")["step"] == 10
    resumed = train(killed, resume=True, progress=False)
    final_whole, final_resumed = load_checkpoint(whole.run_dir), load_checkpoint(resumed.run_dir)
    for key in ("model", "ema"):
        for parameter, value in final_whole[key].items():
            assert torch.equal(value, final_resumed[key][parameter]), f"{key}.{parameter}"
    for key in ("train_loss", "val_loss", "val_flow_loss"):
        assert logged(whole.run_dir, key) == logged(resumed.run_dir, key)


def test_cli_trains_and_evaluates_a_flow_policy(reach_demos: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(reach_demos), "--out", str(run_dir), "--policy", "flow-transformer",
                 "--steps", "10", "--batch-size", "16", "--history", "2", "--chunk", "2", "--no-progress",
                 "--policy-options", json.dumps({**TINY["flow-transformer"], "flow_steps": 3})]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run_dir), "--episodes", "2", "--num-envs", "2", "--out", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint"]["policy"] == "flow-transformer" and len(result["records"]) == 2
    assert result["validation"]["val_loss"] == logged(run_dir, "val_loss")[-1]
    assert "success rate" in capsys.readouterr().out


def test_flow_steps_at_evaluation_time(tmp_path) -> None:
    """`eval --flow-steps N` samples with N Euler steps (recorded in eval.json); a regressor refuses it."""
    import json

    import demos
    from dopr_robot.cli import main

    data = tmp_path / "reach.hdf5"
    demos.collect("Reach-v0", 3, data, seed=0, progress=False)
    for policy in ("flow-mlp", "mlp"):
        assert main(["train", "--data", str(data), "--out", str(tmp_path / policy), "--policy", policy, "--steps", "4",
                     "--batch-size", "8", "--policy-options", '{"width": 16, "depth": 1}', "--no-progress"]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(tmp_path / "flow-mlp"), "--episodes", "2", "--num-envs", "2",
                 "--flow-steps", "3", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["checkpoint"]["flow_steps"] == 3
    assert main(["eval", "--checkpoint", str(tmp_path / "mlp"), "--episodes", "2", "--flow-steps", "3",
                 "--no-progress"]) == 2
