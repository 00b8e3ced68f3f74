"""The comparison harness: tasks x optimizers x seeds -> one trained, evaluated run per cell.

    DIR/compare_config.json                    the grid's resolved settings (CompareConfig's JSON form)
    DIR/data/<task>.hdf5                       demonstrations, collected once per task (or --data)
    DIR/runs/<task>/<optimizer>/seed<k>/       a training run (config.json, metrics.jsonl, checkpoint.pt)
                                    eval.json  its closed-loop evaluation: the cell is done when this exists
    DIR/results.csv, DIR/summary.md, DIR/*.png written from the eval.json files alone (dopr_robot.report)
    DIR/replication/, DIR/replication.md       after ``--replicate``: the same grid on fresh data

With several demonstration counts (``"demo": {"episodes": [10, 25, 50]}``) each count is a comparison of its
own, laid out as above, in ``DIR/demos<N>/`` (resumable, replicable one by one; collected from the
same reset seeds, so a smaller count's demonstrations are the first episodes of a larger one's), and
``DIR`` holds the grid's ``compare_config.json``, the runs of every count in one ``results.csv``, a
``summary.md`` with each count's paired DoPr-X - X differences side by side, and the figures over
counts (:func:`dopr_robot.report.write_counts_report`).

With remedies beside none (``--remedies none,noise:0.1,dagger:3``) the cells are (task, optimizer,
remedy, seed): none's are laid out as above in ``DIR`` (so a comparison made without remedies resumes
and grows), every other remedy is a comparison of its own in ``DIR/remedies/<remedy>/`` (``noise0.1``,
``dagger3``) with its own data/, runs/ and report, and ``DIR`` holds one ``results.csv`` (a
``remedy`` column) and a ``summary.md`` over remedies (:func:`dopr_robot.report.files.write_remedies_report`).
``noise:SIGMA`` trains on demonstrations collected with action noise SIGMA (same episodes and reset
seeds as the clean ones, one collection per task and SIGMA); ``dagger:R`` runs R DAgger rounds
(:mod:`dopr_robot.dagger`) in the cell's directory from the clean demonstrations, with the cell's
optimizer and seed: round 0 is none's cell trained again, then each round relabels ``dagger_episodes``
episodes of the policy and trains ``dagger_steps`` more steps. Every remedy's missing cells run as one
grid, with the same seeds and evaluation episodes.

Every cell of a task trains on the same demonstrations with the same settings (one ``TrainConfig``,
the grid's template), apart from the optimizer and the seed, and is evaluated with the same
``EvalConfig`` on the same evaluation seeds. Only where ``optimizer_settings`` says so does an
optimizer get its own learning rate, weight decay, damping, optimizer options, warmup or gradient
clip (:data:`PER_OPTIMIZER`): the values a sweep chose for it (``dopr-robot sweep``). Seed k
initializes the policy identically for every optimizer, so DoPr-X and X are compared pairwise, seed
by seed. A killed ``compare`` resumes: finished cells are skipped, a cell with a checkpoint continues
from it. Cells run one at a time, in local worker processes or as Ray tasks (:mod:`dopr_robot.grid`),
with the same results.

The JSON form (``--config FILE.json``, and what ``compare_config.json`` holds)::

    {"out": "runs/cmp", "tasks": ["Push-v0"], "optimizers": ["adamw", "dopr-adamw"], "seeds": 5,
     "optimizer_settings": {"dopr-adamw": {"damping": 0.1}}, "first_seed": 0,
     "data": {}, "demo": {"episodes": 50, "seed": 0, "noise": 0.0, "success_only": false, "max_attempts": 0},
     "train": {"steps": 2000, "lr": 0.001, "ema_decay": 0.995, "optimizer_options": {}, ...},
     "eval": {"episodes": 50, "seed": 1000000, "num_envs": 8, ...}}

``train`` holds every ``dopr-robot train`` option but ``data``, ``out``, ``optimizer`` and ``seed``
(filled per cell); on the command line they keep their names (``--lr``, ``--ema-decay``). ``eval``
holds the evaluation options; on the command line they carry ``eval-`` (``--eval-episodes``). ``demo``
holds the collection of each task's demonstrations (``dopr-robot collect``'s options), as ``--demo-*``
(``--demo-episodes``, ``--demo-success-only``). Files with the earlier flat ``demo_episodes``,
``demo_noise`` and ``demo_seed`` are read as today's (:func:`upgrade_config_json`).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import h5py

import demos
import envs
from demos.hdf5 import FLAT_OBS_KEY
from dopr_robot.atomic import check_directory_destination, write_json_atomic
from dopr_robot.checkpoint import CHECKPOINT_NAME
from dopr_robot.collect_config import CollectConfig
from dopr_robot.config import (
    EvalConfig,
    SettingError,
    TrainConfig,
    check_config_dict,
    check_ranges,
    check_value_type,
    config_from_dict,
    config_items,
    config_to_dict,
    json_object_or_file,
    nested,
    option,
    resolve_config,
    same_file,
)
from dopr_robot.dagger import CONFIG_FILE as DAGGER_CONFIG
from dopr_robot.dagger import BCLearner, DaggerConfig, check_task, prepare, run_dagger
from dopr_robot.errors import UserError
from dopr_robot.evaluate import evaluate_checkpoint, make_evaluator
from dopr_robot.grid import Execution, run_cells
from dopr_robot.optim import OPTIMIZERS, dopr_only_arguments, is_dopr
from dopr_robot.report import write_counts_report, write_replication_report, write_report
from dopr_robot.report.files import write_remedies_report
from dopr_robot.run_dir import changed_settings, read_saved, refuse_changes
from envs import seeds as seed_ranges

CONFIG_FILE = "compare_config.json"
EVAL_FILE = "eval.json"  # a cell's evaluation: the cell is done when it exists
REPLICATION_DIR = "replication"
REPLICATION_REPORT = "replication.md"

# TrainConfig fields that differ from cell to cell: compare fills them.
PER_CELL = ("data", "out", "optimizer", "seed")
# TrainConfig fields that optimizer_settings may set for one optimizer (what a sweep tunes per optimizer).
PER_OPTIMIZER = ("lr", "weight_decay", "damping", "optimizer_options", "warmup_steps", "grad_clip")
# With several demonstration counts, count N is the comparison in DIR/demos<N>/.
DEMO_COUNT_DIR = "demos{}"
# With remedies beside "none", remedy noise:0.1 is the comparison in DIR/remedies/noise0.1/.
REMEDY_DIR = "remedies"
REMEDIES_ALLOWED = "none, noise:SIGMA (SIGMA > 0), dagger:ROUNDS (ROUNDS >= 1)"


def parse_remedy(text: str) -> tuple[str, float]:
    """``"none"`` -> ("none", 0), ``"noise:0.1"`` -> ("noise", 0.1), ``"dagger:3"`` -> ("dagger", 3);
    anything else is one UserError line naming what is allowed."""
    kind, _, value = str(text).partition(":")
    try:
        if kind == "none" and not value:
            return "none", 0
        if kind == "noise" and math.isfinite(float(value)) and float(value) > 0:
            return "noise", float(value)
        if kind == "dagger" and int(value) >= 1:
            return "dagger", int(value)
    except ValueError:
        pass
    raise UserError(f"--remedies: {text!r} is not a remedy; allowed: {REMEDIES_ALLOWED}")


def remedy_directory(remedy: str) -> str:
    """``noise:0.1`` -> ``noise0.1``: the remedy's comparison directory under DIR/remedies/."""
    return remedy.replace(":", "")


