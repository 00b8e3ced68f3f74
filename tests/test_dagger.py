"""DAgger on a linear system whose answer is known, the relabelling replayed, resume, and bad input.

The system is x' = A x + B u with the expert u = -K x. The initial demonstrations start on an
eigenvector v of A - B K, so they never leave the line through v: least squares on them recovers K
along v only (the minimum-norm fit is 0 across it), and the learner drifts off the line. DAgger's
first round labels those off-line states with -K x, and least squares on the aggregate then recovers
K exactly: the oracle is K itself and the states the test replays, not the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium
import h5py
import numpy as np
import pytest
import torch

from demos.episode import make_episode
from demos.hdf5 import save
from dopr_robot.cli import main
from dopr_robot.dagger import BCLearner, DaggerConfig, DaggerResult, run_dagger, train_template
from dopr_robot.errors import UserError

A = np.array([[1.0, 0.1], [0.0, 1.0]])
B = np.array([[0.0], [0.1]])
K = np.array([[3.0, 4.0]])  # A - B K has eigenvalues 0.9 and 0.7: stable, real eigenvectors
HORIZON = 12


class LinearEnv(gymnasium.Env):
    """x' = A x + B u from x0 uniform in [-1, 1]^2 (seeded); truncated after HORIZON steps."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None):
        super().reset(seed=seed)
        self.x, self.t = self.np_random.uniform(-1, 1, 2).astype(np.float32), 0
        return self.x.copy(), {}

    def step(self, action):
        self.x = (A @ self.x + B @ np.asarray(action, dtype=np.float64)).astype(np.float32)
        self.t += 1
        return self.x.copy(), -float(self.x @ self.x), False, self.t >= HORIZON, {"is_success": False}


class LinearExpert:
    def act(self, obs: np.ndarray) -> np.ndarray:
        return (-obs @ K.T.astype(np.float32)).astype(np.float32)


class LinearController:
    def __init__(self, gain: np.ndarray):
        self.gain = gain.astype(np.float32)

    def reset(self, slots, obs, seeds=None) -> None:
        pass

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        return -obs @ self.gain.T


class LeastSquares:
    """A linear learner: the minimum-norm least-squares gain on every (state, label) of the aggregate."""

    def __init__(self):
        self.fits: list[int] = []

    def fit(self, k: int, data: Path, out: Path, previous: Path | None) -> None:
        self.fits.append(k)
        states, labels = _all(data, "obs/flat"), _all(data, "actions")
        weights = np.linalg.lstsq(states.astype(np.float64), labels.astype(np.float64), rcond=None)[0]
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "gain.npy", -weights.T)

    def controller(self, out: Path, num_envs: int) -> LinearController:
        return LinearController(self.gain(out))

    @staticmethod
    def gain(out: Path) -> np.ndarray:
        return np.load(out / "gain.npy")


