"""``convergence stations probe``: events on stdout, dead letters on stderr, exit codes."""

from __future__ import annotations

import email.utils
import json
import time
from pathlib import Path
from typing import Any

import orjson
import typer
from typer.testing import CliRunner

from convergence.cli.probe import probe

FIXTURES = Path(__file__).resolve().parents[1] / "ground_stations" / "fixtures"

# mounted the way the stations group mounts it
app = typer.Typer()


@app.callback()
def _stations() -> None:
    """Ground stations."""


app.command("probe")(probe)
runner = CliRunner()




import feed_server as fs  # noqa: E402 - on sys.path via tests/conftest.py


def run(*args: str) -> Any:
    return runner.invoke(app, ["probe", *args])


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def fresh_rss(n: int) -> bytes:
    """A feed dated just now: the probe validates against the real clock."""
    items = "".join(
        f"<item><guid>g{i}</guid><title>Headline {i}</title><category>Politics</category>"
        f"<pubDate>{email.utils.formatdate(time.time() - 60 * (i + 1), usegmt=True)}</pubDate></item>"
        for i in range(n))
    return f'<rss version="2.0"><channel><title>t</title>{items}</channel></rss>'.encode()


def test_a_tick_file_prints_one_json_event_per_line() -> None:
    r = run(str(FIXTURES / "ticks.csv"), "--source-kind", "market_price", "--station-id", "px-acme")
    assert r.exit_code == 0, r.output
    events = lines(r.stdout)
    assert [e["value"] for e in events] == [101.5, 101.75, 101.6, 102.0]
    assert {e["station_id"] for e in events} == {"px-acme"} and all(e["event_id"] for e in events)
    assert "probe: 4 good event(s), 0 dead letter(s)" in r.stderr


def test_dead_letters_are_readable_lines_on_stderr() -> None:
    r = run(str(FIXTURES / "events_bad.jsonl"), "--source-kind", "sensor")
    assert r.exit_code == 0, r.output
    assert len(lines(r.stdout)) == 2
    assert "dead letter [source.jsonl] timestamp: file " in r.stderr
    assert "events_bad.jsonl line 4: has no 'timestamp' key" in r.stderr
    assert "payload: '{\"category\": \"flood\", \"text\": \"no time\"}'" in r.stderr
    assert "2 good event(s), 8 dead letter(s)" in r.stderr


def test_no_good_event_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("timestamp,category\nnever,a\n")
    r = run(str(f), "--source-kind", "sensor")
    assert r.exit_code == 1 and r.stdout == ""
    assert f"error: no good events from {f}: see the dead letters above" in r.stderr
    assert "Traceback" not in r.output
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,category\n")
    r = run(str(empty))
    assert r.exit_code == 1 and "the source has no items to show" in r.stderr


def test_a_live_rss_feed(server: Any) -> None:
    url = server.answer("/cli/feed", fs.Answer(200, fresh_rss(3), "application/rss+xml"))
    r = run(url, "--limit", "2")
    assert r.exit_code == 0, r.output
    events = lines(r.stdout)
    assert [(e["category"], e["text"], e["source_kind"]) for e in events] == [
        ("politics", "Headline 0", "osint_news"), ("politics", "Headline 1", "osint_news")]


def test_a_json_api_with_field_mapping(server: Any) -> None:
    now = time.time()
    doc = {"data": {"items": [{"ts": now - 30, "type": "quake", "mag": "4.1", "geo": {"lat": 1, "lon": 2}},
                              {"ts": now - 20, "mag": 2.0}]}}
    url = server.answer("/cli/api", fs.Answer(200, orjson.dumps(doc), "application/json"))
    r = run(url, "--kind", "json", "--source-kind", "sensor", "--items-path", "data.items",
            "--map", "event_time_s=ts", "--map", "category=type", "--map", "value=mag",
            "--map", "lat=geo.lat", "--map", "lon=geo.lon", "--map", "source==usgs")
    assert r.exit_code == 0, r.output
    (event,) = lines(r.stdout)
    assert (event["category"], event["value"], event["lat"], event["source"]) == ("quake", 4.1, 1.0, "usgs")
    assert "item 1: category path 'type' is missing" in r.stderr


