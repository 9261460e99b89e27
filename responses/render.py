"""Reports as something a person reads: a short intelligence brief in text, Markdown or HTML,
or the record itself as JSON.

:func:`render` turns one :class:`~convergence.records.Report` revision (plus, when the caller
has them, the report's other revisions and the analysts' labels) into the brief a duty
analyst acts on at 3 a.m.: a headline (level, region, ISO 8601 UTC time and tick), the
bottom line up front, how sure we are and on what basis, what moved (each station's share,
its evidence, which were discounted as correlated and why), the timeline and score, what
the sources actually said, the context (market regimes, completed patterns, dark
stations), the actions taken and who acknowledged them, what would confirm or refute it,
and the revisions and outcome.

The brief is built once as a small document model (sections of paragraphs, bullet lists
and tables) and written out per format, so ``text``, ``md`` and ``html`` always say the
same thing. ``html`` is one standalone page: CSS and the score chart (SVG) are inline, no
script, nothing fetched, and it prints cleanly.

Everything a source wrote (headlines, links, notes) is untrusted: control characters are
removed (no terminal escape sequences), Markdown and HTML special characters are escaped,
texts are clipped, and only ``http(s)`` links become links. Rendering is pure: no clock, no
I/O.

Examples
--------
>>> from convergence.responses.examples import example_report
>>> brief = render(example_report(seed=1), "md")
>>> print(brief.splitlines()[0])
# CONVERGED — mena — 2026-03-14T04:12:06Z (tick 1773461526)
>>> [line for line in brief.splitlines() if line.startswith("## ")][:4]
['## Bottom line', '## Confidence', '## What moved', '## Timeline']
>>> render(example_report(seed=1), "text").splitlines()[0]
'CONVERGED — mena — 2026-03-14T04:12:06Z (tick 1773461526)'
>>> render(example_report(seed=1), "html").startswith("<!DOCTYPE html>")
True
"""

from __future__ import annotations

import html
import json
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit

from convergence.records import (
    Contribution,
    EvidenceSample,
    Label,
    Level,
    Report,
    ResponseTaken,
    TimelineEntry,
    iso_time,
)

__all__ = ["KIND_LABEL", "Format", "clip_words", "render", "safe_text", "safe_url"]


class Format(StrEnum):
    """Output formats of :func:`render`."""

    TEXT = "text"
    MD = "md"
    JSON = "json"
    HTML = "html"


#: plain words for source kinds
KIND_LABEL: dict[str, str] = {
    "osint_news": "news", "osint_social": "social media", "market_price": "market prices",
    "market_volume": "market volumes", "sensor": "sensors",
}
_ALL_KINDS = tuple(KIND_LABEL)
_KIND_ONE = {"osint_news": "news", "osint_social": "social media", "market_price": "market price",
             "market_volume": "market volume", "sensor": "sensor"}

MAX_TEXT = 300  # characters kept of a source's text in a brief
MAX_URL = 500
SPARK_POINTS = 48
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")
_SPARK = "▁▂▃▄▅▆▇█"


# -- untrusted text ----------------------------------------------------------------------


def safe_text(text: object, limit: int = MAX_TEXT) -> str:
    """``text`` on one line without control or bidi characters, clipped to ``limit``.

    >>> safe_text("Port\\x1b[31m blast\\nnow  ") , safe_text("x" * 10, 4)
    ('Port [31m blast now', 'xxx…')
    """
    s = _CONTROL.sub(" ", str(text))
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: max(limit - 1, 0)] + "…"


def clip_words(text: object, limit: int) -> str:
    """:func:`safe_text` clipped at a word boundary, so no word is cut in half.

    >>> title = "ENDED - CONVERGED in na-east: 5 stations (score 100)"
    >>> clip_words(title, 41), clip_words(title, 46)
    ('ENDED - CONVERGED in na-east: 5 stations…', 'ENDED - CONVERGED in na-east: 5 stations…')
    """
    s = safe_text(text, 100_000)
    if len(s) <= limit:
        return s
    cut = s[: max(limit - 1, 0)]
    if s[len(cut)] != " " and " " in cut:  # the cut falls inside a word: drop that word
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-") + "…"


def safe_url(url: object) -> str | None:
    """``url`` if it is a plain ``http(s)`` URL fit to be a link, else ``None``.

    >>> safe_url("https://wire.example.net/a b"), safe_url("javascript:alert(1)")
    ('https://wire.example.net/a%20b', None)
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL or _CONTROL.search(url):
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    # percent-encode what would end a Markdown link or an HTML attribute early
    return quote(url.strip(), safe=":/?#[]@!$&*+,;=%~-._'")


# -- the document model ------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A link in a brief; ``url`` is ``None`` when it was not a safe http(s) URL."""

    text: str
    url: str | None


