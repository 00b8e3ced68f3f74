"""Plots drawn from an evaluation's result dict (the JSON file) only: matplotlib, Agg, PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dopr_robot.atomic import atomic_path
from dopr_robot.errors import UserError


def plot_compounding(result: dict[str, Any], out: str | Path) -> Path:
    """Left: the state deviation ||s_t^policy - s_t^expert|| against t (mean, 95% band). Right: the
    action error on the policy's states vs on the expert's states (means with 95% intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compounding = result.get("compounding")
    if compounding is None:
        raise UserError(f"no compounding-error results to plot ({result.get('compounding_note') or 'no expert'})")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--plot must be a .png file, got {out}")
    curve = compounding["state_deviation"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    left.plot(curve["t"], curve["mean"], color="tab:blue", label="mean over episodes")
    left.fill_between(curve["t"], curve["lo"], curve["hi"], color="tab:blue", alpha=0.25, label="95% interval")
    left.set_xlabel("step t")
    left.set_ylabel("||s_policy - s_expert|| (normalized)")
    j = compounding["j_traj"]
    left.set_title(f"state deviation, J_traj = {j['mean']:.2f} [{j['ci'][0]:.2f}, {j['ci'][1]:.2f}]")
    left.legend(loc="upper left")

    names = ("action_error_on_policy", "action_error_on_expert")
    means = [compounding[name]["mean"] for name in names]
    errors = [[m - compounding[name]["ci"][0] for m, name in zip(means, names)],
              [compounding[name]["ci"][1] - m for m, name in zip(means, names)]]
    right.bar(["on policy states", "on expert states"], means, yerr=errors, capsize=6, color=["tab:red", "tab:gray"])
    right.set_ylabel("||pi(s) - pi*(s)||^2 (normalized)")
    ratio = compounding["action_error_ratio"]
    right.set_title(f"ratio {ratio['value']:.2f} [{ratio['ci'][0]:.2f}, {ratio['ci'][1]:.2f}]")
    closed = result["closed_loop"]
    figure.suptitle(f"{result['task']}: success {closed['success_rate']:.2f} "
                    f"[{closed['success_ci'][0]:.2f}, {closed['success_ci'][1]:.2f}], N={closed['n']}")
    figure.tight_layout()
    try:
        with atomic_path(out) as tmp:
            figure.savefig(tmp, dpi=100)
    finally:
        plt.close(figure)
    return out
