from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize("scheme", ["rocksdb", "surrealkv+versioned", "mem", "ws", "postgres"])
def test_settings_and_the_store_accept_the_same_db_schemes(scheme: str) -> None:
    from convergence.store.surreal import StoreError, SurrealStore

    # an in-memory database takes no path (mem://host/x is refused: issue 11, item 12)
    url = "mem://" if scheme == "mem" else f"{scheme}://host/x"
    try:
        load_settings(env={"CONVERGENCE_DB": url}, config_path=None)
        settings_ok = True
    except SettingsError:
        settings_ok = False
    try:
        SurrealStore(url, "ns", "db")
        store_ok = True
    except StoreError:
        store_ok = False
    assert settings_ok == store_ok
    assert settings_ok == (scheme not in ("rocksdb", "postgres"))


@pytest.mark.parametrize(
    ("name", "value", "want"),
    [("meter", "auto", None), ("meter", "rules", "off"), ("meter", "meter@0", 0),
     ("meter", "meter@12", 12), ("regime", "none", "off"), ("regime", "regime@3", 3)],
)
def test_model_spec_parses_auto_off_and_pinned_versions(name: str, value: str,
                                                        want: object) -> None:
    from convergence.settings import model_spec

    assert model_spec(value, name) == want


@pytest.mark.parametrize(("name", "value"), [("meter", "none"), ("meter", "meter@x"),
                                             ("regime", "rules"), ("regime", "meter@1")])
def test_model_spec_refuses_other_values(name: str, value: str) -> None:
    from convergence.settings import model_spec

    with pytest.raises(ValueError, match=f"use auto, .* or {name}@N"):
        model_spec(value, name)
    with pytest.raises(SettingsError, match=f"{name}_model"):
        load_settings(env={f"CONVERGENCE_{name.upper()}_MODEL": value}, config_path=None)


# -- issue 11, item 12: every bad value is one clear error naming where it came from ---------


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CONVERGENCE_SEED": "-1"}, r"'seed' = -1 \(from env CONVERGENCE_SEED\).*0 to 2147483647"),
        ({"CONVERGENCE_SEED": str(2**40)}, "31-bit seeds"),
        ({"CONVERGENCE_SEED": "1e3"}, "not a valid whole number; fix or unset CONVERGENCE_SEED"),
        ({"CONVERGENCE_TICK_S": "inf"}, "finite"),
        ({"CONVERGENCE_TICK_S": "nan"}, "finite"),
        ({"CONVERGENCE_TICK_S": "1e-9"}, r"from 0.001 s .*more memory than any machine has"),
        ({"CONVERGENCE_ALLOWED_LATENESS_S": "inf"}, "finite"),
        ({"CONVERGENCE_STATIONS": "1000000000"}, "at most 100,000"),
        ({"CONVERGENCE_DB": "mem://anything"}, "takes no path"),
        ({"CONVERGENCE_DB": "surrealkv://"}, "needs the path"),
        ({"CONVERGENCE_DB": "ws://"}, "needs a server address"),
    ],
)
def test_values_that_would_crash_later_are_refused_now(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        load_settings(env=env, config_path=None)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("seed = 1.5", "'seed' from file {cfg} has value 1.5, which is not a valid whole number; "
                       "fix seed in {cfg}"),
        ("seed = 1e400", "'seed' from file {cfg} has value inf"),
        ("seed = -1", r"'seed' = -1 (from file {cfg}) is invalid"),
        ("tick_s = inf", r"'tick_s' = inf (from file {cfg}) is invalid"),
        ("tick_s = 'fast'", "not a valid number; fix tick_s in {cfg}"),
        ("db = 5", "not a valid string; fix db in {cfg}"),
        ("stations = true", "fix stations in {cfg}"),
        ("convergence = 5", "'convergence' must be a table"),
    ],
)
def test_a_bad_value_in_the_config_file_names_the_file_and_key(
        tmp_path: Path, line: str, words: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(line + "\n")
    with pytest.raises(SettingsError) as err:
        load_settings(env={}, config_path=cfg)
    assert words.format(cfg=cfg) in str(err.value)
    assert "unset CONVERGENCE_" not in str(err.value)


def test_an_empty_db_flag_is_refused_but_an_empty_env_means_the_default() -> None:
    with pytest.raises(SettingsError, match="--db is empty"):
        load_settings(env={}, config_path=None, overrides={"db": ""})
    s = load_settings(env={"CONVERGENCE_DB": "", "CONVERGENCE_DATA_DIR": "/tmp/x"}, config_path=None)
    assert s.db_url == "surrealkv:///tmp/x/db"


def test_the_limits_themselves_are_accepted() -> None:
    s = load_settings(env={"CONVERGENCE_SEED": "2147483647", "CONVERGENCE_TICK_S": "0.001"},
                      config_path=None)
    assert (s.seed, s.tick_s) == (2**31 - 1, 0.001)


# -- property tests (hypothesis): any environment or config file is settings or one error ----

_NAMES = [f.name for f in fields()]
_TOML_SCALARS = (st.booleans() | st.integers(-2**63, 2**63 - 1)
                 | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    if isinstance(v, str):
        return '"' + "".join(c if c.isalnum() or c in " ._-:/" else f"\\\\u{ord(c):04x}"
                             for c in v if ord(c) < 0xD800 or ord(c) > 0xDFFF) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def _one_clear_error(exc: SettingsError) -> None:
    text = str(exc)
    assert "\\n" not in text and len(text) < 1000
    assert text.startswith(("setting ", "unknown setting ", "config file ",
                            "cannot read config file ")), text


@given(st.dictionaries(st.sampled_from(_NAMES), st.text(max_size=30), max_size=5))
def test_any_environment_is_settings_or_one_clear_error(env: dict[str, str]) -> None:
    try:
        load_settings(env={env_name(k): v for k, v in env.items()}, config_path=None)
    except SettingsError as exc:
        _one_clear_error(exc)


@given(st.dictionaries(st.sampled_from([*_NAMES, "bogus"]),
                       _TOML_SCALARS | st.lists(_TOML_SCALARS, max_size=3), max_size=5),
       st.booleans())
def test_any_config_file_is_settings_or_one_clear_error(
        tmp_path_factory: pytest.TempPathFactory, table: dict[str, Any], sectioned: bool) -> None:
    cfg = tmp_path_factory.mktemp("cfg") / "convergence.toml"
    body = "".join(f"{k} = {_toml_value(v)}\\n" for k, v in table.items())
    cfg.write_text(("[convergence]\\n" if sectioned else "") + body)
    try:
        s = load_settings(env={}, config_path=cfg)
    except SettingsError as exc:
        _one_clear_error(exc)
        return
    for k in table:  # what was accepted is what the file said
        assert s.source_of(k) == f"file {cfg}"


@given(st.binary(max_size=300))
def test_any_config_bytes_are_settings_or_one_clear_error(
        tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    cfg = tmp_path_factory.mktemp("cfg") / "convergence.toml"
    cfg.write_bytes(data)
    try:
        load_settings(env={}, config_path=cfg)
    except SettingsError as exc:
        text = str(exc)
        assert text.startswith(("setting ", "unknown setting ", "config file ",
                                "cannot read config file "))