@dataclass(frozen=True)
class Strong:
    """Emphasised text."""

    text: str


Span = str | Link | Strong
Inline = tuple[Span, ...]


@dataclass(frozen=True)
class Para:
    """A paragraph."""

    spans: Inline


@dataclass(frozen=True)
class Bullets:
    """A bullet list."""

    items: tuple[Inline, ...]


@dataclass(frozen=True)
class Table:
    """A table; ``numeric`` columns are right-aligned."""

    headers: tuple[str, ...]
    rows: tuple[tuple[Inline, ...], ...]
    numeric: frozenset[int] = frozenset()  # right-aligned columns


@dataclass(frozen=True)
class Chart:
    """The meter's score over the episode, ``(tick, score)``, 0-100."""

    points: tuple[tuple[int, float], ...]
    caption: str


Block = Para | Bullets | Table | Chart


@dataclass
class Section:
    """One titled part of a brief."""

    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Brief:
    """The whole brief, before it is written out in a format."""

    headline: str
    level: Level
    meta: Inline
    sections: list[Section]


# -- wording helpers ---------------------------------------------------------------------


def _kind(k: str) -> str:
    return KIND_LABEL.get(k, safe_text(k, 40))


def _pct(x: float) -> str:
    if not math.isfinite(x):
        return "?"
    if 0 < x < 0.005:
        return "<1%"
    return f"{x * 100:.0f}%"


def probability(p: float) -> str:
    """A calibrated probability in words: a campaign's finite count never proves certainty,
    so the ends read "over 99%" and "under 1%".

    >>> probability(0.9), probability(1.0), probability(0.0)
    ('90%', 'over 99%', 'under 1%')
    """
    if not math.isfinite(p):
        return "?"
    if p >= 0.995:
        return "over 99%"
    if p < 0.005:
        return "under 1%"
    return f"{p * 100:.0f}%"


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "?"
    if abs(x) >= 1000 and float(x).is_integer():
        return f"{x:,.0f}"
    return f"{x:,.2f}".rstrip("0").rstrip(".") if abs(x) < 1000 else f"{x:,.1f}"


