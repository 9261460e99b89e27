"""Fleets declared in TOML: which stations exist, what each watches, how often it samples.

This module owns the fleet *definition* and turning it into running agents:

* :class:`StationSpec` / :class:`SourceSpec`: one ``[[station]]`` table, validated;
* :func:`load_fleet` / :func:`loads_fleet`: read a fleet file; every problem is reported
  at once in one :class:`FleetError` naming the file, the station (number and id) and
  the field;
* :func:`render_fleet` / :func:`default_fleet_toml`: write a fleet file (the default
  synthetic fleet is generated on demand by ``convergence stations init`` rather than
  shipped, so it cannot drift from :func:`~.scenario.default_fleet`);
* :func:`split_fleet` / :func:`select`: the share of a fleet one process runs;
* :func:`fleet_scenario` / :func:`fleet_world`, :func:`build_source`, :func:`build_fleet`: the synthetic
  world behind the synthetic stations, the source factory, the agents.

The file
--------
::

    seed = 7                       # optional: seed of the synthetic scenario

    [[station]]
    id = "news-eu-west-000"        # [A-Za-z0-9_.:-]{1,64}, unique in the fleet
    name = "Reuters EU"            # optional, for people
    source_kind = "osint_news"     # osint_news | osint_social | market_price | market_volume | sensor
    region = "eu-west"             # default "unknown"
    group = "wire-00"              # correlation group (shared upstream); default: its own id
    interval_s = 0.5               # sampling interval, s; default 0.5 (60 for rss and json)

    [station.thresholds]           # optional, name = number (changed later by set_thresholds)
    surge = 4.0

    [station.source]
    type = "synthetic"             # synthetic | replay | rss | json
    rate_per_s = 1.5               # synthetic: background events per second

Other source types: ``replay`` takes ``path`` (relative to the fleet file) and ``speed``
(data seconds per wall second, or ``"max"``); ``rss`` takes ``url``; ``json`` takes ``url``
and a ``mapping`` table (see :mod:`~convergence.ground_stations.http_json`). Further keys
of a ``[station.source]`` table are handed to the source's constructor by name
(``timeout_s``, ``headers``, ``fmt``...), checked against its signature when the fleet
is built. Those sources are imported only when a fleet uses them, so a build without
them still runs synthetic fleets.

Examples
--------
The default fleet survives a round trip through TOML:

>>> from convergence.ground_stations.scenario import default_fleet
>>> text = default_fleet_toml(12, seed=3)
>>> spec = loads_fleet(text, origin="fleet.toml")
>>> [s.info for s in spec.stations] == default_fleet(12, 3), spec.seed
(True, 3)
>>> loads_fleet(render_fleet(spec.stations, seed=3)).stations == spec.stations
True

Mistakes are reported together, each with where it is:

>>> bad = '''
... [[station]]
... id = "a"
... source_kind = "radio"
... interval_s = "fast"
... [station.source]
... type = "synthetic"
... [[station]]
... id = "a"
... source_kind = "sensor"
... [station.source]
... type = "carrier-pigeon"
... '''
>>> try:
...     loads_fleet(bad, origin="fleet.toml")
... except FleetError as exc:
...     print(exc)
fleet.toml: 4 problems:
  station #1 (id 'a'): source_kind: 'radio' is not one of osint_news, ..., sensor
  station #1 (id 'a'): interval_s: must be a number of seconds > 0 (at most 86400), got 'fast'
  station #2 (id 'a'): id: 'a' is already used by station #1
  station #2 (id 'a'): source.type: 'carrier-pigeon' is not one of synthetic, replay, rss, json

Splitting a fleet over processes is stable and loses nobody:

>>> ids = [s.station_id for s in spec.stations]
>>> parts = [split_fleet(spec.stations, i, 3) for i in (1, 2, 3)]
>>> sorted(s.station_id for p in parts for s in p) == sorted(ids)
True
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import inspect
import math
import re
import time
import tomllib
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convergence.ground_stations.agent import (
    DEFAULT_POLL_TIMEOUT_S,
    POLL_TIMEOUT_MARGIN_S,
    Fleet,
    Sink,
    StateHook,
    StationAgent,
)
from convergence.ground_stations.base import Source
from convergence.ground_stations.scenario import (
    FLEET_MIX,
    Scenario,
    SyntheticWorld,
    default_fleet,
    default_scenario,
)
from convergence.schema import SourceKind
from convergence.stations import StationInfo

SOURCE_TYPES = ("synthetic", "replay", "rss", "json")
DEFAULT_INTERVAL_S = 0.5
#: a feed on someone else's server is polled once a minute unless the file says otherwise
DEFAULT_INTERVALS_S: dict[str, float] = {"synthetic": DEFAULT_INTERVAL_S, "replay": DEFAULT_INTERVAL_S,
                                         "rss": 60.0, "json": 60.0}
MAX_INTERVAL_S = 86_400.0
MAX_ERRORS_SHOWN = 25

#: source type -> (module, class): imported only when a fleet uses the type
_LAZY_SOURCES: dict[str, tuple[str, str]] = {
    "replay": ("convergence.ground_stations.replay", "FileReplaySource"),
    "rss": ("convergence.ground_stations.rss", "RssSource"),
    "json": ("convergence.ground_stations.http_json", "HttpJsonSource"),
}
_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")  # the edge's rule for station_id
_STATION_KEYS = ("id", "name", "source_kind", "region", "group", "interval_s", "thresholds", "source")
_TOP_KEYS = ("seed", "station")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class FleetError(ValueError):
    """A fleet file (or a fleet built from it) is unusable; the message lists every problem."""

    def __init__(self, origin: str, problems: Sequence[str]) -> None:
        self.origin = origin
        self.problems = list(problems)
        shown = self.problems[:MAX_ERRORS_SHOWN]
        more = len(self.problems) - len(shown)
        if len(self.problems) == 1:
            text = f"{origin}: {self.problems[0]}"
        else:
            text = f"{origin}: {len(self.problems)} problems:\n" + "\n".join(f"  {p}" for p in shown)
            if more:
                text += f"\n  ... and {more} more"
        super().__init__(text)


@dataclass(frozen=True)
class SourceSpec:
    """What a station watches: ``type`` plus that type's options (``path``, ``url``...)."""

    type: str
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    def describe(self) -> str:
        """One short line for people (``convergence stations list``)."""
        o = self.options
        if self.type == "synthetic":
            return f"synthetic {o.get('rate_per_s', 0.0):g}/s"
        if self.type == "replay":
            return f"replay {o.get('path', '?')} x{o.get('speed', 60)}"
        return f"{self.type} {o.get('url', '?')}"


