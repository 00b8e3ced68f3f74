"""Plots drawn from an evaluation's result dict (the JSON file) only: matplotlib, Agg, PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dopr_robot.atomic import atomic_path, check_destination
from dopr_robot.errors import UserError

CAPTION_HEIGHT = 0.06  # fraction of the figure height kept free below the axes for the caption line
HEADROOM = 1.45  # y-axis top over the highest curve, so the legend does not cover the data
# The PNG text chunk that marks a plot as this module's: eval --plot replaces such a file on a rerun.
PLOT_SOURCE = "dopr-robot eval --plot"


def check_plot_destination(path: str | Path, *, overwrite: bool) -> Path:
    """Refuse, in one line and before any rollout, a ``--plot`` destination: not a .png, or an existing
    file that is not a plot this module drew (replaced only with ``overwrite``; one it drew is replaced,
    as rerunning an evaluation is normal), or a place that cannot be written."""
    if Path(path).suffix.lower() != ".png":
        raise UserError(f"--plot must be a .png file, got '{path}'")
    return check_destination(path, overwrite=overwrite, what="compounding-error plot drawn by eval", ours=_our_plot)


def _our_plot(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.text.get("Source") == PLOT_SOURCE
    except (OSError, ValueError):
        return False


def plot_compounding(result: dict[str, Any], out: str | Path) -> Path:
    """A figure that reads on its own: title, units, and a caption with task, N, seeds and checkpoint.

    Left: the state deviation ||s_t^policy - s_t^expert|| against t (mean over episodes, 95% band),
    the divergence threshold (dashed), the time to divergence (restricted mean, with its 95%
    interval as a shaded span) and the share of episodes diverged by each t (dotted, right axis).
    Right: the action error on the policy's states vs on the expert's
    states (means with 95% intervals) and their ratio. Result files written before the time to
    divergence existed still plot, without those marks.
    """
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
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [2, 1]},
                                         layout="constrained")
    figure.get_layout_engine().set(rect=(0, CAPTION_HEIGHT, 1, 1 - CAPTION_HEIGHT))  # room for the caption
    left.plot(curve["t"], curve["mean"], color="tab:blue", label="mean deviation")
    left.fill_between(curve["t"], curve["lo"], curve["hi"], color="tab:blue", alpha=0.25, label="95% interval")
    top = max(curve["hi"])
    divergence = compounding.get("time_to_divergence")
    legend_axes = left
    if divergence is not None:
        top = max(top, divergence["threshold"])
        left.axhline(divergence["threshold"], color="black", linestyle="--", linewidth=1,
                     label=f"divergence threshold {divergence['threshold']:.2f}")
        low, high = divergence["ci"]
        left.axvspan(low, high, color="tab:red", alpha=0.12)
        left.axvline(divergence["mean"], color="tab:red", linewidth=1.5,
                     label=f"time to divergence {divergence['mean']:.0f} [{low:.0f}, {high:.0f}]")
        records = result.get("records") or []
        if records and "diverged" in records[0]:
            # Episodes diverge one by one (each crossing the threshold), so the mean curve can stay
            # under it: the share diverged so far says how many have.
            diverged_at = [r["time_to_divergence"] for r in records if r["diverged"]]
            share = left.twinx()
            fraction = [sum(t <= step for t in diverged_at) / len(records) for step in curve["t"]]
            share.step(curve["t"], fraction, where="post", color="tab:red", linestyle=":", linewidth=1.5,
                       label=f"share diverged by t ({100 * divergence['diverged_fraction']:.0f}% in all)")
            share.set_ylim(0, 1.25)  # 1.0 below the legend, and apart from the threshold line
            share.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
            share.set_ylabel("share of episodes diverged by t", color="tab:red")
            legend_axes = share
    left.set_xlabel("step t (env steps after reset)")
    left.set_ylabel("||s_policy - s_expert||  (units of demo std per dim)")
    left.set_xlim(0, max(curve["t"][-1], 1))
    left.set_ylim(0, HEADROOM * top if top > 0 else 1.0)  # the legend sits in the headroom
    j = compounding["j_traj"]
    left.set_title(f"state deviation from the expert; J_traj = {j['mean']:.1f} [{j['ci'][0]:.1f}, {j['ci'][1]:.1f}]",
                   fontsize=10)
    handles = left.get_legend_handles_labels()[0]
    if legend_axes is not left:
        handles += legend_axes.get_legend_handles_labels()[0]
    legend_axes.legend(handles=handles, loc="upper left", fontsize=8, ncol=2)

    _draw_action_errors(right, compounding)
    closed = result["closed_loop"]
    figure.suptitle(f"{result['task']}: compounding error of the policy vs the expert from the same initial states "
                    f"(success {closed['success_rate']:.2f} [{closed['success_ci'][0]:.2f}, "
                    f"{closed['success_ci'][1]:.2f}])", fontsize=11)
    figure.text(0.01, 0.015, _caption(result), fontsize=8, color="0.25", ha="left", va="bottom")
    try:
        with atomic_path(out) as tmp:
            figure.savefig(tmp, dpi=100, metadata={"Source": PLOT_SOURCE})
    finally:
        plt.close(figure)
    return out


def _draw_action_errors(axes, compounding: dict[str, Any]) -> None:
    """Bars of the action error at the policy's and at the expert's states (95% intervals), and their ratio."""
    names = ("action_error_on_policy", "action_error_on_expert")
    means = [compounding[name]["mean"] for name in names]
    errors = [[m - compounding[name]["ci"][0] for m, name in zip(means, names)],
              [compounding[name]["ci"][1] - m for m, name in zip(means, names)]]
    axes.bar(["at policy states", "at expert states"], means, yerr=errors, capsize=6, color=["tab:red", "tab:gray"])
    axes.set_ylabel("||pi(s) - pi*(s)||^2  (normalized action units)")
    ratio = compounding["action_error_ratio"]
    axes.set_title(f"action error; ratio {ratio['value']:.2f} [{ratio['ci'][0]:.2f}, {ratio['ci'][1]:.2f}]",
                   fontsize=10)


def _caption(result: dict[str, Any]) -> str:
    """Task, N, seeds, checkpoint (step, optimizer, policy) and what the bands are, in one line."""
    n = result["closed_loop"]["n"]
    parts = [f"task {result['task']}", f"N = {n} episodes", f"reset seeds {result['seed']}..{result['seed'] + n - 1}"]
    checkpoint = result.get("checkpoint") or {}
    if checkpoint.get("step") is not None:
        what = ", ".join(str(checkpoint[key]) for key in ("optimizer", "policy") if checkpoint.get(key))
        parts.append(f"checkpoint step {checkpoint['step']}" + (f" ({what})" if what else ""))
    parts.append("intervals 95% (band: mean +- 1.96 SE; time to divergence: bootstrap)")
    return "   |   ".join(parts)