def duration(seconds: float) -> str:
    """A duration in words a person reads at a glance.

    >>> duration(42), duration(359), duration(7380), duration(200_000)
    ('42 s', '5 min 59 s', '2 h 3 min', '2 d 7 h')
    """
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 // 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _when(time_s: float, tick: int | None = None) -> str:
    iso = iso_time(time_s) or "unknown time"
    return f"{iso} (tick {tick})" if tick is not None else iso


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _series_text(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _peak_time(r: Report) -> tuple[float, int]:
    """When the report first reached its peak level (the revision's time if unknown)."""
    for e in r.timeline:
        if e.what == "level" and e.level == r.peak_level:
            return e.time_s, e.tick
    return r.time_s, r.tick


def _start_time(r: Report) -> float:
    if r.outcome is not None:
        return r.outcome.started_s
    levels = [e.time_s for e in r.timeline if e.what == "level"]
    return min(levels) if levels else r.time_s


def _evidence_words(peak: Mapping[str, float], limit: int = 3) -> str:
    top = sorted(((v, k) for k, v in peak.items() if v and math.isfinite(v)), reverse=True)[:limit]
    return ", ".join(f"{safe_text(k, 20)} {v:.1f} sd" for v, k in top) or "—"


def _params(params: Mapping[str, float]) -> str:
    return ", ".join(f"{safe_text(k, 30)}={_num(v)}" for k, v in params.items()) or "—"


def _acks(r: ResponseTaken) -> str:
    if not r.acks:
        return "none (no command to acknowledge)" if r.action == "escalate" else "none yet"
    ok = [a for a in r.acks if a.applied]
    bad = [a for a in r.acks if not a.applied]
    text = f"{len(ok)} applied"
    if bad:
        text += f", {len(bad)} failed (" + "; ".join(
            f"{safe_text(a.station_id, 60)}: {safe_text(a.detail, 80) or 'no reason given'}"
            for a in bad[:3]) + (", …" if len(bad) > 3 else "") + ")"
    return text


def _target(t: str) -> str:
    typ, sep, value = t.partition(":")
    if sep and typ in ("station", "region", "source_kind"):
        return f"{typ.replace('_', ' ')} {safe_text(value, 60)}"
    return safe_text(t, 80)


def _what_done(responses: Sequence[ResponseTaken]) -> str:
    """One sentence of what the responses did, for the bottom line."""
    if not responses:
        return "No automatic response was taken."
    parts: list[str] = []
    if any(r.action == "escalate" for r in responses):
        parts.append("paged the on-call analyst")
    by_action: dict[str, list[str]] = {}
    for r in responses:
        if r.action != "escalate":
            by_action.setdefault(r.action, []).append(_target(r.target))
    names = {"burst_mode": "fast sampling (burst mode)", "set_thresholds": "more sensitive thresholds",
             "quarantine": "quarantine", "set_interval": "a new polling interval", "resume": "resume"}
    for action, targets in by_action.items():
        stations = [t for t in targets if t.startswith("station ")]
        others = [t for t in targets if not t.startswith("station ")]
        where = ([_plural(len(stations), "station")] if stations else []) + others
        parts.append(f"{names.get(action, safe_text(action, 30))} on {_series_text(where)}")
    failed = sum(1 for r in responses for a in r.acks if not a.applied)
    acks = sum(len(r.acks) for r in responses)
    tail = f" {failed} of {acks} acknowledgements report a failure." if failed else ""
    return "Done: " + "; ".join(parts) + "." + tail


def _first_check(check: str) -> str:
    """A check as the bottom line's last sentence: its "Confirm:" / "Refute:" label dropped
    (the sentence says which), capitalised, one full stop.

    >>> _first_check("Confirm: watch news in mena, which have not moved yet.")
    'Watch news in mena, which have not moved yet.'
    >>> _first_check("Check independently: news-1 and news-2 share one upstream source")
    'news-1 and news-2 share one upstream source.'
    """
    text = safe_text(check, 240)
    label, sep, rest = text.partition(": ")
    if sep and label in ("Confirm", "Refute"):
        text = rest[:1].upper() + rest[1:]
    elif sep and label == "Check independently":  # it begins with station ids: kept as written
        text = rest
    return text.rstrip(". ") + "."


def derived_checks(r: Report) -> list[str]:
    """What would confirm or refute a report, worked out from the record itself (used when
    the pipeline wrote no checks): kinds that have not moved, correlated stations to check
    independently, dark stations.
    """
    moved = {c.source_kind for c in r.contributions}
    out = [f"No {_KIND_ONE[k]} station has moved: a genuine event in {safe_text(r.region, 40)} "
           f"usually shows there too; its silence argues for a false alarm"
           for k in _ALL_KINDS if k not in moved]
    out += [f"{safe_text(c.station_id, 60)} moves with {safe_text(c.correlated_with or '?', 60)} "
            f"(same {safe_text(c.group, 40) or 'upstream'}): check it independently before counting it"
            for c in r.contributions if c.correlated]
    out += [f"{safe_text(s, 60)} went dark during the episode: find out why before reading its silence"
            for s in r.dark_stations]
    return out


# -- building the brief ------------------------------------------------------------------


def _bottom_line(r: Report) -> list[Block]:
    contribs = r.contributions
    # the kinds that moved, the biggest share first
    kinds = [_kind(k) for k in sorted(r.source_kinds, key=lambda k: (-r.by_kind.get(k, 0.0), k))]
    peak_t, _ = _peak_time(r)
    first = (f"{r.peak_level.value.capitalize()} in {safe_text(r.region, 40)}: "
             f"{_plural(len(contribs), 'station')} across {_plural(len(kinds), 'source kind')} "
             f"({_series_text(kinds) or 'none named'}) moved together within {_num(r.window_s)} s; "
             f"peak score {r.peak_score:.0f} at {_when(peak_t)}.")
    if r.status == "closed":
        end = r.outcome.ended_s if r.outcome else r.time_s
        status = f"It is over: ended {_when(end)} after {duration(end - _start_time(r))}."
    else:
        status = (f"Still open: {r.level.value} at score {r.score:.0f} as of "
                  f"{_when(r.time_s)}.")
    if r.confidence is not None and math.isfinite(r.confidence.probability):
        conf = (f"{probability(r.confidence.probability).capitalize()} likely a genuine convergence "
                f"(calibrated on “{safe_text(r.confidence.campaign, 80)}”).")
    else:
        conf = "No calibrated confidence for this meter: judge it on the evidence below."
    discounted = [c for c in contribs if c.correlated]
    disc = (f" {_plural(len(discounted), 'station')} discounted as correlated with a stronger one."
            if discounted else "")
    checks = list(r.checks) or derived_checks(r)
    nxt = f"First check: {_first_check(checks[0])}" if checks else ""
    out: list[Block] = [Para((Strong(first),)), Para((f"{status} {conf}{disc}",)),
                        Para((_what_done(r.responses) + (" " + nxt if nxt else ""),))]
    if r.summary:
        out.append(Para(("The meter's account: ", safe_text(r.summary, 1200))))
    return out


def _confidence(r: Report) -> list[Block]:
    c = r.confidence
    method = f"Meter: {safe_text(r.method.label, 80)}."
    if c is None or not math.isfinite(c.probability):
        return [Para(("Not calibrated: there are no campaign results for this meter at this level "
                      "and score, so no probability is given. ", method))]
    basis = f" Basis: {safe_text(c.basis, 300)}." if c.basis else ""
    return [Para((Strong(probability(c.probability).capitalize()),
                  f" probability that this is a genuine convergence at {r.peak_level.value} "
                  f"(peak score {r.peak_score:.0f}), calibrated on the campaign "
                  f"“{safe_text(c.campaign, 80)}” ({_plural(c.n_runs, 'simulated run')}).{basis}")),
            Para((method,))]


def _what_moved(r: Report) -> list[Block]:
    if not r.contributions:
        return [Para(("No station contributions were recorded in this revision.",))]
    tick_s = r.tick_s if r.tick_s > 0 else 1.0

    def note(c: Contribution) -> str:
        if c.correlated:
            return (f"discounted: correlated with {safe_text(c.correlated_with or 'a stronger station', 60)} "
                    f"(same {safe_text(c.group, 40) or 'upstream source'})")
        return "counted in full"

    def joined(c: Contribution) -> str:
        if c.joined_tick is None:
            return "—"
        return f"+{duration((c.joined_tick - r.episode_tick) * tick_s)}"

    rows = tuple(
        ((safe_text(c.station_id, 60),), (_kind(c.source_kind),), (_pct(c.share),),
         (_evidence_words(c.peak_evidence),), (joined(c),), (note(c),))
        for c in r.contributions)
    blocks: list[Block] = [Table(("station", "kind", "share", "strongest evidence (peak)", "joined",
                                  "note"), rows, frozenset({2}))]
    if r.by_kind:
        blocks.append(Para(("By source kind: " + ", ".join(
            f"{_kind(k)} {_pct(v)}" for k, v in sorted(r.by_kind.items(), key=lambda kv: -kv[1])) + ".",)))
    if r.by_evidence:
        blocks.append(Para(("By evidence type: " + ", ".join(
            f"{safe_text(k, 20)} {_pct(v)}"
            for k, v in sorted(r.by_evidence.items(), key=lambda kv: -kv[1])) + ".",)))
    discounted = [c for c in r.contributions if c.correlated]
    if discounted:
        blocks.append(Para((
            f"Why some are discounted: stations that share an upstream source (a news wire, an "
            f"exchange) move together for one reason, so only the strongest of each group counts "
            f"in full; {_series_text([safe_text(c.station_id, 60) for c in discounted])} "
            f"{'was' if len(discounted) == 1 else 'were'} counted at a reduced weight.",)))
    return blocks


def _tick_time(r: Report, tick: int) -> str:
    """When ``tick`` closed (ISO 8601 UTC), from the report's tick length."""
    return iso_time((tick + 1) * r.tick_s) if r.tick_s > 0 else f"tick {tick}"


def _timeline(r: Report) -> list[Block]:
    start = _start_time(r)
    # a level change is a rise or a fall: compare with the level before it
    before: dict[int, Level] = {}
    prev = Level.QUIET
    for i, e in enumerate(r.timeline):
        if e.what == "level" and e.level is not None:
            before[i], prev = prev, e.level
    ended = {e.tick for e in r.timeline if e.what == "ended"}

    def line(i: int, e: TimelineEntry) -> Inline:
        when = f"{_when(e.time_s, e.tick)}, +{duration(e.time_s - start)}"
        sid = safe_text(e.station_id or "a station", 60)
        if e.what == "level":
            lvl = e.level.value if e.level else "?"
            fell = e.level is not None and e.level.rank < before.get(i, Level.QUIET).rank
            return (when, " — ", Strong(f"fell back to {lvl}" if fell else f"reached {lvl}"),
                    f" (score {e.score:.0f})")
        if e.what == "joined":
            return (f"{when} — {sid} joined",)
        if e.what == "left":
            return (f"{when} — {sid} left",)
        if e.what == "ended":
            return (when, " — ", Strong("ended: back to quiet"), f" (score {e.score:.0f})")
        return (f"{when} — {safe_text(e.what, 30)}",)

    # the fall to quiet and the end are one moment: say it once
    shown = [(i, e) for i, e in enumerate(r.timeline)
             if not (e.what == "level" and e.level == Level.QUIET and e.tick in ended)]
    # stations joining in the same tick are one line
    items: list[Inline] = []
    k = 0
    while k < len(shown):
        i, e = shown[k]
        same = 1
        while (e.what == "joined" and k + same < len(shown) and shown[k + same][1].what == "joined"
               and shown[k + same][1].tick == e.tick):
            same += 1
        if same > 1:
            ids = [safe_text(x.station_id or "a station", 60) for _, x in shown[k:k + same]]
            when = f"{_when(e.time_s, e.tick)}, +{duration(e.time_s - start)}"
            items.append((f"{when} — {same} stations joined: {_series_text(ids)}",))
        else:
            items.append(line(i, e))
        k += same
    blocks: list[Block] = []
    if items:
        blocks.append(Bullets(tuple(items)))
    else:
        blocks.append(Para(("No timeline was recorded in this revision.",)))
    pts = tuple((int(t), float(s)) for t, s in r.score_series if math.isfinite(s))
    if pts:
        scores = [s for _, s in pts]
        blocks.append(Chart(pts, f"score from {_tick_time(r, pts[0][0])} to "
                                 f"{_tick_time(r, pts[-1][0])}: first {scores[0]:.0f}, "
                                 f"peak {max(scores):.0f}, last {scores[-1]:.0f}"))
    return blocks


def _sample_words(s: EvidenceSample, kind: str) -> Inline:
    when = iso_time(s.time_s) or "unknown time"
    if s.text:
        url = safe_url(s.link)
        src = safe_text(s.source or (urlsplit(url).netloc if url else "") or "source", 60)
        tail: Inline = (" — ", Link(src, url)) if url else ((f" — {src}",) if s.source else ())
        return (f"{when} — “{safe_text(s.text)}”", *tail)
    noun = {"market_price": "price", "market_volume": "volume", "sensor": "reading"}.get(kind, "value")
    cat = f" ({safe_text(s.category, 30)})" if s.category else ""
    src = f" — {safe_text(s.source, 60)}" if s.source else ""
    return (f"{when} — {noun} {_num(s.value)}{cat}{src}",)


def _sources(r: Report) -> list[Block]:
    if not r.evidence:
        return [Para(("No evidence samples were kept for this revision.",))]
    kinds = {c.station_id: c.source_kind for c in r.contributions}
    order = {c.station_id: i for i, c in enumerate(r.contributions)}
    by_station: dict[str, list[EvidenceSample]] = {}
    for s in r.evidence:
        by_station.setdefault(s.station_id, []).append(s)
    blocks: list[Block] = []
    for sid in sorted(by_station, key=lambda x: (order.get(x, len(order)), x)):
        kind = kinds.get(sid, "")
        blocks.append(Para((Strong(safe_text(sid, 60)), f" ({_kind(kind) if kind else 'station'})")))
        # the same headline (and link) posted again is one line with how many times
        seen: dict[tuple[str | None, str | None], list[EvidenceSample]] = {}
        for x in sorted(by_station[sid], key=lambda s: s.time_s):
            key = (x.text, x.link) if x.text else (None, f"{x.time_s}-{x.value}-{x.category}")
            seen.setdefault(key, []).append(x)
        blocks.append(Bullets(tuple(
            (*_sample_words(xs[0], kind), f" ({len(xs)} times)" if len(xs) > 1 else "")
            for xs in seen.values())))
    return blocks


def _context(r: Report) -> list[Block]:
    items: list[Inline] = []
    if r.regimes:
        items.append(("Market regimes: " + ", ".join(
            f"{safe_text(k, 60)} {safe_text(v, 30)}" for k, v in sorted(r.regimes.items())) + ".",))
    else:
        items.append(("Market regimes: none in this revision (no regime model was loaded, or none of "
                      "the region's market stations was out of its normal regime).",))
    tick_s = r.tick_s if r.tick_s > 0 else 1.0
    for p in r.patterns:
        stations = ", ".join(safe_text(s, 60) for s in p.stations[:8])
        stations += f" and {len(p.stations) - 8} more" if len(p.stations) > 8 else ""
        span = duration((p.end_tick - p.start_tick) * tick_s)
        items.append((f"Pattern {safe_text(p.pattern, 60)} completed at {_tick_time(r, p.end_tick)} "
                      f"(ticks {p.start_tick}–{p.end_tick}, over {span}): {stations}.",))
    if not r.patterns:
        items.append(("Temporal patterns: none completed during the episode.",))
    if r.dark_stations:
        dark = ", ".join(safe_text(s, 60) for s in r.dark_stations[:20])
        items.append((f"Dark stations (their sources stopped answering): {dark}. Their silence is not "
                      "evidence either way.",))
    else:
        items.append(("Dark stations: none.",))
    return [Bullets(tuple(items))]


def _actions(r: Report) -> list[Block]:
    if not r.responses:
        return [Para(("No automatic response was taken.",))]
    rows = tuple(
        ((safe_text(x.action, 30),), (_target(x.target),), (_params(x.params),),
         (iso_time(x.issued_at_s) or "?",),
         (iso_time(x.expires_at_s) if x.expires_at_s is not None else "no expiry",),
         (_acks(x),), (safe_text(x.reason, 160),))
        for x in r.responses)
    return [Table(("action", "target", "parameters", "issued", "expires", "acknowledged", "why"), rows)]


def _checks(r: Report) -> list[Block]:
    checks = list(r.checks) or derived_checks(r)
    if not checks:
        return [Para(("Nothing specific: every source kind moved and none was discounted.",))]
    return [Bullets(tuple((safe_text(c, 400),) for c in checks))]


def _revisions(r: Report, revisions: Sequence[Report], labels: Sequence[Label]) -> list[Block]:
    blocks: list[Block] = []
    if r.outcome is not None:
        o = r.outcome
        blocks.append(Para((Strong("Outcome:"),
                            f" started {_when(o.started_s)}, ended {_when(o.ended_s)} after "
                            f"{duration(o.duration_s)}; peak score {o.peak_score:.0f} "
                            f"({o.peak_level.value}).")))
    elif r.status == "closed":
        blocks.append(Para(("Closed; no outcome was recorded.",)))
    else:
        blocks.append(Para((f"Open: the episode is still running; this is revision {r.revision} "
                            f"as of {_when(r.time_s, r.tick)}.",)))
    history = sorted({x.revision: x for x in (*revisions, r)}.values(), key=lambda x: x.revision)
    if len(history) > 1:
        rows = tuple(
            ((f"{x.revision}{' (this one)' if x.revision == r.revision else ''}",),
             (_when(x.time_s, x.tick),), (x.level.value,), (f"{x.score:.0f}",), (x.status,))
            for x in history)
        blocks.append(Table(("revision", "written", "level", "score", "status"), rows,
                            frozenset({3})))
    else:
        blocks.append(Para((f"Revision {r.revision}, written {_when(r.time_s, r.tick)}.",)))
    if labels:
        items = tuple(
            (Strong(lb.verdict.value), f" by {safe_text(lb.by, 60)} at {lb.at_iso}"
             f"{f' (on revision {lb.revision})' if lb.revision else ''}"
             f"{': ' + safe_text(lb.note, 400) if lb.note else ''}",)
            for lb in sorted(labels, key=lambda lb: lb.at_s))
        blocks.append(Para(("Analysts' verdicts (newest counts):",)))
        blocks.append(Bullets(items))
    else:
        blocks.append(Para((f"No analyst has labelled it yet; label it with: convergence reports "
                            f"label {safe_text(r.report_id, 80)} followed by genuine, false-alarm or "
                            "unsure.",)))
    if r.alert_ids:
        blocks.append(Para(("Alerts: " + ", ".join(safe_text(a, 60) for a in r.alert_ids) + ".",)))
    return blocks


def build_brief(report: Report, revisions: Sequence[Report] = (),
                labels: Sequence[Label] = ()) -> Brief:
    """The brief's document model (what :func:`render` writes out per format)."""
    r = report
    peak_t, peak_tick = _peak_time(r)
    now = "" if r.level == r.peak_level or r.status == "closed" else f" (now {r.level.value})"
    headline = (f"{r.peak_level.value.upper()}{now} — {safe_text(r.region, 40)} — "
                f"{_when(peak_t, peak_tick)}")
    meta: Inline = (f"Report {safe_text(r.report_id, 80)} · revision {r.revision} · {r.status} · "
                    f"score {r.score:.0f} now, peak {r.peak_score:.0f} · written {_when(r.time_s, r.tick)} · "
                    f"meter: {safe_text(r.method.label, 60)}"
                    + (f" · run {safe_text(r.run_id, 60)}" if r.run_id else ""),)
    sections = [
        Section("Bottom line", _bottom_line(r)),
        Section("Confidence", _confidence(r)),
        Section("What moved", _what_moved(r)),
        Section("Timeline", _timeline(r)),
        Section("What the sources said", _sources(r)),
        Section("Context", _context(r)),
        Section("Actions taken", _actions(r)),
        Section("What would confirm or refute it", _checks(r)),
        Section("Revisions and outcome", _revisions(r, revisions, labels)),
    ]
    return Brief(headline, r.peak_level, meta, sections)


# -- writers -----------------------------------------------------------------------------


def _downsample(points: Sequence[tuple[int, float]], n: int) -> list[float]:
    scores = [s for _, s in points]
    if len(scores) <= n:
        return scores
    step = len(scores) / n
    return [max(scores[int(i * step): max(int((i + 1) * step), int(i * step) + 1)]) for i in range(n)]


def sparkline(points: Sequence[tuple[int, float]], n: int = SPARK_POINTS) -> str:
    """Scores 0-100 as block characters, at most ``n`` (each the peak of its stretch).

    >>> sparkline([(0, 0.0), (1, 50.0), (2, 100.0)])
    '▁▅█'
    """
    out = []
    for s in _downsample(points, n):
        k = round(min(max(s, 0.0), 100.0) / 100.0 * (len(_SPARK) - 1))
        out.append(_SPARK[k])
    return "".join(out)


# what could start markup inside a line (untrusted text never starts a line of the brief);
# "_" only where it could open or close emphasis, so station ids and actions stay readable
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~&]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_spans(spans: Inline) -> str:
    out = []
    for s in spans:
        if isinstance(s, Strong):
            out.append(f"**{_md(s.text)}**")
        elif isinstance(s, Link):
            out.append(f"[{_md(s.text)}]({s.url})" if s.url else _md(s.text))
        else:
            out.append(_md(s))
    return "".join(out)


