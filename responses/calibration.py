"""The confidence a report quotes: which campaign says how often alerts like this are real.

A campaign (:mod:`convergence.simulation.campaign`) counts, for every alert at each level
and score band, whether it was a genuine convergence; that table is a
:class:`~convergence.responses.reports.Calibration`. The one in force is the newest saved
under the data directory (``montecarlo run --save-calibration``), else the reference
campaign's that ships with the package (``calibration.json`` next to this module; its
``command`` field is the command that made it, on a seed never used to tune the detectors).

Examples
--------
>>> cal = packaged()
>>> cal is not None and cal.campaign.startswith("mc-")
True
>>> c = cal.confidence("converged", 90.0)
>>> c is not None and 0.5 < c.probability <= 1.0
True
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from convergence.responses.reports import Calibration

__all__ = ["FILE_NAME", "load_calibration", "packaged", "save_calibration"]

log = logging.getLogger(__name__)
FILE_NAME = "calibration.json"


def packaged() -> Calibration | None:
    """The reference campaign's calibration shipped with the package (``None`` if absent)."""
    try:
        text = resources.files("convergence.responses").joinpath(FILE_NAME).read_text()
        return Calibration.from_dict(json.loads(text))
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        log.warning("the packaged calibration is unreadable (%s); reports carry no confidence",
                    exc)
        return None


def load_calibration(settings: Any) -> Calibration | None:
    """The calibration in force for ``settings`` (see the module docstring)."""
    path = Path(settings.data_dir) / FILE_NAME
    if path.exists():
        try:
            return Calibration.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("calibration %s is unreadable (%s); using the packaged one", path, exc)
    return packaged()


def save_calibration(settings: Any, calibration: dict[str, Any]) -> Path:
    """Make ``calibration`` (a campaign's) the one in force; returns where it was written."""
    Calibration.from_dict(calibration)  # refuse what could not be read back
    path = Path(settings.data_dir) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".calibration-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(calibration, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
