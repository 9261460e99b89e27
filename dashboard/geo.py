"""Where regions and stations go on the dashboard's map.

The map is an equirectangular projection of the whole world onto a ``1000 x 500``
box (:func:`project`), the same projection the shipped world outline was drawn in
(:mod:`convergence.dashboard.world_outline`).

Regions are placed by a lookup of known names to lat/lon boxes (:data:`REGION_BOXES`:
the default fleet's ``na-east`` ... ``apac``, plus common names a user fleet might
use). A name is matched after folding case and ``_``/space to ``-``. ``global`` covers
the whole map; a name that is not known has no box and goes to a side strip.

Stations go where their latitude/longitude says when it is known; otherwise they are
scattered inside their region's box at a position derived from a hash of the station
id (the same id lands on the same spot in every run and every browser), and stations
of unknown regions sit in the side strip.

Examples
--------
>>> region_box("EU_West")
(-11.0, 36.0, 16.0, 60.0)
>>> region_box("atlantis") is None
True
>>> project(0.0, 0.0), project(-180.0, 90.0)
((500.0, 250.0), (0.0, 0.0))
>>> station_point("news-eu-west-001", "eu-west") == station_point("news-eu-west-001", "eu-west")
True
>>> x, y = station_point("news-eu-west-001", "eu-west")
>>> lo, la_min, hi, la_max = region_box("eu-west")
>>> project(lo, la_max)[0] <= x <= project(hi, la_min)[0]
True
>>> station_point("s-1", "atlantis") is None
True
>>> station_point("s-1", "atlantis", lat=10.0, lon=20.0)
(555.6, 222.2)
"""

from __future__ import annotations

import hashlib
import math
from typing import Final

__all__ = ["MAP_H", "MAP_W", "REGION_BOXES", "canonical_region", "project", "region_box",
           "station_point"]

#: the projected map's size (the outline's SVG viewBox is ``0 0 MAP_W MAP_H``)
MAP_W: Final = 1000.0
MAP_H: Final = 500.0

#: (lon_min, lat_min, lon_max, lat_max) of known region names
REGION_BOXES: Final[dict[str, tuple[float, float, float, float]]] = {
    # the default synthetic fleet's regions (ground_stations.scenario.REGIONS)
    "na-east": (-98.0, 24.0, -58.0, 52.0),
    "na-west": (-128.0, 28.0, -100.0, 58.0),
    "eu-west": (-11.0, 36.0, 16.0, 60.0),
    "eu-east": (16.0, 40.0, 42.0, 62.0),
    "mena": (-12.0, 14.0, 60.0, 36.0),
    "apac": (95.0, -40.0, 152.0, 42.0),
    "global": (-180.0, -60.0, 180.0, 84.0),
    # common names of user fleets
    "na": (-128.0, 24.0, -58.0, 58.0),
    "north-america": (-128.0, 24.0, -58.0, 58.0),
    "us": (-125.0, 25.0, -67.0, 49.0),
    "us-east": (-90.0, 25.0, -67.0, 47.0),
    "us-west": (-125.0, 31.0, -104.0, 49.0),
    "canada": (-130.0, 49.0, -55.0, 68.0),
    "latam": (-82.0, -55.0, -34.0, 22.0),
    "south-america": (-82.0, -55.0, -34.0, 12.0),
    "central-america": (-106.0, 7.0, -60.0, 24.0),
    "eu": (-11.0, 36.0, 40.0, 65.0),
    "europe": (-11.0, 36.0, 40.0, 65.0),
    "uk": (-8.0, 50.0, 2.0, 59.0),
    "nordics": (4.0, 55.0, 31.0, 70.0),
    "russia": (40.0, 50.0, 170.0, 72.0),
    "me": (34.0, 12.0, 60.0, 38.0),
    "middle-east": (34.0, 12.0, 60.0, 38.0),
    "africa": (-17.0, -35.0, 51.0, 14.0),
    "ssa": (-17.0, -35.0, 51.0, 14.0),
    "asia": (60.0, 5.0, 145.0, 50.0),
    "south-asia": (61.0, 6.0, 92.0, 35.0),
    "india": (68.0, 7.0, 90.0, 33.0),
    "china": (75.0, 20.0, 125.0, 48.0),
    "east-asia": (100.0, 20.0, 145.0, 48.0),
    "japan": (129.0, 31.0, 146.0, 45.0),
    "sea": (95.0, -10.0, 125.0, 20.0),
    "southeast-asia": (95.0, -10.0, 125.0, 20.0),
    "oceania": (112.0, -47.0, 178.0, -10.0),
    "anz": (112.0, -47.0, 178.0, -10.0),
    "australia": (113.0, -39.0, 154.0, -11.0),
}


def canonical_region(name: str) -> str:
    """``name`` folded for the lookup: lower case, ``_`` and spaces as ``-``.

    >>> canonical_region(" EU_West ")
    'eu-west'
    """
    return "-".join(name.strip().lower().replace("_", " ").split())


def region_box(name: str) -> tuple[float, float, float, float] | None:
    """The (lon_min, lat_min, lon_max, lat_max) of a known region name, else ``None``."""
    return REGION_BOXES.get(canonical_region(name))


def project(lon: float, lat: float) -> tuple[float, float]:
    """Map coordinates of a longitude/latitude (equirectangular, y down), rounded to 0.1."""
    lon = max(-180.0, min(180.0, lon))
    lat = max(-90.0, min(90.0, lat))
    return (round((lon + 180.0) / 360.0 * MAP_W, 1), round((90.0 - lat) / 180.0 * MAP_H, 1))


def _unit_pair(key: str) -> tuple[float, float]:
    """Two numbers in [0, 1) from a hash of ``key`` (the same key, the same pair)."""
    h = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(h[:4], "big") / 2**32, int.from_bytes(h[4:], "big") / 2**32


def station_point(station_id: str, region: str, *, lat: float | None = None,
                  lon: float | None = None) -> tuple[float, float] | None:
    """Map coordinates of a station: its lat/lon when known (and finite), else a
    deterministic spot inside its region's box (kept 8% away from the edges), else
    ``None`` (the region is not on the map: the side strip shows it)."""
    if lat is not None and lon is not None and math.isfinite(lat) and math.isfinite(lon):
        return project(lon, lat)
    box = region_box(region)
    if box is None:
        return None
    u, v = _unit_pair(station_id)
    lon0, lat0, lon1, lat1 = box
    pad_lon, pad_lat = 0.08 * (lon1 - lon0), 0.08 * (lat1 - lat0)
    return project(lon0 + pad_lon + u * (lon1 - lon0 - 2 * pad_lon),
                   lat0 + pad_lat + v * (lat1 - lat0 - 2 * pad_lat))
