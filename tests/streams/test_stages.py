"""The first stage keeps a few of each active station's events for the report, with what
the analyst needs of them: the headline, its link and where it came from."""

from __future__ import annotations

import numpy as np
import orjson

from convergence.detectors.evidence import EVIDENCE_FLAGS, EVIDENCE_Z
from convergence.detectors.node_state import EVIDENCE_TYPES
from convergence.detectors.processor import TickProcessor
from convergence.records import MAX_EVIDENCE_PER_STATION, NODE_EVIDENCE_FIELDS, NodeEvidence
from convergence.responses.reports import Reporter
from convergence.schema import make_event
from convergence.settings import load_settings
from convergence.stations import StationInfo, StationRegistry
from convergence.streams.stages import RegionStage, StationStage, pack_evidence, unpack_evidence


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


# -- the record between the stages: the trend and scale evidence, old records ----------

def _settled(n: int) -> dict[str, np.ndarray]:
    ev: dict[str, np.ndarray] = {k: np.zeros(n) for k in EVIDENCE_Z}
    ev |= {k: np.zeros(n, bool) for k in EVIDENCE_FLAGS}
    ev["concentration_bin"] = np.zeros(n, np.int64)
    ev["regime"] = np.full(n, -1, np.int64)
    return ev


def test_trend_and_scale_evidence_cross_to_the_second_stage_and_back() -> None:
    ev = _settled(2)
    ev["burst_z"][1], ev["trend_z"][1], ev["scale_z"][1] = 5.0, 4.5, 6.25
    ev["burst"][1], ev["concentration_bin"][1] = True, 3
    row = pack_evidence(ev, 1)
    assert len(row) == len(NODE_EVIDENCE_FIELDS)
    assert dict(zip(NODE_EVIDENCE_FIELDS, row, strict=True))["trend_z"] == 4.5
    ne = NodeEvidence.from_dict(orjson.loads(orjson.dumps(NodeEvidence(7, 8.0, {"a": row}).to_dict())))
    back, unknown = unpack_evidence(ne, {"a": 1}.get, 2)
    assert unknown == []
    for k in (*EVIDENCE_Z, "concentration_bin", "regime", *EVIDENCE_FLAGS):
        np.testing.assert_array_equal(back[k], ev[k], err_msg=k)


def test_a_record_from_before_the_trend_and_scale_evidence_still_reads() -> None:
    # what an older first stage sends: eight fields, no trend or scale z
    old = {"tick": 5, "time_s": 6.0, "stations": {"news-1": [6.0, 0, 0, 2.5, 0, 3, 1, -1]}}
    ev, unknown = unpack_evidence(NodeEvidence.from_dict(old), {"news-1": 0}.get, 1)
    assert unknown == [] and ev["burst_z"][0] == 6.0 and ev["periodicity_z"][0] == 2.5
    assert ev["trend_z"][0] == 0.0 and ev["scale_z"][0] == 0.0
    assert bool(ev["burst"][0]) and ev["concentration_bin"][0] == 3 and ev["regime"][0] == -1


def test_the_first_stage_runs_the_price_charts_on_price_stations_only() -> None:
    s = load_settings(env={}, config_path=None)
    reg = StationRegistry([StationInfo("px-1", "market_price", "eu", rate_per_s=1.0),
                           StationInfo("news-1", "osint_news", "eu", rate_per_s=1.0)])
    stage = StationStage(s, reg, TickProcessor())
    t0 = 1_800_000_000.0
    evs = [make_event(sid, kind, t0 + t + 0.5, "markets", 100.0 + t / 100)
           for t in range(40) for sid, kind in (("px-1", "market_price"), ("news-1", "osint_news"))]
    stage.ingest_events(evs, t0 + 40.0)
    stage.close_until(t0 + 45.0)
    n = stage.state["price_trend"]["n"]
    assert float(n[0]) >= 39.0 and float(n[1]) == 0.0  # the news station's value is no price
    assert float(stage.state["trend"]["n"][1]) >= 39.0  # its activity is charted all the same


