"""What an evaluation reports: per-episode records, intervals, and the compounding-error metrics.

Intervals are 95% unless told otherwise:

- success rate: Wilson score interval (good at 0/N and N/N, where the normal one collapses);
- means over episodes (return, J_traj, action errors): percentile bootstrap over episodes with a
  seeded ``numpy.random.Generator`` (never the global RNG), so a result file reproduces exactly;
- the per-step deviation curve: mean +- 1.96 standard errors across the episodes still running.

Compounding error (expert and policy rolled out from the same reset seed, arXiv 2507.09061):
states are scaled by the demo statistics (``(x - obs_mean) / obs_std``), actions by the action
normalizer's std. With ``T`` the longer of the two episodes,

    deviation_t = ||x^_t - x*_t||                         for t while both episodes run
    J_traj      = sum_{t < T} min(1, ||x^_t - x*_t||^2 + ||u^_t - u*_t||^2)

where a step that only one of the two episodes reaches (the other terminated) counts 1, the cap.
Action errors ``||pi(s) - pi*(s)||^2`` (squared norm in normalized action units; the validation
loss is the same quantity divided by the action dimension) are averaged over the states of each
episode, then over episodes: on-policy at the states the policy visits, on-expert at the expert's.
Their ratio is the test-time-feedback shift in one number. ``pi(s)`` is a fresh prediction (first
chunk row) from the observation history ending at ``s``, padded as in training, also when the
rollout executed several actions of each chunk; ``pi*`` is the expert asked at ``s`` (batched).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from dopr_robot.evaluate.rollout import Trajectory

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    denominator = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_interval(values: Sequence[float] | np.ndarray, seed: int = 0, resamples: int = 10_000,
                       level: float = 0.95, statistic: Callable[[np.ndarray], np.ndarray] | None = None
                       ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (episodes resampled with replacement).

    ``values`` ``(N,)`` or ``(N, M)`` (rows resampled together); ``statistic(resampled (R, N, ...)) -> (R,)``
    replaces the mean, e.g. a ratio of two column means. Deterministic for a given ``seed``.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), size=(resamples, len(values)))
    resampled = values[index]
    estimates = statistic(resampled) if statistic is not None else resampled.mean(axis=1)
    estimates = estimates[np.isfinite(estimates)]  # a ratio of zero means is undefined, not an outlier
    if len(estimates) == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(estimates, [tail, 100.0 - tail])
    return float(low), float(high)


def episode_record(trajectory: Trajectory) -> dict[str, Any]:
    """seed, return, length, success (on the final step), first_success_step (1-based steps taken when
    ``is_success`` first held, or None), terminated, time_to_failure (length when the episode
    terminated without success, else None)."""
    success_steps = np.flatnonzero(trajectory.success)
    success = bool(trajectory.success[-1]) if trajectory.length else False
    return {
        "seed": trajectory.seed,
        "return": float(trajectory.rewards.sum()),
        "length": trajectory.length,
        "success": success,
        "first_success_step": int(success_steps[0]) + 1 if len(success_steps) else None,
        "terminated": trajectory.terminated,
        "time_to_failure": trajectory.length if trajectory.terminated and not success else None,
    }


def closed_loop_summary(records: list[dict[str, Any]], bootstrap_seed: int = 0) -> dict[str, Any]:
    """N, success rate with its Wilson interval, mean return with its bootstrap interval, mean length."""
    n = len(records)
    successes = sum(r["success"] for r in records)
    returns = np.array([r["return"] for r in records])
    return {
        "n": n,
        "successes": successes,
        "success_rate": successes / n,
        "success_ci": list(wilson_interval(successes, n)),
        "mean_return": float(returns.mean()),
        "return_ci": list(bootstrap_interval(returns, seed=bootstrap_seed)),
        "mean_length": float(np.mean([r["length"] for r in records])),
    }


def episode_compounding(policy: Trajectory, expert: Trajectory, obs_mean: np.ndarray, obs_std: np.ndarray,
                        act_std: np.ndarray, policy_at_policy: np.ndarray, expert_at_policy: np.ndarray,
                        policy_at_expert: np.ndarray, expert_at_expert: np.ndarray) -> dict[str, Any]:
    """The compounding-error quantities of one seed.

    ``policy_at_policy`` ``(Tp, A)``: the policy's action at each state it visited (fresh prediction);
    ``expert_at_policy`` the expert's there; ``*_at_expert`` ``(Te, A)`` the same at the expert's states.
    Returns the deviation per step (``min(Tp, Te) + 1`` values), J_traj and the two action errors.
    """
    if not np.array_equal(policy.obs[0], expert.obs[0]):
        raise RuntimeError(f"seed {policy.seed}: the policy's and the expert's initial observations differ; "
                           "the task's reset is not determined by its seed")
    steps = min(policy.length, expert.length)
    dx = (policy.obs[: steps + 1] - expert.obs[: steps + 1]) / obs_std  # mean cancels in a difference
    deviation = np.linalg.norm(dx, axis=-1)
    du = (policy.actions[:steps] - expert.actions[:steps]) / act_std
    per_step = np.minimum(1.0, np.sum(dx[:steps] ** 2, axis=-1) + np.sum(du ** 2, axis=-1))
    j_traj = float(per_step.sum()) + abs(policy.length - expert.length)  # unmatched steps count the cap, 1
    on_policy = np.sum(((policy_at_policy - expert_at_policy) / act_std) ** 2, axis=-1)
    on_expert = np.sum(((policy_at_expert - expert_at_expert) / act_std) ** 2, axis=-1)
    return {
        "deviation": deviation,
        "j_traj": j_traj,
        "action_error_on_policy": float(on_policy.mean()) if len(on_policy) else math.nan,
        "action_error_on_expert": float(on_expert.mean()) if len(on_expert) else math.nan,
    }


def deviation_curve(deviations: list[np.ndarray]) -> dict[str, list]:
    """Mean and 95% interval (mean +- 1.96 SE) of the per-step deviation across episodes, at each
    ``t`` that at least one episode pair reaches; ``n`` says how many do (episodes differ in length)."""
    longest = max(len(d) for d in deviations)
    table = np.full((len(deviations), longest), np.nan)
    for row, d in zip(table, deviations):
        row[: len(d)] = d
    n = np.sum(~np.isnan(table), axis=0)
    mean = np.nanmean(table, axis=0)
    sd = np.array([np.nanstd(column, ddof=1) if count > 1 else 0.0 for column, count in zip(table.T, n)])
    half = Z95 * sd / np.sqrt(n)
    return {"t": list(range(longest)), "mean": mean.tolist(), "lo": (mean - half).tolist(),
            "hi": (mean + half).tolist(), "n": n.tolist()}


def compounding_summary(per_episode: list[dict[str, Any]], bootstrap_seed: int = 0) -> dict[str, Any]:
    """Aggregate :func:`episode_compounding` results over episodes (intervals over episodes)."""
    j = np.array([e["j_traj"] for e in per_episode])
    errors = np.array([[e["action_error_on_policy"], e["action_error_on_expert"]] for e in per_episode])

    def ratio(resampled: np.ndarray) -> np.ndarray:
        means = resampled.mean(axis=1)  # (R, 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            return means[:, 0] / means[:, 1]

    on_policy, on_expert = errors.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_value = float(np.float64(on_policy) / np.float64(on_expert))
    return {
        "state_deviation": deviation_curve([e["deviation"] for e in per_episode]),
        "j_traj": {"mean": float(j.mean()), "ci": list(bootstrap_interval(j, seed=bootstrap_seed))},
        "action_error_on_policy": {"mean": float(on_policy),
                                   "ci": list(bootstrap_interval(errors[:, 0], seed=bootstrap_seed))},
        "action_error_on_expert": {"mean": float(on_expert),
                                   "ci": list(bootstrap_interval(errors[:, 1], seed=bootstrap_seed))},
        "action_error_ratio": {"value": ratio_value,
                               "ci": list(bootstrap_interval(errors, seed=bootstrap_seed, statistic=ratio))},
        "units": "states (x - obs_mean) / obs_std, actions u / act_std (the policy's normalizers); "
                 "action errors are squared norms (validation loss = that / act_dim)",
    }
