"""Every `labeler ...` command in the README names a real command with real options.

What each command *does* is exercised by the area tests (tests/<area>/); this test keeps the
README and the CLI from drifting apart.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_commands() -> list[str]:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands: list[str] = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            for part in re.split(r"&&|\|\||;", line):
                part = part.strip()
                if part.startswith("labeler "):
                    commands.append(part.split(" > ")[0].strip())
    return commands


def _resolve(argv: list[str]):
    from labeler.cli import app

    cmd = typer.main.get_command(app)
    rest = argv
    # Typer vendors its own click; walk groups by their `commands` mapping.
    while getattr(cmd, "commands", None) and rest and not rest[0].startswith("-"):
        sub = cmd.commands.get(rest[0])
        assert sub is not None, f"README names unknown command {' '.join(argv)!r}"
        cmd, rest = sub, rest[1:]
    return cmd, rest


COMMANDS = _readme_commands()


def test_readme_has_the_main_commands():
    names = {c.split()[1] for c in COMMANDS}
    for expected in ("demo", "collect", "inspect", "explain", "score", "submit", "worker", "jobs",
                     "label", "serve", "report", "eval", "db", "train-sae"):
        assert expected in names, f"README lacks `labeler {expected}`"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    argv = shlex.split(command)[1:]
    cmd, rest = _resolve(argv)
    known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    for token in rest:
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            assert name in known, f"`{command}`: {cmd.name} has no option {name} (has {sorted(known)})"
