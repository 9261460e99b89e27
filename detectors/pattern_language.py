"""The temporal-pattern language (TETH): TOML text compiled to :class:`Pattern` objects.

A *pattern* says "this kind of station signals, then that kind, within so many
seconds, then ...", optionally requiring every step to come from stations that share
an attribute (``same = ["region"]``)::

    [[pattern]]
    name = "social-news-market"        # required, unique
    description = "..."                # optional, for reports
    skip = "skip_till_next_match"      # optional; see convergence.detectors.patterns
    same = ["region"]                  # optional; "region" and/or "group"
    [[pattern.step]]                   # at least 2, at most MAX_STEPS steps
    kind = "osint_social"              # a convergence.schema source kind
    signal = "burst"                   # a name in SIGNALS
    [[pattern.step]]
    kind = "osint_news"
    signal = "burst"
    within_s = 600                     # required after the first step: > 0 seconds

:func:`compile_patterns` checks everything once; every mistake is a ``ValueError``
naming the pattern, the step, the field and, where the text shows it, the line. The
streaming automaton that runs compiled patterns is
:class:`convergence.detectors.patterns.PatternMatcher`.

Examples
--------
>>> patterns = compile_patterns(DEFAULT_PATTERNS)
>>> [(p.name, len(p.steps), p.skip.value, p.same) for p in patterns]
[('social-news-market', 3, 'skip_till_next_match', ('region',))]
>>> import textwrap
>>> try:
...     compile_patterns(DEFAULT_PATTERNS.replace('"osint_news"', '"osint-news"'))
... except ValueError as exc:
...     print(textwrap.fill(str(exc), 88))
pattern #1 'social-news-market', step 2, kind (line 13): 'osint-news' is not a source
kind (did you mean 'osint_news'?); use one of osint_news, osint_social, market_price,
market_volume, sensor
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from convergence.schema import KIND_INDEX, SOURCE_KINDS, SourceKind

__all__ = ["DEFAULT_PATTERNS", "MAX_STEPS", "SAME_ATTRIBUTES", "SIGNALS", "Pattern", "SkipStrategy",
           "Step", "compile_patterns"]


class SkipStrategy(StrEnum):
    """How events that do not continue a partial match are treated (module docstring)."""

    STRICT_CONTIGUITY = "strict_contiguity"
    SKIP_TILL_NEXT_MATCH = "skip_till_next_match"
    SKIP_TILL_ANY_MATCH = "skip_till_any_match"


#: Signals a step may name, and where the detector chain takes each from.
SIGNALS: Mapping[str, str] = {
    "burst": "BurstDetector output 'burst'",
    "change_level": "CusumDetector output 'change_level'",
    "change_variance": "CusumDetector output 'change_variance'",
    "periodicity_break": "PeriodicityDetector output 'periodicity_break'",
    "anomalous": "NodeStateMachine output 'state' == ANOMALOUS",
}

#: Station attributes ``same`` may name (the matcher's ``region_idx`` / ``group_idx``).
SAME_ATTRIBUTES: tuple[str, ...] = ("region", "group")

#: Longest sequence a pattern may describe (keeps partial matches small).
MAX_STEPS = 16

_PATTERN_FIELDS = ("name", "description", "skip", "same", "step")
_STEP_FIELDS = ("kind", "signal", "within_s")
_COUNTERS = ("started", "matched", "expired", "killed", "evicted")

DEFAULT_PATTERNS = """\
# Social chatter, then the news, then the market: the classic information cascade.
[[pattern]]
name = "social-news-market"
description = "social burst -> news burst (same region, 10 min) -> market volume surge (30 min)"
skip = "skip_till_next_match"
same = ["region"]

[[pattern.step]]
kind = "osint_social"
signal = "burst"

[[pattern.step]]
kind = "osint_news"
signal = "burst"
within_s = 600

