"""Supervising a cluster on one host: what ``convergence cluster up`` starts, restarts, stops.

This module owns the processes of a cluster started by ``cluster up`` and the record of
them, and nothing about what those processes compute:

* :class:`Cluster` - the whole job: an optional local broker, the topics, N workers
  (each a ``convergence cluster worker`` process, so whatever that command runs is what
  is supervised), the station fleet (a ``convergence stations run`` process), and the
  order they stop in (stations first, then a bounded wait for the workers to catch up,
  then the workers without a store, then the store owners, then the broker);
* :class:`Supervisor` - the generic part: child processes with their logs, a dead child
  restarted after a backoff (:class:`RestartPolicy`), each event said in words a person
  on call understands, and stopping in waves (SIGTERM, a bounded wait, then SIGKILL with
  a message);
* the state file ``<data dir>/cluster/state.json`` (:func:`read_state`), rewritten on
  every change, which ``cluster status`` and ``cluster down`` read - also after
  ``up --detach`` or when the supervisor itself was killed (:func:`stop_recorded`);
* worker info files ``<data dir>/cluster/workers/<pid>.json``, written by each worker
  (:func:`write_worker_info`): where its metrics endpoint listens;
* :class:`ProcessRef` - a pid together with its start time, so a recycled pid is never
  signalled.

Restarts. A worker that dies (``kill -9``, a crash, an exit of its own) is started again
after 1 s, then 2, 4, 8, 16 and 30 s if it keeps dying within a minute of starting; after
5 such quick failures in a row it is left down with a message saying why, and the
cluster stops only when no worker is left. Meanwhile the consumer group hands the dead
worker's partitions to the others once the broker's session timeout
(``consumer_session_timeout_s``) has passed - the failover
:mod:`convergence.streams.faust_config` describes. The station fleet is restarted the
same way, on the same scenario clock (``--t0``), for the rest of ``--duration``.

Examples
--------
>>> p = RestartPolicy()
>>> [p.delay(n) for n in range(1, 8)]
[1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
>>> describe_exit(-9), describe_exit(1), describe_exit(0)
('was killed by signal 9 (SIGKILL)', 'exited with code 1', 'exited on its own (code 0)')
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convergence.settings import Settings, env_name, fields

log = logging.getLogger(__name__)

__all__ = ["STATE_VERSION", "Child", "Cluster", "ClusterError", "ClusterPlan", "ClusterResult",
           "ProcessRef", "RestartPolicy", "Supervisor", "cli_argv", "cluster_dir", "describe_exit",
           "read_state", "read_worker_infos", "remove_worker_info", "state_path", "stop_recorded",
           "wait_caught_up", "worker_argv", "worker_env", "write_worker_info"]

STATE_VERSION = 1
_SERVER_SCHEMES = ("ws", "wss", "http", "https")
_LOG_TAIL_LINES = 8
_MAX_EVENTS_KEPT = 20
_MAX_LINE = 400


class ClusterError(RuntimeError):
    """The cluster cannot be started or stopped; the message says what to do."""


Say = Callable[[str], None]


def _log_say(text: str) -> None:
    log.warning("%s", text)


# -- processes ------------------------------------------------------------------------


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class ProcessRef:
    """A process we started: its pid and start time (a recycled pid is another process)."""

    pid: int
    start_ticks: int | None = None

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid, _start_ticks(pid))

    def alive(self) -> bool:
        """Running (not a zombie), and still the process we started."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False  # not ours: some other user's process took the pid
        if _zombie(self.pid):
            return False
        return self.start_ticks is None or _start_ticks(self.pid) in (None, self.start_ticks)

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if it is still our process; whether it was sent."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcessRef:
        ticks = d.get("start_ticks")
        return cls(int(d["pid"]), int(ticks) if isinstance(ticks, int) else None)


