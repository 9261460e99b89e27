"""Storage: all persistence of alerts, reports, responses, dead letters and run summaries.

This component owns every read and write of durable Convergence data, kept in
SurrealDB (embedded ``surrealkv://`` file, throwaway ``mem://``, or a
``ws://`` server) in the tables ``alert``, ``report``, ``response``,
``dead_letter`` and ``run``. No other component talks to the database.

* :class:`SurrealStore` - async, idempotent upserts and reads on deterministic ids.
* :class:`BatchedWriter` - non-blocking submit, batching, retry with backoff,
  circuit breaker, bounded queue with :class:`StoreBackpressure`; never drops silently.
* :class:`CircuitBreaker` - small reusable closed/open/half-open state machine.
* :class:`StoreError` - every database failure, worded for whoever is on call.
"""

from convergence.breaker import BreakerState, CircuitBreaker
from convergence.store.surreal import TABLES, StoreError, SurrealStore, validate_record
from convergence.store.writer import BatchedWriter, StoreBackpressure, SupportsUpsertMany

__all__ = [
    "TABLES",
    "BatchedWriter",
    "BreakerState",
    "CircuitBreaker",
    "StoreBackpressure",
    "StoreError",
    "SupportsUpsertMany",
    "SurrealStore",
    "validate_record",
]
