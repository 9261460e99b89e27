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

from collections.abc import Iterable
from typing import Any

import orjson

from convergence.schema import (
    DeadLetter,
    Event,
    Limits,
    ValidationError,
    dead_letter,
    validate_event,
)

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
    """
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
    return validate_many(items, now_s=now_s, limits=lim, stage=stage)


def validate_many(
    items: Iterable[Any], *, now_s: float, limits: Limits | None = None, stage: str = "ingest"
) -> tuple[list[Event], list[DeadLetter]]:
    """Validate a sequence of raw records; bad ones become dead letters."""
    lim = limits or Limits()
    good: list[Event] = []
    bad: list[DeadLetter] = []
    for item in items:
        try:
            if isinstance(item, dict) and len(orjson.dumps(item)) > lim.max_event_bytes:
                raise ValidationError(
                    "event", f"encodes to more than {lim.max_event_bytes} bytes; shorten its text"
                )
            good.append(validate_event(item, now_s=now_s, limits=lim))
        except ValidationError as err:
            bad.append(dead_letter(stage, item, err, received_at_s=now_s))
        except Exception as err:  # orjson refusing a non-JSON value, nesting too deep, ...
            bad.append(dead_letter(stage, item, ValidationError(
                "event", f"cannot be read ({type(err).__name__}: {err})"), received_at_s=now_s))
    return good, bad
