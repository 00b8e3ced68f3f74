"""The comparison report on hand-built result trees (no training): intervals checked against an
independent computation, ranges, the settings line read from the runs, plots, replication verdicts."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dopr_robot.errors import UserError
from dopr_robot.report import (
    COLUMNS,
    cluster_bootstrap,
    counts_markdown,
    csv_text,
    load_rows,
    paired_cluster_bootstrap,
    summary_markdown,
    write_replication_report,
    write_report,
)
from dopr_robot.report.tables import (
    BEST_SUCCESS,
    METRICS,
    RESOLVED_WIDTH,
    PairedDifference,
    optimizer_cell,
    paired_difference,
    success_in_words,
    verdict,
)

TASK = "Push-v0"
HORIZON = 20
EVAL_SEED = 1_000_000
DATASET = {"source": "data/push-100.hdf5", "task": TASK, "episodes": 100, "train_episodes": 90, "valid_episodes": 10,
           "metadata": {"noise": 0.1, "seed": 0, "expert_kind": "scripted"}}
CONFIG = {"policy": "mlp", "batch_size": 64, "lr": 0.0003, "weight_decay": 0.0, "damping": 0.01, "warmup_steps": 10,
          "grad_clip": 1.0, "ema_decay": 0.995, "optimizer_options": {}, "policy_options": {"width": 16}}


def write_run(root: Path, optimizer: str, seed: int, success: list[bool], returns: list[float] | None = None, *,
              task: str = TASK, dataset: dict | None = DATASET, config: dict | None = CONFIG, new_fields: bool = True,
              reverse_records: bool = False, val_loss: float | None = None,
              evaluations: dict[int, float] | None = None) -> Path:
    """A finished cell's eval.json (+ config.json, metrics.jsonl) as the harness writes it;
    ``evaluations`` {step: success rate}: closed-loop evaluations during training (--eval-every)."""
    n = len(success)
    returns = list(returns) if returns is not None else [float(s) * 10 - i * 0.1 for i, s in enumerate(success)]
    ttd = [None if s else 5 + i % 7 for i, s in enumerate(success)]
    records = [{"seed": EVAL_SEED + i, "success": bool(s), "return": returns[i], "length": HORIZON, "j_traj": 3.0 + returns[i] / 4}
               for i, s in enumerate(success)]
    if new_fields:
        for record, t in zip(records, ttd):
            record.update(time_to_divergence=t, diverged=t is not None)
    p = sum(success) / n
    deviation = [0.0] + [0.02 * t * (1 + seed) for t in range(1, HORIZON + 1)]
    compounding = {
        "state_deviation": {"t": list(range(HORIZON + 1)), "mean": deviation},
        "j_traj": {"mean": float(np.mean([r["j_traj"] for r in records])), "ci": [0, 1]},
        "action_error_on_policy": {"mean": 2.0 + seed, "ci": [0, 1]},
        "action_error_on_expert": {"mean": 1.0, "ci": [0, 1]},
        "action_error_ratio": {"value": 2.0 + seed, "ci": [0, 1]},
    }
    if new_fields:
        times = [HORIZON if t is None else t for t in ttd]
        compounding["time_to_divergence"] = {"mean": float(np.mean(times)), "ci": [0, HORIZON], "threshold": 0.3,
                                             "diverged_fraction": 1 - p, "diverged_ci": [0, 1], "horizon": HORIZON}
        compounding["deviation_at"] = {f: {"t": int(float(f) * HORIZON), "mean": deviation[int(float(f) * HORIZON)], "ci": [0, 1]}
                                       for f in ("0.1", "0.25", "0.5", "1.0")}
    checkpoint = {"step": 200, "policy": "mlp", "optimizer": optimizer, "history": 1, "chunk": 1, "use_ema": True}
    if dataset is not None:
        checkpoint["dataset"] = dataset
    result = {
        "format": "dopr-robot/eval/1", "task": task, "seed": EVAL_SEED, "episodes": n,
        "closed_loop": {"n": n, "successes": sum(success), "success_rate": p,
                        "success_ci": [max(0.0, p - 0.2), min(1.0, p + 0.2)], "mean_return": float(np.mean(returns))},
        "records": records[::-1] if reverse_records else records,
        "compounding": compounding,
        "validation": {"val_loss": val_loss if val_loss is not None else 0.03 + 0.001 * seed, "best_val_loss": 0.029},
        "checkpoint": checkpoint,
        "cell": {"task": task, "optimizer": optimizer, "seed": seed, "wall_time_s": 1.5},
    }
    run_dir = root / "runs" / task / optimizer / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "eval.json").write_text(json.dumps(result))
    if config is not None:
        (run_dir / "config.json").write_text(json.dumps({**config, "optimizer": optimizer, "seed": seed}))
    lines = [{"step": s, "val_loss": 0.1 / s + 0.01 * seed} for s in (50, 100, 150, 200)]
    lines += [{"step": s, "eval_success_rate": rate, "eval_episodes": n} for s, rate in (evaluations or {}).items()]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in sorted(lines, key=lambda l: l["step"])))
    return run_dir


def outcomes(seed: int, n: int, p: float) -> list[bool]:
    """Deterministic success pattern with roughly rate p."""
    return [bool(v) for v in np.random.default_rng(seed).random(n) < p]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def table_row(summary: str, first_cell: str) -> list[str]:
    line = next(line for line in summary.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def header(summary: str, first_cell: str) -> list[str]:
    line = next(line for line in summary.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def interval(cell: str) -> tuple[float, float, float]:
    match = re.fullmatch(r"([-+0-9.e]+) \[([-+0-9.e]+), ([-+0-9.e]+)\]", cell)
    assert match, f"not 'mean [low, high]': {cell!r}"
    return tuple(float(v) for v in match.groups())


def independent_paired_bootstrap(base: np.ndarray, dopr: np.ndarray, seed: int = 0, resamples: int = 10_000) -> np.ndarray:
    """Two-stage paired bootstrap written again: seed pairs with replacement, then episode indices
    (shared by both runs of a pair) with replacement; draws in the documented order."""
    rng = np.random.default_rng(seed)
    pairs, episodes = base.shape
    seed_draws = rng.integers(0, pairs, size=(resamples, pairs))
    episode_draws = np.floor(rng.random((pairs, resamples, episodes)) * episodes).astype(int)
    difference = dopr - base
    return np.mean([difference[seed_draws[:, j, None], episode_draws[j]].mean(axis=1) for j in range(pairs)], axis=0)


def test_paired_difference_matches_an_independent_computation(tmp_path: Path) -> None:
    seeds, n = 3, 12
    for seed in range(seeds):
        write_run(tmp_path, "adamw", seed, outcomes(seed, n, 0.4))
        write_run(tmp_path, "dopr-adamw", seed, outcomes(100 + seed, n, 0.6), reverse_records=True)  # paired by reset seed
    write_report(tmp_path)
    table = read_csv(tmp_path / "results.csv")
    summary = (tmp_path / "summary.md").read_text()
    cols = header(summary, "pair")
    cells = table_row(summary, "dopr-adamw - adamw")

    # point estimate: the mean over seeds of per-seed differences, from results.csv alone
    by = {(r["optimizer"], int(r["seed"])): r for r in table}
    for column, heading in (("success_rate", "success rate [b]"), ("mean_return", "return [b]")):
        per_seed = [float(by["dopr-adamw", s][column]) - float(by["adamw", s][column]) for s in range(seeds)]
        estimate, low, high = interval(cells[cols.index(heading)])
        assert estimate == pytest.approx(float(f"{np.mean(per_seed):+.3g}"))

    # the interval: the bootstrap recomputed here from the episode records, matched by reset seed
    def episode_matrix(optimizer: str, key: str) -> np.ndarray:
        matrix = []
        for s in range(seeds):
            result = json.loads((tmp_path / "runs" / TASK / optimizer / f"seed{s}" / "eval.json").read_text())
            by_reset = {r["seed"]: float(r[key]) for r in result["records"]}
            matrix.append([by_reset[EVAL_SEED + i] for i in range(n)])
        return np.array(matrix)

    for key, heading in (("success", "success rate [b]"), ("return", "return [b]")):
        draws = independent_paired_bootstrap(episode_matrix("adamw", key), episode_matrix("dopr-adamw", key))
        estimate, low, high = interval(cells[cols.index(heading)])
        expected_low, expected_high = np.percentile(draws, [2.5, 97.5])
        assert (low, high) == (float(f"{expected_low:+.3g}"), float(f"{expected_high:+.3g}"))
        assert draws.min() - 1e-9 <= low <= high <= draws.max() + 1e-9


def test_paired_bootstrap_function_equals_the_independent_one_to_full_precision() -> None:
    rng = np.random.default_rng(7)
    base, dopr = rng.normal(size=(4, 9)), rng.normal(0.3, 1.0, size=(4, 9))
    estimate, low, high = paired_cluster_bootstrap(base, dopr)
    draws = independent_paired_bootstrap(base, dopr)
    assert estimate == pytest.approx(float(np.mean(dopr - base)), abs=1e-12)
    assert (low, high) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])), rel=1e-12)  # summation order only
    # seeds with different episode counts: the per-seed means are averaged, each seed weighs the same
    ragged = [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0]]
    assert cluster_bootstrap(ragged) == (0.5, 0.0, 1.0)
    assert cluster_bootstrap([[0.2, 0.9], [0.95, 0.7]], bounds=(0.0, 0.9))[2] <= 0.9


def test_identical_optimizers_differ_by_exactly_zero(tmp_path: Path) -> None:
    for seed in range(2):
        for optimizer in ("muon", "dopr-muon"):
            write_run(tmp_path, optimizer, seed, outcomes(seed, 10, 0.5))
    summary = summary_markdown(load_rows(tmp_path))
    cols, cells = header(summary, "pair"), table_row(summary, "dopr-muon - muon")
    for heading in ("success rate [b]", "return [b]", "J_traj [b]", "time to divergence (steps) [b]", "diverged [b]"):
        assert cells[cols.index(heading)] == "+0 [+0, +0]"


@pytest.mark.parametrize("dopr_rate, seeds, episodes, words", [
    (0.9, 3, 40, "resolved, dopr-adamw succeeds more often than adamw"),   # interval above 0
    (None, 3, 120, "resolved as no clear difference"),                      # the same outcomes, shifted by one
    (0.6, 2, 6, "not resolved"),                                            # a few episodes: wide, across 0
    ("same", 2, 6, "not resolved, every paired episode ended the same way"),  # a point interval, +0 [+0, +0]
])
def test_the_summary_says_in_words_whether_the_success_difference_is_resolved(
        tmp_path: Path, dopr_rate: float | str | None, seeds: int, episodes: int, words: str) -> None:
    for seed in range(seeds):
        base = outcomes(seed, episodes, 0.4)
        write_run(tmp_path, "adamw", seed, base)
        dopr = (base if dopr_rate == "same" else base[1:] + base[:1] if dopr_rate is None
                else outcomes(50 + seed, episodes, dopr_rate))
        write_run(tmp_path, "dopr-adamw", seed, dopr)
    rows = load_rows(tmp_path)
    difference = paired_difference(rows, "adamw", "dopr-adamw", METRICS[0])
    sentence = success_in_words(rows, "adamw", "dopr-adamw")
    assert words in sentence and f"{difference.high - difference.low:.2f} wide" in sentence
    width = difference.high - difference.low
    assert difference.excludes_zero() == words.startswith("resolved,")
    # not resolved: an interval that includes 0 and is wider than RESOLVED_WIDTH, or a point
    assert words.startswith("not resolved") == (width == 0 or not difference.excludes_zero() and width > RESOLVED_WIDTH)
    assert f"In words: {sentence}" in summary_markdown(rows).splitlines()


@pytest.mark.parametrize("seeds, low, high, seen", [
    (1, 0.12, 0.34, "dopr-adamw succeeded more often than adamw"),
    (2, -0.30, -0.05, "dopr-adamw succeeded less often than adamw"),
    (2, -0.04, 0.06, "they succeeded about equally often"),
])
def test_fewer_than_three_seed_pairs_never_resolve_the_optimizers(seeds: int, low: float, high: float, seen: str) -> None:
    """One or two seed pairs: a narrow interval is about these training runs (their evaluation episodes), not the
    optimizers. With three the same interval resolves."""
    difference = PairedDifference(estimate=(low + high) / 2, low=low, high=high, seeds=seeds)
    sentence = success_in_words([], "adamw", "dopr-adamw", difference)
    assert f"over {seeds} seed pair{'s' if seeds > 1 else ''} (95%" in sentence
    assert f": not resolved, on these seeds {seen}, but with fewer than 3 seed pairs" in sentence
    assert sentence.endswith("--seeds 3 or more would tell.")
    resolved = success_in_words([], "adamw", "dopr-adamw", replace(difference, seeds=3))
    assert ": resolved" in resolved and "on these seeds" not in resolved


@pytest.mark.parametrize("low, high, bounds", [
    (-0.04, 0.06, "a gain larger than 0.06 or a loss larger than 0.04 is unlikely"),
    (0.0, 0.09, "a gain larger than 0.09 or any loss is unlikely"),      # one-sided: ends at 0
    (-0.04, 0.0, "any gain or a loss larger than 0.04 is unlikely"),
])
def test_a_resolved_no_difference_bounds_each_side_by_its_own_end(low: float, high: float, bounds: str) -> None:
    difference = PairedDifference(estimate=(low + high) / 2, low=low, high=high, seeds=5)
    sentence = success_in_words([], "adamw", "dopr-adamw", difference)
    assert sentence.endswith(f"resolved as no clear difference; {bounds}.")


@pytest.mark.parametrize("pattern", ["all success", "all failure", "mixed"])
def test_success_intervals_lie_in_the_unit_interval_with_two_seeds(tmp_path: Path, pattern: str) -> None:
    for seed in range(2):
        success = {"all success": [True] * 8, "all failure": [False] * 8, "mixed": [seed == 0, True, False, False] * 2}[pattern]
        write_run(tmp_path, "adamw", seed, success)
        write_run(tmp_path, "dopr-adamw", seed, [not s for s in success])
    summary = summary_markdown(load_rows(tmp_path))
    cols = header(summary, "optimizer")
    for optimizer in ("adamw", "dopr-adamw"):
        estimate, low, high = interval(table_row(summary, optimizer)[cols.index("success rate [b]")])
        assert 0.0 <= low <= estimate <= high <= 1.0
    if pattern == "all success":
        assert table_row(summary, "adamw")[cols.index("success rate [b]")] == "1 [1, 1]"
        assert table_row(summary, "dopr-adamw")[cols.index("success rate [b]")] == "0 [0, 0]"
    estimate, low, high = interval(table_row(summary, "dopr-adamw - adamw")[header(summary, "pair").index("success rate [b]")])
    assert -1.0 <= low <= estimate <= high <= 1.0


def test_per_run_metrics_show_a_t_interval_only_with_three_seeds(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path, "adamw", seed, [True, False], val_loss=[0.03, 0.04][seed])
    summary = summary_markdown(load_rows(tmp_path))
    assert table_row(summary, "adamw")[header(summary, "optimizer").index("validation loss [t]")] == "0.035 {0.03, 0.04}"
    write_run(tmp_path, "adamw", 2, [True, False], val_loss=0.05)
    summary = summary_markdown(load_rows(tmp_path))
    cell = table_row(summary, "adamw")[header(summary, "optimizer").index("validation loss [t]")]
    half = 4.303 * np.std([0.03, 0.04, 0.05], ddof=1) / math.sqrt(3)
    assert cell == f"{0.04:.3g} [{0.04 - half:.3g}, {0.04 + half:.3g}]"


def test_t_intervals_of_a_bounded_metric_stay_in_its_range() -> None:
    # Five best-checkpoint success rates near 1: the unclipped t-interval reaches past 1.
    best = [0.96, 1.0, 0.9, 1.0, 0.94]
    half = 2.776 * np.std(best, ddof=1) / math.sqrt(len(best))
    assert 0.96 + half > 1.0
    estimate, low, high = interval(optimizer_cell([{BEST_SUCCESS.column: v} for v in best], BEST_SUCCESS))
    assert estimate == pytest.approx(0.96) and low == pytest.approx(0.96 - half, abs=1e-3) and high == 1.0
    # A paired difference of the same metric stays within [-1, 1].
    rows = [{"optimizer": "adamw", "seed": s, BEST_SUCCESS.column: b} for s, b in enumerate([0.0, 0.1, 0.05])]
    rows += [{"optimizer": "dopr-adamw", "seed": s, BEST_SUCCESS.column: 1.0} for s in range(3)]
    difference = paired_difference(rows, "adamw", "dopr-adamw", BEST_SUCCESS)
    assert difference.estimate == pytest.approx(0.95) and difference.high == 1.0 and difference.low < 0.95
    # An unbounded metric is not clipped.
    val_loss = next(metric for metric in METRICS if metric.column == "val_loss")
    assert interval(optimizer_cell([{"val_loss": v} for v in best], val_loss))[2] == pytest.approx(0.96 + half, abs=5e-3)  # 3 figures


def test_settings_line_comes_from_the_runs(tmp_path: Path) -> None:
    (tmp_path / "compare_config.json").write_text(json.dumps({"demo_episodes": 50, "demo_noise": 0.0, "lr": 0.001}))
    for seed in range(2):
        write_run(tmp_path, "adamw", seed, [True, False])
        write_run(tmp_path, "dopr-adamw", seed, [True, False])
    write_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    line = next(line for line in summary.splitlines() if line.startswith("Settings"))
    assert "demonstrations: 100 episodes (90 train, 10 validation) from `data/push-100.hdf5`" in line
    assert "noise 0.1" in line and "expert scripted" in line and "collection seeds from 0" in line
    assert "lr 0.0003" in line and "batch 64" in line and "200 training steps" in line and "DoPr damping 0.01" in line
    assert "2 episodes per run, reset seeds 1,000,000–1,000,001" in line
    assert "50 episodes" not in line and "lr 0.001" not in line


def test_settings_line_says_unknown_and_names_disagreements(tmp_path: Path) -> None:
    write_run(tmp_path, "adamw", 0, [True], dataset=None, config=None)  # an old run: no provenance
    write_run(tmp_path, "adamw", 1, [True], dataset={**DATASET, "episodes": 50})
    line = next(line for line in summary_markdown(load_rows(tmp_path)).splitlines() if line.startswith("Settings"))
    assert "**runs disagree:** unknown (adamw seed 0) vs 50 (adamw seed 1) episodes" in line
    assert "lr **runs disagree:** unknown (adamw seed 0) vs 0.0003 (adamw seed 1)" in line


def test_settings_line_goes_by_the_demonstrations_content_not_their_path(tmp_path: Path) -> None:
    def source_of(line: str) -> str:
        return line.split(" validation) from ", 1)[1].split(", expert ", 1)[0]

    def settings(datasets: dict[int, dict]) -> str:
        root = tmp_path / str(len(list(tmp_path.iterdir())))  # a grid of its own
        for seed, dataset in datasets.items():
            write_run(root, "adamw", seed, [True], dataset=dataset)
        return next(line for line in summary_markdown(load_rows(root)).splitlines() if line.startswith("Settings"))

    digest, other = "63a974a79611" + "0" * 52, "0d1e2f3a4b5c" + "0" * 52
    here = {**DATASET, "sha256": digest}
    moved = {**here, "source": "copy/push-100.hdf5"}
    # one file read at two paths (a grid grown from a copy of another grid's runs): one source
    assert source_of(settings({0: here, 1: moved, 2: moved})) == (
        "one file (sha256 63a974a79611…) at `data/push-100.hdf5` (adamw seed 0) and `copy/push-100.hdf5` "
        "(adamw seed 1, adamw seed 2)")
    # another content at the same path (the file was replaced between runs): the runs disagree
    assert source_of(settings({0: here, 1: {**here, "sha256": other}, 2: here})) == (
        "**runs disagree:** files of different content: sha256 63a974a79611… (adamw seed 0, adamw seed 2) vs "
        "sha256 0d1e2f3a4b5c… (adamw seed 1), at `data/push-100.hdf5` (adamw seed 0, adamw seed 1, adamw seed 2)")
    assert source_of(settings({0: here, 1: here, 2: here})) == "`data/push-100.hdf5`"
    # a run that recorded no digest: the paths are all there is to go by
    assert source_of(settings({0: DATASET, 1: moved, 2: moved})) == (
        "**runs disagree:** data/push-100.hdf5 (adamw seed 0) vs copy/push-100.hdf5 (adamw seed 1, adamw seed 2)")


def test_csv_columns_order_and_values(tmp_path: Path) -> None:
    for optimizer in ("muon", "dopr-muon", "dopr-adamw", "adamw"):
        write_run(tmp_path, optimizer, 0, [True, False, True, True])
    write_run(tmp_path, "adamw", 1, [False, False], new_fields=False)  # an eval.json from before the new fields
    rows = write_report(tmp_path)
    table = read_csv(tmp_path / "results.csv")
    assert list(table[0]) == COLUMNS
    assert {"action_error_ratio", "time_to_divergence", "diverged_fraction", "deviation_at_half"} <= set(COLUMNS)
    assert "ttf_ratio" not in COLUMNS
    assert [(r["optimizer"], r["seed"]) for r in table] == [("adamw", "0"), ("adamw", "1"), ("dopr-adamw", "0"),
                                                            ("muon", "0"), ("dopr-muon", "0")]
    first = table[0]
    assert float(first["success_rate"]) == 0.75 and float(first["action_error_ratio"]) == 2.0
    assert float(first["time_to_divergence"]) == np.mean([20, 6, 20, 20])  # never-diverged episodes count the horizon
    assert float(first["deviation_at_half"]) == pytest.approx(0.2) and first["deviation_at_half_t"] == "10"
    assert first["demo_episodes"] == "100" and first["demo_noise"] == "0.1"
    assert table[1]["time_to_divergence"] == "" and table[1]["deviation_at_half"] == ""
    summary = (tmp_path / "summary.md").read_text()
    cols = header(summary, "optimizer")
    assert [line.split("|")[1].strip() for line in summary.splitlines() if re.match(r"\| (dopr-)?(adamw|muon) \|", line)] == \
        ["adamw", "dopr-adamw", "muon", "dopr-muon"]
    assert "on-policy / on-expert action error [t]" in cols
    assert table_row(summary, "adamw")[cols.index("time to divergence (steps) [b]")] == "n/a"  # one run lacks records' values
    assert table_row(summary, "adamw")[cols.index("deviation at T/2 [t]")] == "n/a"
    assert len(rows) == 5


def test_report_is_deterministic_and_plots_are_written(tmp_path: Path) -> None:
    for seed in range(2):
        for optimizer in ("adamw", "dopr-adamw"):
            write_run(tmp_path, optimizer, seed, outcomes(seed + len(optimizer), 6, 0.5))
        write_run(tmp_path, "adamw", seed, [True, False, True], task="Reach-v0")
    # a Wilson bound computed in floating point can lie a hair past 0/N (as evaluate's does)
    eval_file = tmp_path / "runs" / "Reach-v0" / "adamw" / "seed0" / "eval.json"
    result = json.loads(eval_file.read_text())
    result["closed_loop"].update(success_rate=0.0, success_ci=[1e-17, 0.56])
    eval_file.write_text(json.dumps(result))
    write_report(tmp_path)
    first = (tmp_path / "summary.md").read_text()
    write_report(tmp_path)
    assert (tmp_path / "summary.md").read_text() == first
    for name in ("val_loss_vs_success.png", "deviation_from_expert.png", "learning_curves.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_runs_evaluated_without_the_expert_report_na(tmp_path: Path) -> None:
    for seed in range(2):
        eval_file = write_run(tmp_path, "adamw", seed, [True, False, True]) / "eval.json"
        result = json.loads(eval_file.read_text())
        result["compounding"] = None
        result["records"] = [{"seed": r["seed"], "success": r["success"], "return": r["return"]} for r in result["records"]]
        eval_file.write_text(json.dumps(result))
    write_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    cells, cols = table_row(summary, "adamw"), header(summary, "optimizer")
    assert cells[cols.index("J_traj [b]")] == "n/a" and cells[cols.index("time to divergence (steps) [b]")] == "n/a"
    assert interval(cells[cols.index("success rate [b]")])[0] == pytest.approx(2 / 3, abs=1e-3)
    assert (tmp_path / "deviation_from_expert.png").read_bytes()[:4] == b"\x89PNG"


def test_a_broken_eval_file_is_named(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "adamw", 0, [True])
    (run_dir / "eval.json").write_text(json.dumps({"closed_loop": {}}))
    with pytest.raises(UserError, match=r"seed0/eval.json is not a comparison cell's evaluation"):
        load_rows(tmp_path)


def difference(estimate: float, low: float, high: float) -> PairedDifference:
    return PairedDifference(estimate, low, high, seeds=3)


@pytest.mark.parametrize("original, replicate, expected", [
    (difference(0.2, 0.1, 0.3), difference(0.15, 0.05, 0.25), "replicates"),
    (difference(-0.2, -0.3, -0.1), difference(-0.1, -0.2, -0.01), "replicates"),
    (difference(0.2, 0.1, 0.3), difference(0.05, -0.05, 0.15), "does not replicate"),
    (difference(0.2, 0.1, 0.3), difference(-0.2, -0.3, -0.1), "does not replicate (reversed)"),
    (difference(0.05, -0.05, 0.15), difference(0.2, 0.1, 0.3), "inconclusive"),
    (difference(0.2, 0.1, 0.3), difference(0.2, math.nan, math.nan), "inconclusive"),
    (PairedDifference(0.2, 0.1, 0.3, seeds=2), PairedDifference(0.15, 0.05, 0.25, seeds=2), "inconclusive"),
    (difference(0.2, 0.1, 0.3), PairedDifference(0.15, 0.05, 0.25, seeds=1), "inconclusive"),
])
def test_replication_verdicts(original: PairedDifference, replicate: PairedDifference, expected: str) -> None:
    assert verdict(original, replicate) == expected


def test_replication_report_on_two_grids(tmp_path: Path) -> None:
    def grid(root: Path, dopr_success: list[bool]) -> Path:
        for seed in range(3):
            write_run(root, "adamw", seed, [False] * 10)
            write_run(root, "dopr-adamw", seed, dopr_success)
        return root

    original = grid(tmp_path / "original", [True] * 8 + [False] * 2)
    agreeing = grid(tmp_path / "agreeing", [True] * 7 + [False] * 3)
    null = grid(tmp_path / "null", [False] * 10)
    text = write_replication_report(original, agreeing, tmp_path / "replication.md")
    assert (tmp_path / "replication.md").read_text() == text
    row = table_row(text, "dopr-adamw - adamw")
    assert row[1] == "success rate [b]" and row[2].startswith("+0.8 [") and row[3].startswith("+0.7 [")
    assert row[4:] == ["yes", "yes", "replicates"]
    assert "- **replicates**: both 95% intervals exclude 0" in text
    row = table_row(write_replication_report(original, null, tmp_path / "r2.md"), "dopr-adamw - adamw")
    assert row[3].startswith("+0 [+0, +0]") and row[4:] == ["no", "no", "does not replicate"]
    row = table_row(write_replication_report(null, original, tmp_path / "r3.md"), "dopr-adamw - adamw")
    assert row[-1] == "inconclusive"


def test_floating_point_residue_of_a_bootstrap_bound_prints_as_zero() -> None:
    from dopr_robot.report.tables import _format

    assert _format(0.096, -5.55e-18, 0.192, signed=True) == "+0.096 [+0, +0.192]"
    assert _format(1e-14, 1e-15, 2e-14) == "1e-14 [1e-15, 2e-14]"  # a genuinely tiny interval is kept


def test_large_values_print_in_full_to_three_figures() -> None:
    from dopr_robot.report.tables import _format, _with_per_seed

    # a locomotion return: 2660 [2170, 3150], not 2.66e+03 [2.17e+03, 3.15e+03]
    assert _format(2657.4, 2168.9, 3151.2) == "2660 [2170, 3150]"
    assert _format(-20.1, -593.4, 1649.0, signed=True) == "-20.1 [-593, +1650]"
    assert _with_per_seed(3409.5, [3409.5, 12345.0], signed=True) == "+3410 {+3410, +12300}"


def test_the_counts_summary_bolds_only_differences_whose_interval_excludes_zero(tmp_path: Path) -> None:
    """Over demonstration counts: DoPr's validation loss is lower on every seed (interval clear of 0: bold);
    its returns differ from the base's by ±1 episode by episode (interval across 0: plain)."""
    base_returns = [10.0 - i for i in range(8)]
    for seed in range(3):
        write_run(tmp_path, "adamw", seed, [True] * 8, base_returns, val_loss=0.05 + 0.001 * seed)
        write_run(tmp_path, "dopr-adamw", seed, [True] * 8, [r + (-1) ** i for i, r in enumerate(base_returns)],
                  val_loss=0.04 + 0.002 * seed)
    summary = counts_markdown(load_rows(tmp_path), {100: "demos100"})
    assert "a difference in bold: its interval excludes 0" in summary
    sections = summary.split("### ")
    return_row, loss_row = (table_row(next(s for s in sections if s.startswith(name)), "dopr-adamw - adamw")
                            for name in ("return", "validation loss"))
    _, low, high = interval(return_row[1].removesuffix(" (3 pairs)"))
    assert not return_row[1].startswith("**") and low < 0 < high
    assert loss_row[1].startswith("**") and interval(loss_row[1].removesuffix(" (3 pairs)").strip("*"))[2] < 0


