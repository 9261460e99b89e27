"""``convergence reports ...``: read alerts' reports back from SurrealDB."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convergence.cli.common import console, fail, print_json, settings

if TYPE_CHECKING:  # the store (and its engine) load only when a command runs
    from convergence.store.surreal import SurrealStore

app = typer.Typer(help="Read synthesized convergence reports from the database.", no_args_is_help=True)

DbOption = Annotated[str | None, typer.Option(help="SurrealDB URL (default: the embedded file).")]


def _read(db: str | None, fn: Callable[[SurrealStore], Awaitable[Any]],
          missing: str | None = None) -> Any:
    """``fn(store)`` on the configured database; a store failure ends the command clearly
    (``missing`` leads the message when there is no database at all)."""
    from convergence.store.surreal import DatabaseMissing, StoreError, SurrealStore

    store = SurrealStore.from_settings(settings(db=db))

    async def go() -> Any:
        await store.open(create=False)  # reading never creates a database
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except DatabaseMissing as exc:
        fail(f"{missing}: {exc}" if missing else exc)
    except StoreError as exc:
        fail(exc)


@app.command("list")
def list_reports(
    db: DbOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, newest first.")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """List reports, newest first."""
    rows = _read(db, lambda s: s.list("report", limit=limit, order_by="time_s"))
    if json_out:
        print_json([{k: r.get(k) for k in ("report_id", "time_s", "level", "score", "title")}
                    for r in rows])
        return
    if not rows:
        console.print("no reports yet - run `convergence run` first")
        return
    for r in rows:
        console.print(f"{r['report_id']}  {r.get('level', '?'):<9}  {r.get('title', '')}")


@app.command()
def show(
    report_id: Annotated[str, typer.Argument(help="Report id, e.g. rpt-1a2b3c4d5e6f7a8b.")],
    db: DbOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="The whole report as JSON.")] = False,
) -> None:
    """Show one report in full."""
    if not report_id.strip():
        fail("the report id is empty; give one such as rpt-1a2b3c4d5e6f7a8b "
             "(`convergence reports list` shows them)", 2)
    rep = _read(db, lambda s: s.get("report", report_id), missing=f"no report {report_id!r}")
    if rep is None:
        fail(f"no report {report_id!r} in this database; list them with `convergence reports list`")
    if json_out:
        print_json(rep)
        return
    console.print(f"[bold]{rep['title']}[/]\n{rep['report_id']}  alert {rep['alert_id']}  "
                  f"method: {rep.get('method', '?')}\n")
    console.print(rep["summary"] + "\n")
    for f in rep.get("findings", []):
        console.print(f"  - {f}")
    console.print("\n[bold]stations[/]")
    for n in rep.get("nodes", []):
        ev = ", ".join(f"{k} {v:.1f}" for k, v in n["peak_evidence"].items() if v)
        console.print(f"  {n['station_id']:<28} {n['source_kind']:<14} share {n['share'] * 100:4.1f}%"
                      f"  {ev}{'  (correlated, discounted)' if n['correlated'] else ''}")
    if rep.get("actions_taken"):
        console.print("\n[bold]responses[/]")
        for a in rep["actions_taken"]:
            console.print(f"  - {a}")
