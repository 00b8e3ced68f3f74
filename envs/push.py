"""Push-v0: a round pusher on a table pushes a free puck to a random goal (contact-rich, 150 steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.envs.mujoco import MujocoEnv

from envs._goal_task import GoalTaskEnv

ASSET_PATH = Path(__file__).parent / "assets" / "push.xml"

# Mirrored from assets/push.xml for the scripted expert.
PUCK_RADIUS = 0.04  # m
PUSHER_RADIUS = 0.02  # m
PUSHER_DAMPING = 8.0  # N s / m, on each slide joint
PUSHER_GEAR = 5.0  # N per unit action


class PushEnv(GoalTaskEnv):
    r"""A pusher on x/y slide joints pushes a free puck (on a table with friction) to a goal.

    The puck is a free body (radius 4 cm, 0.2 kg, sliding friction 0.4): it slides, spins, and keeps
    moving briefly after contact ends, so small errors in where the pusher hits compound over the
    episode.

    ## Action
    ``Box(-1, 1, (2,), float32)``: forces on the pusher along x and y, scaled by ``gear`` = 5 N in
    the XML. The slide joints have viscous damping 8 N s/m (top speed about 0.6 m/s).

    ## Observation
    ``Box(-inf, inf, (15,), float32)``, all in the table plane (world frame, m and m/s), in order:

    - 0-1: pusher position xy
    - 2-3: pusher velocity xy
    - 4-5: puck position xy
    - 6-7: puck velocity xy
    - 8: puck angular velocity about its vertical axis (rad/s)
    - 9-10: goal position xy
    - 11-12: puck minus pusher
    - 13-14: goal minus puck

    Named parts (:attr:`OBS_KEYS`): ``robot_state`` 0-3 (what the pusher knows without looking),
    ``object`` 4-8, ``goal`` 9-10, ``object_rel`` 11-12, ``goal_rel`` 13-14. With ``cameras``
    (``agentview``, a steep view of the whole pusher range; ``fixed``, the video camera) the
    observation is a ``Dict`` of ``flat``, these parts and ``<camera>_image`` uint8 ``(H, W, 3)``.

    ## Reward
    ``reward = reward_goal + reward_near + reward_control`` with ``reward_goal = -|goal - puck|``,
    ``reward_near = -0.5 * max(0, |puck - pusher| - 0.06)`` (0 when touching) and
    ``reward_control = -ctrl_cost_weight * |action|^2``; all three terms are in ``info``.

    ## Success
    ``info["is_success"]`` (on every step and in the reset info) is True while the puck centre is
    within ``success_distance`` (default 0.03 m) of the goal. An episode counts as a success when
    ``is_success`` holds on its final step.

    ## Starting state
    Puck centre uniform in [-0.15, 0.15]^2 m; goal uniform in [-0.2, 0.2]^2 m, redrawn until at least
    0.12 m from the puck; pusher uniform in [-0.3, 0.3]^2 m, redrawn until at least 0.1 m from the
    puck; everything at rest. All randomness comes from ``self.np_random``.

    ## Episode end
    Never ``terminated`` unless ``terminate_on_success=True`` (then on the first success step).
    ``truncated`` after ``horizon`` steps (default 150 = 6 s at dt 0.04), counted inside the env (no
    ``TimeLimit`` wrapper): the counter is part of :meth:`get_state`.
    """

    OBS_KEYS = {
        "robot_state": slice(0, 4),  # pusher position and velocity: what the pusher knows
        "object": slice(4, 9),  # puck position, velocity, spin
        "goal": slice(9, 11),
        "object_rel": slice(11, 13),  # puck minus pusher
        "goal_rel": slice(13, 15),  # goal minus puck
    }
    CAMERAS = ("agentview", "fixed")

    def __init__(
        self,
        horizon: int = 150,
        success_distance: float = 0.03,
        ctrl_cost_weight: float = 0.01,
        terminate_on_success: bool = False,
        frame_skip: int = 8,
        render_mode: str | None = None,
        width: int = 320,  # the camera "fixed" in the XML frames the workspace at 4:3
        height: int = 240,
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__(
            ASSET_PATH, 15, horizon, success_distance, ctrl_cost_weight, terminate_on_success,
            frame_skip, render_mode, width, height, cameras, image_size,
        )

    # -- observation, success, reward ---------------------------------------------------------
    # qpos = [pusher x, pusher y, puck xyz, puck quaternion]; qvel = [pusher vx, vy, puck linear
    # velocity (world), puck angular velocity (body frame)]. Read from qpos/qvel rather than body
    # positions, which mj_step leaves one substep behind.

    def _pusher_position(self) -> np.ndarray:
        return self.data.qpos[0:2].copy()

    def _puck_position(self) -> np.ndarray:
        return self.data.qpos[2:4].copy()

    def _goal_position(self) -> np.ndarray:
        return self.data.mocap_pos[0, :2].copy()

    def _flat_obs(self) -> np.ndarray:
        pusher, puck, goal = self._pusher_position(), self._puck_position(), self._goal_position()
        qvel = self.data.qvel
        return np.concatenate(
            [pusher, qvel[0:2], puck, qvel[2:4], qvel[7:8], goal, puck - pusher, goal - puck]
        ).astype(np.float32)

    def _distance(self) -> float:
        return float(np.linalg.norm(self._goal_position() - self._puck_position()))

    def _task_rewards(self, info: dict[str, Any]) -> dict[str, float]:
        gap = float(np.linalg.norm(self._puck_position() - self._pusher_position()))
        return {
            "reward_goal": -info["distance"],
            "reward_near": -0.5 * max(0.0, gap - (PUCK_RADIUS + PUSHER_RADIUS)),
        }

    # -- gymnasium API --------------------------------------------------------------------------

    def reset_model(self) -> np.ndarray:
        rng = self.np_random
        puck = rng.uniform(-0.15, 0.15, size=2)
        goal = rng.uniform(-0.2, 0.2, size=2)
        while np.linalg.norm(goal - puck) < 0.12:
            goal = rng.uniform(-0.2, 0.2, size=2)
        pusher = rng.uniform(-0.3, 0.3, size=2)
        while np.linalg.norm(pusher - puck) < 0.1:
            pusher = rng.uniform(-0.3, 0.3, size=2)

        qpos = self.init_qpos.copy()  # puck upright at rest height, identity orientation
        qpos[0:2] = pusher
        qpos[2:4] = puck
        self.data.mocap_pos[0, :2] = goal
        MujocoEnv.set_state(self, qpos, np.zeros(self.model.nv))
        self._elapsed_steps = 0
        return self._get_obs()
