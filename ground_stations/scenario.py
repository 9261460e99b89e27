"""Synthetic scenarios: a fleet, a timeline of episodes, and the world they imply.

A :class:`Scenario` is the ground truth that synthetic stations sample and that the
Monte Carlo simulator scores against. It holds the fleet (one
:class:`~convergence.stations.StationInfo` per station, with its sampling interval and
clock skew), a daily rhythm, and a list of :class:`Episode` s — genuine convergences
(several kinds in one region turning together, at once or as a cascade) and everything
that must *not* alert: one station surging alone, a market-wide move with no OSINT,
stations on one upstream source bursting together, outages, lulls, flapping or
repeating feeds, floods of bad records, replays of old data — plus data-quality faults
(bad records, duplicates, clock skew).

:class:`SyntheticWorld` is the one implementation of what a scenario means at any time,
vectorised over stations (and times): each station's event rate, its category mix (an
episode's topic takes ``topic_share`` of the reporting), whether its source is failing
(an outage: the station agent's breaker opens and the station goes *dark*), and the
faults it injects. Live synthetic stations (:mod:`~convergence.ground_stations.synthetic`)
draw individual events from it; the simulator draws per-tick cells straight from the same
numbers, so the two never diverge.

Ground truth (:meth:`Scenario.truths`): a genuine episode is a convergence from the
moment its active stations span at least :data:`MIN_GROUPS` independent correlation
groups, :data:`MIN_KINDS` source kinds and :data:`MIN_OSINT_GROUPS` independent OSINT
groups in its region (for a cascade, when enough stages have joined). An episode that
never gets there is too small to be a convergence and is not counted as genuine.
:func:`judge` scores alerts against it: by region and time, for runs cut short too.

The default scenario puts, within the first 20 seconds, a lone-station surge
(3–8 s), a genuine convergence in one region (6–13 s) and a market-wide move with no
OSINT behind it (14–19 s); later episodes are drawn from the seed. The library of
named scenarios is :mod:`~convergence.ground_stations.scenario_library`.

The parts live beside this module, which judges alerts and gathers their names: the
model (:mod:`~convergence.ground_stations.scenario_model`: episodes, scenarios, ground
truth), the seeded fleets and scenarios
(:mod:`~convergence.ground_stations.scenario_generation`), and the world in numbers
(:mod:`~convergence.ground_stations.scenario_world`).

Examples
--------
>>> sc = default_scenario(n_stations=50, seed=1, horizon_s=60)
>>> len(sc.fleet), [e.kind for e in sc.episodes][:3]
(50, ['lone_surge', 'convergence', 'market_move'])
>>> world = SyntheticWorld(sc)
>>> r_before, r_during = world.rates(1.0), world.rates(9.0)
>>> genuine = sc.episodes[1]
>>> bool((r_during[list(genuine.stations)] > 3 * r_before[list(genuine.stations)]).all())
True
>>> [(t.region, t.onset_s) for t in sc.truths()][:1] == [(genuine.region, 6.0)]
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from convergence.ground_stations.scenario_generation import (
    COMPACT_REGION,
    FLEET_MIX,
    REGIONS,
    compact_fleet,
    convergence_episode,
    default_fleet,
    default_scenario,
    lone_surge_episode,
    market_move_episode,
    pick,
    random_scenario,
)
from convergence.ground_stations.scenario_model import (
    DECOY_KINDS,
    DEFAULT_INTERVAL_S,
    MIN_GROUPS,
    MIN_KINDS,
    MIN_OSINT_GROUPS,
    TOPIC_SHARE,
    Episode,
    EpisodeKind,
    Scenario,
    Truth,
    convergence_onset,
)
from convergence.ground_stations.scenario_world import CATEGORIES, DAILY_SHAPE, SyntheticWorld

# the parts' names, as callers have imported them from here
__all__ = [
    "CATEGORIES", "COMPACT_REGION", "DAILY_SHAPE", "DECOY_KINDS", "DEFAULT_INTERVAL_S", "FLEET_MIX",
    "MIN_GROUPS", "MIN_KINDS", "MIN_OSINT_GROUPS", "REGIONS", "TOPIC_SHARE", "Episode", "EpisodeKind",
    "Scenario", "SyntheticWorld", "Truth", "Verdict", "compact_fleet", "convergence_episode",
    "convergence_onset", "default_fleet", "default_scenario", "evaluate", "judge",
    "lone_surge_episode", "market_move_episode", "pick", "random_scenario",
]


# -- judging alerts against ground truth --------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """How a run's alerts compare with its ground truth."""

    genuine: int
    detected: int
    false_alarms: int
    decoy_alerts: int
    decoys: int
    time_to_detect_s: tuple[float, ...]

    @property
    def missed(self) -> int:
        return self.genuine - self.detected


