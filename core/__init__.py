"""Convergence: OSINT and market convergence intelligence.

The top-level package owns what every component shares: the event schema
(:mod:`convergence.schema`), its wire format (:mod:`convergence.wire`) and the
one settings object (:mod:`convergence.settings`). The components themselves live
in sub-packages that map onto the repository's top-level folders.
"""

__version__ = "0.1.0"
