"""What an evaluation reports: per-episode records, intervals, and the compounding-error metrics.

Intervals are 95% unless told otherwise:

- success rate: Wilson score interval (good at 0/N and N/N, where the normal one collapses);
- means over episodes (return, J_traj, action errors): percentile bootstrap over episodes with a
  seeded ``numpy.random.Generator`` (never the global RNG), so a result file reproduces exactly
  (:func:`bootstrap_interval`; reports over several training seeds resample the seeds first,
  :func:`cluster_bootstrap`);
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
Their ratio, ``action_error_ratio``, is the test-time-feedback shift in one number. ``pi(s)`` is a
fresh prediction (first chunk row) from the observation history ending at ``s``, padded as in
training (:mod:`demos.history`), also when the rollout executed several actions of each chunk;
``pi*`` is the expert asked at ``s`` (batched).

J_traj saturates when every policy drifts far (each step counts at most 1; on Push-v0 BC policies
score 130-136 of 150 whatever the optimizer), so two summaries that keep separating policies there:

- time to divergence ``T_div``: the first ``t`` with ``deviation_t > tau``, ``tau = c sqrt(D)``
  (``c`` = :data:`DIVERGENCE_C` = 2, ``D`` the observation dimension). Each coordinate of the
  normalized state has unit spread over the demonstrations, so ``sqrt(D)`` is the scale of the
  distance between two demonstration states (two unrelated ones lie about ``1.33 sqrt(D)`` apart on
  Push-v0 and Reach-v0), and ``tau`` means the same on every task: the policy is farther from the
  expert than another demonstration would be. A policy episode that
  ends by termination without success while the expert's goes on (the robot fell) diverges at its
  last step. An episode pair that never diverges is right-censored at ``T``, the longer of the two
  episodes (the horizon unless both ended early). Reported: the restricted mean of
  ``min(T_div, T)`` over episodes (bootstrap interval) and the fraction that diverged (Wilson).
- deviation at fixed fractions of the task's horizon ``H`` (``t = round(f H)``, halves up, for f in
  :data:`DEVIATION_FRACTIONS`): each episode's ``deviation_t``, or its value at the last step both
  episodes reached when the pair ended earlier; mean over episodes with a bootstrap interval.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from dopr_robot.evaluate.rollout import Trajectory

Z95 = 1.959963984540054  # two-sided 95% normal quantile
LEVEL = 0.95  # of every interval
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # each bootstrap draws from its own generator seeded with this (never the global RNG)
# tau = DIVERGENCE_C * sqrt(obs_dim), normalized state units. Two unrelated demonstration states lie
# about 1.33 sqrt(D) apart (Push-v0 and Reach-v0 alike), so tau is 1.5x that: farther from the expert
# than another demonstration would be. Chosen on envs.seeds.TUNING (50 episodes each, issue #15): on
# Push-v0, MLP BC (50 demos, 1500 steps; 14% and 26% success) diverged in 42% and 50% of episodes
# (restricted mean 97 and 86 of 150 steps); the expert with N(0, 0.05) action noise (50/50 successes)
# in 2%, with 0.1 in 20%; the expert against itself never. On Reach-v0, BC at 98-100% success: 0%.
# c = 1.5 flagged the noisy expert in 20% (0.05) and 62% (0.1) of its successful episodes.
DIVERGENCE_C = 2.0
DEVIATION_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # of the task's horizon, for ``deviation_at``


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


def bootstrap_draws(values: Sequence[float] | np.ndarray, seed: int = BOOTSTRAP_SEED,
                    resamples: int = BOOTSTRAP_RESAMPLES, statistic: Callable[[np.ndarray], np.ndarray] | None = None
                    ) -> np.ndarray:
    """The one-stage bootstrap distribution: the rows of ``values`` ``(N, ...)`` (the episodes of one
    run, or the runs of a curve) resampled with replacement ``resamples`` times, and the mean over
    each resample ``(resamples, ...)``, or ``statistic(resampled (R, N, ...))``. Seeded, so a result
    file reproduces exactly."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    resampled = values[rng.integers(0, len(values), size=(resamples, len(values)))]
    return statistic(resampled) if statistic is not None else resampled.mean(axis=1)


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` percentile interval of bootstrap ``draws`` along their first axis."""
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail], axis=0)
    return low, high


def bootstrap_interval(values: Sequence[float] | np.ndarray, seed: int = BOOTSTRAP_SEED,
                       resamples: int = BOOTSTRAP_RESAMPLES, level: float = LEVEL,
                       statistic: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` over the episodes of one run (episodes
    resampled with replacement; :func:`cluster_bootstrap` resamples training seeds first).

    ``values`` ``(N,)`` or ``(N, M)`` (rows resampled together); ``statistic(resampled (R, N, ...)) -> (R,)``
    replaces the mean, e.g. a ratio of two column means. Deterministic for a given ``seed``.
    """
    if len(values) == 0:
        return math.nan, math.nan
    estimates = bootstrap_draws(values, seed, resamples, statistic)
    estimates = estimates[np.isfinite(estimates)]  # a ratio of zero means is undefined, not an outlier
    if len(estimates) == 0:
        return math.nan, math.nan
    low, high = percentile_interval(estimates, level)
    return float(low), float(high)


def cluster_bootstrap_estimates(per_seed: Sequence[Sequence[float]], resamples: int = BOOTSTRAP_RESAMPLES,
                                seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """The two-stage (cluster) bootstrap distribution ``(resamples,)`` of the mean over training seeds
    of per-seed episode means: seeds resampled with replacement, then the episodes within each.

    ``per_seed[s]`` holds seed s's per-episode values (seeds may have different episode counts).
    Draw order, fixed so that the result can be recomputed independently: first the seed indices
    ``integers(0, S, size=(resamples, S))``, then ``random((S, resamples, N_max))``; resampled seed
    ``s`` at position j takes episodes ``floor(u * n_s)`` from the first ``n_s`` uniforms of row j.
    """
    counts = np.array([len(values) for values in per_seed])
    if len(counts) == 0 or counts.min() == 0:
        raise ValueError("every seed needs at least one episode")
    table = np.zeros((len(counts), counts.max()))
    for row, values in zip(table, per_seed):
        row[: len(values)] = values
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, len(counts), size=(resamples, len(counts)))
    total = np.zeros(resamples)
    for position in range(len(counts)):  # one (resamples, N_max) block at a time bounds the memory
        uniforms = rng.random((resamples, counts.max()))
        n = counts[seeds[:, position]]
        episodes = np.floor(uniforms * n[:, None]).astype(np.int64)
        used = np.arange(counts.max())[None, :] < n[:, None]
        values = np.where(used, table[seeds[:, position, None], episodes], 0.0)  # floor(u n) < n always
        total += values.sum(axis=1) / n
    return total / len(counts)


def cluster_bootstrap(per_seed: Sequence[Sequence[float]], bounds: tuple[float, float] | None = None,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      level: float = LEVEL) -> tuple[float, float, float]:
    """(mean over seeds of per-seed means, low, high): the two-stage percentile bootstrap over training
    seeds and their episodes (see :func:`cluster_bootstrap_estimates`; one run's episodes alone:
    :func:`bootstrap_interval`), the interval clipped to ``bounds`` if given."""
    estimate = float(np.mean([np.mean(values) for values in per_seed]))
    low, high = (float(v) for v in percentile_interval(cluster_bootstrap_estimates(per_seed, resamples, seed), level))
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return estimate, low, high


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


def divergence_threshold(obs_dim: int, c: float = DIVERGENCE_C) -> float:
    """``tau = c sqrt(obs_dim)``: the deviation (normalized state units) beyond which a policy has diverged."""
    return float(c * math.sqrt(obs_dim))


def time_to_divergence(deviation: np.ndarray, threshold: float, policy_length: int, expert_length: int,
                       policy_failed: bool) -> tuple[int, bool]:
    """``(T_div, diverged)`` of one episode pair; ``T_div`` is the censoring length when not diverged.

    ``deviation`` ``(min(Tp, Te) + 1,)``: ``deviation_t`` while both episodes run. Diverged at the first
    ``t`` with ``deviation_t > threshold``; else, when the policy's episode ended in failure
    (``policy_failed``: terminated without success) before the expert's, at its last step ``Tp``;
    else censored at ``max(Tp, Te)``.
    """
    over = np.flatnonzero(np.asarray(deviation) > threshold)
    if len(over):
        return int(over[0]), True
    if policy_failed and policy_length < expert_length:
        return int(policy_length), True
    return int(max(policy_length, expert_length)), False


def episode_compounding(policy: Trajectory, expert: Trajectory, obs_mean: np.ndarray, obs_std: np.ndarray,
                        act_std: np.ndarray, policy_at_policy: np.ndarray, expert_at_policy: np.ndarray,
                        policy_at_expert: np.ndarray, expert_at_expert: np.ndarray,
                        threshold: float | None = None) -> dict[str, Any]:
    """The compounding-error quantities of one seed.

    ``policy_at_policy`` ``(Tp, A)``: the policy's action at each state it visited (fresh prediction);
    ``expert_at_policy`` the expert's there; ``*_at_expert`` ``(Te, A)`` the same at the expert's states.
    Returns the deviation per step (``min(Tp, Te) + 1`` values), J_traj, the two action errors, and
    the time to divergence (:func:`time_to_divergence`) against ``threshold`` (default
    :func:`divergence_threshold` of the observation dimension).
    """
    if not np.array_equal(policy.states[0], expert.states[0]):
        raise RuntimeError(f"seed {policy.seed}: the policy's and the expert's initial observations differ; "
                           "the task's reset is not determined by its seed")
    steps = min(policy.length, expert.length)
    # Deviations are in the flat state (what the expert acts on), whatever the policy observes.
    dx = (policy.states[: steps + 1] - expert.states[: steps + 1]) / obs_std  # mean cancels in a difference
    deviation = np.linalg.norm(dx, axis=-1)
    du = (policy.actions[:steps] - expert.actions[:steps]) / act_std
    per_step = np.minimum(1.0, np.sum(dx[:steps] ** 2, axis=-1) + np.sum(du ** 2, axis=-1))
    j_traj = float(per_step.sum()) + abs(policy.length - expert.length)  # unmatched steps count the cap, 1
    on_policy = np.sum(((policy_at_policy - expert_at_policy) / act_std) ** 2, axis=-1)
    on_expert = np.sum(((policy_at_expert - expert_at_expert) / act_std) ** 2, axis=-1)
    if threshold is None:
        threshold = divergence_threshold(policy.states.shape[-1])
    policy_failed = policy.terminated and not (policy.length and bool(policy.success[-1]))
    t_div, diverged = time_to_divergence(deviation, threshold, policy.length, expert.length, policy_failed)
    return {
        "deviation": deviation,
        "j_traj": j_traj,
        "action_error_on_policy": float(on_policy.mean()) if len(on_policy) else math.nan,
        "action_error_on_expert": float(on_expert.mean()) if len(on_expert) else math.nan,
        "threshold": float(threshold),
        "time_to_divergence": t_div,
        "diverged": diverged,
    }


def deviation_band(deviations: list[np.ndarray]) -> dict[str, list]:
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


def divergence_summary(per_episode: list[dict[str, Any]], horizon: int, bootstrap_seed: int = 0) -> dict[str, Any]:
    """Restricted mean of ``min(T_div, T)`` (bootstrap interval), the fraction of episodes that diverged
    (Wilson interval), the threshold, and ``horizon`` (the task's episode length, for scale)."""
    times = np.array([e["time_to_divergence"] for e in per_episode], dtype=np.float64)
    diverged = sum(bool(e["diverged"]) for e in per_episode)
    n = len(per_episode)
    return {
        "mean": float(times.mean()),
        "ci": list(bootstrap_interval(times, seed=bootstrap_seed)),
        "threshold": per_episode[0]["threshold"],
        "diverged_fraction": diverged / n,
        "diverged_ci": list(wilson_interval(diverged, n)),
        "horizon": int(horizon),
    }


def deviation_at(deviations: list[np.ndarray], horizon: int, fractions: Sequence[float] = DEVIATION_FRACTIONS,
                 bootstrap_seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{str(f): {"t", "mean", "ci", "n_reached"}}``: the deviation at ``t = round(f * horizon)``
    (halves up), per episode at ``min(t, its last common step)``, averaged over episodes (bootstrap
    interval); ``n_reached`` counts the episodes whose pair ran to ``t``."""
    out = {}
    for fraction in fractions:
        t = int(math.floor(fraction * horizon + 0.5))  # nearest step, halves up
        values = np.array([d[min(t, len(d) - 1)] for d in deviations], dtype=np.float64)
        out[str(fraction)] = {"t": t, "mean": float(values.mean()),
                              "ci": list(bootstrap_interval(values, seed=bootstrap_seed)),
                              "n_reached": int(sum(len(d) > t for d in deviations))}
    return out


def compounding_summary(per_episode: list[dict[str, Any]], bootstrap_seed: int = 0,
                        horizon: int | None = None) -> dict[str, Any]:
    """Aggregate :func:`episode_compounding` results over episodes (intervals over episodes).

    ``horizon``: the task's episode length, for ``deviation_at`` and the reported divergence horizon
    (default: the longest episode pair).
    """
    if horizon is None:
        horizon = max(len(e["deviation"]) for e in per_episode) - 1
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
        "state_deviation": deviation_band([e["deviation"] for e in per_episode]),
        "j_traj": {"mean": float(j.mean()), "ci": list(bootstrap_interval(j, seed=bootstrap_seed))},
        "action_error_on_policy": {"mean": float(on_policy),
                                   "ci": list(bootstrap_interval(errors[:, 0], seed=bootstrap_seed))},
        "action_error_on_expert": {"mean": float(on_expert),
                                   "ci": list(bootstrap_interval(errors[:, 1], seed=bootstrap_seed))},
        "action_error_ratio": {"value": ratio_value,
                               "ci": list(bootstrap_interval(errors, seed=bootstrap_seed, statistic=ratio))},
        "time_to_divergence": divergence_summary(per_episode, horizon, bootstrap_seed),
        "deviation_at": deviation_at([e["deviation"] for e in per_episode], horizon, bootstrap_seed=bootstrap_seed),
        "units": "states (x - obs_mean) / obs_std, actions u / act_std (the policy's normalizers); "
                 "action errors are squared norms (validation loss = that / act_dim)",
    }
