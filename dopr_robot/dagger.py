"""DAgger: the expert relabels the states the learner visits, aggregated over rounds (Ross et al., 2011).

    OUT/dagger_config.json             the resolved DaggerConfig (a rerun with other settings is refused)
    OUT/demos.hdf5                     the initial demonstrations, when collected here (no --data)
    OUT/round_<k>/data.hdf5            the aggregate after round k: the initial demonstrations and every
                                       relabelled episode of rounds 1..k (collect's HDF5 layout)
    OUT/round_<k>/data_seconds.json    the seconds spent making data.hdf5 (rollouts, relabelling, aggregation),
                                       so that a round resumed in its training still counts them
    OUT/round_<k>/run/                 round k's training run (config.json, checkpoint.pt, metrics.jsonl)
    OUT/round_<k>/done.json            round k is finished when it exists (counts, each stage's seconds and
                                       the round's wall time, over every call that worked on it)

Round 0 trains on the initial demonstrations for the template's ``steps``. Round ``r >= 1`` rolls out
the previous round's policy (its EMA weights, as evaluated) for ``episodes_per_round`` episodes from
reset seeds ``rollout_seed + (r - 1) * episodes_per_round + i`` (a range of their own,
:data:`envs.seeds.DAGGER`); at each step the expert's action is executed with probability
``beta_r = beta0 ** r``, else the learner's, drawn from the episode's own generator seeded
``(reset seed, BETA_STREAM)``. The expert labels every visited state; the labels are the stored
``actions`` (the executed ones are kept as ``executed_actions``), and each episode records its
``round`` and ``source`` (``expert`` for the initial demonstrations, ``dagger`` for rollouts). The
relabelled episodes all join the training split: validation stays on the expert's held-out episodes,
so its loss is comparable across rounds.

Training continues: round r is a new run on the aggregate for ``steps_per_round`` steps that starts
from round r-1's weights, EMA and optimizer state (``train(warm_start=...)``), with a fresh
warmup-cosine schedule over its steps (warmup capped at a tenth of them) and the normalizers of the
initial demonstrations. Continuing rather than retraining from scratch keeps a round's cost at its
own steps, as the ``imitation`` library's DAgger trainer does.

A killed run resumes: a rerun of the same command skips the rounds with a ``done.json``, reuses a
round's aggregate when it was written (it is written atomically), and resumes a round's training from
its checkpoint. A resumed round's times count what the calls before did (the aggregate's seconds saved
beside it, the training time its checkpoint carries); what a killed call did after that (a rollout
whose aggregate was never written, training after the last checkpoint) is redone, and counted, by the
resume.

The loop (:func:`run_dagger`) takes the env maker, the expert and the learner as arguments, so it
runs on any system with a queryable expert; :func:`dagger` resolves them from a task name.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import gymnasium
import h5py
import numpy as np

import demos
import envs
from demos.collector import to_episode, toolkit_version
from demos.hdf5 import ENV_TYPE, atomic_hdf5, demo_name, write_episode, write_index
from dopr_robot.atomic import check_directory_destination, write_json_atomic
from dopr_robot.checkpoint import CHECKPOINT_NAME, load_checkpoint, policy_from_checkpoint
from dopr_robot.collect_config import CollectConfig
from dopr_robot.config import SettingError, TrainConfig, config_to_dict, nested, option
from dopr_robot.errors import UserError
from dopr_robot.evaluate.rollout import PolicyController, rollout
from dopr_robot.run_dir import changed_settings, read_saved, refuse_changes
from envs.rollout import Controller, ExpertController, Trajectory
from envs.seeds import DAGGER, ranges

CONFIG_FILE = "dagger_config.json"
DONE_FILE = "done.json"
DATA_FILE = "data.hdf5"
DATA_SECONDS_FILE = "data_seconds.json"
RUN_DIR = "run"
# Second word of every mixing generator's seed, apart from the env's own reset randomness and the
# collector's noise streams.
BETA_STREAM = 0x62657461  # "beta"


def round_dir(out: str | Path, k: int) -> Path:
    return Path(out) / f"round_{k}"


def train_template(**options: Any) -> TrainConfig:
    """Every round's training settings; dagger fills data and out."""
    return TrainConfig(data="", out="", **options)