[[pattern.step]]
kind = "market_volume"
signal = "burst"
within_s = 1800
"""


@dataclass(frozen=True)
class Step:
    """One step of a pattern: a station kind, a signal, a window after the previous step."""

    kind: SourceKind
    signal: str
    within_s: float | None = None


@dataclass(frozen=True)
class Pattern:
    """A compiled pattern (see the module docstring for the language)."""

    name: str
    steps: tuple[Step, ...]
    skip: SkipStrategy = SkipStrategy.SKIP_TILL_NEXT_MATCH
    same: tuple[str, ...] = ()
    description: str = ""


# --------------------------------------------------------------------------- compiling

_HEADER_RE = re.compile(r"^\s*\[")
_PATTERN_RE = re.compile(r"^\s*\[\[\s*pattern\s*\]\]")
_STEP_RE = re.compile(r"^\s*\[\[\s*pattern\s*\.\s*step\s*\]\]")


class _Where:
    """Best-effort line numbers for error messages.

    tomllib reports lines only for syntax errors; for a semantic error we find the
    n-th ``[[pattern]]`` / ``[[pattern.step]]`` header and the field's ``key =`` line
    below it. Text written another way (inline tables) simply gets no line number.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.patterns: list[int] = []
        self.steps: list[list[int]] = []
        for i, line in enumerate(self.lines):
            if _STEP_RE.match(line):
                if self.steps:
                    self.steps[-1].append(i)
            elif _PATTERN_RE.match(line):
                self.patterns.append(i)
                self.steps.append([])

    def line(self, p: int, s: int | None, fld: str | None) -> int | None:
        if p >= len(self.patterns):
            return None
        if s is None:
            start = self.patterns[p]
        elif s < len(self.steps[p]):
            start = self.steps[p][s]
        else:
            return None
        if fld is not None:
            key_re = re.compile(rf"""^\s*["']?{re.escape(fld)}["']?\s*=""")
            for i in range(start + 1, len(self.lines)):
                if _HEADER_RE.match(self.lines[i]):
                    break
                if key_re.match(self.lines[i]):
                    return i + 1
        return start + 1

    def error(self, p: int, name: str | None, msg: str, *, s: int | None = None,
              fld: str | None = None) -> ValueError:
        where = f"pattern #{p + 1}" + (f" {name!r}" if name else "")
        if s is not None:
            where += f", step {s + 1}"
        if fld is not None:
            where += f", {fld}"
        ln = self.line(p, s, fld)
        if ln is not None:
            where += f" (line {ln})"
        return ValueError(f"{where}: {msg}")


