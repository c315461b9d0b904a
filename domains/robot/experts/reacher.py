"""Reacher expert: analytic inverse kinematics of the 2-link arm + PD control on joint angles.

The arm has two IK solutions for every reachable target (elbow 'up': positive elbow
angle, elbow 'down': negative). They drive the elbow joint in opposite directions from
the same start, so demonstrations that pick the elbow at random per episode are
bimodal: the mean of the two action sequences reaches neither solution.

Reacher-v5 observation (10,): cos q1, cos q2, sin q1, sin q2, target x, target y,
q1 dot, q2 dot, fingertip x - target x, fingertip y - target y.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Elbow = Literal["up", "down", "random"]

LINK1 = 0.1  # shoulder to elbow (reacher.xml)
LINK2 = 0.11  # elbow to fingertip
ELBOW_LIMIT = 2.95  # joint1 range is [-3, 3]; keep the target inside it
# Gains for critical damping at about 15 rad/s: the motors have gear 200 and the joints
# armature 1 and damping 1, so q'' ~ 200 u - q'.
KP = 1.1
KD = 0.145


def inverse_kinematics(target_xy: np.ndarray, elbow_sign: float) -> np.ndarray:
    """Joint angles (q1, q2) that put the fingertip on ``target_xy``; sign of q2 picks the elbow."""
    x, y = float(target_xy[0]), float(target_xy[1])
    r2 = x * x + y * y
    cos_q2 = np.clip((r2 - LINK1**2 - LINK2**2) / (2 * LINK1 * LINK2), -1.0, 1.0)
    q2 = elbow_sign * min(float(np.arccos(cos_q2)), ELBOW_LIMIT)
    q1 = np.arctan2(y, x) - np.arctan2(LINK2 * np.sin(q2), LINK1 + LINK2 * np.cos(q2))
    return np.array([q1, q2])


def wrap_angle(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def reacher_action(obs: np.ndarray, elbow_sign: float, kp: float = KP, kd: float = KD) -> np.ndarray:
    """PD torque toward the IK solution of the chosen elbow, clipped to the action box [-1, 1]."""
    obs = np.asarray(obs, dtype=np.float64)
    q = np.arctan2(obs[2:4], obs[0:2])
    qdot = obs[6:8]
    q_star = inverse_kinematics(obs[4:6], elbow_sign)
    # The shoulder turns freely (take the short way round); the elbow is limited (no wrap).
    err = np.array([wrap_angle(q_star[0] - q[0]), q_star[1] - q[1]])
    return np.clip(kp * err - kd * qdot, -1.0, 1.0).astype(np.float32)


class ReacherExpert:
    """IK + PD expert; ``elbow='random'`` draws the elbow solution once per episode."""

    def __init__(self, rng: np.random.Generator, elbow: Elbow = "random", kp: float = KP, kd: float = KD):
        if elbow not in ("up", "down", "random"):
            raise ValueError(f"elbow must be 'up', 'down' or 'random', got {elbow!r}.")
        self._rng = rng
        self._elbow = elbow
        self._kp, self._kd = kp, kd
        self.elbow_sign = 1.0

    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        if self._elbow == "random":
            self.elbow_sign = 1.0 if self._rng.random() < 0.5 else -1.0
        else:
            self.elbow_sign = 1.0 if self._elbow == "up" else -1.0

    def act(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        return reacher_action(obs, self.elbow_sign, self._kp, self._kd)