@dataclass(frozen=True)
class DaggerConfig:
    out: str = option(help="output directory: round_<k>/ (data.hdf5, run/, done.json) for each round")
    task: str = option(help="the task; its expert labels every state the learner visits")
    data: str = option("", help="the initial demonstrations (round 0); empty: collected with the --demo-* options "
                                "into OUT/demos.hdf5")
    rounds: int = option(3, help="DAgger rounds after round 0 (each: roll out, relabel, aggregate, train)")
    episodes_per_round: int = option(10, help="the learner's episodes rolled out and relabelled per round")
    beta0: float = option(0.5, help="round r executes the expert's action with probability beta0**r at each step "
                                    "(else the learner's); 0: the learner alone from round 1")
    steps_per_round: int = option(500, help="training steps of each round after round 0 (round 0 trains --steps)")
    rollout_seed: int = option(DAGGER, help="reset seed of round 1's first episode (round r's episode i: "
                                            "ROLLOUT_SEED + (r - 1) * EPISODES_PER_ROUND + i)")
    num_envs: int = option(8, help="environments stepped together in a round's rollouts")
    demo: CollectConfig = nested(CollectConfig, prefix="demo-",
                                 help="the initial demonstrations when --data is not given: the `collect` options")
    train: TrainConfig = nested(TrainConfig, factory=train_template, exclude=("data", "out"),
                                why_excluded="dagger sets them (--data for round 0, then each round's aggregate; "
                                             "run directories under --out)",
                                help="training: every `train` option but --data and --out")

    def __post_init__(self) -> None:
        for name in ("rounds", "episodes_per_round", "steps_per_round", "num_envs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingError(lambda n: f"{n(name)} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.beta0, (int, float)) and math.isfinite(self.beta0) and 0 <= self.beta0 <= 1):
            raise SettingError(lambda n: f"{n('beta0')} must be a probability in [0, 1], got {self.beta0!r}")
        allowed = ranges()["dagger rollouts"]
        seeds = range(self.rollout_seed, self.rollout_seed + self.rounds * self.episodes_per_round)
        if not (allowed.start <= seeds.start and seeds.stop <= allowed.stop):
            raise SettingError(lambda n: f"{n('rollout_seed')} {self.rollout_seed} with {self.rounds} rounds of "
                                         f"{self.episodes_per_round} episodes uses reset seeds {seeds.start:,}.."
                                         f"{seeds.stop - 1:,}, outside the DAgger seeds {allowed.start:,}.."
                                         f"{allowed.stop - 1:,} (envs/seeds.py)")
        if self.train.eval_every:
            raise SettingError(lambda n: f"{n('train.eval_every')}: DAgger evaluates no policy while it trains; "
                                         "evaluate the last round's run with `dopr-robot eval --run OUT/round_<R>/run`")
        if isinstance(self.demo.episodes, list):
            raise SettingError(lambda n: f"{n('demo.episodes')} takes one count for DAgger, got {self.demo.episodes!r}")

    def beta(self, k: int) -> float:
        """The probability of executing the expert's action in round ``k`` (1 in round 0: the demos)."""
        return float(self.beta0) ** k

    def rollout_seeds(self, k: int) -> list[int]:
        first = self.rollout_seed + (k - 1) * self.episodes_per_round
        return list(range(first, first + self.episodes_per_round))

    def round_train_config(self, k: int, data: Path, out: Path) -> TrainConfig:
        """Round ``k``'s training run: the template's on round 0, ``steps_per_round`` after (cadences
        derived anew from the steps). The aggregate's observations are one key, so obs_keys are dropped."""
        config = replace(self.train, data=str(data), out=str(out), obs_keys=[])
        if k == 0:
            return config
        return replace(config, steps=self.steps_per_round, val_every=0, checkpoint_every=0, log_every=0,
                       warmup_steps=min(self.train.warmup_steps, self.steps_per_round // 10))

    def final_run(self) -> Path:
        return round_dir(self.out, self.rounds) / RUN_DIR


class Learner(Protocol):
    """What DAgger trains: ``fit`` round ``k`` on ``data`` into ``out`` (continuing from ``previous``,
    round k-1's ``out``, when given; resuming when ``out`` holds an unfinished fit), and a controller
    for ``num_envs`` slots that runs what ``fit`` left in ``out``. ``fit`` returns the training seconds
    that earlier calls spent on a fit it resumed (None or 0: none), which the round's times include."""

    def fit(self, k: int, data: Path, out: Path, previous: Path | None) -> float | None: ...

    def controller(self, out: Path, num_envs: int) -> Controller: ...


@dataclass
class BCLearner:
    """Behavior cloning with :func:`dopr_robot.train.train`: round 0 from scratch, later rounds warm-started."""

    config: DaggerConfig
    device: str = "auto"
    progress: bool = False

    def fit(self, k: int, data: Path, out: Path, previous: Path | None) -> float:
        from dopr_robot.train import train  # training's import cost only where DAgger runs

        resume = (out / CHECKPOINT_NAME).exists()
        trained = train(self.config.round_train_config(k, data, out), resume=resume, progress=self.progress,
                        device=self.device, warm_start=None if resume else previous)
        return trained.resumed_elapsed_s

    def controller(self, out: Path, num_envs: int) -> Controller:
        # Rollouts on the CPU: a batch of num_envs observations is too small for a device round trip.
        return PolicyController(policy_from_checkpoint(load_checkpoint(out), device="cpu"), num_envs)


class MixedController:
    """The learner, with the expert's action executed instead at each step with probability ``beta``
    (per episode, from a generator seeded ``(reset seed, BETA_STREAM)``); ``labels`` hold the expert's
    action at every visited state. ``expert_seconds`` sums the time spent in the expert (relabelling)."""

    def __init__(self, learner: Controller, expert: ExpertController, beta: float, num_envs: int):
        self.learner, self.expert, self.beta = learner, expert, beta
        self.generators: list[np.random.Generator | None] = [None] * num_envs
        self.labels = np.zeros((num_envs, expert.act_dim), dtype=np.float32)
        self.expert_seconds = 0.0

    def reset(self, slots: np.ndarray, obs: np.ndarray, seeds: Sequence[int | None] | None = None) -> None:
        self.learner.reset(slots, obs, seeds)
        for i in np.flatnonzero(slots):
            seed = None if seeds is None else seeds[i]
            self.generators[i] = np.random.default_rng(None if seed is None else [seed, BETA_STREAM])

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        self.labels = np.asarray(self.expert.act(obs, active), dtype=np.float32)
        self.expert_seconds += time.perf_counter() - started
        actions = np.array(self.learner.act(obs, active), dtype=np.float32)  # the learner always acts: its memory
        if self.beta > 0:
            for i in np.flatnonzero(active):
                if self.generators[i].random() < self.beta:
                    actions[i] = self.labels[i]
        return actions


@dataclass
class DaggerResult:
    """What :func:`run_dagger` did: one ``done.json`` record per round, and where the last policy is."""

    out: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_run(self) -> Path:
        return self.out / f"round_{len(self.rounds) - 1}" / RUN_DIR

    @property
    def wall_time_s(self) -> float:
        """The rounds' wall time, each over every call that worked on it. A ``done.json`` written before
        rounds recorded ``wall_time_s`` counts the sum of its ``seconds``, which for a round that was
        resumed holds only its last call's training (and no rollouts when its aggregate was reused)."""
        return sum(r["wall_time_s"] if "wall_time_s" in r else sum(r["seconds"].values()) for r in self.rounds)

    @property
    def expert_labels(self) -> int:
        """The expert's labels the final policy trained on: demonstration transitions + relabelled states."""
        return self.rounds[-1]["expert_labels"]

    def __str__(self) -> str:
        last = self.rounds[-1]
        return (f"DAgger: {len(self.rounds) - 1} rounds after round 0; the aggregate holds {last['episodes']} episodes, "
                f"{last['expert_labels']} expert labels ({last['relabelled_states']} relabelled states); "
                f"the last policy: {self.final_run}")


def run_dagger(config: DaggerConfig, make_env: Callable[[], gymnasium.Env], expert: Any, learner: Learner,
               initial: str | Path) -> DaggerResult:
    """Rounds 0..config.rounds as the module docstring says, each skipped when it is done; ``expert.act``
    maps a batch of observations ``(B, D)`` to actions ``(B, A)``; ``initial`` is the round-0 data."""
    out = Path(config.out)
    result = DaggerResult(out)
    for k in range(config.rounds + 1):
        done = round_dir(out, k) / DONE_FILE
        if not done.exists():
            record = _round(config, k, make_env, expert, learner, Path(initial))
            write_json_atomic(done, record)
        result.rounds.append(json.loads(done.read_text()))
    return result


def _round(config: DaggerConfig, k: int, make_env: Callable[[], gymnasium.Env], expert: Any, learner: Learner,
           initial: Path) -> dict[str, Any]:
    """Round ``k``: aggregate (unless written already), fit; the round's record. Its ``seconds`` (each
    stage's) and ``wall_time_s`` (the whole round's) include what earlier calls spent on a resumed round:
    the aggregate's seconds recorded beside it, the training time the checkpoint carries."""
    round_started = time.perf_counter()
    here, before = round_dir(config.out, k), round_dir(config.out, k - 1)
    here.mkdir(parents=True, exist_ok=True)
    data = here / DATA_FILE
    seconds = {"rollout": 0.0, "relabel": 0.0, "aggregate": 0.0, "train": 0.0}
    earlier_calls_s = 0.0
    if data.exists():
        # Made by a call killed later in the round. An aggregate written before its seconds were recorded
        # (or by a call killed between the two writes) counts 0 for them.
        seconds.update(_read_data_seconds(here / DATA_SECONDS_FILE))
        earlier_calls_s += seconds["rollout"] + seconds["relabel"] + seconds["aggregate"]
    else:
        if k == 0:
            started = time.perf_counter()
            _write_initial(data, initial, config)
            seconds["aggregate"] = time.perf_counter() - started
        else:
            trajectories = _rollouts(config, k, make_env, expert, lambda n: learner.controller(before / RUN_DIR, n),
                                     seconds)
            started = time.perf_counter()
            _append(data, before / DATA_FILE, trajectories, k, config)
            seconds["aggregate"] = time.perf_counter() - started
        write_json_atomic(here / DATA_SECONDS_FILE, {key: seconds[key] for key in ("rollout", "relabel", "aggregate")})
    started = time.perf_counter()
    resumed_train_s = float(learner.fit(k, data, here / RUN_DIR, None if k == 0 else before / RUN_DIR) or 0.0)
    seconds["train"] = time.perf_counter() - started + resumed_train_s
    earlier_calls_s += resumed_train_s
    with h5py.File(data, "r") as file:
        meta = json.loads(file["data"].attrs["dopr_meta"])
    return {"round": k, "beta": config.beta(k), "episodes": meta["aggregate_episodes"],
            "relabelled_states": meta["relabelled_states"], "expert_labels": meta["expert_labels"],
            "seeds": config.rollout_seeds(k) if k else [],
            "seconds": {key: round(value, 4) for key, value in seconds.items()},
            "wall_time_s": round(time.perf_counter() - round_started + earlier_calls_s, 4)}


def _read_data_seconds(path: Path) -> dict[str, float]:
    """The aggregate's recorded stage seconds; none (so they count 0) when the file is missing or unreadable."""
    try:
        recorded = json.loads(path.read_text())
        return {key: float(recorded[key]) for key in ("rollout", "relabel", "aggregate")}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return {}


def _rollouts(config: DaggerConfig, k: int, make_env: Callable[[], gymnasium.Env], expert: Any,
              learner: Callable[[int], Controller], seconds: dict[str, float]) -> list[Trajectory]:
    """Round ``k``'s episodes of the mixed learner (``learner(K)``: its controller for K slots), every
    state labelled by the expert; the time in the expert is ``seconds["relabel"]``, the rest ``rollout``."""
    built: list[MixedController] = []

    def mixed(num_envs: int) -> MixedController:
        env = make_env()
        try:
            act_dim = int(env.action_space.shape[0])
        finally:
            env.close()
        built.append(MixedController(learner(num_envs), ExpertController(expert, act_dim), config.beta(k), num_envs))
        return built[-1]

    started = time.perf_counter()
    trajectories = rollout(make_env, mixed, config.rollout_seeds(k), config.num_envs)
    seconds["relabel"] = built[0].expert_seconds
    seconds["rollout"] = time.perf_counter() - started - seconds["relabel"]
    return trajectories


def _meta(config: DaggerConfig, k: int, initial_meta: dict[str, Any], expert_labels: int, relabelled: int,
          episodes: int) -> dict[str, Any]:
    return {"created_by": "dopr-robot dagger", "task": config.task, "round": k, "beta0": float(config.beta0),
            "episodes_per_round": config.episodes_per_round, "rollout_seed": config.rollout_seed,
            "noise": initial_meta.get("noise", 0.0), "demos": initial_meta, "expert_labels": expert_labels,
            "relabelled_states": relabelled, "aggregate_episodes": episodes, "version": toolkit_version()}


def _env_args(config: DaggerConfig, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"env_name": config.task, "env_kwargs": env_kwargs, "type": ENV_TYPE}


def _write_initial(path: Path, initial: Path, config: DaggerConfig) -> None:
    """Round 0's aggregate: the initial demonstrations (``source`` expert, ``round`` 0), their split kept."""
    dataset = demos.load(str(initial), obs_keys=config.train.obs_keys or None)
    with atomic_hdf5(path, overwrite=True) as file:
        names = []
        for i, episode in enumerate(dataset.episodes):
            episode = replace(episode, name=demo_name(i))
            write_episode(file, episode)
            file["data"][episode.name].attrs.update({"round": 0, "source": "expert"})
            names.append(episode.name)
        total = sum(len(e) for e in dataset.episodes)
        meta = _meta(config, 0, json.loads(json.dumps(dataset.metadata, default=str)), total, 0, len(names))
        write_index(file, names, dataset.train_indices, dataset.valid_indices, total,
                    _env_args(config, dataset.env_kwargs), meta)


def _append(path: Path, previous: Path, trajectories: list[Trajectory], k: int, config: DaggerConfig) -> None:
    """Round ``k``'s aggregate: round k-1's, copied group by group, and ``trajectories`` relabelled."""
    with h5py.File(previous, "r") as source, atomic_hdf5(path, overwrite=True) as file:
        data = file.create_group("data")
        names = list(source["data"].keys())
        for name in names:
            source.copy(source["data"][name], data, name=name)
        valid = {entry.decode() for entry in source["mask/valid"][()]}
        before = json.loads(source["data"].attrs["dopr_meta"])
        env_args = json.loads(source["data"].attrs["env_args"])
        total, relabelled = int(source["data"].attrs["total"]), 0
        for trajectory in trajectories:
            episode, next_obs = to_episode(demo_name(len(names)), trajectory)
            write_episode(file, episode, next_obs)
            group = data[episode.name]
            group.create_dataset("executed_actions", data=trajectory.actions)
            group.attrs.update({"round": k, "source": "dagger"})
            names.append(episode.name)
            relabelled += len(episode)
        total += relabelled
        meta = _meta(config, k, before["demos"], before["expert_labels"] + relabelled,
                     before["relabelled_states"] + relabelled, len(names))
        write_index(file, names, [i for i, n in enumerate(names) if n not in valid],
                    [i for i, n in enumerate(names) if n in valid], total, env_args, meta)


def prepare(config: DaggerConfig) -> None:
    """Before any work: ``out`` is new, empty or this DAgger run's (the same settings); then the config
    is saved there."""
    out = check_directory_destination(config.out, what="DAgger run (--out)")
    saved_file = out / CONFIG_FILE
    current = config_to_dict(config)
    if saved_file.exists():
        saved = {**current, **read_saved(saved_file)}  # a setting added since counts as the asked value
        refuse_changes(changed_settings(saved, current, skip=("out",), values=False),
                       f"{out} holds a DAgger run with other settings",
                       "rerun it with its own settings to resume, or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no DAgger run (no {CONFIG_FILE}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(saved_file, current)


def check_task(task: str) -> envs.TaskSpec:
    """The task's spec, refused (one line) when its expert cannot label states."""
    spec = envs.task_spec(task)
    if not spec.available:
        raise UserError(f"DAgger needs {spec.name}'s expert to label the states the learner visits, and task "
                        f"{spec.name} is unavailable: {spec.unavailable_reason}")
    return spec


def dagger(config: DaggerConfig, *, progress: bool = True, device: str = "auto") -> DaggerResult:
    """DAgger on ``config.task`` with its expert (see the module docstring); the initial demonstrations
    are ``config.data``, or collected into OUT/demos.hdf5. Resumable: rerun with the same config."""
    spec = check_task(config.task)
    if config.data:
        dataset = demos.load(config.data, obs_keys=config.train.obs_keys or None)
        if dataset.task is not None and dataset.task != spec.name:
            raise UserError(f"--data {config.data} holds demonstrations of {dataset.task}, not of {spec.name}")
    prepare(config)
    initial = Path(config.data) if config.data else Path(config.out) / "demos.hdf5"
    if not initial.exists():
        demos.collect(spec.name, out=initial, progress=progress, **config.demo.collect_arguments())
    learner = BCLearner(config, device=device, progress=progress)
    return run_dagger(config, lambda: envs.make(spec.name), envs.make_expert(spec.name), learner, initial)

