"""Scripted experts for the flattened Fetch tasks (see envs/fetch.py for the observation layout).

Fetch actions are gripper displacements: ``action[:3] * 0.05`` m is added to the gripper position
each step (through a mocap weld), so a proportional command ``gain * error / 0.05`` moves a fraction
``gain`` of the way per step. Every command is a smooth function of the observation: position
targets are blended with sigmoid weights and the displacement's norm is saturated with tanh.
"""

from __future__ import annotations

import numpy as np

from envs.experts.base import as_batch, smooth_norm_clip, unbatch

STEP_SCALE = 0.05  # m of displacement per unit action (gymnasium-robotics' _set_action)
BLOCK_HALF_SIZE = 0.025  # m, the Fetch block is a 5 cm cube

# Indices into the flat observation (observation, achieved_goal, desired_goal).
REACH_OBS_DIM = 16
OBJECT_OBS_DIM = 31
GRIP, OBJECT, FINGERS, DESIRED_GOAL = slice(0, 3), slice(3, 6), slice(9, 11), slice(28, 31)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _displacement_action(target: np.ndarray, grip: np.ndarray, gain: float) -> np.ndarray:
    """xyz action moving ``gain`` of the way from ``grip`` to ``target``, norm saturated at 1."""
    return smooth_norm_clip(gain * (target - grip) / STEP_SCALE, 1.0)


class FetchReachExpert:
    """Moves the gripper toward the desired goal; finger command 0."""

    def __init__(self, gain: float = 0.6) -> None:
        self.gain = gain

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(4,)`` or ``(N, 4)`` for observations ``(16,)`` or ``(N, 16)``."""
        batch, single = as_batch(obs, REACH_OBS_DIM)
        move = _displacement_action(batch[:, 13:16], batch[:, 0:3], self.gain)
        return unbatch(np.concatenate([move, np.zeros((len(batch), 1))], axis=1), single)


class FetchPushExpert:
    """Get behind the block on the block-goal line (lifted while travelling), lower, push along it.

    With ``u`` the horizontal unit vector from block to goal and ``a``/``b`` the gripper's
    coordinates along/across it relative to the block, three soft conditions drive the blend:
    *aligned* (behind the block, near the line), *over_behind* (above the point ``standoff``
    behind the block) and *low* (at the block's height). The gripper first rises to ``lift`` above
    the block (horizontal motion is gated on having risen, so it does not sweep the block away),
    travels to the point behind it, descends there (only there), and once aligned and low pushes: the target is
    just inside the block's rear face plus a feedforward step along ``u``, re-aimed every step and
    fading out near the goal; within ~1.5 cm of the goal the gripper holds still.
    """

    def __init__(
        self,
        gain: float = 0.6,
        lift: float = 0.08,
        standoff: float = 0.07,
        push_step: float = 0.012,
    ) -> None:
        self.gain = gain
        self.lift = lift
        self.standoff = standoff
        self.push_step = push_step

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(4,)`` or ``(N, 4)`` for observations ``(31,)`` or ``(N, 31)``."""
        batch, single = as_batch(obs, OBJECT_OBS_DIM)
        grip, block, goal = batch[:, GRIP], batch[:, OBJECT], batch[:, DESIRED_GOAL]

        to_goal = goal[:, :2] - block[:, :2]
        goal_distance = np.linalg.norm(to_goal, axis=1, keepdims=True)
        u = to_goal / np.maximum(goal_distance, 1e-6)
        v = np.stack([-u[:, 1], u[:, 0]], axis=1)
        offset = grip[:, :2] - block[:, :2]
        a = np.sum(offset * u, axis=1, keepdims=True)
        b = np.sum(offset * v, axis=1, keepdims=True)
        height = grip[:, 2:3] - block[:, 2:3]

        behind_xy = block[:, :2] - u * self.standoff
        over_behind = _sigmoid((0.01 - np.linalg.norm(grip[:, :2] - behind_xy, axis=1, keepdims=True)) / 0.003)
        aligned = _sigmoid((-a - 0.02) / 0.005) * _sigmoid((0.025 - np.abs(b)) / 0.005)
        low = _sigmoid((0.02 - height) / 0.005)
        pushing = aligned * low
        # Descend over the standoff point, or anywhere on the line at least 5.5 cm behind the block
        # (the standoff point itself can lie outside the arm's reach), or to stay down while pushing.
        # Coming down nearer the block, e.g. when passing over it on the way, tips it over.
        far_behind = aligned * _sigmoid((-a - 0.055) / 0.004)
        descend = 1.0 - (1.0 - over_behind) * (1.0 - far_behind) * (1.0 - pushing)  # soft OR
        risen = _sigmoid((height - 0.5 * self.lift) / 0.01)
        may_travel = descend + risen - descend * risen

        near_goal = np.tanh(goal_distance / 0.02)
        push_xy = block[:, :2] - u * (BLOCK_HALF_SIZE + 0.01 - 0.01 * near_goal)
        target_xy = pushing * push_xy + (1.0 - pushing) * behind_xy
        target_z = block[:, 2:3] - 0.005 + self.lift * (1.0 - descend)

        move = self.gain * (np.concatenate([target_xy, target_z], axis=1) - grip) / STEP_SCALE
        move[:, :2] *= may_travel
        move[:, :2] += pushing * (self.push_step / STEP_SCALE) * near_goal * u
        # Hold still once the block is at the goal: there the block-goal direction u is noise, and
        # re-aiming on it would walk the gripper around the block and knock it off again.
        move *= _sigmoid((goal_distance - 0.015) / 0.004)
        move = smooth_norm_clip(move, 1.0)
        return unbatch(np.concatenate([move, np.zeros((len(batch), 1))], axis=1), single)


class FetchPickAndPlaceExpert:
    """Hover over the block with open fingers, descend, close, then carry it to the goal.

    The fingers close as the gripper centre nears the block centre; once the block sits between
    closed fingers (``grasped``), the position target switches from the block to the goal.
    """

    def __init__(self, gain: float = 0.6, hover: float = 0.06) -> None:
        self.gain = gain
        self.hover = hover

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(4,)`` or ``(N, 4)`` for observations ``(31,)`` or ``(N, 31)``."""
        batch, single = as_batch(obs, OBJECT_OBS_DIM)
        grip, block, goal = batch[:, GRIP], batch[:, OBJECT], batch[:, DESIRED_GOAL]
        finger_opening = np.sum(batch[:, FINGERS], axis=1, keepdims=True)

        horizontal_error = np.linalg.norm(block[:, :2] - grip[:, :2], axis=1, keepdims=True)
        block_distance = np.linalg.norm(block - grip, axis=1, keepdims=True)
        above = _sigmoid((0.01 - horizontal_error) / 0.003)
        close = _sigmoid((0.015 - block_distance) / 0.003)
        # Closed on a 5 cm block the fingers stay ~5 cm apart; fully closed they touch.
        grasped = close * _sigmoid((2 * BLOCK_HALF_SIZE + 0.004 - finger_opening) / 0.002)

        approach = np.concatenate([block[:, :2], block[:, 2:3] + self.hover * (1.0 - above)], axis=1)
        target = grasped * goal + (1.0 - grasped) * approach
        move = _displacement_action(target, grip, self.gain)
        fingers = 1.0 - 2.0 * close  # open (+1) far from the block, closing (-1) at it
        return unbatch(np.concatenate([move, fingers], axis=1), single)
