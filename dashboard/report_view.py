"""A report as one standalone HTML page: what the dashboard's drill-down shows.

:func:`render_report_html` is the one place the dashboard turns a
:class:`~convergence.records.Report` into HTML. It is meant to show the same content
as ``convergence reports show --format html`` (being built in
``responses/render.py``); when that lands, this function should return
``render(report, "html")`` and nothing else in the dashboard changes (the page shows
the result in a sandboxed frame).

The page is self-contained (inline CSS, no script, no external asset) and every value
from the report is HTML-escaped; links are kept only when they are ``http(s)``.

Examples
--------
>>> from convergence.records import Level, Report
>>> rep = Report(report_id="rpt-1", revision=2, region="mena", episode_tick=100, tick=104,
...              time_s=1700000000.0, level=Level.CONVERGED, peak_level=Level.CONVERGED,
...              score=91.0, peak_score=91.0, status="open",
...              title="CONVERGED: 3 stations in mena <b>", summary="Three kinds moved.")
>>> page = render_report_html(rep)
>>> "CONVERGED: 3 stations in mena &lt;b&gt;" in page, "2023-11-14T22:13:20Z" in page
(True, True)
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from urllib.parse import urlparse

from convergence.records import Report, iso_time

__all__ = ["render_report_html"]

_KIND = {"osint_news": "news", "osint_social": "social media", "market_price": "market prices",
         "market_volume": "market volumes", "sensor": "sensors"}

_CSS = """
:root { color-scheme: dark; --bg:#0e1524; --panel:#141d30; --line:#26324a; --text:#dbe3f0;
  --dim:#8a97ad; --quiet:#3d8b6e; --watch:#d9b43c; --warning:#ef8a2f; --converged:#e5484d; }
* { box-sizing: border-box; }
body { margin:0; padding:20px 24px 40px; background:var(--bg); color:var(--text);
  font:14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
h1 { font-size:20px; margin:6px 0 4px; line-height:1.3; }
h2 { font-size:12px; letter-spacing:.08em; text-transform:uppercase; color:var(--dim);
  margin:22px 0 8px; border-bottom:1px solid var(--line); padding-bottom:4px; }
.meta { color:var(--dim); font-size:12.5px; }
.badge { display:inline-block; padding:1px 8px; border-radius:3px; font-weight:700;
  font-size:12px; letter-spacing:.05em; color:#0b0f17; }
.quiet { background:var(--quiet); } .watch { background:var(--watch); }
.warning { background:var(--warning); } .converged { background:var(--converged); }
.bluf { background:var(--panel); border-left:3px solid var(--warning); padding:10px 14px;
  margin:14px 0 0; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { color:var(--dim); font-weight:600; font-size:12px; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
.bar { display:inline-block; height:8px; background:#5b8def; border-radius:2px;
  vertical-align:middle; margin-right:6px; }
.dim { color:var(--dim); }
.nw { white-space:nowrap; }
ul { margin:4px 0; padding-left:20px; }
a { color:#7fb0ff; }
svg { display:block; }
@media print { :root { color-scheme: light; --bg:#fff; --panel:#f3f4f6; --line:#d1d5db;
  --text:#111; --dim:#555; } }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _link(url: str | None, text: str) -> str:
    if url and urlparse(url).scheme in ("http", "https"):
        return f'<a href="{_e(url)}" rel="noopener noreferrer" target="_blank">{_e(text)}</a>'
    return _e(text)


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], num: Sequence[int] = ()) -> str:
    """An HTML table; cells are already escaped HTML; columns in ``num`` right-aligned."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _sparkline(points: Sequence[tuple[int, float]], thresholds: Sequence[float]) -> str:
    """The episode's score over its ticks, with the level thresholds, as inline SVG."""
    if len(points) < 2:
        return ""
    w, h = 640.0, 110.0
    t0, t1 = points[0][0], points[-1][0]
    span = max(t1 - t0, 1)

    def xy(t: float, s: float) -> str:
        return f"{(t - t0) / span * w:.1f},{h - max(0.0, min(100.0, s)) / 100 * h:.1f}"

    lines = "".join(
        f'<line x1="0" x2="{w}" y1="{h - th / 100 * h:.1f}" y2="{h - th / 100 * h:.1f}" '
        f'stroke="{c}" stroke-dasharray="4 4" stroke-width="1"/>'
        for th, c in zip(thresholds, ("#d9b43c", "#ef8a2f", "#e5484d"), strict=False))
    path = " ".join(xy(t, s) for t, s in points)
    return (f'<svg viewBox="0 0 {w:.0f} {h:.0f}" width="100%" height="{h:.0f}" '
            f'preserveAspectRatio="none" role="img" aria-label="score over the episode">'
            f'<rect width="{w}" height="{h}" fill="#0b1120"/>{lines}'
            f'<polyline points="{path}" fill="none" stroke="#7fb0ff" stroke-width="1.6"/></svg>'
            f'<div class="meta">ticks {t0}–{t1}; dashed lines: watch, warning, converged</div>')


def render_report_html(report: Report, *, revisions: Sequence[int] = (),
                       thresholds: Sequence[float] = (30.0, 55.0, 75.0)) -> str:
    """``report`` as a standalone HTML page (see module docstring); ``revisions`` lists
    the revisions the caller knows of (shown in the header)."""
    r = report
    # a closed episode is remembered by its peak; an open one by where it stands now
    lvl = r.peak_level.value if r.status == "closed" else r.level.value
    parts: list[str] = []
    head = (f'<span class="badge {_e(lvl)}">{_e(lvl.upper())}</span> '
            f'<span class="meta">{_e(r.region)} · {_e(r.time_iso)} · tick {r.tick} · '
            f'revision {r.revision}{" of " + _e(", ".join(map(str, revisions))) if revisions else ""}'
            f' · {_e(r.status)}</span>')
    parts.append(f"{head}<h1>{_e(r.title)}</h1>")
    parts.append(f'<div class="meta">report {_e(r.report_id)} · score {r.score:.1f} '
                 f'(peak {r.peak_score:.1f}, {_e(r.peak_level.value)}) · {_e(r.method.label)}'
                 + (f" · run {_e(r.run_id)}" if r.run_id else "") + "</div>")
    parts.append(f'<div class="bluf"><b>Bottom line.</b> {_e(r.summary)}</div>')
    if r.confidence is not None:
        conf = r.confidence
        parts.append(f"<h2>Confidence</h2><p>P(genuine convergence) = "
                     f"<b>{_pct(conf.probability)}</b> "
                     f'<span class="dim">from campaign {_e(conf.campaign)} ({conf.n_runs} runs)'
                     f'{"; " + _e(conf.basis) if conf.basis else ""}</span></p>')
    rows: list[Sequence[str]] = []
    if r.contributions:
        for c in r.contributions:
            top = sorted(c.peak_evidence.items(), key=lambda kv: -kv[1])[:3]
            ev = ", ".join(f"{_e(k)} {v:.1f} sd" for k, v in top if v) or "—"
            if c.correlated:
                ev += (f'<br><span class="dim">discounted: shares '
                       f"{_e(c.group or 'an upstream feed or market')} with "
                       f"{_e(c.correlated_with or 'a stronger station')}</span>")
            rows.append((f'<span class="nw">{_e(c.station_id)}</span>',
                         f'<span class="nw">{_e(_KIND.get(c.source_kind, c.source_kind))}</span>',
                         f'<span class="nw"><span class="bar" style="width:'
                         f'{max(2, round(c.share * 120))}px"></span>{_pct(c.share)}</span>', ev))
        parts.append("<h2>What moved</h2>" + _table(
            ("station", "kind", "share of evidence", "peak evidence"), rows))
    if r.by_kind or r.by_evidence:
        kinds = ", ".join(f"{_e(_KIND.get(k, k))} {_pct(v)}" for k, v in
                          sorted(r.by_kind.items(), key=lambda kv: -kv[1]))
        evs = ", ".join(f"{_e(k)} {_pct(v)}" for k, v in sorted(r.by_evidence.items(),
                                                                key=lambda kv: -kv[1]))
        parts.append(f'<p><span class="dim">by source kind:</span> {kinds or "—"}<br>'
                     f'<span class="dim">by evidence:</span> {evs or "—"}</p>')
    spark = _sparkline(r.score_series, thresholds)
    if spark:
        parts.append("<h2>Score</h2>" + spark)
    if r.timeline:
        rows = [(_e(iso_time(t.time_s)), str(t.tick), _e(t.what),
                 _e(t.level.value if t.level else ""), _e(t.station_id or ""), f"{t.score:.1f}")
                for t in r.timeline]
        parts.append("<h2>Timeline</h2>" + _table(
            ("time (UTC)", "tick", "what", "level", "station", "score"), rows, num=(1, 5)))
    if r.evidence:
        rows = [(_e(iso_time(ev.time_s)), _e(ev.station_id), _e(ev.category),
                 _link(ev.link, ev.text) if ev.text else f"value {ev.value:g}",
                 _e(ev.source or "")) for ev in r.evidence]
        parts.append("<h2>What the sources said</h2>" + _table(
            ("time (UTC)", "station", "category", "said", "source"), rows))
    context = []
    if r.regimes:
        context.append("regimes: " + ", ".join(f"{_e(k)} {_e(v)}" for k, v in r.regimes.items()))
    context += [f"pattern {_e(p.pattern)} over ticks {p.start_tick}–{p.end_tick} "
                f"({_e(', '.join(p.stations[:6]))}{', …' if len(p.stations) > 6 else ''})"
                for p in r.patterns]
    if r.dark_stations:
        context.append("dark stations (source failing): " + _e(", ".join(r.dark_stations)))
    if context:
        parts.append("<h2>Context</h2><ul>" + "".join(f"<li>{c}</li>" for c in context) + "</ul>")
    if r.responses:
        rows = []
        for resp in r.responses:
            params = ", ".join(f"{_e(k)}={v:g}" for k, v in resp.params.items()) or "—"
            expiry = iso_time(resp.expires_at_s) if resp.expires_at_s is not None else "—"
            applied = sum(a.applied for a in resp.acks)
            acks = (f"{applied} applied" + (f", {len(resp.acks) - applied} refused"
                                            if applied < len(resp.acks) else "")
                    if resp.acks else '<span class="dim">none yet</span>')
            rows.append((_e(resp.action), _e(resp.target), params, _e(expiry), acks,
                         f'<span class="dim">{_e(resp.reason)}</span>'))
        parts.append("<h2>Actions taken</h2>" + _table(
            ("action", "target", "parameters", "expires (UTC)", "acks", "why"), rows))
    if r.checks:
        parts.append("<h2>What would confirm or refute it</h2><ul>"
                     + "".join(f"<li>{_e(c)}</li>" for c in r.checks) + "</ul>")
    if r.outcome is not None:
        o = r.outcome
        parts.append(f"<h2>Outcome</h2><p>Episode ran {_e(iso_time(o.started_s))} – "
                     f"{_e(iso_time(o.ended_s))} ({o.duration_s:.0f} s), peak "
                     f"{_e(o.peak_level.value)} at {o.peak_score:.1f}.</p>")
    body = "\n".join(parts)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(r.title)}</title><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>")
