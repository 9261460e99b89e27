"""``convergence detect FILE.csv --out OUT.csv``: the benchmark-style single-series interface."""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from convergence.cli.common import console, err_console, fail, plural, settings
from convergence.cli.regime import _parse_ref


def detect(
    file: Annotated[Path, typer.Argument(help="CSV with a timestamp,value header (one stream).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write timestamp,value,anomaly_score "
                                                         "('-' for standard output).")],
    model: Annotated[str | None, typer.Option(
        help="Also use a saved regime HMM: NAME or NAME@VERSION (default: none).")] = None,
    slots_per_day: Annotated[int | None, typer.Option(
        min=1, max=1440, help="Daily-profile slots (default: one per typical sampling interval).")] = None,
    warmup: Annotated[int, typer.Option(min=2, help="Rows the baselines learn before scoring.")] = 20,
) -> None:
    """Score one timestamp,value series with the full detector stack (anomaly_score in [0, 1]).

    Causal: each row sees only the rows before it. This is the interface anomaly-detection
    benchmarks use. The score is calibrated: 0.99 means one normal row in a hundred scores
    as high. Rows out of order are sorted (within 1000 rows) and rows sharing a timestamp
    merged; a note on standard error says what was done.
    """
    from convergence.detectors.single import SingleSeriesDetector
    from convergence.models.regime import first_invalid, load_regime
    from convergence.models.registry import ModelRegistry, RegistryError
    from convergence.models.series import SeriesError, read_series

    try:
        series = read_series(file)
    except SeriesError as exc:
        fail(exc)
    if len(series) == 0:
        fail(f"{file} has a header but no rows; nothing to score")
    for note in series.notes:
        err_console.print(f"note: {file}: {note}", markup=False)
    kw: dict[str, object] = {}
    if model:
        name, version = _parse_ref(model)
        try:
            m = load_regime(ModelRegistry(settings().models_path), name, version)
        except RegistryError as exc:
            fail(exc)
        bad = first_invalid(series.values, m.kind)
        if bad is not None:
            fail(f"{file}: row {series.text[bad]!r} has value {float(series.values[bad])!r}, which "
                 f"model {m.ref} ({m.kind} model) cannot read; use a model of this kind of series")
        kw = {"regime": m.filter(), "regime_kind": m.kind, "regime_vol_window": m.vol_window}
    det = SingleSeriesDetector(warmup_ticks=warmup, slots_per_day=slots_per_day, **kw)  # type: ignore[arg-type]
    scores = det.score_series(series.values, series.timestamps)
    to_stdout = str(out) == "-"
    try:
        if to_stdout:
            _write_rows(sys.stdout, series.text, series.values, scores)
            sys.stdout.flush()
        else:
            with out.open("w", newline="") as fh:
                _write_rows(fh, series.text, series.values, scores)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    top = int(scores.argmax())
    # the summary never mixes into the CSV when that goes to standard output
    (err_console if to_stdout else console).print(
        f"scored {plural(len(series), 'row')} -> {'standard output' if to_stdout else out}; "
        f"highest {scores[top]:.6f} at {series.text[top]}; "
        f"{plural(int((scores >= 0.999).sum()), 'row')} >= 0.999 "
        "(about 1 normal row in 1000 scores that high)")


def _write_rows(fh: Any, stamps: Sequence[str], values: Any, scores: Any) -> None:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(["timestamp", "value", "anomaly_score"])
    for t, v, s in zip(stamps, values, scores, strict=True):
        # ten decimals: calibrated scores of rare rows differ in the sixth place and beyond
        w.writerow([t, repr(float(v)), f"{s:.10f}"])
