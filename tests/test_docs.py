"""The documentation: the site builds strictly, the README's two commands are the ones CI runs, and
the commands the pages show are real.

Which documented commands run here (the rule the pages state in contributing.md):

- every ``dopr-robot`` command in a ``bash`` block of README.md or docs/ is parsed: its subcommand
  exists and every ``--option`` it names is an option of that subcommand;
- **run**: ``dopr-robot tasks``, ``dopr-robot optimizers ...`` and any ``dopr-robot ... --help`` (seconds),
  and every block whose first line is :data:`RUN_MARK` (in order, in a temporary directory);
- **not run**: everything else (training, evaluation, grids, expert training: a minute to hours).

A terminal test: every line a tiny ``compare`` prints fits 120 columns and the report's path is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dopr_robot.cli import COMMANDS, build_parser, main
from dopr_robot.report.terminal import WIDTH, fit_markdown, fit_plain_table, fit_table

ROOT = Path(__file__).resolve().parents[1]
RUN_MARK = "# these run in the docs test"
CHEAP = ("tasks", "optimizers")  # subcommands that only list things
FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def bash_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def cli_words(command: str) -> list[str] | None:
    """The words after ``dopr-robot`` (placeholders' brackets dropped), or None for other commands."""
    words = shlex.split(command, comments=True)
    if not words or Path(words[0]).name != "dopr-robot":
        return None
    return [word.strip("[]") for word in words[1:] if word.strip("[]") not in ("", "...")]


def documented() -> list[tuple[str, list[str]]]:
    return [(f"{path.relative_to(ROOT)}: {command}", words) for path in pages() for block in bash_blocks(path)
            for command in commands(block) if (words := cli_words(command)) is not None]


def options_of(parser: argparse.ArgumentParser, words: list[str]) -> set[str]:
    """The option strings of the (sub)command ``words`` names, nested subcommands (``expert train``) included."""
    found = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in words:
                if word in action.choices:
                    found |= options_of(action.choices[word], words[words.index(word) + 1:])
                    break
    return found


def test_readme_opens_with_the_two_commands_and_the_second_is_what_ci_runs() -> None:
    first = commands(bash_blocks(ROOT / "README.md")[0])
    assert len(first) == 2, f"the README's first block should hold the two set-up commands, got {first}"
    for command in first:
        assert subprocess.run(["bash", "-n", "-c", command]).returncode == 0, command
    assert "dopr-robot quickstart" in first[0]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert ci == [first[1]], "the README's test command and .ci/run's differ"


def test_the_readme_links_point_at_files_that_exist() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_every_documented_command_names_a_subcommand_and_its_real_options() -> None:
    listed = documented()
    assert len(listed) > 30, "the pages' commands were not found"
    parser = build_parser()
    wrong = []
    for where, words in listed:
        if not words or words[0] not in COMMANDS:
            wrong.append(f"{where} (no such subcommand)")
            continue
        known = options_of(parser, words)
        unknown = [word.split("=")[0] for word in words if word.startswith("--") and word.split("=")[0] not in known]
        wrong += [f"{where} ({', '.join(unknown)} unknown)"] if unknown else []
    assert not wrong, "\n".join(wrong)


def test_the_cheap_documented_commands_run(capsys: pytest.CaptureFixture, one_thread: None) -> None:
    cheap = {tuple(words) for _, words in documented() if words and (words[0] in CHEAP or "--help" in words)}
    assert ("tasks",) in cheap
    for words in sorted(cheap):
        try:
            status = main([*words, "--threads", "1"] if "--help" not in words else words)
        except SystemExit as exit_:  # --help exits 0
            status = exit_.code
        assert status == 0, words
    printed = capsys.readouterr().out
    assert "Push-v0" in printed
    too_wide = [line for line in printed.splitlines() if len(line) > WIDTH]
    assert not too_wide, f"{len(too_wide)} lines over {WIDTH} columns, e.g. {too_wide[0]}"


def test_the_marked_blocks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    marked = [block for path in pages() for block in bash_blocks(path) if block.startswith(RUN_MARK)]
    assert marked, f"no block starts with {RUN_MARK!r}"
    monkeypatch.chdir(tmp_path)
    for block in marked:
        for command in commands(block):
            words = cli_words(command)
            assert words is not None, f"a marked block holds dopr-robot commands only (they run in this process): {command}"
            assert main(words) == 0, command


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "optim" / "index.html").read_text().count("DoPr") > 10


def test_a_wide_table_splits_into_blocks_that_fit_and_keep_the_first_column() -> None:
    header = ["pair"] + [f"metric {i} [b]" for i in range(12)]
    row = ["dopr-adamw - adamw"] + ["+0.156 [+0.056, +0.252]"] * 12
    lines = fit_table([header, row], width=80)
    assert max(map(len, lines)) <= 80
    assert sum(line.startswith("dopr-adamw - adamw") for line in lines) == len([b for b in lines if b == ""]) + 1
    assert all(f"metric {i} [b]" in "\n".join(lines) for i in range(12))  # no column lost


def test_a_plain_table_wraps_its_widest_cells_and_says_each_long_reason_once() -> None:
    text = "\n".join(["task  cameras  status",
                      "A  " + ",".join(f"camera{i}" for i in range(12)) + "  available",
                      "B  -  unavailable: needs the robosuite extra: pip install 'dopr-robot[robosuite]'",
                      "C  -  unavailable: needs the robosuite extra: pip install 'dopr-robot[robosuite]'"])
    lines = fit_plain_table(text, width=80).splitlines()
    assert max(map(len, lines)) <= 80
    assert "camera11" in "\n".join(lines) and sum("unavailable (1)" in line for line in lines) == 2
    assert lines[-1] == "(1) needs the robosuite extra: pip install 'dopr-robot[robosuite]'"


def test_prose_too_long_for_two_lines_is_left_to_the_file() -> None:
    text = "# Title\n\nshort line\n\n" + "word " * 100 + "\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    fitted = fit_markdown(text, width=60)
    assert "short line" in fitted and "word word" not in fitted and "a  b" in fitted


def test_a_tiny_compare_prints_lines_that_fit_and_the_report_path(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 figures_not_rasterized_in_test: None) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--tasks", "Reach-v0", "--optimizers", "adamw,dopr-adamw", "--seeds", "1", "--demo-episodes", "2",
            "--steps", "4", "--batch-size", "16", "--policy-options", '{"width": 8, "depth": 1}', "--eval-episodes", "2",
            "--eval-num-envs", "2", "--no-progress", "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    # a path as long as a user's (pytest's temporary directories are longer)
    too_wide = [line for line in printed.replace(str(tmp_path), "/tmp/t").splitlines() if len(line) > WIDTH]
    assert not too_wide, f"{len(too_wide)} lines over {WIDTH} columns, e.g. {too_wide[0][:200]}"
    assert str(out / "summary.md") in printed and "dopr-adamw - adamw" in printed
    assert max(map(len, (out / "summary.md").read_text().splitlines())) > WIDTH  # the file keeps the full report
