"""Faust app options: failover timing and the worker's client id, from the settings."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from convergence.settings import SettingsError, load_settings
from convergence.streams.faust_config import faust_app_options, pid_of_client_id, worker_client_id


def test_timeouts_come_from_the_settings_and_are_consistent() -> None:
    s = load_settings(env={"CONVERGENCE_CONSUMER_SESSION_TIMEOUT_S": "45",
                           "CONVERGENCE_CONSUMER_HEARTBEAT_S": "5"}, config_path=None)
    opts = faust_app_options(s)
    assert opts["broker_session_timeout"] == 45.0 and opts["broker_heartbeat_interval"] == 5.0
    assert opts["broker_rebalance_timeout"] == 135.0
    # Faust refuses a session timeout above the request timeout
    assert opts["broker_request_timeout"] >= opts["broker_session_timeout"]
    default = faust_app_options(load_settings(env={}, config_path=None))
    assert (default["broker_session_timeout"], default["broker_heartbeat_interval"]) == (10.0, 3.0)
    assert default["broker_rebalance_timeout"] == 30.0 and default["broker_request_timeout"] == 90.0


@pytest.mark.parametrize(("env", "words"), [
    ({"CONVERGENCE_CONSUMER_SESSION_TIMEOUT_S": "0.5"}, "between 1 and 1800 seconds"),
    ({"CONVERGENCE_CONSUMER_SESSION_TIMEOUT_S": "nan"}, "between 1 and 1800 seconds"),
    ({"CONVERGENCE_CONSUMER_HEARTBEAT_S": "4"}, "at most a third of consumer_session_timeout_s"),
    ({"CONVERGENCE_CONSUMER_HEARTBEAT_S": "0"}, "must be > 0"),
    ({"CONVERGENCE_METRICS_PORT": "65536"}, "-1 for no endpoint"),
])
def test_bad_timing_settings_are_named(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        load_settings(env=env, config_path=None)


def test_the_client_id_names_the_worker_process() -> None:
    cid = worker_client_id("convergence")
    assert cid == f"convergence-{socket.gethostname()}-{os.getpid()}"
    assert pid_of_client_id(cid, "convergence") == (socket.gethostname(), os.getpid())
    assert pid_of_client_id(cid, "other-app") is None
    assert pid_of_client_id("convergence-host-notapid", "convergence") is None


def test_the_faust_app_is_built_with_them(tmp_path: Path) -> None:
    from convergence.streams.faust_app import build_worker

    s = load_settings(env={"CONVERGENCE_DATA_DIR": str(tmp_path), "CONVERGENCE_DB": "mem://",
                           "CONVERGENCE_CONSUMER_SESSION_TIMEOUT_S": "7",
                           "CONVERGENCE_CONSUMER_HEARTBEAT_S": "2"}, config_path=None)
    conf = build_worker(s, store=False).app.conf
    assert conf.broker_session_timeout == 7.0 and conf.broker_heartbeat_interval == 2.0
    assert conf.broker_client_id == worker_client_id(s.faust_app_id)
