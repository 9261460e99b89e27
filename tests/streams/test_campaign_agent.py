"""Campaign shards, the worker's side, without a broker: what a worker refuses to run, its
answer in bounded parts, and the cancelled campaigns it remembers."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest

from convergence.settings import load_settings
from convergence.simulation.campaign import ChunkResult, ParamSpace, run_chunk
from convergence.streams.campaign_agent import CancelledCampaigns, refusal, run_shard
from convergence.streams.campaign_client import ResultCollector
from convergence.streams.campaign_orders import Shard, ShardError


def test_a_worker_refuses_other_code_unknown_scenarios_expired_and_cancelled_shards(
        make_shard: Callable[..., Shard]) -> None:
    now = time.time()
    assert refusal(make_shard(), now) is None
    state, reason = refusal(make_shard(code="0" * 16), now) or ("", "")
    assert state == "failed" and "other code" in reason and "restart the cluster" in reason
    assert refusal(make_shard(scenario="nope"), now) == (
        "failed", "the worker does not know scenario 'nope'")
    assert (refusal(make_shard(expires_at_s=now - 5), now) or ("",))[0] == "expired"
    assert (refusal(make_shard(), now, cancelled={"c1": now}) or ("",))[0] == "cancelled"


# -- the worker's answer ---------------------------------------------------------------------
def test_a_big_answer_goes_out_in_bounded_parts_and_is_joined_in_any_order(
        make_shard: Callable[..., Shard]) -> None:
    shard = make_shard(scenario="simultaneous", count=3)
    msgs = run_shard(shard, "w1", max_bytes=600)
    assert len(msgs) == 3 and all(len(m) <= 600 for m in msgs)
    docs = [orjson.loads(m) for m in msgs]
    assert {d["state"] for d in docs} == {"done"} and [d["part"] for d in docs] == [0, 1, 2]
    collector = ResultCollector("c1", [("simultaneous", 0, 3)])
    got = [collector.add(d) for d in reversed(docs)]
    assert got[:2] == [None, None] and isinstance(got[2], ChunkResult)
    expected = run_chunk("simultaneous", 0, 3, seed=3, space=ParamSpace(), sweep=False)
    assert got[2].records == expected.records
    assert (got[2].station_hours, got[2].events) == (expected.station_hours, expected.events)


def test_one_record_too_big_for_a_message_fails_the_shard(make_shard: Callable[..., Shard]) -> None:
    with pytest.raises(ShardError, match="more than one message may carry"):
        run_shard(make_shard(count=1), "w1", max_bytes=300)


def test_cancels_are_remembered_up_to_a_bound() -> None:
    cancels = CancelledCampaigns(load_settings(env={"CONVERGENCE_TOPIC_PREFIX": "t"}, config_path=None),
                                 limit=2)
    for cid in ("a", "b", "c"):
        cancels.add(orjson.dumps({"campaign": cid, "at_s": 1.0}))
    cancels.add(b"junk")
    assert list(cancels.cancelled) == ["b", "c"]
