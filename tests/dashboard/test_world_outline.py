"""The shipped world outline and the script that built it."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from convergence.dashboard.world_outline import decode_rings, main, outline, simplify

STATIC = Path(str(resources.files("convergence.dashboard") / "static"))


def _topo(arcs: list[list[list[float]]], geometries: list[dict[str, object]],
          scale: float = 1.0) -> dict[str, object]:
    return {"type": "Topology", "transform": {"scale": [scale, scale], "translate": [0, 0]},
            "arcs": arcs, "objects": {"land": {"type": "GeometryCollection",
                                               "geometries": geometries}}}


def test_the_shipped_outline_says_where_it_came_from_and_is_a_path() -> None:
    doc = json.loads((STATIC / "world.json").read_text())
    assert "world-atlas" in doc["source"] and "ISC" in doc["source"] and "Natural Earth" in doc["source"]
    assert doc["view_box"] == [0, 0, 1000.0, 500.0]
    path = doc["path"]
    assert 10_000 < len(path) < 100_000  # compact, yet a real map
    assert path.startswith("M") and path.count("M") == path.count("z") > 100
    assert re.fullmatch(r"[Mlz0-9 .\-]+", path)
    assert "ISC" in (STATIC / "world-atlas-LICENSE.txt").read_text() or \
        "Permission to use" in (STATIC / "world-atlas-LICENSE.txt").read_text()


def test_arcs_are_delta_decoded_and_reversed_by_their_complement() -> None:
    topo = _topo([[[0, 0], [10, 0]], [[10, 0], [0, 10], [-10, -10]]],
                 [{"type": "Polygon", "arcs": [[0, 1]]},
                  {"type": "MultiPolygon", "arcs": [[[~1, ~0]]]}], scale=2.0)
    rings = decode_rings(topo, "land")
    assert rings[0] == [(0, 0), (20, 0), (20, 20), (0, 0)]
    assert rings[1] == [(0, 0), (20, 20), (20, 0), (0, 0)]


def test_a_ring_across_the_antimeridian_is_not_drawn_across_the_map() -> None:
    # a box from 170 E to 170 W (crossing 180), as Natural Earth draws Chukotka
    topo = {"type": "Topology", "arcs": [[[170, 60], [-170, 60], [-170, 70], [170, 70], [170, 60]]],
            "objects": {"land": {"type": "Polygon", "arcs": [[0]]}}}
    doc = outline(topo, "land", min_area=0.0)
    moves = [float(m) for m in re.findall(r"l(-?[\d.]+)", doc["path"])]
    assert doc["path"].count("M") == 2  # the ring and its copy on the other edge
    assert all(abs(dx) < 100 for dx in moves)  # no segment runs across the map


def test_simplify_keeps_the_ends_and_the_corners() -> None:
    line = [(float(i), 0.0) for i in range(50)] + [(49.0, 30.0)]
    assert simplify(line, 0.5) == [(0.0, 0.0), (49.0, 0.0), (49.0, 30.0)]
    assert simplify([(0.0, 0.0), (1.0, 1.0)], 5.0) == [(0.0, 0.0), (1.0, 1.0)]


def test_tiny_islands_and_antarctica_are_left_out() -> None:
    topo = _topo([[[0, 0], [0.3, 0], [0, 0.3], [-0.3, 0], [0, -0.3]],
                  [[-100, -85], [50, 0], [0, 10], [-50, 0], [0, -10]],
                  [[0, 0], [60, 0], [0, 30], [-60, 0], [0, -30]]],
                 [{"type": "Polygon", "arcs": [[0]]}, {"type": "Polygon", "arcs": [[1]]},
                  {"type": "Polygon", "arcs": [[2]]}])
    assert outline(topo, "land")["path"].count("M") == 1


def test_the_script_writes_the_document(tmp_path: Path, capsys: object) -> None:
    src = tmp_path / "land.json"
    src.write_text(json.dumps(_topo([[[0, 0], [90, 0], [0, 45], [-90, 0], [0, -45]]],
                                    [{"type": "Polygon", "arcs": [[0]]}])))
    assert main([str(src)]) == 0
    assert main([]) == 2