@dataclass(frozen=True)
class StationSpec:
    """One declared station. ``index`` (1-based) and ``origin`` only serve error messages."""

    station_id: str
    source_kind: SourceKind
    source: SourceSpec
    region: str = "unknown"
    group: str = ""
    name: str = ""
    interval_s: float = DEFAULT_INTERVAL_S
    thresholds: dict[str, float] = field(default_factory=dict, hash=False)
    index: int = field(default=0, compare=False)
    origin: str = field(default="<fleet>", compare=False)

    @property
    def info(self) -> StationInfo:
        """The station as the pipeline knows it (synthetic stations carry their rate)."""
        rate = 0.0
        if self.source.type == "synthetic":
            rate = float(self.source.options.get("rate_per_s", FLEET_MIX[self.source_kind][1]))
        return StationInfo(self.station_id, self.source_kind, self.region, self.group, self.name, rate)

    @property
    def where(self) -> str:
        return f"station #{self.index} (id {self.station_id!r})"


@dataclass(frozen=True)
class FleetSpec:
    """A loaded fleet file: its stations in file order and its optional scenario seed."""

    stations: list[StationSpec]
    seed: int | None = None
    origin: str = "<fleet>"

    def ids(self) -> list[str]:
        return [s.station_id for s in self.stations]


