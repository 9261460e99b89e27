"""Storage: all persistence of alerts, reports, responses, dead letters and run summaries.

This component owns every read and write of durable Convergence data, kept in
SurrealDB (embedded ``surrealkv://`` file, throwaway ``mem://``, or a
``ws://`` server) in the tables ``alert``, ``report``, ``response``,
``dead_letter`` and ``run``, plus the report graph (``station``, ``revision``,
``event``, ``label``; relations ``involves``, ``cites``, ``triggered``, ``of``) and
its integrity chains (``chain``). No other component talks to the database.

* :class:`SurrealStore` - async, idempotent upserts and reads on deterministic ids.
* :class:`BatchedWriter` - non-blocking submit, batching, retry with backoff,
  circuit breaker, bounded queue with :class:`StoreBackpressure`; never drops silently.
* :class:`CircuitBreaker` - small reusable closed/open/half-open state machine.
* :class:`StoreError` - every database failure, worded for whoever is on call.
* :mod:`convergence.store.graph` - reports as a graph (``ReportGraph``) and its queries.
* :mod:`convergence.store.integrity` - the hash chains and ``verify``.
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