def describe_exit(code: int | None) -> str:
    """How a process ended, in words (``code`` as :attr:`subprocess.Popen.returncode`)."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-code} ({name})"
    if code == 0:
        return "exited on its own (code 0)"
    return f"exited with code {code}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 16_384, 0))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return f"    (no log at {path})"
    kept = [ln[:_MAX_LINE] for ln in text.rstrip().splitlines()[-lines:]]
    return "\n".join(f"    | {ln}" for ln in kept) if kept else "    (its log is empty)"


# -- restarts -------------------------------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    """When to start a dead child again (see module docstring).

    ``first_delay_s`` doubles per quick failure in a row up to ``max_delay_s``; a child
    that ran ``stable_after_s`` counts as healthy again; after ``max_quick_failures``
    quick failures in a row it is left down.
    """

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    max_quick_failures: int = 5

    def __post_init__(self) -> None:
        if self.first_delay_s < 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError(f"need 0 <= first_delay_s <= max_delay_s, got {self.first_delay_s}, "
                             f"{self.max_delay_s}")
        if self.max_quick_failures < 1:
            raise ValueError(f"max_quick_failures must be >= 1, got {self.max_quick_failures}")

    def delay(self, failures_in_a_row: int) -> float:
        """Seconds to wait before restart number ``failures_in_a_row`` (1-based) of a streak."""
        return min(self.first_delay_s * 2.0 ** max(failures_in_a_row - 1, 0), self.max_delay_s)


# -- the generic supervisor -----------------------------------------------------------


@dataclass
class Child:
    """One supervised process: how to start it and what happened to it so far.

    ``argv_for_start`` (if given) builds the argv at each (re)start, e.g. for the rest
    of a duration; ``deadline`` (monotonic) is when it is expected to end by itself:
    an exit after it is "finished", not a failure.
    """

    name: str
    role: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    store: bool = False
    argv_for_start: Callable[[], list[str]] | None = None
    deadline: float | None = None
    proc: subprocess.Popen[bytes] | None = None
    ref: ProcessRef | None = None
    started_mono: float = 0.0
    log_offset: int = 0
    restarts: int = 0
    quick_failures: int = 0
    restart_at: float | None = None
    given_up: bool = False
    finished: bool = False
    exit_codes: list[int] = field(default_factory=list)
    exit_seen: bool = False  # this run's exit was handled (counted once)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "store": self.store,
                "log": str(self.log_path), "restarts": self.restarts, "given_up": self.given_up,
                "finished": self.finished, "last_exit": self.exit_codes[-1] if self.exit_codes else None,
                **(self.ref.as_dict() if self.ref is not None else {"pid": None})}


class Supervisor:
    """Start children, restart the ones that die, stop them in waves (see module docstring).

    Parameters
    ----------
    say: where events go, one line (plus an indented log tail) per event.
    policy: the restart policy.
    on_change: called after every start, exit, restart or stop (e.g. to rewrite a state file).
    clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, *, say: Say = _log_say, policy: RestartPolicy | None = None,
                 on_change: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.policy = policy or RestartPolicy()
        self.on_change = on_change
        self.clock = clock
        self.children: list[Child] = []
        self.events: list[str] = []
        self.stopping = False

    def _note(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text.splitlines()[0]}"
        self.events = [*self.events, line][-_MAX_EVENTS_KEPT:]
        self.say(text)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a state file we cannot write must not stop supervision
                log.exception("supervisor: recording the cluster's state failed")

    def add(self, child: Child, *, start: bool = True) -> Child:
        """Supervise ``child`` (and start it now unless ``start`` is false)."""
        self.children.append(child)
        if start:
            self.start(child)
        return child

    def start(self, child: Child) -> None:
        """Start (or restart) ``child``, its output appended to its log."""
        argv = child.argv_for_start() if child.argv_for_start is not None else child.argv
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with child.log_path.open("ab") as out:
            child.log_offset = out.tell()
            # Own session: Ctrl-C in the terminal reaches only the supervisor, which stops
            # the children in order (stations first, so the last events are processed).
            child.proc = subprocess.Popen(argv, env=child.env, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        child.ref = ProcessRef.of(child.proc.pid)
        child.started_mono = self.clock()
        child.restart_at = None
        child.exit_seen = False
        self._changed()

    def poll(self) -> list[Child]:
        """Notice children that ended and restart the ones whose backoff is over.
        Returns the children that ended since the last call."""
        ended: list[Child] = []
        now = self.clock()
        for child in self.children:
            if child.proc is not None and not child.exit_seen and child.proc.poll() is not None:
                child.exit_seen = True
                ended.append(child)
                self._ended(child, now)
            if child.restart_at is not None and now >= child.restart_at and not self.stopping:
                child.restarts += 1
                old = child.ref.pid if child.ref else None
                self.start(child)
                self._note(f"{child.name} restarted as pid {child.ref.pid if child.ref else '?'} "
                           f"(restart {child.restarts}; was pid {old})")
        return ended

    def _ended(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        child.exit_codes.append(code)
        ran_s = now - child.started_mono
        pid = child.proc.pid
        if self.stopping:
            return
        if child.deadline is not None and now >= child.deadline - 1.0:
            child.finished = True
            self._changed()
            return
        child.quick_failures = 1 if ran_s >= self.policy.stable_after_s else child.quick_failures + 1
        what = f"{child.name} (pid {pid}) {describe_exit(code)} after running {_duration(ran_s)}"
        if child.quick_failures > self.policy.max_quick_failures:
            child.given_up = True
            self._note(f"{what}. It has now failed {child.quick_failures} times in a row, each "
                       f"within {_duration(self.policy.stable_after_s)} of starting: not "
                       f"restarting it again. Read its log ({child.log_path}), fix the cause, "
                       f"then `convergence cluster down` and `up` again. Last lines:\n"
                       f"{_tail(child.log_path)}")
        else:
            delay = self.policy.delay(child.quick_failures)
            child.restart_at = now + delay
            hint = (" Until it is back, the other workers take over its partitions once the "
                    "broker's session timeout has passed." if child.role == "worker" else "")
            self._note(f"{what}; restarting it in {delay:g} s (restart {child.restarts + 1}).{hint} "
                       f"Last lines of its log ({child.log_path}):\n{_tail(child.log_path)}")
        self._changed()

    def stop(self, wave: Sequence[Child], *, timeout_s: float, sig: int = signal.SIGTERM) -> None:
        """Stop one wave of children: ``sig`` to all, wait up to ``timeout_s``, then SIGKILL
        the ones still running, saying so."""
        self.stopping = True
        for child in wave:
            child.restart_at = None
            if child.running and not child.exit_seen:
                assert child.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        for child in wave:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self._note(f"{child.name} (pid {child.proc.pid}) did not stop within "
                           f"{timeout_s:g} s of SIGTERM; killing it (SIGKILL). Log {child.log_path}")
                child.proc.kill()
                child.proc.wait()
            if not child.exit_seen:
                child.exit_seen = True
                child.exit_codes.append(child.proc.returncode)
        self._changed()


# -- state and worker info files --------------------------------------------------------


def cluster_dir(settings: Settings) -> Path:
    """Where ``cluster up`` keeps its state file, logs and worker info files."""
    return settings.data_dir / "cluster"


def state_path(settings: Settings) -> Path:
    """The state file of the cluster started with these settings' data dir."""
    return cluster_dir(settings) / "state.json"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)  # readers never see half a file


def read_state(path: Path) -> dict[str, Any] | None:
    """The recorded cluster, or ``None`` when there is none (or the file is unreadable)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("version") == STATE_VERSION else None


def _workers_dir(settings: Settings) -> Path:
    return cluster_dir(settings) / "workers"


def write_worker_info(settings: Settings, *, metrics_port: int | None, client_id: str) -> Path:
    """Record this worker process (pid, metrics endpoint, Kafka client id); returns the file."""
    host = settings.metrics_host if settings.metrics_host not in ("0.0.0.0", "::") else "127.0.0.1"
    doc = {"pid": os.getpid(), "start_ticks": _start_ticks(os.getpid()),
           "host": socket.gethostname(), "client_id": client_id,
           "app_id": settings.faust_app_id, "started_at_s": round(time.time(), 3),
           "metrics_port": metrics_port,
           "metrics_url": None if metrics_port is None else f"http://{host}:{metrics_port}/metrics"}
    path = _workers_dir(settings) / f"{os.getpid()}.json"
    _write_json(path, doc)
    return path


def remove_worker_info(path: Path) -> None:
    """Forget a worker info file (the worker is stopping)."""
    path.unlink(missing_ok=True)


def read_worker_infos(settings: Settings) -> dict[int, dict[str, Any]]:
    """Info of every live worker that recorded itself under this data dir, by pid.
    Files of dead workers (killed before they could remove theirs) are deleted."""
    out: dict[int, dict[str, Any]] = {}
    d = _workers_dir(settings)
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
            ref = ProcessRef.from_dict(doc)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if ref.alive():
            out[ref.pid] = doc
        else:
            path.unlink(missing_ok=True)
    return out


# -- commands the cluster runs ----------------------------------------------------------


def worker_env(s: Settings) -> dict[str, str]:
    """The environment of a cluster subprocess: every effective setting, spelled out, so
    it runs with exactly this process's configuration (flags included)."""
    env = dict(os.environ)
    for f in fields():
        env[env_name(f.name)] = str(getattr(s, f.name))
    env["CONVERGENCE_DB"] = s.db_url
    return env


def cli_argv(python: str = sys.executable) -> list[str]:
    """argv prefix that runs the ``convergence`` command line in a fresh interpreter."""
    return [python, "-m", "convergence.cli.main"]


def worker_argv(*, log_level: str = "warning", store: bool = True,
                python: str = sys.executable) -> list[str]:
    """argv that runs one ``cluster worker`` in a fresh interpreter."""
    return [*cli_argv(python), "cluster", "worker", "--log-level", log_level,
            "--store" if store else "--no-store"]


def wait_caught_up(s: Settings, timeout_s: float) -> bool:
    """Wait until the workers' consumer group has committed every event in Kafka."""
    from kafka import KafkaAdminClient

    from convergence.streams import kafka_client

    topic = s.topic("events")
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap.split(","),
                             bootstrap_timeout_ms=kafka_client.BOOTSTRAP_TIMEOUT_MS)
    consumer = kafka_client.consumer(s.kafka_bootstrap, "convergence-cluster-lag")
    try:
        tps = kafka_client.assign_all(consumer, topic)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            end = consumer.end_offsets(tps)
            done = admin.list_group_offsets(s.faust_app_id).get(s.faust_app_id, {})
            if all(tp in done and done[tp].offset >= end[tp] for tp in tps if end[tp] > 0):
                return True
            time.sleep(0.5)
        return False
    finally:
        consumer.close()
        admin.close()


