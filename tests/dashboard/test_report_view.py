"""A report as the drill-down page: every section, nothing unescaped, nothing external."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

from convergence.dashboard.report_view import render_report_html
from convergence.records import Level, Report


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Collect:
    p = _Collect()
    p.feed(page)
    return p


def test_every_section_of_a_full_report_is_shown(make_report: Callable[..., Report]) -> None:
    rep = make_report(status="closed")
    page = render_report_html(rep, revisions=[1, 2])
    text = " ".join(parse(page).text)
    for heading in ("Bottom line.", "Confidence", "What moved", "Score", "Timeline",
                    "What the sources said", "Context", "Actions taken",
                    "What would confirm or refute it", "Outcome"):
        assert heading in text, heading
    assert "revision 2 of 1, 2" in text and "2023-11-14T22:13:33Z" in text
    assert "87%" in text and "mc-2026-12-01" in text and "LightGBM fusion meter@3" in text
    assert "discounted: shares wire-01 with news-mena-001" in text
    assert "1 applied, 1 refused" in text and "interval_s=0.25" in text
    assert "pattern news-then-market over ticks" in text and "sensor-mena-009" in text
    assert "high volatility" in text and "(33 s)" in text


def test_a_closed_report_is_headed_by_its_peak(make_report: Callable[..., Report]) -> None:
    rep = make_report(status="closed", level=Level.QUIET, score=4.0)
    assert '<span class="badge converged">CONVERGED</span>' in render_report_html(rep)
    open_rep = make_report(level=Level.WARNING)
    assert '<span class="badge warning">WARNING</span>' in render_report_html(open_rep)


def test_values_are_escaped_and_only_web_links_are_links(make_report: Callable[..., Report]) -> None:
    rep = make_report(title="<img src=x onerror=alert(1)>", summary="a & b <script>x</script>")
    page = render_report_html(rep)
    tags = parse(page).tags
    assert not [t for t, _ in tags if t in ("script", "img", "iframe", "link")]
    hrefs = [a.get("href") for t, a in tags if t == "a"]
    assert hrefs == ["https://example.org/a"]
    assert all(a.get("rel") == "noopener noreferrer" for t, a in tags if t == "a")
    assert "Explosion reported near &lt;port&gt;" in page
    assert "Scripted link" in page and "javascript:" not in page


def test_the_page_is_standalone(make_report: Callable[..., Report]) -> None:
    page = render_report_html(make_report())
    assert page.startswith("<!doctype html>") and "<style>" in page
    assert not re.search(r"(src|href)=\"(?!https://example\.org/a)", page)
    assert "@media print" in page


def test_a_minimal_report_renders_without_empty_sections(make_report: Callable[..., Report]) -> None:
    rep = make_report(confidence=None, contributions=(), by_kind={}, by_evidence={}, timeline=(),
                      score_series=(), evidence=(), regimes={}, patterns=(), dark_stations=(),
                      responses=(), checks=())
    text = " ".join(parse(render_report_html(rep)).text)
    assert "Bottom line." in text
    for heading in ("Confidence", "What moved", "Timeline", "Actions taken", "Context", "Outcome"):
        assert heading not in text
