"""Campaign shards on the wire: the work order a client publishes, and the answers a worker
sends back.

:class:`Shard` is one chunk of a campaign (:func:`convergence.simulation.campaign.plan`)
as a work order: ``(scenario, first run, count)`` plus everything
:func:`~convergence.simulation.campaign.run_chunk` is deterministic in (seed, parameter
space, sweep, mode, detector settings), the campaign it belongs to, and
:func:`code_fingerprint`, a digest of the code that decides a run's outcome.
:func:`shard_message` is a worker's word on a shard (``started``, ``running``,
``failed`` ...); :func:`result_messages` splits a chunk's records into ``done`` messages
of at most :data:`MAX_RESULT_BYTES` and :func:`record_from_wire` reads one record back.
Bad input raises :class:`ShardError` with the reason. The exchange as a whole is
described in :mod:`convergence.streams.campaign_shards`.

Examples
--------
>>> s = Shard("c", 3, "simultaneous", first=500, count=500, seed=7, space=ParamSpace(),
...           sweep=True, mode="cells", detector=DEFAULT_DETECTOR, code="x", expires_at_s=0)
>>> Shard.from_json(s.to_json()) == s, orjson.loads(shard_message(s, "started", "w1"))["state"]
(True, 'started')
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import orjson

from convergence.simulation.campaign import (
    DEFAULT_DETECTOR,
    ChunkResult,
    DetectorParams,
    ParamSpace,
    RunRecord,
)
from convergence.simulation.simulator import Mode
from convergence.streams.topics import ClusterError

__all__ = [
    "CAMPAIGN_TOPICS", "DEFAULT_DETECTOR", "HEARTBEAT_S", "MAX_RESULT_BYTES", "WIRE_VERSION", "Shard",
    "ShardError", "ShardFailed", "code_fingerprint", "record_from_wire", "result_messages",
    "shard_message",
]

#: The campaign exchange's topics (declared with the others in :mod:`~convergence.streams.topics`).
CAMPAIGN_TOPICS: tuple[str, ...] = ("campaign-shards", "campaign-results", "campaign-cancel")
#: One result message stays below this (Kafka's default message limit is 1 MB); a bigger
#: chunk result goes out in parts.
MAX_RESULT_BYTES = 512_000
#: A worker running a shard says so this often, so a client tells "slow" from "gone".
HEARTBEAT_S = 10.0
#: Packages whose code decides a run's outcome; workers refuse shards from other code.
_OUTCOME_PACKAGES = ("convergence", "convergence.detectors", "convergence.ground_stations",
                     "convergence.responses", "convergence.simulation")
_MODES: tuple[str, ...] = get_args(Mode)
#: The format version of shard and answer messages (a worker refuses another).
WIRE_VERSION = 1


class ShardError(ValueError):
    """A shard message that cannot be run; ``campaign`` / ``shard`` when they were readable."""

    def __init__(self, reason: str, campaign: str | None = None, shard: int | None = None) -> None:
        super().__init__(reason)
        self.campaign = campaign
        self.shard = shard


class ShardFailed(ClusterError):
    """A worker could not run a shard (a deterministic failure: re-running cannot help)."""


_code_fingerprint: str | None = None


def code_fingerprint() -> str:
    """A digest of the source that decides a run's outcome (see :data:`_OUTCOME_PACKAGES`).

    A worker started from other code would judge runs differently and silently break
    "the merged result equals the local one", so it refuses such shards instead.

    >>> len(code_fingerprint()), code_fingerprint() == code_fingerprint()
    (16, True)
    """
    global _code_fingerprint
    if _code_fingerprint is None:
        h = hashlib.sha256()
        for name in _OUTCOME_PACKAGES:
            pkg = importlib.import_module(name)
            for root in map(Path, pkg.__path__):
                # the top package holds only core modules; sub-packages are whole folders
                files = root.glob("*.py") if name == "convergence" else root.rglob("*.py")
                for f in sorted(files):
                    h.update(f.relative_to(root).as_posix().encode())
                    h.update(f.read_bytes())
        _code_fingerprint = h.hexdigest()[:16]
    return _code_fingerprint


# -- the work order -------------------------------------------------------------------


def _space_from(d: Mapping[str, Any]) -> ParamSpace:
    def pair(v: Any) -> tuple[float, float]:
        lo, hi = v
        return (float(lo), float(hi))

    return ParamSpace(effect=pair(d["effect"]), onset_jitter_s=float(d["onset_jitter_s"]),
                      rate_spread=pair(d["rate_spread"]), noise=pair(d["noise"]),
                      membership=pair(d["membership"]),
                      warning=tuple(float(x) for x in d["warning"]),
                      window_ticks=tuple(int(x) for x in d["window_ticks"]),
                      pattern_weight=tuple(float(x) for x in d["pattern_weight"]))


def _detector_from(d: Mapping[str, Any]) -> DetectorParams:
    return DetectorParams(warning=float(d["warning"]), window_ticks=int(d["window_ticks"]),
                          pattern_weight=float(d["pattern_weight"]))


@dataclass(frozen=True)
class Shard:
    """One chunk of a campaign as a work order (see the module docstring).

    >>> s = Shard("c", 3, "simultaneous", first=500, count=500, seed=7, space=ParamSpace(),
    ...           sweep=True, mode="cells", detector=DEFAULT_DETECTOR, code="x", expires_at_s=0)
    >>> s.key, s.runs
    (b'c/3', 'runs 500-999')
    """

    campaign: str
    shard: int
    scenario: str
    first: int
    count: int
    seed: int
    space: ParamSpace
    sweep: bool
    mode: Mode
    detector: DetectorParams
    code: str
    expires_at_s: float

    @property
    def key(self) -> bytes:
        return f"{self.campaign}/{self.shard}".encode()

    @property
    def runs(self) -> str:
        return f"runs {self.first}-{self.first + self.count - 1}"

    def to_json(self) -> bytes:
        return orjson.dumps({"v": WIRE_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, value: bytes | None) -> Shard:
        """Decode and validate; a bad message raises :class:`ShardError` with the reason."""
        try:
            d = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            raise ShardError(f"not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise ShardError(f"not a JSON object: {type(d).__name__}")
        campaign, shard = d.get("campaign"), d.get("shard")
        if not isinstance(campaign, str) or not campaign or not isinstance(shard, int):
            raise ShardError(f"no campaign id and shard number (campaign={campaign!r}, "
                             f"shard={shard!r})")
        if d.get("v") != WIRE_VERSION:
            raise ShardError(f"shard format version {d.get('v')!r}, this worker reads "
                             f"{WIRE_VERSION}: run the same convergence version on the client "
                             "and the workers", campaign, shard)
        try:
            out = cls(campaign, shard, str(d["scenario"]), int(d["first"]), int(d["count"]),
                      int(d["seed"]), _space_from(d["space"]), bool(d["sweep"]), d["mode"],
                      _detector_from(d["detector"]), str(d["code"]), float(d["expires_at_s"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardError(f"malformed shard: {type(exc).__name__}: {exc}", campaign,
                             shard) from None
        if out.mode not in _MODES:
            raise ShardError(f"mode {out.mode!r} is not one of {', '.join(_MODES)}", campaign, shard)
        if out.first < 0 or out.count < 1:
            raise ShardError(f"runs first={out.first} count={out.count} (need first >= 0, "
                             "count >= 1)", campaign, shard)
        return out


def shard_message(shard: Shard, state: str, worker: str, **extra: Any) -> bytes:
    """A worker's word on ``shard`` for the results topic: its ``state`` (``started``,
    ``running``, ``done``, ``failed``, ``expired``) and ``extra`` fields."""
    return orjson.dumps({"v": WIRE_VERSION, "campaign": shard.campaign, "shard": shard.shard,
                         "state": state, "worker": worker, **extra})


def _wire_float(x: float) -> float | str:
    # JSON has no NaN or infinity (orjson writes null); float() reads these strings back
    return x if math.isfinite(x) else str(x)


def _record_to_wire(r: RunRecord) -> dict[str, Any]:
    return {"run": r.run, "genuine": r.genuine, "detected": r.detected,
            "false_alarms": r.false_alarms, "ttd_ticks": [_wire_float(x) for x in r.ttd_ticks],
            "detector": asdict(r.detector),
            "alerts": [[lvl, _wire_float(sc), g] for lvl, sc, g in r.alerts],
            "peak_in": [_wire_float(x) for x in r.peak_in], "peak_out": _wire_float(r.peak_out)}


def record_from_wire(scenario: str, d: Mapping[str, Any]) -> RunRecord:
    """One run's record as :func:`result_messages` wrote it (raises ``KeyError``,
    ``TypeError`` or ``ValueError`` on a malformed one)."""
    return RunRecord(scenario, int(d["run"]), int(d["genuine"]), int(d["detected"]),
                     int(d["false_alarms"]), tuple(float(x) for x in d["ttd_ticks"]),
                     _detector_from(d["detector"]),
                     tuple((int(lvl), float(sc), bool(g)) for lvl, sc, g in d["alerts"]),
                     tuple(float(x) for x in d["peak_in"]), float(d["peak_out"]))


def result_messages(shard: Shard, res: ChunkResult, worker: str, *,
                    max_bytes: int = MAX_RESULT_BYTES) -> list[bytes]:
    """The ``done`` messages of a chunk result, each at most ``max_bytes``.

    Raises :class:`ShardError` when one run's record alone exceeds ``max_bytes``.
    """
    head = {"station_hours": res.station_hours, "events": res.events, "seconds": res.seconds}
    rows = [orjson.dumps(_record_to_wire(r)) for r in res.records]
    base = len(shard_message(shard, "done", worker, part=999_999, parts=999_999, records=[], **head))
    groups: list[list[bytes]] = [[]]
    size = base
    for row in rows:
        if base + len(row) + 1 > max_bytes:
            raise ShardError(f"run {orjson.loads(row)['run']}'s record is {len(row):,} bytes, "
                             f"more than one message may carry ({max_bytes:,})",
                             shard.campaign, shard.shard)
        if groups[-1] and size + len(row) + 1 > max_bytes:
            groups.append([])
            size = base
        groups[-1].append(row)
        size += len(row) + 1
    return [shard_message(shard, "done", worker, part=k, parts=len(groups),
                     records=orjson.Fragment(b"[" + b",".join(g) + b"]"), **head)
            for k, g in enumerate(groups)]
