"""Deterministic ids: the same inputs always name the same record.

Alerts, reports, responses and commands are named by what they are about (region,
episode, tick, action, target), never by a counter or a clock, so a replay or a
restarted worker upserts the very same records instead of duplicating them.

>>> hash_id("rpt", "mena", 12)
'rpt-6a1a5609b8d4ff73'
>>> hash_id("rpt", "mena", 12) == hash_id("rpt", "mena", 12) != hash_id("rpt", "apac", 12)
True
"""

from __future__ import annotations

import hashlib
from typing import Any


def hash_id(prefix: str, *parts: Any) -> str:
    """``<prefix>-<16 hex>`` from ``parts`` (BLAKE2b of their ``|``-joined text)."""
    return f"{prefix}-" + hashlib.blake2b("|".join(map(str, parts)).encode(),
                                          digest_size=8).hexdigest()
