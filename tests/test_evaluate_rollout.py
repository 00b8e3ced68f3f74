"""Rollouts: every seed exactly once, seed order, K-invariance, history/chunk handling (held to the
shared padding helper), and the compounding-error metrics (J_traj, action errors, time to
divergence, early falls) against closed-form answers on a linear system."""

from __future__ import annotations

import itertools
import math

import gymnasium
import numpy as np
import pytest
import torch

from dopr_robot.config import EvalConfig
from dopr_robot.errors import UserError
from dopr_robot.evaluate import evaluate, policy_actions
from dopr_robot.evaluate.metrics import DIVERGENCE_C
from dopr_robot.evaluate.rollout import ExpertController, PolicyController, rollout
from envs.rollout import run_episodes
from policies import Policy, make_policy


class LineEnv(gymnasium.Env):
    """x_{t+1} = x_t + u_t in 1-D. Reset seed s: x_0 = 1 + 0.25 (s mod 5), horizon 3 + (s mod 4)
    (episodes of different lengths); terminated when |x| > ``limit``; success while |x| < 0.05."""

    metadata = {"render_modes": []}

    def __init__(self, limit: float = math.inf):
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float64)
        self.action_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.limit = limit

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        assert seed is not None, "evaluation must reset every episode with its own seed"
        self.x, self.t, self.horizon = 1.0 + 0.25 * (seed % 5), 0, 3 + seed % 4
        return np.array([self.x]), {"is_success": abs(self.x) < 0.05}

    def step(self, action):
        self.x += float(action[0])
        self.t += 1
        info = {"is_success": abs(self.x) < 0.05}
        return np.array([self.x]), -abs(self.x), abs(self.x) > self.limit, self.t >= self.horizon, info


def horizon(seed: int) -> int:
    return 3 + seed % 4


def x0(seed: int) -> float:
    return 1.0 + 0.25 * (seed % 5)


class LinearExpert:
    def __init__(self, gain: float):
        self.gain = gain

    def act(self, obs: np.ndarray) -> np.ndarray:
        return -self.gain * np.asarray(obs, dtype=np.float64)


class LinearPolicy(Policy):
    """pi(x) = -gain x + offset in raw units, through the normalizers (obs std sx, action std su)."""

    def __init__(self, gain: float, offset: float, sx: float = 2.0, su: float = 0.5, history: int = 1, chunk: int = 1):
        super().__init__(1, 1, history, chunk)
        self.gain, self.offset = gain, offset
        self.obs_normalizer.set_statistics([0.3], [sx])
        self.action_normalizer.set_statistics([0.0], [su])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.obs_normalizer.unnormalize(obs[:, -1])  # (B, 1) raw
        u = self.action_normalizer.normalize(-self.gain * x + self.offset)
        return u[:, None, :].expand(-1, self.chunk, -1)


def test_every_seed_once_in_order_with_its_own_length() -> None:
    seeds = list(range(10, 23))
    seen = []
    runs = rollout(LineEnv, lambda k: ExpertController(LinearExpert(0.5), 1), seeds, num_envs=4,
                   on_episode=lambda t: seen.append(t.seed))
    assert [t.seed for t in runs] == seeds and sorted(seen) == seeds
    assert [t.length for t in runs] == [horizon(s) for s in seeds]
    for t in runs:
        assert t.obs[0, 0] == x0(t.seed) and t.obs.shape == (t.length + 1, 1)
        np.testing.assert_allclose(t.obs[-1, 0], x0(t.seed) * 0.5 ** t.length, rtol=1e-6)
        assert t.truncated and not t.terminated


def test_only_the_episodes_asked_for_are_reset_and_stepped() -> None:
    calls = {"reset": [], "step": 0}

    class CountingEnv(LineEnv):
        def reset(self, *, seed=None, options=None):
            calls["reset"].append(seed)
            return super().reset(seed=seed, options=options)

        def step(self, action):
            calls["step"] += 1
            return super().step(action)

    seeds = list(range(3, 10))
    rollout(CountingEnv, lambda k: ExpertController(LinearExpert(0.5), 1), seeds, num_envs=3)
    assert sorted(calls["reset"]) == seeds and calls["step"] == sum(horizon(s) for s in seeds)


class OffsetExpert(ExpertController):
    """Means the linear expert's action, executes it plus 1: ``labels`` say what it meant."""

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        self.labels = super().act(obs, active)
        return self.labels + 1.0


