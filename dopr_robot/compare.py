"""The comparison harness: tasks x optimizers x seeds -> one trained, evaluated run per cell.

    DIR/data/<task>.hdf5                       demonstrations, collected once per task (or --data)
    DIR/runs/<task>/<optimizer>/seed<k>/       a training run (config.json, metrics.jsonl, checkpoint.pt)
                                    eval.json  its closed-loop evaluation: the cell is done when this exists
    DIR/results.csv, DIR/summary.md, DIR/*.png written from the eval.json files alone (dopr_robot.report)

Every cell of a task trains on the same demonstrations with the same settings, apart from the
optimizer and the seed, and is evaluated on the same evaluation seeds. Seed k initializes the policy
identically for every optimizer, so DoPr-X and X are compared pairwise, seed by seed. A killed
``compare`` resumes: finished cells are skipped, a cell with a checkpoint continues from it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import demos
import envs
from dopr_robot.checkpoint import CHECKPOINT_NAME
from dopr_robot.config import TrainConfig, option
from dopr_robot.errors import UserError
from dopr_robot.atomic import write_json_atomic
from dopr_robot.evaluate import DEFAULT_EVAL_SEED, evaluate_checkpoint
from dopr_robot.optim import OPTIMIZERS
from dopr_robot.report import write_report


@dataclass(frozen=True)
class CompareConfig:
    out: str = option(help="output directory (data/, runs/, results.csv, summary.md, plots)")
    tasks: list = option(["Reach-v0", "Push-v0"], help="tasks to compare on")
    optimizers: list = option(["adamw", "dopr-adamw"], help="optimizers (registry names)")
    seeds: int = option(5, help="training seeds per (task, optimizer): 0 .. seeds-1")
    data: dict = option({}, help='existing demonstrations per task as JSON, e.g. \'{"Push-v0": "push.hdf5"}\'')
    demo_episodes: int = option(50, help="episodes to collect per task (when no --data is given)")
    demo_noise: float = option(0.0, help="noise injection at collection (action noise std)")
    policy: str = option("mlp", help="policy for every run")
    policy_options: dict = option({}, help="policy config as JSON")
    history: int = option(1, help="observation history")
    chunk: int = option(1, help="action chunk")
    steps: int = option(2000, help="training steps per run")
    batch_size: int = option(256, help="batch size")
    lr: float = option(1e-3, help="learning rate, the same for every optimizer")
    weight_decay: float = option(0.0, help="weight decay, the same for every optimizer")
    damping: float = option(0.01, help="DoPr relative damping (dopr-* only)")
    eval_episodes: int = option(50, help="closed-loop episodes per run")
    eval_seed: int = option(DEFAULT_EVAL_SEED, help="first evaluation reset seed (disjoint from the demo seeds)")
    num_envs: int = option(8, help="environments stepped at once during evaluation")

    def __post_init__(self) -> None:
        unknown = [name for name in self.optimizers if name not in OPTIMIZERS]
        if unknown:
            raise UserError(f"unknown optimizer(s) {', '.join(unknown)}; valid: {', '.join(OPTIMIZERS)}")
        known_tasks = envs.list_tasks()
        bad = [task for task in self.tasks if task not in known_tasks]
        if bad:
            raise UserError(f"unknown task(s) {', '.join(bad)}; valid: {', '.join(known_tasks)}")
        if not self.tasks or not self.optimizers:
            raise UserError("need at least one task and one optimizer")
        for name in ("seeds", "demo_episodes", "eval_episodes", "num_envs", "steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        extra = sorted(set(self.data) - set(self.tasks))
        if extra:
            raise UserError(f"--data names task(s) {', '.join(extra)} that are not in --tasks")

    def train_config(self, task: str, optimizer: str, seed: int, data: Path, out: Path) -> TrainConfig:
        """The one place where cells differ: optimizer, seed, and (per task) the data."""
        return TrainConfig(
            data=str(data), out=str(out), policy=self.policy, optimizer=optimizer, steps=self.steps,
            batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, damping=self.damping,
            history=self.history, chunk=self.chunk, policy_options=dict(self.policy_options), seed=seed,
            val_every=max(1, self.steps // 10), checkpoint_every=max(1, self.steps // 4),
            log_every=max(1, self.steps // 40),
        )


def compare(config: CompareConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Run every missing cell, then write the report. Returns the result rows."""
    from dopr_robot.train import train

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_comparison(config, out / "compare_config.json")
    write_json_atomic(out / "compare_config.json", asdict(config))
    cells = [(task, optimizer, seed) for task in config.tasks for optimizer in config.optimizers
             for seed in range(config.seeds)]
    data = {task: _demonstrations(config, task, out, progress) for task in config.tasks}
    bar = tqdm(cells, desc="compare", disable=not progress)
    for task, optimizer, seed in bar:
        run_dir = out / "runs" / task / optimizer / f"seed{seed}"
        if (run_dir / "eval.json").exists():
            continue
        bar.set_postfix_str(f"{task} {optimizer} seed {seed}")
        started = time.perf_counter()
        train_config = config.train_config(task, optimizer, seed, data[task], run_dir)
        resume = (run_dir / CHECKPOINT_NAME).exists()
        train(train_config, resume=resume, overwrite=not resume, progress=False)
        result = evaluate_checkpoint(run_dir, task=task, episodes=config.eval_episodes, seed=config.eval_seed,
                                     num_envs=config.num_envs)
        record = result.to_dict()
        record["cell"] = {"task": task, "optimizer": optimizer, "seed": seed,
                          "wall_time_s": round(time.perf_counter() - started, 2), "resumed": resume}
        write_json_atomic(run_dir / "eval.json", record)
    return write_report(out)


# A resumed comparison may add tasks, optimizers and seeds (and change how many envs evaluate at
# once); anything else would make earlier cells incomparable with new ones.
GROWABLE = ("tasks", "optimizers", "seeds", "num_envs", "out")


def _check_same_comparison(config: CompareConfig, saved_file: Path) -> None:
    if not saved_file.exists():
        return
    saved = json.loads(saved_file.read_text())
    changed = sorted(k for k, v in asdict(config).items() if k not in GROWABLE and saved.get(k) != v)
    if changed:
        raise UserError(f"{saved_file.parent} holds a comparison made with other settings (changed: {', '.join(changed)}); "
                        "use a new --out directory")


def _demonstrations(config: CompareConfig, task: str, out: Path, progress: bool) -> Path:
    """The task's demonstration file: given with --data, or collected once into DIR/data/."""
    if task in config.data:
        path = Path(config.data[task])
        demos.load(path)  # fail early, with the loader's message, on a bad file
        return path
    path = out / "data" / f"{task}.hdf5"
    if not path.exists():
        demos.collect(task, config.demo_episodes, path, seed=0, noise=config.demo_noise, progress=progress)
    return path
