from __future__ import annotations

from pathlib import Path

import pytest

from convergence.settings import SettingsError, env_name, fields, load_settings


def test_layering_default_file_env_override(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[convergence]\nstations = 10\nseed = 3\ntick_s = 2.0\n')
    s = load_settings(env={"CONVERGENCE_SEED": "5"}, config_path=cfg, overrides={"tick_s": 0.5})
    assert (s.stations, s.seed, s.tick_s) == (10, 5, 0.5)
    assert s.source_of("stations") == f"file {cfg}"
    assert s.source_of("seed") == "env CONVERGENCE_SEED"
    assert s.source_of("tick_s") == "override"
    assert s.source_of("db") == "default"


def test_config_env_var_points_to_file(tmp_path: Path) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_text("stations = 3\n")
    s = load_settings(env={"CONVERGENCE_CONFIG": str(cfg)})
    assert s.stations == 3
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(env={"CONVERGENCE_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CONVERGENCE_STATIONS": "many"}, "not a valid"),
        ({"CONVERGENCE_STATIONS": "0"}, "at least 1"),
        ({"CONVERGENCE_TICK_S": "-1"}, "must be > 0"),
        ({"CONVERGENCE_DB": "postgres://x"}, "surrealkv://"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        load_settings(env=env, config_path=None)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("statoins = 3\n")
    with pytest.raises(SettingsError, match="unknown setting 'statoins'"):
        load_settings(env={}, config_path=cfg)


def test_every_setting_documented_and_derived_values() -> None:
    s = load_settings(env={"CONVERGENCE_DATA_DIR": "/tmp/cv"}, config_path=None)
    assert all(f.metadata["doc"] for f in fields())
    assert s.db_url == "surrealkv:///tmp/cv/db"
    assert str(s.models_path) == "/tmp/cv/models"
    assert s.topic("alerts") == "convergence-alerts"
    assert env_name("tick_s") == "CONVERGENCE_TICK_S"
    assert {r["name"] for r in s.describe()} == {f.name for f in fields()}
