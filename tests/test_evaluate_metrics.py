"""Intervals against known numbers, and seeded (reproducible) bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dopr_robot.evaluate.metrics import bootstrap_interval, closed_loop_summary, deviation_curve, wilson_interval


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


def test_deviation_curve_handles_different_lengths() -> None:
    curve = deviation_curve([np.array([0.0, 1.0, 2.0]), np.array([0.0, 3.0])])
    assert curve["n"] == [2, 2, 1] and curve["mean"] == [0.0, 2.0, 2.0]
    assert curve["lo"][2] == curve["hi"][2] == 2.0  # one episode: no spread to report
