"""Optimizer hyperparameters chosen as the DoPr paper chooses them, with the comparison harness, on
seeds of their own.

For each base optimizer X (adamw, muon, signum, adamuon, ...):

1. every learning rate x weight decay of the sweep trains X; X's choice is the setting with the
   highest mean closed-loop return (the "terminal reward": the mean over tasks of the mean over
   training seeds of each run's mean return), ties broken by the success rate, then by sweep order;
2. DoPr-X starts from X's chosen learning rate and weight decay, and only the damping is swept (the
   paper's point that a normalized base keeps its tuned settings valid under AP), chosen the same way.

Every setting is a comparison of its own (``compare``'s layout, so a killed sweep resumes) with one
optimizer, trained on training seeds ``TUNING_FIRST_SEED + first_seed ..`` and evaluated on the
tuning reset seeds (``envs.seeds.TUNING``): neither are the seeds an experiment reports on, so the
choice never looks at the numbers it is later judged on. All settings share one set of
demonstrations (one count; collected once, from the grid's demonstration seeds, or the grid's
``--data``).

    OUT/sweep_config.json                     the sweep: its grid template and the values tried
    OUT/data/<task>.hdf5                      the demonstrations (unless the grid gives --data)
    OUT/<X>/lr<lr>_wd<wd>/                    a comparison per learning rate and weight decay of X
    OUT/dopr-<X>/lr<lr>_wd<wd>_damping<d>/    a comparison per damping of DoPr-X (at X's choice)
    OUT/sweep.md                              every setting's return and success [intervals], the choices
    OUT/optimizer_settings.json               the choices: compare's optimizer_settings
                                              ({"adamw": {"lr", "weight_decay"}, "dopr-adamw": {..., "damping"}})

A setting whose training fails (e.g. diverges at a large learning rate) is listed as failed and
takes no part in the choice; the sweep goes on. With ``--workers`` or ``--ray`` the cells of all
settings of a stage (the lr x weight-decay grids of every base, then every DoPr-X's dampings) run as
one grid: a sweep's setting often has a single cell. The grid template is a ``CompareConfig`` (an
experiment's file serves as it is): its training template, tasks, seeds, demonstrations and
evaluation settings are kept; its learning rate, weight decay and damping are the sweep's, its
``optimizer_settings`` are what the sweep writes, and its evaluation seeds move into the tuning
range (``TUNING + (seed - POLICY_EVAL)``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dopr_robot.atomic import check_directory_destination, write_json_atomic, write_text_atomic
from dopr_robot.compare import (
    GROWABLE,
    CompareConfig,
    check_data_file,
    check_experts,
    check_other_collection,
    compare,
    demonstrations,
    pending_cells,
    run_cell,
    upgrade_config_json,
)
from dopr_robot.config import (
    SettingError,
    config_from_dict,
    config_items,
    config_to_dict,
    nested,
    number_list,
    option,
)
from dopr_robot.errors import UserError
from dopr_robot.grid import CellsFailed, Execution, run_cells
from dopr_robot.optim import OPTIMIZERS, base_of, is_dopr
from dopr_robot.optim.registry import DOPR_PREFIX
from dopr_robot.report.results import episode_values
from dopr_robot.report.statistics import BOOTSTRAP_RESAMPLES, cluster_bootstrap
from dopr_robot.run_dir import changed_settings, read_saved, refuse_changes
from envs import seeds as seed_ranges

CONFIG_FILE = "sweep_config.json"
REPORT_FILE = "sweep.md"
SETTINGS_FILE = "optimizer_settings.json"
# Training seeds of the sweep's runs start here (+ the grid's first_seed): not an experiment's 0, 1, ...
TUNING_FIRST_SEED = 100


def _default_grid() -> CompareConfig:
    return CompareConfig(out="")


@dataclass(frozen=True)
class SweepConfig:
    grid: CompareConfig = nested(
        CompareConfig, factory=_default_grid, exclude=("optimizer_settings",),
        why_excluded="the sweep chooses them (OUT/optimizer_settings.json)",
        help="the comparison every setting runs: compare's options (--config takes a compare config, e.g. an "
             "experiment's file); its lr, weight decay and damping are the sweep's")
    bases: list = option([], help="base optimizers to tune, DoPr-X after X (default: the bases of the grid's optimizers)")
    lrs: list = option([1e-4, 3e-4, 1e-3, 3e-3], parse=number_list, metavar="LR,LR",
                       help="learning rates tried for each base optimizer")
    weight_decays: list = option([0.0], parse=number_list, metavar="WD,WD",
                                 help="weight decays tried for each base optimizer (with every learning rate)")
    dampings: list = option([0.001, 0.01, 0.1], parse=number_list, metavar="D,D",
                            help="DoPr dampings tried for each DoPr-X at X's chosen learning rate and weight decay")

    def __post_init__(self) -> None:
        if not self.bases:  # the resolved list is what the saved sweep_config.json holds
            object.__setattr__(self, "bases", list(dict.fromkeys(base_of(name) for name in self.grid.optimizers)))
        bad = [name for name in self.bases if is_dopr(name) or name not in OPTIMIZERS or DOPR_PREFIX + name not in OPTIMIZERS]
        if bad:
            valid = [name for name in OPTIMIZERS if not is_dopr(name) and DOPR_PREFIX + name in OPTIMIZERS]
            raise SettingError(lambda n: f"{n('bases')} {', '.join(bad)}: not a base optimizer with a DoPr variant; "
                                         f"valid: {', '.join(valid)}")
        for name in ("lrs", "weight_decays", "dampings"):
            values = getattr(self, name)
            if not values:
                raise SettingError(lambda n: f"{n(name)} needs at least one value")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 for v in values):
                raise SettingError(lambda n: f"{n(name)} must be numbers >= 0, got {values!r}")
            if len(set(values)) < len(values):
                raise SettingError(lambda n: f"{n(name)} lists a value twice: {values!r}")
        counts = self.grid.demo.episodes
        if isinstance(counts, list):
            raise SettingError(lambda n: f"the sweep tunes on one demonstration count, the grid lists "
                                         f"{', '.join(map(str, counts))}: give one, e.g. {n('grid.demo.episodes')} "
                                         f"{sorted(counts)[len(counts) // 2]}")
        self.tuning_eval_seed()
        for base in self.bases:  # every setting's comparison, checked before any work
            for lr in self.lrs:
                for weight_decay in self.weight_decays:
                    self.setting(base, lr, weight_decay)
            for damping in self.dampings:
                self.setting(DOPR_PREFIX + base, self.lrs[0], self.weight_decays[0], damping)

    @property
    def out(self) -> Path:
        return Path(self.grid.out)

    def tuning_eval_seed(self) -> int:
        """The first evaluation reset seed of every setting: the grid's, moved into the tuning range."""
        ranges = seed_ranges.ranges()
        seed, episodes = self.grid.eval.seed, self.grid.eval.episodes
        if seed in ranges["policy evaluation"]:
            seed = seed_ranges.TUNING + (seed - seed_ranges.POLICY_EVAL)
        tuning = ranges["tuning"]
        if not (tuning.start <= seed and seed + episodes <= tuning.stop):
            raise UserError(f"the sweep evaluates on the tuning seeds {tuning.start:,}..{tuning.stop - 1:,} (envs/seeds.py); "
                            f"--eval-seed {self.grid.eval.seed} with --eval-episodes {episodes} is outside them and "
                            "outside the policy-evaluation seeds it would move there from")
        return seed

    def data_files(self) -> dict[str, str]:
        """Every setting's demonstrations: the grid's --data, or the files the sweep collects once."""
        return {task: self.grid.data.get(task, str(self.out / "data" / f"{task}.hdf5")) for task in self.grid.tasks}

    def setting_dir(self, optimizer: str, lr: float, weight_decay: float, damping: float | None = None) -> Path:
        name = f"lr{lr:g}_wd{weight_decay:g}" + (f"_damping{damping:g}" if damping is not None else "")
        return self.out / optimizer / name

    def setting(self, optimizer: str, lr: float, weight_decay: float, damping: float | None = None) -> CompareConfig:
        """The comparison of one setting: the grid with this optimizer, these values, the shared
        demonstrations, the sweep's training seeds and the tuning evaluation seeds."""
        values = {"lr": lr, "weight_decay": weight_decay} | ({} if damping is None else {"damping": damping})
        return replace(self.grid, out=str(self.setting_dir(optimizer, lr, weight_decay, damping)), optimizers=[optimizer],
                       optimizer_settings={}, data=self.data_files(), train=replace(self.grid.train, **values),
                       first_seed=TUNING_FIRST_SEED + self.grid.first_seed,
                       eval=replace(self.grid.eval, seed=self.tuning_eval_seed()))


