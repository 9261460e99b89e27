"""Where regions and stations go on the map."""

from __future__ import annotations

import pytest

from convergence.dashboard.geo import MAP_H, MAP_W, REGION_BOXES, project, region_box, station_point
from convergence.ground_stations.scenario import REGIONS


def test_every_region_of_the_default_fleet_is_on_the_map() -> None:
    for name in (*REGIONS, "global"):
        assert region_box(name) is not None, name


@pytest.mark.parametrize("name", sorted(REGION_BOXES))
def test_boxes_are_real_lat_lon_boxes(name: str) -> None:
    lon0, lat0, lon1, lat1 = REGION_BOXES[name]
    assert -180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90


def test_names_are_matched_loosely_and_unknown_ones_are_not_placed() -> None:
    assert region_box("NA_East") == region_box("na-east") == region_box("na east")
    assert region_box("unknown") is None and region_box("ops-lab-3") is None


def test_projection_corners_and_clamping() -> None:
    assert project(-180, 90) == (0.0, 0.0)
    assert project(180, -90) == (MAP_W, MAP_H)
    assert project(500, -500) == (MAP_W, MAP_H)


def test_stations_without_coordinates_are_scattered_in_their_box_deterministically() -> None:
    lon0, lat0, lon1, lat1 = REGION_BOXES["apac"]
    (x0, y0), (x1, y1) = project(lon0, lat1), project(lon1, lat0)
    points = {station_point(f"news-apac-{i:03d}", "apac") for i in range(200)}
    assert len(points) > 190  # spread out, not stacked
    for p in points:
        assert p is not None and x0 < p[0] < x1 and y0 < p[1] < y1
    assert station_point("news-apac-007", "apac") == station_point("news-apac-007", "APAC")


def test_known_coordinates_win_and_bad_ones_fall_back() -> None:
    assert station_point("s", "apac", lat=51.5, lon=-0.1) == project(-0.1, 51.5)
    assert station_point("s", "apac", lat=float("nan"), lon=1.0) == station_point("s", "apac")
    assert station_point("s", "nowhere") is None
