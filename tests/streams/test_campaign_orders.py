"""Campaign shards on the wire, without a broker: the work order round-trips with every
setting, a bad one says why, and run records (non-finite floats too) survive the answer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from convergence.simulation.campaign import (
    DEFAULT_DETECTOR,
    ChunkResult,
    DetectorParams,
    ParamSpace,
    RunRecord,
)
from convergence.streams.campaign_client import ResultCollector
from convergence.streams.campaign_orders import (
    CAMPAIGN_TOPICS,
    Shard,
    ShardError,
    result_messages,
)
from convergence.streams.topics import TOPIC_CONFIGS, TOPIC_PARTITIONS, TOPICS


# -- topics ------------------------------------------------------------------------------
def test_campaign_topics_are_declared_with_the_others() -> None:
    assert set(CAMPAIGN_TOPICS) <= set(TOPICS)
    assert all(TOPIC_CONFIGS[n]["retention.ms"] == "86400000" for n in CAMPAIGN_TOPICS)
    # shards spread over partitions that 1, 2, 3, 4 or 6 workers share evenly
    assert TOPIC_PARTITIONS == {"campaign-shards": 12, "campaign-cancel": 1}


# -- the work order ------------------------------------------------------------------------
def test_a_shard_round_trips_with_every_setting(make_shard: Callable[..., Shard]) -> None:
    s = make_shard(sweep=True, mode="events", detector=DetectorParams(60.0, 10, 1.0),
                   space=dataclasses.replace(ParamSpace(), warning=(40.0, 70.0), window_ticks=(4,)))
    back = Shard.from_json(s.to_json())
    assert back == s and isinstance(back.space.warning, tuple)
    assert s.key == b"c1/0"


@pytest.mark.parametrize(("value", "reason", "ids"), [
    (b"{nope", "not JSON", (None, None)),
    (b"[1]", "not a JSON object", (None, None)),
    (b'{"shard": 1}', "no campaign id", (None, None)),
    (b'{"campaign": "c", "shard": 1, "v": 99}', "format version 99", ("c", 1)),
    (b'{"campaign": "c", "shard": 1, "v": 1}', "malformed shard: KeyError", ("c", 1)),
])
def test_a_bad_shard_says_why(value: bytes, reason: str, ids: tuple[Any, Any]) -> None:
    with pytest.raises(ShardError, match=reason) as err:
        Shard.from_json(value)
    assert (err.value.campaign, err.value.shard) == ids


@pytest.mark.parametrize(("change", "reason"), [
    ({"mode": "batch"}, "mode 'batch' is not one of cells, events"),
    ({"count": 0}, "count >= 1"),
    ({"first": -1}, "first >= 0"),
])
def test_a_shard_out_of_range_is_refused(change: dict[str, Any], reason: str,
                                         make_shard: Callable[..., Shard]) -> None:
    doc = orjson.loads(make_shard().to_json()) | change
    with pytest.raises(ShardError, match=reason):
        Shard.from_json(orjson.dumps(doc))


def test_non_finite_floats_survive_the_wire(make_shard: Callable[..., Shard]) -> None:
    rec = RunRecord("lone-surge", 0, 1, 1, 0, (float("nan"), 2.0), DEFAULT_DETECTOR,
                    ((2, float("inf"), True),), (float("-inf"),), float("nan"))
    res = ChunkResult("lone-surge", [rec], 1.5, 10, 0.1)
    (msg,) = result_messages(make_shard(count=1), res, "w1")
    (back,) = ResultCollector("c1", [("lone-surge", 0, 1)]).add(orjson.loads(msg)).records  # type: ignore[union-attr]
    assert repr(back) == repr(rec)
