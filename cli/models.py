"""``convergence models ...``: train models and list the model registry.

``train`` is its own sub-app (:data:`train_app`) so each trainable model adds one
command to it (``train regime`` here; ``train meter`` lives with the meter).
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from convergence.cli.common import console, err_console, fail, plural, print_json, settings
from convergence.models.regime import RegimeModel, save_regime, train_regime
from convergence.models.registry import ModelRecord, ModelRegistry, RegistryError, check_name
from convergence.models.series import SeriesError, read_series

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Train models and list the model registry.", no_args_is_help=True)
train_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Train a model from a file and save it to the registry.",
    no_args_is_help=True)
app.add_typer(train_app, name="train")

ModelsDirOption = Annotated[Path | None, typer.Option(
    "--models-dir", help="Model registry directory (default: setting models_dir, "
                         "env CONVERGENCE_MODELS_DIR, else <data_dir>/models).")]


class Kind(StrEnum):
    AUTO = "auto"
    PRICE = "price"
    COUNT = "count"


def registry(models_dir: Path | None = None) -> ModelRegistry:
    """The registry at the effective ``models_path`` (flag, env, config, default)."""
    return ModelRegistry(settings(models_dir=models_dir).models_path)


def _duration(ticks: float) -> str:
    return "forever" if math.isinf(ticks) else f"{ticks:,.1f} ticks"


def print_states(model: RegimeModel) -> None:
    """The states a regime model found, calm first, as a table."""
    feature = "log return" if model.kind == "price" else "log(1+count)"
    table = Table(title=f"{model.n_states} regimes ({model.kind} features)", title_justify="left")
    for col in ("state", f"mean {feature}", "volatility", "share of time", "typical duration"):
        table.add_column(col, justify="left" if col == "state" else "right")
    for row in model.summary():
        table.add_row(row["state"], f"{row['mean']:+.6f}", f"{row['volatility']:.6f}",
                      f"{row['share'] * 100:.1f}%", _duration(row["duration_ticks"]))
    console.print(table)


def _json_safe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in r.items()} for r in rows]


@train_app.command("regime")
def train_regime_cmd(
    input_path: Annotated[Path, typer.Option(
        "--input", "-i", help="CSV with a header 'timestamp,value' (unix seconds or ISO-8601), "
                              "one row per tick, oldest first.")],
    name: Annotated[str, typer.Option(help="Registry name to save under.")] = "regime",
    states: Annotated[int, typer.Option(min=1, max=20,
                                        help="Number of regimes (5: calm .. crisis).")] = 5,
    kind: Annotated[Kind, typer.Option(
        help="Features: price (log returns, realised volatility), count (log(1+count) and its "
             "change) or auto (count if every value is a non-negative integer).")] = Kind.AUTO,
    seed: Annotated[int | None, typer.Option(help="Seed for the fit (default: setting seed).")]
        = None,
    iterations: Annotated[int, typer.Option(min=1, max=10_000,
                                            help="Most EM iterations per restart.")] = 100,
    restarts: Annotated[int, typer.Option(
        min=1, max=100, help="EM restarts from different seeded starts; the most likely "
                             "fit is kept (EM finds local optima).")] = 5,
    vol_window: Annotated[int, typer.Option(min=2, max=10_000,
                                            help="Returns per volatility estimate.")] = 10,
    models_dir: ModelsDirOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON summary on stdout.")]
        = False,
) -> None:
    """Train the regime HMM on a price or count history and save it to the registry."""
    s = settings(seed=seed, models_dir=models_dir)
    try:
        check_name(name)  # before the fit, not after it
        series = read_series(input_path)
    except (RegistryError, SeriesError) as exc:
        fail(exc)
    for note in series.notes:  # rows sorted or merged: say so, never silently
        err_console.print(f"note: {input_path}: {note}", markup=False)
    with Progress(TextColumn("fitting {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("log-lik {task.fields[ll]}"), TimeElapsedColumn(),
                  console=err_console, transient=json_out, disable=json_out) as bar:
        task = bar.add_task(f"{states} states", total=iterations * restarts, ll="-")

        def tick(done: int, total: int, ll: float) -> None:
            bar.update(task, completed=done, total=total, ll=f"{ll:,.1f}")

        try:
            model = train_regime(series.values, kind=kind.value, n_states=states, seed=s.seed,
                                 n_iter=iterations, n_init=restarts, vol_window=vol_window,
                                 source=str(input_path), progress=tick)
        except ValueError as exc:
            fail(f"cannot train on {input_path}: {exc}")
    try:
        rec = save_regime(ModelRegistry(s.models_path), model, name)
    except RegistryError as exc:
        fail(exc)
    metrics = model.metadata["metrics"]
    if json_out:
        print_json({"model": rec.ref, "path": str(rec.path), "kind": model.kind,
                    "states": _json_safe(model.summary()), "metrics": metrics})
        return
    console.print(f"fitted {plural(states, 'state')} on {plural(model.metadata['n_samples'], 'tick')} of "
                  f"{escape(str(input_path))}: best of {restarts} restarts took {metrics['iterations']} EM "
                  f"iterations{'' if metrics['converged'] else ' (not converged: raise --iterations)'}"
                  f", log-likelihood {metrics['log_likelihood']:,.1f}")
    print_states(model)
    console.print(f"saved [bold]{rec.ref}[/] to {escape(str(rec.path))}")
    console.print(f"label a history with: convergence regime FILE.csv --out labels.csv "
                  f"--model {rec.ref}")


def _describe(rec: ModelRecord, in_use: dict[str, int]) -> dict[str, str]:
    """One registry row in words: what the model is, what it learnt from, how good it is,
    and whether ``auto`` uses it."""
    m = rec.metadata
    raw_metrics = m.get("metrics")
    metrics: dict[str, Any] = raw_metrics if isinstance(raw_metrics, dict) else {}
    row = {"model": rec.ref, "created": rec.created[:16].replace("T", " "), "type": rec.format,
           "trained on": "", "samples": "", "quality": "", "status": ""}
    if rec.name == "meter" or m.get("kind") == "lightgbm-binary":
        row["type"] = "lightgbm meter"
        scen = m.get("scenarios")
        if isinstance(m.get("runs"), int) and isinstance(scen, list):
            row["trained on"] = (f"{m['runs']:,} runs x {plural(len(scen), 'scenario')}, "
                                 f"seed {m.get('seed', '?')} (held out: {m.get('heldout_seed', '?')})")
        elif all(isinstance(m.get(k), int) for k in ("runs", "ticks", "stations")):
            row["trained on"] = (f"{m['runs']:,} simulated runs x {m['ticks']} ticks x "
                                 f"{plural(m['stations'], 'station')}")
        if isinstance(m.get("train_rows"), int):
            row["samples"] = f"{m['train_rows']:,}"
        if isinstance(metrics.get("auc"), float) and isinstance(metrics.get("rule_auc"), float):
            row["quality"] = f"AUC {metrics['auc']:.3f} (rule {metrics['rule_auc']:.3f})"
        held, rule = metrics.get("heldout_learned"), metrics.get("heldout_rule")
        if isinstance(held, dict) and isinstance(rule, dict) and "detected" in held:
            row["quality"] += (f"; held out: {held['detected']} detected, "
                               f"{held.get('runs_with_false_alarm', '?')} false-alarm runs "
                               f"(rule {rule.get('detected', '?')}, "
                               f"{rule.get('runs_with_false_alarm', '?')})")
        if m.get("status") == "candidate":
            row["status"] = "candidate (worse than the rule)"
    else:
        row["type"] = str(m.get("model", rec.format))
        if m.get("kind") in ("price", "count"):
            row["type"] += f" ({m['kind']})"
        row["trained on"] = str(m.get("source", ""))
        if isinstance(m.get("n_samples"), int):
            row["samples"] = f"{m['n_samples']:,}"
        ll = metrics.get("log_likelihood_per_sample")
        if isinstance(ll, float):
            row["quality"] = f"log-lik/sample {ll:.3f}"
    if in_use.get(rec.name) == rec.version:
        row["status"] = "in use (auto)"
    return row


def _in_use(records: list[ModelRecord]) -> dict[str, int]:
    """The version a stream with ``auto`` settings uses: the newest ``meter`` that is not
    a candidate, and the newest ``regime`` if it is a price model (the stream applies
    price models only)."""
    out: dict[str, int] = {}
    latest_regime = [r for r in records if r.name == "regime"][-1:]
    for r in latest_regime:
        if r.metadata.get("kind") == "price":
            out["regime"] = r.version
    for r in records:  # sorted by version
        if r.name == "meter" and r.metadata.get("status") != "candidate":
            out["meter"] = r.version
    return out


@app.command("list")
def list_models(
    name: Annotated[str | None, typer.Option(help="Only this model name.")] = None,
    models_dir: ModelsDirOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """List saved models, oldest version first (a damaged one is named on stderr and skipped)."""
    reg = registry(models_dir)
    skipped: list[str] = []
    try:
        records = reg.list(name, skipped=skipped)
    except RegistryError as exc:
        fail(exc)
    for problem in skipped:
        err_console.print(f"warning: skipped a damaged model: {problem}", markup=False)
    in_use = _in_use(records)
    if json_out:
        print_json([{**r.to_dict(), "in_use": in_use.get(r.name) == r.version,
                     "status": r.metadata.get("status", "default")} for r in records])
        return
    if not records:
        console.print(f"no models in {escape(str(reg.root))} - train one with "
                      "`convergence models train regime --input FILE.csv`")
        return
    table = Table(title=f"models in {escape(str(reg.root))}", title_justify="left")
    rows = [_describe(r, in_use) for r in records]
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        table.add_row(*(escape(v) for v in row.values()))
    console.print(table)
