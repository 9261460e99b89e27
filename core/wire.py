"""Wire format: batches of events as one compact orjson document per Kafka message.

Format (version 1)::

    {"v": 1, "events": [ {event}, {event}, ... ]}

where each ``{event}`` is :meth:`convergence.schema.Event.to_dict` (``event_id`` optional
on input; when present it must equal the content hash). One Kafka message carries a
station's batch for one sampling interval, keyed by ``station_id`` so a station's events
stay ordered within a partition. JSON keeps messages readable with ``kafka-console-consumer``;
orjson keeps encode/decode at well over a million events/s, and producer-side compression
(lz4/gzip) removes most of the key overhead.

:func:`decode_batch` never raises on bad input: it returns the good events and one
:class:`~convergence.schema.DeadLetter` per rejected message or event, so one bad event
never stops a stream.

Columns. :func:`decode_columns` (and :func:`validate_columns` for records already in
memory) return the good events as one :class:`~convergence.schema.EventBatch` instead of
an object per event: a typed decoder (msgspec) reads a well-formed message straight into
typed fields, and the checks and content hashes run over whole columns
(:func:`~convergence.schema.screen_columns`). Whatever that fast path is not certain to
accept - a malformed message, an event with a bad or unknown field, an oversized one -
goes through the per-event path (:func:`decode_each`, :func:`validate_each`, the
reference), so acceptance, event ids, dead letters and their reasons are exactly the
per-event ones; only their cost differs. :func:`decode_batch` and :func:`validate_many`
are the columnar path with events as objects.

Examples
--------
>>> from convergence.schema import make_event
>>> e = make_event("s1", "sensor", 100.0, "seismic", 2.5)
>>> good, bad = decode_batch(encode_batch([e]), now_s=100.0)
>>> good == [e], bad
(True, [])
>>> msg = b'{"v": 1, "events": [{"station_id": "s1", "source_kind": "sensor"}]}'
>>> good, bad = decode_batch(msg, now_s=100.0)
>>> good, bad[0].reason
([], 'is missing; every event needs it')
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from convergence.schema import (
    SCHEMA_VERSION,
    DeadLetter,
    Event,
    EventBatch,
    Limits,
    ValidationError,
    dead_letter,
    screen_columns,
    valid_rows,
    validate_event,
)

log = logging.getLogger(__name__)

WIRE_VERSION = 1
MAX_EVENTS_PER_MESSAGE = 10_000


def encode_batch(events: Iterable[Event]) -> bytes:
    """Encode events as one wire message."""
    return orjson.dumps({"v": WIRE_VERSION, "events": [e.to_dict() for e in events]})


def encode_raw(records: Iterable[dict[str, Any]]) -> bytes:
    """Encode already-dict records (e.g. from an untrusted source) as one wire message."""
    return orjson.dumps({"v": WIRE_VERSION, "events": list(records)})


def decode_batch(
    data: bytes | str, *, now_s: float, limits: Limits | None = None, stage: str = "wire"
) -> tuple[list[Event], list[DeadLetter]]:
    """Decode a wire message into valid events and dead letters (never raises).

    Whatever the bytes, every rejected message or event is exactly one dead letter
    carrying a bounded excerpt of it (see :func:`~convergence.schema.dead_letter`).
    The columnar path (:func:`decode_columns`) with the events as objects.
    """
    batch, bad = decode_columns(data, now_s=now_s, limits=limits, stage=stage)
    return batch.events(), bad


def decode_each(
    data: bytes | str, *, now_s: float, limits: Limits | None = None, stage: str = "wire"
) -> tuple[list[Event], list[DeadLetter]]:
    """:func:`decode_batch` one event at a time: the reference the columnar path agrees
    with, and where it sends what it is not certain to accept (never raises)."""
    try:
        return _decode_batch(data, now_s=now_s, limits=limits, stage=stage)
    except Exception as exc:  # the contract is "never raises": a bug here must not stop a stream
        return [], [dead_letter(stage, data, ValidationError(
            "message", f"could not be decoded (internal error {type(exc).__name__}: {exc}); "
            "this is a bug - report it with this payload"), received_at_s=now_s)]


def _decode_batch(
    data: bytes | str, *, now_s: float, limits: Limits | None, stage: str
) -> tuple[list[Event], list[DeadLetter]]:
    lim = limits or Limits()
    raw_len = len(data)
    if raw_len > lim.max_event_bytes * MAX_EVENTS_PER_MESSAGE:
        return [], [dead_letter(stage, data, ValidationError(
            "message", f"is {raw_len} bytes; the limit is "
            f"{lim.max_event_bytes * MAX_EVENTS_PER_MESSAGE}; split the batch"),
            received_at_s=now_s)]
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return [], [dead_letter(stage, data, ValidationError(
            "message", f"is not valid JSON ({exc}); producers must send orjson/JSON"),
            received_at_s=now_s)]
    if isinstance(doc, dict) and "events" not in doc and "station_id" in doc:
        items: Any = [doc]  # a bare event is accepted as a batch of one
    elif isinstance(doc, dict):
        if doc.get("v", WIRE_VERSION) != WIRE_VERSION:
            return [], [dead_letter(stage, data, ValidationError(
                "v", f"wire version {doc.get('v')!r} is not supported; this build reads "
                f"{WIRE_VERSION}"), received_at_s=now_s)]
        items = doc.get("events")
    else:
        items = None
    if not isinstance(items, list):
        return [], [dead_letter(stage, data, ValidationError(
            "message", 'expected {"v": 1, "events": [...]} or a single event object'),
            received_at_s=now_s)]
    if len(items) > MAX_EVENTS_PER_MESSAGE:
        return [], [dead_letter(stage, data, ValidationError(
            "events", f"has {len(items)} events; the limit is {MAX_EVENTS_PER_MESSAGE}"),
            received_at_s=now_s)]
    return validate_each(items, now_s=now_s, limits=lim, stage=stage)


def validate_many(
    items: Iterable[Any], *, now_s: float, limits: Limits | None = None, stage: str = "ingest"
) -> tuple[list[Event], list[DeadLetter]]:
    """Validate a sequence of raw records; bad ones become dead letters.

    The columnar path (:func:`validate_columns`) with the events as objects.
    """
    batch, bad = validate_columns(items, now_s=now_s, limits=limits, stage=stage)
    return batch.events(), bad


def validate_each(
    items: Iterable[Any], *, now_s: float, limits: Limits | None = None, stage: str = "ingest"
) -> tuple[list[Event], list[DeadLetter]]:
    """:func:`validate_many` one record at a time (the reference; see :func:`decode_each`)."""
    lim = limits or Limits()
    good: list[Event] = []
    bad: list[DeadLetter] = []
    for item in items:
        r = _check_one(item, now_s, lim, stage)
        if isinstance(r, Event):
            good.append(r)
        else:
            bad.append(r)
    return good, bad


def _check_one(item: Any, now_s: float, lim: Limits, stage: str) -> Event | DeadLetter:
    """One record through the per-event checks: its event, or its dead letter."""
    try:
        if isinstance(item, dict) and len(orjson.dumps(item)) > lim.max_event_bytes:
            raise ValidationError(
                "event", f"encodes to more than {lim.max_event_bytes} bytes; shorten its text"
            )
        return validate_event(item, now_s=now_s, limits=lim)
    except ValidationError as err:
        return dead_letter(stage, item, err, received_at_s=now_s)
    except Exception as err:  # orjson refusing a non-JSON value, nesting too deep, ...
        return dead_letter(stage, item, ValidationError(
            "event", f"cannot be read ({type(err).__name__}: {err})"), received_at_s=now_s)


# -- columns --------------------------------------------------------------------------


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """An event with exactly the known fields and their JSON types (anything else: the
    per-event path). Field order is the column order of :func:`_columns`."""

    station_id: str
    source_kind: str
    event_time_s: float
    category: str
    value: float
    text: str | None = None
    lat: float | None = None
    lon: float | None = None
    source: str | None = None
    event_id: str | None = None
    schema_version: int = SCHEMA_VERSION


class _WireMessage(msgspec.Struct, forbid_unknown_fields=True):
    events: list[_WireEvent]
    v: int = WIRE_VERSION


_MESSAGE = msgspec.json.Decoder(_WireMessage)
_FIELDS = len(_WireEvent.__struct_fields__)
_KNOWN = frozenset(_WireEvent.__struct_fields__)
_fast_path_failed = False


def _columns(structs: Sequence[_WireEvent]) -> list[Sequence[Any]]:
    if not structs:
        return [()] * _FIELDS
    return list(zip(*map(msgspec.structs.astuple, structs), strict=True))


def _merge(fast: EventBatch, rows: np.ndarray[Any, Any], slow: Sequence[Any],
           slow_rows: Sequence[int], now_s: float, lim: Limits, stage: str,
           ) -> tuple[EventBatch, list[DeadLetter]]:
    """The fast path's batch plus the per-event verdicts on ``slow`` (items at positions
    ``slow_rows``), good events in input order."""
    good: list[Event] = []
    good_rows: list[int] = []
    bad: list[DeadLetter] = []
    for pos, item in zip(slow_rows, slow, strict=True):
        r = _check_one(item, now_s, lim, stage)
        if isinstance(r, Event):
            good.append(r)
            good_rows.append(pos)
        else:
            bad.append(r)
    if not good:
        return fast, bad
    both = EventBatch.concat([fast, EventBatch.from_events(good)])
    order = np.argsort(np.concatenate([rows, np.asarray(good_rows, np.int64)]), kind="stable")
    return both.take(order), bad


def _fell_back(exc: Exception) -> None:
    global _fast_path_failed
    if not _fast_path_failed:  # a bug in the fast path: say so once, stay correct
        _fast_path_failed = True
        log.warning("wire: the columnar fast path failed (%s: %s); that input went through "
                    "the per-event path - please report this", type(exc).__name__, exc)


def decode_columns(
    data: bytes | str, *, now_s: float, limits: Limits | None = None, stage: str = "wire"
) -> tuple[EventBatch, list[DeadLetter]]:
    """Decode a wire message into a batch of valid events and dead letters (never raises).

    Same events, ids and dead letters as :func:`decode_each`, in columns (see the module
    docstring).

    >>> from convergence.schema import make_event
    >>> e = make_event("s1", "sensor", 100.0, "seismic", 2.5)
    >>> msg = encode_raw([e.to_dict(), {**e.to_dict(), "value": "x"}])
    >>> batch, bad = decode_columns(msg, now_s=100.0)
    >>> batch.event_ids() == [e.event_id], [d.field for d in bad]
    (True, ['value'])
    """
    lim = limits or Limits()
    try:
        return _decode_columns(data, now_s, lim, stage)
    except Exception as exc:
        _fell_back(exc)
        good, bad = decode_each(data, now_s=now_s, limits=lim, stage=stage)
        return EventBatch.from_events(good), bad


def _decode_columns(data: bytes | str, now_s: float, lim: Limits, stage: str,
                    ) -> tuple[EventBatch, list[DeadLetter]]:
    msg = None
    if len(data) <= lim.max_event_bytes * MAX_EVENTS_PER_MESSAGE:
        try:
            msg = _MESSAGE.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            msg = None
    if msg is None or msg.v != WIRE_VERSION or len(msg.events) > MAX_EVENTS_PER_MESSAGE:
        # not a well-formed message of well-typed events: the reference parses it again
        # (orjson) to say exactly what is wrong, and screens the events that are fine
        return _decode_reparsed(data, now_s, lim, stage)
    fast, rows, undecided = screen_columns(*_columns(msg.events), now_s=now_s, limits=lim)
    if not undecided.size:
        return fast, []
    items = orjson.loads(data)["events"]  # the very records the per-event path would see
    if not isinstance(items, list) or len(items) != len(msg.events):
        raise RuntimeError("msgspec and orjson read this message differently")
    slow_rows = undecided.tolist()
    return _merge(fast, rows, [items[i] for i in slow_rows], slow_rows, now_s, lim, stage)


def _decode_reparsed(data: bytes | str, now_s: float, lim: Limits, stage: str,
                     ) -> tuple[EventBatch, list[DeadLetter]]:
    """A message the typed decoder refused: the reference's message-level checks, then
    its records through :func:`validate_columns` (most of them are usually fine)."""
    raw_len = len(data)
    if raw_len > lim.max_event_bytes * MAX_EVENTS_PER_MESSAGE:
        good, bad = decode_each(data, now_s=now_s, limits=lim, stage=stage)
        return EventBatch.from_events(good), bad
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        good, bad = decode_each(data, now_s=now_s, limits=lim, stage=stage)
        return EventBatch.from_events(good), bad
    items = doc.get("events") if isinstance(doc, dict) and "events" in doc else None
    if (not isinstance(items, list) or doc.get("v", WIRE_VERSION) != WIRE_VERSION
            or len(items) > MAX_EVENTS_PER_MESSAGE):
        good, bad = decode_each(data, now_s=now_s, limits=lim, stage=stage)
        return EventBatch.from_events(good), bad
    return _validate_columns(items, now_s, lim, stage)


def validate_columns(
    items: Iterable[Any], *, now_s: float, limits: Limits | None = None, stage: str = "ingest"
) -> tuple[EventBatch, list[DeadLetter]]:
    """Validate raw records (e.g. a station agent's batch in memory) into a batch of valid
    events and dead letters; same verdicts as :func:`validate_each` (never raises).

    >>> from convergence.schema import make_event
    >>> e = make_event("s1", "sensor", 100.0, "seismic", 2.5)
    >>> batch, bad = validate_columns([e.to_dict(), 7], now_s=100.0)
    >>> batch.events() == [e], bad[0].reason
    (True, 'expected a JSON object, got int')
    """
    lim = limits or Limits()
    recs = items if isinstance(items, list) else list(items)
    try:
        return _validate_columns(recs, now_s, lim, stage)
    except Exception as exc:
        _fell_back(exc)
        good, bad = validate_each(recs, now_s=now_s, limits=lim, stage=stage)
        return EventBatch.from_events(good), bad


def _validate_columns(items: list[Any], now_s: float, lim: Limits, stage: str,
                      ) -> tuple[EventBatch, list[DeadLetter]]:
    # Plain dicts with known keys only are read as columns; values of any other type
    # than the wire's are left to the per-event path by the screen (exact_types=False).
    # (Not msgspec.convert: it would turn a Decimal into a float the per-event path refuses.)
    if set(map(type, items)) <= {dict} and set().union(*items) <= _KNOWN:
        at = np.arange(len(items), dtype=np.int64)
        recs = items
        slow_rows: list[int] = []
    else:
        ok = [type(x) is dict and x.keys() <= _KNOWN for x in items]
        at = np.flatnonzero(np.asarray(ok, dtype=bool)) if items else np.zeros(0, np.int64)
        recs = [items[i] for i in at.tolist()]
        slow_rows = [i for i, good in enumerate(ok) if not good]
    cols = [[d.get(f) for d in recs] for f in _WireEvent.__struct_fields__[:-1]]
    cols.append([d.get("schema_version", SCHEMA_VERSION) for d in recs])
    fast, rows, undecided = screen_columns(*cols, now_s=now_s, limits=lim, exact_types=False)
    if undecided.size:
        slow_rows = sorted(slow_rows + at[undecided].tolist())
    if not slow_rows:
        return fast, []
    return _merge(fast, at[rows], [items[i] for i in slow_rows], slow_rows, now_s, lim, stage)


def certainly_valid(items: Sequence[Mapping[str, Any]], *, now_s: float,
                    limits: Limits | None = None) -> npt.NDArray[np.bool_]:
    """Which of these records :func:`~convergence.schema.validate_event` certainly accepts,
    judged in columns (a source checking a whole batch before it hands it over): ``False``
    marks a record to check on its own, to learn why it fails (or that it passes after all).

    >>> from convergence.schema import make_event
    >>> good = make_event("s1", "sensor", 100.0, "seismic", 2.5).to_dict()
    >>> del good["event_id"]  # (a record given its id is checked on its own: it must match)
    >>> certainly_valid([good, {**good, "value": "many"}, {**good, "colour": 1}], now_s=100.0).tolist()
    [True, False, False]
    """
    n = len(items)
    out = np.zeros(n, dtype=bool)
    if not n:
        return out
    ok = [type(x) is dict and x.keys() <= _KNOWN for x in items]
    at = np.flatnonzero(np.asarray(ok, dtype=bool))
    recs = [items[i] for i in at.tolist()]
    cols = [[d.get(f) for d in recs] for f in _WireEvent.__struct_fields__[:-1]]
    cols.append([d.get("schema_version", SCHEMA_VERSION) for d in recs])
    try:
        out[at] = valid_rows(*cols, now_s=now_s, limits=limits)
    except Exception as exc:  # the per-record check decides every one
        _fell_back(exc)
    return out


@dataclass
class Decoded:
    """Many wire messages decoded at once (:func:`decode_many`).

    ``events`` holds the good events of every message, message after message; ``counts[i]``
    is how many of them message ``i`` gave and ``dead[i]`` its dead letters.
    """

    events: EventBatch
    counts: list[int]
    dead: list[list[DeadLetter]]

    def message_of_row(self) -> np.ndarray[Any, Any]:
        """Each event's message index."""
        return np.repeat(np.arange(len(self.counts)), self.counts)


def decode_many(
    messages: Sequence[bytes | str], *, now_s: float, limits: Limits | None = None,
    stage: str = "wire",
) -> Decoded:
    """:func:`decode_columns` of every message, checked and hashed in one pass: the same
    events, ids and dead letters, message by message (never raises).

    A message of ten events costs mostly per-call set-up when decoded alone; a runtime
    that receives messages in batches (a poll of the consumer) pays it once per batch.

    >>> from convergence.schema import make_event
    >>> a, b = (make_event(s, "sensor", 100.0, "air", 1.0) for s in ("s1", "s2"))
    >>> d = decode_many([encode_batch([a]), b"{nope", encode_batch([b, a])], now_s=100.0)
    >>> d.events.event_ids() == [a.event_id, b.event_id, a.event_id], d.counts
    (True, [1, 0, 2])
    >>> [len(x) for x in d.dead], d.message_of_row().tolist()
    ([0, 1, 0], [0, 2, 2])
    """
    lim = limits or Limits()
    try:
        return _decode_many(messages, now_s, lim, stage)
    except Exception as exc:
        _fell_back(exc)
        one = [decode_columns(m, now_s=now_s, limits=lim, stage=stage) for m in messages]
        return Decoded(EventBatch.concat([b for b, _ in one]), [len(b) for b, _ in one],
                       [d for _, d in one])


def _decode_many(messages: Sequence[bytes | str], now_s: float, lim: Limits,
                 stage: str) -> Decoded:
    n = len(messages)
    structs: list[_WireEvent] = []
    sizes = [0] * n
    alone: dict[int, tuple[EventBatch, list[DeadLetter]]] = {}  # decoded one by one
    limit = lim.max_event_bytes * MAX_EVENTS_PER_MESSAGE
    for i, data in enumerate(messages):
        msg = None
        if len(data) <= limit:
            try:
                msg = _MESSAGE.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                msg = None
        if msg is None or msg.v != WIRE_VERSION or len(msg.events) > MAX_EVENTS_PER_MESSAGE:
            alone[i] = _decode_reparsed(data, now_s, lim, stage)
            continue
        structs += msg.events
        sizes[i] = len(msg.events)
    fast, rows, undecided = screen_columns(*_columns(structs), now_s=now_s, limits=lim)
    starts = np.cumsum([0, *sizes])
    if undecided.size:  # messages with a doubtful event: decoded on their own
        for i in np.unique(np.searchsorted(starts, undecided, "right") - 1).tolist():
            alone[i] = _decode_columns(messages[i], now_s, lim, stage)
    if not alone:
        return Decoded(fast, sizes, [[] for _ in range(n)])
    owner = np.searchsorted(starts, rows, "right") - 1
    pieces: list[EventBatch] = []
    counts: list[int] = []
    dead: list[list[DeadLetter]] = []
    for i in range(n):
        if i in alone:
            batch, bad = alone[i]
            pieces.append(batch)
            counts.append(len(batch))
            dead.append(bad)
        else:
            mine = np.flatnonzero(owner == i)
            if mine.size:
                pieces.append(fast.take(mine))
            counts.append(int(mine.size))
            dead.append([])
    return Decoded(EventBatch.concat([p for p in pieces if len(p)]), counts, dead)