def _unknown_field(key: str, allowed: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field {key!r}{hint}; {what} has {', '.join(allowed)}"


def _choices(value: Any, valid: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(str(value), valid, n=1) if isinstance(value, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{value!r} is not {what}{hint}; use one of {', '.join(valid)}"


def compile_patterns(text: str, *, signals: Collection[str] = tuple(SIGNALS)) -> list[Pattern]:
    """Parse and validate pattern TOML text; return the compiled patterns in file order.

    ``signals`` is the set of signal names a step may use (default :data:`SIGNALS`);
    pass a larger set when the chain feeds the matcher extra signals. Raises
    ``ValueError`` naming the pattern, step, field and line of the first mistake.
    Empty text (or only comments) compiles to no patterns.
    """
    if not isinstance(text, str):
        raise ValueError(f"pattern text must be a str (read the file first), got {type(text).__name__}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"pattern text is not valid TOML: {exc}") from None
    for key in data:
        if key != "pattern":
            raise ValueError(f"unknown top-level key {key!r}; pattern text holds only "
                             "[[pattern]] tables")
    raw = data.get("pattern", [])
    if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
        raise ValueError("'pattern' must be an array of tables: write each pattern as "
                         "[[pattern]] followed by its [[pattern.step]] tables")
    where = _Where(text)
    known = sorted(signals)
    out: list[Pattern] = []
    seen: dict[str, int] = {}
    for i, p in enumerate(raw):
        pat = _compile_one(i, p, where, known)
        if pat.name in seen:
            raise where.error(i, pat.name, f"duplicate name; pattern #{seen[pat.name] + 1} "
                              "already uses it", fld="name")
        seen[pat.name] = i
        out.append(pat)
    return out


def _compile_one(i: int, p: Mapping[str, Any], where: _Where, signals: Sequence[str]) -> Pattern:
    name = p.get("name")
    label = name if isinstance(name, str) else None
    for key in p:
        if key not in _PATTERN_FIELDS:
            raise where.error(i, label, _unknown_field(key, _PATTERN_FIELDS, "a pattern"),
                              fld=key)
    if name is None:
        raise where.error(i, None, "name is missing; every pattern needs a unique name")
    if not isinstance(name, str) or not name.strip():
        raise where.error(i, None, f"must be a non-empty string, got {name!r}", fld="name")
    description = p.get("description", "")
    if not isinstance(description, str):
        raise where.error(i, name, f"must be a string, got {description!r}", fld="description")

    skip_raw = p.get("skip", SkipStrategy.SKIP_TILL_NEXT_MATCH.value)
    valid_skips = [s.value for s in SkipStrategy]
    if skip_raw not in valid_skips:
        raise where.error(i, name, _choices(skip_raw, valid_skips, "a skip strategy"), fld="skip")

    same_raw = p.get("same", [])
    if not isinstance(same_raw, list) or not all(isinstance(a, str) for a in same_raw):
        raise where.error(i, name, f"must be a list of attribute names, got {same_raw!r}",
                          fld="same")
    for attr in same_raw:
        if attr not in SAME_ATTRIBUTES:
            raise where.error(i, name, _choices(attr, SAME_ATTRIBUTES, "a station attribute"),
                              fld="same")
    if len(set(same_raw)) != len(same_raw):
        raise where.error(i, name, f"lists an attribute twice: {same_raw!r}", fld="same")

    steps_raw = p.get("step")
    if steps_raw is None:
        raise where.error(i, name, "has no steps; add [[pattern.step]] tables after it")
    if not isinstance(steps_raw, list) or not all(isinstance(s, dict) for s in steps_raw):
        raise where.error(i, name, "step must be an array of tables ([[pattern.step]])",
                          fld="step")
    if not 2 <= len(steps_raw) <= MAX_STEPS:
        raise where.error(i, name, f"needs 2 to {MAX_STEPS} steps ([[pattern.step]] tables), "
                          f"got {len(steps_raw)}")
    steps = tuple(_compile_step(i, name, j, s, where, signals) for j, s in enumerate(steps_raw))
    return Pattern(name=name, steps=steps, skip=SkipStrategy(skip_raw), same=tuple(same_raw),
                   description=description)


def _compile_step(i: int, name: str, j: int, s: Mapping[str, Any], where: _Where,
                  signals: Sequence[str]) -> Step:
    for key in s:
        if key not in _STEP_FIELDS:
            raise where.error(i, name, _unknown_field(key, _STEP_FIELDS, "a step"), s=j,
                              fld=key)
    kinds = [k.value for k in SOURCE_KINDS]
    kind = s.get("kind")
    if kind is None:
        raise where.error(i, name, f"kind is missing; use one of {', '.join(kinds)}", s=j)
    if not isinstance(kind, str) or kind not in KIND_INDEX:
        raise where.error(i, name, _choices(kind, kinds, "a source kind"), s=j, fld="kind")
    signal = s.get("signal")
    if signal is None:
        raise where.error(i, name, f"signal is missing; use one of {', '.join(signals)}", s=j)
    if signal not in signals:
        raise where.error(i, name, _choices(signal, signals, "a known signal"), s=j,
                          fld="signal")
    within = s.get("within_s")
    if j == 0:
        if within is not None:
            raise where.error(i, name, "the first step starts a match and takes no window; "
                              "remove within_s (windows count from the previous step)",
                              s=j, fld="within_s")
        return Step(SourceKind(kind), signal, None)
    if within is None:
        raise where.error(i, name, "within_s is missing; every step after the first needs "
                          "a window in seconds after the previous step, e.g. within_s = 600",
                          s=j)
    if isinstance(within, bool) or not isinstance(within, int | float):
        raise where.error(i, name, f"must be a number of seconds, got {within!r}", s=j,
                          fld="within_s")
    if not math.isfinite(within) or within <= 0:
        raise where.error(i, name, f"must be a finite number of seconds > 0, got {within!r}",
                          s=j, fld="within_s")
    return Step(SourceKind(kind), signal, float(within))


# ---------------------------------------------------------------------------- matching
