"""SB3 expert training, export and evaluation: the locomotion experts (stable-baselines3 SAC, TD3 or PPO;
sb3-contrib TQC).

A run folder (``expert train --out RUN``) holds everything needed to continue it in a later session::

    RUN/run.json                 # task, algo, seed, hyperparameters, every command, cumulative wall time
    RUN/progress.log             # one line per evaluation: steps, env-steps/s since the last one, deterministic return
    RUN/logs/session_<k>/        # SB3's own logger (progress.csv, log.txt), one folder per session
    RUN/checkpoints/             # model_<N>_steps.zip (+ replay buffer, VecNormalize stats); last 2 kept
    RUN/best/                    # the model with the best periodic evaluation so far, + best.json

``export_run`` turns a run's best (or latest) model into the shipped format of
``envs/experts/sb3.py``: a plain torch actor plus a ``manifest.json`` with its evaluation over 20
seeded episodes. Seeds: training uses ``seed``, periodic evaluation ``EVAL_SEEDS``, the manifest's
evaluation ``MANIFEST_SEEDS``, the short test check ``CHECK_SEEDS`` (disjoint ranges of ``envs.seeds``).
The tasks are the registry's with ``expert_kind == "sb3"``; episodes are run by the toolkit's rollout
loop (``dopr_robot.evaluate.rollout``); every file is written atomically (``dopr_robot.atomic``).
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import re
import signal
import threading
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

import envs
from dopr_robot.atomic import atomic_directory, atomic_path, check_directory_destination, write_json_atomic
from dopr_robot.config import option
from dopr_robot.errors import UserError
from dopr_robot.evaluate.rollout import ExpertController, rollout
from envs import seeds as seed_ranges
from envs.experts import sb3 as sb3_weights

HYPERPARAMS_FILE = Path(sb3_weights.__file__).parent / "hyperparams.json"
# name -> (module, class). TQC (truncated quantile critics) comes from sb3-contrib, an optional extra.
ALGOS = {"sac": ("stable_baselines3", "SAC"), "td3": ("stable_baselines3", "TD3"), "ppo": ("stable_baselines3", "PPO"), "tqc": ("sb3_contrib", "TQC")}
OFF_POLICY = ("sac", "td3", "tqc")
# The registry's tasks whose expert is an SB3 policy, in registry order.
SB3_TASKS = tuple(name for name in envs.list_tasks() if envs.task_spec(name).expert_kind == "sb3")
EVAL_SEEDS = seed_ranges.EXPERT_SELECTION  # periodic evaluation during training (chooses best/)
# Episodes per periodic evaluation, by default. 20, not 5: on Humanoid-v5 one model's mean return was 4127
# over 5 episodes and 2523 over 20 (a fall is all or nothing), and best/ keeps the highest mean it sees.
EVAL_EPISODES = 20
MANIFEST_SEEDS = seed_ranges.EXPERT_MANIFEST[:20]  # the 20 episodes reported in manifest.json
CHECK_SEEDS = seed_ranges.EXPERT_CHECK[:2]  # the short episodes the test suite replays
CHECK_HORIZON = 200
KEEP_CHECKPOINTS = 2
_ACTIVATION_NAMES = {"ReLU": "relu", "Tanh": "tanh", "ELU": "elu", "LeakyReLU": "leaky_relu"}


def _positive_int(text: str) -> int:
    """A command-line count >= 1 (argparse turns the error into one line and exit 2)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class ExpertTrainConfig:
    """One ``expert train`` call, and its command line (``dopr_robot.config.add_config_arguments``);
    the resolved hyperparameters are saved in ``RUN/run.json``."""

    task: str = option(help="locomotion task, e.g. Hopper-v5")
    algo: str = option(help=f"{' | '.join(ALGOS)} (tqc needs sb3-contrib; hyperparameters: envs/experts/hyperparams.json)",
                       parse=str.lower)
    steps: int = option(help="total env steps to reach (a resumed run continues up to it)")
    out: str = option(help="run folder: checkpoints, logs, run.json")
    seed: int = option(0, help="seed of the env and the algorithm")
    resume: bool = option(False, help="continue the run in --out from its latest checkpoint")
    checkpoint_every: int = option(20_000, help="env steps between checkpoints (model + replay buffer + normalizer)")
    eval_every: int = option(20_000, help="env steps between deterministic evaluations (0: none)")
    eval_episodes: int = option(EVAL_EPISODES, help="episodes per periodic evaluation, which chooses best/")
    # Given as repeated --hp KEY=VALUE (the command adds that option itself: config options take one value).
    overrides: dict = option({}, help="hyperparameters over the data file's")
    threads: int = option(1, help="torch threads", parse=_positive_int, metavar="N")
    command: str = option("", help="the command line, recorded in run.json and the manifest")

    def __post_init__(self) -> None:
        if self.task not in SB3_TASKS:
            raise UserError(f"unknown task {self.task!r} for expert training; valid: {', '.join(SB3_TASKS)}")
        if self.algo not in ALGOS:
            raise UserError(f"unknown algorithm {self.algo!r}; valid: {', '.join(ALGOS)}")
        for name in ("steps", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise UserError(f"seed must be >= 0, got {self.seed}")
        if self.eval_every < 0 or not 1 <= self.eval_episodes <= len(EVAL_SEEDS):
            raise UserError(f"eval-every must be >= 0 and eval-episodes between 1 and {len(EVAL_SEEDS)} (the expert-selection "
                            f"seeds), got {self.eval_every}, {self.eval_episodes}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out)


# -- hyperparameters ---------------------------------------------------------------------------------


def algorithm_class(algo: str):
    """The SB3 class of ``algo`` (a key of ``ALGOS``); a missing sb3-contrib is a user error naming the fix."""
    import importlib

    module, name = ALGOS[algo]
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        raise UserError(f"algorithm {algo} needs the {module.replace('_', '-')} package: pip install -e '.[experts]'") from err


def load_hyperparams(task: str, algo: str, path: Path = HYPERPARAMS_FILE) -> dict[str, Any]:
    """The data file's hyperparameters of ``algo`` on ``task`` (a fresh dict)."""
    table = json.loads(Path(path).read_text())
    if algo not in table:
        raise UserError(f"no hyperparameters for algorithm {algo!r} in {path}; valid: {', '.join(k for k in table if not k.startswith('_'))}")
    if task not in table[algo]:
        raise UserError(f"no {algo} hyperparameters for {task} in {path}; valid: {', '.join(table[algo])}")
    return json.loads(json.dumps(table[algo][task]))


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE as JSON where it parses (numbers, true, lists), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"hyperparameter override {text!r} is not KEY=VALUE (e.g. learning_starts=1000)")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _algorithm_kwargs(algo: str, hp: dict[str, Any], action_dim: int) -> tuple[dict[str, Any], bool]:
    """SB3 constructor keyword arguments from a hyperparameter dict, and whether to VecNormalize."""
    import torch
    from stable_baselines3.common.noise import NormalActionNoise

    kwargs = {k: v for k, v in hp.items() if k not in ("n_timesteps", "normalize", "action_noise_std")}
    policy_kwargs = dict(kwargs.pop("policy_kwargs", {}))
    if "activation_fn" in policy_kwargs:
        activations = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU}
        name = policy_kwargs["activation_fn"]
        if name not in activations:
            raise UserError(f"unknown activation_fn {name!r}; valid: {', '.join(activations)}")
        policy_kwargs["activation_fn"] = activations[name]
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs
    if "action_noise_std" in hp:
        kwargs["action_noise"] = NormalActionNoise(np.zeros(action_dim), hp["action_noise_std"] * np.ones(action_dim))
    return kwargs, bool(hp.get("normalize", False))