def _all(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as file:
        return np.concatenate([group[key][()] for group in file["data"].values()])


def _episodes(path: Path) -> list[dict[str, Any]]:
    with h5py.File(path, "r") as file:
        return [{"name": name, **dict(group.attrs), **{key: group[key][()] for key in ("actions", "obs/flat")},
                 "executed": group["executed_actions"][()] if "executed_actions" in group else None}
                for name, group in file["data"].items()]


def _line_demos(path: Path, episodes: int = 4) -> Path:
    """Expert episodes that start on an eigenvector of A - B K, so every state lies on that line."""
    closed = A - B @ K
    _, vectors = np.linalg.eig(closed)
    v = np.real(vectors[:, 0])
    recorded = []
    for i in range(episodes):
        x = (0.5 + 0.1 * i) * v
        xs, us = [], []
        for _ in range(HORIZON):
            u = -K @ x
            xs.append(x.astype(np.float32))
            us.append(u.astype(np.float32))
            x = A @ x + B @ u
        recorded.append(make_episode(f"demo_{i}", np.array(xs), np.array(us), seed=i))
    save(path, recorded, task="Linear", meta={"noise": 0.0})
    return path


def _config(tmp_path: Path, **overrides: Any) -> DaggerConfig:
    settings = dict(out=str(tmp_path / "dagger"), task="Linear", rounds=2, episodes_per_round=3, beta0=0.0,
                    steps_per_round=10, num_envs=2, train=train_template(steps=20, batch_size=16))
    return DaggerConfig(**{**settings, **overrides})


def test_dagger_covers_the_learners_states_and_recovers_the_expert_gain(tmp_path: Path) -> None:
    config, learner = _config(tmp_path), LeastSquares()
    result = run_dagger(config, LinearEnv, LinearExpert(), learner, _line_demos(tmp_path / "demos.hdf5"))

    gains = [learner.gain(Path(config.out) / f"round_{k}" / "run") for k in range(3)]
    assert np.linalg.norm(gains[0] - K) > 1.0  # the demonstrations alone leave K unknown across the line
    assert np.linalg.norm(gains[1] - K) < 1e-4 and np.linalg.norm(gains[2] - K) < 1e-4

    aggregate = _episodes(Path(config.out) / "round_2" / "data.hdf5")
    relabelled = [e for e in aggregate if e["source"] == "dagger"]
    assert [e["round"] for e in aggregate].count(0) == 4 and len(relabelled) == 2 * 3
    assert result.rounds[-1]["relabelled_states"] == 2 * 3 * HORIZON
    assert result.expert_labels == (4 + 6) * HORIZON
    for episode in relabelled:  # the learner's own states (beta 0): replayed from the seed with the previous gain
        gain = gains[episode["round"] - 1]
        env = LinearEnv()
        x, _ = env.reset(seed=int(episode["seed"]))
        for t in range(HORIZON):
            np.testing.assert_array_equal(episode["obs/flat"][t], x)
            np.testing.assert_array_equal(episode["actions"][t], -x @ K.T.astype(np.float32))  # labelled -K x exactly
            x, *_ = env.step(-x @ gain.T.astype(np.float32))
        assert episode["seed"] in config.rollout_seeds(episode["round"])


def test_relabelling_replays_the_expert_at_each_visited_state(tmp_path: Path) -> None:
    config = _config(tmp_path, beta0=0.5, rounds=1, episodes_per_round=4)
    run_dagger(config, LinearEnv, LinearExpert(), LeastSquares(), _line_demos(tmp_path / "demos.hdf5"))
    expert = LinearExpert()
    executed_by_expert = []
    for episode in (e for e in _episodes(Path(config.out) / "round_1" / "data.hdf5") if e["source"] == "dagger"):
        env = LinearEnv()
        x, _ = env.reset(seed=int(episode["seed"]))
        for t, executed in enumerate(episode["executed"]):
            np.testing.assert_array_equal(episode["obs/flat"][t], x)
            np.testing.assert_array_equal(episode["actions"][t], expert.act(x[None])[0])
            executed_by_expert.append(bool(np.array_equal(executed, episode["actions"][t])))
            x, *_ = env.step(executed)
    assert 0 < sum(executed_by_expert) < len(executed_by_expert)  # beta 0.5 mixes both


class Killed(Exception):
    pass


def test_a_killed_dagger_reruns_only_the_unfinished_round_and_counts_the_earlier_calls(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    config, demos_file = _config(tmp_path), _line_demos(tmp_path / "demos.hdf5")
    learner = LeastSquares()
    real_fit = learner.fit

    def killed_in_round_2(k: int, *args: Any) -> None:
        if k == 2:
            raise Killed
        real_fit(k, *args)

    monkeypatch.setattr(learner, "fit", killed_in_round_2)
    with pytest.raises(Killed):
        run_dagger(config, LinearEnv, LinearExpert(), learner, demos_file)
    round_2 = Path(config.out) / "round_2"
    written = (round_2 / "data.hdf5").read_bytes()
    # Times far above the real ones, so that only their being counted can explain the round's total: the
    # killed call's rollouts took 1000 s, and its training (as a checkpoint would carry it) 500 s.
    recorded = json.loads((round_2 / "data_seconds.json").read_text())
    (round_2 / "data_seconds.json").write_text(json.dumps({**recorded, "rollout": 1000.0}))

    again, controllers = LeastSquares(), []
    real_controller, real_again_fit = again.controller, again.fit
    monkeypatch.setattr(again, "controller", lambda *a: controllers.append(a) or real_controller(*a))
    monkeypatch.setattr(again, "fit", lambda *a: real_again_fit(*a) or 500.0)
    result = run_dagger(config, LinearEnv, LinearExpert(), again, demos_file)
    assert again.fits == [2] and controllers == []  # rounds 0-1 kept, round 2's aggregate reused
    assert (round_2 / "data.hdf5").read_bytes() == written
    done = json.loads((round_2 / "done.json").read_text())
    assert done["seconds"]["rollout"] == 1000.0 and done["seconds"]["relabel"] == round(recorded["relabel"], 4)
    assert 500.0 <= done["seconds"]["train"] < 510.0
    assert 1500.0 <= done["wall_time_s"] < 1510.0
    assert result.wall_time_s == pytest.approx(sum(r["wall_time_s"] for r in result.rounds))


def test_a_round_recorded_without_its_wall_time_counts_its_stages(tmp_path: Path) -> None:
    """done.json files written before rounds recorded wall_time_s: the sum of their seconds."""
    old = {"seconds": {"rollout": 1.5, "relabel": 0.25, "aggregate": 0.25, "train": 8.0}}
    result = DaggerResult(tmp_path, rounds=[old, {**old, "wall_time_s": 30.0}])
    assert result.wall_time_s == 10.0 + 30.0


def test_bc_rounds_continue_the_previous_weights_and_optimizer_state(tmp_path: Path) -> None:
    config = _config(tmp_path, rounds=1, train=train_template(steps=20, batch_size=16, policy_options={"width": 16}))
    run_dagger(config, LinearEnv, LinearExpert(), BCLearner(config, device="cpu"), _line_demos(tmp_path / "d.hdf5"))
    checkpoint = torch.load(Path(config.out) / "round_1" / "run" / "checkpoint.pt", weights_only=True)
    steps = {int(state["step"]) for state in checkpoint["optimizer"]["state"].values()}
    assert steps == {20 + 10} and checkpoint["step"] == 10  # AdamW's moments went on from round 0's 20 steps


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "0"], "--rounds must be an integer >= 1"),
    (["--beta0", "1.5"], "--beta0 must be a probability"),
    (["--task", "Ant-v5"], "DAgger needs Ant-v5's expert"),
    (["--task", "Nope-v0"], "unknown task"),
    (["--rollout-seed", "0"], "outside the DAgger seeds"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    out = tmp_path / "out"
    args = ["dagger", "--task", "Push-v0", "--out", str(out), "--no-progress", *argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, rounds=1)
    from dopr_robot.dagger import prepare

    prepare(config)
    with pytest.raises(UserError, match=r"other settings \(changed: beta0\)"):
        prepare(_config(tmp_path, rounds=1, beta0=0.3))
