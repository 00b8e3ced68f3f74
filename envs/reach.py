"""Reach-v0: a 3-joint arm moves its fingertip to a random target in its workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv

from envs._goal_task import GoalTaskEnv

ASSET_PATH = Path(__file__).parent / "assets" / "reach.xml"

# Arm geometry, mirrored from assets/reach.xml. The scripted expert computes forward kinematics
# and the Jacobian from these (tests check them against MuJoCo's fingertip site).
ARM_SHOULDER_HEIGHT = 0.10  # m, shoulder axis above the table (base 0.06 + turret 0.04)
ARM_UPPER_LENGTH = 0.25  # m, shoulder axis to elbow axis
ARM_FOREARM_LENGTH = 0.25  # m, elbow axis to fingertip
ARM_JOINT_DAMPING = 0.5  # N m s / rad, same for all joints
ARM_GEAR = (2.0, 3.0, 1.5)  # N m per unit action: yaw, shoulder, elbow


def fingertip_position(joint_angles: np.ndarray) -> np.ndarray:
    """Forward kinematics of the arm: joint angles ``(..., 3)`` -> fingertip xyz ``(..., 3)``.

    Shoulder and elbow angles are measured from vertical; positive tilts the arm toward +x of the
    turret frame, which is rotated by the yaw angle about z.
    """
    yaw, shoulder, elbow = np.moveaxis(np.asarray(joint_angles, dtype=np.float64), -1, 0)
    reach = ARM_UPPER_LENGTH * np.sin(shoulder) + ARM_FOREARM_LENGTH * np.sin(shoulder + elbow)
    height = (
        ARM_SHOULDER_HEIGHT
        + ARM_UPPER_LENGTH * np.cos(shoulder)
        + ARM_FOREARM_LENGTH * np.cos(shoulder + elbow)
    )
    return np.stack([reach * np.cos(yaw), reach * np.sin(yaw), height], axis=-1)


class ReachEnv(GoalTaskEnv):
    r"""A 3-joint arm (base yaw, shoulder pitch, elbow pitch) reaches a random 3-D target.

    ## Action
    ``Box(-1, 1, (3,), float32)``: joint torques for yaw, shoulder and elbow, scaled in the XML by
    ``gear`` = (2.0, 3.0, 1.5) N m. Gravity is compensated by the joints (``gravcomp``), joints have
    viscous damping 0.5 N m s/rad.

    ## Observation
    ``Box(-inf, inf, (18,), float32)``, in order:

    - 0-2: cos of the joint angles (yaw, shoulder, elbow)
    - 3-5: sin of the joint angles
    - 6-8: joint velocities (rad/s)
    - 9-11: fingertip position xyz (m, world frame; the arm base is at the origin)
    - 12-14: target position xyz (m)
    - 15-17: target minus fingertip (m)

    Named parts (:attr:`OBS_KEYS`): ``robot_state`` 0-11 (what the arm knows without looking),
    ``goal`` 12-14, ``goal_rel`` 15-17. With ``cameras`` (``agentview``, a close third-person view
    of arm and target; ``fixed``, the video camera) the observation is a ``Dict`` of ``flat``, these
    parts and ``<camera>_image`` uint8 ``(H, W, 3)`` at ``image_size`` (width, height).

    ## Reward
    ``reward = reward_distance + reward_control`` with ``reward_distance = -|target - fingertip|``
    and ``reward_control = -ctrl_cost_weight * |action|^2``; both terms are in ``info``.

    ## Success
    ``info["is_success"]`` (on every step and in the reset info) is True while the fingertip is
    within ``success_distance`` (default 0.025 m) of the target. An episode counts as a success when
    ``is_success`` holds on its final step.

    ## Starting state
    Joint angles uniform in yaw [-1.2, 1.2], shoulder [0.0, 0.6], elbow [0.6, 1.6] rad; joint
    velocities uniform in [-0.1, 0.1] rad/s. The target is the fingertip position of a random
    configuration (yaw [-1.5, 1.5], shoulder [0.2, 1.5], elbow [0.3, 2.0] rad), redrawn until it is at
    least 4 cm above the table and 12 cm from the base axis, so it is always reachable.
    All randomness comes from ``self.np_random``.

    ## Episode end
    Never ``terminated`` unless ``terminate_on_success=True`` (then on the first success step).
    ``truncated`` after ``horizon`` steps (default 100 = 2 s at dt 0.02), counted inside the env (no
    ``TimeLimit`` wrapper): the counter is part of :meth:`get_state`.
    """

    OBS_KEYS = {
        "robot_state": slice(0, 12),  # joint cos, sin, velocities and the fingertip: what the arm knows
        "goal": slice(12, 15),
        "goal_rel": slice(15, 18),  # target minus fingertip
    }
    CAMERAS = ("agentview", "fixed")

    def __init__(
        self,
        horizon: int = 100,
        success_distance: float = 0.025,
        ctrl_cost_weight: float = 0.01,
        terminate_on_success: bool = False,
        frame_skip: int = 4,
        render_mode: str | None = None,
        width: int = 320,  # the camera "fixed" in the XML frames the workspace at 4:3
        height: int = 240,
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__(
            ASSET_PATH, 18, horizon, success_distance, ctrl_cost_weight, terminate_on_success,
            frame_skip, render_mode, width, height, cameras, image_size,
        )
        self._fingertip = self.model.site("fingertip").id

    # -- observation, success, reward ---------------------------------------------------------

    def _fingertip_position(self) -> np.ndarray:
        return self.data.site_xpos[self._fingertip].copy()

    def _target_position(self) -> np.ndarray:
        return self.data.mocap_pos[0].copy()

    def _distance(self) -> float:
        return float(np.linalg.norm(self._target_position() - self._fingertip_position()))

    def _flat_obs(self) -> np.ndarray:
        angles = self.data.qpos[:3]
        fingertip = self._fingertip_position()
        target = self._target_position()
        return np.concatenate(
            [np.cos(angles), np.sin(angles), self.data.qvel[:3], fingertip, target, target - fingertip]
        ).astype(np.float32)

    def _task_rewards(self, info: dict[str, Any]) -> dict[str, float]:
        return {"reward_distance": -info["distance"]}

    # -- gymnasium API --------------------------------------------------------------------------

    def do_simulation(self, ctrl: np.ndarray, n_frames: int) -> None:
        super().do_simulation(ctrl, n_frames)
        # mj_step leaves site positions one substep behind qpos; refresh them so the fingertip in
        # the observation matches the joint angles (and matches a state restored by set_state).
        mujoco.mj_kinematics(self.model, self.data)

    def reset_model(self) -> np.ndarray:
        rng = self.np_random
        qpos = rng.uniform(low=[-1.2, 0.0, 0.6], high=[1.2, 0.6, 1.6])
        qvel = rng.uniform(low=-0.1, high=0.1, size=3)
        while True:  # rejection sampling; accepts ~85% of draws
            target = fingertip_position(rng.uniform(low=[-1.5, 0.2, 0.3], high=[1.5, 1.5, 2.0]))
            if target[2] >= 0.04 and np.hypot(target[0], target[1]) >= 0.12:
                break
        self.data.mocap_pos[0] = target
        MujocoEnv.set_state(self, qpos, qvel)
        self._elapsed_steps = 0
        return self._get_obs()
