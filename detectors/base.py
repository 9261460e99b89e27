"""The small interface every detector stage implements, and its explicit state.

A stage is configured once (constructor arguments stored under their own names,
bad values rejected with ``ValueError``) and then *stepped* one tick at a time:
``step(state, inputs) -> outputs``. State is not hidden in the object: it is an
:class:`ArrayState` (named numpy arrays) created by ``init_state(shape)`` and passed
in on every call, so the same stage object serves one live batch ``(stations,)``,
a Faust worker's partition, or a Monte Carlo campaign ``(runs, stations)`` — any
leading dimensions work, the station axis is the last leading one.

``step`` updates the state arrays in place (that is what keeps the chain at millions
of events per second) and returns a dict of output arrays with the leading shape.

Examples
--------
>>> s = ArrayState.zeros((2, 3), {"mu": ((), 1.0), "hist": ((4,), 0.0)})
>>> s["mu"].shape, s["hist"].shape, s.nbytes_per_station()
((2, 3), (2, 3, 4), 40)
>>> ArrayState.from_dict(s.to_dict())["hist"].shape
(2, 3, 4)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Outputs = dict[str, Array]

# name -> (trailing shape, fill value[, dtype])
Spec = Mapping[str, tuple[Any, ...]]


class ArrayState(Mapping[str, Array]):
    """Named arrays sharing leading dimensions ``(..., stations)``."""

    def __init__(self, arrays: dict[str, Array], lead_ndim: int) -> None:
        self._arrays = arrays
        self.lead_ndim = lead_ndim

    @classmethod
    def zeros(cls, shape: tuple[int, ...], spec: Spec) -> ArrayState:
        arrays: dict[str, Array] = {}
        for name, item in spec.items():
            trailing, fill = item[0], item[1]
            dtype = item[2] if len(item) > 2 else np.float64
            arrays[name] = np.full(tuple(shape) + tuple(trailing), fill, dtype=dtype)
        return cls(arrays, len(shape))

    def __getitem__(self, key: str) -> Array:
        return self._arrays[key]

    def __setitem__(self, key: str, value: Array) -> None:
        self._arrays[key] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def shape(self) -> tuple[int, ...]:
        first = next(iter(self._arrays.values()))
        return tuple(first.shape[: self.lead_ndim])

    def nbytes_per_station(self) -> int:
        """Bytes of state one station costs (fixed, independent of history length)."""
        n = int(np.prod(self.shape)) or 1
        return int(sum(a.nbytes for a in self._arrays.values()) // n)

    def grow(self, n_stations: int, template: ArrayState) -> None:
        """Extend the station axis to ``n_stations`` with ``template``'s initial values.

        ``template`` holds either all ``n_stations`` stations (the new ones take their
        own rows), just the new stations, or one station whose row every new station
        gets.
        """
        ax = self.lead_ndim - 1
        for name, arr in self._arrays.items():
            have = arr.shape[ax]
            if have >= n_stations:
                continue
            new = n_stations - have
            fill = template[name]
            k = fill.shape[ax]
            if k == n_stations:
                idx = [slice(None)] * fill.ndim
                idx[ax] = slice(have, n_stations)
                fill = fill[tuple(idx)]
            elif k not in (new, 1):
                raise ValueError(f"grow template for {name!r} has {k} stations; give all "
                                 f"{n_stations}, the {new} new ones, or one to copy")
            extra = np.broadcast_to(fill, arr.shape[:ax] + (new,) + arr.shape[ax + 1 :])
            self._arrays[name] = np.concatenate([arr, extra.astype(arr.dtype)], axis=ax)

    def station(self, idx: int) -> dict[str, Any]:
        """One station's state as plain JSON-able values (for Faust tables)."""
        if self.lead_ndim != 1:
            raise ValueError("station() needs a live state of shape (stations,)")
        return {k: np.asarray(v[idx]).tolist() for k, v in self._arrays.items()}

    def set_station(self, idx: int, values: Mapping[str, Any]) -> None:
        """Restore one station's state from :meth:`station` output."""
        for k, v in values.items():
            if k in self._arrays:
                self._arrays[k][idx] = np.asarray(v, dtype=self._arrays[k].dtype)

    def to_dict(self) -> dict[str, Any]:
        """Serialisable form (lists + dtypes); see :meth:`from_dict`."""
        return {
            "lead_ndim": self.lead_ndim,
            "arrays": {
                k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.ravel().tolist()}
                for k, v in self._arrays.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArrayState:
        arrays = {
            k: np.asarray(a["data"], dtype=a["dtype"]).reshape(a["shape"])
            for k, a in d["arrays"].items()
        }
        return cls(arrays, int(d["lead_ndim"]))

    def copy(self) -> ArrayState:
        return ArrayState({k: v.copy() for k, v in self._arrays.items()}, self.lead_ndim)


class Stage(ABC):
    """One detector stage: configuration in the object, state passed in explicitly."""

    #: short name used in outputs, explanations and the registry of stages
    name: str = "stage"

    @abstractmethod
    def state_spec(self) -> Spec:
        """Per-station state arrays: name -> (trailing shape, initial value[, dtype])."""

    def init_state(self, shape: tuple[int, ...]) -> ArrayState:
        """Fresh state for leading shape ``shape`` (last entry = number of stations)."""
        if not shape or min(shape) < 0:
            raise ValueError(f"shape must end with the station count, got {shape}")
        return ArrayState.zeros(shape, self.state_spec())

    @abstractmethod
    def step(self, state: ArrayState, inputs: Mapping[str, Array]) -> Outputs:
        """Advance one tick; update ``state`` in place and return output arrays."""

    def seed(self, state: ArrayState, expected_counts: Array, known: Array) -> None:
        """Start activity baselines at known per-tick rates where ``known`` (default: no-op).

        Stages with a count baseline override this beside their ``state_spec``.
        """
        return None


def seed_count_baseline(state: ArrayState, expected_counts: Array, known: Array, *,
                        mu: str, var: str, warmup_ticks: int, also: tuple[str, ...] = ()) -> None:
    """Seed an EWMA count baseline: mean = rate, variance = max(rate, 1), warm-up done.

    ``also`` names further state arrays that start at the rate (e.g. a fast average).
    """
    exp = np.where(known, expected_counts, 0.0)
    for key in (mu, *also):
        state[key][...] = np.where(known, exp, state[key])
    state[var][...] = np.where(known, np.maximum(exp, 1.0), state[var])
    state["n"][...] = np.where(known, np.maximum(state["n"], warmup_ticks), state["n"])


def fuse_top2(parts: Iterable[Array], corroboration: float) -> tuple[Array, Array]:
    """Strongest non-negative part plus ``corroboration`` times the second strongest.

    ``parts`` are same-shaped arrays of evidence >= 0 (absent parts may simply be left
    out: a zero never changes the top two). Returns ``(fused, top)`` where ``top`` is the
    element-wise maximum, tracked in one pass instead of stacking and sorting.

    >>> import numpy as np
    >>> fused, top = fuse_top2([np.array([1.0, 5.0]), np.array([3.0, 2.0]), np.array([2.0, 0.0])], 0.5)
    >>> fused.tolist(), top.tolist()
    ([4.0, 6.0], [3.0, 5.0])
    """
    top1: Array | None = None
    top2: Array | None = None
    for x in parts:
        if top1 is None or top2 is None:
            top1 = np.array(x, dtype=np.float64)
            top2 = np.zeros_like(top1)
            continue
        np.maximum(top2, np.minimum(top1, x), out=top2)
        np.maximum(top1, x, out=top1)
    if top1 is None or top2 is None:
        raise ValueError("fuse_top2 needs at least one part")
    if corroboration > 0:
        return top1 + corroboration * top2, top1
    return top1.copy(), top1


def ewma_update(mu: Array, var: Array, x: Array, a: Array | float) -> tuple[Array, Array]:
    """One EWMA step of a mean and variance: ``(mu + a d, (1 - a)(var + a d²))``, ``d = x - mu``.

    Returns new arrays; callers write them into their state.

    >>> import numpy as np
    >>> [v.tolist() for v in ewma_update(np.array([1.0]), np.array([0.0]), np.array([3.0]), 0.5)]
    [[2.0], [1.0]]
    """
    d = x - mu
    return mu + a * d, (1.0 - a) * (var + a * d * d)


def check_int_min(name: str, value: int, minimum: int) -> None:
    """Reject an integer argument below ``minimum`` with a message naming it."""
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def check_unit_interval(name: str, value: float) -> None:
    """Reject a value outside the closed interval [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Reject a bad constructor argument with a message naming it."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not np.isfinite(value):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def check_fraction(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
