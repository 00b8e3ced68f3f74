"""What a command prints: a markdown report cut to fit a terminal, and the paths of the full files.

The reports (``summary.md``, ``replication.md``, ``sweep.md``) are written for a browser or an editor:
tables a dozen columns wide and settings lines of several hundred characters. A terminal gets
:func:`fit_markdown` of them instead: every table as plain aligned text, split into column groups
that fit (the first column repeated in each), headings as they are, and prose lines wrapped when
they take at most two terminal lines; longer prose stays in the file, whose path the command prints.
"""

from __future__ import annotations

import re
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


def _wrap_cell(text: str, width: int) -> list[str]:
    """A cell as lines of at most ``width``: broken after commas or at spaces, a longer word cut."""
    lines: list[str] = []
    for word in re.findall(r"[^ ,]+,?|[ ,]", text):
        if lines and len(lines[-1] + word) <= width:
            lines[-1] += word
        elif word.strip():
            lines.append(_clip(word, width))
    return [line.strip() for line in lines] or [""]


def _render(rows: list[list[str]], widths: list[int], shown: list[int]) -> list[str]:
    lines = []
    for number, row in enumerate(rows):
        cells = [_wrap_cell(row[i], widths[i]) for i in shown]
        for depth in range(max(map(len, cells))):
            parts = [(cell[depth] if depth < len(cell) else "").ljust(widths[i]) for cell, i in zip(cells, shown)]
            lines.append(GAP.join(parts).rstrip())
        if number == 0:
            lines.append(GAP.join("-" * widths[i] for i in shown))
    return lines


def fit_table(rows: list[list[str]], width: int = WIDTH) -> list[str]:
    """A table (header row first) as plain text lines of at most ``width`` characters.

    A table that does not fit first wraps its widest cells (over a third of ``width``) onto further
    lines; if it still does not fit, the columns that do not fit beside each other go to a further
    block under the first, which repeats the first column (the optimizer, pair or task each row is
    about).
    """
    columns = max(len(row) for row in rows)
    rows = [row + [""] * (columns - len(row)) for row in rows]
    natural = [max(len(row[i]) for row in rows) for i in range(columns)]
    if sum(natural) + len(GAP) * (columns - 1) <= width:
        return _render(rows, natural, list(range(columns)))
    cap = width // 3
    widths = [min(w, cap) for w in natural]
    lines: list[str] = []
    for group in _column_groups(widths, width):
        lines += [""] if lines else []
        lines += _render(rows, widths, [0, *group])
    return lines


def fit_plain_table(text: str, width: int = WIDTH, notes_after: str = ": ") -> str:
    """A plain-text table (columns apart by two or more spaces, header first) fitted to ``width``.

    In the last column, a value with ``notes_after`` in it keeps its head and the rest becomes a
    numbered note under the table, each distinct note once (``unavailable (1)``, then ``(1) needs
    the fetch extra: ...``): long reasons repeated on many rows say it once.
    """
    rows = [re.split(r" {2,}", line.strip()) for line in text.splitlines() if line.strip()]
    notes: list[str] = []
    for row in rows[1:]:
        head, found, note = row[-1].partition(notes_after)
        if found:
            if note not in notes:
                notes.append(note)
            row[-1] = f"{head} ({notes.index(note) + 1})"
    lines = fit_table(rows, width)
    lines += [""] * bool(notes) + [line for number, note in enumerate(notes, 1)
                                   for line in textwrap.wrap(f"({number}) {note}", width, subsequent_indent="    ")]
    return "\n".join(lines)


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
