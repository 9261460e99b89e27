"""The station registry: cached per-station arrays, invalidated when a station is added."""

from __future__ import annotations

import numpy as np
import pytest

from convergence.schema import SourceKind
from convergence.stations import StationInfo, StationRegistry


def test_arrays_and_ids_are_cached_until_a_station_is_added() -> None:
    reg = StationRegistry([StationInfo("a", "osint_news", "eu", rate_per_s=2.0)])
    kinds, ids, v = reg.kind_idx, reg.ids(), reg.version
    assert reg.kind_idx is kinds and reg.ids() is ids  # no rebuild per access
    assert reg.ensure("a", "osint_news") == 0 and reg.version == v  # known: nothing changes
    reg.ensure("b", "sensor")
    assert reg.version == v + 1
    assert reg.ids() == ("a", "b") and reg.kind_idx.shape == (2,)
    assert reg.region_idx.tolist() == [0, 1] and reg.group_idx.tolist() == [0, 1]
    np.testing.assert_array_equal(reg.rates, [2.0, 0.0])


def test_cached_arrays_are_read_only() -> None:
    reg = StationRegistry([StationInfo("a", "sensor")])
    with pytest.raises(ValueError, match="read-only"):
        reg.rates[0] = 1.0


def test_station_kind_is_converted_once_and_checked_at_construction() -> None:
    info = StationInfo("a", "market_price")
    assert info.kind is SourceKind.MARKET_PRICE and info.source_kind == "market_price"
    with pytest.raises(ValueError, match="not a valid SourceKind"):
        StationInfo("b", "telepathy")
