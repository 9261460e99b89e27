"""``convergence evaluate detect --corpus DIR``: our per-station evidence against baselines."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from convergence.cli.common import console, err_console, fail, print_json

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Measure the detectors on a labelled corpus, beside baselines.",
    no_args_is_help=True)


class Split(StrEnum):
    tune = "tune"
    held_out = "held-out"
    all = "all"


@app.command("detect")
def detect(
    corpus: Annotated[Path, typer.Option(
        help="Corpus folder with manifest.json (the repository's: evaluation/corpus/data).")],
    split: Annotated[Split, typer.Option(
        help="Which series to report: the held-back split (never tuned on), the tune split, or all.")]
        = Split.held_out,
    methods: Annotated[str | None, typer.Option(
        help="Comma-separated methods (default: every one that can run here: ours, zscore, "
             "river-hst, river-pad).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Score every series with our detector and the baselines; print VUS-PR and the event score per kind.

    Alarm thresholds for the event score are chosen on the tune split only, then applied
    to the split reported.
    """
    from convergence.evaluation.corpus import CorpusError, load_corpus
    from convergence.evaluation.methods import METHODS, NEEDS_RIVER, available
    from convergence.evaluation.report import evaluate, markdown_table

    can_run = available()
    if methods is None:
        chosen = can_run
    else:
        chosen = [m.strip() for m in methods.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in METHODS]
        if unknown or not chosen:
            fail(f"--methods {methods!r}: unknown {', '.join(unknown) or 'empty list'}; "
                 f"choose from {', '.join(METHODS)}")
        missing = [m for m in chosen if m not in can_run]
        if missing:
            fail(f"--methods: {', '.join(missing)} need river; install it with "
                 "pip install 'convergence[eval]'")
    try:
        series = load_corpus(corpus, split.value)
        tune = None if split is Split.all else (
            series if split is Split.tune else load_corpus(corpus, "tune"))
    except CorpusError as exc:
        fail(exc)
    if not any(m in chosen for m in NEEDS_RIVER) and methods is None:
        err_console.print("note: river is not installed, so its baselines are left out "
                          "(pip install 'convergence[eval]')")

    def say(msg: str) -> None:
        if not json_out:
            err_console.print(msg)

    result = evaluate(series, split.value, chosen, tune=tune, progress=say)
    if json_out:
        print_json(result.as_dict())
        return
    console.print(f"split {split.value}: {len(series)} series; VUS-PR (TSB-AD) and event score "
                  "(thresholds chosen on the tune split; 1 = every window caught at once, "
                  "0 = silent, < 0 = false alarms cost more than the catches)")
    console.print(markdown_table(result), markup=False)
    th = ", ".join(f"{m} {t:.8g}" for m, t in result.thresholds.items())
    console.print(f"alarm thresholds: {th}")
    secs = ", ".join(f"{m} {s:.1f} s" for m, s in result.seconds.items())
    console.print(f"time: {secs}")
