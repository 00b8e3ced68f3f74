"""Intervals against known numbers, seeded (reproducible) bootstrap, the history-padding helper, and
J_traj, time to divergence and deviation_at on hand-built trajectories."""

from __future__ import annotations

import math

import numpy as np
import pytest

from demos.history import history_indices, history_window
from dopr_robot.evaluate.metrics import (
    DIVERGENCE_C,
    bootstrap_interval,
    closed_loop_summary,
    compounding_summary,
    deviation_at,
    deviation_band,
    divergence_summary,
    divergence_threshold,
    episode_compounding,
    wilson_interval,
)
from dopr_robot.evaluate.rollout import Trajectory


@pytest.mark.parametrize("successes, n, expected", [
    (8, 10, (0.4902, 0.9433)),
    (0, 10, (0.0, 0.2775)),
    (10, 10, (0.7225, 1.0)),
    (50, 100, (0.4038, 0.5962)),
])
def test_wilson_interval_known_values(successes: int, n: int, expected: tuple[float, float]) -> None:
    assert wilson_interval(successes, n) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(0, 0)


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = np.random.default_rng(1).normal(3.0, 1.0, size=40)
    first, second = bootstrap_interval(values, seed=7), bootstrap_interval(values, seed=7)
    assert first == second and first != bootstrap_interval(values, seed=8)
    low, high = first
    assert low < values.mean() < high
    # about the normal-theory interval for a mean of 40 draws of sd ~1
    assert high - low == pytest.approx(2 * 1.96 * values.std(ddof=1) / math.sqrt(40), rel=0.15)
    assert bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_ratio_bootstrap_of_zero_over_zero_is_nan_without_warnings() -> None:
    with np.errstate(all="raise"):
        low, high = bootstrap_interval(np.zeros((5, 2)), statistic=lambda r: r.mean(1)[:, 0] / np.where(
            r.mean(1)[:, 1] == 0, np.nan, r.mean(1)[:, 1]))
    assert math.isnan(low) and math.isnan(high)


def test_closed_loop_summary() -> None:
    records = [{"success": i < 8, "return": float(i), "length": 10} for i in range(10)]
    summary = closed_loop_summary(records)
    assert summary["n"] == 10 and summary["success_rate"] == 0.8
    assert summary["success_ci"] == pytest.approx([0.4902, 0.9433], abs=1e-4)
    assert summary["mean_return"] == 4.5 and summary["return_ci"][0] < 4.5 < summary["return_ci"][1]


def test_deviation_band_handles_different_lengths() -> None:
    curve = deviation_band([np.array([0.0, 1.0, 2.0]), np.array([0.0, 3.0])])
    assert curve["n"] == [2, 2, 1] and curve["mean"] == [0.0, 2.0, 2.0]
    assert curve["lo"][2] == curve["hi"][2] == 2.0  # one episode: no spread to report


# -- history padding: one helper for training windows, relabelling and (see test_evaluate_rollout) the controller


HISTORY_CASES = [(1, 1), (5, 1), (5, 3), (3, 5), (4, 4), (2, 10), (0, 3), (9, 2)]


@pytest.mark.parametrize("length, history", HISTORY_CASES)
def test_history_indices_follow_the_definition(length: int, history: int) -> None:
    # The definition, step by step: at step t the policy sees steps t-H+1 .. t, oldest first, and
    # a step before the episode's start is its first step.
    expected = [[max(t - back, 0) for back in reversed(range(history))] for t in range(length)]
    np.testing.assert_array_equal(history_indices(length, history), np.array(expected, dtype=int).reshape(length, history))


def test_history_indices_by_hand() -> None:
    np.testing.assert_array_equal(history_indices(5, 3), [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]])
    np.testing.assert_array_equal(history_indices(2, 1), [[0], [1]])


def test_history_window_equals_the_dataset_windows_it_replaced() -> None:
    lengths = np.array([3, 1, 6])  # episodes of different lengths, flattened as DemoDataset.windows does
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    for history in (1, 2, 4, 8):
        index, real = history_window(step, history)
        for row, t in enumerate(step):  # the definition, one window at a time
            past = [t - back for back in reversed(range(history))]
            assert list(index[row]) == [max(p, 0) for p in past] and list(real[row]) == [p >= 0 for p in past]