def judge(truths: Sequence[Truth], decoys: Sequence[Episode],
          alerts: Sequence[tuple[float, str]], *, window_s: float, grace_s: float,
          horizon_s: float) -> Verdict:
    """Score ``alerts`` (scenario time, region) against ground truth.

    An alert *detects* a genuine convergence when it names the convergence's region and
    fires between the convergence's onset and ``window_s + grace_s`` after its end (an
    alert a little before the formal onset, within ``grace_s``, counts too: a cascade's
    first stages may already be enough). Every other alert is a false alarm; one during
    a decoy is also a *decoy alert*. A convergence counts if the run lasted at least
    ``grace_s`` past its onset, or if it was detected before the run ended (a run cut
    short cannot be blamed for missing it, but is credited for catching it); one whose
    onset the run never reached (too few of its stations had joined) is not counted, and
    alerts in its region from ``grace_s`` before that onset are not false either.
    """
    def hits_of(tr: Truth) -> list[int]:
        return [i for i, (at, region) in enumerate(alerts)
                if region == tr.region and tr.onset_s - grace_s <= at <= tr.end_s + window_s + grace_s]

    counted = [t for t in truths if t.onset_s + grace_s <= horizon_s
               or (t.onset_s <= horizon_s and hits_of(t))]
    matched: set[int] = set()
    ttd: list[float] = []
    for tr in counted:
        hits = hits_of(tr)
        if hits:
            ttd.append(round(max(0.0, min(alerts[i][0] for i in hits) - tr.onset_s), 3))
        matched.update(hits)
    # alerts for convergences the run did not last long enough to count are not false
    for tr in truths:
        if tr in counted:
            continue
        matched.update(i for i, (at, region) in enumerate(alerts)
                       if region == tr.region and tr.onset_s - grace_s <= at)
    false = [i for i in range(len(alerts)) if i not in matched]
    seen = [d for d in decoys if d.start_s < horizon_s]

    def during(d: Episode, at: float) -> bool:
        return d.start_s <= at <= d.end_s + window_s + grace_s

    decoy_alerts = [i for i in false if any(during(d, alerts[i][0]) for d in seen)]
    return Verdict(len(counted), len(ttd), len(false), len(decoy_alerts), len(seen), tuple(ttd))


def evaluate(scenario: Scenario, alerts: Sequence[Any], *, t0: float,
             horizon_s: float, window_s: float, grace_s: float = 5.0) -> dict[str, Any]:
    """Score a live run's alerts (:class:`~convergence.records.Alert` s or their dicts)
    against the scenario's ground truth; see :func:`judge`.

    Alert times are in the run's clock; ``t0`` is the scenario's time zero on it.
    """
    pairs = []
    for a in alerts:
        d = a if isinstance(a, dict) else a.to_dict()
        region = d.get("region") or (d.get("regions") or ["unknown"])[0]
        pairs.append((float(d["time_s"]) - t0, str(region)))
    v = judge(scenario.truths(), scenario.decoys(), pairs, window_s=window_s, grace_s=grace_s,
              horizon_s=horizon_s)
    return {
        "genuine": v.genuine, "detected": v.detected, "missed": v.missed,
        "decoys": v.decoys, "decoy_alerts": v.decoy_alerts, "false_alarms": v.false_alarms,
        "time_to_detect_s": list(v.time_to_detect_s),
        "episodes": [e.to_dict() for e in scenario.episodes if e.start_s < horizon_s],
    }
