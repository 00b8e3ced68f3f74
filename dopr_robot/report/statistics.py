"""The intervals a comparison report shows, and why each is the one used.

A comparison has few training seeds (2 to 5) and many evaluation episodes per run. Intervals over
the seed means alone (a t-interval) are nearly useless with 2 seeds (t_{0.975,1} = 12.7) and can
leave the metric's range (a success rate of 0.26 [-0.76, 1.28]). So:

- **per-episode metrics** (success, return, J_traj, time to divergence): a two-stage (cluster)
  percentile bootstrap: resample the seeds with replacement, then the episodes within each resampled
  seed with replacement; the statistic is the mean over seeds of the per-seed episode means. Both
  sources of variation (which seeds were trained, which initial states were drawn) are in it, and a
  percentile interval cannot leave the range of the data; it is also clipped to the metric's range.
- **paired differences** DoPr-X - X: seeds are paired by training seed and, within a seed, episodes
  by evaluation reset seed (both runs faced the same initial states), so the bootstrap resamples
  seed pairs, then episode indices shared by both members of a pair; that is the cluster bootstrap
  of the per-episode differences.
- **per-run metrics** (validation loss, best-checkpoint success: one number per run): the Student-t
  interval over seeds, shown only with at least :data:`MIN_SEEDS_FOR_T` seeds and clipped to the
  metric's range (five best-checkpoint success rates near 1 otherwise read 0.96 [0.888, 1.03]).

Every bootstrap draws from its own ``numpy.random.Generator`` seeded with :data:`BOOTSTRAP_SEED`
(never the global RNG), so a report is identical each time it is written. The bootstraps themselves
(one-stage over the episodes of one run or over runs, two-stage over seeds and episodes) live with
the evaluation's intervals in :mod:`dopr_robot.evaluate.metrics`; this module chooses among them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from dopr_robot.evaluate.metrics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    LEVEL,
    bootstrap_draws,
    cluster_bootstrap,
    cluster_bootstrap_estimates,
    percentile_interval,
)

__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "LEVEL", "MIN_SEEDS_FOR_T", "cluster_bootstrap",
           "cluster_bootstrap_estimates", "paired_cluster_bootstrap", "run_band", "t_interval"]

MIN_SEEDS_FOR_T = 3  # below this a t-interval over seeds says little; tables show the per-seed values

# Two-sided 95% Student t quantiles t_{0.975, df}, df = 1..30; beyond 30 the normal 1.96 is close.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t_interval(values: Sequence[float | None],
               bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the mean of ``values`` (None and non-finite values dropped),
    the interval clipped to ``bounds`` if given; (mean, nan, nan) for fewer than 2 values, (nan, nan,
    nan) for none."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(data) == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if len(data) < 2:
        return mean, math.nan, math.nan
    t = T975[len(data) - 2] if len(data) - 1 <= len(T975) else 1.96
    half = t * float(data.std(ddof=1)) / math.sqrt(len(data))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return mean, low, high


def paired_cluster_bootstrap(base: Sequence[Sequence[float]], treated: Sequence[Sequence[float]],
                             bounds: tuple[float, float] | None = None, resamples: int = BOOTSTRAP_RESAMPLES,
                             seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean difference ``treated - base`` and its interval, for runs paired by seed (``base[s]`` and
    ``treated[s]`` trained with the same seed) whose episodes are paired by index (the same evaluation
    reset seeds). Seed pairs and then episode indices are resampled jointly for both members, which is
    the cluster bootstrap of the per-episode differences. ``bounds`` are those of the difference."""
    if len(base) != len(treated):
        raise ValueError(f"{len(base)} base seeds but {len(treated)} treated seeds; pairs need both")
    differences = []
    for s, (b, t) in enumerate(zip(base, treated)):
        if len(b) != len(t):
            raise ValueError(f"seed pair {s}: {len(b)} vs {len(t)} episodes; episodes are paired by reset seed")
        differences.append(np.asarray(t, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    return cluster_bootstrap(differences, bounds=bounds, resamples=resamples, seed=seed, level=level)


def run_band(curves: np.ndarray, resamples: int = 2000, seed: int = BOOTSTRAP_SEED,
             level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean curve over runs ``(R, T) -> (T,)`` and its percentile-bootstrap band over runs (runs
    resampled with replacement). One run gives a band of zero width: there is nothing to resample."""
    curves = np.asarray(curves, dtype=np.float64)
    low, high = percentile_interval(bootstrap_draws(curves, seed, resamples), level)
    return curves.mean(axis=0), low, high
