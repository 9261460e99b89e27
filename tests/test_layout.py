"""The promises of the layout: one namespace, a pure detectors package."""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"faust", "kafka", "aiokafka", "surrealdb", "typer", "asyncio", "hmmlearn",
             "lightgbm", "requests", "socket"}


def test_detectors_stay_pure() -> None:
    offenders = []
    for path in (ROOT / "detectors").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, f"detectors/ must stay pure, found imports: {offenders}"


def test_every_component_installs_under_convergence() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    assert all(name == "convergence" or name.startswith("convergence.") for name in mapping)
    for name, folder in mapping.items():
        assert (ROOT / folder / "__init__.py").exists(), f"{folder}/ lacks __init__.py"
        assert importlib.util.find_spec(name) is not None, name
    for top in ("streams", "detectors", "models", "ground_stations", "cli", "tests", "docker"):
        assert (ROOT / top).is_dir(), f"missing top-level {top}/"
    # nothing generic lands at the top of site-packages
    assert importlib.util.find_spec("detectors") is None or \
        "site-packages" not in str(importlib.util.find_spec("detectors").origin)
