"""A mixed fleet as a newcomer writes one: the default synthetic stations plus stations that
replay recorded files (JSON Lines), some of them in the region that converges.

The recorded files are made here, from a seed: steady background, then - during the
synthetic fleet's first genuine convergence - a surge concentrated on one topic, as
recorded feeds of a real event would show. The replay stations have correlation groups of
their own, so they count as independent evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest

from convergence.ground_stations.fleet import (
    SourceSpec,
    StationSpec,
    default_specs,
    fleet_scenario,
    render_fleet,
)
from convergence.ground_stations.scenario import Episode, Scenario
from convergence.schema import SourceKind

CATEGORIES = ("politics", "economy", "weather", "sport", "health", "transport", "energy", "culture")


@dataclass(frozen=True)
class MixedFleet:
    path: Path
    scenario: Scenario  # the synthetic stations' world
    genuine: Episode  # the genuine convergence the replay stations join
    replay_ids: tuple[str, ...]
    decoy_replay_ids: tuple[str, ...]  # replay stations elsewhere, that never surge

    def check_report(self, report: dict[str, object]) -> None:
        """The recorded stations are watched where the fleet file puts them: some of those
        that surge are in the report of the convergence they joined (its stations, or a
        station that joined later), the calm ones elsewhere are not."""
        timeline = report["timeline"]
        assert isinstance(timeline, list)
        involved = {str(s) for s in report["stations"]} | {  # type: ignore[attr-defined]
            t["station_id"] for t in timeline if t["what"] == "joined"}
        assert involved & set(self.replay_ids), (sorted(involved), self.replay_ids)
        assert not involved & set(self.decoy_replay_ids)


def _rows(kind: SourceKind, rng: np.random.Generator, horizon_s: float,
          surge: tuple[float, float] | None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    price = 100.0
    t = 0.0
    while t < horizon_s:
        hot = surge is not None and surge[0] <= t < surge[1]
        n = int(rng.poisson(10.0 if hot else 1.0))
        for dt in np.sort(rng.uniform(0.0, 1.0, n)) if t > 0 else np.r_[0.0, np.sort(rng.uniform(0, 1, n))]:
            when = round(t + float(dt), 6)
            if kind == SourceKind.MARKET_PRICE:
                price *= float(np.exp(rng.normal(0.0, 0.006 if hot else 0.001)))
                rows.append({"timestamp": when, "price": round(price, 4)})
            else:
                cat = "unrest" if hot and rng.random() < 0.85 else CATEGORIES[int(rng.integers(8))]
                rows.append({"timestamp": when, "category": cat, "value": 1.0,
                             "text": f"recorded {cat} item"})
        t += 1.0
    return rows


def write_mixed_fleet(folder: Path, *, n_stations: int = 60, seed: int = 7,
                      horizon_s: float = 60.0) -> MixedFleet:
    """The default synthetic fleet of ``n_stations`` plus five replay stations: three in the
    region of the first genuine convergence after 30 s (news, social, a market price, each its own
    group) that surge with it, and two elsewhere that stay calm."""
    folder.mkdir(parents=True, exist_ok=True)
    synthetic = default_specs(n_stations, seed)
    scenario = fleet_scenario(synthetic, seed, horizon_s)
    assert scenario is not None
    # a convergence late enough that the recorded stations have a baseline before it
    genuine = next(e for e in scenario.genuine() if 30.0 <= e.start_s < horizon_s - 10.0)
    calm_region = next(s.region for s in synthetic if s.region != genuine.region)
    rng = np.random.default_rng([seed, 2024])
    plan = [("news", SourceKind.OSINT_NEWS, genuine.region, True),
            ("social", SourceKind.OSINT_SOCIAL, genuine.region, True),
            ("px", SourceKind.MARKET_PRICE, genuine.region, True),
            ("news", SourceKind.OSINT_NEWS, calm_region, False),
            ("px", SourceKind.MARKET_PRICE, calm_region, False)]
    replay: list[StationSpec] = []
    for i, (short, kind, region, surges) in enumerate(plan):
        sid = f"rec-{short}-{region}-{i}"
        rows = _rows(kind, rng, horizon_s, (genuine.start_s, genuine.end_s) if surges else None)
        path = folder / f"{sid}.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
        replay.append(StationSpec(sid, kind, SourceSpec("replay", {"path": path.name, "speed": 1.0}),
                                  region, f"recorded-{sid}", f"recorded {short} {region}", 0.5))
    path = folder / "fleet.toml"
    path.write_text(render_fleet([*synthetic, *replay], seed=seed,
                                 comment="a mixed fleet: synthetic stations and recorded files"))
    return MixedFleet(path, scenario, genuine, tuple(s.station_id for s in replay[:3]),
                      tuple(s.station_id for s in replay[3:]))


@pytest.fixture()
def mixed_fleet() -> Callable[..., MixedFleet]:
    """:func:`write_mixed_fleet`, for tests (conftest modules are not imported by name)."""
    return write_mixed_fleet
