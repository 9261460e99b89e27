"""Report revisions as the live pipeline writes them: a library scenario played through
``convergence run`` (embedded, simulated clock) into a real surrealkv store, read back and
rendered as a duty analyst reads it.

The unit tests of the brief (``test_render.py``) use hand-built example reports; these
check what the pipeline itself puts in them: the responses taken in the very tick the
episode began, a final revision that summarises the episode at its peak (not the
stragglers still moving at the end), the sources' own words, and times wherever a tick
is named.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from typer.testing import CliRunner

from convergence.cli.main import app
from convergence.records import Level, Report
from convergence.responses.render import render
from convergence.settings import load_settings
from convergence.store.graph import get_revisions, list_reports
from convergence.store.surreal import SurrealStore

runner = CliRunner()


@pytest.fixture(scope="module")
def episode(tmp_path_factory: pytest.TempPathFactory) -> list[Report]:
    """Every revision of the one report of scenario ``simultaneous`` (seed 4: its meter jumps
    from quiet to converged in one tick)."""
    db = f"surrealkv://{tmp_path_factory.mktemp('pipeline-reports') / 'db'}"
    r = runner.invoke(app, ["run", "--scenario", "simultaneous", "--as-fast-as-possible",
                            "--seed", "4", "--db", db, "--quiet"])
    assert r.exit_code == 0, r.output
    assert "1/1 genuine convergences detected" in r.stdout

    async def read() -> list[Report]:
        settings = load_settings(env={"CONVERGENCE_DB": db}, config_path=None)
        async with SurrealStore.from_settings(settings) as store:
            rows = await list_reports(store)
            assert len(rows) == 1 and rows[0].report is not None
            return await get_revisions(store, rows[0].report.report_id)

    return asyncio.run(read())


@pytest.mark.slow
def test_every_revision_is_kept_and_the_last_closes_the_episode(episode: list[Report]) -> None:
    assert [r.revision for r in episode] == list(range(1, len(episode) + 1))
    assert len(episode) >= 2
    *open_, final = episode
    assert all(r.status == "open" for r in open_) and final.status == "closed"
    assert final.outcome is not None and final.outcome.peak_level == Level.CONVERGED
    assert final.outcome.peak_score == max(r.peak_score for r in episode)


@pytest.mark.slow
def test_the_final_revision_summarises_the_episode_at_its_peak(episode: list[Report]) -> None:
    final = episode[-1]
    peak = next(r for r in episode if r.level == final.peak_level)
    # the stations, kinds and samples that made the alert, not those still moving at the end
    assert [c.station_id for c in final.contributions] == [c.station_id for c in peak.contributions]
    assert final.by_kind == peak.by_kind and final.evidence == peak.evidence
    assert {"osint_news", "osint_social"} <= set(final.by_kind)
    assert final.title.startswith(f"ENDED - CONVERGED in mena: {len(peak.contributions)} stations")
    for check in (c for c in final.checks if c.startswith("Check independently:")):
        assert check.split(" share ")[0].count(" and ") == 1, check  # "a, b and c share"
    # news and social media moved: the checks must not ask to wait for them
    for check in (c for c in final.checks if c.startswith("Confirm:")):
        assert "news" not in check and "social media" not in check, check
    assert "Independent OSINT sources corroborate it." in final.summary
    # "Strongest:" names its stations strongest first, by the figure it quotes for each
    rest = final.summary.split("Strongest: ", 1)[1]
    strongest = rest[:rest.index(" sd).") + len(" sd).")]
    sds = [float(x) for x in re.findall(r", (\d+\.\d) sd\)", strongest)]
    assert len(sds) >= 2 and sds == sorted(sds, reverse=True), strongest


@pytest.mark.slow
def test_responses_of_the_tick_the_episode_began_are_in_the_report(episode: list[Report]) -> None:
    # the meter jumped from quiet to converged in one tick: fast sampling, more sensitive
    # thresholds and the page were all decided in that tick, before the episode existed
    first = episode[0]
    assert first.timeline[0].what in ("joined", "level")
    actions = {r.action for r in first.responses}
    assert {"burst_mode", "set_thresholds", "escalate"} <= actions
    assert all(r.issued_at_s == first.time_s for r in first.responses)
    final = episode[-1]
    assert {r.response_id for r in first.responses} <= {r.response_id for r in final.responses}
    # the stations' acknowledgements of those commands reach a later revision
    assert any(r.acks for r in final.responses if r.action == "burst_mode")


@pytest.mark.slow
def test_the_brief_reads_for_a_person(episode: list[Report]) -> None:
    for report in episode:
        for fmt in ("md", "text", "html"):
            brief = render(report, fmt, revisions=episode)
            # a tick is always named after its time: "2026-...Z (tick N)", never alone
            bare = re.findall(r"(?<!\()\bticks? \d+", brief)
            assert not bare, (fmt, bare)
            assert ".." not in brief.replace("...", "")
            assert "(s)" not in brief and " 0 independent" not in brief
        md = render(report, "md", revisions=episode)
        sources = md.split("## What the sources said\n", 1)[1].split("\n## ", 1)[0]
        assert re.search(r"— “[^”]+ reports from mena”", sources)  # what the OSINT stations said
        assert re.search(r"— volume [\d,.]+ \(", sources)  # and the market values



def test_the_strongest_stations_are_named_strongest_first() -> None:
    """The three stations that count most towards the score, ordered by the evidence each
    is quoted with: the demo's report once read "13.5 sd; 10.8 sd; 11.4 sd" because they
    were ordered by share of the score."""
    from convergence.records import Contribution
    from convergence.responses.reports import EpisodeLog, Reporter

    def station(sid: str, share: float, sd: float) -> Contribution:
        return Contribution(sid, "osint_social", "mena", share, {"burst": sd}, {"burst": sd})

    rep = Reporter(window_ticks=8, tick_s=1.0)
    ep = EpisodeLog("mena", 100, 100.0, "rpt-x", peak_score=99.0, peak_level=3)
    contributions = [station("a", 0.40, 13.5), station("b", 0.35, 10.8), station("c", 0.20, 11.4),
                     station("d", 0.05, 20.0)]
    text = rep._summary(ep, {"by_kind": {"osint_social": 3}, "osint_corroborated": True},
                        contributions, Level.CONVERGED,
                        99.0, None, True, 130.0)
    assert "Strongest: a (social media: a burst of activity, 13.5 sd); c (social media: a burst " \
           "of activity, 11.4 sd); b (social media: a burst of activity, 10.8 sd)." in text, text
