"""Issue 11's flood test (``-m kafka``): a real worker on a real broker takes 10,000
malformed messages interleaved with a seeded scenario's real events.

What must hold: the worker stays up (and stops cleanly, exit 0, no traceback); every bad
input is exactly one readable dead letter with its reason, on the dead-letter topic and
in the store; no real event is late or lost to the flood; the genuine convergence
alerts; nothing already stored is altered (a sentinel record, the report integrity
chain); and a message the broker will never take (here: the readings topic created
with a ``max.message.bytes`` smaller than any reading) is counted, logged once with its
size, and the worker goes on (item 3).

The malformed messages are built from a seed, and each is checked up front with the
wire decoder to be exactly one rejection, so a count that comes out wrong is the
worker's doing, not the generator's.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from convergence.settings import Settings, load_settings
from convergence.wire import WIRE_VERSION, decode_batch, encode_raw

N_BAD = 10_000
SEED = 11
#: 1 MB fields: a few of them (each is a 1 MB message); the rest of that kind is 20 KB
N_MEGABYTE = 12
#: what the readings topic takes at most: less than any reading, so each one is refused
TINY_MAX_MESSAGE_BYTES = 120
SENTINEL = ("run", "sentinel-run")
SURREAL = ["'; DELETE dead_letter; --", "x\"; REMOVE TABLE report; --",
           "⟨sentinel-run⟩; UPDATE run SET pipeline = NONE;", "run:sentinel-run; DELETE $this",
           "RETURN (SELECT * FROM report); --", "1; DEFINE TABLE pwned; --"]


def _event(i: int, **fields: Any) -> dict[str, Any]:
    """A flood event: its text and category name it (an excerpt starts with either, so no
    two dead letters' excerpts are the same)."""
    return {"text": f"flood {i}", "category": f"flood {i}", "station_id": f"flood-{i:05d}",
            "source_kind": "sensor", "event_time_s": time.time() - 5.0, "value": 1.0, **fields}


def _batch(*events: dict[str, Any]) -> bytes:
    return encode_raw(list(events))


def malformed(i: int, rng: random.Random, now: float) -> bytes:
    """The ``i``-th bad message: one bad thing, no valid event (kinds cycle with ``i``)."""
    kind, variant = i % 10, (i // 10) % 4
    if kind == 0:  # random bytes (not JSON, or JSON that is not a wire batch)
        return rng.randbytes(rng.randint(16, 300))
    if kind == 1:  # truncated JSON (cut after its text, so no two are the same input)
        whole = _batch(_event(i))
        return whole[:rng.randint(whole.index(b"flood %d" % i) + 8, len(whole) - 1)]
    if kind == 2:  # wrong types
        return [_batch(_event(i, value="twelve")), _batch(_event(i, event_time_s="yesterday")),
                _batch(_event(i, station_id=7)),
                orjson.dumps({"v": WIRE_VERSION, "events": f"flood {i}"})][variant]
    if kind == 3:  # oversized fields: ~1 MB for a few, 20 KB (over the event limit) for the rest
        n = 1_000_000 if i // 10 < N_MEGABYTE else 20_000
        big = f"{i:05d}" + "x" * n
        return _batch([_event(i, text=big), _event(i, station_id=big), _event(i, category=big),
                       _event(i, source=big)][variant])
    if kind == 4:  # deep nesting: in a field, or the whole message
        if variant % 2:  # deeper than the JSON parser takes
            depth = 1_100 + rng.randint(0, 20_000)
            return b'{"v":1,"flood":%d,"events":' % i + b"[" * depth + b"]" * depth + b"}"
        depth = 500 + rng.randint(0, 520)  # parsed, then too deep to validate or print
        head = orjson.dumps(_event(i))[:-1] + b',"extra":'
        return b'{"v":1,"events":[' + head + b"[" * depth + b"]" * depth + b"}]}"
    if kind == 5:  # NaN / Infinity (not JSON) and a number too large for a float
        lit = [b"NaN", b"Infinity", b"-Infinity", b"1e999"][variant]
        ev = {k: v for k, v in _event(i).items() if k != "value"}
        return b'{"v":1,"events":[' + orjson.dumps(ev)[:-1] + b',"value":' + lit + b"}]}"
    if kind == 6:  # far future and far past
        t = [now + 10 * 365 * 86_400.0, 0.0, now - 30 * 86_400.0, 1e300][variant]
        return _batch(_event(i, event_time_s=t))
    if kind == 7:  # SurrealQL-looking strings where an id, a kind or a time goes
        q = SURREAL[(i // 10) % len(SURREAL)]
        return _batch([_event(i, station_id=f"flood-{i:05d}{q}"),
                       _event(i, source_kind=q), _event(i, event_time_s=q),
                       _event(i, text=f"flood {i} {q}", value=q)][variant])
    if kind == 8:  # NUL bytes
        return [_batch(_event(i, station_id=f"flood\x00{i:05d}")),
                _batch(_event(i, text=f"flood {i}\x00", value="\x00")),
                _batch(_event(i, source_kind="sensor\x00")),
                b'{"v":1,"events":[{"text":"flood %d\\u0000' % i + b"\x00" * 8][variant]
    # the wire envelope: wrong version, no events, not an object, an event of no fields
    return [orjson.dumps({"v": 99, "events": [_event(i)]}),
            orjson.dumps({"v": WIRE_VERSION, "flood": i}),
            orjson.dumps([f"flood {i}"]),
            orjson.dumps({"v": WIRE_VERSION, "events": [{"text": f"flood {i}"}]})][variant]


def flood(now: float) -> Iterator[tuple[int, bytes]]:
    rng = random.Random(SEED)
    for i in range(N_BAD):
        yield i, malformed(i, rng, now)


@dataclass
class FloodRun:
    settings: Settings
    exit_code: int | None
    log: str
    alerts: list[dict[str, Any]]
    dead_letters: list[bytes]
    runs: list[dict[str, Any]]
    expected_feed_dead_letters: int
    stored_dead_letters: list[dict[str, Any]] = field(default_factory=list)
    sentinel_before: dict[str, Any] | None = None
    sentinel_after: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _end_total(bootstrap: str, topic: str) -> int:
    from convergence.streams.kafka_client import assign_all, consumer

    c = consumer(bootstrap, "flood-count")
    try:
        tps = assign_all(c, topic, start="end")
        return sum(c.position(tp) for tp in tps)
    finally:
        c.close()


@pytest.fixture(scope="module")
def flood_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
              feed: Any, start_worker: Any, wait_for_worker: Any,
              stop_worker: Any) -> FloodRun:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    from convergence.ground_stations.fleet import default_fleet_toml
    from convergence.store.surreal import SurrealStore
    from convergence.streams.kafka_client import read_topic
    from convergence.streams.topics import ensure_topics

    tmp = tmp_path_factory.mktemp("flood")
    tag = uuid.uuid4().hex[:8]
    env = {"CONVERGENCE_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "CONVERGENCE_TOPIC_PREFIX": f"f{tag}", "CONVERGENCE_FAUST_APP_ID": f"flood{tag}",
           "CONVERGENCE_DB": f"surrealkv://{tmp / 'db'}",
           "CONVERGENCE_DATA_DIR": str(tmp / "data"), "CONVERGENCE_FLEET": str(tmp / "fleet.toml")}
    base = load_settings(env={}, config_path=None)
    (tmp / "fleet.toml").write_text(default_fleet_toml(base.stations, base.seed))
    s = load_settings(env=env, config_path=None)
    timings: dict[str, float] = {}
    t_start = time.monotonic()

    # something stored before the flood, that no bad input may touch
    async def put_sentinel() -> dict[str, Any] | None:
        async with SurrealStore.from_settings(s) as store:
            await store.upsert(*SENTINEL, {"run_id": SENTINEL[1], "note": "stored before",
                                           "pipeline": {"events": 7}})
            return await store.get(*SENTINEL)

    sentinel_before = asyncio.run(put_sentinel())
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:  # the readings topic takes no reading: item 3 on the real broker
        admin.create_topics([NewTopic(s.topic("readings"), 1, 1, topic_configs={
            "max.message.bytes": str(TINY_MAX_MESSAGE_BYTES)})])
    finally:
        admin.close()
    ensure_topics(s)

    now = time.time()
    t0 = now - 25.0
    bad = list(flood(now))
    ids = set()
    for i, value in bad:  # the generator's promise: each is exactly one rejection, and
        events, dls = decode_batch(value, now_s=now)  # no two the same (ids are by content)
        assert (len(events), len(dls)) == (0, 1), (i, value[:200], events, dls)
        ids.add(dls[0].dead_letter_id)
    assert len(ids) == N_BAD
    real = list(feed.messages(s, t0))
    expected_feed_dls = sum(len(decode_batch(encode_raw(r), now_s=now)[1]) for _, r in real)

    proc, log_path = start_worker(env, tmp)
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20,
                                 max_request_size=2 * 1024 * 1024, acks=1)
        futures = []
        topic = s.topic("events")
        step = max(len(real) // len(bad), 1)
        it = iter(bad)
        for j, (sid, recs) in enumerate(real):  # the bad messages spread through the scenario
            futures.append(producer.send(topic, key=sid.encode(), value=encode_raw(recs)))
            if j % step == 0:
                nxt = next(it, None)
                if nxt is not None:
                    futures.append(producer.send(topic, key=f"flood-{nxt[0]:05d}".encode(),
                                                 value=nxt[1]))
        for i, value in it:
            futures.append(producer.send(topic, key=f"flood-{i:05d}".encode(), value=value))
        producer.flush(timeout=240)  # bounds for a loaded machine, not targets
        for f in futures:
            f.get(timeout=60)  # every message is on the broker
        producer.close()
        timings["produced_s"] = time.monotonic() - t_start

        region = feed.genuine_region(s)

        def alerts() -> list[dict[str, Any]]:
            got = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, s.topic("alerts"))]
            return got if any(region in a["regions"] for a in got) else []

        def all_dead() -> bool:
            return _end_total(kafka_bootstrap, s.topic("dead-letter")) >= N_BAD + expected_feed_dls

        found = wait_for_worker(alerts, proc, log_path, 240.0, "alert of the genuine region")
        timings["alert_s"] = time.monotonic() - t_start
        wait_for_worker(all_dead, proc, log_path, 240.0, f"{N_BAD} dead letters on the topic")
        timings["dead_letters_s"] = time.monotonic() - t_start
    finally:
        code = stop_worker(proc, 90)
    timings["stopped_s"] = time.monotonic() - t_start
    run = FloodRun(s, code, log_path.read_text(errors="replace"), found,
                   [r.value for r in read_topic(kafka_bootstrap, s.topic("dead-letter"),
                                                timeout_s=60)],
                   [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, s.topic("runs"))],
                   expected_feed_dls, sentinel_before=sentinel_before, timings=timings)

    async def read_store() -> None:
        async with SurrealStore.from_settings(s) as store:
            run.stored_dead_letters = await store.list("dead_letter", limit=4 * N_BAD)
            run.sentinel_after = await store.get(*SENTINEL)

    asyncio.run(read_store())
    timings["read_back_s"] = time.monotonic() - t_start
    print(f"flood timings: {timings}")
    return run