# -- environments and checkpoints ------------------------------------------------------------------------


def _make_vec_env(task: str, seed: int, normalize: bool, algo: str):
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    vec_env = DummyVecEnv([lambda: Monitor(envs.make(task))])
    vec_env.seed(seed)
    if normalize:
        # RL Zoo's `normalize: true`: observations and (for on-policy) rewards.
        vec_env = VecNormalize(vec_env, norm_obs=True, norm_reward=algo not in OFF_POLICY, gamma=0.99)
    return vec_env


def _checkpoint_files(folder: Path, steps: int) -> dict[str, Path]:
    return {
        "model": folder / f"model_{steps}_steps.zip",
        "replay_buffer": folder / f"model_replay_buffer_{steps}_steps.pkl",
        "vecnormalize": folder / f"model_vecnormalize_{steps}_steps.pkl",
    }


def checkpoint_steps(folder: Path) -> list[int]:
    """Step counts of the model checkpoints in ``folder``, newest first."""
    steps = [int(m.group(1)) for p in Path(folder).glob("model_*_steps.zip") if (m := re.fullmatch(r"model_(\d+)_steps\.zip", p.name))]
    return sorted(steps, reverse=True)


def _save_atomic(save: Callable[[str], Any], path: Path) -> None:
    """``save(tmp)`` (SB3's ``model.save``, ``save_replay_buffer``, ``VecNormalize.save``) into a temporary
    file that appears as ``path`` only once complete."""
    with atomic_path(path) as tmp:
        save(str(tmp))


