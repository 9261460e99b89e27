"""How a worker's Faust app talks to its consumer group: failover timing and identity.

This module owns the one translation from :class:`~convergence.settings.Settings` to
the Faust app options that decide how fast a dead worker's partitions move to a live
one (:func:`faust_app_options`). The Faust app is built elsewhere
(:mod:`convergence.streams.faust_app`); it passes these options through unchanged.

Failover, step by step. A worker killed with SIGKILL stops sending heartbeats. The
group coordinator (a Kafka broker) notices after ``consumer_session_timeout_s``,
removes the member and starts a rebalance; the survivors rejoin within a heartbeat or
two and get the dead worker's partitions, then resume from the last committed
offset. So failover takes about the session timeout plus a few seconds (measured in
``docs/cluster-ops.md``). Faust's own default session timeout is 60 s; ours is 10 s.

The rebalance timeout (how long the coordinator waits for live members to rejoin) is
derived: three session timeouts, at least 30 s, so a busy worker finishing its batch
is not evicted, while a dead one is still removed by its session timeout.

Every worker's Kafka client id names its host and process
(``<app id>-<host>-<pid>``), so ``convergence cluster status`` can say which worker
process owns which partitions from the consumer group's assignment.

Examples
--------
>>> from convergence.settings import load_settings
>>> s = load_settings(env={"CONVERGENCE_CONSUMER_SESSION_TIMEOUT_S": "6",
...                        "CONVERGENCE_CONSUMER_HEARTBEAT_S": "2"}, config_path=None)
>>> opts = faust_app_options(s)
>>> opts["broker_session_timeout"], opts["broker_heartbeat_interval"], opts["broker_rebalance_timeout"]
(6.0, 2.0, 30.0)
>>> opts["broker_client_id"] == worker_client_id(s.faust_app_id)
True
"""

from __future__ import annotations

import os
import socket
from typing import Any

from convergence.settings import Settings

__all__ = ["faust_app_options", "pid_of_client_id", "worker_client_id"]

#: Kafka's own default request timeout: must stay >= the session timeout (Faust checks).
_MIN_REQUEST_TIMEOUT_S = 90.0


def worker_client_id(app_id: str, host: str | None = None, pid: int | None = None) -> str:
    """The Kafka client id of one worker process: ``<app id>-<host>-<pid>``.

    >>> worker_client_id("convergence", "box", 42)
    'convergence-box-42'
    """
    return f"{app_id}-{host or socket.gethostname()}-{os.getpid() if pid is None else pid}"


def pid_of_client_id(client_id: str, app_id: str) -> tuple[str, int] | None:
    """``(host, pid)`` of a client id made by :func:`worker_client_id`, else ``None``.

    >>> pid_of_client_id("convergence-box-1-42", "convergence")
    ('box-1', 42)
    >>> pid_of_client_id("faust-0.11.3", "convergence") is None
    True
    """
    prefix = f"{app_id}-"
    if not client_id.startswith(prefix):
        return None
    host, _, pid = client_id[len(prefix):].rpartition("-")
    return (host, int(pid)) if host and pid.isdigit() else None


def faust_app_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App(...)``: consumer-group timing and client id.

    See the module docstring for what each one does during a failover.
    """
    session = settings.consumer_session_timeout_s
    return {
        "broker_session_timeout": session,
        "broker_heartbeat_interval": settings.consumer_heartbeat_s,
        "broker_rebalance_timeout": max(3.0 * session, 30.0),
        "broker_request_timeout": max(_MIN_REQUEST_TIMEOUT_S, session + 30.0),
        "broker_client_id": worker_client_id(settings.faust_app_id),
        # The agents hold a message un-acknowledged until what it carried is handed on
        # (its ticks closed; its region tick checkpointed). A rebalance or a stop must not
        # wait for that: whatever is not acknowledged is simply read again by the next owner.
        "stream_wait_empty": False,
    }