def _flood_index(doc: dict[str, Any]) -> int | None:
    sid = doc.get("station_id") or ""
    return int(sid[6:]) if sid.startswith("flood-") and sid[6:].isdigit() else None


@pytest.mark.kafka
def test_the_worker_survives_the_flood_and_stops_cleanly(flood_run: FloodRun) -> None:
    assert flood_run.exit_code == 0, flood_run.log[-3000:]
    assert "Traceback" not in flood_run.log, flood_run.log[-3000:]


@pytest.mark.kafka
def test_the_genuine_convergence_alerts_through_the_flood(flood_run: FloodRun, feed: Any) -> None:
    region = feed.genuine_region(flood_run.settings)
    assert flood_run.alerts and all(a["regions"] == [region] for a in flood_run.alerts)


@pytest.mark.kafka
def test_every_bad_input_is_exactly_one_readable_dead_letter_with_its_reason(
        flood_run: FloodRun) -> None:
    docs = []
    for value in flood_run.dead_letters:
        assert len(value) < 20_000  # bounded, whatever came in (1 MB fields included)
        docs.append(orjson.loads(value))
    for d in docs:
        assert d["reason"] and isinstance(d["reason"], str) and d["dead_letter_id"]
    per_input = Counter(_flood_index(d) for d in docs if _flood_index(d) is not None)
    assert sorted(per_input) == list(range(N_BAD)), (
        f"missing: {sorted(set(range(N_BAD)) - set(per_input))[:20]}")
    assert set(per_input.values()) == {1}, per_input.most_common(5)
    # the scenario's own bad events (it sends a few on purpose) and nothing else: no real
    # event was late or lost to an unknown station because of the flood
    others = [d for d in docs if _flood_index(d) is None]
    assert len(others) == flood_run.expected_feed_dead_letters, Counter(
        d["reason"][:60] for d in others).most_common(5)
    assert not [d for d in docs if "late" in d["reason"] or "unknown station" in d["reason"]]


