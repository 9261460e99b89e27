"""Every docstring example in the package runs (river-style: examples are tests)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import convergence

SKIP = {"convergence.cli.main"}


def _modules() -> list[str]:
    names = ["convergence"]
    for info in pkgutil.walk_packages(convergence.__path__, "convergence."):
        names.append(info.name)
    for sub in ("detectors", "models", "ground_stations", "streams", "store", "responses", "cli",
                "simulation", "evaluation", "dashboard"):
        pkg = importlib.import_module(f"convergence.{sub}")
        names.append(pkg.__name__)
        names += [i.name for i in pkgutil.walk_packages(pkg.__path__, f"convergence.{sub}.")]
    return sorted(set(names) - SKIP)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"