@dataclass(frozen=True)
class Outcome:
    """One setting's result: per task (return, success) as (mean, low, high) and the mean validation
    loss, or the error that stopped it."""

    optimizer: str
    values: dict[str, float]
    directory: Path
    per_task: dict[str, dict[str, Any]]
    error: str = ""

    def score(self) -> tuple[float, float]:
        """(mean return, mean success) over tasks: what the choice maximizes, in that order."""
        return (float(sum(t["return"][0] for t in self.per_task.values()) / len(self.per_task)),
                float(sum(t["success"][0] for t in self.per_task.values()) / len(self.per_task)))


def sweep(config: SweepConfig, progress: bool = True, execution: Execution = Execution()) -> dict[str, dict[str, float]]:
    """Run every setting (resuming finished ones), choose, write OUT/sweep.md and
    OUT/optimizer_settings.json; return the chosen settings (compare's optimizer_settings)."""
    check_sweep(config)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_FILE, config_to_dict(config))
    for task in config.grid.tasks:  # collected once, into OUT/data/, for every setting
        demonstrations(config.grid, task, out, progress)

    # Two stages, each a set of independent settings: every base's lr x weight-decay grid, then every
    # DoPr-X's dampings at X's choice. Serially the settings run one after another; with --workers or
    # --ray every cell of a stage is queued at once (a setting often has a single cell).
    outcomes: dict[str, list[Outcome]] = {}
    chosen: dict[str, dict[str, float]] = {}
    stage = [(base, {"lr": lr, "weight_decay": wd}) for base in config.bases
             for lr in config.lrs for wd in config.weight_decays]
    for (optimizer, _), outcome in zip(stage, _run_stage(config, stage, progress, execution)):
        outcomes.setdefault(optimizer, []).append(outcome)
    for base in config.bases:
        best = _choose(outcomes[base])
        if best is not None:
            chosen[base] = dict(best.values)
    stage = [(DOPR_PREFIX + base, {**chosen[base], "damping": damping}) for base in config.bases if base in chosen
             for damping in config.dampings]
    for (optimizer, _), outcome in zip(stage, _run_stage(config, stage, progress, execution)):
        outcomes.setdefault(optimizer, []).append(outcome)
    for base in config.bases:
        best_dopr = _choose(outcomes.get(DOPR_PREFIX + base, []))
        if best_dopr is not None:
            chosen[DOPR_PREFIX + base] = dict(best_dopr.values)
    outcomes = {name: outcomes[name] for base in config.bases for name in (base, DOPR_PREFIX + base) if name in outcomes}
    write_text_atomic(out / REPORT_FILE, sweep_markdown(config, outcomes, chosen))
    write_json_atomic(out / SETTINGS_FILE, chosen)
    unchosen = [name for base in config.bases for name in (base, DOPR_PREFIX + base) if name not in chosen]
    if unchosen:
        raise UserError(f"every setting of {', '.join(unchosen)} failed, so nothing was chosen for them (see "
                        f"{out / REPORT_FILE}); {out / SETTINGS_FILE} holds the others")
    return chosen