@pytest.mark.kafka
def test_every_flood_dead_letter_is_stored_and_reads_back(flood_run: FloodRun) -> None:
    stored = [d for d in flood_run.stored_dead_letters if _flood_index(d) is not None]
    assert sorted(_flood_index(d) for d in stored) == list(range(N_BAD))
    nul = [d for d in stored if d["reason"] and "\\x00" in (d.get("payload") or "")]
    assert nul, "no NUL-carrying dead letter read back with its NUL visible"
    big = [d for d in stored if (d.get("payload_size") or 0) > 1_000_000]
    assert len(big) >= N_MEGABYTE * 0.9 and all(len(d["payload"]) <= 4096 + 64 for d in big)
    surreal = [d for d in stored if any(q in (d.get("payload") or "") for q in SURREAL)]
    assert surreal, "the SurrealQL-looking strings are kept as text in the dead letters"


@pytest.mark.kafka
def test_no_stored_record_is_altered_by_the_flood(flood_run: FloodRun) -> None:
    from typer.testing import CliRunner

    from convergence.cli.reports import app as reports_app

    assert flood_run.sentinel_before is not None
    assert flood_run.sentinel_after == flood_run.sentinel_before
    verified = CliRunner().invoke(reports_app, ["verify", "--db", flood_run.settings.db_url,
                                                "--json"])
    assert verified.exit_code == 0, verified.output
    result = orjson.loads(verified.stdout.splitlines()[0])
    assert result["ok"] and result["reports_checked"] >= 1, result


@pytest.mark.kafka
def test_a_message_the_broker_refuses_is_counted_logged_once_and_the_worker_goes_on(
        flood_run: FloodRun) -> None:
    # item 3: every reading is over the readings topic's max.message.bytes
    lines = [ln for ln in flood_run.log.splitlines() if "could not publish a readings" in ln]
    assert len(lines) == 1, lines[:5]
    assert "bytes: MessageSizeTooLargeError" in lines[0] and "goes on" in lines[0]
    assert "_on_published error" not in flood_run.log  # Faust's per-message lines are kept out
    (run,) = flood_run.runs
    refused = run["publish"]["unpublished_by_topic"]["readings"]
    assert refused["messages"] >= 10 and refused["bytes"] > refused["messages"] * 50
    assert run["publish"]["unpublished"] == refused["messages"]  # only the readings
    # and it went on: the convergence was found and published after the first refusal
    log = flood_run.log.splitlines()
    first_refusal = next(n for n, ln in enumerate(log) if "could not publish" in ln)
    assert any(" ALERT " in ln for ln in log[first_refusal:]), log[first_refusal:][:20]