def test_seeds_are_read_lazily_a_run_can_stop_early_and_labels_are_recorded() -> None:
    read = []

    def seeds():  # endless: the loop must read one seed per started episode, no more
        for seed in itertools.count(10):
            read.append(seed)
            yield seed

    runs = run_episodes(LineEnv, lambda k: OffsetExpert(LinearExpert(0.5), 1), seeds(), num_envs=1)
    first = [trajectory for _, trajectory in itertools.islice(runs, 3)]
    runs.close()
    assert [t.seed for t in first] == [10, 11, 12] and read == [10, 11, 12]
    for t in first:
        np.testing.assert_array_equal(t.labels, (-0.5 * t.obs[:-1]).astype(np.float32))  # meant, at each state
        np.testing.assert_array_equal(t.actions, t.labels + 1.0)  # executed
        np.testing.assert_allclose(t.obs[1:], t.obs[:-1] + t.actions, rtol=1e-6)
    assert rollout(LineEnv, lambda k: ExpertController(LinearExpert(0.5), 1), [3], 1)[0].labels is None


def test_terminated_episodes_end_early_and_report_time_to_failure() -> None:
    # u = +1 per step: x0 = 1.0 .. 1.5 pass |x| > 2.6 on step 2, x0 = 1.75, 2.0 on step 1 (horizons 3..6).
    policy = LinearPolicy(gain=0.0, offset=1.0)
    result = evaluate(policy, "line", EvalConfig(episodes=8, seed=0, num_envs=3, with_expert=False),
                      make_env=lambda: LineEnv(limit=2.6))
    for record in result.records:
        steps_to_fail = math.floor(2.6 - x0(record["seed"])) + 1
        expected = min(steps_to_fail, horizon(record["seed"]))
        assert record["length"] == expected
        assert record["time_to_failure"] == (expected if steps_to_fail <= horizon(record["seed"]) else None)
    assert result.closed_loop["n"] == 8 and result.env_steps == sum(r["length"] for r in result.records)


def test_same_seed_same_result_and_num_envs_does_not_matter() -> None:
    torch.manual_seed(0)
    policy = make_policy("mlp", 1, 1, history=2, chunk=3, width=16, depth=1)
    runs = [evaluate(policy, "line", EvalConfig(episodes=9, seed=5, num_envs=k, actions_per_chunk=2), make_env=LineEnv,
                     expert=LinearExpert(0.5)) for k in (3, 3, 1)]
    assert runs[0].to_dict()["records"] == runs[1].to_dict()["records"]
    for a, b in zip(runs[0].records, runs[2].records):  # batch size changes float32 rounding only
        assert a.keys() == b.keys() and a["seed"] == b["seed"] and a["length"] == b["length"]
        for key in ("return", "j_traj", "action_error_on_policy", "action_error_on_expert"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)


class RecordingPolicy(Policy):
    """Chunk row j = (the history, oldest first) + 100 j: shows what the controller fed and executed."""

    def __init__(self, history: int, chunk: int):
        super().__init__(1, history, history, chunk)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(self.chunk, dtype=obs.dtype)[None, :, None] * 100.0
        return obs[:, :, 0][:, None, :] + rows


def test_history_is_padded_with_the_first_observation_and_chunks_are_executed() -> None:
    controller = PolicyController(RecordingPolicy(history=3, chunk=3), num_envs=2, actions_per_chunk=2)
    everyone = np.ones(2, dtype=bool)
    controller.reset(everyone, np.array([[1.0], [5.0]]))
    np.testing.assert_array_equal(controller.act(np.array([[1.0], [5.0]]), everyone), [[1, 1, 1], [5, 5, 5]])
    np.testing.assert_array_equal(controller.act(np.array([[2.0], [6.0]]), everyone), [[101, 101, 101], [105, 105, 105]])
    controller.reset(np.array([False, True]), np.array([[0.0], [9.0]]))  # slot 1 starts a new episode
    np.testing.assert_array_equal(controller.act(np.array([[3.0], [9.0]]), everyone), [[1, 2, 3], [9, 9, 9]])
    np.testing.assert_array_equal(controller.act(np.array([[4.0], [10.0]]), everyone), [[101, 102, 103], [109, 109, 109]])
    with pytest.raises(UserError, match="actions-per-chunk"):
        PolicyController(RecordingPolicy(history=1, chunk=2), num_envs=1, actions_per_chunk=3)


