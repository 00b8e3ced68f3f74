"""The collection of expert demonstrations as one typed config: ``dopr-robot collect``'s options, and
the demonstrations a comparison collects for each task (``CompareConfig.demo``, on its command line
as ``--demo-*``: ``--demo-episodes``, ``--demo-success-only``, ...).

Episode ``i`` is reset with seed ``seed + i`` (see :mod:`demos.collector` for noise and success-only
collection). What a collected file records of its collection (:meth:`CollectConfig.record`) is what
``compare`` checks before it reuses a file.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from typing import Any

from demos.collector import default_max_attempts
from dopr_robot.config import SettingError, _comma_list, check_ranges, count_or_counts, option
from dopr_robot.errors import UserError
from envs.cameras import check_image_size
from envs.seeds import DEMO_SEED


def parse_image_size(text: str) -> tuple[int, int]:
    """``"64"`` -> ``(64, 64)``; ``"96x64"`` -> ``(96, 64)`` (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a side like 64 or WIDTHxHEIGHT like 96x64, got {text!r}")
    width = int(match.group(1))
    return width, int(match.group(2) or width)


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
    cameras: list = option([], parse=_comma_list, metavar="CAMERA[,CAMERA...]",
                           help="also render these cameras (see `dopr-robot tasks`; e.g. agentview) after every step "
                                "and store them as <camera>_image, uint8 (T, H, W, 3)")
    image_size: tuple = option((64, 64), parse=parse_image_size, metavar="N|WxH",
                               help="size of the camera images in pixels: N for N x N, or WIDTHxHEIGHT")

    def __post_init__(self) -> None:
        counts = self.counts()
        if not counts or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
            raise SettingError(lambda n: f"{n('episodes')} must be a count >= 1 or a list of them, got {self.episodes!r}")
        if len(set(counts)) < len(counts):
            raise SettingError(lambda n: f"{n('episodes')} lists a count twice: {self.episodes!r}")
        check_ranges(self, at_least_0=("seed",))
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise SettingError(lambda n: f"{n('noise')} must be a finite number >= 0 (the std of the action noise), "
                                         f"got {self.noise!r}")
        if self.max_attempts and not self.success_only:
            raise SettingError(lambda n: f"{n('max_attempts')} applies only with {n('success_only')} (otherwise "
                                         "every attempt is kept)")
        if self.max_attempts < 0 or 0 < self.max_attempts < max(counts):
            raise SettingError(lambda n: f"{n('max_attempts')} must be >= {n('episodes')} ({max(counts)}), or 0 for "
                                         f"3 * EPISODES + 10; got {self.max_attempts}")
        if not all(isinstance(camera, str) and camera for camera in self.cameras):
            raise SettingError(lambda n: f"{n('cameras')} must name cameras, got {self.cameras!r}")
        if len(set(self.cameras)) < len(self.cameras):
            raise SettingError(lambda n: f"{n('cameras')} names a camera twice: {','.join(self.cameras)}")
        object.__setattr__(self, "cameras", list(self.cameras))
        size = self.image_size
        if isinstance(size, int) and not isinstance(size, bool):  # a JSON file may give one side
            size = (size, size)
        try:
            size = check_image_size(size)
        except UserError as err:
            why = str(err).removeprefix("image_size ")
            raise SettingError(lambda n: f"{n('image_size')} {why}") from None
        object.__setattr__(self, "image_size", size)  # a JSON file gives a list

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
        record = {"task": task, "episodes": self.episodes, "seed": self.seed, "noise": float(self.noise),
                  "success_only": self.success_only}
        if self.cameras:  # files without cameras record none (as before cameras existed)
            record |= {"cameras": list(self.cameras), "image_size": list(self.image_size)}
        return record

    def collect_arguments(self) -> dict[str, Any]:
        """Keyword arguments of :func:`demos.collect` (one count)."""
        return {"episodes": self.episodes, "seed": self.seed, "noise": self.noise, "success_only": self.success_only,
                "max_attempts": self.max_attempts or None, "cameras": tuple(self.cameras),
                "image_size": self.image_size}
