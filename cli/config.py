"""``convergence config ...``: what settings are in force and where they came from."""

from __future__ import annotations

from typing import Annotated

import typer

from convergence.cli.common import console, print_json, settings

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Inspect configuration.", no_args_is_help=True)


@app.command()
def show(json_out: Annotated[bool, typer.Option("--json", help="JSON rows.")] = False) -> None:
    """Print every effective setting with its source (default, file, env)."""
    rows = settings().describe()
    if json_out:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['name']:<20} = {r['value']:<44} [dim]({r['source']}; {r['env']})[/]")