def test_compounding_error_of_an_action_offset_matches_the_closed_form() -> None:
    k, c, sx, su = 0.5, 0.1, 2.0, 0.5
    seeds = list(range(7))
    result = evaluate(LinearPolicy(k, c, sx, su), "line", EvalConfig(episodes=len(seeds), seed=0, num_envs=3), make_env=LineEnv,
                      expert=LinearExpert(k))
    # e_t = x^_t - x*_t obeys e_{t+1} = (1 - k) e_t + c, so e_t = c (1 - (1-k)^t) / k; the action
    # difference at step t is -k e_t + c = c (1-k)^t; at any state pi - pi* = c.
    for record in result.records:
        t = np.arange(horizon(record["seed"]))
        e, du = c * (1 - (1 - k) ** t) / k, c * (1 - k) ** t
        assert record["j_traj"] == pytest.approx(np.minimum(1, (e / sx) ** 2 + (du / su) ** 2).sum(), rel=1e-5)
        assert record["action_error_on_policy"] == pytest.approx((c / su) ** 2, rel=1e-5)
        assert record["action_error_on_expert"] == pytest.approx((c / su) ** 2, rel=1e-5)
    curve = result.compounding["state_deviation"]
    t = np.arange(len(curve["t"]))
    np.testing.assert_allclose(curve["mean"], c * (1 - (1 - k) ** t) / k / sx, rtol=1e-5, atol=1e-7)
    assert curve["n"] == [sum(horizon(s) >= step for s in seeds) for step in t]  # shorter episodes drop out
    assert result.compounding["action_error_ratio"]["value"] == pytest.approx(1.0, rel=1e-5)


def test_action_error_ratio_of_a_wrong_gain_matches_the_closed_form() -> None:
    k, k_policy, su = 0.5, 0.2, 0.5
    seeds = list(range(8))
    result = evaluate(LinearPolicy(k_policy, 0.0, su=su), "line", EvalConfig(episodes=len(seeds), seed=0, num_envs=4),
                      make_env=LineEnv, expert=LinearExpert(k))
    # The error at state x is ((k - k') x / su)^2; the policy visits x0 (1-k')^t, the expert x0 (1-k)^t.
    on_policy, on_expert = [], []
    for s in seeds:
        t = np.arange(horizon(s))
        on_policy.append(np.mean(((k - k_policy) * x0(s) * (1 - k_policy) ** t / su) ** 2))
        on_expert.append(np.mean(((k - k_policy) * x0(s) * (1 - k) ** t / su) ** 2))
    compounding = result.compounding
    assert compounding["action_error_on_policy"]["mean"] == pytest.approx(np.mean(on_policy), rel=1e-5)
    assert compounding["action_error_on_expert"]["mean"] == pytest.approx(np.mean(on_expert), rel=1e-5)
    assert compounding["action_error_ratio"]["value"] == pytest.approx(np.mean(on_policy) / np.mean(on_expert), rel=1e-5)
    assert compounding["action_error_ratio"]["value"] > 1.5  # the policy drifts to states where it errs more


class ExpertAsPolicy(Policy):
    """The expert behind the Policy interface (predict on raw observations)."""

    def __init__(self, expert, obs_dim: int, act_dim: int):
        super().__init__(obs_dim, act_dim, 1, 1)
        self.expert = expert

    def predict(self, obs_history: torch.Tensor, generator=None) -> torch.Tensor:
        return torch.as_tensor(self.expert.act(obs_history[:, -1].numpy()))[:, None, :]


def test_the_expert_as_policy_has_zero_compounding_error() -> None:
    import envs

    policy = ExpertAsPolicy(envs.make_expert("Reach-v0"), 18, 3)
    result = evaluate(policy, "Reach-v0", EvalConfig(episodes=3, seed=0, num_envs=2), env_kwargs={"horizon": 15})
    compounding = result.compounding
    assert max(compounding["state_deviation"]["mean"]) == 0.0
    assert compounding["j_traj"]["mean"] == 0.0
    assert compounding["action_error_on_policy"]["mean"] == 0.0
    assert compounding["action_error_on_expert"]["mean"] == 0.0
    assert [r["return"] for r in result.records] == [r["expert_return"] for r in result.records]
    divergence = compounding["time_to_divergence"]
    assert divergence["diverged_fraction"] == 0.0 and divergence["mean"] == 15 and divergence["horizon"] == 15
    assert [entry["t"] for entry in compounding["deviation_at"].values()] == [2, 4, 8, 15]  # of the 15-step horizon
    assert all(entry["mean"] == 0.0 for entry in compounding["deviation_at"].values())


