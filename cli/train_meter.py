"""``convergence models train meter``: train the LightGBM convergence fusion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from convergence.cli.common import console, err_console, fail, plural, print_json, settings
from convergence.settings import Settings


def train_meter_cmd(
    runs: Annotated[int, typer.Option(min=2, max=100_000,
                                      help="Training runs per library scenario.")] = 40,
    seed: Annotated[int | None, typer.Option(help="Campaign seed of the training runs "
                                                  "(default: settings).")] = None,
    heldout_seed: Annotated[int | None, typer.Option(
        help="Campaign seed of the held-out runs the model is reported on (default: seed + 1).")] = None,
    scenarios: Annotated[str, typer.Option(
        help="Library scenarios to train on: all, genuine, decoy or NAME,NAME,...")] = "all",
    folds: Annotated[int, typer.Option(min=2, max=20, help="Folds for the out-of-fold "
                                                          "operating point.")] = 3,
    rounds: Annotated[int, typer.Option(min=1, max=5000, help="LightGBM boosting rounds.")] = 200,
    with_labels: Annotated[bool, typer.Option(
        "--with-labels", help="Also train on the reports analysts labelled genuine or false-alarm "
                              "(`convergence reports label`), read from --db.")] = False,
    label_weight: Annotated[float, typer.Option(
        min=0.001, max=10_000, help="How many simulated rows one labelled report row weighs.")] = 20.0,
    db: Annotated[str | None, typer.Option(
        help="SurrealDB URL holding the labels (default: the embedded file).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train the LightGBM convergence fusion on scenario-campaign runs of one seed.

    Reports, on another seed's runs: AUC, calibration, and the rule-based and learned
    meters' detection, false alarms and time to detect.
    With --with-labels, analysts' verdicts on real reports join the training rows.
    """
    from convergence.models.meter_model import train_meter
    from convergence.models.registry import ModelRegistry, RegistryError

    s = settings(seed=seed, db=db)
    reg = ModelRegistry(s.models_path)
    labelled = _analyst_labels(s, json_out) if with_labels else None
    try:
        with Progress(console=console, transient=True, disable=json_out) as bar:
            task = bar.add_task("training meter", total=1.0)

            def progress(msg: str, frac: float) -> None:
                bar.update(task, completed=frac, description=msg)

            result = train_meter(reg, runs=runs, seed=s.seed, heldout_seed=heldout_seed,
                                 scenarios=scenarios, folds=folds, num_rounds=rounds,
                                 progress=progress, labelled=labelled,
                                 label_weight=label_weight)
    except (ValueError, KeyError, RegistryError) as exc:
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
            f"on purpose with CONVERGENCE_METER_MODEL={ref}, or train on more --runs.",
            markup=False)


def _report(path: Path, ref: str, m: dict[str, Any]) -> None:
    """The training report: AUC, calibration, and rule vs learned on the held-out seed."""
    console.print(f"saved [bold]{ref}[/] in {path}")
    console.print(f"held-out AUC {m['auc']:.3f} (rule score alone {m['rule_auc']:.3f}), "
                  f"Brier {m['brier']:.4f}, expected calibration error {m['ece']:.4f}")
    lab = m.get("analyst_labels")
    if lab:
        console.print(f"trained with {plural(lab['rows'], 'analyst-labelled row')} "
                      f"({lab['genuine']} genuine, {lab['false_alarm']} false alarm) at weight "
                      f"{lab['weight']:g}; mean P on them "
                      f"{lab['mean_p_genuine'] if lab['mean_p_genuine'] is not None else '-'} (genuine) / "
                      f"{lab['mean_p_false_alarm'] if lab['mean_p_false_alarm'] is not None else '-'} "
                      "(false alarm)")
    console.print("reliability (predicted -> observed):")
    for row in m["reliability"]:
        console.print(f"  {row['bin']}: n={row['n']:>6}  {row['predicted']:.3f} -> {row['observed']:.3f}")
    for name in ("heldout_rule", "heldout_learned"):
        d = m[name]
        rate = d["detection_rate"]
        fa = d["false_alarm_rate"]
        console.print(f"{name.replace('heldout_', ''):>8} meter on the held-out seed's runs: "
                      f"detected {d['detected']}/{d['genuine']}"
                      f"{f' ({rate:.1%})' if rate is not None else ''}, false alarms in "
                      f"{d['decoy_runs_with_false_alarm']} of {plural(d['decoy_runs'], 'decoy run')}"
                      f"{f' ({fa:.1%})' if fa is not None else ''}, median time to detect "
                      + ("-" if d["median_time_to_detect_ticks"] is None
                         else f"{d['median_time_to_detect_ticks']} ticks"))


def _analyst_labels(s: Settings, quiet: bool) -> tuple[Any, Any]:
    """Feature rows and verdicts of the labelled reports in the database (one error line if
    there are none to train on)."""
    import asyncio

    from convergence.models.meter_model import analyst_rows
    from convergence.store.graph import labelled_rows, require_existing
    from convergence.store.surreal import StoreError, SurrealStore

    db_url = s.db_url

    async def go() -> tuple[list[Any], dict[str, int]]:
        async with SurrealStore.from_settings(s) as store:
            return await labelled_rows(store)

    try:
        require_existing(db_url)
        rows, counts = asyncio.run(go())
    except StoreError as exc:
        fail(exc)
    X, y, incomplete = analyst_rows([(r.features, r.genuine) for r in rows])
    if not len(y):
        fail(f"--with-labels: no labelled report in {db_url} can be a training row "
             f"({counts['labelled_reports']} labelled, {counts['unsure']} unsure, "
             f"{counts['without_features']} revision(s) without the meter's features, "
             f"{incomplete} with incomplete features); label reports with "
             "`convergence reports label ID genuine|false-alarm`")
    if not quiet:
        console.print(f"analyst labels: {len(y)} row(s) from {counts['reports_used']} report(s) "
                      f"({int(y.sum())} genuine, {int((~y).sum())} false alarm); skipped "
                      f"{counts['unsure']} unsure, {counts['without_features'] + incomplete} without "
                      "usable features")
    return X, y