# -- reading ---------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Collects problems for one station so all of them are reported together."""

    def __init__(self, problems: list[str], where: str) -> None:
        self.problems = problems
        self.where = where

    def bad(self, fld: str, msg: str) -> None:
        self.problems.append(f"{self.where}: {fld}: {msg}")

    def text(self, table: Mapping[str, Any], key: str, default: str | None, *, max_len: int = 200,
             fld: str | None = None) -> str | None:
        name = fld or key
        if key not in table:
            if default is None:
                self.bad(name, "is required")
            return default
        v = table[key]
        if not isinstance(v, str) or not v.strip():
            self.bad(name, f"must be a non-empty string, got {v!r}")
            return default
        if len(v) > max_len:
            self.bad(name, f"is {len(v)} characters; at most {max_len}")
            return default
        return v


def _parse_source(chk: _Checker, raw: Any, base_dir: Path | None) -> SourceSpec | None:
    if not isinstance(raw, dict):
        chk.bad("source", "a [station.source] table with type = synthetic | replay | rss | json "
                          "is required" if raw is None else f"must be a table, got {raw!r}")
        return None
    typ = raw.get("type")
    if typ not in SOURCE_TYPES:
        chk.bad("source.type", f"{typ!r} is not one of {', '.join(SOURCE_TYPES)}"
                if "type" in raw else f"is required (one of {', '.join(SOURCE_TYPES)})")
        return None
    opts = {k: v for k, v in raw.items() if k != "type"}
    if typ == "synthetic":
        for k in opts:
            if k != "rate_per_s":
                chk.bad(f"source.{k}", "is not an option of synthetic sources (only rate_per_s)")
        if "rate_per_s" in opts and not (_is_number(opts["rate_per_s"]) and opts["rate_per_s"] >= 0):
            chk.bad("source.rate_per_s", f"must be a number >= 0, got {opts['rate_per_s']!r}")
    elif typ == "replay":
        path = chk.text(opts, "path", None, max_len=4096, fld="source.path")
        if path is not None:
            p = Path(path).expanduser()
            # relative to the fleet file, so a fleet directory can be moved as a whole
            opts["path"] = str(p if p.is_absolute() or base_dir is None else base_dir / p)
        speed = opts.get("speed", 60.0)
        if not (speed == "max" or (_is_number(speed) and speed > 0)):
            chk.bad("source.speed", "must be data seconds per wall second (> 0) or \"max\", "
                                    f"got {speed!r}")
    else:
        url = chk.text(opts, "url", None, max_len=4096, fld="source.url")
        if url is not None and not url.startswith(("http://", "https://")):
            chk.bad("source.url", f"{url!r} is not an http:// or https:// URL")
        if typ == "json" and "mapping" in opts:
            m = opts["mapping"]
            if not isinstance(m, dict) or not all(isinstance(v, str) for v in m.values()):
                chk.bad("source.mapping", "must be a table of event field = \"path.in.item\" or "
                                          f"\"=constant\", got {m!r}")
    return SourceSpec(str(typ), opts)


