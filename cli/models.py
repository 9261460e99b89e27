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

from convergence.cli.common import console, err_console, fail, print_json, settings
from convergence.models.regime import RegimeModel, save_regime, train_regime
from convergence.models.registry import ModelRegistry, RegistryError, check_name
from convergence.models.series import SeriesError, read_series

app = typer.Typer(help="Train models and list the model registry.", no_args_is_help=True)
train_app = typer.Typer(help="Train a model from a file and save it to the registry.",
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
    console.print(f"fitted {states} states on {model.metadata['n_samples']:,} ticks of "
                  f"{escape(str(input_path))}: best of {restarts} restarts took {metrics['iterations']} EM "
                  f"iterations{'' if metrics['converged'] else ' (not converged: raise --iterations)'}"
                  f", log-likelihood {metrics['log_likelihood']:,.1f}")
    print_states(model)
    console.print(f"saved [bold]{rec.ref}[/] to {escape(str(rec.path))}")
    console.print(f"label a history with: convergence regime FILE.csv --out labels.csv "
                  f"--model {rec.ref}")


@app.command("list")
def list_models(
    name: Annotated[str | None, typer.Option(help="Only this model name.")] = None,
    models_dir: ModelsDirOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """List saved models, oldest version first."""
    reg = registry(models_dir)
    try:
        records = reg.list(name)
    except RegistryError as exc:
        fail(exc)
    if json_out:
        print_json([r.to_dict() for r in records])
        return
    if not records:
        console.print(f"no models in {escape(str(reg.root))} - train one with "
                      "`convergence models train regime --input FILE.csv`")
        return
    table = Table(title=f"models in {escape(str(reg.root))}", title_justify="left")
    for col in ("model", "created", "type", "source", "samples", "log-lik/sample"):
        table.add_column(col)
    for r in records:
        m = r.metadata
        ll = m.get("metrics", {}).get("log_likelihood_per_sample")
        table.add_row(r.ref, r.created[:16].replace("T", " "), str(m.get("model", r.format)),
                      escape(str(m.get("source", ""))),
                      f"{m['n_samples']:,}" if isinstance(m.get("n_samples"), int) else "",
                      f"{ll:.3f}" if isinstance(ll, float) else "")
    console.print(table)
