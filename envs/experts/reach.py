"""Scripted expert for Reach-v0: damped least-squares IK on the velocity level + joint-velocity control."""

from __future__ import annotations

import numpy as np

from envs.experts.base import as_batch, smooth_norm_clip, unbatch
from envs.reach import ARM_FOREARM_LENGTH, ARM_GEAR, ARM_JOINT_DAMPING, ARM_UPPER_LENGTH

OBS_DIM = 18


def arm_jacobian(joint_angles: np.ndarray) -> np.ndarray:
    """Fingertip position Jacobian ``(N, 3, 3)`` (xyz by yaw/shoulder/elbow) at angles ``(N, 3)``."""
    yaw, shoulder, elbow = joint_angles.T
    s1, c1 = np.sin(shoulder), np.cos(shoulder)
    s12, c12 = np.sin(shoulder + elbow), np.cos(shoulder + elbow)
    reach = ARM_UPPER_LENGTH * s1 + ARM_FOREARM_LENGTH * s12
    reach_d_shoulder = ARM_UPPER_LENGTH * c1 + ARM_FOREARM_LENGTH * c12
    reach_d_elbow = ARM_FOREARM_LENGTH * c12
    cos_yaw, sin_yaw = np.cos(yaw), np.sin(yaw)
    jacobian = np.empty((joint_angles.shape[0], 3, 3))
    jacobian[:, :, 0] = np.stack([-reach * sin_yaw, reach * cos_yaw, np.zeros_like(yaw)], axis=-1)
    jacobian[:, :, 1] = np.stack(
        [reach_d_shoulder * cos_yaw, reach_d_shoulder * sin_yaw, -ARM_UPPER_LENGTH * s1 - ARM_FOREARM_LENGTH * s12],
        axis=-1,
    )
    jacobian[:, :, 2] = np.stack([reach_d_elbow * cos_yaw, reach_d_elbow * sin_yaw, -ARM_FOREARM_LENGTH * s12], axis=-1)
    return jacobian


class ReachExpert:
    """Moves the fingertip straight toward the target, slowing as it closes in.

    From the observation only: joint angles (atan2 of the sin/cos entries), joint velocities and the
    target-minus-fingertip vector. The desired fingertip velocity ``position_gain * error`` (norm
    smoothly saturated at ``max_tip_speed``) is mapped to joint velocities by damped least squares,
    ``dq* = J^T (J J^T + damping^2 I)^-1 v``, which stays bounded near singular poses. Torque
    ``= joint_damping * dq* + velocity_gain * (dq* - dq)`` cancels the joints' viscous damping and
    tracks ``dq*``; the action is ``tanh(torque / gear)``, smooth and inside [-1, 1].
    """

    def __init__(
        self,
        position_gain: float = 5.0,
        max_tip_speed: float = 0.6,
        damping: float = 0.04,
        velocity_gain: float = 0.3,
    ) -> None:
        self.position_gain = position_gain
        self.max_tip_speed = max_tip_speed
        self.damping = damping
        self.velocity_gain = velocity_gain

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Torque actions ``(3,)`` or ``(N, 3)`` for observations ``(18,)`` or ``(N, 18)``."""
        batch, single = as_batch(obs, OBS_DIM)
        joint_angles = np.arctan2(batch[:, 3:6], batch[:, 0:3])
        joint_velocities = batch[:, 6:9]
        error = batch[:, 15:18]

        tip_velocity = smooth_norm_clip(self.position_gain * error, self.max_tip_speed)
        jacobian = arm_jacobian(joint_angles)
        gram = jacobian @ jacobian.transpose(0, 2, 1) + self.damping**2 * np.eye(3)
        desired_joint_velocity = (
            jacobian.transpose(0, 2, 1) @ np.linalg.solve(gram, tip_velocity[:, :, None])
        )[:, :, 0]

        torque = ARM_JOINT_DAMPING * desired_joint_velocity + self.velocity_gain * (
            desired_joint_velocity - joint_velocities
        )
        return unbatch(np.tanh(torque / np.asarray(ARM_GEAR)), single)