def _to_md(b: Brief) -> str:
    lines = [f"# {_md(b.headline)}", "", _md_spans(b.meta)]
    for sec in b.sections:
        lines += ["", f"## {_md(sec.title)}", ""]
        for i, blk in enumerate(sec.blocks):
            if i:
                lines.append("")
            if isinstance(blk, Para):
                lines.append(_md_spans(blk.spans))
            elif isinstance(blk, Bullets):
                lines += [f"- {_md_spans(it)}" for it in blk.items]
            elif isinstance(blk, Table):
                lines.append("| " + " | ".join(_md(h) for h in blk.headers) + " |")
                lines.append("|" + "|".join("---:" if j in blk.numeric else "---"
                                             for j in range(len(blk.headers))) + "|")
                lines += ["| " + " | ".join(_md_spans(c) for c in row) + " |" for row in blk.rows]
            else:
                lines.append(f"Score: `{sparkline(blk.points)}` ({_md(blk.caption)})")
    return "\n".join(lines) + "\n"


def _text_spans(spans: Inline) -> str:
    out = []
    for s in spans:
        if isinstance(s, Link):
            out.append(f"{s.text} <{s.url}>" if s.url else s.text)
        elif isinstance(s, Strong):
            out.append(s.text)
        else:
            out.append(s)
    return "".join(out)


