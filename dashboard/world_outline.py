"""Build the dashboard's world outline (``static/world.json``) from ``world-atlas``.

The map's land shapes ship in the package, so the page works offline. They were
derived once from the npm package ``world-atlas`` 2.0.2 (ISC licence, Mike Bostock;
its shapes come from Natural Earth, public domain), file ``land-110m.json``, by this
module, and the output is committed. To rebuild it::

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python -m convergence.dashboard.world_outline package/land-110m.json \\
        > dashboard/static/world.json

What it does: decodes the TopoJSON topology (quantized, delta-encoded arcs) into
rings of longitude/latitude, projects them with :func:`convergence.dashboard.geo.project`,
simplifies each ring (Douglas-Peucker, ``tolerance`` map units), drops rings smaller
than ``min_area`` and Antarctica (nothing on the map is there), and writes one SVG
path (``M x y l dx dy ... z`` with one decimal) in a small JSON document that also
names its source and licence.

Examples
--------
>>> topo = {"type": "Topology", "transform": {"scale": [1, 1], "translate": [0, 0]},
...         "arcs": [[[0, 0], [90, 0], [0, 45], [-90, 0], [0, -45]]],
...         "objects": {"land": {"type": "GeometryCollection", "geometries": [
...             {"type": "Polygon", "arcs": [[0]]}]}}}
>>> rings = decode_rings(topo, "land")
>>> rings[0][:3]
[(0.0, 0.0), (90.0, 0.0), (90.0, 45.0)]
>>> doc = outline(topo, "land")
>>> doc["path"]
'M500 250l250 0 0-125-250 0z'
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from convergence.dashboard.geo import MAP_H, MAP_W, project

__all__ = ["decode_rings", "outline", "simplify"]

Point = tuple[float, float]

SOURCE = ("world-atlas 2.0.2 (npm), land-110m.json: ISC licence, Copyright 2013-2019 Michael "
          "Bostock; shapes from Natural Earth (public domain). Built by "
          "convergence.dashboard.world_outline.")


def _arcs(topo: Mapping[str, Any]) -> list[list[Point]]:
    """Every arc as absolute lon/lat points (undoing quantization and delta encoding)."""
    tr = topo.get("transform")
    sx, sy = (tr["scale"] if tr else (1.0, 1.0))
    tx, ty = (tr["translate"] if tr else (0.0, 0.0))
    out: list[list[Point]] = []
    for arc in topo["arcs"]:
        x = y = 0.0
        pts: list[Point] = []
        for pos in arc:
            if tr:
                x, y = x + pos[0], y + pos[1]
                pts.append((x * sx + tx, y * sy + ty))
            else:
                pts.append((float(pos[0]), float(pos[1])))
        out.append(pts)
    return out


def _ring(arcs: list[list[Point]], indices: Sequence[int]) -> list[Point]:
    """One closed ring from arc indices (``~i`` is arc ``i`` reversed); shared end
    points between consecutive arcs are kept once."""
    ring: list[Point] = []
    for i in indices:
        pts = arcs[i] if i >= 0 else arcs[~i][::-1]
        ring.extend(pts[1:] if ring else pts)
    return ring


def decode_rings(topo: Mapping[str, Any], name: str) -> list[list[Point]]:
    """Every ring (outer boundaries and holes) of object ``name`` as lon/lat points."""
    arcs = _arcs(topo)
    rings: list[list[Point]] = []

    def geometry(g: Mapping[str, Any]) -> None:
        kind = g.get("type")
        if kind == "GeometryCollection":
            for sub in g["geometries"]:
                geometry(sub)
        elif kind == "Polygon":
            rings.extend(_ring(arcs, r) for r in g["arcs"])
        elif kind == "MultiPolygon":
            rings.extend(_ring(arcs, r) for poly in g["arcs"] for r in poly)

    geometry(topo["objects"][name])
    return rings


def simplify(points: Sequence[Point], tolerance: float) -> list[Point]:
    """Douglas-Peucker: the fewest points within ``tolerance`` of the line (ends kept).

    >>> simplify([(0, 0), (1, 0.01), (2, 0), (3, 5)], 0.1)
    [(0, 0), (2, 0), (3, 5)]
    """
    if len(points) < 3:
        return list(points)
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        (ax, ay), (bx, by) = points[a], points[b]
        dx, dy = bx - ax, by - ay
        norm = (dx * dx + dy * dy) ** 0.5
        best, far = -1.0, -1
        for i in range(a + 1, b):
            px, py = points[i]
            d = (abs(dy * (px - ax) - dx * (py - ay)) / norm if norm
                 else ((px - ax) ** 2 + (py - ay) ** 2) ** 0.5)
            if d > best:
                best, far = d, i
        if far >= 0 and best > tolerance:
            keep[far] = True
            stack += [(a, far), (far, b)]
    return [p for p, k in zip(points, keep, strict=True) if k]


def _unwrap(ring: Sequence[Point]) -> list[list[Point]]:
    """A ring that crosses the antimeridian made continuous (no line across the whole
    map), plus its copy shifted by 360 degrees so both sides of the map show it."""
    out: list[Point] = [ring[0]]
    for lon, lat in ring[1:]:
        prev = out[-1][0]
        while lon - prev > 180.0:
            lon -= 360.0
        while lon - prev < -180.0:
            lon += 360.0
        out.append((lon, lat))
    parts = [out]
    if max(lon for lon, _ in out) > 180.0:
        parts.append([(lon - 360.0, lat) for lon, lat in out])
    if min(lon for lon, _ in out) < -180.0:
        parts.append([(lon + 360.0, lat) for lon, lat in out])
    return parts


def _xy(lon: float, lat: float) -> Point:
    """:func:`~convergence.dashboard.geo.project` without clamping the longitude (the
    part of an unwrapped ring past the edge is cut by the SVG view box)."""
    x, y = project(0.0, lat)
    return (round(x + lon / 360.0 * MAP_W, 1), y)


def _area(ring: Sequence[Point]) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, [*ring[1:], ring[0]],
                                                                     strict=True))) / 2.0


def _path(ring: Sequence[Point]) -> str:
    """``M x y l dx dy ...z`` with one decimal; the closing point is implied by ``z``."""
    pts = list(ring[:-1]) if len(ring) > 1 and ring[0] == ring[-1] else list(ring)
    ix = [(round(x * 10), round(y * 10)) for x, y in pts]  # tenths, so deltas add up exactly
    coords = [f"{_num(x1 - x0)} {_num(y1 - y0)}" for (x0, y0), (x1, y1) in itertools.pairwise(ix)]
    return f"M{_num(ix[0][0])} {_num(ix[0][1])}l" + " ".join(coords).replace(" -", "-") + "z"


def _num(tenths: int) -> str:
    return str(tenths // 10) if tenths % 10 == 0 else f"{tenths / 10:.1f}"


def outline(topo: Mapping[str, Any], name: str = "land", *, tolerance: float = 0.35,
            min_area: float = 1.5) -> dict[str, Any]:
    """The outline document: ``path`` (SVG path data in the ``MAP_W x MAP_H`` box),
    ``view_box``, ``source`` (where it came from and its licence)."""
    paths: list[str] = []
    for ring in decode_rings(topo, name):
        if max(lat for _, lat in ring) < -60.0:  # Antarctica
            continue
        for part in _unwrap(ring):
            projected = [_xy(lon, lat) for lon, lat in part]
            if _area(projected) < min_area:
                continue
            pts = simplify(projected, tolerance)
            if len(pts) >= 3:
                paths.append(_path(pts))
    return {"source": SOURCE, "view_box": [0, 0, MAP_W, MAP_H], "path": "".join(paths)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convergence.dashboard.world_outline LAND_TOPOJSON > world.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m convergence.dashboard.world_outline land-110m.json\n")
        return 2
    with open(args[0], "rb") as f:
        topo = orjson.loads(f.read())
    sys.stdout.write(orjson.dumps(outline(topo)).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