def test_bad_options_are_usage_errors(server: Any) -> None:
    r = run(str(FIXTURES / "ticks.csv"), "--map", "category")
    assert r.exit_code == 2 and "write FIELD=PATH" in r.stderr
    r = run(str(FIXTURES / "ticks.csv"), "--kind", "xml")
    assert r.exit_code == 2
    r = run(str(FIXTURES / "ticks.csv"), "--source-kind", "weather")
    assert r.exit_code == 1 and "source kind 'weather' is not known; use one of" in r.stderr


def test_unreachable_sources_fail_with_the_reason(server: Any, tmp_path: Path) -> None:
    url = server.answer("/cli/down", fs.Answer(503, b"", "text/plain"))
    r = run(url)
    assert r.exit_code == 1 and f"error: GET {url} answered HTTP 503" in r.stderr
    r = run(str(tmp_path / "nope.csv"))
    assert r.exit_code == 1 and "neither an http(s) URL nor a readable file" in r.stderr
    assert "Traceback" not in r.output


def test_help_names_the_options() -> None:
    r = run("--help")
    assert r.exit_code == 0
    for opt in ("--kind", "--station-id", "--source-kind", "--map", "--items-path", "--limit"):
        assert opt in r.output


# -- issue 11, item 19: a local feed file, event_time_s rows, wrong-kind files, bad ids ------


def test_a_saved_rss_or_atom_file_is_probed_like_the_feed(tmp_path: Path) -> None:
    for name in ("saved.xml", "saved.rss", "saved-no-extension"):
        f = tmp_path / name
        f.write_bytes(fresh_rss(3))
        r = run(str(f), "--station-id", "news-probe")
        assert r.exit_code == 0, r.output
        events = lines(r.stdout)
        assert [e["text"] for e in events] == ["Headline 0", "Headline 1", "Headline 2"]
        assert {e["category"] for e in events} == {"politics"} and events[0]["source"] == name
    forced = run(str(tmp_path / "saved.xml"), "--kind", "rss", "--limit", "1")
    assert forced.exit_code == 0 and len(lines(forced.stdout)) == 1


def test_json_lines_keyed_event_time_s_read_as_their_time(tmp_path: Path) -> None:
    now = time.time()
    f = tmp_path / "exported.jsonl"
    f.write_text("".join(json.dumps({"event_time_s": now - 60 * i, "category": "quake",
                                     "value": 2.5 + i}) + "\n" for i in range(3)))
    r = run(str(f), "--source-kind", "sensor")
    assert r.exit_code == 0, r.output
    assert [e["value"] for e in lines(r.stdout)] == [2.5, 3.5, 4.5]
    assert "0 dead letter(s)" in r.stderr


def test_a_file_of_the_wrong_kind_is_summarised_not_a_line_per_row(tmp_path: Path) -> None:
    f = tmp_path / "prices.csv"
    f.write_text("timestamp,price\n" + "".join(f"{1_700_000_000 + i},{100 + i}\n" for i in range(600)))
    r = run(str(f), "--source-kind", "osint_news")  # news rows need a category column
    assert r.exit_code == 1
    err = r.stderr.splitlines()
    assert len(err) < 30, f"{len(err)} stderr lines"
    assert "... and 590 more dead letters not shown (by field: category 590)" in r.stderr
    assert "0 good event(s), 600 dead letter(s)" in r.stderr


def test_an_empty_station_id_is_one_error() -> None:
    r = run(str(FIXTURES / "ticks.csv"), "--source-kind", "market_price", "--station-id", "")
    assert r.exit_code == 1
    errors = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: station id '' is not valid")
