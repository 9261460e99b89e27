"""The brief a duty analyst reads: every part of a full report shows up, in every format,
and nothing a source wrote can inject markup, links or terminal escapes."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from convergence.records import (
    AckNote,
    Confidence,
    EvidenceSample,
    Label,
    Level,
    Report,
    ResponseTaken,
    TimelineEntry,
    Verdict,
    iso_time,
)
from convergence.responses.examples import example_report, example_revisions
from convergence.responses.render import (
    Format,
    derived_checks,
    duration,
    render,
    safe_text,
    safe_url,
    sparkline,
)


@pytest.fixture(scope="module")
def revisions() -> list[Report]:
    return example_revisions(seed=5, region="eu-west")


@pytest.fixture(scope="module")
def converged(revisions: list[Report]) -> Report:
    return revisions[2]


def sections(md: str) -> list[str]:
    return [line[3:] for line in md.splitlines() if line.startswith("## ")]


def section(md: str, title: str) -> str:
    body = md.split(f"## {title}\n", 1)[1]
    return body.split("\n## ", 1)[0]


def test_md_brief_has_every_part_in_reading_order(converged: Report, revisions: list[Report]) -> None:
    md = render(converged, "md", revisions=revisions)
    assert sections(md) == ["Bottom line", "Confidence", "What moved", "Timeline",
                            "What the sources said", "Context", "Actions taken",
                            "What would confirm or refute it", "Revisions and outcome"]
    # the headline: level, region, when it reached that level in ISO 8601 UTC, and the tick
    reached = next(e for e in converged.timeline if e.what == "level" and e.level == Level.CONVERGED)
    assert md.splitlines()[0] == f"# CONVERGED — eu-west — {iso_time(reached.time_s)} (tick {reached.tick})"
    assert re.match(r"^# CONVERGED — eu-west — \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(tick \d+\)$",
                    md.splitlines()[0])


def test_bottom_line_says_what_how_sure_what_was_done_and_what_to_check(converged: Report) -> None:
    bl = section(render(converged, "md"), "Bottom line")
    assert f"{len(converged.contributions)} stations across 5 source kinds" in bl
    assert "Still open: converged at score" in bl
    assert f"{converged.confidence.probability * 100:.0f}% likely a genuine convergence" in bl  # type: ignore[union-attr]
    assert "paged the on-call analyst" in bl and "burst mode" in bl
    assert "2 of 13 acknowledgements report a failure" in bl
    assert f"First check: {converged.checks[0]}" in bl.replace("\\", "")


def test_confidence_names_the_probability_campaign_and_meter(converged: Report) -> None:
    conf = section(render(converged, "md"), "Confidence")
    c = converged.confidence
    assert c is not None
    assert f"**{c.probability * 100:.0f}%**" in conf
    assert f"“{c.campaign}” ({c.n_runs} simulated runs)" in conf and c.basis in conf
    assert "Meter: rule-based fusion." in conf
    uncalibrated = dataclasses.replace(converged, confidence=None)
    assert "Not calibrated" in section(render(uncalibrated, "md"), "Confidence")


def test_what_moved_lists_each_station_and_why_some_were_discounted(converged: Report) -> None:
    moved = section(render(converged, "md"), "What moved")
    rows = [line for line in moved.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0][2:] for r in rows] == [c.station_id for c in converged.contributions]
    for c in converged.contributions:
        row = next(r for r in rows if r.startswith(f"| {c.station_id} |"))
        assert f"{c.share * 100:.0f}%" in row
        top = max(c.peak_evidence, key=lambda k: c.peak_evidence[k])
        assert f"{top} {c.peak_evidence[top]:.1f} sd" in row
        if c.correlated:
            assert f"discounted: correlated with {c.correlated_with} (same {c.group})" in row
        else:
            assert "counted in full" in row
    assert "By source kind: " in moved and "By evidence type: burst" in moved


def test_timeline_and_score(converged: Report) -> None:
    tl = section(render(converged, "md"), "Timeline")
    for lvl in ("watch", "warning", "converged"):
        assert f"**reached {lvl}**" in tl
    joins = [e for e in converged.timeline if e.what == "joined"]
    by_tick: dict[int, list[str]] = {}
    for e in joins:
        by_tick.setdefault(e.tick, []).append(e.station_id or "")
    for tick, sids in by_tick.items():  # stations joining in one tick are one line
        line = next(x for x in tl.splitlines() if f"(tick {tick})" in x and "joined" in x)
        assert all(sid in line for sid in sids)
        assert (f"{len(sids)} stations joined: " in line) if len(sids) > 1 else \
            line.endswith(f"{sids[0]} joined")
    assert f"{iso_time(converged.timeline[0].time_s)} (tick {converged.timeline[0].tick}), +0 s" in tl
    spark = re.search(r"Score: `([▁▂▃▄▅▆▇█]+)`", tl)
    assert spark and len(spark.group(1)) == len(converged.score_series)


def test_sources_show_headlines_links_and_market_values(converged: Report) -> None:
    src = section(render(converged, "md"), "What the sources said")
    news = next(s for s in converged.evidence if s.link and "wire" in s.link)
    assert f"“{news.text}” — [wire.example.net]({news.link})" in src
    price = next(s for s in converged.evidence if s.station_id.startswith("price-"))
    assert f"price {price.value:,.2f}".rstrip("0").rstrip(".") in src
    assert "**" + price.station_id + "** (market prices)" in src


def test_a_headline_posted_again_is_one_line_with_a_count(converged: Report) -> None:
    sid = converged.contributions[0].station_id
    again = tuple(EvidenceSample(sid, converged.time_s - k, "disaster", 1.0, "Port blast", None, sid)
                  for k in range(3))
    other = EvidenceSample(sid, converged.time_s, "disaster", 1.0, "Roads closed", None, sid)
    src = section(render(dataclasses.replace(converged, evidence=(*again, other)), "md"),
                  "What the sources said")
    assert src.count("“Port blast”") == 1 and f"“Port blast” — {sid} (3 times)" in src
    assert f"“Roads closed” — {sid}\n" in src


def test_confidence_never_reads_as_certainty(converged: Report) -> None:
    assert converged.confidence is not None
    sure = dataclasses.replace(converged, confidence=dataclasses.replace(converged.confidence,
                                                                         probability=1.0))
    md = render(sure, "md")
    assert "Over 99% likely a genuine convergence" in md and "**Over 99%** probability" in md
    assert "100%" not in section(md, "Confidence")


def test_context_actions_checks_and_revisions(converged: Report, revisions: list[Report]) -> None:
    md = render(converged, "md", revisions=revisions)
    ctx = section(md, "Context")
    for sid, regime in converged.regimes.items():
        assert f"{sid} {regime}" in ctx
    assert "Pattern social-news-market completed" in ctx and converged.dark_stations[0] in ctx
    acts = section(md, "Actions taken")
    region_burst = next(r for r in converged.responses if r.target == "region:eu-west")
    assert ("| burst_mode | region eu-west | interval_s=0.25 | "
            f"{iso_time(region_burst.issued_at_s)} | {iso_time(region_burst.expires_at_s or 0)} | "
            "4 applied, 1 failed (") in acts
    assert "| escalate | on-call analyst | — |" in acts and "no expiry" in acts
    checks = section(md, "What would confirm or refute it")
    assert all(f"- {c}" in checks for c in converged.checks)
    rev = section(md, "Revisions and outcome")
    assert "| 3 (this one) |" in rev and "| 4 |" in rev and "closed" in rev
    assert "No analyst has labelled it yet" in rev


def test_closed_report_states_its_outcome(revisions: list[Report]) -> None:
    final = revisions[-1]
    assert final.outcome is not None
    md = render(final, "md")
    assert md.startswith("# CONVERGED — eu-west")  # the headline keeps the peak level
    assert f"It is over: ended {iso_time(final.outcome.ended_s)} after " \
           f"{duration(final.outcome.duration_s)}" in md
    assert f"**Outcome:** started {iso_time(final.outcome.started_s)}" in md


def test_timeline_says_a_fall_as_a_fall_and_the_end_once(revisions: list[Report]) -> None:
    final = revisions[-1]
    peak = next(e for e in final.timeline if e.what == "level" and e.level == Level.CONVERGED)
    fall = TimelineEntry(peak.tick + 3, peak.time_s + 3, "level", 55.0, Level.WARNING)
    end = next(e for e in final.timeline if e.what == "ended")
    back = TimelineEntry(end.tick, end.time_s, "level", end.score, Level.QUIET)
    timeline = [e for e in final.timeline if e.what != "ended" and e.level != Level.QUIET]
    report = dataclasses.replace(final, timeline=(*timeline, fall, back, end))
    tl = section(render(report, "md"), "Timeline")
    assert "**fell back to warning** (score 55)" in tl and "**reached converged**" in tl
    assert "**ended: back to quiet**" in tl and "quiet**" not in tl.replace("back to quiet**", "")
    # the score chart is captioned with times, not bare tick numbers
    first, last = final.score_series[0][0], final.score_series[-1][0]
    assert f"score from {iso_time(first + 1.0)} to {iso_time(last + 1.0)}" in tl
    assert "from tick" not in tl


def test_patterns_say_when_they_completed(converged: Report) -> None:
    ctx = section(render(converged, "md"), "Context")
    for p in converged.patterns:
        assert f"Pattern {p.pattern} completed at {iso_time(p.end_tick + 1.0)} (ticks " in ctx


def test_the_bottom_lines_first_check_is_one_plain_sentence(converged: Report) -> None:
    report = dataclasses.replace(converged, checks=(
        "Confirm: watch sensors in eu-west, which have not moved yet; a move there would "
        "corroborate it.",))
    bottom = section(render(report, "md"), "Bottom line")
    assert ("First check: Watch sensors in eu-west, which have not moved yet; a move there "
            "would corroborate it.\n") in bottom


def test_open_report_below_its_peak_says_where_it_is_now(converged: Report) -> None:
    cooling = dataclasses.replace(converged, level=Level.WARNING, score=60.0)
    assert render(cooling, "md").splitlines()[0].startswith("# CONVERGED (now warning) — eu-west")


def test_labels_appear_newest_last(converged: Report) -> None:
    labels = [Label("x-l002", converged.report_id, Verdict.GENUINE, "bo", 2e9, "port authority confirmed"),
              Label("x-l001", converged.report_id, Verdict.UNSURE, "ann", 1.9e9, "", 2)]
    rev = section(render(converged, "md", labels=labels), "Revisions and outcome")
    assert rev.index("**unsure** by ann") < rev.index("**genuine** by bo")
    assert "(on revision 2)" in rev and "port authority confirmed" in rev


def test_a_bare_report_still_reads(converged: Report) -> None:
    bare = dataclasses.replace(converged, confidence=None, timeline=(), score_series=(), evidence=(),
                               regimes={}, patterns=(), dark_stations=(), responses=(), checks=(),
                               contributions=converged.contributions[:1], by_kind={}, by_evidence={})
    md = render(bare, "md")
    assert "No timeline was recorded" in md and "No evidence samples were kept" in md
    assert "No automatic response was taken." in md
    # the confirm/refute section is worked out from the record when the pipeline wrote none
    assert derived_checks(bare) and all(c.replace("_", "\\_") in md or c in md
                                        for c in derived_checks(bare))
    moved = bare.contributions[0].source_kind
    words = {"osint_news": "news", "osint_social": "social media", "market_price": "market price",
             "market_volume": "market volume", "sensor": "sensor"}
    for kind, word in words.items():
        assert (f"No {word} station has moved" in md) == (kind != moved)


HOSTILE = ("<script>alert(1)</script> \x1b[31mred\x1b[0m [click](javascript:alert(1)) | pipe "
           "**bold** \u202eevil")


def hostile(report: Report) -> Report:
    ev = EvidenceSample("news-x-001", report.time_s, "politics", 1.0, text=HOSTILE,
                        link="javascript:alert(document.cookie)", source="<b>src</b>")
    resp = ResponseTaken("rsp-x", "burst_mode", "station:<img src=x>", {"interval_s": 0.25},
                         report.time_s, None, HOSTILE, (AckNote("a\x1bb", False, report.time_s, HOSTILE),))
    return dataclasses.replace(report, evidence=(ev,), responses=(resp,), summary=HOSTILE,
                               checks=(HOSTILE,))


def test_md_escapes_what_sources_wrote(converged: Report) -> None:
    md = render(hostile(converged), "md")
    # every Markdown link (an unescaped "](") goes to http(s); the hostile one is plain text
    assert not re.search(r"(?<!\\)\]\((?!https?://)", md)
    assert "\\[click\\](javascript:alert(1))" in md
    assert "<script>" not in md and "\x1b" not in md
    assert "\\<script\\>" in md and "\\*\\*bold\\*\\*" in md and "\\| pipe" in md
    assert "\u202e" not in md


def test_text_has_no_terminal_escapes(converged: Report) -> None:
    text = render(hostile(converged), "text")
    assert "\x1b" not in text and "\u202e" not in text
    assert not any(ord(c) < 32 and c != "\n" for c in text)
    assert "javascript:" in text  # shown as text, never as a link target
    assert "<javascript" not in text


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag not in ("meta", "br", "img"):
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)  # <polyline .../>: opens and closes
        self.attrs += [(tag, k, v) for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()


def test_html_is_one_standalone_safe_page(converged: Report, revisions: list[Report]) -> None:
    page = render(hostile(converged), "html", revisions=revisions)
    p = _Collect()
    p.feed(page)
    assert p.open == [] and p.tags[:2] == ["html", "head"]
    # nothing fetched: no scripts, images, stylesheets or frames; CSS inline; links only http(s)
    assert not {"script", "img", "link", "iframe", "object", "embed"} & set(p.tags)
    assert all(k != "src" for _, k, _ in p.attrs)
    assert "@import" not in page and "url(" not in page
    hrefs = [v for t, k, v in p.attrs if k == "href"]
    assert all(v and v.startswith(("https://", "http://")) for v in hrefs)
    assert "&lt;script&gt;" in page and "<svg" in page and "@media print" in page
    clean = render(converged, "html")
    assert clean.count('href="https://wire.example.net/') == sum(
        1 for s in converged.evidence if s.link and "wire." in s.link)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium installed (CI installs it)")
def test_html_prints_in_headless_chromium_without_network(tmp_path: Path, converged: Report) -> None:
    page = tmp_path / "report.html"
    page.write_text(render(converged, "html"), encoding="utf-8")
    pdf = tmp_path / "report.pdf"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # any fetch would fail
         f"--print-to-pdf={pdf}", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert "What the sources said" in dom.stdout and "Actions taken" in dom.stdout


def test_json_is_the_record(converged: Report) -> None:
    doc = json.loads(render(converged, "json"))
    assert Report.from_dict(doc) == converged
    nan = dataclasses.replace(converged, confidence=Confidence(float("nan"), "c", 1))
    assert json.loads(render(nan, Format.JSON))["confidence"]["probability"] is None
    lb = Label("l1", converged.report_id, Verdict.FALSE_ALARM, "ann", 1.0)
    with_labels = json.loads(render(converged, "json", labels=[lb], revisions=[converged]))
    assert with_labels["labels"][0]["verdict"] == "false-alarm"
    assert with_labels["revisions"] == [{"revision": 3, "time": converged.time_iso, "tick": converged.tick,
                                         "level": "converged", "score": converged.score, "status": "open"}]


def test_text_carries_the_same_brief(converged: Report) -> None:
    text = render(converged, "text")
    for title in ("BOTTOM LINE", "CONFIDENCE", "WHAT MOVED", "TIMELINE", "WHAT THE SOURCES SAID",
                  "CONTEXT", "ACTIONS TAKEN", "WHAT WOULD CONFIRM OR REFUTE IT", "REVISIONS AND OUTCOME"):
        assert f"\n{title}\n" in text
    assert "share" in text and "stations" in text
    assert all(c.station_id in text for c in converged.contributions)
    news = next(s for s in converged.evidence if s.link)
    assert f"<{news.link}>" in text
    assert "**" not in text and "](" not in text


def test_unknown_format_is_refused(converged: Report) -> None:
    with pytest.raises(ValueError, match="unknown report format 'pdf'; use one of text, md, json, html"):
        render(converged, "pdf")


def test_helpers() -> None:
    assert safe_text("a\x00b\x07c") == "a b c"
    assert safe_url("ftp://x/y") is None and safe_url("https://") is None
    assert safe_url("https://x.example/a(b)") == "https://x.example/a%28b%29"
    ramp = sparkline([(i, i / 10) for i in range(1001)], 8)  # 0 .. 100, 8 stretches
    assert len(ramp) == 8 and list(ramp) == sorted(ramp) and ramp[-1] == "█"
    assert sparkline([(i, 0.0) for i in range(5)] + [(5, 100.0)], 3) == "▁▁█"  # a stretch shows its peak
    assert duration(3600) == "1 h" and duration(-1) == "?"


def test_every_example_seed_renders_in_every_format() -> None:
    for seed in range(6):
        rep = example_report(seed)
        for fmt in Format:
            assert render(rep, fmt).strip()
