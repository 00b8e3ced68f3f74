"""Scripted expert for Push-v0: get behind the puck on the puck-goal line, then push along it."""

from __future__ import annotations

import numpy as np

from envs.experts.base import as_batch, smooth_norm_clip, unbatch
from envs.push import PUCK_RADIUS, PUSHER_DAMPING, PUSHER_GEAR, PUSHER_RADIUS

OBS_DIM = 15
CONTACT_DISTANCE = PUCK_RADIUS + PUSHER_RADIUS  # centre-to-centre distance when touching


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class PushExpert:
    """Approach behind the puck (as seen from the goal), then push it along the puck-goal line.

    Everything is computed from the observation, in a frame attached to the puck: ``u`` points from
    the puck to the goal, ``v`` is ``u`` turned 90 degrees; ``a`` and ``b`` are the pusher's
    coordinates along them. Three position targets are blended with smooth (sigmoid) weights, so
    the action is a smooth function of the observation:

    - *around*: beside the puck (side chosen by the sign of ``b``, smoothly), used while the pusher
      is on the goal side of the puck (``a > 0``) so it walks around the puck instead of through it;
    - *behind*: ``standoff`` behind the puck on the goal line, used once the pusher is behind it;
    - *push*: slightly inside the puck on the goal line plus a feedforward velocity along ``u``,
      engaged when the pusher is behind the puck and near the line (small ``|b|``). The target is
      re-aimed every step, so a puck that slides sideways is steered back toward the goal; push
      speed and depth fade out as the puck nears the goal so it stops there.

    A soft radial push-away keeps the pusher off the puck while it is not pushing. The desired
    pusher velocity (smoothly saturated) becomes a force ``damping * v* + velocity_gain * (v* - v)``
    and the action is ``tanh(force / gear)``.
    """

    def __init__(
        self,
        position_gain: float = 6.0,
        velocity_gain: float = 5.0,
        max_speed: float = 0.45,
        push_speed: float = 0.2,
        standoff: float = 0.03,
        push_depth: float = 0.02,
    ) -> None:
        self.position_gain = position_gain
        self.velocity_gain = velocity_gain
        self.max_speed = max_speed
        self.push_speed = push_speed
        self.standoff = standoff
        self.push_depth = push_depth

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Force actions ``(2,)`` or ``(N, 2)`` for observations ``(15,)`` or ``(N, 15)``."""
        batch, single = as_batch(obs, OBS_DIM)
        pusher, pusher_velocity, puck = batch[:, 0:2], batch[:, 2:4], batch[:, 4:6]
        to_goal = batch[:, 13:15]

        goal_distance = np.linalg.norm(to_goal, axis=1, keepdims=True)
        u = to_goal / np.maximum(goal_distance, 1e-6)
        v = np.stack([-u[:, 1], u[:, 0]], axis=1)
        offset = pusher - puck
        a = np.sum(offset * u, axis=1, keepdims=True)
        b = np.sum(offset * v, axis=1, keepdims=True)

        clearance = CONTACT_DISTANCE + self.standoff
        side = np.tanh((b + 0.005) / 0.01)  # +-1; the small bias breaks the tie when b == 0
        around = puck + v * side * (clearance + 0.01) - u * 0.3 * CONTACT_DISTANCE
        behind = puck - u * clearance
        w_behind = _sigmoid(-a / 0.01)
        free_target = w_behind * behind + (1.0 - w_behind) * around

        near_goal = np.tanh(goal_distance / 0.01)  # 0 at the goal, ~1 beyond 2 cm
        push_target = puck - u * (CONTACT_DISTANCE - self.push_depth * near_goal)
        w_push = _sigmoid((-a - 0.75 * CONTACT_DISTANCE) / 0.006) * _sigmoid((0.02 - np.abs(b)) / 0.005)

        target = w_push * push_target + (1.0 - w_push) * free_target
        desired_velocity = self.position_gain * (target - pusher)
        desired_velocity += w_push * self.push_speed * np.tanh(goal_distance / 0.03) * u

        # Soft repulsion from the puck while not pushing: grows as the gap closes below 1.5 cm.
        gap = np.linalg.norm(offset, axis=1, keepdims=True)
        overlap = np.logaddexp(0.0, (CONTACT_DISTANCE + 0.015 - gap) / 0.005) * 0.005  # softplus
        desired_velocity += (1.0 - w_push) * 20.0 * overlap * offset / np.maximum(gap, 1e-6)

        desired_velocity = smooth_norm_clip(desired_velocity, self.max_speed)
        force = PUSHER_DAMPING * desired_velocity + self.velocity_gain * (desired_velocity - pusher_velocity)
        return unbatch(np.tanh(force / PUSHER_GEAR), single)
