"""`convergence config show`: what is in force, secrets masked (issue 11, item 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convergence.cli.main import app

runner = CliRunner()


def test_config_show_masks_secrets_and_shows_effective_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENCE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CONVERGENCE_DB_PASSWORD", "hunter2")
    plain = runner.invoke(app, ["config", "show"])
    assert plain.exit_code == 0, plain.output
    assert "hunter2" not in plain.stdout
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["config", "show", "--json"]).stdout)}
    assert rows["db_password"]["value"] == "********"
    assert rows["db_password"]["source"] == "env CONVERGENCE_DB_PASSWORD"
    assert rows["db"]["value"] == f"surrealkv://{tmp_path / 'db'}"
    assert rows["models_dir"]["value"] == str(tmp_path / "models")
    monkeypatch.setenv("CONVERGENCE_DB", "ws://root:hunter2@db.example:8000")
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["config", "show", "--json"]).stdout)}
    assert rows["db"]["value"] == "ws://***@db.example:8000"
    monkeypatch.delenv("CONVERGENCE_DB_PASSWORD")
    monkeypatch.delenv("CONVERGENCE_DB")
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["config", "show", "--json"]).stdout)}
    assert rows["db_password"]["value"] == ""  # not set: nothing to mask