def _parse_station(raw: Any, index: int, origin: str, base_dir: Path | None,
                   problems: list[str]) -> StationSpec | None:
    if not isinstance(raw, dict):
        problems.append(f"station #{index}: must be a [[station]] table, got {raw!r}")
        return None
    sid_raw = raw.get("id")
    chk = _Checker(problems, f"station #{index}" + (f" (id {sid_raw!r})" if isinstance(sid_raw, str)
                                                   else ""))
    n_before = len(problems)
    for k in raw:
        if k not in _STATION_KEYS:
            chk.bad(k, f"is not a station field (fields: {', '.join(_STATION_KEYS)})")
    sid = chk.text(raw, "id", None, max_len=64)
    if sid is not None and not _ID_RE.match(sid):
        chk.bad("id", f"{sid!r} must match [A-Za-z0-9_.:-]{{1,64}} (the event schema's rule)")
    kind_raw = raw.get("source_kind")
    kinds = [k.value for k in SourceKind]
    if kind_raw not in kinds:
        chk.bad("source_kind", f"{kind_raw!r} is not one of {', '.join(kinds)}"
                if "source_kind" in raw else f"is required (one of {', '.join(kinds)})")
    region = chk.text(raw, "region", "unknown", max_len=64)
    group = chk.text(raw, "group", "", max_len=64) if "group" in raw else ""
    name = chk.text(raw, "name", "", max_len=200) if "name" in raw else ""
    src_raw = raw.get("source")
    src_type = src_raw.get("type") if isinstance(src_raw, dict) else None
    interval = raw.get("interval_s", DEFAULT_INTERVALS_S.get(str(src_type), DEFAULT_INTERVAL_S))
    if not (_is_number(interval) and 0 < interval <= MAX_INTERVAL_S):
        chk.bad("interval_s", f"must be a number of seconds > 0 (at most {MAX_INTERVAL_S:g}), "
                              f"got {interval!r}")
    thresholds: dict[str, float] = {}
    th = raw.get("thresholds", {})
    if not isinstance(th, dict):
        chk.bad("thresholds", f"must be a table of name = number, got {th!r}")
    else:
        for k, v in th.items():
            if _is_number(v):
                thresholds[k] = float(v)
            else:
                chk.bad(f"thresholds.{k}", f"must be a number, got {v!r}")
    source = _parse_source(chk, src_raw, base_dir)
    if len(problems) > n_before or sid is None or source is None:
        return None
    return StationSpec(sid, SourceKind(str(kind_raw)), source, region or "unknown", group or "",
                       name or "", float(interval), thresholds, index, origin)


