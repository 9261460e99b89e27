"""Shared fixtures. ``kafka_bootstrap`` runs ONE real broker for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from convergence.settings import load_settings
from convergence.streams import kafka_local


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
