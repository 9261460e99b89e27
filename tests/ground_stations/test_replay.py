"""File replay: speed-up on an injected clock, re-stamping, and every bad row a dead letter."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convergence.ground_stations.base import SourceError
from convergence.ground_stations.replay import FileReplaySource
from convergence.schema import DeadLetter, Limits
from convergence.stations import StationInfo
from convergence.timeparse import parse_time, to_number
from convergence.wire import validate_many

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NOW = 1_714_600_000.0  # 2024-05-01T21:46:40Z, a few hours after the fixture data
T12 = 1_714_564_800.0  # 2024-05-01T12:00:00Z, the first row of the fixtures
PRICE = StationInfo("px-acme", "market_price")
VOLUME = StationInfo("vol-acme", "market_volume")
SENSOR = StationInfo("sensor-7", "sensor")


def poll(src: FileReplaySource, now_s: float) -> list[dict[str, Any]]:
    return asyncio.run(src.poll(now_s))


def drain_all(src: FileReplaySource, now_s: float, max_polls: int = 100) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(max_polls):
        if src.done:
            return out
        out += poll(src, now_s)
    raise AssertionError("replay never finished")


def by_line(dead: list[DeadLetter]) -> dict[int, DeadLetter]:
    out = {}
    for d in dead:
        line = int(d.reason.split(" line ")[1].split(":")[0])
        out[line] = d
    return out


# -- speed-up on the station clock ---------------------------------------------------------
def test_speed_60_releases_rows_when_the_clock_passes_their_scaled_time() -> None:
    src = FileReplaySource(FIXTURES / "ticks.csv", PRICE, speed=60.0)
    first = poll(src, NOW)
    assert [(r["event_time_s"], r["value"], r["category"], r["source"]) for r in first] == [
        (NOW, 101.5, "trade", "ACME")]
    assert poll(src, NOW + 0.99) == []  # the 12:01 row is due 60 s / 60 = 1 s later
    assert [r["value"] for r in poll(src, NOW + 1.0)] == [101.75]
    assert [r["event_time_s"] for r in poll(src, NOW + 2.5)] == [NOW + 2.0]  # scaled, not the poll time
    assert poll(src, NOW + 59.9) == [] and not src.done
    last = poll(src, NOW + 60.0)  # 13:00 is 3600 s after the first row: 60 s of wall time
    assert [(r["event_time_s"], r["value"]) for r in last] == [(NOW + 60.0, 102.0)]
    assert src.done and poll(src, NOW + 1e4) == []
    assert src.drain_rejects() == []


def test_original_time_is_kept_in_text_and_the_edge_accepts_every_record() -> None:
    src = FileReplaySource(FIXTURES / "ticks.csv", PRICE, speed=60.0, start_s=NOW)
    recs = drain_all(src, NOW + 3600)
    assert [r["text"] for r in recs] == [
        "[orig 2024-05-01T12:00:00Z]", "[orig 2024-05-01T12:01:00Z]",
        "[orig 2024-05-01T12:02:00Z]", "[orig 2024-05-01T13:00:00Z]"]
    good, bad = validate_many(recs, now_s=NOW + 3600)
    assert bad == [] and len({e.event_id for e in good}) == 4


def test_a_clock_jump_releases_everything_due_with_scaled_times_in_order() -> None:
    src = FileReplaySource(FIXTURES / "ticks.csv", PRICE, speed=60.0, start_s=NOW)
    recs = poll(src, NOW + 500.0)
    assert [r["event_time_s"] for r in recs] == [NOW, NOW + 1.0, NOW + 2.0, NOW + 60.0]


def test_a_volume_station_reads_the_volume_column_of_the_same_ticks() -> None:
    recs = drain_all(FileReplaySource(FIXTURES / "ticks.csv", VOLUME, speed=None), NOW)
    assert [r["value"] for r in recs] == [300.0, 120.0, 80.0, 500.0]
    assert {r["source_kind"] for r in recs} == {"market_volume"}


def test_speed_none_releases_at_most_batch_rows_per_poll_stamped_with_the_poll_clock() -> None:
    src = FileReplaySource(FIXTURES / "ticks.csv", PRICE, speed=None, batch_rows=2)
    assert [r["event_time_s"] for r in poll(src, NOW)] == [NOW, NOW]  # the header is not a row
    assert [r["event_time_s"] for r in poll(src, NOW + 1)] == [NOW + 1, NOW + 1]
    assert poll(src, NOW + 2) == []
    assert src.done and src.lines_read == 5 and src.emitted == 4


def test_restamp_false_keeps_original_times() -> None:
    src = FileReplaySource(FIXTURES / "ticks.csv", PRICE, speed=None, restamp=False)
    recs = poll(src, NOW)
    assert [r["event_time_s"] for r in recs] == [T12, T12 + 60, T12 + 120, T12 + 3600]
    assert all("text" not in r for r in recs)


def test_rows_before_the_first_row_are_stamped_at_the_start(tmp_path: Path) -> None:
    f = tmp_path / "late.csv"
    f.write_text("timestamp,category\n1714564800,a\n1714564000,b\n1714564860,c\n")
    src = FileReplaySource(f, SENSOR, speed=60.0)
    assert [(r["category"], r["event_time_s"]) for r in poll(src, NOW + 5)] == [
        ("a", NOW + 5), ("b", NOW + 5)]
    assert [(r["category"], r["event_time_s"]) for r in poll(src, NOW + 6)] == [("c", NOW + 6)]


def test_event_rows_from_json_lines() -> None:
    recs = drain_all(FileReplaySource(FIXTURES / "events.jsonl", SENSOR, speed=None), NOW)
    assert [(r["category"], r["value"]) for r in recs] == [("flood", 1.0), ("flood", 3.0), ("fire", 1.0)]
    assert (recs[0]["lat"], recs[0]["lon"]) == (45.1, 12.3)
    assert recs[0]["text"] == "River above warning level [orig 2024-05-01T12:00:00Z]"
    assert recs[2]["source"] == "station-7"
    assert recs[2]["text"] == "[orig 2024-05-01T10:02:00Z]"  # +02:00 converted to UTC


def test_rename_maps_other_column_names(tmp_path: Path) -> None:
    f = tmp_path / "prices.csv"
    f.write_text("Date,Ticker,Close\n2024-05-01,XYZ,10.5\n")
    recs = poll(FileReplaySource(f, PRICE, speed=None,
                                 rename={"Date": "timestamp", "Ticker": "symbol", "Close": "price"}), NOW)
    assert [(r["value"], r["source"]) for r in recs] == [(10.5, "XYZ")]


# -- bad input: dead letters, never an exception -----------------------------------------
def test_every_bad_csv_row_is_a_dead_letter_naming_file_line_and_column() -> None:
    src = FileReplaySource(FIXTURES / "ticks_bad.csv", PRICE, speed=None)
    recs = poll(src, NOW)
    assert [r["value"] for r in recs] == [101.5, 102.25]
    dead = by_line(src.drain_rejects())
    assert sorted(dead) == [3, 4, 5, 6, 7, 8]
    assert all("ticks_bad.csv line" in d.reason for d in dead.values())
    assert all(d.stage == "source.csv" and d.station_id == "px-acme" for d in dead.values())
    assert dead[3].field == "price" and "'not-a-price' is not a number" in dead[3].reason
    assert "has 2 fields; the header on line 1 has 4" in dead[4].reason
    assert "malformed CSV" in dead[5].reason
    assert dead[6].field == "timestamp" and "neither unix seconds nor ISO-8601" in dead[6].reason
    assert dead[7].field == "timestamp" and "after the station clock" in dead[7].reason  # year 2099
    assert dead[8].field == "price" and "not finite" in dead[8].reason
    assert dead[3].payload == "2024-05-01T12:00:30Z,ACME,not-a-price,100"


def test_every_bad_json_line_is_a_dead_letter_with_its_reason() -> None:
    src = FileReplaySource(FIXTURES / "events_bad.jsonl", SENSOR, speed=None)
    recs = poll(src, NOW)
    assert [r["text"].split(" [")[0] for r in recs] == ["fine", "last good"]
    dead = by_line(src.drain_rejects())
    assert sorted(dead) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "is not valid JSON" in dead[2].reason
    assert "is a JSON list, not an object" in dead[3].reason
    assert dead[4].field == "timestamp" and "has no 'timestamp' key" in dead[4].reason
    assert dead[5].field == "category"
    assert dead[6].field == "value" and "True is not a number" in dead[6].reason
    assert dead[7].field == "lat" and "outside [-90, 90]" in dead[7].reason
    assert dead[8].field == "lat/lon"
    assert dead[9].field == "category" and "is not a string" in dead[9].reason


def test_huge_lines_and_huge_fields_are_dead_letters_and_reading_goes_on(tmp_path: Path) -> None:
    f = tmp_path / "huge.csv"
    f.write_text("timestamp,category,text\n"
                 f"2024-05-01T12:00:00Z,a,{'x' * 100_000}\n"
                 f"2024-05-01T12:00:01Z,b,{'y' * 3000}\n"
                 f"2024-05-01T12:00:02Z,{'c' * 65},z\n"
                 "2024-05-01T12:00:03Z,ok,fine\n")
    src = FileReplaySource(f, SENSOR, speed=None)
    assert [r["category"] for r in poll(src, NOW)] == ["ok"]
    dead = by_line(src.drain_rejects())
    assert "is 100024 bytes long; the limit is 16384" in dead[2].reason
    assert dead[2].payload == "2024-05-01T12:00:00Z,a," + "x" * 233  # only its head is kept
    assert dead[3].field == "text" and "3000 characters long; the limit is 2048" in dead[3].reason
    assert dead[4].field == "category" and "65 characters long" in dead[4].reason


def test_not_utf8_and_headerless_files(tmp_path: Path) -> None:
    f = tmp_path / "latin1.csv"
    f.write_bytes(b"timestamp,category,text\n2024-05-01T12:00:00Z,a,caf\xe9\n2024-05-01T12:00:01Z,b,ok\n")
    src = FileReplaySource(f, SENSOR, speed=None)
    assert [r["category"] for r in poll(src, NOW)] == ["b"]
    assert "is not UTF-8 text" in src.drain_rejects()[0].reason

    g = tmp_path / "noheader.csv"
    g.write_text("2024-05-01T12:00:00Z,ACME,101.5,300\n2024-05-01T12:01:00Z,ACME,101.6,200\n")
    src = FileReplaySource(g, PRICE, speed=None)
    assert poll(src, NOW) == []
    (dl,) = src.drain_rejects()
    assert "line 2: has no 'timestamp' column" in dl.reason
    assert "the header on line 1 names: 2024-05-01t12:00:00z,acme" in dl.reason


def test_a_byte_order_mark_and_blank_lines_are_harmless(tmp_path: Path) -> None:
    f = tmp_path / "excel.csv"
    f.write_bytes(b"\xef\xbb\xbftimestamp,category\r\n\r\n2024-05-01T12:00:00Z,a\r\n\r\n")
    src = FileReplaySource(f, SENSOR, speed=None)
    assert [r["category"] for r in poll(src, NOW)] == ["a"] and src.drain_rejects() == []


def test_undrained_rejects_are_bounded_and_counted(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text("not json\n" * 50)
    src = FileReplaySource(f, SENSOR, speed=None, max_rejects=10)
    assert poll(src, NOW) == []
    assert len(src.rejects) == 10 and src.rejects_dropped == 40


def test_a_missing_file_is_a_source_error_naming_the_path(tmp_path: Path) -> None:
    src = FileReplaySource(tmp_path / "gone.csv", PRICE)
    with pytest.raises(SourceError, match=r"cannot open replay file .*gone\.csv.*check the path"):
        poll(src, NOW)


def test_a_file_that_appears_late_starts_its_replay_when_it_appears(tmp_path: Path) -> None:
    f = tmp_path / "later.csv"
    src = FileReplaySource(f, SENSOR, speed=60.0)
    with pytest.raises(SourceError):
        poll(src, NOW)
    f.write_text("timestamp,category\n1714564800,a\n1714564860,b\n")
    assert [r["event_time_s"] for r in poll(src, NOW + 100)] == [NOW + 100]
    assert [r["category"] for r in poll(src, NOW + 101)] == ["b"]


def test_json_nulls_read_as_absent_columns(tmp_path: Path) -> None:
    f = tmp_path / "nulls.jsonl"
    f.write_text('{"timestamp": 1714564800, "category": "a", "lat": null, "lon": null, "text": null}\n')
    (rec,) = poll(FileReplaySource(f, SENSOR, speed=None), NOW)
    assert "lat" not in rec and rec["text"] == "[orig 2024-05-01T12:00:00Z]"


def test_constructor_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass fmt='csv' or fmt='jsonl'"):
        FileReplaySource(tmp_path / "data.txt", SENSOR)
    with pytest.raises(ValueError, match="speed must be > 0"):
        FileReplaySource(tmp_path / "a.csv", SENSOR, speed=0)
    with pytest.raises(ValueError, match="batch_rows"):
        FileReplaySource(tmp_path / "a.csv", SENSOR, batch_rows=0)
    with pytest.raises(ValueError, match="weather"):
        FileReplaySource(tmp_path / "a.csv", StationInfo("s", "weather"))
    src = FileReplaySource(tmp_path / "data.txt", SENSOR, fmt="jsonl")
    assert src.kind == "jsonl"


def test_limits_come_from_the_caller(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("timestamp,category,text\n2024-05-01T12:00:00Z,a,0123456789abcdef\n")
    src = FileReplaySource(f, SENSOR, speed=None, limits=Limits(max_text_chars=10))
    assert poll(src, NOW) == []
    assert "16 characters long; the limit is 10" in src.drain_rejects()[0].reason


# -- shared helpers -------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("2024-05-01T12:00:00Z", T12), ("2024-05-01T12:00:00", T12), ("2024-05-01T14:00:00+02:00", T12),
    ("2024-05-01", T12 - 12 * 3600), (T12, T12), (int(T12), T12), (" 1714564800.5 ", T12 + 0.5),
    (T12 * 1000, T12), ("1714564800000", T12),
])
def test_parse_time_accepts_iso_seconds_and_milliseconds(raw: Any, expected: float) -> None:
    assert parse_time(raw) == expected


@pytest.mark.parametrize("raw", ["", "soon", "nan", "inf", True, None, [1], "9" * 100, -5,
                                 "1900-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", 10**400])
def test_parse_time_refuses_garbage(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_time(raw)


@pytest.mark.parametrize("raw", ["x", "", "nan", False, None, {"a": 1}, "1" * 100])
def test_to_number_refuses_garbage(raw: Any) -> None:
    with pytest.raises(ValueError):
        to_number(raw)


def test_json_lines_of_exported_events_read_event_time_s_as_their_time(tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    f.write_text('{"event_time_s": 1714564800, "category": "quake", "value": 3.1}\n'
                 '{"event_time_s": "later", "category": "quake"}\n'
                 '{"timestamp": 1714564860, "event_time_s": "ignored", "category": "quake"}\n')
    src = FileReplaySource(f, SENSOR, speed=None)
    recs = drain_all(src, NOW)
    assert [r["text"] for r in recs] == ["[orig 2024-05-01T12:00:00Z]", "[orig 2024-05-01T12:01:00Z]"]
    (bad,) = src.drain_rejects()
    assert bad.field == "event_time_s" and "line 2: event_time_s" in bad.reason


# -- property tests (hypothesis): any file is records and one dead letter per bad line ------

_CELL = st.one_of(st.sampled_from(["1714564800", "2024-05-01T12:00:00Z", "101.5", "x", "", "-1",
                                   "1e400", "nan", "quake", '"a,b"', "1e11"]),
                  st.text(max_size=8))
_ROWS = st.lists(st.lists(_CELL, min_size=1, max_size=5), max_size=12)


def _lines_and_dead(path: Path, fmt: str, kind: str) -> tuple[int, list[Any], list[DeadLetter]]:
    src = FileReplaySource(path, StationInfo("s-1", kind), speed=None, fmt=fmt, batch_rows=50)
    recs = drain_all(src, NOW, max_polls=1000)
    return src.lines_read, recs, src.drain_rejects()


def _one_dead_letter_per_line(lines: int, recs: list[Any], dead: list[DeadLetter]) -> None:
    numbers = [int(d.reason.split(" line ")[1].split(":")[0]) for d in dead]
    assert len(numbers) == len(set(numbers)), "a line got more than one dead letter"
    assert all(1 <= n <= lines for n in numbers)
    assert len(recs) + len(dead) <= lines
    assert validate_many(recs, now_s=NOW)[1] == []  # what a replay releases, the edge accepts


@given(st.sampled_from(["timestamp,category,value", "timestamp,price,symbol", "a,b"]), _ROWS,
       st.sampled_from(["sensor", "market_price"]))
def test_any_csv_rows_are_records_or_one_dead_letter_per_line(
        tmp_path_factory: pytest.TempPathFactory, header: str, rows: list[list[str]],
        kind: str) -> None:
    f = tmp_path_factory.mktemp("csv") / "rows.csv"
    f.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    _one_dead_letter_per_line(*_lines_and_dead(f, "csv", kind))


@given(st.binary(max_size=600), st.sampled_from(["csv", "jsonl"]))
def test_any_bytes_never_raise_and_are_one_dead_letter_per_line(
        tmp_path_factory: pytest.TempPathFactory, data: bytes, fmt: str) -> None:
    f = tmp_path_factory.mktemp("raw") / f"data.{fmt}"
    f.write_bytes(data)
    _one_dead_letter_per_line(*_lines_and_dead(f, fmt, "sensor"))


_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                   st.just(1714564800), st.just("2024-05-01T12:00:00Z"),
                   st.lists(st.integers(), max_size=2))


@given(st.lists(st.dictionaries(st.sampled_from(["timestamp", "event_time_s", "category", "value",
                                                 "text", "lat", "lon", "symbol", "price"]),
                                _VALUE, max_size=6), max_size=10))
def test_any_json_lines_are_records_or_one_dead_letter_per_line(
        tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> None:
    f = tmp_path_factory.mktemp("jsonl") / "rows.jsonl"
    # the stdlib writes what orjson will not: huge integers, NaN, Infinity - all must be read
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _one_dead_letter_per_line(*_lines_and_dead(f, "jsonl", "sensor"))


# -- backtests: a simulated clock in the past of a recording ------------------------------
def test_first_time_reads_the_first_good_row_without_consuming_the_source(tmp_path: Path) -> None:
    f = tmp_path / "ticks.csv"
    f.write_text("timestamp,symbol,price\nnot-a-time,ACME,1\n2024-05-01T12:00:00Z,ACME,101.5\n"
                 "2024-05-01T12:00:01Z,ACME,101.6\n")
    src = FileReplaySource(f, PRICE, speed=1.0)
    assert src.first_time() == parse_time("2024-05-01T12:00:00Z")
    assert src.drain_rejects() == []  # the peek's dead letter is not this source's
    recs = poll(src, NOW)  # the source itself starts at the beginning
    assert [r["value"] for r in recs] == [101.5]
    assert [d.field for d in src.drain_rejects()] == ["timestamp"]
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,symbol,price\n")
    assert FileReplaySource(empty, PRICE).first_time() is None


def test_a_recording_newer_than_a_simulated_clock_is_history_not_the_future(tmp_path: Path) -> None:
    """A simulated clock may run before a recording's dates (they are still in the real
    past): its rows are re-stamped, not refused as "after the station clock"."""
    f = tmp_path / "ticks.csv"
    f.write_text("timestamp,symbol,price\n2024-05-01T12:00:00Z,ACME,101.5\n")
    sim_now = 1_600_000_000.0  # 2020, before the recording
    recs = poll(FileReplaySource(f, PRICE, speed=1.0, start_s=sim_now), sim_now)
    assert [(r["event_time_s"], r["text"]) for r in recs] == [(sim_now, "[orig 2024-05-01T12:00:00Z]")]


def test_a_row_replayed_at_its_own_time_carries_no_orig_note(tmp_path: Path) -> None:
    f = tmp_path / "ticks.csv"
    f.write_text("timestamp,symbol,price\n2024-05-01T12:00:00Z,ACME,101.5\n")
    t = parse_time("2024-05-01T12:00:00Z")
    (rec,) = poll(FileReplaySource(f, PRICE, speed=1.0, start_s=t), t)
    assert rec["event_time_s"] == t and "text" not in rec


# -- when the next row is due (step delivery in a backtest) ------------------------------
def test_next_due_says_when_the_next_row_is_due_and_inf_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "gap.csv"
    path.write_text("timestamp,category\n1000,a\n1001,b\n1001,oops,x\n90000,c\n")
    src = FileReplaySource(path, SENSOR, speed=1.0, start_s=NOW)
    assert src.next_due_s(NOW) is None  # not started: the first poll fixes the start
    assert [r["category"] for r in poll(src, NOW)] == ["a"]
    assert src.next_due_s(NOW) == NOW + 1.0
    assert [r["category"] for r in poll(src, NOW + 1.0)] == ["b"]
    # past the bad line to the row after the gap: due a day later; the bad line is dead
    assert src.next_due_s(NOW + 1.0) == NOW + 89_000.0
    assert [d.reason.split(":")[0] for d in src.drain_rejects()] == [f"file {path} line 4"]
    assert [r["category"] for r in poll(src, NOW + 89_000.0)] == ["c"]
    assert src.next_due_s(NOW + 89_000.0) == float("inf") and src.done
    fast = FileReplaySource(path, SENSOR, speed=None)
    poll(fast, NOW)
    assert fast.next_due_s(NOW) is None  # as fast as possible: nothing to wait for
