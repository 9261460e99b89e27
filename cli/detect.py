"""``convergence detect FILE.csv --out OUT.csv``: the benchmark-style single-series interface."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer

from convergence.cli.common import console, fail, plural, settings
from convergence.cli.regime import _parse_ref


def detect(
    file: Annotated[Path, typer.Argument(help="CSV with a timestamp,value header (one stream).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write timestamp,value,anomaly_score.")],
    model: Annotated[str | None, typer.Option(
        help="Also use a saved regime HMM: NAME or NAME@VERSION (default: none).")] = None,
    slots_per_day: Annotated[int, typer.Option(min=1, max=1440,
                                               help="Daily-profile slots for the periodicity check.")] = 24,
    warmup: Annotated[int, typer.Option(min=2, help="Rows the baselines learn before scoring.")] = 20,
) -> None:
    """Score one timestamp,value series with the full detector stack (anomaly_score in [0, 1]).

    Causal: each row sees only the rows before it. This is the interface anomaly-detection
    benchmarks use.
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
    try:
        with out.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score"])
            for t, v, s in zip(series.text, series.values, scores, strict=True):
                w.writerow([t, repr(float(v)), f"{s:.6f}"])
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    top = int(scores.argmax())
    console.print(f"scored {plural(len(series), 'row')} -> {out}; highest {scores[top]:.3f} at "
                  f"{series.text[top]}; {plural(int((scores >= 0.5).sum()), 'row')} >= 0.5")