def _to_text(b: Brief, width: int = 100) -> str:
    def wrap(text: str, first: str = "", rest: str = "") -> list[str]:
        return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest,
                             break_long_words=False, break_on_hyphens=False) or [first.rstrip()]

    lines = [b.headline, "=" * min(len(b.headline), width), *wrap(_text_spans(b.meta))]
    for sec in b.sections:
        lines += ["", sec.title.upper(), "-" * len(sec.title)]
        for i, blk in enumerate(sec.blocks):
            if i and not isinstance(blk, Chart):
                lines.append("")
            if isinstance(blk, Para):
                lines += wrap(_text_spans(blk.spans))
            elif isinstance(blk, Bullets):
                for it in blk.items:
                    lines += wrap(_text_spans(it), "- ", "  ")
            elif isinstance(blk, Table):
                cells = [[_text_spans(c) for c in row] for row in blk.rows]
                widths = [max(len(h), *(len(row[j]) for row in cells)) for j, h in enumerate(blk.headers)]

                def fmt(row: Sequence[str], blk: Table = blk, widths: list[int] = widths) -> str:
                    return "  ".join((c.rjust(w) if j in blk.numeric else c.ljust(w))
                                     for j, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

                lines += [fmt(blk.headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in cells)]
            else:
                lines.append(f"score: {sparkline(blk.points)}  ({blk.caption})")
    return "\n".join(lines) + "\n"


_LEVEL_COLOUR = {Level.CONVERGED: "#b3261e", Level.WARNING: "#c25e00", Level.WATCH: "#8a6d00",
                 Level.QUIET: "#2e7d32"}

_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b;
       max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
header { border-left: .6rem solid var(--level); padding: .2rem 0 .2rem 1rem; margin-bottom: 1.5rem; }
h1 { font-size: 1.45rem; margin: 0 0 .3rem; }
.badge { display: inline-block; background: var(--level); color: #fff; font-weight: 700;
         padding: 0 .5rem; border-radius: .25rem; letter-spacing: .04em; }
.meta { color: #555; font-size: .9rem; margin: 0; }
h2 { font-size: 1.1rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 1.6rem; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; margin: .4rem 0; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .45rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td:first-child { white-space: nowrap; }
ul { padding-left: 1.3rem; margin: .3rem 0; }
figure { margin: .6rem 0; }
figcaption { color: #555; font-size: .85rem; }
svg { width: 100%; height: 7rem; background: #fafafa; border: 1px solid #e2e2e2; }
a { color: #0b57d0; word-break: break-all; }
@page { margin: 1.5cm; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; }
  a { color: inherit; text-decoration: none; }
  a[href]::after { content: " <" attr(href) ">"; font-size: .8em; color: #555; }
  section { break-inside: avoid-page; }
  tr { break-inside: avoid; }
}
"""


def _html_spans(spans: Inline) -> str:
    out = []
    for s in spans:
        if isinstance(s, Strong):
            out.append(f"<strong>{html.escape(s.text)}</strong>")
        elif isinstance(s, Link):
            out.append(f'<a href="{html.escape(s.url, quote=True)}" rel="noopener noreferrer">'
                       f"{html.escape(s.text)}</a>" if s.url else html.escape(s.text))
        else:
            out.append(html.escape(s))
    return "".join(out)


def _svg(points: Sequence[tuple[int, float]]) -> str:
    scores = _downsample(points, 400)
    n = max(len(scores) - 1, 1)
    xy = " ".join(f"{i * 1000 / n:.1f},{100 - min(max(s, 0.0), 100.0):.1f}" for i, s in enumerate(scores))
    return ('<svg viewBox="0 -2 1000 104" preserveAspectRatio="none" role="img" '
            'aria-label="meter score over the episode, 0 to 100">'
            '<polyline fill="none" stroke="#444" stroke-width="2" vector-effect="non-scaling-stroke" '
            f'points="{xy}"/></svg>')


def _to_html(b: Brief) -> str:
    colour = _LEVEL_COLOUR.get(b.level, "#444")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(b.headline)}</title>", f"<style>{_CSS}</style>", "</head>",
             f'<body style="--level: {colour}">', "<header>",
             f'<h1><span class="badge">{html.escape(b.level.value.upper())}</span> '
             f"{html.escape(b.headline.split(' — ', 1)[-1])}</h1>",
             f'<p class="meta">{_html_spans(b.meta)}</p>', "</header>"]
    for sec in b.sections:
        parts.append(f"<section><h2>{html.escape(sec.title)}</h2>")
        for blk in sec.blocks:
            if isinstance(blk, Para):
                parts.append(f"<p>{_html_spans(blk.spans)}</p>")
            elif isinstance(blk, Bullets):
                parts.append("<ul>" + "".join(f"<li>{_html_spans(it)}</li>" for it in blk.items) + "</ul>")
            elif isinstance(blk, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in blk.headers)
                num = ' class="num"'
                body = "".join(
                    "<tr>" + "".join(f"<td{num if j in blk.numeric else ''}>{_html_spans(c)}</td>"
                                     for j, c in enumerate(row)) + "</tr>"
                    for row in blk.rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                parts.append(f"<figure>{_svg(blk.points)}<figcaption>{html.escape(blk.caption)}"
                             "</figcaption></figure>")
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _to_json(report: Report, revisions: Sequence[Report], labels: Sequence[Label]) -> str:
    doc = report.to_dict()
    if labels:
        doc["labels"] = [lb.to_dict() for lb in sorted(labels, key=lambda lb: lb.at_s)]
    if revisions:
        doc["revisions"] = [{"revision": x.revision, "time": x.time_iso, "tick": x.tick,
                             "level": x.level.value, "score": x.score, "status": x.status}
                            for x in sorted({x.revision: x for x in (*revisions, report)}.values(),
                                            key=lambda x: x.revision)]
    return json.dumps(_json_safe(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


_WRITERS: dict[Format, Callable[[Brief], str]] = {
    Format.TEXT: _to_text, Format.MD: _to_md, Format.HTML: _to_html,
}


def render(report: Report, fmt: str | Format = Format.MD, *, revisions: Sequence[Report] = (),
           labels: Sequence[Label] = ()) -> str:
    """The report as ``text``, ``md``, ``json`` or ``html`` (see the module docstring).

    ``revisions`` are the report's other revisions (for the revision history) and
    ``labels`` the analysts' verdicts on it; both are optional. ``ValueError`` for an
    unknown format.
    """
    try:
        f = Format(fmt)
    except ValueError:
        raise ValueError(f"unknown report format {fmt!r}; use one of "
                         f"{', '.join(x.value for x in Format)}") from None
    if f == Format.JSON:
        return _to_json(report, revisions, labels)
    return _WRITERS[f](build_brief(report, revisions, labels))