class SB3Actor:
    """An SB3 model as an expert: ``act(obs (N, D)) -> (N, A)`` is its deterministic action on raw
    observations (normalized first with the run's VecNormalize statistics when it has them)."""

    def __init__(self, model, vec_normalize=None):
        self.model, self.vec_normalize = model, vec_normalize

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.vec_normalize is not None:
            obs = self.vec_normalize.normalize_obs(obs)
        return self.model.predict(obs, deterministic=True)[0]


def episode_returns(expert, task: str, seeds, horizon: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return, length and final-step success of one episode per seed (reset with that seed), ``expert.act``
    in the toolkit's rollout loop (``dopr_robot.evaluate.rollout``). ``horizon``: a shorter episode.

    One env at a time: a batched forward of the actor differs from a one-row forward in the last bits,
    and that is enough to flip a Walker2d-v5 episode between falling and not (seeds 0..4: 3/5 successes
    one at a time, 5/5 in 5 envs), so the numbers here are those of episodes run one by one (as in
    the shipped manifests).
    """
    make_env = partial(envs.make, task) if horizon is None else partial(envs.make, task, horizon=horizon)
    act_dim = envs.task_spec(task).act_dim
    trajectories = rollout(make_env, lambda k: ExpertController(expert, act_dim), [int(s) for s in seeds], num_envs=1)
    returns = np.array([t.rewards.sum() for t in trajectories])
    return returns, np.array([t.length for t in trajectories]), np.array([bool(t.success[-1]) for t in trajectories])


class _StopOnSignal:
    """SIGINT/SIGTERM while training: ask SB3 to stop at the next env step (the caller then checkpoints), rather than
    dying between checkpoints and losing the steps since the last one. A second signal interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # Python only installs handlers there
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name


def _make_callback(cfg: ExpertTrainConfig, run: dict[str, Any], session_start: float, start_steps: int,
                   log: Callable[[str], None], stop: _StopOnSignal):
    from stable_baselines3.common.callbacks import BaseCallback

    ckpt_dir = cfg.run_dir / "checkpoints"
    best_dir = cfg.run_dir / "best"
    off_policy = cfg.algo in OFF_POLICY

    class CheckpointAndEval(BaseCallback):
        """Every ``checkpoint_every`` steps: model + replay buffer + normalizer, pruned to the last few;
        every ``eval_every`` steps: deterministic episodes, the best model kept in ``best/``."""

        since: tuple[float, int] | None = None  # (time, steps) when the last evaluation ended

        def _on_step(self) -> bool:
            n = self.num_timesteps
            if n % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if cfg.eval_every and n % cfg.eval_every == 0:
                self.evaluate()
            return stop.received is None

        def save_checkpoint(self) -> None:
            n = self.num_timesteps
            files = _checkpoint_files(ckpt_dir, n)
            # Companions first, the model last: a model file marks a complete checkpoint.
            if off_policy:
                _save_atomic(self.model.save_replay_buffer, files["replay_buffer"])
            if self.model.get_vec_normalize_env() is not None:
                _save_atomic(self.model.get_vec_normalize_env().save, files["vecnormalize"])
            _save_atomic(self.model.save, files["model"])
            for old in checkpoint_steps(ckpt_dir)[KEEP_CHECKPOINTS:]:
                for path in _checkpoint_files(ckpt_dir, old).values():
                    path.unlink(missing_ok=True)
            self.record_run()
            log(f"checkpoint {files['model']}")

        def record_run(self) -> None:
            run["wall_time_s"] = run["wall_time_before_s"] + (time.time() - session_start)
            run["steps_done"] = self.num_timesteps
            write_json_atomic(cfg.run_dir / "run.json", {k: v for k, v in run.items() if k != "wall_time_before_s"})

        def evaluate(self) -> None:
            n = self.num_timesteps
            # Training speed since the previous evaluation ended (not the session's average, which a pause
            # or a slow start would hide; evaluation time excluded).
            since_time, since_steps = self.since or (session_start, start_steps)
            fps = (n - since_steps) / max(time.time() - since_time, 1e-9)
            vec_normalize = self.model.get_vec_normalize_env()
            returns, lengths, _ = episode_returns(SB3Actor(self.model, vec_normalize), cfg.task, EVAL_SEEDS[: cfg.eval_episodes])
            log(f"steps {n}  env-steps/s {fps:.1f}  eval return {returns.mean():.1f} ± {returns.std():.1f}  length {lengths.mean():.0f}")
            best_file = best_dir / "best.json"
            best = json.loads(best_file.read_text()) if best_file.is_file() else {"return_mean": -np.inf}
            if best_file.is_file() and best.get("episodes") != cfg.eval_episodes:
                best = self.remeasure_best(best, best_file)
            if returns.mean() > best["return_mean"]:
                best_dir.mkdir(exist_ok=True)
                if vec_normalize is not None:
                    _save_atomic(vec_normalize.save, best_dir / "vecnormalize.pkl")
                _save_atomic(self.model.save, best_dir / "model.zip")
                wall = run["wall_time_before_s"] + (time.time() - session_start)
                write_json_atomic(best_file, {"steps": n, "return_mean": float(returns.mean()), "return_std": float(returns.std()), "episodes": cfg.eval_episodes, "wall_time_s": wall})
                log(f"new best model at {n} steps")
            self.since = (time.time(), n)

        def remeasure_best(self, best: dict[str, Any], best_file: Path) -> dict[str, Any]:
            """The kept best model measured on this run's evaluation episodes: a run resumed with another
            --eval-episodes compares like with like (a mean over 5 episodes is a lucky draw more often)."""
            model, vec_normalize = load_sb3_model(best_dir / "model.zip", cfg.algo)
            returns, _, _ = episode_returns(SB3Actor(model, vec_normalize), cfg.task, EVAL_SEEDS[: cfg.eval_episodes])
            log(f"best model (steps {best['steps']}): eval return {returns.mean():.1f} ± {returns.std():.1f} over "
                f"{cfg.eval_episodes} episodes (was {best['return_mean']:.1f} over {best.get('episodes')})")
            best = {**best, "return_mean": float(returns.mean()), "return_std": float(returns.std()), "episodes": cfg.eval_episodes}
            write_json_atomic(best_file, best)
            return best

    return CheckpointAndEval()


def _load_latest(algo_cls, cfg: ExpertTrainConfig, vec_env, log):
    """Model (and replay buffer / normalizer) from the newest loadable checkpoint; ``(model, vec_env)``."""
    from stable_baselines3.common.vec_env import VecNormalize

    ckpt_dir = cfg.run_dir / "checkpoints"
    for steps in checkpoint_steps(ckpt_dir):
        files = _checkpoint_files(ckpt_dir, steps)
        try:
            env = vec_env
            if files["vecnormalize"].is_file():
                env = VecNormalize.load(str(files["vecnormalize"]), vec_env)
            model = algo_cls.load(files["model"], env=env, device="cpu")
            if cfg.algo in OFF_POLICY:
                model.load_replay_buffer(files["replay_buffer"])
            log(f"resumed from {files['model']} ({model.num_timesteps} steps)")
            return model, env
        except (OSError, EOFError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
            # a checkpoint cut short (the session ended while it was written): try the one before
            log(f"skipping checkpoint at {steps} steps: {type(err).__name__}: {err}")
            for path in files.values():  # out of the way of the next resume and of the pruning
                if path.exists():
                    path.rename(path.with_name("broken_" + path.name))
    raise UserError(f"nothing to resume in {ckpt_dir}: no loadable checkpoint; start without --resume")


def check_overrides(overrides: dict[str, Any], base: dict[str, Any], algo_cls: type) -> None:
    """Refuse an override whose JSON type cannot be the hyperparameter's: text for a number (SB3 takes
    ``learning_rate="abc"`` and fails later with an assertion), a fraction for a count, anything but
    true/false for a switch. The reference is the data file's value, else the algorithm's default."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(algo_cls).parameters.items() if p.default is not p.empty}
    for key, value in overrides.items():
        reference = base.get(key, defaults.get(key))
        if isinstance(reference, bool):
            wrong, kind = not isinstance(value, bool), "true or false"
        elif isinstance(reference, int):
            wrong, kind = isinstance(value, str) or isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()), "an integer"
        elif isinstance(reference, float):
            wrong, kind = isinstance(value, (str, bool)), "a number"
        else:
            continue
        if wrong:
            raise UserError(f"hyperparameter {key} must be {kind} (like {json.dumps(reference)}), got {json.dumps(value)}")


def _open_run(cfg: ExpertTrainConfig, algo_cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(run, hyperparameters)``: run.json of the run being resumed, or a new run's record; the run
    folder is checked first (a file, a folder of something else or no permission is one line)."""
    out = check_directory_destination(cfg.run_dir, what="expert training run")
    run_file = out / "run.json"
    if cfg.resume:
        if not run_file.is_file():
            raise UserError(f"nothing to resume in {out}: no run.json; start without --resume")
        run = json.loads(run_file.read_text())
        if (run["task"], run["algo"]) != (cfg.task, cfg.algo):
            raise UserError(f"{out} holds a {run['algo']} run on {run['task']}, not {cfg.algo} on {cfg.task}")
        return run, run["hyperparams"]
    if run_file.exists():
        raise UserError(f"{out} already holds a run: continue it with --resume, or choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no expert training run; choose another --out")
    base = load_hyperparams(cfg.task, cfg.algo)
    check_overrides(cfg.overrides, base, algo_cls)
    hp = base | cfg.overrides
    return {"task": cfg.task, "algo": cfg.algo, "seed": cfg.seed, "hyperparams": hp, "commands": [], "wall_time_s": 0.0, "steps_done": 0}, hp


def train_expert(cfg: ExpertTrainConfig) -> dict[str, Any]:
    """Train (or continue) an expert; checkpoints, logs and ``run.json`` go to ``cfg.out``. Returns run.json."""
    import torch
    from stable_baselines3.common.logger import configure

    torch.set_num_threads(cfg.threads)
    out = cfg.run_dir
    run_file = out / "run.json"
    algo_cls = algorithm_class(cfg.algo)
    run, hp = _open_run(cfg, algo_cls)
    kwargs, normalize = _algorithm_kwargs(cfg.algo, hp, envs.task_spec(cfg.task).act_dim)
    session = len(run["commands"]) + 1
    vec_env = _make_vec_env(cfg.task, cfg.seed + 1000 * (session - 1), normalize, cfg.algo)
    if not cfg.resume:  # built before the run folder exists: a bad hyperparameter leaves nothing behind
        try:
            model = algo_cls("MlpPolicy", vec_env, seed=cfg.seed, device="cpu", verbose=0, **kwargs)
        except TypeError as err:  # a --hp or data-file key the algorithm does not take
            vec_env.close()
            raise UserError(f"unknown hyperparameter for {algo_cls.__name__}: {err}; see envs/experts/hyperparams.json "
                            "(policy arguments go in policy_kwargs)") from err
        except (ValueError, AssertionError) as err:  # a value the algorithm refuses (SB3 asserts some)
            vec_env.close()
            raise UserError(f"a hyperparameter value {algo_cls.__name__} refuses: {err}; see the hyperparameters "
                            f"{json.dumps(cfg.overrides)} given and envs/experts/hyperparams.json") from err
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    run["commands"].append(cfg.command)
    run["steps_target"] = cfg.steps
    run["versions"] = _versions()
    run["wall_time_before_s"] = run.get("wall_time_s", 0.0)

    log_file = (out / "progress.log").open("a")

    def log(message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    if cfg.resume:
        model, vec_env = _load_latest(algo_cls, cfg, vec_env, log)
        if cfg.algo in OFF_POLICY and "action_noise" in kwargs:
            model.action_noise = kwargs["action_noise"]  # not saved with the model
    model.set_logger(configure(str(out / "logs" / f"session_{session}"), ["csv", "log"]))
    start_steps = model.num_timesteps
    remaining = cfg.steps - start_steps
    log(f"session {session}: {cfg.command}")
    log(f"{cfg.algo} on {cfg.task}: {start_steps} steps done, training {max(remaining, 0)} more to {cfg.steps}; hyperparams {json.dumps(hp)}")
    session_start = time.time()
    try:
        with _StopOnSignal() as stop:
            callback = _make_callback(cfg, run, session_start, start_steps, log, stop)
            if remaining > 0:
                model.learn(total_timesteps=remaining, callback=callback, reset_num_timesteps=False, log_interval=4 if cfg.algo in OFF_POLICY else 1)
                if model.num_timesteps % cfg.checkpoint_every:  # else the callback just saved it
                    callback.save_checkpoint()
            else:
                callback.init_callback(model)
                callback.num_timesteps = model.num_timesteps
                callback.record_run()
        if stop.received:
            log(f"stopped by {stop.received} at {model.num_timesteps} steps, checkpoint saved; --resume continues the run")
            raise KeyboardInterrupt
        log(f"done: {model.num_timesteps} steps, {(model.num_timesteps - start_steps) / max(time.time() - session_start, 1e-9):.1f} env-steps/s this session, wall time {run['wall_time_s']:.0f} s in all")
    finally:
        vec_env.close()
        log_file.close()
    return json.loads(run_file.read_text())


def _versions() -> dict[str, str]:
    import gymnasium
    import mujoco
    import stable_baselines3
    import torch

    versions = {
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "mujoco": mujoco.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    try:
        import sb3_contrib

        versions["sb3_contrib"] = sb3_contrib.__version__
    except ModuleNotFoundError:
        pass
    return versions


# -- export ----------------------------------------------------------------------------------------------


def actor_from_sb3(model, vec_normalize=None):
    """An actor module (``envs.experts.sb3.build_actor``) reproducing ``model.predict(deterministic=True)``, and its config.

    SAC and TQC (the same actor): ``latent_pi`` then ``mu``, tanh-squashed. TD3: ``actor.mu`` (ending in Tanh). PPO:
    ``mlp_extractor.policy_net`` then ``action_net``, clipped. Only flat observations are supported.
    """
    import torch
    from stable_baselines3 import PPO, SAC, TD3
    from stable_baselines3.common.torch_layers import FlattenExtractor

    if isinstance(model, SAC) or type(model).__name__ == "TQC":  # by name: sb3-contrib is optional
        modules, squash, extractor = [*model.actor.latent_pi, model.actor.mu], "tanh", model.actor.features_extractor
        if model.actor.use_sde:
            raise UserError(f"exporting a {type(model).__name__} actor trained with gSDE is not supported")
    elif isinstance(model, TD3):
        modules, squash, extractor = list(model.actor.mu)[:-1], "tanh", model.actor.features_extractor
    elif isinstance(model, PPO):
        policy = model.policy
        modules, squash, extractor = [*policy.mlp_extractor.policy_net, policy.action_net], "clip", policy.pi_features_extractor
    else:
        raise UserError(f"cannot export {type(model).__name__}: only SAC, TD3, PPO and TQC")
    if not isinstance(extractor, FlattenExtractor):
        raise UserError(f"cannot export a policy with features extractor {type(extractor).__name__}")
    linears = [m for m in modules if isinstance(m, torch.nn.Linear)]
    activations = {type(m).__name__ for m in modules if not isinstance(m, torch.nn.Linear)}
    if len(activations) > 1 or not activations <= set(_ACTIVATION_NAMES):
        raise UserError(f"cannot export an actor with layers {sorted(activations)}")
    space = model.action_space
    config = {
        "obs_dim": int(model.observation_space.shape[0]),
        "act_dim": int(space.shape[0]),
        "hidden": [layer.out_features for layer in linears[:-1]],
        "activation": _ACTIVATION_NAMES[activations.pop()] if activations else "relu",
        "squash": squash,
        "action_low": [float(x) for x in space.low],
        "action_high": [float(x) for x in space.high],
        "obs_norm": None,
    }
    if vec_normalize is not None and vec_normalize.norm_obs:
        config["obs_norm"] = {"epsilon": float(vec_normalize.epsilon), "clip_obs": float(vec_normalize.clip_obs)}
    actor = sb3_weights.build_actor(config)
    linear_indices = [i for i, m in enumerate(actor.net) if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for index, layer in zip(linear_indices, linears, strict=True):
            actor.net[index].weight.copy_(layer.weight)
            actor.net[index].bias.copy_(layer.bias)
        if config["obs_norm"] is not None:
            actor.obs_mean.copy_(torch.as_tensor(vec_normalize.obs_rms.mean, dtype=torch.float64))
            actor.obs_var.copy_(torch.as_tensor(vec_normalize.obs_rms.var, dtype=torch.float64))
    return actor.eval(), config


def save_actor(actor, config: dict[str, Any], folder: Path) -> None:
    """Write ``actor.pt`` (state_dict) and ``actor.json`` (its constructor arguments) into ``folder``."""
    import torch

    with atomic_path(folder / sb3_weights.ACTOR_FILE) as tmp:
        torch.save({k: v.clone() for k, v in actor.state_dict().items()}, tmp)
    write_json_atomic(folder / sb3_weights.ACTOR_CONFIG_FILE, config)


def load_sb3_model(path: Path, algo: str):
    """An SB3 model file and the VecNormalize stats saved beside it (``best/vecnormalize.pkl`` or the
    checkpoint's ``model_vecnormalize_<N>_steps.pkl``; ``None`` when training did not normalize)."""
    path = Path(path)
    model = algorithm_class(algo).load(path, device="cpu")
    candidates = [path.parent / "vecnormalize.pkl", path.parent / path.name.replace("model_", "model_vecnormalize_").replace(".zip", ".pkl")]
    stats = next((c for c in candidates if c.is_file() and c != path), None)
    vec_normalize = None
    if stats is not None:
        with stats.open("rb") as f:
            vec_normalize = pickle.load(f)  # our own file, written by VecNormalize.save (as VecNormalize.load does)
        vec_normalize.training = False
    return model, vec_normalize


def check_export_destination(to: str | Path, *, overwrite: bool) -> Path:
    """Refuse, before any work, a folder an export must not replace: a file, a folder of other files
    (always: replacing the folder would delete them), or an expert already there without ``overwrite``."""
    to = check_directory_destination(to, what="exported expert")
    if to.is_dir() and any(to.iterdir()):
        if not sb3_weights.is_expert_folder(to):
            raise UserError(f"{to} is not empty and holds no expert (an export replaces the whole folder); choose another folder")
        if not overwrite:
            shipped = " shipped with the toolkit" if to.resolve().is_relative_to(sb3_weights.WEIGHTS_ROOT.resolve()) else ""
            made_for = sb3_weights.manifest_task(to)
            raise UserError(f"{to} already holds {'an' if made_for is None else 'the ' + made_for} expert{shipped}; "
                            "pass --overwrite to replace it, or export to another folder")
    return to


def _export_source(run_dir: Path, run: dict[str, Any], which: str) -> tuple[Path, float | None]:
    """``(model file, training wall time up to it)`` of a run's best or latest model."""
    if which == "best":
        if not (run_dir / "best" / "model.zip").is_file():
            raise UserError(f"{run_dir} has no best model yet (evaluations run every --eval-every steps); use --which latest")
        model_path, best = run_dir / "best" / "model.zip", json.loads((run_dir / "best" / "best.json").read_text())
        steps, wall_time = best["steps"], best.get("wall_time_s")
    elif which == "latest":
        found = checkpoint_steps(run_dir / "checkpoints")
        if not found:
            raise UserError(f"{run_dir} has no checkpoint yet")
        steps, wall_time = found[0], run.get("wall_time_s")  # run.json is rewritten at each checkpoint
        model_path = _checkpoint_files(run_dir / "checkpoints", steps)["model"]
    else:
        raise UserError(f"unknown --which {which!r}; valid: best, latest")
    if wall_time is None and len(run["commands"]) == 1:
        wall_time = _wall_time_from_log(run_dir / "progress.log", steps)
    return model_path, wall_time


def export_run(
    run_dir: Path, to: Path, which: str = "best", episodes: int = len(MANIFEST_SEEDS), command: str = "", note: str = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export run ``run_dir``'s best or latest model to ``to`` (actor + manifest); returns the manifest.

    An expert already in ``to`` is replaced only with ``overwrite`` (:func:`check_export_destination`).
    The actor, its config and the manifest are written into a new folder that then takes the place of
    ``to`` (:func:`dopr_robot.atomic.atomic_directory`): a failure or a kill during the export's
    evaluation leaves the old expert whole, never a new actor beside the old manifest.
    """
    run_dir = Path(run_dir)
    to = check_export_destination(to, overwrite=overwrite)
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise UserError(f"{run_dir} is not a training run folder (no run.json)")
    run = json.loads(run_file.read_text())
    model_path, wall_time = _export_source(run_dir, run, which)
    with atomic_directory(to) as staging:
        manifest = _export_into(staging, run, model_path, wall_time, episodes, command, note)
    return manifest


def _export_into(folder: Path, run: dict[str, Any], model_path: Path, wall_time: float | None, episodes: int,
                 command: str, note: str) -> dict[str, Any]:
    """Write the actor of ``model_path`` into ``folder``, evaluate it, and write its manifest last."""
    task, algo = run["task"], run["algo"]
    model, vec_normalize = load_sb3_model(model_path, algo)
    actor, config = actor_from_sb3(model, vec_normalize)
    save_actor(actor, config, folder)
    expert = sb3_weights.load_expert_folder(folder, envs.task_spec(task).obs_dim, task)

    start = time.time()
    returns, lengths, successes = episode_returns(expert, task, MANIFEST_SEEDS[:episodes])
    check_returns, _, _ = episode_returns(expert, task, CHECK_SEEDS, horizon=CHECK_HORIZON)
    # Short-horizon floor for the test suite: half the full-episode mean scaled to 200 steps, but never
    # above what these exact episodes gave (they replay deterministically; 10% margin for platforms).
    scaled = 0.5 * float(returns.mean()) * CHECK_HORIZON / envs.task_spec(task).horizon
    floor = min(scaled, 0.9 * float(check_returns.min()) if check_returns.min() > 0 else 1.1 * float(check_returns.min()))
    manifest = {
        "task": task,
        "algo": algo,
        "commands": run["commands"],
        "export_command": command,
        "note": note,
        "source_model": str(model_path),
        "steps_trained": int(model.num_timesteps),
        # Training wall time up to the exported model (null when the run predates that record), and the
        # run's own totals at export time (it may have gone on past the exported model).
        "wall_time_s": None if wall_time is None else round(float(wall_time), 1),
        "run_steps_done": int(run.get("steps_done", 0)),
        "run_wall_time_s": round(float(run.get("wall_time_s", 0.0)), 1),
        "versions": _versions(),
        "hyperparams": run["hyperparams"],
        "seed": run["seed"],
        "evaluation": {
            "episodes": int(len(returns)),
            "seeds": f"{MANIFEST_SEEDS.start}..{MANIFEST_SEEDS.start + len(returns) - 1}",
            "deterministic": True,
            "return_mean": round(float(returns.mean()), 2),
            "return_std": round(float(returns.std()), 2),
            "returns": [round(float(r), 2) for r in returns],
            "length_mean": float(lengths.mean()),
            "lengths": [int(n) for n in lengths],  # shorter than the horizon: the episode terminated (a fall)
            "success_rate": float(successes.mean()),
            "success_criterion": envs.task_spec(task).success_criterion,
            "eval_wall_s": round(time.time() - start, 1),
        },
        "test_check": {
            "horizon": CHECK_HORIZON,
            "seeds": list(CHECK_SEEDS),
            "returns": [round(float(r), 2) for r in check_returns],
            "min_return": round(floor, 2),
        },
    }
    write_json_atomic(folder / sb3_weights.MANIFEST_FILE, manifest)
    return manifest


def _wall_time_from_log(log: Path, steps: int) -> float | None:
    """Seconds from a one-session run's start to its evaluation at ``steps``, read from progress.log."""
    from datetime import datetime

    start = end = None
    for line in log.read_text().splitlines():
        stamp, _, message = line.partition("  ")
        if message.startswith("session 1:"):
            start = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
        elif message.startswith(f"steps {steps} "):
            end = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    return None if start is None or end is None else (end - start).total_seconds()


def evaluate_expert(task: str, expert_path: Path | None, episodes: int, seed: int = seed_ranges.EXPERT_MANIFEST.start) -> dict[str, Any]:
    """Mean ± std return, mean length, episodes ended before the horizon and success rate of an expert folder
    (default: the shipped one) or SB3 zip, over episodes reset with seeds ``seed .. seed + episodes - 1``."""
    if task not in SB3_TASKS:
        raise UserError(f"unknown task {task!r} for expert evaluation; valid: {', '.join(SB3_TASKS)}")
    if episodes < 1:
        raise UserError(f"episodes must be >= 1, got {episodes}")
    if seed < 0:
        raise UserError(f"seed must be >= 0 (episodes are reset with seeds seed..seed+episodes-1), got {seed}")
    obs_dim = envs.task_spec(task).obs_dim
    if expert_path is None:
        expert = envs.make_expert(task)
    else:
        path = Path(expert_path)
        if path.is_dir() and (path / sb3_weights.ACTOR_FILE).is_file():
            expert = sb3_weights.load_expert_folder(path, obs_dim, task)
        elif path.is_file() and path.suffix == ".zip":
            run = next((json.loads(p.read_text()) for p in (path.parent / "run.json", path.parent.parent / "run.json") if p.is_file()), None)
            if run is None:
                raise UserError(f"cannot tell the algorithm of {path}: expected run.json in its run folder")
            if run.get("task") != task:
                raise UserError(f"{path} was trained on {run.get('task')}, not {task} (its run.json says so)")
            expert = SB3Actor(*load_sb3_model(path, run["algo"]))
        else:
            raise UserError(f"--expert {path} is neither an exported expert folder (with {sb3_weights.ACTOR_FILE}) nor an SB3 .zip")
    returns, lengths, successes = episode_returns(expert, task, range(seed, seed + episodes))
    return {
        "task": task,
        "episodes": episodes,
        "seeds": f"{seed}..{seed + episodes - 1}",
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "length_mean": float(lengths.mean()),
        # terminated before the horizon: a locomotion expert that fell
        "ended_early": int((lengths < envs.task_spec(task).horizon).sum()),
        "success_rate": float(successes.mean()),
    }


__all__ = [
    "SB3_TASKS",
    "ExpertTrainConfig",
    "SB3Actor",
    "actor_from_sb3",
    "episode_returns",
    "evaluate_expert",
    "export_run",
    "load_hyperparams",
    "parse_override",
    "save_actor",
    "train_expert",
]
