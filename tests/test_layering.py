"""Data flows one way: envs -> demos -> policies -> dopr_robot (training -> evaluation -> reports).

Imports are read from the source with ``ast`` (every ``import`` statement, those inside functions
included; relative imports resolved), not by importing anything. The ranks:

- the foundation (``dopr_robot.errors``, the user-error type, and ``dopr_robot.atomic``, the one
  writer of files) imports nothing of ours, so every layer may import it;
- ``envs`` imports nothing of ours but ``envs`` and the foundation;
- ``demos`` imports only ``demos`` and ``envs``;
- ``policies`` imports only ``policies`` (never envs, demos or dopr_robot);
- ``dopr_robot.optim`` imports only itself (not even the error type);
- BC training (``train``, ``config``, ``checkpoint``) never imports evaluation, reports or ``compare``
  (the CLI passes it an ``evaluator`` callable);
- evaluation never imports reports or ``compare``; reports never import ``compare`` or training.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "demos", "policies", "dopr_robot")

# Modules every layer may import: they import nothing of ours (``dopr_robot/__init__.py`` neither).
FOUNDATION = ("dopr_robot.errors", "dopr_robot.atomic")
# module prefix -> the only project packages it may import (besides the foundation)
ALLOWED = {
    "envs": ("envs", *FOUNDATION),
    "demos": ("demos", "envs", *FOUNDATION),
    "policies": ("policies", *FOUNDATION),
    "dopr_robot.optim": ("dopr_robot.optim",),
    **{module: () for module in FOUNDATION},
}
_ABOVE_TRAINING = ("dopr_robot.evaluate", "dopr_robot.report", "dopr_robot.compare")
# module prefix -> project modules it must not import
FORBIDDEN = {
    "dopr_robot.train": _ABOVE_TRAINING,
    "dopr_robot.config": _ABOVE_TRAINING,
    "dopr_robot.checkpoint": _ABOVE_TRAINING,
    "dopr_robot.evaluate": ("dopr_robot.report", "dopr_robot.compare"),
    "dopr_robot.report": ("dopr_robot.compare", "dopr_robot.train"),
}


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


def violations(path: Path, root: Path = ROOT) -> list[str]:
    module = module_name(path, root)
    found = []
    for line, imported in project_imports(path, root):
        for prefix, allowed in ALLOWED.items():
            if _within(module, prefix) and not any(_within(imported, ok) for ok in allowed):
                found.append(f"{path.relative_to(root)}:{line}: {module} imports {imported}; {prefix} may import only {', '.join(allowed)}")
        for prefix, forbidden in FORBIDDEN.items():
            if _within(module, prefix) and any(_within(imported, bad) for bad in forbidden):
                found.append(f"{path.relative_to(root)}:{line}: {module} imports {imported}; {prefix} must not import {', '.join(forbidden)}")
    return found


def sources(root: Path) -> list[Path]:
    return sorted(p for package in PACKAGES for p in (root / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_down(path: Path) -> None:
    assert not violations(path), "\n".join(violations(path))


def test_the_foundation_imports_nothing_of_ours() -> None:
    for module in (*FOUNDATION, "dopr_robot"):
        path = ROOT / (module.replace(".", "/") + ".py") if module != "dopr_robot" else ROOT / "dopr_robot/__init__.py"
        assert project_imports(path) == [], f"{module} must import nothing of ours (every layer imports it)"


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
    "dopr_robot/compare.py": "from dopr_robot.evaluate import rollout\nfrom dopr_robot import train\n",  # allowed
}


def test_planted_upward_imports_are_caught(tmp_path: Path) -> None:
    for name, text in PLANTED.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = {str(p.relative_to(tmp_path)): violations(p, tmp_path) for p in sources(tmp_path)}
    assert found.pop("dopr_robot/compare.py") == []
    assert found.pop("envs/sub/mod.py") == [
        "envs/sub/mod.py:2: envs.sub.mod imports demos; envs may import only envs, dopr_robot.errors, dopr_robot.atomic"]
    assert all(len(lines) == 1 for lines in found.values()), found
    assert set(found) == set(PLANTED) - {"dopr_robot/compare.py", "envs/sub/mod.py"}
    assert "dopr_robot.train imports dopr_robot.evaluate" in found["dopr_robot/train.py"][0]
    assert "dopr_robot.report imports dopr_robot.train.train" in found["dopr_robot/report/__init__.py"][0]
