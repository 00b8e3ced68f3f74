"""What a command prints: a markdown report cut to fit a terminal, and the paths of the full files.

The reports (``summary.md``, ``replication.md``, ``sweep.md``) are written for a browser or an editor:
tables a dozen columns wide and settings lines of several hundred characters. A terminal gets
:func:`fit_markdown` of them instead: every table as plain aligned text, split into column groups
that fit (the first column repeated in each), headings as they are, and prose lines wrapped when
they take at most two terminal lines; longer prose stays in the file, whose path the command prints.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterable

WIDTH = 120  # columns a command's output fits in
GAP = "  "  # between table columns
PROSE_LINES = 2  # a prose line that wraps into more terminal lines than this is left to the file


def _cells(row: str) -> list[str]:
    """``| a | **b** |`` -> ``["a", "b"]`` (bold markers dropped: a terminal shows them as stars)."""
    return [cell.strip().replace("**", "") for cell in row.strip().strip("|").split("|")]


def _is_rule(cells: list[str]) -> bool:
    return all(cell and set(cell) <= set("-: ") for cell in cells)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _column_groups(widths: list[int], width: int) -> list[list[int]]:
    """Indices of the columns after the first, grouped so that each group beside column 0 fits ``width``."""
    groups: list[list[int]] = []
    used = width  # forces a new group for the first column
    for index in range(1, len(widths)):
        need = len(GAP) + widths[index]
        if used + need > width or not groups:
            groups.append([])
            used = widths[0]
        groups[-1].append(index)
        used += need
    return groups or [[]]


def fit_table(rows: list[list[str]], width: int = WIDTH) -> list[str]:
    """A table (header row first) as plain text lines of at most ``width`` characters.

    Columns that do not fit beside each other go to a further block under the first, which repeats
    the first column (the optimizer, pair or setting each row is about); a cell wider than the
    terminal is cut with an ellipsis.
    """
    columns = max(len(row) for row in rows)
    rows = [row + [""] * (columns - len(row)) for row in rows]
    key_width = min(max(len(row[0]) for row in rows), width // 3)
    widths = [key_width] + [min(max(len(row[i]) for row in rows), width - key_width - len(GAP))
                            for i in range(1, columns)]
    lines: list[str] = []
    for group in _column_groups(widths, width):
        if lines:
            lines.append("")
        shown = [0, *group]
        for number, row in enumerate(rows):
            lines.append(GAP.join(_clip(row[i], widths[i]).ljust(widths[i]) for i in shown).rstrip())
            if number == 0:
                lines.append(GAP.join("-" * widths[i] for i in shown))
    return lines


def _prose(line: str, width: int) -> list[str]:
    """A prose line wrapped to ``width`` (list items with a hanging indent), or nothing if it is too long."""
    indent = "  " if line.lstrip().startswith(("- ", "* ")) else ""
    wrapped = textwrap.wrap(line.strip().replace("**", ""), width=width, subsequent_indent=indent, break_on_hyphens=False)
    return wrapped if len(wrapped) <= PROSE_LINES else []


def fit_markdown(text: str, width: int = WIDTH) -> str:
    """``text`` (markdown) as terminal text whose every line is at most ``width`` characters.

    Tables become :func:`fit_table` blocks; headings stay; a prose line is wrapped when it takes at
    most two lines and otherwise left out (the file keeps it); code fences are clipped line by line.
    """
    out: list[str] = []
    table: list[list[str]] = []
    fenced = False

    def flush() -> None:
        if table:
            out.extend(fit_table([row for row in table if not _is_rule(row)], width))
            table.clear()

    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|"):
            table.append(_cells(line))
            continue
        flush()
        if fenced or line.startswith("```") or line.startswith("#") or not line.strip():
            kept = [_clip(line.rstrip(), width)]
        else:
            kept = _prose(line, width)
        if kept == [""] and out and out[-1] == "":
            continue  # one blank line where left-out prose leaves several
        out.extend(kept)
    flush()
    return "\n".join(out).strip("\n")


def print_report(report: Path, files: Iterable[Path] = (), width: int = WIDTH) -> None:
    """Print the fitted ``report``, then where the full report and the other ``files`` are, one per line."""
    print(fit_markdown(report.read_text(), width))
    print()
    print(f"full report: {report}")
    for path in files:
        print(f"  {path}")