# -- the cluster ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterPlan:
    """What ``cluster up`` was asked for."""

    workers: int = 1
    fleet: Path | None = None
    local_kafka: bool = False
    duration_s: float | None = None
    drain_s: float = 30.0
    log_level: str = "warning"
    seed: int | None = None  # given on the command line (else the fleet's or the setting)
    detached: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be between 1 and 64, got {self.workers}")


@dataclass
class ClusterResult:
    """How a cluster run ended."""

    stations: dict[str, Any]
    worker_exit_codes: list[int | None]
    restarts: dict[str, int]
    failure: str | None = None


_SUMMED = ("sent", "acked", "failed", "retried", "records_sent", "records_acked", "records_failed",
           "overflowed", "commands", "invalid_commands", "acks", "status_messages",
           "source_dead_letters")


def _summary_after(path: Path, offset: int) -> dict[str, Any] | None:
    """The last JSON object line a ``stations run --json`` wrote to its log after ``offset``."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict) and "records_sent" in doc:
                    return doc
    return None


class Cluster:
    """A cluster on this host, supervised (see module docstring).

    Use: ``prepare()`` (refuse a second cluster on this data dir, start the broker,
    create the topics), ``launch()`` (workers and stations), then ``step()`` every
    half second until :attr:`finished`, :attr:`failure` or a stop request, then
    ``shutdown()``. Kafka errors from ``prepare`` surface as
    :class:`convergence.streams.topics.ClusterError` or
    :class:`convergence.streams.kafka_local.KafkaLocalError`.
    """

    def __init__(self, settings: Settings, plan: ClusterPlan, *, say: Say = _log_say,
                 policy: RestartPolicy | None = None, python: str = sys.executable) -> None:
        self.settings = settings
        self.plan = plan
        self.say = say
        self.python = python
        self.dir = cluster_dir(settings)
        self.state_file = state_path(settings)
        self.supervisor = Supervisor(say=say, policy=policy, on_change=self.record)
        self.broker: Any = None
        self.phase = "starting"
        self.started_s = time.time()
        self.t0_s: float | None = None
        self._deadline: float | None = None
        self._stations: Child | None = None
        #: the fleet file the stations run and the workers learn the stations from
        self.fleet_path: Path | None = plan.fleet
        self._summaries: list[dict[str, Any]] = []
        self._failure: str | None = None
        self._owns_state = False  # never write or delete another cluster's state file

    @property
    def workers(self) -> list[Child]:
        return [c for c in self.supervisor.children if c.role == "worker"]

    @property
    def store_everywhere(self) -> bool:
        """A SurrealDB server takes writes from every worker; an embedded file from one."""
        return self.settings.db_url.split("://", 1)[0] in _SERVER_SCHEMES

    # -- start ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Refuse a second cluster here, start the local broker (if asked), create topics."""
        from convergence.streams import kafka_local
        from convergence.streams.topics import ensure_topics

        old = read_state(self.state_file)
        if old is not None:
            alive = _recorded_alive(old)
            if alive:
                sup = old.get("supervisor", {})
                raise ClusterError(
                    f"a cluster already runs from {self.dir} (supervisor pid {sup.get('pid')}, "
                    f"{len(alive)} process(es) alive); see `convergence cluster status`, stop it "
                    "with `convergence cluster down`")
            self.state_file.unlink(missing_ok=True)  # a crashed cluster's leftover record
        self.dir.mkdir(parents=True, exist_ok=True)
        self._owns_state = True
        self.record()
        if self.plan.local_kafka:
            self.say("starting a local Kafka broker ...")
            self.broker = kafka_local.start(self.settings)
            self.settings = self.settings.replace(kafka_bootstrap=self.broker.bootstrap)
            self.record()
        # the workers learn the stations from the fleet the stations run: the file given,
        # or the default synthetic fleet written out (never a guess)
        fleet = self.plan.fleet
        if fleet is None:
            from convergence.ground_stations.fleet import default_fleet_toml

            seed = self.plan.seed if self.plan.seed is not None else self.settings.seed
            fleet = self.dir / "fleet.toml"
            _write_text(fleet, default_fleet_toml(self.settings.stations, seed))
        self.fleet_path = fleet.resolve()
        self.settings = self.settings.replace(fleet=str(self.fleet_path))
        ensure_topics(self.settings)

    def launch(self) -> None:
        """Start the workers and the station fleet."""
        s = self.settings
        base_port = s.metrics_port
        for i in range(self.plan.workers):
            store = self.store_everywhere or i == 0
            env = worker_env(s)
            if base_port > 0:  # one fixed port each; 0 (pick) and -1 (off) stay as they are
                env[env_name("metrics_port")] = str(base_port + i)
            self.supervisor.add(Child(
                f"worker {i}", "worker", worker_argv(log_level=self.plan.log_level, store=store,
                                                     python=self.python),
                env, self.dir / f"worker-{i}.log", store=store))
        self.t0_s = time.time()
        if self.plan.duration_s is not None:
            self._deadline = time.monotonic() + self.plan.duration_s
        self._stations = self.supervisor.add(Child(
            "the station fleet", "stations", [], worker_env(s), self.dir / "stations.log",
            argv_for_start=self._stations_argv, deadline=self._deadline))
        self.phase = "running"
        self.record()

    def _stations_argv(self) -> list[str]:
        if self._stations is not None and self._stations.proc is not None:
            # the run that just ended: keep its counters before the next one starts
            summary = _summary_after(self._stations.log_path, self._stations.log_offset)
            if summary is not None:
                self._summaries.append(summary)
        argv = [*cli_argv(self.python), "stations", "run", "--json", "--t0", repr(self.t0_s)]
        if self.fleet_path is not None:
            argv += ["--fleet", str(self.fleet_path)]
        if self.plan.seed is not None:
            argv += ["--seed", str(self.plan.seed)]
        if self._deadline is not None:
            argv += ["--duration", f"{max(self._deadline - time.monotonic(), 0.5):.3f}"]
        return argv

    # -- run ------------------------------------------------------------------------
    def step(self) -> None:
        """Restart what died; notice the end of the run or a failure that ends it."""
        self.supervisor.poll()
        if self.broker is not None and not self.broker.alive() and self._failure is None:
            self._failure = (f"the local Kafka broker (pid {self.broker.pid}) exited; its log "
                             f"{self.broker.log_path}:\n{_tail(Path(self.broker.log_path))}")
        workers = self.workers
        if workers and all(w.given_up for w in workers) and self._failure is None:
            self._failure = ("no worker is left running: every one failed repeatedly right after "
                             f"starting; see the logs in {self.dir}")
        if self._stations is not None and self._stations.given_up and self._failure is None:
            self._failure = (f"the station fleet keeps failing right after starting; see "
                             f"{self._stations.log_path}")

    @property
    def finished(self) -> bool:
        """The station fleet ran for the whole ``--duration``."""
        return self._stations is not None and self._stations.finished

    @property
    def failure(self) -> str | None:
        """Why the cluster cannot go on, if it cannot."""
        return self._failure

    # -- stop -----------------------------------------------------------------------
    def shutdown(self, *, drain: bool = True, stations_timeout_s: float = 30.0,
                 workers_timeout_s: float = 60.0) -> ClusterResult:
        """Stop everything in order (see module docstring) and forget the state file."""
        self.phase = "stopping"
        sup = self.supervisor
        sup.stopping = True
        self.record()
        st = self._stations
        if st is not None:
            sup.stop([st], timeout_s=stations_timeout_s)
            if st.proc is not None:
                summary = _summary_after(st.log_path, st.log_offset)
                if summary is not None:
                    self._summaries.append(summary)
        if drain and self.plan.drain_s > 0 and any(w.running for w in self.workers):
            self.say(f"stations stopped; letting the workers finish (up to {self.plan.drain_s:g} s)")
            try:
                if wait_caught_up(self.settings, self.plan.drain_s):
                    # The last ticks close once event time has passed them by the lateness.
                    time.sleep(self.settings.tick_s + self.settings.allowed_lateness_s + 1.5)
            except Exception as exc:  # the broker is gone: stop the workers anyway
                self.say(f"could not check the workers' progress ({type(exc).__name__}: {exc}); "
                         "stopping them now")
        # Workers without a store first: what they publish while stopping (last ticks,
        # their run records) is on the topics before the store owners' sinks drain them.
        sup.stop([w for w in self.workers if not w.store], timeout_s=workers_timeout_s)
        sup.stop([w for w in self.workers if w.store], timeout_s=workers_timeout_s)
        if self.broker is not None:
            self.broker.stop()
        if self._owns_state:
            self.state_file.unlink(missing_ok=True)
            self._owns_state = False
        return ClusterResult(self._stations_summary(),
                             [w.proc.returncode if w.proc is not None else None for w in self.workers],
                             {c.name: c.restarts for c in sup.children}, self._failure)

    def _stations_summary(self) -> dict[str, Any]:
        if not self._summaries:
            return {}
        out = dict(self._summaries[-1])
        for key in _SUMMED:
            vals = [s.get(key) for s in self._summaries]
            if all(isinstance(v, int) for v in vals):
                out[key] = sum(v for v in vals if isinstance(v, int))
        out["fleet_runs"] = len(self._summaries)
        return out

    # -- the state file ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What the state file records (see :func:`read_state`)."""
        s = self.settings
        broker: dict[str, Any] = {"bootstrap": s.kafka_bootstrap, "local": self.broker is not None}
        if self.broker is not None:
            broker.update(ProcessRef.of(self.broker.pid).as_dict(),
                          log=str(self.broker.log_path), state_dir=str(self.broker.state_dir),
                          ephemeral=bool(getattr(self.broker, "_ephemeral", False)))
        st = self._stations
        return {
            "version": STATE_VERSION, "phase": self.phase, "started_at_s": round(self.started_s, 3),
            "supervisor": {**ProcessRef.of(os.getpid()).as_dict(), "detached": self.plan.detached,
                           "log": str(self.dir / "supervisor.log") if self.plan.detached else None},
            "settings": {"kafka_bootstrap": s.kafka_bootstrap, "topic_prefix": s.topic_prefix,
                         "faust_app_id": s.faust_app_id, "db": s.db_url, "data_dir": str(s.data_dir),
                         "consumer_session_timeout_s": s.consumer_session_timeout_s},
            "plan": {"workers": self.plan.workers, "fleet": str(self.plan.fleet) if self.plan.fleet else None,
                     "duration_s": self.plan.duration_s, "local_kafka": self.plan.local_kafka},
            "broker": broker,
            "workers": [w.as_dict() for w in self.workers],
            "stations": st.as_dict() if st is not None else None,
            # scenario time 0 on the stations' clock (synthetic episodes count from it)
            "stations_t0_s": self.t0_s,
            "events": list(self.supervisor.events),
        }

    def record(self) -> None:
        """Rewrite the state file (atomically), once this cluster owns it."""
        if self._owns_state:
            _write_json(self.state_file, self.state())


