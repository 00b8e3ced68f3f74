"""Data flows one way: envs -> demos -> policies -> dopr_robot (training -> evaluation -> reports).

Imports are read from the source with ``ast`` (every ``import`` statement, those inside functions
included; relative imports resolved), not by importing anything. Three rules:

- **Ranks** (``RANKS``): every module of the project has a rank, and imports only modules of the
  same or a lower rank. The foundation (``dopr_robot.errors``, the user-error type, and
  ``dopr_robot.atomic``, the one writer of files) is the lowest; then the task, policy and optimizer
  packages; demonstrations; the toolkit's plumbing (threads, devices, the run log, configs,
  checkpoints, how a grid's cells run); BC training; evaluation; reports; the comparison; the
  sweep; the commands; the command line. A module without a rank fails, so a new one is placed.
- **Independence** (``ALLOWED``, ``FORBIDDEN``): ``envs``, ``policies`` and ``dopr_robot.optim``
  share a rank but never import each other (``policies`` never sees an env; the optimizer imports
  nothing of ours, not even the error type); ``demos`` imports only ``envs``; reports are built from
  result files, never from training.
- **Commands never import each other**: what two commands share lives in a layer below them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "demos", "policies", "dopr_robot")


def _each(package: str, modules: str, rank: int) -> dict[str, int]:
    """``package`` and each of its ``modules`` (space-separated) at ``rank``."""
    return {package: rank, **{f"{package}.{name}": rank for name in modules.split()}}


# module -> rank; a module imports only modules of the same or a lower rank. The packages envs, demos
# and policies are ranked whole; every module of dopr_robot by name.
RANKED_WHOLE = ("envs", "demos", "policies")
RANKS: dict[str, int] = {
    "dopr_robot": 0, "dopr_robot.errors": 0, "dopr_robot.atomic": 0,  # the foundation
    "envs": 1, "policies": 1,
    **_each("dopr_robot.optim", "activation adamuon adapters dopr muon registry signum graph_step", 1),
    "demos": 2,
    "dopr_robot.threads": 3, "dopr_robot.devices": 3, "dopr_robot.run_log": 3, "dopr_robot.optimizer_demo": 3,
    "dopr_robot.run_dir": 3,
    "dopr_robot.config": 4, "dopr_robot.checkpoint": 4, "dopr_robot.grid": 4,
    "dopr_robot.collect_config": 5,
    "dopr_robot.train": 6,
    **_each("dopr_robot.evaluate", "checkpoints evaluation metrics plots rollout video", 7),
    **_each("dopr_robot.report", "files plots results statistics tables terminal", 8),
    "dopr_robot.sb3_experts": 8, "dopr_robot.dagger": 8,
    "dopr_robot.compare": 9,
    "dopr_robot.sweep": 10,
    **_each("dopr_robot.commands", "collect compare dagger eval expert inspect optimizer_demo optimizers quickstart sweep "
                                   "tasks train video", 11),
    "dopr_robot.cli": 12, "dopr_robot.__main__": 12,
}

# Modules every layer may import: they import only each other (``dopr_robot/__init__.py`` nothing).
FOUNDATION = ("dopr_robot.errors", "dopr_robot.atomic")
# module prefix -> the only project packages it may import (besides the foundation)
ALLOWED = {
    "envs": ("envs", *FOUNDATION),
    "demos": ("demos", "envs", *FOUNDATION),
    "policies": ("policies", *FOUNDATION),
    "dopr_robot.optim": ("dopr_robot.optim",),
    **{module: FOUNDATION for module in FOUNDATION},
}
# module prefix -> project modules it must not import (beyond what the ranks forbid)
FORBIDDEN = {
    "dopr_robot.report": ("dopr_robot.train",),
}
COMMANDS = "dopr_robot.commands"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, module)`` for every project module ``path`` imports; ``from a import b`` gives ``a.b``
    (``b`` may be a submodule, and a rank on ``a.b`` must see it)."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, ".".join(filter(None, (base, alias.name if alias.name != "*" else "")))) for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def rank_of(module: str) -> int | None:
    """The rank of ``module``, or of the longest ranked name it lies within (``a.b.NAME`` -> ``a.b``)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in RANKS:
            return RANKS[".".join(parts[:end])]
    return None


def own_rank(module: str) -> int | None:
    """The rank of a module of the project: its package's for ``envs``, ``demos`` and ``policies``
    (ranked whole), its own name's for ``dopr_robot`` (None: not ranked)."""
    package = module.split(".")[0]
    return RANKS.get(package if package in RANKED_WHOLE else module)


def _command(module: str) -> str | None:
    """The command module ``module`` is or lies within (``dopr_robot.commands.video.render`` -> ``...video``)."""
    parts = module.split(".")
    return ".".join(parts[:3]) if _within(module, COMMANDS) and len(parts) > 2 else None


