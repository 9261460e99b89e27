"""The first stage keeps a few of each active station's events for the report, with what
the analyst needs of them: the headline, its link and where it came from."""

from __future__ import annotations

from convergence.detectors.processor import TickProcessor
from convergence.records import MAX_EVIDENCE_PER_STATION
from convergence.schema import make_event
from convergence.settings import load_settings
from convergence.stations import StationInfo, StationRegistry
from convergence.streams.stages import StationStage


def test_a_bursting_stations_samples_carry_headline_link_and_source() -> None:
    s = load_settings(env={}, config_path=None)
    reg = StationRegistry([StationInfo("news-1", "osint_news", "eu", "wire-a", rate_per_s=0.5)])
    stage = StationStage(s, reg, TickProcessor())
    t0 = 1_800_000_000.0
    quiet = [make_event("news-1", "osint_news", t0 + t + 0.5, "politics", 1.0, text=f"routine {t}")
             for t in range(0, 120, 2)]
    burst = [make_event("news-1", "osint_news", t0 + 120.2 + i / 100, "conflict", 1.0,
                        text=f"Port blast {i}", source="wire-a",
                        url=f"https://wire.example/port-blast-{i}") for i in range(60)]
    stage.ingest_events(quiet, t0 + 120.0)
    stage.close_until(t0 + 120.0)
    stage.ingest_events(burst, t0 + 121.0)
    closed = stage.close_until(t0 + 126.0)  # past the allowed lateness
    samples = [x for ne in closed for x in ne.samples.get("news-1", ())]
    assert 0 < len(samples) <= MAX_EVIDENCE_PER_STATION
    for x in samples:
        i = int(x.text.rsplit(" ", 1)[1]) if x.text else -1
        assert (x.text, x.link, x.source) == (f"Port blast {i}", f"https://wire.example/port-blast-{i}",
                                              "wire-a")