def loads_fleet(text: str, *, origin: str = "<fleet>", base_dir: Path | None = None) -> FleetSpec:
    """Parse and validate fleet TOML (see the module docstring); raises :class:`FleetError`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(origin, [f"is not valid TOML: {exc}"]) from None
    problems: list[str] = []
    for k in doc:
        if k not in _TOP_KEYS:
            hint = "; stations are [[station]] tables" if k in ("stations", "fleet") else ""
            problems.append(f"top level: {k!r} is not a fleet setting (settings: "
                            f"{', '.join(_TOP_KEYS)}){hint}")
    seed = doc.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        problems.append(f"top level: seed must be an integer, got {seed!r}")
        seed = None
    raw_stations = doc.get("station")
    if isinstance(raw_stations, dict):
        problems.append("stations are declared with [[station]] (double brackets: one table per "
                        "station), found a single [station] table")
        raise FleetError(origin, problems)
    if not isinstance(raw_stations, list) or not raw_stations:
        problems.append("declares no stations: add [[station]] tables (`convergence stations "
                        "init --out FILE` writes an example)")
        raise FleetError(origin, problems)
    specs: list[StationSpec] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(raw_stations, start=1):
        sid = raw.get("id") if isinstance(raw, dict) else None
        duplicate = isinstance(sid, str) and sid in first_seen
        if duplicate:
            problems.append(f"station #{i} (id {sid!r}): id: {sid!r} is already used by "
                            f"station #{first_seen[str(sid)]}")
        elif isinstance(sid, str):
            first_seen[sid] = i
        spec = _parse_station(raw, i, origin, base_dir, problems)
        if spec is not None and not duplicate:
            specs.append(spec)
    if problems:
        # Keep file order: problems of station #2 before #3, whatever check found them.
        problems.sort(key=_problem_order)
        raise FleetError(origin, problems)
    return FleetSpec(specs, seed, origin)


def _problem_order(p: str) -> tuple[int, int]:
    m = re.match(r"station #(\d+)", p)
    return (1, int(m[1])) if m else (0, 0)


def load_fleet(path: str | Path) -> FleetSpec:
    """Read and validate a fleet file; raises :class:`FleetError` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FleetError(str(p), ["no such file (write one with `convergence stations init "
                                  f"--out {p}`)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(str(p), [f"cannot be read: {exc}"]) from None
    return loads_fleet(text, origin=str(p), base_dir=p.resolve().parent)


# -- writing ---------------------------------------------------------------------------


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else _toml_str(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to TOML")


def render_fleet(stations: Iterable[StationSpec], *, seed: int | None = None,
                 comment: str = "") -> str:
    """Fleet TOML that :func:`loads_fleet` reads back into equal specs."""
    lines = [f"# {c}".rstrip() for c in comment.splitlines()]
    if seed is not None:
        lines.append(f"seed = {int(seed)}")
    for s in stations:
        lines += ["", "[[station]]", f"id = {_toml_str(s.station_id)}"]
        if s.name:
            lines.append(f"name = {_toml_str(s.name)}")
        lines.append(f"source_kind = {_toml_str(s.source_kind.value)}")
        lines.append(f"region = {_toml_str(s.region)}")
        if s.group:
            lines.append(f"group = {_toml_str(s.group)}")
        lines.append(f"interval_s = {_toml_value(float(s.interval_s))}")
        if s.thresholds:
            lines.append("[station.thresholds]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in s.thresholds.items()]
        lines += ["[station.source]", f"type = {_toml_str(s.source.type)}"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in s.source.options.items()]
    return "\n".join(lines) + "\n"


def default_specs(n_stations: int, seed: int, interval_s: float = DEFAULT_INTERVAL_S) -> list[StationSpec]:
    """The default synthetic fleet (:func:`~.scenario.default_fleet`) as specs."""
    return [StationSpec(i.station_id, i.kind, SourceSpec("synthetic", {"rate_per_s": i.rate_per_s}),
                        i.region, i.group, i.name, interval_s, {}, n, "<default fleet>")
            for n, i in enumerate(default_fleet(n_stations, seed), start=1)]


def default_fleet_toml(n_stations: int, seed: int, interval_s: float = DEFAULT_INTERVAL_S) -> str:
    """The default synthetic fleet of ``n_stations`` as a fleet file."""
    comment = (f"Convergence ground-station fleet: the default synthetic fleet, {n_stations} "
               f"stations, seed {seed}.\nWritten by `convergence stations init`; run it with "
               "`convergence stations run --fleet FILE`.\nEdit freely: see "
               "convergence.ground_stations.fleet for every field.")
    return render_fleet(default_specs(n_stations, seed, interval_s), seed=seed, comment=comment)


# -- choosing a share of the fleet -----------------------------------------------------


def select(ids: Sequence[str], only: str | None) -> list[int]:
    """Positions of ``ids`` matching ``only``: comma-separated ids or shell patterns.

    >>> select(["news-eu-000", "news-eu-001", "sensor-apac-000"], "news-*,sensor-apac-000")
    [0, 1, 2]
    >>> select(["news-eu-000", "social-eu-000"], "social-*")
    [1]
    """
    if not only:
        return list(range(len(ids)))
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [i for i, sid in enumerate(ids) if any(fnmatch.fnmatchcase(sid, p) for p in pats)]


def part_of(station_id: str, parts: int) -> int:
    """Which of ``parts`` (1-based) a station belongs to: a hash of its id, so adding or
    removing other stations never moves it."""
    h = int.from_bytes(hashlib.blake2b(station_id.encode(), digest_size=8).digest(), "big")
    return h % parts + 1


def split_fleet(stations: Sequence[StationSpec], part: int, parts: int) -> list[StationSpec]:
    """The stations process ``part`` of ``parts`` runs (1-based, as ``--part 2/3``)."""
    if parts < 1 or not 1 <= part <= parts:
        raise ValueError(f"part {part} of {parts}: need 1 <= part <= parts, e.g. --part 1/{max(parts, 2)}")
    return [s for s in stations if part_of(s.station_id, parts) == part]


# -- building --------------------------------------------------------------------------


def fleet_scenario(stations: Sequence[StationSpec], seed: int, horizon_s: float = 3600.0) -> Scenario | None:
    """The synthetic scenario behind the fleet's synthetic stations (``None`` when it has none).

    Episodes are drawn exactly as :func:`~.scenario.default_scenario` draws them, so the
    default fleet loaded from TOML plays the same scenario as the built-in one. Build it
    from the *whole* fleet, even in a process that runs only a part, so every process
    plays the same episodes. A fleet without OSINT stations gets no lone-surge decoys.
    """
    fleet = [s.info for s in stations if s.source.type == "synthetic"]
    if not fleet:
        return None
    return default_scenario(seed=seed, horizon_s=horizon_s, fleet=fleet)


def fleet_world(stations: Sequence[StationSpec], seed: int,
                horizon_s: float = 3600.0) -> SyntheticWorld | None:
    """:func:`fleet_scenario` as the world synthetic sources sample (``None`` without any)."""
    scenario = fleet_scenario(stations, seed, horizon_s)
    return SyntheticWorld(scenario) if scenario is not None else None


_WORLD_INDEX: weakref.WeakKeyDictionary[SyntheticWorld, dict[str, int]] = weakref.WeakKeyDictionary()


def _world_index(world: SyntheticWorld) -> dict[str, int]:
    idx = _WORLD_INDEX.get(world)
    if idx is None:
        idx = {info.station_id: i for i, info in enumerate(world.scenario.fleet)}
        _WORLD_INDEX[world] = idx
    return idx


def source_class(type_: str) -> type[Source]:
    """The class behind a non-synthetic source type, imported now (see module docstring)."""
    if type_ not in _LAZY_SOURCES:
        raise ValueError(f"source type {type_!r} is not one of {', '.join(SOURCE_TYPES)}")
    module, name = _LAZY_SOURCES[type_]
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"source type {type_!r} is not available in this build "
                         f"({module}.{name}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise ValueError(f"source type {type_!r} is not available in this build "
                         f"({module}.{name} is not a Source)")
    return cls


def build_source(spec: StationSpec, world: SyntheticWorld | None, t0_s: float, seed: int) -> Source:
    """The source one station polls; raises ``ValueError`` naming the station and the field.

    ``world`` is the synthetic world of the whole fleet (:func:`fleet_scenario`); ``t0_s``
    is scenario time 0 on the station clock (and the start of a replay).
    """
    if spec.source.type == "synthetic":
        if world is None or spec.station_id not in _world_index(world):
            raise ValueError(f"{spec.where}: source: synthetic station is not in the synthetic "
                             "world (build it with fleet_scenario over the whole fleet)")
        from convergence.ground_stations.synthetic import SyntheticSource

        return SyntheticSource(world, _world_index(world)[spec.station_id], t0_s, seed)
    cls = source_class(spec.source.type)
    kwargs: dict[str, Any] = dict(spec.source.options)
    if kwargs.get("speed") == "max":
        kwargs["speed"] = None  # FileReplaySource: as fast as possible
    kwargs["station"] = spec.info
    params = inspect.signature(cls).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "start_s" in params and "start_s" not in kwargs:
        kwargs["start_s"] = t0_s  # processes sharing --t0 start a replay together
    if not open_kwargs:
        unknown = sorted(k for k in kwargs if k not in params)
        if unknown:
            accepted = [p for p in params if p not in ("self", "station")]
            raise ValueError(f"{spec.where}: source.{unknown[0]}: not an option of {spec.source.type} "
                             f"sources (options: {', '.join(accepted)})")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, OSError) as exc:
        raise ValueError(f"{spec.where}: source: {spec.source.type} source rejected its options: "
                         f"{exc}") from None


def poll_timeout_of(source: Source) -> float:
    """How long the agent lets one poll of ``source`` run: a network source's own HTTP
    ``timeout_s`` plus :data:`~.agent.POLL_TIMEOUT_MARGIN_S` (to handle the answer), so its
    ``timeout_s`` is the setting in force; the agent's default for other sources.

    >>> from convergence.ground_stations.base import Source
    >>> class Slow(Source):
    ...     timeout_s = 30
    ...     async def poll(self, now_s): return []
    >>> poll_timeout_of(Slow())
    35.0
    """
    timeout = getattr(source, "timeout_s", None)
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        return float(timeout) + POLL_TIMEOUT_MARGIN_S
    return DEFAULT_POLL_TIMEOUT_S


def build_fleet(stations: Sequence[StationSpec], sink: Sink | None, *, world: SyntheticWorld | None,
                t0_s: float, seed: int, interval_s: float | None = None,
                clock: Callable[[], float] = time.time, on_state: StateHook | None = None) -> Fleet:
    """Agents for ``stations`` (each with its interval and thresholds), all sending to ``sink``.

    ``interval_s`` overrides every station's interval. A network source's polls may run
    its ``timeout_s`` plus a margin (:func:`poll_timeout_of`). Every station that cannot be
    built is reported in one :class:`FleetError`. With ``sink`` None, attach one
    (:meth:`Fleet.attach`) before running the fleet.
    """
    agents: list[StationAgent] = []
    problems: list[str] = []
    for spec in stations:
        try:
            src = build_source(spec, world, t0_s, seed)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        agents.append(StationAgent(spec.info, src, sink, interval_s=interval_s or spec.interval_s,
                                   clock=clock, on_state=on_state, seed=seed,
                                   thresholds=dict(spec.thresholds),
                                   poll_timeout_s=poll_timeout_of(src)))
    if problems:
        origin = stations[0].origin if stations else "<fleet>"
        raise FleetError(origin, problems)
    return Fleet(agents)


def parse_part(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: this process runs part 2 of a fleet split in 3 (1-based).

    >>> parse_part("2/3")
    (2, 3)
    >>> parse_part("3/2")
    Traceback (most recent call last):
    ...
    ValueError: --part '3/2': the part must be between 1 and 2, e.g. --part 1/2
    """
    head, sep, tail = text.partition("/")
    try:
        part, parts = int(head), int(tail)
    except ValueError:
        part = parts = 0
    if not sep or parts < 1:
        raise ValueError(f"--part {text!r}: expected PART/PARTS such as 1/3 (this process runs "
                         "the first of three parts)")
    if not 1 <= part <= parts:
        raise ValueError(f"--part {text!r}: the part must be between 1 and {parts}, e.g. --part 1/{parts}")
    return part, parts


def choose(specs: Sequence[StationSpec], *, only: str | None,
           part: tuple[int, int] | None) -> list[StationSpec]:
    """The stations this process runs; ``ValueError`` when that is none of them."""
    chosen = list(specs)
    if part is not None:
        chosen = split_fleet(chosen, *part)
        if not chosen:
            raise ValueError(f"--part {part[0]}/{part[1]} holds none of the {len(specs)} stations "
                             "(the split is by a hash of the id); use fewer parts")
    if only:
        ids = [s.station_id for s in chosen]
        chosen = [chosen[i] for i in select(ids, only)]
        if not chosen:
            where = f" of part {part[0]}/{part[1]}" if part else ""
            raise ValueError(f"--only {only!r} matches none of the {len(ids)} stations{where} "
                             f"(ids look like {', '.join(ids[:3])}); use ids or patterns "
                             "such as 'news-*,sensor-mena-*'")
    return chosen
