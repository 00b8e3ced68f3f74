"""Fixtures shared by several test files: demonstration files collected once per session, one
intra-op thread, a spy on training and snapshots of file contents."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import torch

import demos

# robosuite compiles its numba kernels on first use, ~10 s in a fresh environment (as on CI); its tests
# take a few hundred steps, for which the interpreted kernels are faster. Nothing above imports numba;
# subprocesses of the tests inherit the setting.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")


@pytest.fixture(scope="session")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``demo_file(task, episodes, **collect_options)``: a demonstration file collected from reset
    seeds 0.. (unless ``seed=`` says otherwise), once per session for each distinct request. Tests
    only read it."""
    made: dict[str, Path] = {}

    def get(task: str = "Reach-v0", episodes: int = 6, **options: Any) -> Path:
        options = {"seed": 0, **options}
        key = json.dumps([task, episodes, options], sort_keys=True)
        if key not in made:
            path = tmp_path_factory.mktemp("demos") / f"{task}.hdf5"
            demos.collect(task, episodes, path, progress=False, **options)
            made[key] = path
        return made[key]

    return get


@pytest.fixture(scope="session")
def reach_demos(demo_file: Callable[..., Path]) -> Path:
    """Six Reach-v0 demonstrations from reset seeds 0..5."""
    return demo_file("Reach-v0", 6)


@pytest.fixture
def one_thread() -> Iterable[None]:
    """One intra-op thread during the test (what --threads 1 gives workers: results are bitwise
    equal at equal thread counts), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, bool]]:
    """``(optimizer, seed, resume)`` of every ``dopr_robot.train.train`` call in this process during
    the test; training still runs. Code that imports ``train`` at call time (compare's cells) calls
    the spy."""
    import dopr_robot.train as train_module

    calls: list[tuple[str, int, bool]] = []
    original = train_module.train

    def spy(config, **kwargs):
        calls.append((config.optimizer, config.seed, bool(kwargs.get("resume", False))))
        return original(config, **kwargs)

    monkeypatch.setattr(train_module, "train", spy)
    return calls


@pytest.fixture
def file_contents() -> Callable[[Iterable[Path]], dict[Path, bytes]]:
    """``file_contents(paths)``: path -> bytes, to check that files were left exactly as they were
    (by content: a file's time stamp may not change when it is rewritten within its resolution)."""
    return lambda paths: {Path(path): Path(path).read_bytes() for path in sorted(paths)}


def _figures_not_rasterized() -> Iterable[None]:
    import matplotlib.pyplot as plt

    import dopr_robot.report.plots as plots

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "_save", lambda fig, path: plt.close(fig))
        yield


@pytest.fixture(scope="module")
def figures_not_rasterized() -> Iterable[None]:
    """For a module whose tests check no figure file: the report's figures are built (their data and
    artists) but not drawn to PNG files. Drawing them is most of a tiny comparison's time;
    test_report.py, test_compare.py and test_experiment.py check the files themselves."""
    yield from _figures_not_rasterized()


@pytest.fixture
def figures_not_rasterized_in_test() -> Iterable[None]:
    """``figures_not_rasterized`` for one test of a module whose other tests check figure files."""
    yield from _figures_not_rasterized()
