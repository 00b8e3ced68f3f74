"""The code stays readable: the training loop fits one screen, and no function of the package grows
past 80 lines unless its docstring says why (a line starting ``Long:``). Read with ``ast``, not run."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dopr_robot", "envs", "demos", "policies")
MAX_LINES = 80
SCREEN = 60  # train(): the loop on one screen


def functions(path: Path) -> list[tuple[str, int, str]]:
    """``(qualified name, lines, docstring)`` of every function in ``path``, nested and methods included."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    found.append((name, child.end_lineno - child.lineno + 1, ast.get_docstring(child) or ""))
                visit(child, name + ".")

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return found


def long_functions(root: Path = ROOT) -> list[str]:
    return [f"{path.relative_to(root)}: {name} has {lines} lines"
            for package in PACKAGES for path in sorted((root / package).rglob("*.py"))
            for name, lines, doc in functions(path)
            if lines > MAX_LINES and not any(line.strip().startswith("Long:") for line in doc.splitlines())]


def test_no_function_is_over_80_lines_without_a_reason() -> None:
    assert not long_functions(), "\n".join(long_functions())


def test_train_fits_one_screen() -> None:
    lines = {name: n for name, n, _ in functions(ROOT / "dopr_robot" / "train.py")}
    assert lines["train"] <= SCREEN, f"train() has {lines['train']} lines; keep the loop on one screen (<= {SCREEN})"


def test_a_planted_long_function_is_caught(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    (tmp_path / "dopr_robot").mkdir()
    (tmp_path / "dopr_robot" / "m.py").write_text(
        f"def long():\n{body}\n\nclass C:\n    def ok(self):\n        '''Long: a table.'''\n{body.replace('    ', '        ')}")
    assert long_functions(tmp_path) == [f"dopr_robot/m.py: long has {MAX_LINES + 1} lines"]
