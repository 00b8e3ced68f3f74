"""Data flows one way: envs -> demos -> policies -> dopr_robot (training, evaluation, reports).

A module may import project packages of its own layer or below; every layer may import the leaf
``dopr_robot.errors``. The optimizer package imports nothing of the project but itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"envs": 0, "demos": 1, "policies": 2, "dopr_robot": 3}


def project_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return [name for name in names if name.split(".")[0] in LAYERS]


SOURCES = sorted(p for package in LAYERS for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_down(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own_layer = LAYERS[module.split(".")[0]]
    for imported in project_imports(path):
        if module.startswith("dopr_robot.optim."):
            assert imported == "dopr_robot.optim" or imported.startswith("dopr_robot.optim."), f"{module} imports {imported}: the optimizer imports nothing of ours"
        elif imported != "dopr_robot.errors":
            assert LAYERS[imported.split(".")[0]] <= own_layer, f"{module} imports {imported}, a higher layer"
