"""What ``convergence cluster status`` shows, gathered from the broker, the state file and
the workers' metrics endpoints.

This module owns reading the running cluster, never changing it:

* :func:`gather` - one snapshot: the supervisor's record (:mod:`convergence.streams.supervisor`),
  the broker and the cluster's topics, each consumer group's members with the partitions
  they own (the group's assignment, read with kafka-python's admin client) and its lag per
  partition, every worker (pid, alive, restarts, partitions, a summary of its metrics),
  and the most recent alerts;
* :func:`lag_rows` / :func:`member_owns` - the pure pieces of that, testable with dicts.

Stations by state come from the compacted station-status topic
(:func:`convergence.ground_stations.kafka_fleet.read_status`); the command line adds them,
so this module does not depend on the station side.

Every call is bounded: the broker is given ``timeout_s`` to answer, each metrics endpoint
two seconds, and what cannot be read is reported as such rather than raised.

Examples
--------
>>> rows = lag_rows({("t-events", 0): 120, ("t-events", 1): 40}, {("t-events", 0): 100})
>>> [(r["partition"], r["committed"], r["lag"]) for r in rows]
[(0, 100, 20), (1, None, 40)]
"""

from __future__ import annotations

import contextlib
import functools
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from convergence.records import Alert
from convergence.settings import Settings
from convergence.streams.faust_config import pid_of_client_id
from convergence.streams.metrics import MetricsError, scrape, summarise
from convergence.streams.supervisor import ProcessRef, read_worker_infos

__all__ = ["gather", "lag_rows", "member_owns"]

TP = tuple[str, int]


def lag_rows(end: Mapping[TP, int], committed: Mapping[TP, int]) -> list[dict[str, Any]]:
    """One row per partition: end offset, committed offset (``None``: nothing committed
    yet) and lag (what is not yet committed)."""
    rows = []
    for (topic, part), e in sorted(end.items()):
        c = committed.get((topic, part))
        rows.append({"topic": topic, "partition": part, "end": e, "committed": c,
                     "lag": max(e - (c if c is not None else 0), 0)})
    return rows


def member_owns(member: Mapping[str, Any], prefix: str) -> dict[str, list[int]]:
    """Topic (without ``prefix``) -> partitions from a described group member's assignment.
    Faust's internal topics (``__assignor``) are left out.

    >>> member_owns({"member_assignment": {"assigned_partitions": [
    ...     {"topic": "c-events", "partitions": [0]},
    ...     {"topic": "c-__assignor-__leader", "partitions": [0]}]}}, "c-")
    {'events': [0]}
    """
    assignment = member.get("member_assignment")
    parts = assignment.get("assigned_partitions", []) if isinstance(assignment, Mapping) else []
    out: dict[str, list[int]] = {}
    for a in parts:
        topic = str(a.get("topic", ""))
        name = topic[len(prefix):] if topic.startswith(prefix) else topic
        partitions = a.get("partitions") or []
        if "__assignor" in name or not partitions:
            continue
        out[name] = sorted(int(p) for p in partitions)
    return dict(sorted(out.items()))