# -- the figures, read back from their artists against values recomputed here from what write_run wrote --

PLOT_SEEDS = (0, 1, 2)


def plot_inputs(root: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """A grid for the figures (Push-v0: adamw and dopr-adamw, 3 seeds; Reach-v0: adamw, 2 seeds) and,
    per run, what it was written with: success per episode, returns, validation loss, seed."""
    inputs = {}
    for task, optimizers, seeds in ((TASK, ("adamw", "dopr-adamw"), PLOT_SEEDS), ("Reach-v0", ("adamw",), (0, 1))):
        for optimizer in optimizers:
            for seed in seeds:
                success = outcomes(seed + 10 * len(optimizer) + len(task), 8, 0.5)
                returns = [float(s) * 10 - i * 0.1 + 0.5 * seed + len(optimizer) for i, s in enumerate(success)]
                val_loss = 0.02 + 0.003 * seed + 0.01 * (optimizer == "adamw") + 0.1 * (task != TASK)
                write_run(root, optimizer, seed, success, returns, task=task, val_loss=val_loss)
                inputs[task, optimizer, seed] = dict(success=success, returns=returns, val_loss=val_loss, seed=seed)
    return inputs


def runs_of(inputs: dict, task: str, optimizer: str) -> list[dict[str, Any]]:
    return [run for (t, o, _), run in sorted(inputs.items()) if (t, o) == (task, optimizer)]


def panels(fig) -> dict[str, Any]:
    """Axes by task (a panel's title starts with its task)."""
    return {ax.get_title().split(",")[0]: ax for ax in fig.axes if ax.get_title()}


def xs(line) -> np.ndarray:
    return np.asarray(line.get_xdata(), dtype=float)


def ys(line) -> np.ndarray:
    return np.asarray(line.get_ydata(), dtype=float)


def labelled_lines(ax) -> dict[str, Any]:
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def check_validation_vs_success(fig, inputs: dict) -> None:
    for task, ax in panels(fig).items():
        containers = {c.get_label(): c for c in ax.containers}
        optimizers = sorted({o for t, o, _ in inputs if t == task})
        assert sorted(containers) == optimizers
        for optimizer in optimizers:
            runs = runs_of(inputs, task, optimizer)
            rate = np.array([np.mean(run["success"]) for run in runs])
            data, _, bar_lines = containers[optimizer].lines
            assert len(bar_lines) == 1, "one set of error bars"
            bars = bar_lines[0]
            np.testing.assert_allclose(xs(data), [run["val_loss"] for run in runs])
            np.testing.assert_allclose(ys(data), rate)
            # write_run's Wilson stand-in: [p - 0.2, p + 0.2] clipped to [0, 1]
            losses = [run["val_loss"] for run in runs]
            expected = [[[x, max(0.0, p - 0.2)], [x, min(1.0, p + 0.2)]] for x, p in zip(losses, rate)]
            np.testing.assert_allclose(np.array(bars.get_segments()), expected, atol=1e-12)


def curves(fig, inputs: dict):
    """``(seeds, curve)`` for every (task, optimizer) of the runs: each optimizer's curve is labelled
    with its run count."""
    for task, ax in panels(fig).items():
        lines = labelled_lines(ax)
        for optimizer in sorted({o for t, o, _ in inputs if t == task}):
            seeds = [run["seed"] for run in runs_of(inputs, task, optimizer)]
            line = lines.get(f"{optimizer} ({len(seeds)} runs)")
            assert line is not None, f"no curve of {optimizer} in {task}"
            yield seeds, line


def check_deviation(fig, inputs: dict) -> None:
    for ax in panels(fig).values():
        lines = labelled_lines(ax)
        assert "divergence threshold" in lines
        np.testing.assert_allclose(ys(lines["divergence threshold"]), [0.3, 0.3])
    t = np.arange(HORIZON + 1)
    for seeds, line in curves(fig, inputs):
        np.testing.assert_array_equal(xs(line), t)
        np.testing.assert_allclose(ys(line), 0.02 * t * np.mean([1 + s for s in seeds]))  # write_run's curves


def check_learning_curves(fig, inputs: dict) -> None:
    steps = np.array([50, 100, 150, 200])
    for seeds, line in curves(fig, inputs):
        np.testing.assert_array_equal(xs(line), steps)
        np.testing.assert_allclose(ys(line), 0.1 / steps + 0.01 * np.mean(seeds))  # write_run's metrics.jsonl


def check_terminal_reward(fig, inputs: dict) -> None:
    for task, ax in panels(fig).items():
        bars = [patch for container in ax.containers if hasattr(container, "patches") for patch in container.patches]
        optimizers = sorted({o for t, o, _ in inputs if t == task}, key=lambda o: o.startswith("dopr-"))
        assert len(bars) == len(optimizers)
        for offset, (bar, optimizer) in zip((-0.19, 0.19), zip(bars, optimizers)):
            mean = np.mean([np.mean(run["returns"]) for run in runs_of(inputs, task, optimizer)])
            assert bar.get_x() + bar.get_width() / 2 == pytest.approx(offset if len(optimizers) == 2 else -0.19)
            assert bar.get_height() == pytest.approx(mean)
        deltas = [text.get_text() for text in ax.texts if text.get_text().startswith("Δ")]
        if len(optimizers) == 2:  # the paired difference above the pair: mean over seeds of DoPr - base
            difference = np.mean([np.mean(d["returns"]) - np.mean(b["returns"]) for b, d in
                                  zip(runs_of(inputs, task, "adamw"), runs_of(inputs, task, "dopr-adamw"))])
            assert len(deltas) == 1 and float(deltas[0].split()[1]) == pytest.approx(difference, rel=1e-2)
        else:
            assert deltas == []


def check_validation_vs_return(fig, inputs: dict) -> None:
    for task, ax in panels(fig).items():
        lines = labelled_lines(ax)
        optimizers = sorted({o for t, o, _ in inputs if t == task})
        assert sorted(lines) == optimizers
        for optimizer in optimizers:
            runs = runs_of(inputs, task, optimizer)
            np.testing.assert_allclose(xs(lines[optimizer]), [run["val_loss"] for run in runs])
            np.testing.assert_allclose(ys(lines[optimizer]), [np.mean(run["returns"]) for run in runs])


FIGURE_CHECKS = {"validation_vs_success": check_validation_vs_success, "deviation": check_deviation,
                 "learning_curves": check_learning_curves, "terminal_reward": check_terminal_reward,
                 "validation_vs_return": check_validation_vs_return}


@pytest.fixture(scope="module")
def figure_grid(tmp_path_factory) -> tuple[list[dict[str, Any]], dict]:
    root = tmp_path_factory.mktemp("figures")
    inputs = plot_inputs(root)
    return load_rows(root), inputs


def check_figure(name: str, fig, inputs: dict) -> None:
    """A panel per task, each showing what FIGURE_CHECKS[name] recomputes from the runs."""
    assert sorted(panels(fig)) == sorted({task for task, _, _ in inputs})
    FIGURE_CHECKS[name](fig, inputs)


def test_every_figure_of_the_report_is_checked() -> None:
    from dopr_robot.report import files

    assert sorted(f.__name__.removeprefix("plot_") for f in files.FIGURES.values()) == sorted(FIGURE_CHECKS)


@pytest.mark.parametrize("name", FIGURE_CHECKS)
def test_each_figure_draws_the_values_of_the_runs(name: str, figure_grid) -> None:
    import matplotlib.pyplot as plt

    from dopr_robot.report import plots

    rows, inputs = figure_grid
    fig = getattr(plots, f"{name}_figure")(rows)
    try:
        check_figure(name, fig, inputs)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name, method, planted", [
    ("validation_vs_success", "errorbar", "nothing"),
    ("deviation", "plot", "shifted"),
    ("learning_curves", "plot", "nothing"),
    ("terminal_reward", "bar", "shifted"),
    ("validation_vs_return", "plot", "shifted"),
])
def test_a_planted_wrong_figure_fails_its_check(name: str, method: str, planted: str, figure_grid,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above see a figure that draws nothing, or draws the data moved by 0.1."""
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    from dopr_robot.report import plots

    real = getattr(Axes, method)

    def wrong(self, *args, **kwargs):
        if planted == "nothing":
            return real(self, [], [], **{k: v for k, v in kwargs.items() if k not in ("yerr", "width")})
        shifted = [np.asarray(args[0]), np.asarray(args[1], dtype=float) + 0.1] if len(args) > 1 else \
            [np.arange(len(args[0])), np.asarray(args[0], dtype=float) + 0.1]
        return real(self, *shifted, *args[2:], **kwargs)

    monkeypatch.setattr(Axes, method, wrong)
    rows, inputs = figure_grid
    fig = getattr(plots, f"{name}_figure")(rows)
    try:
        with pytest.raises(AssertionError):
            check_figure(name, fig, inputs)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# Best-checkpoint success (evaluations during training, --eval-every) beside the final success


def best_eval_grid(root: Path) -> dict:
    """Three seed pairs evaluated during training at steps 50..200; the final success differs from
    the best, which some runs reach twice (the earliest step counts)."""
    inputs = {}
    for seed in range(3):
        for optimizer, shift in (("adamw", 0.0), ("dopr-adamw", 0.1)):
            evaluations = {50: 0.2, 100: 0.5 + shift + 0.1 * seed, 150: 0.3, 200: 0.5 + shift + 0.1 * seed}
            write_run(root, optimizer, seed, [True] + [False] * 5, evaluations=evaluations)  # final: 1/6
            inputs[optimizer, seed] = evaluations
    return inputs


def test_best_checkpoint_success_beside_the_final_in_csv_and_summary(tmp_path: Path) -> None:
    inputs = best_eval_grid(tmp_path)
    write_run(tmp_path, "adamw", 0, [True, False], task="Reach-v0")  # a task without --eval-every
    rows = load_rows(tmp_path)  # the report's csv and summary, without its figures
    table = list(csv.DictReader(io.StringIO(csv_text(rows))))
    for row in (r for r in table if r["task"] == TASK):
        best = max(inputs[row["optimizer"], int(row["seed"])].values())
        assert float(row["best_eval_success_rate"]) == pytest.approx(best) and row["best_eval_step"] == "100"
        assert float(row["success_rate"]) != pytest.approx(best)  # the final checkpoint's own evaluation
    reach = next(r for r in table if r["task"] == "Reach-v0")
    assert reach["best_eval_success_rate"] == "" and reach["best_eval_step"] == ""

    push, reach_part = summary_markdown(rows).split("## Reach-v0")
    cols = header(push, "optimizer")
    assert cols.index("best-checkpoint success rate [t]") == cols.index("final success rate [b]") + 1
    for optimizer in ("adamw", "dopr-adamw"):
        best = [max(inputs[optimizer, seed].values()) for seed in range(3)]
        mean, low, high = interval(table_row(push, optimizer)[cols.index("best-checkpoint success rate [t]")])
        half = scipy_t(2) * np.std(best, ddof=1) / math.sqrt(3)  # an independent t-interval
        assert (mean, low, high) == pytest.approx((np.mean(best), np.mean(best) - half, np.mean(best) + half), abs=2e-3)
    pair = table_row(push, "dopr-adamw - adamw")[header(push, "pair").index("best-checkpoint success rate [t]")]
    assert interval(pair) == pytest.approx((0.1, 0.1, 0.1), abs=1e-3)  # +0.1 in every seed pair
    assert "success rate [b]" in header(reach_part, "optimizer") and "final success rate [b]" not in reach_part


def scipy_t(dof: int) -> float:
    """The 97.5% quantile of Student's t with ``dof`` degrees of freedom (tabulated, not computed by the code under test)."""
    return {2: 4.302652729911275}[dof]


def test_learning_curves_show_success_during_training_below_the_loss(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from dopr_robot.report import plots

    inputs = best_eval_grid(tmp_path)
    fig = plots.learning_curves_figure(load_rows(tmp_path))
    try:
        (loss,) = panels(fig).values()
        (success,) = [other for other in fig.axes if other is not loss]
        # the same steps, the success panel under the loss panel
        assert success.get_shared_x_axes().joined(loss, success)
        assert success.get_position().y1 <= loss.get_position().y0
        assert "validation" in loss.get_ylabel() and "success" in success.get_ylabel()
        lines = labelled_lines(success)
        assert sorted(lines) == ["adamw (3 runs)", "dopr-adamw (3 runs)"]
        for optimizer in ("adamw", "dopr-adamw"):
            line = lines[f"{optimizer} (3 runs)"]
            np.testing.assert_array_equal(xs(line), [50, 100, 150, 200])
            np.testing.assert_allclose(ys(line), [np.mean([inputs[optimizer, s][step] for s in range(3)])
                                                  for step in (50, 100, 150, 200)])
            # the optimizer's colour and line style are the ones of its loss curve
            loss_line = labelled_lines(loss)[f"{optimizer} (3 runs)"]
            assert (line.get_color(), line.get_linestyle()) == (loss_line.get_color(), loss_line.get_linestyle())
    finally:
        plt.close(fig)


def test_learning_curves_of_one_run_and_of_a_task_never_evaluated(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from dopr_robot.report import plots

    best_eval_grid(tmp_path)
    write_run(tmp_path, "adamw", 0, [True, False], task="Reach-v0")  # a task without --eval-every
    rows = [r for r in load_rows(tmp_path) if r["seed"] == 0]
    fig = plots.learning_curves_figure(rows)
    try:
        labels = [label for ax in fig.axes for label in labelled_lines(ax)]
        assert labels and all(label.endswith("(1 run)") for label in labels), labels
        reach = panels(fig)["Reach-v0"]
        (below,) = [ax for ax in fig.axes if ax is not reach and ax.get_shared_x_axes().joined(ax, reach)]
        assert not labelled_lines(below) and [t.get_text() for t in below.texts] == \
            ["not evaluated in closed loop during training"]
    finally:
        plt.close(fig)


class Interrupt(Exception):
    """Stands in for a kill between two checkpoints."""


def test_the_best_evaluation_survives_a_kill_and_resume(reach_demos: Path, tmp_path: Path) -> None:
    """The best success over the whole run, in the checkpoint and in the report's reading of the log,
    is the same whether the run was killed after its best evaluation and resumed or not."""
    from dataclasses import replace

    from dopr_robot.checkpoint import load_checkpoint
    from dopr_robot.config import TrainConfig
    from dopr_robot.report.results import best_evaluation, evaluation_curve
    from dopr_robot.train import train

    rates = {5: 0.2, 10: 0.9, 15: 0.3, 20: 0.5}  # the best at step 10, before the kill

    def scripted(kill_at: int | None):
        def evaluator(policy, step: int) -> dict:
            if step == kill_at:
                raise Interrupt
            return {"eval_success_rate": rates[step], "eval_episodes": 2}
        return evaluator

    config = TrainConfig(data=str(reach_demos), out=str(tmp_path / "whole"), steps=20, batch_size=16,
                         checkpoint_every=10, val_every=10, log_every=10, warmup_steps=2,
                         policy_options={"width": 16, "depth": 1})
    whole = train(config, evaluator=scripted(None), evaluate_every=5, progress=False)
    killed = replace(config, out=str(tmp_path / "killed"))
    with pytest.raises(Interrupt):
        train(killed, evaluator=scripted(15), evaluate_every=5, progress=False)
    assert load_checkpoint(killed.out)["step"] == 10
    resumed = train(killed, evaluator=scripted(None), evaluate_every=5, resume=True, progress=False)
    assert whole.best_eval == resumed.best_eval == {"eval_success_rate": 0.9, "step": 10}
    assert load_checkpoint(resumed.run_dir)["best_eval"] == {"eval_success_rate": 0.9, "step": 10}
    for run in (whole, resumed):
        curve = evaluation_curve({"_run_dir": str(run.run_dir)})
        assert curve == rates and best_evaluation(curve) == (0.9, 10)