# -- stopping what a state file names ------------------------------------------------------


def _refs(state: dict[str, Any]) -> list[tuple[str, ProcessRef]]:
    """Every recorded process other than the supervisor, in stopping order."""
    out: list[tuple[str, ProcessRef]] = []
    st = state.get("stations")
    if isinstance(st, dict) and st.get("pid"):
        out.append(("the station fleet", ProcessRef.from_dict(st)))
    workers = [w for w in state.get("workers", []) if isinstance(w, dict) and w.get("pid")]
    for w in sorted(workers, key=lambda w: bool(w.get("store"))):  # store owners last
        out.append((str(w.get("name", "worker")), ProcessRef.from_dict(w)))
    broker = state.get("broker")
    if isinstance(broker, dict) and broker.get("local") and broker.get("pid"):
        out.append(("the local Kafka broker", ProcessRef.from_dict(broker)))
    return out


def _recorded_alive(state: dict[str, Any]) -> list[str]:
    sup = state.get("supervisor")
    alive = [name for name, ref in _refs(state) if ref.alive()]
    if isinstance(sup, dict) and sup.get("pid") and ProcessRef.from_dict(sup).alive():
        alive.insert(0, "the supervisor")
    return alive


def _stop_refs(named: Iterable[tuple[str, ProcessRef]], timeout_s: float, say: Say) -> None:
    named = [(n, r) for n, r in named if r.alive()]
    for _name, ref in named:
        ref.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for name, ref in named:
        if not _gone(ref, deadline - time.monotonic()):
            say(f"{name} (pid {ref.pid}) did not stop within {timeout_s:g} s of SIGTERM; killing "
                "it (SIGKILL)")
            ref.signal(signal.SIGKILL)
            _gone(ref, 5.0)


