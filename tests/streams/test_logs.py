"""Repeated client log lines are summarised, not dropped silently."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from convergence.streams.logs import RepeatFilter, quiet_repeats


def _rec(msg: str, *args: object, name: str = "aiokafka.conn",
         level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_each_kind_passes_once_then_once_per_period_with_a_count() -> None:
    now = [0.0]
    f = RepeatFilter(every_s=30.0, clock=lambda: now[0])
    passed = []
    for i in range(100):
        now[0] = i * 0.5  # 50 s of a broker away, two lines a second
        r = _rec("Unable connect to node %s: %s", "1", f"attempt {i}")
        if f.filter(r):
            passed.append(r.getMessage())
    assert passed == ["Unable connect to node 1: attempt 0",
                      "Unable connect to node 1: attempt 60 (and 59 more like it in the last 30 s)"]


def test_kinds_are_told_apart_by_logger_level_and_template() -> None:
    f = RepeatFilter(every_s=30.0, clock=lambda: 0.0)
    assert f.filter(_rec("a %s", 1))
    assert not f.filter(_rec("a %s", 2))
    assert f.filter(_rec("b %s", 1))
    assert f.filter(_rec("a %s", 1, level=logging.WARNING))
    assert f.filter(_rec("a %s", 1, name="kafka.conn"))


def test_memory_is_bounded_by_max_kinds() -> None:
    f = RepeatFilter(every_s=30.0, max_kinds=3, clock=lambda: 0.0)
    for i in range(10):
        f.filter(_rec(f"message {i}"))
    assert len(f._kinds) == 3


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RepeatFilter(every_s=0)


def test_quiet_repeats_reaches_every_client_logger() -> None:
    child = logging.getLogger("aiokafka.consumer.fetcher.test")
    f = quiet_repeats()
    try:
        assert f in child.filters and f in logging.getLogger("kafka").filters
    finally:
        for name in [n for n in logging.root.manager.loggerDict if n.startswith(("aiokafka", "kafka"))]:
            logging.getLogger(name).removeFilter(f)
        logging.getLogger("kafka").removeFilter(f)
        logging.getLogger("aiokafka").removeFilter(f)


def test_quiet_repeats_reaches_the_loggers_of_modules_not_imported_yet() -> None:
    """A worker calls it before Faust imports aiokafka's consumer: the coordinator's
    "Marking the coordinator dead" came seven times a second, unfiltered."""
    code = ("import logging, sys\n"
            "from convergence.streams.logs import quiet_repeats\n"
            "assert 'aiokafka.consumer.group_coordinator' not in sys.modules\n"
            "f = quiet_repeats()\n"
            "for n in ('aiokafka.consumer.group_coordinator', 'aiokafka.conn',\n"
            "          'kafka.coordinator.consumer'):\n"
            "    assert f in logging.getLogger(n).filters, n\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