def test_history_indices_pad_with_the_first_observation_by_hand() -> None:
    obs = np.array([[10.0], [11.0], [12.0]])
    np.testing.assert_array_equal(obs[history_indices(3, 4)][..., 0],
                                  [[10, 10, 10, 10], [10, 10, 10, 11], [10, 10, 11, 12]])
    with pytest.raises(ValueError, match="history must be"):
        history_indices(3, 0)


# -- J_traj, time to divergence and deviation_at on hand-built trajectories


def trajectory(obs: list[float], actions: list[float], terminated: bool = False, success_at_end: bool = False,
               seed: int = 0) -> Trajectory:
    """A 1-D episode; ``obs`` has one more entry than ``actions``."""
    success = np.zeros(len(actions), dtype=bool)
    success[-1] = success_at_end
    return Trajectory(seed=seed, obs=np.array(obs)[:, None], actions=np.array(actions)[:, None],
                      rewards=np.zeros(len(actions)), success=success, terminated=terminated,
                      truncated=not terminated)


def compounding(policy: Trajectory, expert: Trajectory, threshold: float | None = None, obs_std: float = 1.0,
                act_std: float = 1.0) -> dict:
    zeros_p, zeros_e = np.zeros((policy.length, 1)), np.zeros((expert.length, 1))
    return episode_compounding(policy, expert, np.zeros(1), np.array([obs_std]), np.array([act_std]),
                               zeros_p, zeros_p, zeros_e, zeros_e, threshold=threshold)


def test_j_traj_when_the_policy_terminates_before_the_expert() -> None:
    policy = trajectory([0.0, 0.1, 2.0, 0.3], [0.1, 0.2, 0.3], terminated=True)  # Tp = 3
    expert = trajectory([0.0] * 6, [0.0] * 5)  # Te = 5
    # t=0: 0^2 + 0.1^2 = 0.01; t=1: 0.1^2 + 0.2^2 = 0.05; t=2: min(1, 2^2 + 0.3^2) = 1; steps 3, 4 only
    # the expert reaches: 1 each.
    assert compounding(policy, expert)["j_traj"] == pytest.approx(0.01 + 0.05 + 1.0 + 2.0)
    # units: with obs std 2 and action std 0.5 the same trajectories give (dx/2)^2 + (du/0.5)^2
    expected = (0 + 0.04) + (0.0025 + 0.16) + min(1.0, 1.0 + 0.36) + 2.0
    assert compounding(policy, expert, obs_std=2.0, act_std=0.5)["j_traj"] == pytest.approx(expected)


def test_j_traj_when_the_expert_terminates_before_the_policy() -> None:
    policy = trajectory([0.0, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0, 0.0, 0.0])  # Tp = 6
    expert = trajectory([0.0, 0.0, 0.0], [0.0, 0.1], terminated=True)  # Te = 2
    # t=0: 0 + 0^2 = 0; t=1: 0.2^2 + (0.5 - 0.1)^2 = 0.2; steps 2..5 only the policy reaches: 4 x 1.
    assert compounding(policy, expert)["j_traj"] == pytest.approx(0.0 + 0.2 + 4.0)


def test_time_to_divergence_first_crossing() -> None:
    policy = trajectory([0.0, 0.5, 1.0, 2.5, 1.0, 3.0], [0.0] * 5)
    expert = trajectory([0.0] * 6, [0.0] * 5)
    result = compounding(policy, expert, threshold=2.0)
    assert (result["time_to_divergence"], result["diverged"]) == (3, True)  # 2.5 > 2 at t = 3, not 3.0 at t = 5
    assert compounding(policy, expert, threshold=1.0)["time_to_divergence"] == 3  # 1.0 is not > 1.0
    assert compounding(policy, expert, threshold=0.4)["time_to_divergence"] == 1


def test_time_to_divergence_is_censored_at_the_length_when_never_crossed() -> None:
    policy = trajectory([0.0, 0.5, 1.0, 0.5], [0.0] * 3)
    expert = trajectory([0.0] * 4, [0.0] * 3)
    result = compounding(policy, expert, threshold=2.0)
    assert (result["time_to_divergence"], result["diverged"]) == (3, False)
    # the expert fell first (terminated at 2), the policy went on to 3 without crossing: censored at 3
    fell = trajectory([0.0, 0.0, 0.0], [0.0] * 2, terminated=True)
    assert (compounding(policy, fell, threshold=2.0)["time_to_divergence"],
            compounding(policy, fell, threshold=2.0)["diverged"]) == (3, False)


