"""A scripted expert for robosuite's Lift (see envs/robosuite_tasks.py for the flat observation).

OSC_POSE actions are deltas of the end-effector goal: ``action[:3] * 0.05`` m and ``action[3:6] *
0.5`` rad per step, so a proportional command ``gain * error / 0.05`` moves a fraction ``gain`` of
the way. Every command is a smooth function of the observation (sigmoid blends, tanh saturation),
as the Fetch experts are.
"""

from __future__ import annotations

import numpy as np

from envs.experts.base import as_batch, smooth_norm_clip, unbatch

OBS_DIM = 19
POSITION_SCALE = 0.05  # m of goal displacement per unit action (robomimic's OSC_POSE output_max)
ROTATION_SCALE = 0.5  # rad per unit action
# Slices of the flat observation: robot0_eef_pos, robot0_eef_quat (x y z w), robot0_gripper_qpos, cube_pos, cube_quat.
EEF, EEF_QUAT, FINGERS, CUBE, CUBE_QUAT = slice(0, 3), slice(3, 7), slice(7, 9), slice(9, 12), slice(12, 16)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _yaw(quat: np.ndarray) -> np.ndarray:
    """Rotation about the vertical axis of x y z w quaternions ``(N, 4)`` -> ``(N, 1)``."""
    x, y, z, w = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))[:, None]


class RobosuiteLiftExpert:
    """Turn the gripper to the cube's faces over it, descend with open fingers, close, lift.

    The cube is square in plan, so the yaw error is taken modulo 90 degrees: the fingers close on
    two opposite faces (a grasp across the diagonal slips). The fingers close as the grip site nears
    the cube centre; once the fingers have closed on the cube (``grasped``: close to it with a gap
    near its width) the position target rises ``lift`` above the cube.
    """

    def __init__(self, gain: float = 1.0, hover: float = 0.06, lift: float = 0.15) -> None:
        self.gain, self.hover, self.lift = gain, hover, lift

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(7,)`` or ``(N, 7)`` for observations ``(19,)`` or ``(N, 19)`` (or the env's dict of them)."""
        batch, single = as_batch(obs["flat"] if isinstance(obs, dict) else obs, OBS_DIM)
        eef, cube = batch[:, EEF], batch[:, CUBE]
        gap = batch[:, FINGERS][:, :1] - batch[:, FINGERS][:, 1:]  # finger opening, ~0.08 m open

        horizontal_error = np.linalg.norm(cube[:, :2] - eef[:, :2], axis=1, keepdims=True)
        distance = np.linalg.norm(cube - eef, axis=1, keepdims=True)
        above = _sigmoid((0.01 - horizontal_error) / 0.003)
        close = _sigmoid((0.012 - distance) / 0.003)
        grasped = close * _sigmoid((0.05 - gap) / 0.002)  # the cube is 4.0-4.4 cm wide

        approach = np.concatenate([cube[:, :2], cube[:, 2:3] + self.hover * (1.0 - above)], axis=1)
        raised = np.concatenate([cube[:, :2], cube[:, 2:3] + self.lift], axis=1)
        target = grasped * raised + (1.0 - grasped) * approach
        move = smooth_norm_clip(self.gain * (target - eef) / POSITION_SCALE, 1.0)

        yaw_error = np.mod(_yaw(batch[:, CUBE_QUAT]) - _yaw(batch[:, EEF_QUAT]) + np.pi / 4, np.pi / 2) - np.pi / 4
        turn = np.clip(yaw_error / ROTATION_SCALE, -1.0, 1.0) * (1.0 - grasped)
        fingers = 2.0 * close - 1.0  # open (-1) away from the cube, closing (+1) at it
        zeros = np.zeros_like(turn)
        return unbatch(np.concatenate([move, zeros, zeros, turn, fingers], axis=1), single)