@pytest.mark.parametrize("length, history", [(1, 1), (5, 1), (5, 3), (3, 5), (2, 10), (6, 6)])
def test_controller_history_follows_the_definition(length: int, history: int) -> None:
    # The controller keeps an incremental buffer; it must feed what training windows and policy_actions
    # index with demos.history.history_indices. RecordingPolicy's chunk row 0 is the history it was fed.
    obs = np.arange(1.0, length + 1.0)[:, None]
    controller = PolicyController(RecordingPolicy(history=history, chunk=1), num_envs=1)
    everyone = np.ones(1, dtype=bool)
    controller.reset(everyone, obs[:1])
    fed = [controller.act(obs[t:t + 1], everyone)[0] for t in range(length)]
    # step t sees observations t-H+1 .. t, oldest first, the first one standing in before the start
    expected = [[obs[max(t - back, 0), 0] for back in reversed(range(history))] for t in range(length)]
    np.testing.assert_array_equal(np.stack(fed), np.array(expected).reshape(length, history))


def test_policy_actions_pads_histories_like_the_controller() -> None:
    observations = [np.arange(1.0, 5.0)[:, None], np.array([[7.0]])]
    actions = policy_actions(RecordingPolicy(history=3, chunk=2), observations)
    np.testing.assert_array_equal(actions, [[1, 1, 1], [1, 1, 2], [1, 2, 3], [2, 3, 4], [7, 7, 7]])


def test_time_to_divergence_of_a_drifting_policy_matches_the_hand_count() -> None:
    # Policy u = +1 (x^_t = x0 + t), expert u = -0.5 x (x*_t = x0 0.5^t); obs std 2, D = 1, so the pair
    # has diverged at the first t with (x0 + t - x0 0.5^t) / 2 > tau = DIVERGENCE_C.
    seeds = list(range(8))
    result = evaluate(LinearPolicy(gain=0.0, offset=1.0, sx=2.0), "line", EvalConfig(episodes=len(seeds), seed=0, num_envs=3),
                      make_env=LineEnv, expert=LinearExpert(0.5))
    expected = []
    for record in result.records:
        s = record["seed"]
        crossing = [t for t in range(horizon(s) + 1) if (x0(s) + t - x0(s) * 0.5 ** t) / 2.0 > DIVERGENCE_C]
        expected.append((crossing[0], True) if crossing else (horizon(s), False))
        assert (record["time_to_divergence"], record["diverged"]) == expected[-1]
    assert 0 < sum(d for _, d in expected) < len(seeds)  # some diverged, some censored
    summary = result.compounding["time_to_divergence"]
    assert summary["mean"] == pytest.approx(np.mean([t for t, _ in expected]))
    assert summary["diverged_fraction"] == pytest.approx(np.mean([d for _, d in expected]))
    assert summary["threshold"] == pytest.approx(DIVERGENCE_C) and summary["horizon"] == max(map(horizon, seeds))
    metrics = result.metrics()
    assert metrics["eval_time_to_divergence"] == summary["mean"]
    assert metrics["eval_diverged_fraction"] == summary["diverged_fraction"]
    assert {"eval_deviation_at_10pct", "eval_deviation_at_25pct", "eval_deviation_at_50pct",
            "eval_deviation_at_100pct"} <= set(metrics)
    table = result.table()
    assert "time to divergence" in table and "deviation at 50%" in table


def test_a_policy_that_fails_early_diverges_when_it_fails() -> None:
    # u = +1 passes |x| > 2.6 (terminated) on step 2 (x0 <= 1.5) or 1 (x0 >= 1.75); the expert runs its
    # horizon. sx = 100 keeps the deviation under the threshold, so only the fall counts.
    result = evaluate(LinearPolicy(gain=0.0, offset=1.0, sx=100.0), "line", EvalConfig(episodes=8, seed=0, num_envs=3),
                      make_env=lambda: LineEnv(limit=2.6), expert=LinearExpert(0.5))
    for record in result.records:
        assert record["terminated"] and record["length"] < record["expert_length"]
        assert (record["time_to_divergence"], record["diverged"]) == (record["length"], True)
    assert result.compounding["time_to_divergence"]["diverged_fraction"] == 1.0