def test_a_policy_that_falls_before_the_expert_diverges_when_it_falls() -> None:
    expert = trajectory([0.0] * 6, [0.0] * 5)
    fell = trajectory([0.0, 0.1, 0.2], [0.0] * 2, terminated=True)  # below the threshold, ended at 2 of 5
    result = compounding(fell, expert, threshold=2.0)
    assert (result["time_to_divergence"], result["diverged"]) == (2, True)
    # a crossing before the fall counts first
    crossed = trajectory([0.0, 3.0, 0.2], [0.0] * 2, terminated=True)
    assert compounding(crossed, expert, threshold=2.0)["time_to_divergence"] == 1
    # ended early by success (terminate_on_success): not a divergence, censored at the longer episode
    done = trajectory([0.0, 0.1, 0.0], [0.0] * 2, terminated=True, success_at_end=True)
    result = compounding(done, expert, threshold=2.0)
    assert (result["time_to_divergence"], result["diverged"]) == (5, False)


def test_the_default_threshold_scales_with_the_observation_dimension() -> None:
    assert divergence_threshold(16) == pytest.approx(4 * DIVERGENCE_C)
    policy = trajectory([0.0, 0.5 * DIVERGENCE_C, 1.5 * DIVERGENCE_C], [0.0] * 2)
    expert = trajectory([0.0] * 3, [0.0] * 2)
    assert compounding(policy, expert)["threshold"] == pytest.approx(DIVERGENCE_C)  # D = 1
    assert compounding(policy, expert)["time_to_divergence"] == 2


def test_divergence_summary_restricted_mean_and_wilson() -> None:
    per_episode = [{"time_to_divergence": t, "diverged": d, "threshold": 2.0}
                   for t, d in [(3, True), (10, False), (5, True), (10, False)]]
    summary = divergence_summary(per_episode, horizon=10)
    assert summary["mean"] == pytest.approx((3 + 10 + 5 + 10) / 4)
    assert summary["ci"][0] <= summary["mean"] <= summary["ci"][1]
    assert summary["diverged_fraction"] == 0.5
    assert summary["diverged_ci"] == pytest.approx(list(wilson_interval(2, 4)))
    assert summary["threshold"] == 2.0 and summary["horizon"] == 10


def test_deviation_at_fixed_fractions_of_the_horizon() -> None:
    full, short = np.arange(11.0), 2.0 * np.arange(5.0)  # pairs of 10 steps and of 4 steps
    result = deviation_at([full, short], horizon=10)
    assert list(result) == ["0.1", "0.25", "0.5", "1.0"]
    assert [result[f]["t"] for f in result] == [1, 3, 5, 10]  # 2.5 rounds up to 3
    # the shorter pair holds its last common step (t = 4, deviation 8) past its end
    assert [result[f]["mean"] for f in result] == pytest.approx([(1 + 2) / 2, (3 + 6) / 2, (5 + 8) / 2, (10 + 8) / 2])
    assert [result[f]["n_reached"] for f in result] == [2, 2, 1, 1]
    for entry in result.values():
        assert entry["ci"][0] <= entry["mean"] <= entry["ci"][1]
    assert deviation_at([full], horizon=150)["0.25"]["t"] == 38


def test_compounding_summary_has_the_keys_reports_read() -> None:
    expert = trajectory([0.0] * 5, [0.0] * 4)
    per_episode = [compounding(trajectory([0.0, x, 2 * x, 3 * x, 4 * x], [0.0] * 4, seed=i), expert, threshold=1.0)
                   for i, x in enumerate([0.1, 0.3, 0.5])]
    summary = compounding_summary(per_episode, horizon=4)
    assert set(summary["time_to_divergence"]) >= {"mean", "ci", "threshold", "diverged_fraction", "diverged_ci",
                                                  "horizon"}
    assert summary["time_to_divergence"]["mean"] == pytest.approx((4 + 4 + 3) / 3)  # 0.5: 1.5 > 1 at t = 3
    assert set(summary["deviation_at"]) == {"0.1", "0.25", "0.5", "1.0"}
    assert set(summary["deviation_at"]["0.5"]) >= {"t", "mean", "ci"}
    assert summary["deviation_at"]["1.0"]["mean"] == pytest.approx((0.4 + 1.2 + 2.0) / 3)
    assert "action_error_ratio" in summary
