"""``convergence regime FILE.csv --out labels.csv``: label a history with regimes, causally.

Every row is labelled by the online forward filter from the rows up to and including
it, exactly as the live stream would have seen it. The model is trained beforehand
(``convergence models train regime``); ``--fit`` trains on the file itself instead, in
which case the parameters have seen the whole file and the labels are no longer a
fair replay (a warning says so).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape

from convergence.cli.common import console, err_console, fail, plural, settings
from convergence.cli.models import print_states
from convergence.detectors.base import Array
from convergence.models.regime import (
    DEFAULT_NAME,
    RegimeModel,
    first_invalid,
    load_regime,
    train_regime,
)
from convergence.models.registry import ModelRegistry, RegistryError
from convergence.models.series import Series, SeriesError, read_series

#: regime colours, calm to crisis (more states use a colour map)
_COLOURS = {"calm": "#2e7d32", "normal": "#1565c0", "choppy": "#f9a825",
            "stressed": "#ef6c00", "crisis": "#c62828"}


def _parse_ref(ref: str | None) -> tuple[str, int | None]:
    """``name`` or ``name@version`` -> (name, version)."""
    if not ref:
        return DEFAULT_NAME, None
    name, _, version = ref.partition("@")
    if not version:
        return name, None
    if not version.isdigit() or int(version) < 1:
        fail(f"--model {ref!r}: the version after '@' must be a positive integer, "
             "e.g. regime@3; list versions with `convergence models list`")
    return name, int(version)


def write_labels(path: Path, series: Series, model: RegimeModel, labels: dict[str, Array]) -> None:
    """``timestamp,value,regime,p_<state>...,regime_z`` rows, timestamps as read."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "regime", *(f"p_{n}" for n in model.names), "regime_z"])
        for t, (stamp, value) in enumerate(zip(series.text, series.values, strict=True)):
            w.writerow([stamp, repr(float(value)), model.names[int(labels["regime"][t])],
                        *(f"{p:.6f}" for p in labels["probs"][t]), f"{labels['regime_z'][t]:.4f}"])


def plot_labels(path: Path, series: Series, model: RegimeModel, regimes: Array) -> None:
    """The series with its background shaded by regime (PNG, SVG or PDF by extension)."""
    # Figure + savefig needs no pyplot and no global backend switch (safe inside a server)
    from matplotlib import colormaps
    from matplotlib.dates import date2num
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    x = date2num((series.timestamps * 1e6).astype("datetime64[us]"))  # type: ignore[no-untyped-call]
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(x, series.values, color="black", linewidth=0.8)
    ax.xaxis_date()
    # runs of one regime: [starts[i], ends[i]) in row indices; a run lasts until the next
    # run starts (the last one until the last row)
    starts = np.flatnonzero(np.r_[True, regimes[1:] != regimes[:-1]])
    ends = np.r_[starts[1:], len(regimes) - 1]
    cmap = colormaps["RdYlGn_r"]
    handles = []
    for k, name in enumerate(model.names):
        colour = _COLOURS.get(name) or cmap(k / max(model.n_states - 1, 1))
        runs = [(x[a], x[b] - x[a]) for a, b in zip(starts, ends, strict=True) if regimes[a] == k]
        # one collection per regime, not one patch per run: fast on long, flippy histories
        ax.broken_barh(runs, (0, 1), facecolors=colour, alpha=0.25, linewidth=0,
                       transform=ax.get_xaxis_transform())
        handles.append(Patch(color=colour, alpha=0.4, label=name))
    ax.legend(handles=handles, loc="upper left", ncols=model.n_states, fontsize="small")
    ax.set_title(f"regimes ({model.ref or 'fitted on this file'}; filtered: each tick sees only "
                 "the past)")
    ax.set_ylabel("value")
    ax.set_xlabel("time (UTC)")
    fig.savefig(path, dpi=110)


def regime(
    file: Annotated[Path, typer.Argument(
        help="CSV with a header 'timestamp,value' (unix seconds or ISO-8601), oldest first.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Where to write timestamp,value,regime,p_<state>...,regime_z.")],
    model: Annotated[str | None, typer.Option(
        help="Saved model NAME or NAME@VERSION (default: the latest 'regime').")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Also draw the series shaded by regime to this PNG (needs matplotlib, the "
             "'plot' extra).")] = None,
    fit: Annotated[bool, typer.Option(
        "--fit", help="Train on FILE itself instead of using a saved model (not a fair replay: "
                      "the parameters see the whole file).")] = False,
    models_dir: Annotated[Path | None, typer.Option(
        "--models-dir", help="Model registry directory (default: setting models_dir).")] = None,
) -> None:
    """Label a price or count history with regimes (calm .. crisis), causally."""
    if fit and model:
        fail("use either --model (a saved model) or --fit (train on this file), not both")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401  (fail before the work, not after it)
        except ImportError:
            fail("--plot needs matplotlib, which is not installed: pip install matplotlib "
                 "(the 'plot' extra of convergence), or drop --plot")
    s = settings(models_dir=models_dir)
    try:
        series = read_series(file)
    except SeriesError as exc:
        fail(exc)
    for note in series.notes:  # rows sorted or merged: say so, never silently
        err_console.print(f"note: {file}: {note}", markup=False)
    if fit:
        err_console.print("[yellow]warning:[/] --fit trains on the whole file, so every label "
                          "was computed with parameters that saw the future; for a fair replay "
                          "train on earlier data with `convergence models train regime`")
        try:
            m = train_regime(series.values, seed=s.seed, source=str(file))
        except ValueError as exc:
            fail(f"cannot train on {file}: {exc}")
    else:
        name, version = _parse_ref(model)
        try:
            m = load_regime(ModelRegistry(s.models_path), name, version)
        except RegistryError as exc:
            hint = "" if model else " (or pass --fit to train on this file itself)"
            fail(f"{exc}{hint}")
    bad = first_invalid(series.values, m.kind)
    if bad is not None:
        need = "prices > 0" if m.kind == "price" else "counts (whole numbers >= 0)"
        value = float(series.values[bad])
        hint = ("; this looks like a price series: label it with a price model "
                "(`convergence models list` shows each model's kind)"
                if m.kind == "count" and value > 0 and value != round(value)
                else "; fix the row or use a model trained on this kind of series")
        fail(f"{file}: the row with timestamp {series.text[bad]!r} has value {value!r}, but "
             f"model {m.ref or '(fitted)'} is a {m.kind} model and expects {need}{hint}")
    labels = m.label(series.values)
    try:
        write_labels(out, series, m, labels)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    if plot is not None:
        try:
            plot_labels(plot, series, m, labels["regime"])
        except (OSError, ValueError) as exc:
            fail(f"cannot draw {plot}: {exc}")
    counts = np.bincount(labels["regime"], minlength=m.n_states)
    mix = ", ".join(f"{n} {c / len(series) * 100:.0f}%" for n, c in zip(m.names, counts, strict=True)
                    if c)
    used = m.ref or "a model fitted on it"
    console.print(f"labelled {plural(len(series), 'row')} of {escape(str(file))} with {used}: {mix}; "
                  f"last tick {m.names[int(labels['regime'][-1])]}")
    if fit:
        print_states(m)
    console.print(f"wrote {escape(str(out))}"
                  + (f" and {escape(str(plot))}" if plot is not None else ""))
