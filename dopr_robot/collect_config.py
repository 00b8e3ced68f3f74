"""The collection of expert demonstrations as one typed config: ``dopr-robot collect``'s options, and
the demonstrations a comparison collects for each task (``CompareConfig.demo``, on its command line
as ``--demo-*``: ``--demo-episodes``, ``--demo-success-only``, ...).

Episode ``i`` is reset with seed ``seed + i`` (see :mod:`demos.collector` for noise and success-only
collection). What a collected file records of its collection (:meth:`CollectConfig.record`) is what
``compare`` checks before it reuses a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from demos.collector import default_max_attempts
from dopr_robot.config import count_or_counts, option
from dopr_robot.errors import UserError
from envs.seeds import DEMO_SEED


@dataclass(frozen=True)
class CollectConfig:
    """Expert demonstrations of one task, from reset seeds ``seed, seed + 1, ...``."""

    episodes: int | list = option(
        50, parse=count_or_counts, metavar="N[,N...]",
        help="episodes to collect (compare takes several, like 10,25,50: one comparison per count in OUT/demos<N>/, "
             "each count's demonstrations the first episodes of the larger ones')")
    seed: int = option(DEMO_SEED, help="episode i is reset with seed SEED + i")
    noise: float = option(0.0, help="std of Gaussian noise added to the executed action (clipped to the bounds); the "
                                    "recorded label stays the clean expert action (0: no noise)")
    success_only: bool = option(False, help="keep only successful episodes: attempt seeds SEED, SEED + 1, ... until "
                                            "EPISODES succeed (the file records how many were dropped, and their seeds)")
    max_attempts: int = option(0, help="when only successful episodes are kept: give up (error, no file) after this "
                                       "many attempts (0: 3 * EPISODES + 10)")

    def __post_init__(self) -> None:
        counts = self.counts()
        if not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
            raise UserError(f"--episodes must be a count >= 1 or a list of them, got {self.episodes!r}")
        if len(set(counts)) < len(counts):
            raise UserError(f"--episodes lists a count twice: {self.episodes!r}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise UserError(f"--noise must be a finite number >= 0 (the std of the action noise), got {self.noise!r}")
        if self.max_attempts and not self.success_only:
            raise UserError("--max-attempts applies only with --success-only (otherwise every attempt is kept)")
        if self.max_attempts < 0 or 0 < self.max_attempts < max(counts):
            raise UserError(f"--max-attempts must be >= --episodes ({max(counts)}), or 0 for 3 * EPISODES + 10; "
                            f"got {self.max_attempts}")

    def counts(self) -> list[int]:
        """The episode counts: one, or the several of a comparison over counts."""
        return list(self.episodes) if isinstance(self.episodes, list) else [self.episodes]

    def attempts(self, episodes: int) -> int:
        """The most reset seeds a collection of ``episodes`` runs: ``episodes``, or with ``success_only``
        ``max_attempts`` (0: :func:`demos.collector.default_max_attempts`)."""
        if not self.success_only:
            return episodes
        return self.max_attempts or default_max_attempts(episodes)

    def record(self, task: str) -> dict[str, Any]:
        """What a file of ``task``'s demonstrations collected with this config records of it (its
        ``dopr_meta``; one count)."""
        return {"task": task, "episodes": self.episodes, "seed": self.seed, "noise": float(self.noise),
                "success_only": self.success_only}

    def collect_arguments(self) -> dict[str, Any]:
        """Keyword arguments of :func:`demos.collect` (one count)."""
        return {"episodes": self.episodes, "seed": self.seed, "noise": self.noise, "success_only": self.success_only,
                "max_attempts": self.max_attempts or None}
