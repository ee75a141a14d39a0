"""Every command explains itself, and every command the README shows exists."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from prelabel.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
    return found


@pytest.mark.parametrize("path", _commands(main), ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "-h"])
    assert result.exit_code == 0, result.output
    command = main
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    if not isinstance(command, click.Group):
        assert "Example" in result.output, f"{' '.join(path)} --help has no Example block"


def test_commands_in_the_readme_exist() -> None:
    # Commands in code: `prelabel x` or .venv/bin/prelabel x (prose like "prelabel reads" is not).
    pattern = r"(?:`|bin/)prelabel ((?:models )?[a-z][a-z-]+)"
    used = set(re.findall(pattern, README.read_text()))
    known = {" ".join(path) for path in _commands(main)}
    assert used, "the README names no command"
    missing = sorted(u for u in used if u not in known)
    assert not missing, f"README uses unknown commands: {missing}"