def check_sweep(config: SweepConfig) -> None:
    """Before anything is written: experts, the given demonstration files, and ``--out``: a directory
    that can be written and is new, empty or this sweep's (then its collected demonstrations must be
    the ones it asks for)."""
    check_experts(config.grid)
    for task, path in config.grid.data.items():
        check_data_file(task, path, config.grid.train.obs_keys)
    out = check_directory_destination(config.grid.out, what="sweep (--out)")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / CONFIG_FILE).exists():
        raise UserError(f"{out} is not empty and holds no sweep (no {CONFIG_FILE}); choose another --out")
    _check_same_sweep(config, out / CONFIG_FILE)
    for task in (t for t in config.grid.tasks if t not in config.grid.data):
        check_other_collection(config.grid, task, out / "data" / f"{task}.hdf5")


def _run_stage(config: SweepConfig, settings: list[tuple[str, dict[str, float]]], progress: bool,
               execution: Execution) -> list[Outcome]:
    """The outcomes of independent settings. With parallel execution, the missing cells of all of
    them run as one grid first (a cell is named by its setting: ``adamw@lr0.001_wd0``); a setting
    with a failed cell is then recorded as failed without training again."""
    failed: dict[str, str] = {}
    if execution.executor != "serial":
        cells, data = [], {}
        for optimizer, values in settings:
            grid = config.setting(optimizer, values["lr"], values["weight_decay"], values.get("damping"))
            data, missing = pending_cells(grid, progress=False)  # every setting shares the sweep's data
            cells += [(task, _cell_name(config, grid), seed) for task, _, seed in missing]
        try:
            run_cells(_setting_cell, config, cells, data, execution, progress, label="sweep")
        except CellsFailed as err:  # its message has a line "  <task> <name> seed <seed>: <error>" per cell
            lines = str(err).splitlines()
            for task, name, seed in err.cells:
                prefix = f"  {task} {name} seed {seed}: "
                failed.setdefault(name, next((line[len(prefix):] for line in lines if line.startswith(prefix)),
                                             "training failed"))
    outcomes = []
    for optimizer, values in settings:
        grid = config.setting(optimizer, values["lr"], values["weight_decay"], values.get("damping"))
        error = failed.get(_cell_name(config, grid))
        outcomes.append(Outcome(optimizer, values, Path(grid.out), {}, error=error) if error is not None
                        else _run(config, optimizer, values, progress, execution))
    return outcomes