def _cluster_view(state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if state is None:
        return None
    sup = state.get("supervisor") or {}
    alive = bool(sup.get("pid")) and ProcessRef.from_dict(sup).alive()
    return {"phase": state.get("phase"), "started_at_s": state.get("started_at_s"),
            "supervisor_pid": sup.get("pid"), "supervisor_alive": alive,
            "detached": bool(sup.get("detached")), "supervisor_log": sup.get("log"),
            "plan": state.get("plan"), "events": state.get("events", [])}


def _recent_alerts(consumer: Any, topic: str, n: int, timeout_s: float) -> list[dict[str, Any]]:
    from convergence.streams import kafka_client

    tps = kafka_client.assign_all(consumer, topic, start="end")
    if not tps or n <= 0:
        return []
    end = consumer.end_offsets(tps)
    begin = consumer.beginning_offsets(tps)
    for tp in tps:  # a little more than n back: a message may not be an alert
        consumer.seek(tp, max(end[tp] - 4 * n - 10, begin[tp]))
    alerts = []
    for rec in kafka_client.read_to_end(consumer, tps, timeout_s=timeout_s):
        with contextlib.suppress(ValueError, TypeError, KeyError):
            alerts.append(Alert.from_dict(orjson.loads(rec.value or b"")).to_dict())
    return sorted(alerts, key=lambda a: a["time_s"])[-n:]


def _kafka_view(s: Settings, timeout_s: float, recent_alerts: int) -> dict[str, Any]:
    """Broker, topics, groups (members, assignment, lag) and recent alerts. Each part that
    cannot be read (a group coordinator still starting, say) is a line in ``problems``."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import KafkaError

    from convergence.streams import kafka_client

    prefix = f"{s.topic_prefix}-"
    out: dict[str, Any] = {"broker": {"bootstrap": s.kafka_bootstrap, "reachable": False,
                                      "error": None},
                           "topics": {}, "groups": {}, "alerts": [], "problems": []}
    ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap.split(","),
                                 client_id="convergence-status", request_timeout_ms=ms,
                                 bootstrap_timeout_ms=ms)
        consumer = kafka_client.consumer(s.kafka_bootstrap, "convergence-status",
                                         bootstrap_timeout_ms=ms, request_timeout_ms=max(ms, 5000))
    except (KafkaError, OSError) as exc:
        out["broker"]["error"] = kafka_client.unreachable(s.kafka_bootstrap, exc)
        return out
    out["broker"]["reachable"] = True
    end: dict[TP, int] = {}

    def step(what: str, read: Callable[[], None]) -> None:
        try:
            read()
        except (KafkaError, OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
            out["problems"].append(f"reading {what} failed: {type(exc).__name__}: {exc}"[:300])

    def topics() -> None:
        names = sorted(t for t in admin.list_topics() if t.startswith(prefix))
        described = admin.describe_topics(names) if names else []
        tps = [TopicPartition(d["name"], p["partition_index"]) for d in described
               for p in d.get("partitions", [])]
        if tps:
            end.update({(tp.topic, tp.partition): int(o) for tp, o in consumer.end_offsets(tps).items()})
        for d in described:
            name = d["name"]
            out["topics"][name[len(prefix):]] = {
                "name": name, "partitions": len(d.get("partitions", [])),
                "messages_end": sum(v for (t, _), v in end.items() if t == name)}

    def group(g: str) -> None:
        info = admin.describe_groups([g]).get(g) or {}
        offsets = admin.list_group_offsets(g).get(g) or {}
        committed = {(tp.topic, tp.partition): int(om.offset)
                     for tp, om in offsets.items() if om is not None and om.offset >= 0}
        members = [{"client_id": m.get("client_id"), "host": str(m.get("client_host", "")).lstrip("/"),
                    "member_id": m.get("member_id"), "owns": member_owns(m, prefix)}
                   for m in info.get("members", [])]
        # table changelogs are read to recover state, never committed: no lag to show
        subscribed = {f"{prefix}{t}" for m in members for t in m["owns"]
                      if not t.endswith("-changelog")} | {t for t, _ in committed}
        out["groups"][g] = {
            "state": info.get("group_state") or "unknown", "members": members,
            "lag": [dict(r, topic=r["topic"][len(prefix):])
                    for r in lag_rows({k: v for k, v in end.items() if k[0] in subscribed}, committed)]}

    def alerts() -> None:
        out["alerts"] = _recent_alerts(consumer, s.topic("alerts"), recent_alerts, timeout_s)

    try:
        step("the topics", topics)
        for g in (s.faust_app_id, f"{s.faust_app_id}-store"):
            step(f"consumer group {g}", functools.partial(group, g))
        step("the latest alerts", alerts)
    finally:
        consumer.close()
        admin.close()
    return out


def _workers(s: Settings, state: Mapping[str, Any] | None, groups: Mapping[str, Any],
             scrape_timeout_s: float) -> list[dict[str, Any]]:
    infos = read_worker_infos(s)
    members = (groups.get(s.faust_app_id) or {}).get("members", [])
    by_pid: dict[int, dict[str, Any]] = {}
    local: set[int] = set()
    here = socket.gethostname()
    for m in members:
        who = pid_of_client_id(str(m.get("client_id") or ""), s.faust_app_id)
        if who is not None:
            by_pid[who[1]] = m
            if who[0] == here:
                local.add(who[1])
    rows: list[dict[str, Any]] = []
    recorded = [w for w in (state or {}).get("workers", []) if isinstance(w, dict)]
    seen: set[int] = set()
    for w in recorded:
        pid = w.get("pid")
        alive = bool(pid) and ProcessRef.from_dict(w).alive()
        rows.append({"name": w.get("name"), "pid": pid, "alive": alive, "store": w.get("store"),
                     "restarts": w.get("restarts", 0), "given_up": w.get("given_up", False),
                     "log": w.get("log")})
        if isinstance(pid, int):
            seen.add(pid)
    for pid in sorted(set(infos) - seen):  # started by hand (`cluster worker`), same data dir
        rows.append({"name": f"worker pid {pid}", "pid": pid, "alive": True, "store": None,
                     "restarts": None, "given_up": False, "log": None})
        seen.add(pid)
    for pid in sorted(set(by_pid) - seen):
        # on this host and dead: the broker still counts it until its session times out
        here_alive: bool | None = ProcessRef(pid).alive() if pid in local else None
        rows.append({"name": f"group member {by_pid[pid].get('client_id')}", "pid": pid,
                     "alive": here_alive, "store": None, "restarts": None, "given_up": False, "log": None})
    for row in rows:
        pid = row["pid"]
        member = by_pid.get(pid) if isinstance(pid, int) else None
        row["in_group"] = member is not None
        row["owns"] = member["owns"] if member is not None else {}
        info = infos.get(pid) if isinstance(pid, int) else None
        row["metrics_url"] = info.get("metrics_url") if info else None
        row["metrics"] = None
        row["metrics_error"] = None
        if row["metrics_url"] and row["alive"]:
            try:
                row["metrics"] = summarise(scrape(row["metrics_url"], timeout_s=scrape_timeout_s))
            except MetricsError as exc:
                row["metrics_error"] = str(exc)
    return rows


def gather(s: Settings, state: Mapping[str, Any] | None, *, timeout_s: float = 10.0,
           recent_alerts: int = 5, scrape_timeout_s: float = 2.0) -> dict[str, Any]:
    """One snapshot of the cluster (see module docstring); never raises for an
    unreachable broker or endpoint - ``broker.error`` / ``metrics_error`` say why."""
    kafka = _kafka_view(s, timeout_s, recent_alerts)
    return {"at_s": round(time.time(), 3), "cluster": _cluster_view(state),
            "app_id": s.faust_app_id, "topic_prefix": s.topic_prefix, **kafka,
            "workers": _workers(s, state, kafka["groups"], scrape_timeout_s)}