def train_template(**options: Any) -> TrainConfig:
    """The training settings of every cell of a grid: a TrainConfig whose per-cell fields (data,
    out, optimizer, seed) are left for ``compare`` to fill."""
    return TrainConfig(data="", out="", **options)


@dataclass(frozen=True)
class CompareConfig:
    out: str = option(help="output directory (data/, runs/, results.csv, summary.md, plots)")
    tasks: list = option(["Reach-v0", "Push-v0"], help="tasks to compare on")
    optimizers: list = option(["adamw", "dopr-adamw"], help="optimizers (registry names)")
    optimizer_settings: dict = option(
        {}, parse=json_object_or_file, metavar="JSON|FILE",
        help="per optimizer, its own values of " + ", ".join(PER_OPTIMIZER) + " over the training template's, as "
             'JSON or a JSON file (e.g. a sweep\'s optimizer_settings.json): \'{"muon": {"lr": 0.02}, '
             '"dopr-muon": {"lr": 0.02, "damping": 0.1}}\'; optimizer_options are merged into the template\'s')
    remedies: list = option(
        ["none"], help=f"data-side remedies, a grid axis beside the optimizer ({REMEDIES_ALLOWED}): none = the "
                       "demonstrations as collected; noise:SIGMA = demonstrations collected with action noise SIGMA; "
                       "dagger:ROUNDS = ROUNDS DAgger rounds after training on the demonstrations. Each remedy beside "
                       f"none is a comparison in OUT/{REMEDY_DIR}/<remedy>/ (none stays in OUT/)")
    dagger_episodes: int = option(10, help="dagger:ROUNDS remedies: the learner's episodes relabelled per round")
    dagger_steps: int = option(0, help="dagger:ROUNDS remedies: training steps per round after the first training "
                                       "(0: steps // 4)")
    dagger_beta0: float = option(0.5, help="dagger:ROUNDS remedies: round r executes the expert's action with "
                                           "probability DAGGER_BETA0**r, as `dagger --beta0` (0: the policy alone)")
    seeds: int = option(5, help="training seeds per (task, optimizer): first_seed .. first_seed + seeds - 1")
    first_seed: int = option(0, help="the first training seed")
    data: dict = option({}, help='existing demonstrations per task as JSON, e.g. \'{"Push-v0": "push.hdf5"}\'')
    demo: CollectConfig = nested(
        CollectConfig, prefix="demo-",
        help="demonstrations collected for each task that --data does not give: the `collect` options, as --demo-* "
             f"(several --demo-episodes: one comparison per count in OUT/{DEMO_COUNT_DIR.format('<N>')}/ and a "
             "summary over counts in OUT/)")
    train: TrainConfig = nested(
        TrainConfig, factory=train_template, exclude=PER_CELL,
        why_excluded="compare sets it for each cell (use data, out, optimizers and seeds)",
        help="training, the same for every cell: every `train` option but --data, --out, --optimizer, --seed")
    eval: EvalConfig = nested(EvalConfig, prefix="eval-", exclude=("size", "fps"), why_excluded="compare makes no videos",
                              help="closed-loop evaluation of every run: the `eval` options, as --eval-*")

    def __post_init__(self) -> None:
        if self.eval.actions_per_chunk > self.train.chunk:  # refused before any training, not at the first evaluation
            raise SettingError(lambda n: f"{n('eval.actions_per_chunk')} {self.eval.actions_per_chunk} exceeds "
                                         f"{n('train.chunk')} {self.train.chunk}: a plan holds {n('train.chunk')} "
                                         "actions; give at most that many")
        if self.eval.flow_steps and not self.train.policy.startswith("flow-"):
            raise UserError(f"--eval-flow-steps sets a flow policy's sampler; --policy {self.train.policy} is a "
                            "regressor: drop --eval-flow-steps")
        unknown = [name for name in self.optimizers if name not in OPTIMIZERS]
        if unknown:
            raise UserError(f"unknown optimizer(s) {', '.join(unknown)}; valid: {', '.join(OPTIMIZERS)}")
        known_tasks = envs.list_tasks()
        bad = [task for task in self.tasks if task not in known_tasks]
        if bad:
            raise UserError(f"unknown task(s) {', '.join(bad)}; valid: {', '.join(known_tasks)}")
        if not self.tasks or not self.optimizers:
            raise UserError("need at least one task and one optimizer")
        check_ranges(self, at_least_1=("seeds",), at_least_0=("first_seed",))
        counts = self.demo_counts()
        not_paths = {task: path for task, path in self.data.items() if not isinstance(path, str) or not path}
        if not_paths:
            raise SettingError(lambda n: f"{n('data')} maps each task to a demonstrations file path (a JSON string), "
                                         f"got {json.dumps(not_paths)}; e.g. '{{\"Reach-v0\": \"reach.hdf5\"}}'")
        extra = sorted(set(self.data) - set(self.tasks))
        if extra:
            raise SettingError(lambda n: f"{n('data')} names task(s) {', '.join(extra)} that are not in {n('tasks')}")
        if self.data and isinstance(self.demo.episodes, list):
            raise SettingError(lambda n: f"{n('data')} gives the demonstrations, so it cannot be used with several "
                                         f"{n('demo.episodes')} ({', '.join(map(str, counts))}): collect them (drop "
                                         f"{n('data')}) or give one count")
        placeholder = train_template()
        set_here = [f"{name}={getattr(self.train, name)!r}" for name in PER_CELL
                    if getattr(self.train, name) != getattr(placeholder, name)]
        if set_here:
            raise UserError(f"the training template sets {', '.join(set_here)}, which compare sets for each cell: "
                            "build it with train_template(...) and use CompareConfig's data, out, optimizers and seeds")
        self._check_optimizer_settings()
        self._check_remedies()
        for optimizer in self.optimizers:  # TrainConfig checks the options against each optimizer of the grid
            try:
                self.cell_config(optimizer, 0, Path(""), Path(""))
            except SettingError as err:  # a template's field, as this config names it (a cell's optimizer: optimizers)
                raise err.renamed(lambda path: "optimizers" if path == "optimizer" else f"train.{path}") from None
        demo = range(self.demo.seed, self.demo.seed + self.demo.attempts(max(counts)))
        allowed = [seed_ranges.ranges()[name] for name in ("demonstrations", "replication demonstrations")]
        if not any(r.start <= demo.start and demo.stop <= r.stop for r in allowed):
            raise SettingError(lambda n: f"{n('demo.seed')} {self.demo.seed} with {n('demo.episodes')} {max(counts)} "
                                         f"collects from reset seeds {_span(demo)}, outside the demonstration seeds "
                                         f"{_span(allowed[0])} ({_span(allowed[1])} for --replicate; see envs/seeds.py)")
        evaluation = range(self.eval.seed, self.eval.seed + self.eval.episodes)
        if evaluation.start < demo.stop and demo.start < evaluation.stop:
            raise SettingError(lambda n: f"the evaluation seeds {_span(evaluation)} overlap the demonstration seeds "
                                         f"{_span(demo)}: evaluate on episodes the policy was not trained on "
                                         f"({n('eval.seed')})")

    def _check_optimizer_settings(self) -> None:
        """optimizer_settings names registry optimizers (not necessarily all in the grid) and only
        PER_OPTIMIZER fields, each of TrainConfig's type; each entry's TrainConfig is then built and
        checked by TrainConfig itself."""
        unknown = [name for name in self.optimizer_settings if name not in OPTIMIZERS]
        if unknown:
            raise UserError(f"optimizer_settings names unknown optimizer(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(OPTIMIZERS)}")
        for name, settings in self.optimizer_settings.items():
            where = f"optimizer_settings.{name}"
            if not isinstance(settings, dict):
                raise UserError(f"{where} must be a JSON object of settings like {{\"lr\": 0.001}}, got {settings!r}")
            other = [key for key in settings if key not in PER_OPTIMIZER]
            if other:
                raise UserError(f"{where} sets {', '.join(other)}, which cannot differ between optimizers; "
                                f"per-optimizer settings: {', '.join(PER_OPTIMIZER)}")
            for key, value in settings.items():
                check_value_type(TrainConfig, key, value, f"{where}.{key}")
            dopr_only = dopr_only_arguments(settings.get("optimizer_options", {}))
            if "damping" in settings:
                dopr_only.insert(0, "damping")
            if dopr_only and not is_dopr(name):
                raise UserError(f"{where} sets {', '.join(dopr_only)}, which only dopr-* optimizers use; {name} is not one")
            try:
                self.cell_config(name, 0, Path(""), Path(""))
            except SettingError as err:  # the field as this file names it: optimizer_settings.<name>.lr
                raise err.renamed(lambda path: "optimizers" if path == "optimizer" else f"{where}.{path}") from None
            except UserError as err:
                raise UserError(f"{where}: {err}") from None

    def _check_remedies(self) -> None:
        """Each remedy parses, once; noise remedies collect (no --data, clean --demo-noise); dagger remedies
        evaluate nothing during training and have valid round settings."""
        parsed = [parse_remedy(r) for r in self.remedies]
        if not parsed or len(set(self.remedies)) < len(self.remedies):
            raise UserError(f"--remedies must list each remedy once, got {','.join(map(str, self.remedies)) or 'none'}")
        kinds = {kind for kind, _ in parsed}
        if len(self.remedies) > 1 and isinstance(self.demo.episodes, list):
            raise UserError("--remedies with several --demo-episodes is not supported: give one count")
        noise = [value for kind, value in parsed if kind == "noise"]
        if noise and (self.data or self.demo.noise not in (0, *noise[:1])):
            raise UserError("--remedies noise:SIGMA collects demonstrations with noise SIGMA: it needs collected clean "
                            "demonstrations (no --data, --demo-noise 0)")
        if "dagger" in kinds:
            if self.train.eval_every:
                raise UserError("--eval-every does not apply to dagger:ROUNDS remedies (DAgger evaluates no policy "
                                "while it trains): drop --eval-every")
            rounds = max(value for kind, value in parsed if kind == "dagger")
            self.dagger_config(self.tasks[0], self.cell_config(self.optimizers[0], 0, Path(""), Path("")), Path(""),
                               Path(""), rounds)  # DaggerConfig's own checks (the round settings, its seed range)

    def remedy(self) -> str:
        """This comparison's one remedy (a grid of several runs each in its own comparison, see by_remedy)."""
        return self.remedies[0] if len(self.remedies) == 1 else "none"

    def by_remedy(self) -> dict[str, "CompareConfig"]:
        """With several remedies: remedy -> its comparison (none in OUT/, the others in
        OUT/remedies/<remedy>/), else {} (one remedy runs in OUT/ itself)."""
        if len(self.remedies) == 1:
            return {}
        return {r: replace(self, remedies=[r], out=self.out if r == "none" else
                           str(Path(self.out) / REMEDY_DIR / remedy_directory(r))) for r in self.remedies}

    def collection(self) -> CollectConfig:
        """The demonstrations this comparison's cells train on: ``demo``, with noise SIGMA for noise:SIGMA."""
        kind, value = parse_remedy(self.remedy())
        return replace(self.demo, noise=value) if kind == "noise" else self.demo

    def dagger_config(self, task: str, cell: TrainConfig, data: Path, out: Path, rounds: int) -> DaggerConfig:
        """A dagger:ROUNDS cell's DAgger run: the cell's training settings, the grid's round settings."""
        return DaggerConfig(out=str(out), task=task, data=str(data), rounds=rounds, episodes_per_round=self.dagger_episodes,
                            beta0=self.dagger_beta0, steps_per_round=self.dagger_steps or max(1, self.train.steps // 4),
                            num_envs=self.eval.num_envs, train=replace(cell, data="", out=""))

    def remedy_budget(self, remedy: str) -> str:
        """What a remedy costs in data and training, for the summary."""
        kind, value = parse_remedy(remedy)
        if kind == "dagger":
            steps = self.dagger_steps or max(1, self.train.steps // 4)
            return (f"{remedy}: {value} round{'s' * (value > 1)} of {self.dagger_episodes} relabelled episodes "
                    f"(beta0 {self.dagger_beta0}) "
                    f"and {steps} steps each, after {self.train.steps} steps on the demonstrations "
                    f"({self.train.steps + value * steps} steps in all)")
        if kind == "noise":
            return f"{remedy}: the demonstrations collected with action noise {value}, {self.train.steps} steps"
        return f"none: the demonstrations as collected, {self.train.steps} steps"

    def demo_counts(self) -> list[int]:
        """The demonstration counts: one, or the several of a grid over counts."""
        return self.demo.counts()

    def by_demo_count(self) -> dict[int, "CompareConfig"]:
        """With several counts: count -> the comparison of that count (in DIR/demos<N>/), else {}."""
        if not isinstance(self.demo.episodes, list):
            return {}
        return {n: replace(self, out=str(Path(self.out) / DEMO_COUNT_DIR.format(n)), demo=replace(self.demo, episodes=n))
                for n in sorted(self.demo.episodes)}

    def cells(self) -> list[tuple[str, str, int]]:
        """Every (task, optimizer, seed) whose run lies in this directory, in the order they run (with
        remedies beside none, those of none; the others' lie in their own comparisons)."""
        if len(self.remedies) > 1 and "none" not in self.remedies:
            return []
        return [(task, optimizer, seed) for task in self.tasks for optimizer in self.optimizers
                for seed in range(self.first_seed, self.first_seed + self.seeds)]

    def run_dir(self, task: str, optimizer: str, seed: int) -> Path:
        return Path(self.out) / "runs" / task / optimizer / f"seed{seed}"

    def cell_config(self, optimizer: str, seed: int, data: Path, out: Path) -> TrainConfig:
        """The one place where cells differ: optimizer (with its optimizer_settings), seed, and (per
        task) the data."""
        settings = dict(self.optimizer_settings.get(optimizer, {}))
        if "optimizer_options" in settings:
            settings["optimizer_options"] = {**self.train.optimizer_options, **settings["optimizer_options"]}
        return replace(self.train, data=str(data), out=str(out), optimizer=optimizer, seed=seed, **settings)


def _span(seeds: range) -> str:
    return f"{seeds.start:,}..{seeds.stop - 1:,}"


def compare(config: CompareConfig, progress: bool = True, execution: Execution = Execution(),
            overwrite: bool = False, label: str = "compare") -> list[dict[str, Any]]:
    """Check everything that can be checked (:func:`check_comparison`) before writing anything, then
    run every missing cell (one at a time, in local processes or on Ray: ``execution``) and write the
    report. Returns the result rows. ``overwrite``: make the comparison afresh in ``config.out`` (see
    :func:`check_comparison`). ``label`` starts the progress bar and each line of ``progress=False``'s
    per-cell log (a sweep names its setting there)."""
    check_comparison(config, overwrite)
    return _compare(config, progress, execution, overwrite, label)


def _compare(config: CompareConfig, progress: bool, execution: Execution, overwrite: bool,
             label: str) -> list[dict[str, Any]]:
    out = Path(config.out)
    _start(config, overwrite)
    if isinstance(config.demo.episodes, list):  # one comparison per count, then the summary over counts
        counts = config.by_demo_count()
        for count in counts.values():
            _compare(count, progress, execution, overwrite, label)
        return write_counts_report(out, {n: Path(count.out) for n, count in counts.items()})
    remedies = config.by_remedy()
    if remedies:  # each remedy beside none a comparison of its own, their cells run as one grid
        return _compare_remedies(config, remedies, progress, execution, overwrite, label)
    data = {task: demonstrations(config, task, out, progress, overwrite) for task in config.tasks}
    missing = _missing_cells(config)
    run_cells(run_cell, config, missing, data, execution, progress, done=len(config.cells()) - len(missing),
              label=label)
    return write_report(out)


@dataclass(frozen=True)
class RemedyGrid:
    """The cells of several remedies' comparisons run as one grid (so workers and Ray tasks overlap
    remedies): a cell's task is ``<task>@<remedy>``, as the grid's progress and failures name it."""

    out: str
    grids: dict[str, CompareConfig]


def run_remedy_cell(grid: RemedyGrid, key: str, optimizer: str, seed: int, data: Path, device: str = "auto") -> None:
    """The cell ``(task, optimizer, seed)`` of remedy ``key = task@remedy``; top-level, like :func:`run_cell`."""
    task, _, remedy = key.partition("@")
    run_cell(grid.grids[remedy], task, optimizer, seed, data, device)


def _compare_remedies(config: CompareConfig, remedies: dict[str, CompareConfig], progress: bool,
                      execution: Execution, overwrite: bool, label: str) -> list[dict[str, Any]]:
    """Every remedy's directory, config and demonstrations; every missing cell in one grid; each
    remedy's report in its directory, and the summary over remedies in ``config.out``."""
    data, missing = {}, []
    for remedy, grid in remedies.items():
        if remedy != "none":  # none's cells lie in config.out, whose config _compare saved
            _start(grid, overwrite)
        for task in grid.tasks:
            data[f"{task}@{remedy}"] = demonstrations(grid, task, Path(grid.out), progress, overwrite)
        missing += [(f"{task}@{remedy}", optimizer, seed) for task, optimizer, seed in _missing_cells(grid)]
    done = sum(len(grid.cells()) for grid in remedies.values()) - len(missing)
    run_cells(run_remedy_cell, RemedyGrid(config.out, remedies), missing, data, execution, progress, done=done,
              label=label)
    for remedy, grid in remedies.items():
        if remedy != "none":
            write_report(grid.out)
    return write_remedies_report(config.out, {r: Path(grid.out) for r, grid in remedies.items()},
                                 {r: config.remedy_budget(r) for r in remedies})


def pending_cells(config: CompareConfig, progress: bool = True) -> tuple[dict[str, Path], list[tuple[str, str, int]]]:
    """A comparison of one demonstration count made ready to run: checked (:func:`check_comparison`),
    its config saved and its demonstrations collected; returns the demonstration file per task and
    the cells that have no eval.json yet."""
    check_comparison(config)
    _start(config, overwrite=False)
    data = {task: demonstrations(config, task, Path(config.out), progress) for task in config.tasks}
    return data, _missing_cells(config)


def _missing_cells(config: CompareConfig) -> list[tuple[str, str, int]]:
    return [cell for cell in config.cells() if not (config.run_dir(*cell) / EVAL_FILE).exists()]


def check_comparison(config: CompareConfig, overwrite: bool = False) -> None:
    """Every check that can fail, before anything is written (a refused command leaves nothing behind).

    ``config.out`` must be a directory that can be written and is new, empty or this comparison's
    (the same settings; see :data:`GROWABLE`); the files given with ``data`` must be readable
    demonstrations of their task; demonstrations collected there before must be the collection this
    comparison asks for (their recorded task, episodes, seed, noise); every cell's eval.json must be
    that cell's. ``overwrite`` lets ``config.out`` hold anything: the comparison is made afresh there
    (every cell trained and evaluated again, demonstrations that differ collected again, the report
    replaced), and files compare does not write are kept.
    """
    check_experts(config)
    for task, path in config.data.items():
        check_data_file(task, path, config.train.obs_keys)
    subs = [*config.by_demo_count().values(), *(c for r, c in config.by_remedy().items() if r != "none")]
    for grid in (config, *subs):  # with several counts or remedies, each one's directory too
        out = check_directory_destination(grid.out, what="comparison (--out)")
        if overwrite:
            continue
        _check_directory(grid, out)
        if isinstance(grid.demo.episodes, list):
            continue  # its data and cells are its counts'
        for task in (t for t in grid.tasks if t not in grid.data):
            path = out / "data" / f"{task}.hdf5"
            check_other_collection(grid, task, path)
        for cell in grid.cells():
            _check_cell_evaluation(grid, *cell)


def _check_directory(config: CompareConfig, out: Path) -> None:
    """``out`` is new, empty, or holds this comparison (:func:`_check_same_comparison`)."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / CONFIG_FILE).exists():
        raise UserError(f"{out} is not empty and holds no comparison (no {CONFIG_FILE}); choose another --out, or "
                        "pass --overwrite to make the comparison there (only the files compare writes are replaced)")
    _check_same_comparison(config, out / CONFIG_FILE)


def _check_cell_evaluation(config: CompareConfig, task: str, optimizer: str, seed: int) -> None:
    """A cell's eval.json, when there is one, is that cell's evaluation written by compare (a plain
    ``dopr-robot eval`` of the cell writes the same file without the cell's record)."""
    path = config.run_dir(task, optimizer, seed) / EVAL_FILE
    if not path.exists():
        return
    try:
        cell = json.loads(path.read_text())["cell"]
        ours = (cell["task"], cell["optimizer"], cell["seed"], cell.get("remedy", "none")) == \
            (task, optimizer, seed, config.remedy())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        ours = False
    if not ours:
        raise UserError(f"{path} is not this comparison's evaluation of the cell ({task}, {optimizer}, seed {seed}); "
                        "a plain `dopr-robot eval` of the cell writes that file. Move it elsewhere or delete it: the "
                        "same command then evaluates the cell again from its checkpoint")


def _start(config: CompareConfig, overwrite: bool) -> None:
    """Make the directory and save the config; with ``overwrite``, first remove what earlier cells
    wrote (a run's own files only), so that every cell is made again and no stale one is reported."""
    from dopr_robot.train import RUN_FILES  # training's import cost only where a comparison runs

    out = Path(config.out)
    if overwrite:
        for run_dir in out.glob("runs/*/*/seed*"):
            # a dagger:ROUNDS cell's run: its rounds and DAgger config beside the evaluation
            for path in [*(run_dir / name for name in (*RUN_FILES, DAGGER_CONFIG)), *run_dir.glob("round_*")]:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_FILE, config_to_dict(config))


def run_cell(config: CompareConfig, task: str, optimizer: str, seed: int, data: Path, device: str = "auto") -> None:
    """One cell: train on ``device`` (resuming from its checkpoint when there is one), evaluate, and
    write its eval.json atomically (the cell is done when that file exists). Top-level, so that
    worker processes and Ray tasks can import it."""
    from dopr_robot.train import train

    run_dir = config.run_dir(task, optimizer, seed)
    settings = config.eval
    started = time.perf_counter()
    kind, rounds = parse_remedy(config.remedy())
    if kind == "dagger":
        _dagger_cell(config, task, optimizer, seed, data, device, rounds)
        return
    resume = (run_dir / CHECKPOINT_NAME).exists()
    cell = config.cell_config(optimizer, seed, data, run_dir)
    # --eval-every: evaluations during training on the grid's evaluation episodes, without the expert.
    evaluator = make_evaluator(task, replace(settings, with_expert=False), obs_keys=cell.obs_keys) \
        if cell.eval_every else None
    try:
        trained = train(cell, evaluator=evaluator, resume=resume, overwrite=not resume, progress=False, device=device)
    except UserError as err:
        if resume and not _readable_checkpoint(run_dir):
            raise UserError(f"{err}; delete the cell's directory {run_dir} and the same command trains the cell "
                            "again") from None
        raise
    result = evaluate_checkpoint(run_dir, settings, task=task, device=device)
    record = result.to_dict()
    # A resumed cell's time includes the training its checkpoint carried from the calls before (the time a
    # killed call spent after its last checkpoint is not counted: the resume redoes that work and counts it).
    wall_time_s = time.perf_counter() - started + trained.resumed_elapsed_s
    record["cell"] = {"task": task, "optimizer": optimizer, "seed": seed, "remedy": config.remedy(),
                      "expert_labels": _transitions(data), "wall_time_s": round(wall_time_s, 2), "resumed": resume}
    write_json_atomic(run_dir / EVAL_FILE, record)


def _transitions(data: Path) -> int:
    """The demonstration transitions in ``data``: the expert labels a cell trained on (the file's recorded
    total when it has one, else counted from the loaded episodes)."""
    try:
        with h5py.File(data, "r") as file:
            return int(file["data"].attrs["total"])
    except (OSError, KeyError, TypeError, ValueError):
        return sum(len(episode) for episode in demos.load(str(data)).episodes)


def _dagger_cell(config: CompareConfig, task: str, optimizer: str, seed: int, data: Path, device: str,
                 rounds: int) -> None:
    """A dagger:ROUNDS cell: DAgger in the cell's directory (round_<k>/, resumable round by round) from the
    cell's training settings, the last round's run evaluated; the cell is done when its eval.json exists."""
    run_dir = config.run_dir(task, optimizer, seed)
    started = time.perf_counter()
    resume = run_dir.exists() and any(run_dir.iterdir())
    settings = config.dagger_config(task, config.cell_config(optimizer, seed, data, run_dir), data, run_dir, rounds)
    prepare(settings)
    rounds_started = time.perf_counter()
    result = run_dagger(settings, lambda: envs.make(task), envs.make_expert(task),
                        BCLearner(settings, device=device), data)
    in_rounds_s = time.perf_counter() - rounds_started
    record = evaluate_checkpoint(result.final_run, config.eval, task=task, device=device).to_dict()
    # The rounds' time is what their done.json files record, over every call (a resumed cell's rounds finished
    # before included); this call adds its time outside them. What a killed call did that no file records (a
    # round's training after its last checkpoint, a rollout whose aggregate was never written) is not counted:
    # the resume redoes that work and counts it.
    wall_time_s = time.perf_counter() - started - in_rounds_s + result.wall_time_s
    record["cell"] = {"task": task, "optimizer": optimizer, "seed": seed, "remedy": config.remedy(),
                      "expert_labels": result.expert_labels, "dagger_rounds": result.rounds,
                      "train_steps_total": settings.train.steps + rounds * settings.steps_per_round,
                      "wall_time_s": round(wall_time_s, 2), "resumed": resume}
    write_json_atomic(run_dir / EVAL_FILE, record)


def _readable_checkpoint(run_dir: Path) -> bool:
    from dopr_robot.checkpoint import load_checkpoint

    try:
        load_checkpoint(run_dir)
    except UserError:
        return False
    return True


def load_compare_config(out: str | Path) -> CompareConfig:
    """The CompareConfig saved in ``out/compare_config.json`` (with ``out`` set to where it lies now)."""
    path = Path(out) / CONFIG_FILE
    if not path.exists():
        raise UserError(f"{out} holds no comparison (no {CONFIG_FILE})")
    values = upgrade_config_json(_upgrade_flat(read_saved(path)))
    return replace(config_from_dict(CompareConfig, values, where=str(path)), out=str(out))


def resolve_compare_config(args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> CompareConfig:
    """:func:`~dopr_robot.config.resolve_config` for a grid: its defaults < a ``--config`` file (of
    today's form, or with the flat demonstration keys of an earlier one) < the options given."""
    path = getattr(args, "config", None)
    try:
        values = json.loads(Path(path).read_text()) if path is not None else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        values = None  # resolve_config names the problem with the file
    upgraded = upgrade_config_json(values)
    if upgraded is values:
        return resolve_config(CompareConfig, args, exclude=exclude)
    check_config_dict(CompareConfig, upgraded, where=f"config file {path}")
    without_file = argparse.Namespace(**{**vars(args), "config": None})
    return resolve_config(CompareConfig, without_file, exclude=exclude, defaults=_dotted(CompareConfig, upgraded))


def _dotted(config_class: type, values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The JSON form of (part of) a config as ``dotted name -> value`` (``{"train.lr": 0.001}``)."""
    inner = {f.name: f.metadata["nested"] for f in fields(config_class) if "nested" in f.metadata}
    dotted: dict[str, Any] = {}
    for key, value in values.items():
        if key in inner and isinstance(value, dict):
            dotted.update(_dotted(inner[key], value, f"{prefix}{key}."))
        else:
            dotted[prefix + key] = value
    return dotted


# compare_config.json before the grid held a TrainConfig: flat, these keys were training settings and
# these evaluation settings (the training cadences were then steps // 10, // 4, // 40: today's defaults).
_FLAT_TRAIN = ("policy", "policy_options", "history", "chunk", "steps", "batch_size", "lr", "weight_decay", "damping")
_FLAT_EVAL = {"eval_episodes": "episodes", "eval_seed": "seed", "num_envs": "num_envs"}


# Before the grid held a CollectConfig, its demonstration settings were flat keys.
_FLAT_DEMO = {"demo_episodes": "episodes", "demo_noise": "noise", "demo_seed": "seed"}


def upgrade_config_json(values: Any) -> Any:
    """The JSON form of a grid whose demonstration settings are flat keys (``demo_episodes``, ...) with
    them under ``demo``; ``values`` itself when it has none."""
    if not isinstance(values, dict) or not set(_FLAT_DEMO) & set(values):
        return values
    values = dict(values)
    demo = {new: values.pop(old) for old, new in _FLAT_DEMO.items() if old in values}
    return {**values, "demo": {**demo, **(values.get("demo") or {})}}


def _upgrade_flat(values: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of a grid saved in the earlier, flat form (unchanged when already nested)."""
    if not isinstance(values, dict) or "train" in values or "eval" in values:
        return values
    values = dict(values)
    train = {key: values.pop(key) for key in _FLAT_TRAIN if key in values}
    evaluation = {new: values.pop(old) for old, new in _FLAT_EVAL.items() if old in values}
    return {**values, "train": train, "eval": evaluation}


# A resumed comparison may add tasks, optimizers and seeds (and change how many envs evaluate at
# once); anything else would make earlier cells incomparable with new ones.
GROWABLE = ("tasks", "optimizers", "remedies", "seeds", "eval.num_envs", "out")
# The dagger:ROUNDS remedies' settings: compared only where a grid has such a remedy.
DAGGER_SETTINGS = ("dagger_episodes", "dagger_steps", "dagger_beta0")


def _check_same_comparison(config: CompareConfig, saved_file: Path) -> None:
    if not saved_file.exists():
        return
    saved_config = load_compare_config(saved_file.parent)
    saved = config_items(saved_config)
    # A grid over demonstration counts may add counts (each count's directory checks its own settings).
    growable = GROWABLE
    if isinstance(config.demo.episodes, list) and isinstance(saved_config.demo.episodes, list):
        growable += ("demo.episodes",)
    if parse_remedy(config.remedy())[0] != "dagger":
        growable += DAGGER_SETTINGS  # compared where the directory's own cells are DAgger's (a dagger remedy's own)
    changed = changed_settings(saved, config_items(config), skip=(*growable, "optimizer_settings", "data"))
    if saved_config.cells() and config.cells() and saved_config.remedy() != config.remedy():
        changed.append(f"remedies ({saved_config.remedies!r} -> {config.remedies!r}: the runs in "
                       f"{saved_file.parent / 'runs'} are {saved_config.remedy()}'s, not {config.remedy()}'s)")
    saved_out = json.loads(saved_file.read_text()).get("out", saved_config.out)  # where it was made
    if saved_config.data.keys() != config.data.keys() or not all(
            same_file(saved_config.data[task], saved_out, path, config.out) for task, path in config.data.items()):
        changed.append(f"data ({saved_config.data!r} -> {config.data!r})")
    changed += _changed_optimizer_settings(saved_config, config)
    refuse_changes(changed, f"{saved_file.parent} holds a comparison made with other settings",
                   "use a new --out directory, or pass --overwrite to make the comparison afresh there")


def _changed_optimizer_settings(saved: CompareConfig, config: CompareConfig) -> list[str]:
    """``optimizer_settings.<name>.<field> (old -> new)`` where an optimizer of both grids gets
    another value of a field either one's optimizer_settings sets (a changed template value is
    reported as ``train.<field>``; settings of optimizers new to the grid are new cells' business)."""
    changed = []
    for name in (n for n in config.optimizers if n in saved.optimizers):
        before, after = (c.cell_config(name, 0, Path(""), Path("")) for c in (saved, config))
        for key in sorted({*saved.optimizer_settings.get(name, {}), *config.optimizer_settings.get(name, {})}):
            if getattr(before, key) != getattr(after, key):
                changed.append(f"optimizer_settings.{name}.{key} ({getattr(before, key)!r} -> {getattr(after, key)!r})")
    return changed


def check_experts(config: CompareConfig) -> None:
    """Before any work: every task whose demonstrations compare collects has an expert to collect them."""
    if any(parse_remedy(r)[0] == "dagger" for r in config.remedies):
        for task in config.tasks:  # the expert labels the states the policies visit, --data or not
            check_task(task)
    for task in (t for t in config.tasks if t not in config.data):
        spec = envs.task_spec(task)
        if spec.available:
            continue
        how = ""
        if spec.expert_kind == "sb3":
            how = (f"; demonstrations are collected with the task's expert: train one (`dopr-robot expert train --task "
                   f"{task} --algo sac --steps N --out RUN`, continued with --resume) and export it (`dopr-robot "
                   "expert export --run RUN`), or give demonstrations with --data")
        raise UserError(f"task {task} is unavailable: {spec.unavailable_reason}{how}")


def check_data_file(task: str, path: str, obs_keys: Sequence[str] = ()) -> None:
    """A file given with ``--data`` for ``task``: demonstrations the loader accepts with ``obs_keys``
    (the training template's; readable, no NaN, ...), of ``task`` when the file names one of the
    toolkit's tasks, with ``task``'s action size, and its observation size when the file holds the
    toolkit's flat observations (named keys, as in robomimic's files, concatenate to another size)."""
    try:
        dataset = demos.load(path, obs_keys=list(obs_keys) or None)
    except UserError as err:  # the loader names the problem; here the file it is in, where it does not
        raise (err if path in str(err) else UserError(f"--data gives {path} for {task}: {err}")) from None
    if dataset.task in envs.list_tasks() and dataset.task != task:
        raise UserError(f"--data gives {path} for {task}, but it holds demonstrations of {dataset.task}: give a file "
                        f"of {task} demonstrations in --data (e.g. from `dopr-robot collect --task {task}`)")
    spec = envs.task_spec(task)
    if dataset.act_dim != spec.act_dim:
        raise UserError(f"--data gives {path} for {task}, but its actions have {dataset.act_dim} dimensions, "
                        f"{task}'s {spec.act_dim}: give a file of {task} demonstrations in --data")
    if list(dataset.obs_keys) == [FLAT_OBS_KEY] and dataset.obs_dim != spec.obs_dim:
        raise UserError(f"--data gives {path} for {task}, but its observations have {dataset.obs_dim} dimensions, "
                        f"{task}'s {spec.obs_dim}: give a file of {task} demonstrations in --data")


def _collection_differs(config: CompareConfig, task: str, path: Path) -> str:
    """How the demonstrations in ``path`` differ from the collection ``config`` asks for ("" when
    they do not, or when there is no file yet): compare reuses such a file only when it matches."""
    if not path.exists():
        return ""
    try:
        recorded = demos.load(path).metadata
    except UserError as err:
        return f"unreadable: {err}"
    wanted = config.collection().record(task)
    recorded = {"success_only": False, **recorded}  # files from before success-only collection
    differs = [f"{key} {recorded.get(key)!r}, asked {value!r}" for key, value in wanted.items()
               if recorded.get(key) != value]
    return "; ".join(differs)


def check_other_collection(config: CompareConfig, task: str, path: Path) -> None:
    """Refuse demonstrations in ``path`` that are not the collection ``config`` asks for."""
    differs = _collection_differs(config, task, path)
    if differs:
        raise _other_collection(path, differs)


def _other_collection(path: Path, differs: str) -> UserError:
    return UserError(f"{path} is not the demonstrations this comparison collects ({differs}); delete it (the same "
                     "command then collects them), use another --out, or pass --overwrite to collect them again")


def demonstrations(config: CompareConfig, task: str, out: Path, progress: bool, overwrite: bool = False) -> Path:
    """The task's demonstration file: given with --data, or collected into DIR/data/ (once: a file
    there is reused when its record matches the collection asked for; with ``overwrite`` one that
    differs is collected again, without it :func:`check_comparison` has refused it)."""
    if task in config.data:
        return Path(config.data[task])  # checked by check_comparison
    path = out / "data" / f"{task}.hdf5"
    differs = _collection_differs(config, task, path)
    if differs and not overwrite:
        raise _other_collection(path, differs)
    if differs or not path.exists():  # replaced only once the new file is complete
        demos.collect(task, out=path, overwrite=True, progress=progress, **config.collection().collect_arguments())
    return path


def replication_config(original: CompareConfig) -> CompareConfig:
    """``original`` on fresh demonstrations and fresh evaluation episodes, into ORIGINAL/replication/.

    Everything else stays, the training seeds included: the replication asks whether the result
    holds on other data and other initial states, not on other initializations. Demonstrations come
    from ``REPLICATION_DEMO_SEED + demo.seed``, evaluation from ``REPLICATION`` (+ the original's
    offset into the policy-evaluation range): seed ranges nothing else uses (envs/seeds.py).
    """
    if original.data:
        given = ", ".join(f"{task}={path}" for task, path in original.data.items())
        raise UserError(
            f"{original.out} trained on given demonstration files (--data {given}); --replicate collects fresh "
            "demonstrations with each task's expert and cannot do that for a given file. Replicate by hand: make "
            f"new files (e.g. `dopr-robot collect --task TASK --seed {seed_ranges.REPLICATION_DEMO_SEED} ...`), then run "
            f"`dopr-robot compare --config {Path(original.out) / CONFIG_FILE} --out NEW_DIR --data '{{...}}' "
            f"--eval-seed {seed_ranges.REPLICATION}`")
    policy_eval = seed_ranges.ranges()["policy evaluation"]
    offset = original.eval.seed - policy_eval.start if original.eval.seed in policy_eval else 0
    return replace(original, out=str(Path(original.out) / REPLICATION_DIR),
                   demo=replace(original.demo, seed=seed_ranges.REPLICATION_DEMO_SEED + original.demo.seed),
                   eval=replace(original.eval, seed=seed_ranges.REPLICATION + offset))


def replicate(out: str | Path, progress: bool = True, execution: Execution = Execution()) -> Path:
    """Rerun the finished comparison in ``out`` as :func:`replication_config` says (resumable like
    any grid), then write ``out/replication.md`` beside it (both results side by side); return its path."""
    out = Path(out)
    original = load_compare_config(out)
    if isinstance(original.demo.episodes, list):
        first = Path(original.out) / DEMO_COUNT_DIR.format(sorted(original.demo.episodes)[0])
        raise UserError(f"{out} holds one comparison per demonstration count ({', '.join(map(str, original.demo_counts()))}); "
                        f"replicate them one by one: `dopr-robot compare --out {first} --replicate`, ...")
    if original.by_remedy():
        raise UserError(f"{out} holds a comparison over remedies ({', '.join(original.remedies)}); replicate each "
                        f"remedy's comparison on its own: `dopr-robot compare --out {out / REMEDY_DIR}/<remedy> "
                        "--replicate` (none: with --remedies none in a copy of the settings)")
    config = replication_config(original)
    unfinished = [cell for cell in original.cells() if not (original.run_dir(*cell) / EVAL_FILE).exists()]
    if unfinished:
        raise UserError(f"{out} holds an unfinished comparison ({len(unfinished)} of {len(original.cells())} runs not "
                        f"evaluated yet): finish it with `dopr-robot compare --config {out / CONFIG_FILE} --out {out}`, "
                        "then replicate it")
    compare(config, progress=progress, execution=execution)
    report = out / REPLICATION_REPORT
    write_replication_report(out, Path(config.out), report)
    return report
