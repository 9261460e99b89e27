"""A real single-node Apache Kafka broker for development and tests.

This module owns everything about the *local* broker and nothing else:

* resolving the official Apache Kafka jars from Maven Central with ``mvn`` into
  ``<cache_dir>/kafka/<scala>-<version>/libs`` (:func:`fetch`),
* writing a KRaft ``server.properties`` (combined broker + controller, node 1),
  formatting the storage and launching ``java ... kafka.Kafka`` (:func:`start`),
* the persistent broker of the CLI, recorded in ``<cache_dir>/kafka/run/state.json``
  so :func:`status` and :func:`stop` work from another process.

Topics, producers and consumers belong to the stream code; this module only
guarantees that ``bootstrap`` answers Kafka metadata requests.

Version: the default (``Settings.kafka_version``) stays Kafka 4.1.1. Kafka 4.x
removed old protocol versions (KIP-896), so both clients we ship were verified
against it by ``tests/streams/test_kafka_local.py``: kafka-python 3.0 and aiokafka
0.14 (Faust's transport) produce, consume and commit in a consumer group, and read
each other's records; a Faust 0.15 agent was also checked by hand. No fallback to
3.9 was needed. Kafka 3.9.x still works (``CONVERGENCE_KAFKA_VERSION=3.9.1``): it
takes log4j 1 (reload4j) instead of log4j2; before 3.9 the static quorum is used.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from convergence.settings import Settings

HOST = "127.0.0.1"  # never expose the dev broker beyond the loopback interface
DEFAULT_HEAP = "-Xmx512m"
MARKER = ".fetched"
STATE_FILE = "state.json"
JAVA_HINT = "install a Java 17+ runtime, e.g. `sudo apt-get install openjdk-17-jre-headless`"
MVN_HINT = "install Maven 3.6+, e.g. `sudo apt-get install maven` (https://maven.apache.org)"


class KafkaLocalError(RuntimeError):
    """The local broker cannot be fetched, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class KafkaParams:
    """The three settings this module needs; build from :class:`Settings` or directly in tests."""

    cache_dir: Path
    version: str = "4.1.1"
    scala: str = "2.13"

    @classmethod
    def of(cls, src: Settings | KafkaParams) -> KafkaParams:
        if isinstance(src, KafkaParams):
            return src
        return cls(Path(src.cache_dir), src.kafka_version, src.kafka_scala)

    @property
    def home(self) -> Path:
        return self.cache_dir / "kafka" / f"{self.scala}-{self.version}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def run_dir(self) -> Path:
        return self.cache_dir / "kafka" / "run"

    @property
    def release(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.version)
        if m is None:
            raise KafkaLocalError(f"kafka_version {self.version!r} is not a Kafka release such "
                                  "as 4.1.1; fix the setting (CONVERGENCE_KAFKA_VERSION)")
        return int(m[1]), int(m[2])

    @property
    def dynamic_quorum(self) -> bool:
        # KIP-853 (controller.quorum.bootstrap.servers + format --standalone) exists from 3.9.
        return self.release >= (3, 9)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return f"(no log at {path})"


def require_tools(*tools: str, path: str | None = None) -> dict[str, str]:
    """Absolute paths of ``tools`` (``java``, ``mvn``), else a :class:`KafkaLocalError`."""
    hints = {"java": JAVA_HINT, "mvn": MVN_HINT}
    found = {t: shutil.which(t, path=path) for t in tools}
    missing = [t for t, p in found.items() if p is None]
    if missing:
        raise KafkaLocalError(
            "local Kafka needs " + " and ".join(f"`{t}`" for t in missing) + " on PATH, not found: "
            + "; ".join(hints.get(t, f"install {t}") for t in missing)
        )
    return {t: p for t, p in found.items() if p is not None}


def pom_xml(params: KafkaParams) -> str:
    """A throwaway POM whose runtime dependencies are exactly a runnable broker + storage tool."""
    # Kafka's own POM leaves the slf4j binding to the distribution; without one the
    # broker logs nothing, which would make start failures undiagnosable.
    if params.release >= (4, 0):
        binding = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3")
    else:
        binding = ("org.slf4j", "slf4j-reload4j", "1.7.36")
    deps = [("org.apache.kafka", f"kafka_{params.scala}", params.version), binding]
    body = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>\n"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n<modelVersion>4.0.0</modelVersion>\n'
        "<groupId>local.convergence</groupId><artifactId>kafka-runtime</artifactId>"
        "<version>1</version><packaging>pom</packaging>\n"
        f"<dependencies>\n{body}</dependencies>\n</project>\n"
    )