def violations(path: Path, root: Path = ROOT) -> list[str]:
    module = module_name(path, root)
    where = f"{path.relative_to(root)}"
    found = []
    for line, imported in project_imports(path, root):
        rank, imported_rank = own_rank(module), rank_of(imported)
        if rank is not None and imported_rank is not None and imported_rank > rank:
            found.append(f"{where}:{line}: {module} (rank {rank}) imports {imported} (rank {imported_rank}); "
                         "imports go to the same or a lower rank")
        for prefix, allowed in ALLOWED.items():
            if _within(module, prefix) and not any(_within(imported, ok) for ok in allowed):
                found.append(f"{where}:{line}: {module} imports {imported}; {prefix} may import only {', '.join(allowed)}")
        for prefix, forbidden in FORBIDDEN.items():
            if _within(module, prefix) and any(_within(imported, bad) for bad in forbidden):
                found.append(f"{where}:{line}: {module} imports {imported}; {prefix} must not import {', '.join(forbidden)}")
        if _command(module) and _command(imported) and _command(module) != _command(imported):
            found.append(f"{where}:{line}: {module} imports {imported}; commands never import each other "
                         "(move what they share below them)")
    return found


def unranked(root: Path) -> list[str]:
    """The project's modules that have no rank."""
    return [module_name(path, root) for path in sources(root) if own_rank(module_name(path, root)) is None]


def sources(root: Path) -> list[Path]:
    return sorted(p for package in PACKAGES for p in (root / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_down(path: Path) -> None:
    assert not violations(path), "\n".join(violations(path))


def test_every_module_has_a_rank() -> None:
    assert unranked(ROOT) == [], "give each module a rank in RANKS (the layer it belongs to)"


def test_the_foundation_imports_only_the_foundation() -> None:
    for module in (*FOUNDATION, "dopr_robot"):
        path = ROOT / (module.replace(".", "/") + ".py") if module != "dopr_robot" else ROOT / "dopr_robot/__init__.py"
        imported = [name for _, name in project_imports(path)]
        assert all(any(_within(name, ok) for ok in FOUNDATION) for name in imported), f"{module} imports {imported}"
        assert module != "dopr_robot" or imported == []  # the package imports nothing: importing any module runs it


PLANTED = {
    "envs/task.py": "def f():\n    from dopr_robot.train import train\n",  # inside a function
    "envs/sub/mod.py": "from ..errors import UserError\nfrom ... import demos\n",  # relative, second one leaves envs
    "demos/load.py": "import policies\n",
    "policies/mlp.py": "from envs import registry\n",
    "dopr_robot/optim/dopr.py": "from dopr_robot.errors import UserError\n",
    "dopr_robot/train.py": "from dopr_robot import evaluate\n",
    "dopr_robot/config.py": "import dopr_robot.report.tables\n",
    "dopr_robot/evaluate/rollout.py": "from dopr_robot.compare import grid\n",
    "dopr_robot/report/__init__.py": "from ..train import train\n",
    "dopr_robot/grid.py": "from dopr_robot.compare import run_cell\n",
    "dopr_robot/commands/eval.py": "from dopr_robot.commands.video import render\n",
    "dopr_robot/commands/sweep.py": "from . import compare\n",  # relative, a whole command module
    "dopr_robot/compare.py": "from dopr_robot.evaluate import rollout\nfrom dopr_robot import train, grid\n",  # allowed
    "dopr_robot/commands/video.py": "from dopr_robot.evaluate.video import record_video\nfrom . import video\n",  # allowed
    "dopr_robot/unplaced.py": "",  # a module nobody ranked
}


def test_planted_violations_are_caught(tmp_path: Path) -> None:
    for name, text in PLANTED.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert unranked(tmp_path) == ["dopr_robot.unplaced"]
    found = {str(p.relative_to(tmp_path)): violations(p, tmp_path) for p in sources(tmp_path)}
    for allowed in ("dopr_robot/compare.py", "dopr_robot/commands/video.py", "dopr_robot/unplaced.py"):
        assert found.pop(allowed) == [], allowed
    assert found.pop("envs/sub/mod.py") == [
        "envs/sub/mod.py:2: envs.sub.mod (rank 1) imports demos (rank 2); imports go to the same or a lower rank",
        "envs/sub/mod.py:2: envs.sub.mod imports demos; envs may import only envs, dopr_robot.errors, dopr_robot.atomic"]
    assert set(found) == set(PLANTED) - {"dopr_robot/compare.py", "dopr_robot/commands/video.py",
                                         "dopr_robot/unplaced.py", "envs/sub/mod.py"}
    assert all(found.values()), found
    assert "dopr_robot.train (rank 6) imports dopr_robot.evaluate (rank 7)" in found["dopr_robot/train.py"][0]
    assert "dopr_robot.grid (rank 4) imports dopr_robot.compare.run_cell (rank 9)" in found["dopr_robot/grid.py"][0]
    assert "dopr_robot.report imports dopr_robot.train.train" in found["dopr_robot/report/__init__.py"][0]
    assert found["dopr_robot/commands/eval.py"] == [
        "dopr_robot/commands/eval.py:1: dopr_robot.commands.eval imports dopr_robot.commands.video.render; "
        "commands never import each other (move what they share below them)"]
    assert "commands never import each other" in found["dopr_robot/commands/sweep.py"][0]
