"""A realistic converged-region episode as :class:`~convergence.records.Report` revisions.

The pipeline produces reports from live or simulated data; this module builds the same
records without running it, for the places that need a full, believable report and
cannot wait for an episode: the rendering examples, the store benchmark (many distinct
reports, one per seed) and tests. Nothing in the product reads these as real findings.

The episode: in ``region``, a news wire and a social account surge, market prices and
volumes of the region's exchange switch regime, a sensor bursts; the meter goes watch →
warning → converged within seconds, adaptive responses go out and are acknowledged, and
the episode ends minutes later. :func:`example_revisions` returns each revision as the
pipeline would have written it (watch, warning, converged, closed); :func:`example_report`
is the last one. Every number flows from ``seed``.

Examples
--------
>>> revs = example_revisions(seed=3)
>>> [(r.revision, r.level.value, r.status) for r in revs]
[(1, 'watch', 'open'), (2, 'warning', 'open'), (3, 'converged', 'open'), (4, 'quiet', 'closed')]
>>> final = example_report(seed=3)
>>> final == revs[-1], final.peak_level.value, len(final.contributions), final.outcome is not None
(True, 'converged', 7, True)
>>> example_report(seed=3).report_id == final.report_id != example_report(seed=4).report_id
True
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from convergence.detectors.meter import FEATURE_NAMES
from convergence.records import (
    MAX_SCORE_POINTS,
    AckNote,
    Confidence,
    Contribution,
    EvidenceSample,
    Level,
    MeterMethod,
    Outcome,
    PatternNote,
    Report,
    ResponseTaken,
    TimelineEntry,
    bounded,
)

__all__ = ["example_report", "example_revisions"]

#: 2026-03-14T03:12:00Z: the first example episode starts here; seed ``k`` starts k hours later
BASE_START_S = 1_773_457_920.0

_HEADLINES = (
    ("Explosion reported at {port} container terminal, shipping halted", "port-blast"),
    ("Officials confirm fire at {port} fuel depot; roads closed", "fuel-depot-fire"),
    ("Tankers diverted from {port} after blast, agents say", "tankers-diverted"),
    ("Witnesses describe smoke over {port} harbour", "smoke-harbour"),
    ("Insurers suspend cover for {port} calls pending review", "insurers-suspend"),
)
_POSTS = (
    "huge bang near the {port} docks, windows shaking #breaking",
    "video: black smoke over {port} port right now",
    "all trucks turned back at {port} gate 4, police everywhere",
    "my cousin works at {port}, they evacuated the whole terminal",
    "sirens for 20 minutes now around {port}",
)
_KIND_WORDS = {"osint_news": "news", "osint_social": "social media", "market_price": "market price",
               "market_volume": "market volume", "sensor": "sensor"}
_PORTS = {"mena": "Jebel Ali", "eu-west": "Rotterdam", "eu-east": "Constanta", "apac": "Singapore",
          "na-east": "Newark", "na-west": "Long Beach"}


def _hid(prefix: str, *parts: object) -> str:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest()
    return f"{prefix}-{digest}"


@dataclass(frozen=True)
class _Station:
    id: str
    kind: str
    group: str
    at: int  # tick offset at which it joins the episode
    peak: dict[str, float]


def _stations(region: str, rng: np.random.Generator) -> list[_Station]:
    """The seven stations that move, strongest first, with their peak evidence (in sd)."""
    n = [int(x) for x in rng.integers(0, 40, 6)]

    def sid(kind: str, k: int) -> str:
        return f"{kind}-{region}-{k:03d}"

    news, news2 = sid("news", 3 * (n[0] // 3)), sid("news", 3 * (n[0] // 3) + 1)
    wire, exchange = f"wire-{n[0] // 3:02d}", f"exchange-{region}"
    j = float(rng.uniform(0.9, 1.1))
    social, social2, sensor = sid("social", n[2]), sid("social", n[4] + 40), sid("sensor", n[3])
    return [
        _Station(news, "osint_news", wire, 0, {"burst": round(9.1 * j, 2), "entropy": round(4.4 * j, 2)}),
        _Station(sid("price", n[1]), "market_price", exchange, 2,
                 {"regime": round(8.0 * j, 2), "change": round(4.2 * j, 2)}),
        _Station(social, "osint_social", social, 0, {"burst": round(7.3 * j, 2), "pattern": 6.0}),
        _Station(sensor, "sensor", sensor, 4,
                 {"burst": round(5.6 * j, 2), "periodicity": round(3.8 * j, 2)}),
        _Station(social2, "osint_social", social2, 3,
                 {"burst": round(5.1 * j, 2), "entropy": round(2.9 * j, 2)}),
        _Station(sid("volume", n[1]), "market_volume", exchange, 3,
                 {"burst": round(6.2 * j, 2), "regime": round(5.0 * j, 2)}),
        _Station(news2, "osint_news", wire, 1, {"burst": round(8.4 * j, 2)}),
    ]


def _contributions(region: str, stations: list[_Station], episode_tick: int,
                   upto: int) -> tuple[Contribution, ...]:
    """Stations that joined by tick offset ``upto``; a correlated one counts a quarter."""
    joined = [s for s in stations if s.at <= upto]
    best: dict[str, str] = {}
    weight: dict[str, float] = {}
    for s in joined:
        strength = sum(s.peak.values())
        if s.group in best:
            weight[s.id] = 0.25 * strength
        else:
            best[s.group] = s.id
            weight[s.id] = strength
    total = sum(weight.values()) or 1.0
    out = []
    for s in joined:
        share = weight[s.id] / total
        psum = sum(s.peak.values())
        lead = best[s.group]
        out.append(Contribution(
            station_id=s.id, source_kind=s.kind, region=region, share=round(share, 4),
            peak_evidence=dict(s.peak), by_type={t: round(share * v / psum, 4) for t, v in s.peak.items()},
            group=s.group, correlated=lead != s.id, correlated_with=None if lead == s.id else lead,
            joined_tick=episode_tick + s.at))
    return tuple(sorted(out, key=lambda c: -c.share))


def _evidence(region: str, stations: list[_Station], start_s: float,
              rng: np.random.Generator, upto: int) -> tuple[EvidenceSample, ...]:
    port = _PORTS.get(region, "the main port")
    out: list[EvidenceSample] = []
    price = float(rng.uniform(60, 140))
    for s in stations:
        if s.at > upto:
            continue
        for k in range(3 if s.kind.startswith("osint") else 2):
            t = start_s + s.at - 0.9 + 0.3 * k  # the events that made the station move
            if s.kind == "osint_news":
                title, slug = _HEADLINES[(k + (2 if s.id.endswith("1") else 0)) % len(_HEADLINES)]
                out.append(EvidenceSample(s.id, t, "disaster", 1.0, text=title.format(port=port),
                                          link=f"https://wire.example.net/{region}/{slug}-{k}",
                                          source="wire.example.net"))
            elif s.kind == "osint_social":
                out.append(EvidenceSample(s.id, t, "disaster", 1.0,
                                          text=_POSTS[(k + s.at) % len(_POSTS)].format(port=port),
                                          link=f"https://social.example.org/p/{hash_int(s.id, k)}",
                                          source="social.example.org"))
            elif s.kind == "market_price":
                price *= 1.0 + float(rng.uniform(0.01, 0.035))
                out.append(EvidenceSample(s.id, t, "trade", round(price, 2), source="exchange feed"))
            elif s.kind == "market_volume":
                out.append(EvidenceSample(s.id, t, "trade", float(rng.integers(40_000, 90_000)),
                                          source="exchange feed"))
            else:
                out.append(EvidenceSample(s.id, t, "seismic", round(float(rng.uniform(2.5, 4.0)), 2),
                                          source="sensor array"))
    return tuple(out)


def hash_int(*parts: object) -> int:
    """A stable integer from ``parts`` (post ids in the example links)."""
    return int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=6).digest())


def _responses(region: str, contribs: tuple[Contribution, ...], start_s: float, episode_tick: int,
               level: Level) -> tuple[ResponseTaken, ...]:
    out: list[ResponseTaken] = []
    watch_ids = [c.station_id for c in contribs][:3]
    for sid in watch_ids:
        out.append(ResponseTaken(
            _hid("rsp", episode_tick, "burst", sid), "burst_mode", f"station:{sid}",
            {"interval_s": 0.25}, start_s, start_s + 120.0, f"station {sid} is part of a watch",
            (AckNote(sid, True, start_s + 0.6, "interval 0.25 s"),)))
    if level >= Level.WARNING:
        t = start_s + 3
        members = [c.station_id for c in contribs]
        for action, params in (("burst_mode", {"interval_s": 0.25}), ("set_thresholds", {"scale": 0.8})):
            acks = tuple(AckNote(sid, True, t + 0.5 + 0.1 * i) for i, sid in enumerate(members[:4]))
            acks += (AckNote(members[-1], False, t + 1.5, "source unreachable, retrying"),)
            out.append(ResponseTaken(
                _hid("rsp", episode_tick + 3, action, region), action, f"region:{region}", params,
                t, t + 120.0, f"meter warning at tick {episode_tick + 3}: region {region} involved",
                acks))
    if level >= Level.CONVERGED:
        t = start_s + 6
        out.append(ResponseTaken(
            _hid("rsp", episode_tick + 6, "escalate"), "escalate", "on-call analyst", {}, t, None,
            f"converged across {len(contribs)} stations in {region}: page the on-call analyst"))
    return tuple(out)


def _series(rng: np.random.Generator, episode_tick: int, n_ticks: int) -> list[tuple[int, float]]:
    """Score per tick: a rise to a peak near 91 by tick 8, a slow decay afterwards."""
    out = []
    for k in range(n_ticks):
        rise = 31.0 + 61.0 * (1 - math.exp(-k / 2.5))
        base = rise if k <= 8 else rise * math.exp(-(k - 8) / 90.0)
        out.append((episode_tick + k, round(max(0.0, base + float(rng.normal(0, 1.5))), 1)))
    return out


def example_revisions(seed: int = 0, *, region: str = "mena",
                      start_s: float | None = None) -> list[Report]:
    """The revisions of one example episode (watch, warning, converged, closed); see module doc."""
    rng = np.random.default_rng(seed)
    start = BASE_START_S + 3600.0 * seed if start_s is None else float(start_s)
    episode_tick = int(start)
    report_id = _hid("rpt", region, episode_tick)
    stations = _stations(region, rng)
    end_offset = 300 + int(rng.integers(0, 240))
    series_all = _series(rng, episode_tick, end_offset + 1)
    confidence = Confidence(
        probability=round(float(rng.uniform(0.84, 0.92)), 3), campaign="monte-carlo default (seed 7)",
        n_runs=600, basis="share of simulated runs that reached converged at this score "
                          "with news and market corroboration and were genuine")
    regimes = {stations[1].id: "stressed", stations[5].id: "crisis"}
    stages = [(0, Level.WATCH), (3, Level.WARNING), (6, Level.CONVERGED), (end_offset, Level.QUIET)]
    timeline_all: list[TimelineEntry] = []
    for off, lvl in stages[:3]:
        timeline_all.append(TimelineEntry(episode_tick + off, start + off, "level",
                                          series_all[off][1], level=lvl))
    for st in sorted(stations, key=lambda st: st.at):
        timeline_all.append(TimelineEntry(episode_tick + st.at, start + st.at + 0.01, "joined",
                                          series_all[st.at][1], station_id=st.id))
    timeline_all.append(TimelineEntry(episode_tick + 40, start + 40, "left", series_all[40][1],
                                      station_id=stations[3].id))
    timeline_all.append(TimelineEntry(episode_tick + end_offset, start + end_offset, "ended",
                                      series_all[end_offset][1], level=Level.QUIET))
    timeline_all.sort(key=lambda e: (e.time_s, e.what))
    dark = f"sensor-{region}-{int(rng.integers(40, 60)):03d}"
    # the same events whichever revision cites them (a revision sees those up to its time)
    evidence_all = _evidence(region, stations, start, rng, 6)
    revisions: list[Report] = []
    peak_score = 0.0
    for number, (off, lvl) in enumerate(stages, start=1):
        closed = lvl == Level.QUIET
        upto = off if not closed else end_offset
        contribs = _contributions(region, stations, episode_tick, min(upto, 6) if not closed else 6)
        series = series_all[: upto + 1]
        peak_score = max(s for _, s in series)
        peak_level = max((lv for o, lv in stages[:3] if o <= upto), key=lambda lv: lv.rank)
        score = series[-1][1]
        kinds = sorted({c.source_kind for c in contribs})
        by_kind: dict[str, float] = {}
        by_ev: dict[str, float] = {}
        for c in contribs:
            by_kind[c.source_kind] = round(by_kind.get(c.source_kind, 0.0) + c.share, 4)
            for t, v in c.by_type.items():
                by_ev[t] = round(by_ev.get(t, 0.0) + v, 4)
        moved = {c.source_kind for c in contribs}
        missing = [k for k in ("osint_news", "osint_social", "market_price", "market_volume", "sensor")
                   if k not in moved]
        correlated = [c for c in contribs if c.correlated]
        checks = [f"No {_KIND_WORDS[k]} station has moved yet: if this is real, expect one "
                  f"in {region} within minutes; its silence argues for a false alarm" for k in missing]
        checks += [f"{c.station_id} shares {c.group} with {c.correlated_with}: confirm it from an "
                   "independent source before counting it twice" for c in correlated]
        if regimes:
            checks.append(f"Confirm the move on {region}'s exchange with a second venue; "
                          f"a feed glitch would show on one venue only")
        features = dict.fromkeys(FEATURE_NAMES, 0.0)
        features.update(
            evidence=round(peak_score / 15.0, 3), n_kinds=float(len(kinds)),
            n_osint_groups=float(len({c.group for c in contribs if c.source_kind.startswith("osint")})),
            n_nodes=float(len(contribs)), n_groups=float(len({c.group for c in contribs})),
            max_strength=1.0, mean_strength=round(0.6 + 0.05 * len(contribs), 3),
            active_share=round(len(contribs) / 41.0, 3), market_share=round(
                sum(c.share for c in contribs if c.source_kind.startswith("market")), 3),
            rule_score=score)
        t_rev = start + upto
        revisions.append(Report(
            report_id=report_id, revision=number, region=region, episode_tick=episode_tick,
            tick=episode_tick + upto, time_s=t_rev, level=lvl, peak_level=peak_level, score=score,
            peak_score=peak_score, status="closed" if closed else "open",
            title=(f"{peak_level.value.upper()}: {len(contribs)} stations across {len(kinds)} "
                   f"source kinds in {region} (peak score {peak_score:.0f})"),
            summary=(f"Within 8 s, {len(contribs)} streams in {region} turned anomalous together: "
                     f"{', '.join(_KIND_WORDS[k] for k in kinds)}. "
                     + (f"{len(correlated)} share an upstream feed or exchange with a stronger "
                        "station and were discounted. " if correlated else "")
                     + "OSINT sources corroborate the move."),
            method=MeterMethod("rule"), confidence=confidence,
            contributions=contribs, by_kind=by_kind, by_evidence=by_ev,
            timeline=tuple(e for e in timeline_all if e.time_s <= t_rev + 0.5),
            score_series=bounded(series, MAX_SCORE_POINTS),
            evidence=tuple(e for e in evidence_all if e.time_s <= t_rev
                           and e.station_id in {c.station_id for c in contribs}),
            regimes=regimes if upto >= 2 else {}, dark_stations=(dark,) if upto >= 3 else (),
            patterns=(PatternNote("social-news-market", episode_tick + 1, episode_tick + 2,
                                  (stations[2].id, stations[0].id, stations[1].id)),)
            if upto >= 2 else (),
            responses=_responses(region, contribs, start, episode_tick, peak_level),
            checks=tuple(checks),
            outcome=Outcome(start, start + end_offset, peak_score, peak_level) if closed else None,
            alert_ids=tuple(_hid("alt", episode_tick, lv.value) for o, lv in stages[1:3] if o <= upto),
            features=features, tick_s=1.0, window_s=8.0, run_id=f"example-{seed}"))
    return revisions


def example_report(seed: int = 0, *, region: str = "mena", start_s: float | None = None) -> Report:
    """The final (closed) revision of :func:`example_revisions`."""
    return example_revisions(seed, region=region, start_s=start_s)[-1]