def fetch(src: Settings | KafkaParams, *, path: str | None = None) -> Path:
    """Resolve the broker jars into the cache (once) and return the ``libs`` directory."""
    params = KafkaParams.of(src)
    if (params.libs / MARKER).exists():
        return params.libs
    tools = require_tools("java", "mvn", path=path)
    params.home.mkdir(parents=True, exist_ok=True)
    (params.home / "pom.xml").write_text(pom_xml(params))
    # Copy into a scratch dir and rename: an interrupted fetch never looks complete.
    staging = params.home / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    env = dict(os.environ, PATH=path) if path is not None else None
    cmd = [tools["mvn"], "-B", "-q", "-f", str(params.home / "pom.xml"),
           "dependency:copy-dependencies", "-DincludeScope=runtime",
           f"-DoutputDirectory={staging}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not any(staging.glob("kafka_*.jar")):
        raise KafkaLocalError(
            f"mvn could not resolve Apache Kafka {params.version} (Scala {params.scala}) from "
            f"Maven Central (exit {proc.returncode}). Check network access to "
            "repo.maven.apache.org and that the version exists (setting kafka_version). "
            f"Command: {' '.join(cmd)}\n--- mvn output (tail) ---\n"
            + _tail(proc.stdout + proc.stderr)
        )
    shutil.rmtree(params.libs, ignore_errors=True)
    staging.rename(params.libs)
    (params.libs / MARKER).write_text(f"{params.version} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    return params.libs


def free_ports(count: int = 1, host: str = HOST) -> list[int]:
    """``count`` distinct free TCP ports on ``host`` (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]


def port_free(port: int, host: str = HOST) -> bool:
    """Nothing listens on ``host:port`` (a broker would fail late and obscurely otherwise)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def server_properties(params: KafkaParams, state_dir: Path, port: int, controller_port: int) -> str:
    """KRaft combined-mode config for one node; every replication factor is 1 (single node)."""
    quorum = (
        f"controller.quorum.bootstrap.servers={HOST}:{controller_port}"
        if params.dynamic_quorum
        else f"controller.quorum.voters=1@{HOST}:{controller_port}"
    )
    props = [
        "process.roles=broker,controller",
        "node.id=1",
        quorum,
        f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={state_dir / 'data'}",
        "num.partitions=1",
        "auto.create.topics.enable=true",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        # Consumers in tests would otherwise wait 3 s for a rebalance that never comes.
        "group.initial.rebalance.delay.ms=0",
        # The machine is small (2 cores); the defaults (3 network / 8 io threads) buy nothing.
        "num.network.threads=2",
        "num.io.threads=2",
    ]
    return "\n".join(props) + "\n"


# shutdownHook=disable: Kafka stops itself on SIGTERM and logs while doing so; log4j's own
# hook would otherwise race it and swallow the last lines of the log.
_LOG4J2 = """status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
"""
_LOG4J1 = """log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def _java_cmd(java: str, params: KafkaParams, state_dir: Path, heap: str) -> list[str]:
    if params.release >= (4, 0):
        (state_dir / "log4j2.properties").write_text(_LOG4J2)
        log_flag = f"-Dlog4j2.configurationFile={state_dir / 'log4j2.properties'}"
    else:
        (state_dir / "log4j.properties").write_text(_LOG4J1)
        log_flag = f"-Dlog4j.configuration=file:{state_dir / 'log4j.properties'}"
    # `libs/*` is expanded by the JVM itself, not by a shell.
    return [java, heap, "-Djava.awt.headless=true", log_flag, "-cp", f"{params.libs}/*"]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def metadata_ok(bootstrap: str, timeout_ms: int = 3000) -> bool:
    """True when the broker answers a metadata request (port open is not enough: KRaft
    accepts connections before the broker has caught up with the controller)."""
    from kafka import KafkaAdminClient  # imported late: only needed once a broker runs

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms, client_id="convergence-kafka-local",
        )
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def _pid_alive(pid: int) -> bool:
    """The pid runs and is a Kafka broker (guards against pid reuse after a reboot)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        with contextlib.suppress(OSError):
            if proc.joinpath("stat").read_text().split(") ", 1)[1].startswith("Z"):
                return False  # a zombie is dead, it only awaits its parent's wait()
            return b"kafka.Kafka" in proc.joinpath("cmdline").read_bytes()
    return True


@dataclass
class BrokerHandle:
    """A running broker. ``stop()`` or ``with`` ends it; the CLI's copy lives in state.json."""

    bootstrap: str
    pid: int
    log_path: Path
    state_dir: Path
    version: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    _ephemeral: bool = field(default=False, repr=False, compare=False)
    _argv: list[str] | None = field(default=None, repr=False, compare=False)
    #: it started on storage kept from an earlier broker (topics and offsets survived)
    kept_storage: bool = field(default=False, compare=False)

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (Kafka shuts down cleanly), wait, then SIGKILL; remove our state."""
        self.halt(timeout)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        if self._ephemeral:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def halt(self, timeout: float = 30.0) -> None:
        """Stop the broker process (SIGTERM, wait, then SIGKILL) but keep its storage and
        ports: also a fault drill (a broker restart); :meth:`relaunch` starts it again
        with its topics and offsets."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not self.alive():
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)

    def relaunch(self, timeout: float = 90.0) -> None:
        """Start a halted broker again on the same storage and ports; returns once it
        answers metadata requests. Only for a broker this process started."""
        if self._argv is None:
            raise KafkaLocalError(f"the broker on {self.bootstrap} was not started by this "
                                  "process; start it with `convergence kafka start`")
        if self.alive():
            return
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)
        self._proc, self.pid = proc, proc.pid
        host, _, port = self.bootstrap.rpartition(":")
        deadline = time.monotonic() + timeout
        while not (port_open(host, int(port)) and metadata_ok(self.bootstrap)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise KafkaLocalError(f"the broker on {self.bootstrap} did not come back "
                                      f"({'exited' if proc.poll() is not None else 'timed out'}). "
                                      f"Log {self.log_path} (tail):\n{_log_tail(self.log_path)}")
            time.sleep(0.3)

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _read_state(params: KafkaParams) -> BrokerHandle | None:
    try:
        raw = json.loads((params.run_dir / STATE_FILE).read_text())
        return BrokerHandle(raw["bootstrap"], int(raw["pid"]), Path(raw["log_path"]),
                            Path(raw["state_dir"]), raw.get("version", ""))
    except (OSError, ValueError, KeyError):
        return None


def _kept_ports(state_dir: Path) -> tuple[int, int] | None:
    """(client port, controller port) of the broker that formatted ``state_dir``'s storage,
    or ``None`` when there is no formatted storage to keep."""
    if not (state_dir / "data" / "meta.properties").is_file():
        return None
    try:
        props = (state_dir / "server.properties").read_text()
    except OSError:
        return None
    client = re.search(rf"PLAINTEXT://{re.escape(HOST)}:(\d+)", props)
    controller = re.search(rf"CONTROLLER://{re.escape(HOST)}:(\d+)", props)
    if client is None or controller is None:
        return None
    return int(client[1]), int(controller[1])


def start(
    src: Settings | KafkaParams,
    *,
    port: int | None = None,
    persistent: bool = False,
    state_dir: Path | None = None,
    timeout: float = 90.0,
    heap: str = DEFAULT_HEAP,
    fresh: bool = False,
) -> BrokerHandle:
    """Fetch if needed, prepare storage and launch a broker; return once it serves metadata.

    ``persistent`` uses ``<cache_dir>/kafka/run`` and records the broker there for
    :func:`status`/:func:`stop` in other processes; the broker survives this process.
    Storage already formatted in ``state_dir`` (a broker stopped earlier, or killed) is
    kept - topics, messages and committed offsets survive a restart - and the broker
    comes back on the same ports (the controller's port is recorded in its storage; the
    client port stays too unless ``port`` says otherwise). ``fresh=True`` wipes it and
    starts empty. Without ``state_dir`` (tests) every broker is new and thrown away.
    """
    params = KafkaParams.of(src)
    java = require_tools("java")["java"]
    fetch(params)
    if persistent:
        old = _read_state(params)
        if old is not None and old.alive():
            raise KafkaLocalError(f"a local broker already runs at {old.bootstrap} (pid {old.pid});"
                                  " stop it first with `convergence kafka stop`")
        state_dir = params.run_dir
    ephemeral = state_dir is None
    if state_dir is None:
        (params.cache_dir / "kafka").mkdir(parents=True, exist_ok=True)
        state_dir = Path(tempfile.mkdtemp(prefix="broker-", dir=params.cache_dir / "kafka"))
    kept = None if fresh else _kept_ports(state_dir)
    if kept is None:
        shutil.rmtree(state_dir / "data", ignore_errors=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    if kept is not None:
        port, cport = port or kept[0], kept[1]
        for p, what in ((port, "client"), (cport, "controller")):
            if not port_free(p):
                raise KafkaLocalError(
                    f"port {HOST}:{p} ({what} port of the broker whose storage is kept in "
                    f"{state_dir / 'data'}) is already in use; stop what uses it"
                    + (", pick another client port with --port" if what == "client" else "")
                    + ", or start with --fresh to begin with empty storage on new ports")
    else:
        picked = free_ports(2)
        port = port or picked[0]
        cport = next(p for p in picked if p != port)
        if not port_free(port):
            raise KafkaLocalError(f"port {HOST}:{port} is already in use; pick another with --port")
    props = state_dir / "server.properties"
    props.write_text(server_properties(params, state_dir, port, cport))
    log_path = state_dir / "broker.log"
    base = _java_cmd(java, params, state_dir, heap)
    if kept is not None:
        return _launch(params, base, props, state_dir, port, log_path, persistent, timeout,
                       ephemeral=False, kept=True)

    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    # "--cluster-id=ID", not "-t ID": a base64 id starts with "-" one time in 64 and the
    # storage tool's argument parser would read it as an option
    fmt = [*base, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props)]
    if params.dynamic_quorum:
        fmt.append("--standalone")
    res = subprocess.run(fmt, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise KafkaLocalError(f"formatting Kafka storage in {state_dir} failed (exit "
                              f"{res.returncode}; Kafka 4.x needs Java 17+, `java -version`):\n"
                              + _tail(res.stdout + res.stderr))
    return _launch(params, base, props, state_dir, port, log_path, persistent, timeout,
                   ephemeral=ephemeral, kept=False)


def _launch(params: KafkaParams, base: list[str], props: Path, state_dir: Path, port: int,
            log_path: Path, persistent: bool, timeout: float, *, ephemeral: bool,
            kept: bool) -> BrokerHandle:
    """Start ``kafka.Kafka`` on prepared storage and wait until it serves metadata."""
    with log_path.open("ab" if kept else "wb") as log:
        # A detached (persistent) broker gets its own session so Ctrl-C in the launching
        # terminal does not reach it; a test broker shares ours so Ctrl-C ends it too.
        proc = subprocess.Popen([*base, "kafka.Kafka", str(props)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=persistent)
    handle = BrokerHandle(f"{HOST}:{port}", proc.pid, log_path, state_dir, params.version,
                          proc, ephemeral, [*base, "kafka.Kafka", str(props)], kept)
    deadline = time.monotonic() + timeout
    while not (port_open(HOST, port) and metadata_ok(handle.bootstrap)):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = (f"exited with code {proc.returncode}" if proc.poll() is not None
                   else f"did not answer metadata within {timeout:.0f}s")
            handle._ephemeral = False  # keep the log for whoever reads this error
            handle.stop(timeout=5)
            hint = (" It restarted on storage kept from an earlier run; if that storage is "
                    "damaged, start with --fresh (this deletes its topics)." if kept else "")
            raise KafkaLocalError(f"Kafka broker {params.version} on {handle.bootstrap} {why}.{hint} "
                                  f"Log {log_path} (tail):\n{_log_tail(log_path)}")
        time.sleep(0.3)
    if persistent:
        state = {"pid": handle.pid, "bootstrap": handle.bootstrap, "version": handle.version,
                 "log_path": str(log_path), "state_dir": str(state_dir)}
        try:
            (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        except OSError as exc:  # an unrecorded detached broker could never be stopped
            handle.stop(timeout=5)
            raise KafkaLocalError(f"cannot record the broker in {state_dir}: {exc}") from exc
    return handle


@dataclass(frozen=True)
class BrokerStatus:
    """What ``convergence kafka status`` shows."""

    recorded: bool
    running: bool
    pid_alive: bool = False
    port_open: bool = False
    pid: int | None = None
    bootstrap: str | None = None
    log_path: str | None = None
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(src: Settings | KafkaParams) -> BrokerStatus:
    """State of the persistent broker recorded under ``<cache_dir>/kafka/run``."""
    h = _read_state(KafkaParams.of(src))
    if h is None:
        return BrokerStatus(recorded=False, running=False)
    alive = h.alive()
    host, _, p = h.bootstrap.rpartition(":")
    answers = alive and port_open(host, int(p))
    return BrokerStatus(True, alive and answers, alive, answers, h.pid, h.bootstrap,
                        str(h.log_path), h.version)


def stop(src: Settings | KafkaParams, timeout: float = 30.0) -> BrokerStatus:
    """Stop the persistent broker if one is recorded; return its status before stopping."""
    params = KafkaParams.of(src)
    before = status(params)
    h = _read_state(params)
    if h is not None:
        h.stop(timeout=timeout)
    return before
