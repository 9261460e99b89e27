"""The compose file's app commands are real CLI invocations (no Docker needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from convergence.cli.main import app

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"


def _app_commands() -> list[list[str]]:
    cmds = []
    for m in re.finditer(r"^\s+command:\s*(\[.*\])\s*$", COMPOSE.read_text(), re.MULTILINE):
        cmds.append(json.loads(m.group(1)))
    return cmds


def test_every_app_command_parses_against_the_cli() -> None:
    cmds = _app_commands()
    assert {c[0] for c in cmds} >= {"cluster", "stations", "alerts"}
    runner = CliRunner()
    for cmd in cmds:
        # --help after the real arguments: click rejects unknown commands or options first
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0, f"compose command {cmd} does not parse: {r.output}"