def _gone(ref: ProcessRef, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the process to end; whether it did."""
    deadline = time.monotonic() + timeout_s
    while ref.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not ref.alive()


def stop_recorded(path: Path, *, timeout_s: float = 120.0, child_timeout_s: float = 60.0,
                  say: Say = _log_say) -> dict[str, Any] | None:
    """Stop the cluster a state file records; ``None`` when nothing is recorded.

    The supervisor gets SIGTERM and stops its children in order itself; when it is gone
    (killed) or does not finish within ``timeout_s``, the recorded processes still alive
    are stopped here, in the same order: stations, workers (store owners last), broker -
    each SIGTERM, up to ``child_timeout_s``, then SIGKILL with a message. Returns the
    state read.
    """
    state = read_state(path)
    if state is None:
        return None
    sup = state.get("supervisor") or {}
    if sup.get("pid"):
        ref = ProcessRef.from_dict(sup)
        if ref.pid != os.getpid() and ref.alive():
            say(f"asking the supervisor (pid {ref.pid}) to stop the cluster ...")
            ref.signal(signal.SIGTERM)
            if not _gone(ref, timeout_s):
                say(f"the supervisor (pid {ref.pid}) did not finish within {timeout_s:g} s; "
                    "killing it (SIGKILL) and stopping what it started directly")
                ref.signal(signal.SIGKILL)
    left = [(n, r) for n, r in _refs(state) if r.alive()]
    if left:
        say("stopping " + ", ".join(f"{n} (pid {r.pid})" for n, r in left))
        broker = [(n, r) for n, r in left if n == "the local Kafka broker"]
        _stop_refs([x for x in left if x not in broker], child_timeout_s, say)
        _stop_refs(broker, child_timeout_s, say)
    b = state.get("broker")
    if isinstance(b, dict) and b.get("local") and b.get("ephemeral") and b.get("state_dir"):
        import shutil

        shutil.rmtree(b["state_dir"], ignore_errors=True)
    path.unlink(missing_ok=True)
    return state