def _cell_name(config: SweepConfig, grid: CompareConfig) -> str:
    """A setting's name in a grid of the sweep's cells: ``<optimizer>@<its directory>``."""
    return f"{grid.optimizers[0]}@{Path(grid.out).relative_to(config.out / grid.optimizers[0])}"


def _setting_cell(config: SweepConfig, task: str, name: str, seed: int, data: Path, device: str = "auto") -> None:
    """One cell of a setting named ``<optimizer>@<its directory>`` (a grid's cell body: top-level,
    so worker processes and Ray tasks can import it)."""
    optimizer, directory = name.split("@", 1)
    candidates = [(lr, wd, damping) for lr in config.lrs for wd in config.weight_decays
                  for damping in ([None] if not is_dopr(optimizer) else config.dampings)]
    lr, wd, damping = next(c for c in candidates if config.setting_dir(optimizer, *c).name == directory)
    run_cell(config.setting(optimizer, lr, wd, damping), task, optimizer, seed, data, device)


def _run(config: SweepConfig, optimizer: str, values: dict[str, float], progress: bool, execution: Execution) -> Outcome:
    """One setting's comparison (resumed when it exists; after a parallel stage only its report is
    written); a failure of its training is recorded."""
    grid = config.setting(optimizer, values["lr"], values["weight_decay"], values.get("damping"))
    label = f"sweep {optimizer} {_describe(values)}"
    try:
        rows = compare(grid, progress=progress, execution=execution, label=label)
    except CellsFailed as err:  # the sweep goes on to the next setting: say so where its log is read
        error = str(err).splitlines()[0]
        print(f"{label}: failed: {error}", file=sys.stderr, flush=True)
        return Outcome(optimizer, values, Path(grid.out), {}, error=error)
    per_task = {task: _task_summary([r for r in rows if r["task"] == task]) for task in grid.tasks}
    outcome = Outcome(optimizer, values, Path(grid.out), per_task)
    if progress:
        print(f"sweep: {optimizer} {_describe(values)}: mean return {outcome.score()[0]:.4g}, "
              f"success {outcome.score()[1]:.3g}", flush=True)
    return outcome


