"""The one settings object.

Every setting is declared exactly once below, with its type, default, environment
variable and a sentence of documentation. Values are layered, later wins:

1. the default declared here,
2. a TOML file (``CONVERGENCE_CONFIG``, else ``./convergence.toml`` when present),
3. environment variables ``CONVERGENCE_<NAME>``,
4. explicit overrides (CLI flags).

Nothing else in the code base reads the environment or a config file; it asks
:func:`load_settings` and receives a frozen :class:`Settings`.

Examples
--------
>>> s = load_settings(env={"CONVERGENCE_STATIONS": "12"}, config_path=None)
>>> s.stations, s.source_of("stations")
(12, 'env CONVERGENCE_STATIONS')
>>> s.tick_s, s.source_of("tick_s")
(1.0, 'default')
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names it and the fix."""


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "convergence"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convergence"


def _setting(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Build it with :func:`load_settings`."""

    data_dir: Path = _setting(
        _default_data_dir(), "Where the embedded database and trained models live."
    )
    cache_dir: Path = _setting(
        _default_cache_dir(), "Where downloaded Kafka jars and broker state are cached."
    )
    db: str = _setting(
        "",
        "SurrealDB URL: surrealkv://PATH (embedded file), mem:// (throwaway) or ws://HOST:PORT "
        "(server). Empty means surrealkv://<data_dir>/db.",
    )
    db_namespace: str = _setting("convergence", "SurrealDB namespace.")
    db_database: str = _setting("main", "SurrealDB database.")
    db_user: str = _setting("", "SurrealDB user (server URLs only).")
    db_password: str = _setting("", "SurrealDB password (server URLs only).")
    stations: int = _setting(247, "Number of synthetic ground stations in the default fleet.")
    seed: int = _setting(7, "Seed for every random choice (scenarios, fleets, models).")
    tick_s: float = _setting(1.0, "Length of one detector tick in event-time seconds.")
    allowed_lateness_s: float = _setting(
        1.5, "How late (event time) an event may arrive and still update its tick."
    )
    window_ticks: int = _setting(
        8, "Sliding window, in ticks, over which the convergence meter fuses node evidence."
    )
    max_text_chars: int = _setting(2048, "Longest event text accepted; longer is rejected.")
    max_event_bytes: int = _setting(16384, "Largest encoded event accepted on the wire.")
    max_future_s: float = _setting(
        300.0, "An event stamped further than this in the future is rejected."
    )
    max_age_s: float = _setting(
        7 * 86400.0, "An event older than this (relative to now) is rejected."
    )
    kafka_bootstrap: str = _setting("127.0.0.1:9092", "Kafka bootstrap servers (host:port,...).")
    kafka_version: str = _setting("4.1.1", "Apache Kafka version resolved from Maven Central.")
    kafka_scala: str = _setting("2.13", "Scala binary version of the Kafka jars.")
    topic_prefix: str = _setting("convergence", "Prefix of every Kafka topic name.")
    faust_app_id: str = _setting("convergence", "Faust application id (consumer group).")
    partitions: int = _setting(
        4,
        "Partitions of the cluster's events and node-evidence topics, fixed when the topics "
        "are created: the most workers that share each stage's work (stations by station id "
        "in the first, regions in the second). More workers than partitions stand by.",
    )
    fleet: str = _setting(
        "",
        "Fleet file (TOML) the cluster's workers learn each station's kind, region and "
        "correlation group from; stations it does not list are learnt from their status "
        "messages. `cluster up` sets it to the fleet it runs.",
    )
    consumer_session_timeout_s: float = _setting(
        10.0,
        "How long the broker waits without a heartbeat from a worker before it declares the "
        "worker dead and hands its partitions to the others: failover takes about this long "
        "(measured in docs/cluster-ops.md). Shorter fails over faster but evicts a worker "
        "whose event loop stalls this long. Kafka brokers accept 6 to 1800 s by default "
        "(group.min/max.session.timeout.ms).",
    )
    consumer_heartbeat_s: float = _setting(
        3.0,
        "How often a worker tells the broker it is alive; at most a third of "
        "consumer_session_timeout_s, so two lost heartbeats do not evict it.",
    )
    metrics_port: int = _setting(
        0,
        "Port of each worker's Prometheus metrics endpoint (http://HOST:PORT/metrics): 0 "
        "picks a free port and records it (`convergence cluster status` shows it); -1 turns "
        "the endpoint off. `cluster up` gives worker i the port metrics_port + i.",
    )
    metrics_host: str = _setting(
        "127.0.0.1",
        "Address the metrics endpoint listens on; 0.0.0.0 lets a Prometheus server on another "
        "host scrape it.",
    )
    models_dir: Path = _setting(Path(""), "Where trained models are stored; empty = <data_dir>/models.")
    meter_model: str = _setting(
        "auto",
        "Convergence fusion: 'auto' uses the latest trained LightGBM meter model when one "
        "exists and the transparent rule otherwise; 'rules' always uses the rule; "
        "'meter@N' pins a version.",
    )
    regime_model: str = _setting(
        "auto",
        "HMM regime evidence for market price stations: 'auto' uses the latest trained "
        "price-kind 'regime' model when one exists; 'none' disables it; 'regime@N' pins a version.",
    )

    _sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    # -- derived values -------------------------------------------------
    @property
    def db_url(self) -> str:
        """The SurrealDB URL in force (``db`` or the embedded file under ``data_dir``)."""
        return self.db or f"surrealkv://{self.data_dir / 'db'}"

    @property
    def models_path(self) -> Path:
        """Directory of the model registry."""
        return self.models_dir if str(self.models_dir) not in ("", ".") else self.data_dir / "models"

    def topic(self, name: str) -> str:
        """Full Kafka topic name for a logical topic (``events``, ``alerts``, ...)."""
        return f"{self.topic_prefix}-{name}"

    def source_of(self, name: str) -> str:
        """Where the value of setting ``name`` came from."""
        return self._sources.get(name, "default")

    def describe(self) -> list[dict[str, str]]:
        """Every setting as ``{name, value, source, env, doc}`` rows, for ``config show``.

        Values are the ones in force: ``db`` and ``models_dir`` show what an empty value
        resolves to, secrets (``db_password``, a password inside ``db``) are masked.

        >>> rows = {r["name"]: r["value"] for r in load_settings(env={
        ...     "CONVERGENCE_DB_PASSWORD": "hunter2", "CONVERGENCE_DATA_DIR": "/d"},
        ...     config_path=None).describe()}
        >>> rows["db_password"], rows["db"], rows["models_dir"]
        ('********', 'surrealkv:///d/db', '/d/models')
        """
        shown = {"db": redact_url(self.db_url), "models_dir": str(self.models_path),
                 "db_password": "********" if self.db_password else ""}
        rows = []
        for f in fields():
            rows.append(
                {
                    "name": f.name,
                    "value": shown.get(f.name, str(getattr(self, f.name))),
                    "source": self.source_of(f.name),
                    "env": env_name(f.name),
                    "doc": f.metadata["doc"],
                }
            )
        return rows

    def replace(self, **overrides: Any) -> Settings:
        """A copy with explicit overrides (recorded with source ``override``)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        return _build(
            {**{f.name: getattr(self, f.name) for f in fields()}, **clean},
            {**self._sources, **{k: "override" for k in clean}},
        )


def redact_url(url: str) -> str:
    """The URL without any ``user:password@`` part, safe for logs, errors and screens.

    >>> redact_url("ws://root:hunter2@db.example:8000/rpc")
    'ws://***@db.example:8000/rpc'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return f"{scheme}{sep}{host}{slash}{path}"


def fields() -> list[dataclasses.Field[Any]]:
    """The declared settings (excluding private bookkeeping)."""
    return [f for f in dataclasses.fields(Settings) if not f.name.startswith("_")]


def env_name(name: str) -> str:
    """Environment variable that sets ``name``."""
    return f"CONVERGENCE_{name.upper()}"


def _fix_hint(name: str, origin: str) -> str:
    """How to repair a bad value, for where it came from."""
    if origin.startswith("file "):
        return f"fix {name} in {origin[5:]}"
    if origin.startswith("env "):
        return f"fix or unset {origin[4:]}"
    if origin == "command line":
        return "fix the command-line flag"
    return f"fix it or unset {env_name(name)}"


def _coerce(name: str, raw: Any, origin: str) -> Any:
    """``raw`` from ``origin`` as the declared type of setting ``name``.

    Text (environment variables, flags) is parsed; a TOML file's values must already
    have the right type (``seed = 1.5`` is not an integer, ``db = 5`` is not text).
    """
    f = next(f for f in fields() if f.name == name)
    kind = f.type if isinstance(f.type, type) else str(f.type)
    typed = origin.startswith("file ")
    try:
        if kind in (int, "int"):
            if isinstance(raw, bool) or (typed and not isinstance(raw, int)):
                raise ValueError
            return int(raw)
        if kind in (float, "float"):
            if isinstance(raw, bool) or (typed and not isinstance(raw, int | float)):
                raise ValueError
            return float(raw)
        if typed and not isinstance(raw, str):
            raise ValueError
        if kind in (Path, "Path"):
            return Path(str(raw)).expanduser()
        return str(raw)
    except (TypeError, ValueError, OverflowError):
        kind_word = {"int": "whole number", "float": "number", "Path": "path (a string)",
                     "str": "string"}.get(getattr(kind, "__name__", str(kind)), str(kind))
        raise SettingsError(
            f"setting {name!r} from {origin} has value {_clip(raw)}, which is not a valid "
            f"{kind_word}; {_fix_hint(name, origin)}"
        ) from None


def _clip(value: Any, n: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


#: SurrealDB URL schemes, the one list both settings validation and the store use.
#: Embedded engines run in this process; file ones keep their data under a path.
DB_EMBEDDED_SCHEMES: frozenset[str] = frozenset({"mem", "memory", "surrealkv",
                                                  "surrealkv+versioned"})
DB_FILE_SCHEMES: frozenset[str] = frozenset({"surrealkv", "surrealkv+versioned"})
DB_REMOTE_SCHEMES: frozenset[str] = frozenset({"ws", "wss", "http", "https"})
DB_SCHEMES: frozenset[str] = DB_EMBEDDED_SCHEMES | DB_REMOTE_SCHEMES


def db_scheme(url: str) -> str:
    """The scheme of a SurrealDB URL, lower-cased; ``""`` when it has none.

    >>> db_scheme("SurrealKV://data/db"), db_scheme("data/db")
    ('surrealkv', '')
    """
    return url.split("://", 1)[0].lower() if "://" in url else ""


#: Model settings: logical name -> the value that turns the model off.
MODEL_OFF: dict[str, str] = {"meter": "rules", "regime": "none"}


def model_spec(value: str, name: str) -> int | Literal["off"] | None:
    """Parse a model setting (``meter_model``, ``regime_model``): ``auto`` -> ``None``
    (the latest trained version, if any), ``NAME@N`` -> ``N`` (pinned), the off word
    of :data:`MODEL_OFF` -> ``"off"``. Raises :class:`ValueError` otherwise.

    >>> model_spec("auto", "meter"), model_spec("meter@0", "meter"), model_spec("none", "regime")
    (None, 0, 'off')
    """
    off = MODEL_OFF[name]
    if value == "auto":
        return None
    if value == off:
        return "off"
    prefix = f"{name}@"
    if value.startswith(prefix) and value[len(prefix):].isdigit():
        return int(value[len(prefix):])
    raise ValueError(f"use auto, {off} or {name}@N")


#: Largest seed: LightGBM and the HMM trainer take 31-bit seeds.
MAX_SEED = 2**31 - 1
#: Shortest tick. Ingest keeps cells for every tick between the oldest and the newest
#: open event, per station: at 1 ms a second of events is already 1,000 ticks' cells.
MIN_TICK_S = 0.001
MAX_STATIONS = 100_000


def check_db_url(db: str) -> str | None:
    """What is wrong with a SurrealDB URL (``None``: usable; ``""`` means the default).

    >>> check_db_url("mem://"), check_db_url("surrealkv:///var/db") is None
    (None, True)
    >>> check_db_url("mem://anything")
    "mem:// is a throwaway in-memory database and takes no path ('anything'); use mem:// ..."
    """
    if db == "":
        return None
    scheme = db_scheme(db)
    if scheme not in DB_SCHEMES:
        return "use surrealkv://PATH, mem://, or ws://HOST:PORT"
    rest = db.split("://", 1)[1]
    if scheme in DB_FILE_SCHEMES and not rest.strip():
        return (f"{scheme}:// needs the path of the database directory, e.g. "
                f"{scheme}:///var/lib/convergence/db")
    if scheme in DB_EMBEDDED_SCHEMES - DB_FILE_SCHEMES and rest:
        return (f"{scheme}:// is a throwaway in-memory database and takes no path "
                f"({_clip(rest, 40)}); use {scheme}:// alone, or surrealkv://{rest} to keep the data")
    if scheme in DB_REMOTE_SCHEMES and not rest.split("/", 1)[0].strip():
        return f"{scheme}:// needs a server address, e.g. {scheme}://127.0.0.1:8000"
    return None


def _validate(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    def need(cond: bool, name: str, what: str) -> None:
        if not cond:
            origin = sources.get(name, "default")
            where = "" if origin == "default" else f" (from {origin.replace('override', 'the command line')})"
            raise SettingsError(f"setting {name!r} = {_clip(values[name])}{where} is invalid: {what}")

    def finite(name: str) -> bool:
        return math.isfinite(values[name])

    need(1 <= values["stations"] <= MAX_STATIONS, "stations",
         f"need at least 1 station and at most {MAX_STATIONS:,}")
    need(0 <= values["seed"] <= MAX_SEED, "seed",
         f"a seed is a whole number from 0 to {MAX_SEED} (LightGBM and the HMM trainer take "
         "31-bit seeds)")
    need(finite("tick_s") and values["tick_s"] > 0, "tick_s",
         "tick length must be > 0 seconds and finite")
    need(MIN_TICK_S <= values["tick_s"] <= 86400, "tick_s",
         f"a tick must last from {MIN_TICK_S:g} s to one day (86400 s): every tick between two "
         "events gets its own cells for every station, so a shorter tick needs more memory "
         "than any machine has")
    need(finite("allowed_lateness_s") and values["allowed_lateness_s"] >= 0, "allowed_lateness_s",
         "must be >= 0 seconds and finite")
    need(1 <= values["window_ticks"] <= 100_000, "window_ticks", "must be from 1 to 100000 ticks")
    need(values["max_text_chars"] >= 0, "max_text_chars", "must be >= 0")
    for name in ("max_future_s", "max_age_s"):
        need(finite(name) and values[name] >= 0, name, "must be >= 0 seconds and finite")
    for model in MODEL_OFF:
        try:
            model_spec(values[f"{model}_model"], model)
        except ValueError as exc:
            need(False, f"{model}_model", str(exc))
    need(values["max_event_bytes"] >= 256, "max_event_bytes", "must be >= 256 bytes")
    need(1.0 <= values["consumer_session_timeout_s"] <= 1800.0, "consumer_session_timeout_s",
         "must be between 1 and 1800 seconds (brokers accept 6-1800 s by default)")
    need(0 < values["consumer_heartbeat_s"] <= values["consumer_session_timeout_s"] / 3,
         "consumer_heartbeat_s",
         f"must be > 0 and at most a third of consumer_session_timeout_s "
         f"({values['consumer_session_timeout_s']:g} s)")
    need(1 <= values["partitions"] <= 1024, "partitions", "must be from 1 to 1024")
    need(-1 <= values["metrics_port"] <= 65535, "metrics_port",
         "use a TCP port (1-65535), 0 to pick a free one, or -1 for no endpoint")
    db = values["db"]
    if db == "" and sources.get("db") == "override":
        need(False, "db", "--db is empty; give a database URL (surrealkv://PATH, mem://, "
                          "ws://HOST:PORT) or leave --db out for the default")
    problem = check_db_url(db)
    if problem is not None:
        need(False, "db", problem)


def _build(values: dict[str, Any], sources: dict[str, str]) -> Settings:
    _validate(values, sources)
    return Settings(**values, _sources=dict(sources))


def load_settings(
    *,
    env: Mapping[str, str] | None = None,
    config_path: Path | str | bool | None = True,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Layer defaults, TOML file, environment and overrides into a :class:`Settings`.

    ``config_path=True`` means: ``$CONVERGENCE_CONFIG`` if set, else ``./convergence.toml``
    if it exists. ``None``/``False`` disables the file. Raises :class:`SettingsError`
    with an actionable message on unknown keys or bad values.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {f.name: f.default for f in fields()}
    sources: dict[str, str] = {}
    path: Path | None = None
    if config_path is True:
        if env.get("CONVERGENCE_CONFIG"):
            path = Path(env["CONVERGENCE_CONFIG"]).expanduser()
            if not path.exists():
                raise SettingsError(
                    f"CONVERGENCE_CONFIG points at {path}, which does not exist; "
                    "create it or unset CONVERGENCE_CONFIG"
                )
        elif Path("convergence.toml").exists():
            path = Path("convergence.toml")
    elif config_path:
        path = Path(str(config_path))
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {path}: {exc}") from None
        table = data.get("convergence", data)
        if not isinstance(table, dict):
            raise SettingsError(f"config file {path}: 'convergence' must be a table of settings "
                                "([convergence] followed by name = value lines)")
        known = {f.name for f in fields()}
        for key, raw in table.items():
            if key not in known:
                raise SettingsError(
                    f"unknown setting {key!r} in {path}; known settings: {', '.join(sorted(known))}"
                )
            values[key] = _coerce(key, raw, f"file {path}")
            sources[key] = f"file {path}"
    for f in fields():
        name = env_name(f.name)
        if name in env:
            values[f.name] = _coerce(f.name, env[name], f"env {name}")
            sources[f.name] = f"env {name}"
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        values[key] = _coerce(key, raw, "command line")
        sources[key] = "override"
    return _build(values, sources)
