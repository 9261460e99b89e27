"""Campaigns on the cluster: seeded shards on a topic, run by the workers' own Faust agent.

``convergence montecarlo run --cluster`` hands a campaign's chunks
(:func:`convergence.simulation.campaign.plan`) to the cluster instead of a local process
pool. These modules own both ends of that exchange, and nothing else; this one describes
it and gathers their names:

* :class:`Shard` - one chunk as a work order: ``(scenario, first run, count)`` plus
  everything :func:`~convergence.simulation.campaign.run_chunk` is deterministic in (seed,
  parameter space, sweep, mode, detector settings), the campaign it belongs to, and a
  fingerprint of the code that decides a run's outcome; with the worker's answers, the
  wire (:mod:`~convergence.streams.campaign_orders`);
* :func:`register_campaign_agent` - the worker side
  (:mod:`~convergence.streams.campaign_agent`): a Faust agent on ``campaign-shards``
  that runs each shard in a thread (the event loop keeps heartbeating) and answers on
  ``campaign-results``; :func:`run_shard` is the pure part it calls;
* :func:`cluster_chunk_runner` - the client side (:mod:`~convergence.streams.campaign_client`):
  publishes the shards, collects the answers of its own campaign
  (:class:`ResultCollector`), reports progress, fails with one clear
  :class:`~convergence.streams.topics.ClusterError` when nobody answers.

It imports :mod:`convergence.simulation` because running a shard *is* running a campaign
chunk; :mod:`convergence.simulation` never imports the Kafka side, so there is no cycle.

Topics (``settings.topic(name)``; values are JSON):

================  ======================  ===============================================
name              key                     value
================  ======================  ===============================================
campaign-shards   ``<campaign>/<shard>``  :meth:`Shard.to_json` (dealt to the workers in
                                          turn: :func:`routes`)
campaign-results  ``<campaign>``          ``{"campaign", "shard", "state", "worker", ...}``:
                                          ``started``, ``running`` (every
                                          :data:`HEARTBEAT_S`), ``done`` (a part of the
                                          :class:`~convergence.simulation.campaign.ChunkResult`,
                                          at most :data:`MAX_RESULT_BYTES`), ``failed``
campaign-cancel   ``<campaign>``          ``{"campaign", "at_s"}``: a client gave up
================  ======================  ===============================================

Failures. A shard's offset is committed only after its result is delivered, so a worker
killed mid-shard leaves it to whichever worker gets its partition after the broker's
session timeout: at-least-once. Runs are deterministic, so a shard run twice gives the
same records; the client keeps the first complete answer per shard. A client that gives
up (no worker, a stall, Ctrl-C) publishes a cancel; workers read the cancel topic in full
(no consumer group) and skip that campaign's queued shards. A shard also expires
(``expires_at_s``) if a client died without cancelling.

Results equal a local campaign's exactly: the shards are the very chunks a local run
makes, and merging is order-independent (:func:`~convergence.simulation.campaign.run_campaign`
sorts chunk results before it sums them).

Examples
--------
The worker's part and the client's part, without a broker:

>>> import orjson
>>> from convergence.simulation.campaign import ParamSpace, run_chunk
>>> shard = Shard("c1", 0, "lone-surge", first=0, count=2, seed=1, space=ParamSpace(),
...               sweep=False, mode="cells", detector=DEFAULT_DETECTOR, code=code_fingerprint(),
...               expires_at_s=2e9)
>>> Shard.from_json(shard.to_json()) == shard
True
>>> answer = run_shard(shard, worker="w1")
>>> collector = ResultCollector("c1", [("lone-surge", 0, 2)])
>>> got = [collector.add(orjson.loads(m)) for m in answer]
>>> got[-1].records == run_chunk("lone-surge", 0, 2, seed=1, space=ParamSpace(), sweep=False).records
True
>>> collector.complete, collector.add(orjson.loads(answer[0])) is None  # a re-run: ignored
(True, True)
"""

from __future__ import annotations

from convergence.streams.campaign_agent import (
    MAX_CANCELLED,
    CancelledCampaigns,
    refusal,
    register_campaign_agent,
    run_shard,
)
from convergence.streams.campaign_client import (
    MIN_TTL_S,
    STALL_TIMEOUT_S,
    START_TIMEOUT_S,
    ClusterProgress,
    KafkaTransport,
    ResultCollector,
    Transport,
    cluster_chunk_runner,
    make_shards,
    routes,
    run_on_cluster,
)
from convergence.streams.campaign_orders import (
    CAMPAIGN_TOPICS,
    DEFAULT_DETECTOR,
    HEARTBEAT_S,
    MAX_RESULT_BYTES,
    Shard,
    ShardError,
    ShardFailed,
    code_fingerprint,
    result_messages,
)

# the three parts' names, as callers have imported them from here
__all__ = [
    "CAMPAIGN_TOPICS", "DEFAULT_DETECTOR", "HEARTBEAT_S", "MAX_CANCELLED", "MAX_RESULT_BYTES",
    "MIN_TTL_S", "STALL_TIMEOUT_S", "START_TIMEOUT_S", "CancelledCampaigns", "ClusterProgress",
    "KafkaTransport", "ResultCollector", "Shard", "ShardError", "ShardFailed", "Transport",
    "cluster_chunk_runner", "code_fingerprint", "make_shards", "refusal", "register_campaign_agent",
    "result_messages", "routes", "run_on_cluster", "run_shard",
]