def _reporter(proc: TickProcessor) -> Reporter:
    return Reporter(window_ticks=proc.chain.meter.window_ticks, tick_s=1.0, meter=proc.chain.meter)


def test_a_region_checkpoint_from_before_the_trend_and_scale_evidence_loads() -> None:
    s = load_settings(env={}, config_path=None)
    reg = StationRegistry([StationInfo("news-1", "osint_news", "eu", rate_per_s=1.0)])
    proc = TickProcessor()
    first = RegionStage(s, reg, proc, _reporter(proc))
    first.step(NodeEvidence(5, 6.0, {"news-1": (9.5, 0.0, 0.0, 0.0, 0.0, 3, 1, -1, 0.0, 0.0)}))
    doc = orjson.loads(orjson.dumps(first.to_dict()))
    node = doc["state"]["node"]["arrays"]["arrays"]["peak"]
    # as an older build wrote it: seven evidence types per station
    node["shape"] = [1, 7]
    node["data"] = node["data"][:7]
    heir_reg = StationRegistry([])
    heir = RegionStage(s, heir_reg, proc, _reporter(proc))
    heir.load(doc)
    peak = heir.state["node"]["peak"]
    assert peak.shape == (1, len(EVIDENCE_TYPES)) and float(peak[0, 0]) == 9.5
    assert float(peak[0, EVIDENCE_TYPES.index("trend")]) == 0.0
    heir.step(NodeEvidence(6, 7.0, {"news-1": (9.5, 0.0, 0.0, 0.0, 0.0, 3, 1, -1, 4.0, 0.0)}))
    assert heir.last_tick == 6


# -- a feed that stops and comes back --------------------------------------------------


def test_a_whole_fleet_coming_back_after_a_silence_is_no_evidence() -> None:
    """Every station's feed stops for 40 s (the last events one hour's end, so the
    silence opens a new slot of the daily profile) and comes back at its usual rate.
    The silent ticks teach nothing (a busy station's silence is implausible for its own
    rate: an outage, not a quiet spell), so the return is no burst: before, every
    station's profile learned zero for the new hour and the return read as a departure
    of 20 sd or more, everywhere at once (the cluster benchmark saw every region alert)."""
    s = load_settings(env={}, config_path=None)
    kinds = ["osint_news", "osint_social", "sensor", "market_volume"]
    reg = StationRegistry([StationInfo(f"st-{i}", k, "eu", f"g{i}", rate_per_s=20.0)
                           for i, k in enumerate(kinds)])
    stage = StationStage(s, reg, TickProcessor())
    rng = np.random.default_rng(3)
    hour = 1_800_000_000.0  # an hour's start: the silence begins a new daily-profile slot

    def events(a: float, b: float) -> list:
        return [make_event(f"st-{i}", k, float(t), "routine", 1.0)
                for i, k in enumerate(kinds)
                for t in np.sort(rng.uniform(a, b, rng.poisson(20.0 * (b - a))))]

    lateness = s.allowed_lateness_s + 1.0
    for a in range(-300, 0, 10):  # five minutes at the usual rate
        stage.ingest_events(events(hour + a, hour + a + 10), hour + a + 10)
        stage.close_until(hour + a + 10 - lateness)
    stage.close_until(hour + lateness)  # the last ticks with events (and a few silent ones)
    mu_before = np.asarray(stage.state["burst"]["mu"]).copy()
    stage.close_until(hour + 40.0 + lateness)  # forty silent seconds: wall time closes them
    assert np.allclose(stage.state["burst"]["mu"], mu_before)  # nothing learned from them
    stage.ingest_events(events(hour + 40, hour + 50), hour + 50)
    back = stage.close_until(hour + 50 + lateness)
    assert back and back[-1].time_s >= hour + 50  # the return's ticks closed
    z = [abs(float(x)) for ne in back for row in ne.stations.values()
         for x, name in zip(row, NODE_EVIDENCE_FIELDS, strict=False) if name.endswith("_z")]
    # no station reads its return as an anomaly (without the pause: 20-30 sd; with it, the
    # largest of 60 seeds' ticks is about 4.3, ordinary noise of a 4-station fleet)
    assert max(z, default=0.0) < 8.0