def _task_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean return and success over the runs (mean over seeds of per-seed episode means, as the report's
    [b] cells), each with its 95% cluster-bootstrap interval, and the mean validation loss."""
    summary: dict[str, Any] = {"seeds": len(rows)}
    for key, column, bounds in (("return", "mean_return", None), ("success", "success_rate", (0.0, 1.0))):
        per_seed = [episode_values(r, key) for r in rows]  # eval.json's records name them "return", "success"
        if rows and all(values is not None for values in per_seed):
            summary[key] = cluster_bootstrap([list(v.values()) for v in per_seed], bounds=bounds)
        else:  # no per-episode records: the per-run means, without an interval
            summary[key] = (sum(r[column] for r in rows) / len(rows), math.nan, math.nan)
    losses = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    summary["val_loss"] = sum(losses) / len(losses) if losses else math.nan
    return summary


def _choose(outcomes: list[Outcome]) -> Outcome | None:
    """The highest mean return, then success; the first in sweep order among equals."""
    finished = [o for o in outcomes if not o.error]
    return max(finished, key=Outcome.score) if finished else None


HEADINGS = {"lr": "lr", "weight_decay": "weight decay", "damping": "damping"}
FLAGS = {"lr": "--lrs", "weight_decay": "--weight-decays", "damping": "--dampings"}  # where more values go


def _describe(values: dict[str, float]) -> str:
    return ", ".join(f"{HEADINGS[k]} {v:g}" for k, v in values.items())


def _check_same_sweep(config: SweepConfig, saved_file: Path) -> None:
    """A resumed sweep may try more values, bases, tasks and seeds; anything else about its grid
    would make earlier settings incomparable with new ones (and their demonstrations stale)."""
    if not saved_file.exists():
        return
    values = read_saved(saved_file)
    if "grid" in values:  # a sweep saved before the grid held a CollectConfig
        values = {**values, "grid": upgrade_config_json(values["grid"])}
    saved = config_from_dict(SweepConfig, values, where=str(saved_file))
    changed = changed_settings(config_items(saved.grid), config_items(config.grid), skip=GROWABLE)
    refuse_changes(changed, f"{saved_file.parent} holds a sweep made with other settings", "use a new --out directory")


def sweep_markdown(config: SweepConfig, outcomes: dict[str, list[Outcome]], chosen: dict[str, dict[str, float]]) -> str:
    """sweep.md: how the values were chosen, every setting's numbers, and the choices."""
    grid = config.grid
    first_seed = TUNING_FIRST_SEED + grid.first_seed
    eval_seed = config.tuning_eval_seed()
    tasks = grid.tasks
    lines = [
        "# Optimizer hyperparameter sweep", "",
        "Chosen as the DoPr paper does: for each base optimizer X every learning rate x weight decay, the best by "
        "mean closed-loop return (mean over tasks of the mean over training seeds of each run's mean return; ties: "
        "success rate); DoPr-X then starts from X's choice and only its damping is swept, chosen the same way.", "",
        f"Every setting: {grid.seeds} training seeds ({first_seed}..{first_seed + grid.seeds - 1}), "
        f"{grid.demo.episodes} demonstrations per task, {grid.train.steps} training steps, "
        f"{grid.eval.episodes} evaluation episodes per run on the tuning reset seeds {eval_seed:,}–"
        f"{eval_seed + grid.eval.episodes - 1:,} (envs.seeds.TUNING; never the seeds an experiment reports on). "
        f"Intervals: 95% cluster bootstrap over seeds and episodes (B={BOOTSTRAP_RESAMPLES}). Each setting's "
        "directory holds its comparison (summary.md: the settings its runs used, every metric).", ""]
    columns = [f"{task} {what}" for task in tasks for what in ("return", "success", "val loss")]
    for name, found in outcomes.items():
        swept = ["damping"] if is_dopr(name) else ["lr", "weight_decay"]
        title = f"## {name}"
        if is_dopr(name) and found:
            title += f" (at {base_of(name)}'s choice: {_describe({k: found[0].values[k] for k in ('lr', 'weight_decay')})})"
        headings = [HEADINGS[k] for k in swept] + columns + ["mean return", "chosen"]
        lines += [title, "", "| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
        best = chosen.get(name)
        for outcome in found:
            values = " | ".join(f"{outcome.values[k]:g}" for k in swept)
            if outcome.error:
                cells = [f"failed: {outcome.error.replace('|', '/')}"] + [""] * (len(columns) - 1) + ["n/a", ""]
                lines.append(f"| {values} | " + " | ".join(cells) + " |")
                continue
            cells = []
            for task in tasks:
                summary = outcome.per_task[task]
                cells += [_interval(*summary["return"]), _interval(*summary["success"]), f"{summary['val_loss']:.3g}"]
            mark = "**chosen**" if best == outcome.values else ""
            lines.append(f"| {values} | " + " | ".join(cells) + f" | {outcome.score()[0]:.4g} | {mark} |")
        lines.append("")
    lines += [f"## Chosen ({SETTINGS_FILE}: compare's optimizer_settings)", "", "| optimizer | lr | weight decay | damping |",
              "|---|---|---|---|"]
    for name, values in chosen.items():
        damping = f"{values['damping']:g}" if "damping" in values else "—"
        lines.append(f"| {name} | {values['lr']:g} | {values['weight_decay']:g} | {damping} |")
    notes = edge_notes(outcomes, chosen)
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def edge_notes(outcomes: dict[str, list[Outcome]], chosen: dict[str, dict[str, float]]) -> list[str]:
    """A line for each chosen value that is the largest or smallest of several tried (a weight decay of 0
    excepted): the best may lie beyond it, so the sweep says so rather than let the choice pass as an optimum."""
    notes = []
    for name, values in chosen.items():
        tried = [outcome.values for outcome in outcomes.get(name, []) if not outcome.error]
        for key in ("damping",) if is_dopr(name) else ("lr", "weight_decay"):
            options = sorted({v[key] for v in tried})
            value = values[key]
            if len(options) < 2 or value not in (options[0], options[-1]) or (key == "weight_decay" and value == 0):
                continue
            side = "largest" if value == options[-1] else "smallest"
            notes.append(f"{name}: {HEADINGS[key]} {value:g} is the {side} value tried that trained, so the best "
                         f"may lie beyond it (add values to {FLAGS[key]}).")
    return notes


def _interval(mean: float, low: float, high: float) -> str:
    return f"{mean:.4g}" if not math.isfinite(low) else f"{mean:.4g} [{low:.4g}, {high:.4g}]"
