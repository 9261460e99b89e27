"""Campaign shards, the client's side, without a broker: the merge of the workers' answers,
and the very client that runs against Kafka, against a fake transport that plays the
cluster in-process (answers out of order, a shard answered twice as after a failover,
silence). The real-broker tier is ``tests/cli/test_montecarlo_cluster.py``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from convergence.settings import Settings, load_settings
from convergence.simulation.campaign import (
    DEFAULT_DETECTOR,
    CampaignResult,
    ChunkResult,
    ParamSpace,
    run_campaign,
)
from convergence.streams.campaign_agent import run_shard
from convergence.streams.campaign_client import ClusterProgress, ResultCollector, cluster_chunk_runner
from convergence.streams.campaign_orders import Shard, ShardFailed, shard_message
from convergence.streams.topics import ClusterError

SCENARIOS = ["simultaneous", "lone-surge"]
TIMING = {"seconds", "tests_per_s"}


def _settings() -> Settings:
    return load_settings(env={"CONVERGENCE_TOPIC_PREFIX": "t"}, config_path=None)


def _without_timing(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in TIMING}


@pytest.fixture(scope="module")
def local() -> CampaignResult:
    return run_campaign(SCENARIOS, runs=3, seed=5, workers=1, chunk=2, sweep=True)


# -- the client's merge ----------------------------------------------------------------------
def test_the_client_keeps_its_own_campaign_and_the_first_answer_of_each_shard(
        make_shard: Callable[..., Shard]) -> None:
    shard = make_shard()
    answer = [orjson.loads(m) for m in run_shard(shard, "w1")]
    collector = ResultCollector("c1", [("lone-surge", 0, 2)])
    for junk in ([1], {"campaign": "other", "shard": 0, "state": "failed"},
                 {"campaign": "c1", "shard": 7, "state": "done"}, answer[0] | {"campaign": "c2"}):
        assert collector.add(junk) is None
    assert not collector.workers
    collector.add(orjson.loads(shard_message(shard, "started", "w1")))
    collector.add(orjson.loads(shard_message(shard, "started", "w2")))  # after a failover
    assert collector.progress() == ClusterProgress(1, 0, 1, 2, 1)
    assert isinstance(collector.add(answer[0]), ChunkResult) and collector.complete
    assert collector.add(answer[0] | {"worker": "w2"}) is None  # the re-run's answer


def test_a_failed_shard_ends_the_campaign_with_the_workers_reason() -> None:
    collector = ResultCollector("c1", [("lone-surge", 0, 2)])
    with pytest.raises(ShardFailed, match=r"shard 0 \(lone-surge runs 0-1\) on worker w9 "
                                             r"failed: ValueError: boom"):
        collector.add({"campaign": "c1", "shard": 0, "state": "failed", "worker": "w9",
                       "reason": "ValueError: boom"})


def test_an_answer_for_other_runs_is_not_taken(make_shard: Callable[..., Shard]) -> None:
    answer = [orjson.loads(m) for m in run_shard(make_shard(first=5, count=2), "w1")]
    collector = ResultCollector("c1", [("lone-surge", 0, 2)])
    with pytest.raises(ShardFailed, match=r"answered runs 5\.\.6, not 0\.\.1"):
        collector.add(answer[0])


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
        shard = Shard.from_json(self.shards.pop())
        if shard.shard != 0:
            return [shard_message(shard, "started", "w1"), *run_shard(shard, "w1")]
        # w1 went quiet mid-shard, w2 took the shard over, then both answered
        return [shard_message(shard, "started", "w1"), shard_message(shard, "started", "w2"),
                *run_shard(shard, "w1"), *run_shard(shard, "w2")]

    def close(self) -> None:
        self.closed = True


def test_a_campaign_on_the_fake_cluster_equals_the_local_one(local: CampaignResult) -> None:
    fake = FakeCluster()
    seen: list[ClusterProgress] = []
    runner = cluster_chunk_runner(_settings(), transport=fake, on_progress=seen.append)
    res = run_campaign(SCENARIOS, runs=3, seed=5, chunk=2, sweep=True, chunk_runner=runner)
    assert res.records == local.records
    assert _without_timing(res.summary()) == _without_timing(local.summary())
    assert res.calibration() == local.calibration()
    assert fake.closed and not fake.cancels
    assert seen[-1] == dataclasses.replace(seen[-1], shards=4, done=4, running=0, workers=2, reruns=1)


def test_no_worker_is_one_clear_error_and_the_shards_are_cancelled() -> None:
    fake = FakeCluster(answer=False)
    runner = cluster_chunk_runner(_settings(), transport=fake, start_timeout_s=0.3)
    with pytest.raises(ClusterError) as err:
        run_campaign(SCENARIOS, runs=1, seed=5, chunk_runner=runner)
    assert str(err.value) == (
        "no cluster worker took the campaign's shards within 0.3 s; is `convergence cluster up` "
        "running with the same CONVERGENCE_TOPIC_PREFIX (t) on Kafka at 127.0.0.1:9092?")
    (cancel,) = fake.cancels
    assert cancel["campaign"] == Shard.from_json(fake.shards[0]).campaign and fake.closed


def test_a_cluster_that_goes_quiet_is_one_clear_error() -> None:
    fake = FakeCluster(go_quiet_after=1)
    runner = cluster_chunk_runner(_settings(), transport=fake, stall_timeout_s=0.3)
    with pytest.raises(ClusterError, match=r"the cluster stopped answering: 1 of 2 shards "
                                           r"unfinished and no word from any worker for 0.3 s"):
        run_campaign(SCENARIOS, runs=1, seed=5, chunk_runner=runner)
    assert len(fake.cancels) == 1


def test_stopping_the_client_early_cancels_its_shards() -> None:
    fake = FakeCluster()
    it: Iterator[ChunkResult] = iter(cluster_chunk_runner(_settings(), transport=fake)(
        [("lone-surge", 0, 1), ("lone-surge", 1, 1)],
        {"seed": 1, "space": ParamSpace(), "sweep": False, "mode": "cells",
         "detector": DEFAULT_DETECTOR}))
    next(it)
    it.close()  # what Ctrl-C does to the generator
    assert len(fake.cancels) == 1 and fake.closed
