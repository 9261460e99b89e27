"""``convergence stations probe``: read a source once and show what a station would send.

One command function, :func:`probe`, mounted by the ``stations`` group. It parses the
options, calls :func:`convergence.ground_stations.probe.probe` and prints: every good
event as one JSON line on stdout (pipe it to ``jq``), every dead letter as a readable
line on stderr. Exit code 0 when at least one good event came out, else 1.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from convergence.cli.common import err_console, fail, print_json
from convergence.ground_stations.probe import ProbeError
from convergence.ground_stations.probe import probe as probe_source

_PAYLOAD_SHOWN = 160
#: dead letters printed in full; the rest are summarised in one line
_DEAD_SHOWN = 10


class ProbeKind(StrEnum):
    """What the target is: a feed or JSON API (URLs), or a CSV / JSON Lines / feed file."""

    rss = "rss"
    json = "json"
    csv = "csv"
    jsonl = "jsonl"


def parse_map(pairs: list[str]) -> dict[str, str]:
    """``["value=properties.mag", "category==quake"]`` -> a field mapping.

    >>> parse_map(["value=properties.mag", "category==quake"])
    {'value': 'properties.mag', 'category': '=quake'}
    """
    mapping: dict[str, str] = {}
    for pair in pairs:
        field, sep, path = pair.partition("=")
        if not sep or not field.strip() or not path.strip():
            raise typer.BadParameter(
                f"{pair!r}: write FIELD=PATH (e.g. value=properties.mag) or FIELD==CONSTANT "
                "(e.g. category==quake)", param_hint="--map")
        mapping[field.strip()] = path.strip()
    return mapping


def probe(
    target: Annotated[str, typer.Argument(
        help="An http(s) URL (RSS/Atom feed or JSON API), or a CSV / JSON Lines / RSS-Atom "
             "file.")],
    kind: Annotated[ProbeKind | None, typer.Option(
        "--kind", help="What the target is (default: from the file extension or the "
                       "Content-Type, else from the first bytes).")] = None,
    station_id: Annotated[str, typer.Option(
        "--station-id", help="Station id written into the events.")] = "probe",
    source_kind: Annotated[str, typer.Option(
        "--source-kind", help="Source kind of the station: osint_news, osint_social, "
                              "market_price, market_volume or sensor (ticks files need a "
                              "market kind).")] = "osint_news",
    map_: Annotated[list[str] | None, typer.Option(
        "--map", help="JSON only, repeatable: FIELD=PATH maps an event field to a dotted path "
                      "in each item (e.g. lat=geo.lat); FIELD==VALUE sets a constant (e.g. "
                      "category==quake). Default: items already use the event field names.")] = None,
    items_path: Annotated[str | None, typer.Option(
        "--items-path", help="JSON only: dotted path to the list of items in the answer "
                             "(e.g. data.items, features).")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=1, help="Look at no more than N items (URL) or lines (file).")] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.1, help="Seconds to wait for a URL to answer.")] = 10.0,
) -> None:
    """Fetch a URL or read a file once and print what a station would send: each good
    event as one JSON line on stdout, each dead letter with its reason on stderr."""
    mapping = parse_map(map_) if map_ else None
    try:
        events, dead = probe_source(
            target, kind.value if kind is not None else None, station_id=station_id,
            source_kind=source_kind, mapping=mapping, items_path=items_path, limit=limit,
            timeout_s=timeout)
    except ProbeError as exc:
        fail(exc)
    for event in events:
        print_json(event.to_dict())
    for dl in dead[:_DEAD_SHOWN]:
        err_console.print(f"dead letter [{dl.stage}] {dl.field or '-'}: {dl.reason}", markup=False)
        if dl.payload:
            shown = dl.payload if len(dl.payload) <= _PAYLOAD_SHOWN else dl.payload[:_PAYLOAD_SHOWN] + "..."
            err_console.print(f"    payload: {shown!r}", markup=False)
    if len(dead) > _DEAD_SHOWN:  # a file of the wrong kind: one summary, not a line per row
        fields: dict[str, int] = {}
        for dl in dead[_DEAD_SHOWN:]:
            fields[dl.field or "-"] = fields.get(dl.field or "-", 0) + 1
        by_field = ", ".join(f"{f} {n}" for f, n in sorted(fields.items(), key=lambda kv: -kv[1]))
        err_console.print(f"... and {len(dead) - _DEAD_SHOWN} more dead letters not shown "
                          f"(by field: {by_field})", markup=False)
    err_console.print(f"probe: {len(events)} good event(s), {len(dead)} dead letter(s) from {target}",
                      markup=False)
    if not events:
        hint = ("see the dead letters above; check --kind, --source-kind and, for JSON, "
                "--map and --items-path") if dead else "the source has no items to show"
        fail(f"no good events from {target}: {hint}")
