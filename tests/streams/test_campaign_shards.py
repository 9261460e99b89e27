"""Campaigns on the cluster as a whole, without a broker: the parts' names are importable
from :mod:`convergence.streams.campaign_shards` as callers import them, and the command line
refuses what cannot run. Each part has its own tests (``test_campaign_orders.py``,
``test_campaign_agent.py``, ``test_campaign_client.py``); the real-broker tier is
``tests/cli/test_montecarlo_cluster.py``.
"""

from __future__ import annotations

from convergence.streams import campaign_agent, campaign_client, campaign_orders
from convergence.streams import campaign_shards as cs


def test_the_parts_names_are_importable_from_campaign_shards() -> None:
    for part in (campaign_orders, campaign_agent, campaign_client):
        for name in part.__all__:
            if name in cs.__all__:
                assert getattr(cs, name) is getattr(part, name), name
    assert set(cs.__all__) <= {*campaign_orders.__all__, *campaign_agent.__all__,
                                *campaign_client.__all__}


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
