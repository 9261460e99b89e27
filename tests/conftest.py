"""Shared fixtures. ``kafka_bootstrap`` runs ONE real broker for the whole session."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from convergence.settings import load_settings

# The loopback feed server (tests of RSS, HTTP JSON and probe) is a plain module next to
# its fixture files; test folders are not packages, so put it on the path once, here.
sys.path.insert(0, str(Path(__file__).parent / "ground_stations" / "fixtures"))
import feed_server

from convergence.streams import kafka_client, kafka_local

# Property tests (issue 11's fuzzing): derandomized, so a run is reproducible and CI
# never meets an example a developer did not; modest counts keep the suite fast; no
# deadline on this shared 2-core machine; no example database written into the tree.
hypothesis_settings.register_profile(
    "convergence", max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.load_profile("convergence")


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_dir() -> Iterator[None]:
    """Settings, models and databases of the person running the tests never leak into them.

    Every test (and every subprocess it starts) sees a fresh, empty data directory and an
    empty config file, and none of the caller's ``CONVERGENCE_*`` variables (a broker
    address exported after ``convergence kafka start``, a database URL, a meter model
    choice ...), so e.g. a model trained by hand does not change what ``convergence run``
    does under test. The Kafka jar cache is left alone: expensive, and read-only here.
    """
    saved = {k: v for k, v in os.environ.items()
             if k.startswith("CONVERGENCE_") and k != "CONVERGENCE_CACHE_DIR"}
    with tempfile.TemporaryDirectory(prefix="convergence-test-data-") as d:
        config = Path(d) / "empty.toml"
        config.write_text("# tests run on the defaults\n")
        for k in saved:
            del os.environ[k]
        os.environ["CONVERGENCE_DATA_DIR"] = d
        os.environ["CONVERGENCE_CONFIG"] = str(config)
        try:
            yield
        finally:
            for k in ("CONVERGENCE_DATA_DIR", "CONVERGENCE_CONFIG"):
                os.environ.pop(k, None)
            os.environ.update(saved)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a fresh single-node broker (jars cached in ``cache_dir``)."""
    try:
        handle = kafka_local.start(load_settings())
    except kafka_local.KafkaLocalError as exc:
        # Fail, not skip: a silently skipped broker test hides a broken setup.
        # Deselect with `-m "not kafka"` on machines without Java/Maven.
        pytest.fail(f"local Kafka broker unavailable: {exc}", pytrace=False)
    with handle:
        yield handle.bootstrap


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    """A real HTTP server on 127.0.0.1 serving fixture feeds (see fixtures/feed_server.py)."""
    s = feed_server.FeedServer().start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def read_topic() -> Callable[..., list[Any]]:
    """``read_topic(bootstrap, topic)``: every record on the topic now, read up to its end
    offsets (no waiting for a silence); see :func:`convergence.streams.kafka_client.read_topic`."""
    return kafka_client.read_topic
