"""Why AP matters: on inputs with condition number 1000, DoPr-X needs far fewer steps than X."""

from __future__ import annotations

import pytest

from dopr_robot.optimizer_demo import make_anisotropic_regression, steps_to_target


@pytest.mark.parametrize("base", ["adamw", "muon"])
def test_dopr_reaches_target_loss_in_far_fewer_steps(base: str) -> None:
    problem = make_anisotropic_regression(seed=0, condition=1000.0)
    settings = dict(lr=1e-2, target=1e-3, max_steps=1500, seed=0)
    dopr_steps, _ = steps_to_target(f"dopr-{base}", problem, damping=0.01, **settings)
    base_steps, base_final = steps_to_target(base, problem, **settings)
    assert dopr_steps is not None and dopr_steps <= 300
    # The base does not get there within 1500 steps: the ratio is at least 1500 / dopr_steps >= 5.
    assert base_steps is None or base_steps >= 5 * dopr_steps
    assert base_final > 1e-3

