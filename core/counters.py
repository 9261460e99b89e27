"""A base for the small integer counter records every component keeps.

Counters are plain dataclasses of ``int`` fields; this base gives them one way to be
reported (``as_dict``), so summaries, run records and ``--json`` output agree.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass
... class Seen(Counters):
...     events: int = 0
...     dropped: int = 0
>>> c = Seen(); c.events += 3
>>> c.as_dict()
{'events': 3, 'dropped': 0}
"""

from __future__ import annotations

import dataclasses


class Counters:
    """Mixin for counter dataclasses (``slots=True`` ones included)."""

    def as_dict(self) -> dict[str, int]:
        names = ([f.name for f in dataclasses.fields(self)] if dataclasses.is_dataclass(self)
                 else list(vars(self)))
        return {k: int(getattr(self, k)) for k in names if not k.startswith("_")}
