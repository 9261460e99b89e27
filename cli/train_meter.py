"""``convergence models train meter``: train the LightGBM convergence fusion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from convergence.cli.common import console, err_console, fail, plural, print_json, settings


def train_meter_cmd(
    runs: Annotated[int, typer.Option(min=10, max=100_000, help="Simulated scenario runs.")] = 600,
    ticks: Annotated[int, typer.Option(min=20, max=10_000, help="Ticks per run.")] = 60,
    stations: Annotated[int | None, typer.Option(min=5, help="Stations per run (default: settings).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: settings).")] = None,
    rounds: Annotated[int, typer.Option(min=1, max=5000, help="LightGBM boosting rounds.")] = 200,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train the LightGBM convergence fusion on labelled simulated runs.

    Reports held-out AUC, calibration, and rule-vs-learned detection on held-out runs.
    """
    from convergence.models.meter_model import train_meter
    from convergence.models.registry import ModelRegistry, RegistryError

    s = settings(seed=seed, stations=stations)
    reg = ModelRegistry(s.models_path)
    try:
        with Progress(console=console, transient=True, disable=json_out) as bar:
            task = bar.add_task("training meter", total=1.0)

            def progress(msg: str, frac: float) -> None:
                bar.update(task, completed=frac, description=msg)

            result = train_meter(reg, runs=runs, ticks=ticks, stations=s.stations, seed=s.seed,
                                 num_rounds=rounds, progress=progress)
    except (ValueError, RegistryError) as exc:
        fail(exc)
    m = result.metrics
    ref = result.record.ref
    if json_out:
        print_json({"model": ref, "path": str(result.record.path),
                    "status": "default" if result.promoted else "candidate",
                    "status_reason": result.verdict, **m})
    else:
        _report(result.record.path, ref, m)
    if result.promoted:
        if not json_out:
            console.print(f"{ref} is now the default meter (`convergence run` uses it; "
                          f"CONVERGENCE_METER_MODEL=rules keeps the rule): {result.verdict}")
    else:
        err_console.print(
            f"warning: {ref} did worse than the rule-based meter on its held-out runs "
            f"({result.verdict}); it is kept as a candidate, NOT the default - the stream "
            f"keeps the meter it used before (an earlier default model, or the rule). Try it "
            f"on purpose with "
            f"CONVERGENCE_METER_MODEL={ref}, or train on more --runs.", markup=False)


def _report(path: Path, ref: str, m: dict[str, Any]) -> None:
    """The training report: AUC, calibration, and rule vs learned on held-out runs."""
    console.print(f"saved [bold]{ref}[/] in {path}")
    console.print(f"held-out AUC {m['auc']:.3f} (rule score alone {m['rule_auc']:.3f}), "
                  f"Brier {m['brier']:.4f}, expected calibration error {m['ece']:.4f}")
    console.print("reliability (predicted -> observed):")
    for row in m["reliability"]:
        console.print(f"  {row['bin']}: n={row['n']:>6}  {row['predicted']:.3f} -> {row['observed']:.3f}")
    for name in ("heldout_rule", "heldout_learned"):
        d = m[name]
        console.print(f"{name.replace('heldout_', ''):>8} meter on held-out runs: detected "
                      f"{d['detected']}/{d['genuine_runs']} ({d['detection_rate']:.0%}), "
                      f"false alarms in {plural(d['runs_with_false_alarm'], 'run')} "
                      f"({d['false_alarm_rate']:.1%}), median time to detect "
                      + ("-" if d["median_time_to_detect_s"] is None
                         else f"{d['median_time_to_detect_s']} s"))
