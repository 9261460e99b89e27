"""Campaign shards without a broker: the work order, the worker's answer, the client's merge.

A fake transport plays the cluster in-process (answers out of order, a shard answered
twice as after a failover, silence), so the very client that runs against Kafka is checked
here; the real-broker tier is ``tests/cli/test_montecarlo_cluster.py``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from convergence.settings import Settings, load_settings
from convergence.simulation.campaign import (
    DEFAULT_DETECTOR,
    CampaignResult,
    ChunkResult,
    DetectorParams,
    ParamSpace,
    RunRecord,
    run_campaign,
    run_chunk,
)
from convergence.streams import campaign_shards as cs
from convergence.streams.topics import TOPIC_CONFIGS, TOPIC_PARTITIONS, TOPICS, ClusterError

SCENARIOS = ["simultaneous", "lone-surge"]
TIMING = {"seconds", "tests_per_s"}


def _settings() -> Settings:
    return load_settings(env={"CONVERGENCE_TOPIC_PREFIX": "t"}, config_path=None)


def _shard(**kw: Any) -> cs.Shard:
    base: dict[str, Any] = {"campaign": "c1", "shard": 0, "scenario": "lone-surge", "first": 0,
                            "count": 2, "seed": 3, "space": ParamSpace(), "sweep": False,
                            "mode": "cells", "detector": DEFAULT_DETECTOR,
                            "code": cs.code_fingerprint(), "expires_at_s": time.time() + 60}
    return cs.Shard(**(base | kw))


def _docs(msgs: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(m) for m in msgs]


def _without_timing(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in TIMING}


@pytest.fixture(scope="module")
def local() -> CampaignResult:
    return run_campaign(SCENARIOS, runs=3, seed=5, workers=1, chunk=2, sweep=True)


# -- topics ------------------------------------------------------------------------------
def test_campaign_topics_are_declared_with_the_others() -> None:
    assert set(cs.CAMPAIGN_TOPICS) <= set(TOPICS)
    assert all(TOPIC_CONFIGS[n]["retention.ms"] == "86400000" for n in cs.CAMPAIGN_TOPICS)
    # shards spread over partitions that 1, 2, 3, 4 or 6 workers share evenly
    assert TOPIC_PARTITIONS == {"campaign-shards": 12, "campaign-cancel": 1}


# -- the work order ------------------------------------------------------------------------
def test_a_shard_round_trips_with_every_setting() -> None:
    s = _shard(sweep=True, mode="events", detector=DetectorParams(60.0, 10, 1.0),
               space=dataclasses.replace(ParamSpace(), warning=(40.0, 70.0), window_ticks=(4,)))
    back = cs.Shard.from_json(s.to_json())
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
    with pytest.raises(cs.ShardError, match=reason) as err:
        cs.Shard.from_json(value)
    assert (err.value.campaign, err.value.shard) == ids


@pytest.mark.parametrize(("change", "reason"), [
    ({"mode": "batch"}, "mode 'batch' is not one of cells, events"),
    ({"count": 0}, "count >= 1"),
    ({"first": -1}, "first >= 0"),
])
def test_a_shard_out_of_range_is_refused(change: dict[str, Any], reason: str) -> None:
    doc = orjson.loads(_shard().to_json()) | change
    with pytest.raises(cs.ShardError, match=reason):
        cs.Shard.from_json(orjson.dumps(doc))


def test_a_worker_refuses_other_code_unknown_scenarios_expired_and_cancelled_shards() -> None:
    now = time.time()
    assert cs.refusal(_shard(), now) is None
    state, reason = cs.refusal(_shard(code="0" * 16), now) or ("", "")
    assert state == "failed" and "other code" in reason and "restart the cluster" in reason
    assert cs.refusal(_shard(scenario="nope"), now) == (
        "failed", "the worker does not know scenario 'nope'")
    assert (cs.refusal(_shard(expires_at_s=now - 5), now) or ("",))[0] == "expired"
    assert (cs.refusal(_shard(), now, cancelled={"c1": now}) or ("",))[0] == "cancelled"


# -- the worker's answer and the client's merge ----------------------------------------------
def test_a_big_answer_goes_out_in_bounded_parts_and_is_joined_in_any_order() -> None:
    shard = _shard(scenario="simultaneous", count=3)
    msgs = cs.run_shard(shard, "w1", max_bytes=600)
    assert len(msgs) == 3 and all(len(m) <= 600 for m in msgs)
    docs = _docs(msgs)
    assert {d["state"] for d in docs} == {"done"} and [d["part"] for d in docs] == [0, 1, 2]
    collector = cs.ResultCollector("c1", [("simultaneous", 0, 3)])
    got = [collector.add(d) for d in reversed(docs)]
    assert got[:2] == [None, None] and isinstance(got[2], ChunkResult)
    expected = run_chunk("simultaneous", 0, 3, seed=3, space=ParamSpace(), sweep=False)
    assert got[2].records == expected.records
    assert (got[2].station_hours, got[2].events) == (expected.station_hours, expected.events)


def test_one_record_too_big_for_a_message_fails_the_shard() -> None:
    with pytest.raises(cs.ShardError, match="more than one message may carry"):
        cs.run_shard(_shard(count=1), "w1", max_bytes=300)


def test_non_finite_floats_survive_the_wire() -> None:
    rec = RunRecord("lone-surge", 0, 1, 1, 0, (float("nan"), 2.0), DEFAULT_DETECTOR,
                    ((2, float("inf"), True),), (float("-inf"),), float("nan"))
    res = ChunkResult("lone-surge", [rec], 1.5, 10, 0.1)
    (msg,) = cs.result_messages(_shard(count=1), res, "w1")
    (back,) = cs.ResultCollector("c1", [("lone-surge", 0, 1)]).add(orjson.loads(msg)).records  # type: ignore[union-attr]
    assert repr(back) == repr(rec)


def test_the_client_keeps_its_own_campaign_and_the_first_answer_of_each_shard() -> None:
    shard = _shard()
    answer = _docs(cs.run_shard(shard, "w1"))
    collector = cs.ResultCollector("c1", [("lone-surge", 0, 2)])
    for junk in ([1], {"campaign": "other", "shard": 0, "state": "failed"},
                 {"campaign": "c1", "shard": 7, "state": "done"}, answer[0] | {"campaign": "c2"}):
        assert collector.add(junk) is None
    assert not collector.workers
    collector.add(orjson.loads(cs._message(shard, "started", "w1")))
    collector.add(orjson.loads(cs._message(shard, "started", "w2")))  # after a failover
    assert collector.progress() == cs.ClusterProgress(1, 0, 1, 2, 1)
    assert isinstance(collector.add(answer[0]), ChunkResult) and collector.complete
    assert collector.add(answer[0] | {"worker": "w2"}) is None  # the re-run's answer


def test_a_failed_shard_ends_the_campaign_with_the_workers_reason() -> None:
    collector = cs.ResultCollector("c1", [("lone-surge", 0, 2)])
    with pytest.raises(cs.ShardFailed, match=r"shard 0 \(lone-surge runs 0-1\) on worker w9 "
                                             r"failed: ValueError: boom"):
        collector.add({"campaign": "c1", "shard": 0, "state": "failed", "worker": "w9",
                       "reason": "ValueError: boom"})


def test_an_answer_for_other_runs_is_not_taken() -> None:
    answer = _docs(cs.run_shard(_shard(first=5, count=2), "w1"))
    collector = cs.ResultCollector("c1", [("lone-surge", 0, 2)])
    with pytest.raises(cs.ShardFailed, match=r"answered runs 5\.\.6, not 0\.\.1"):
        collector.add(answer[0])


def test_cancels_are_remembered_up_to_a_bound() -> None:
    cancels = cs.CancelledCampaigns(_settings(), limit=2)
    for cid in ("a", "b", "c"):
        cancels.add(orjson.dumps({"campaign": cid, "at_s": 1.0}))
    cancels.add(b"junk")
    assert list(cancels.cancelled) == ["b", "c"]


# -- the client against an in-process cluster ------------------------------------------------
class FakeCluster:
    """Answers shards on poll: the last published first, the first one twice (a failover)."""

    def __init__(self, *, answer: bool = True, go_quiet_after: int | None = None) -> None:
        self.shards: list[bytes] = []
        self.cancels: list[dict[str, Any]] = []
        self.answer = answer
        self.go_quiet_after = go_quiet_after
        self.closed = False
        self.polls = 0

    def __call__(self, settings: Settings) -> FakeCluster:
        return self

    def publish(self, topic: str, key: bytes, value: bytes, partition: int | None) -> None:
        if topic == "t-campaign-shards":
            # dealt to the two workers in turn
            assert partition == [0, 6, 1, 7][len(self.shards) % 4]
            self.shards.append(value)
        else:
            assert topic == "t-campaign-cancel"
            self.cancels.append(orjson.loads(value))

    def partitions(self, topic: str) -> int:
        return 12

    def owners(self, topic: str) -> list[list[int]]:
        return [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]

    def flush(self) -> None:
        pass

    def poll(self, timeout_s: float) -> list[bytes]:
        self.polls += 1
        quiet = self.go_quiet_after is not None and self.polls > self.go_quiet_after
        if not self.answer or not self.shards or quiet:
            time.sleep(timeout_s)
            return []
        shard = cs.Shard.from_json(self.shards.pop())
        if shard.shard != 0:
            return [cs._message(shard, "started", "w1"), *cs.run_shard(shard, "w1")]
        # w1 went quiet mid-shard, w2 took the shard over, then both answered
        return [cs._message(shard, "started", "w1"), cs._message(shard, "started", "w2"),
                *cs.run_shard(shard, "w1"), *cs.run_shard(shard, "w2")]

    def close(self) -> None:
        self.closed = True


def test_a_campaign_on_the_fake_cluster_equals_the_local_one(local: CampaignResult) -> None:
    fake = FakeCluster()
    seen: list[cs.ClusterProgress] = []
    runner = cs.cluster_chunk_runner(_settings(), transport=fake, on_progress=seen.append)
    res = run_campaign(SCENARIOS, runs=3, seed=5, chunk=2, sweep=True, chunk_runner=runner)
    assert res.records == local.records
    assert _without_timing(res.summary()) == _without_timing(local.summary())
    assert res.calibration() == local.calibration()
    assert fake.closed and not fake.cancels
    assert seen[-1] == dataclasses.replace(seen[-1], shards=4, done=4, running=0, workers=2, reruns=1)


def test_no_worker_is_one_clear_error_and_the_shards_are_cancelled() -> None:
    fake = FakeCluster(answer=False)
    runner = cs.cluster_chunk_runner(_settings(), transport=fake, start_timeout_s=0.3)
    with pytest.raises(ClusterError) as err:
        run_campaign(SCENARIOS, runs=1, seed=5, chunk_runner=runner)
    assert str(err.value) == (
        "no cluster worker took the campaign's shards within 0.3 s; is `convergence cluster up` "
        "running with the same CONVERGENCE_TOPIC_PREFIX (t) on Kafka at 127.0.0.1:9092?")
    (cancel,) = fake.cancels
    assert cancel["campaign"] == cs.Shard.from_json(fake.shards[0]).campaign and fake.closed


def test_a_cluster_that_goes_quiet_is_one_clear_error() -> None:
    fake = FakeCluster(go_quiet_after=1)
    runner = cs.cluster_chunk_runner(_settings(), transport=fake, stall_timeout_s=0.3)
    with pytest.raises(ClusterError, match=r"the cluster stopped answering: 1 of 2 shards "
                                           r"unfinished and no word from any worker for 0.3 s"):
        run_campaign(SCENARIOS, runs=1, seed=5, chunk_runner=runner)
    assert len(fake.cancels) == 1


def test_stopping_the_client_early_cancels_its_shards() -> None:
    fake = FakeCluster()
    it: Iterator[ChunkResult] = iter(cs.cluster_chunk_runner(_settings(), transport=fake)(
        [("lone-surge", 0, 1), ("lone-surge", 1, 1)],
        {"seed": 1, "space": ParamSpace(), "sweep": False, "mode": "cells",
         "detector": DEFAULT_DETECTOR}))
    next(it)
    it.close()  # what Ctrl-C does to the generator
    assert len(fake.cancels) == 1 and fake.closed


# -- the command line, no broker -------------------------------------------------------------
def test_kafka_without_cluster_is_refused() -> None:
    from typer.testing import CliRunner

    from convergence.cli.main import app

    r = CliRunner().invoke(app, ["montecarlo", "run", "--runs", "1", "--kafka", "h:1",
                                 "--no-store"])
    assert r.exit_code == 2
    assert "error: --kafka only applies with --cluster" in r.stderr


def test_cluster_without_a_broker_is_one_error_line() -> None:
    from typer.testing import CliRunner

    from convergence.cli.main import app

    r = CliRunner().invoke(app, ["montecarlo", "run", "--runs", "1", "--scenarios", "lone-surge",
                                 "--cluster", "--kafka", "127.0.0.1:1", "--no-store", "--json"])
    assert r.exit_code == 1, r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Kafka at 127.0.0.1:1")
    assert r.stdout == ""
