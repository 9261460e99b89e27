"""The dashboard's web server: the page, a JSON API, a live event stream, control.

Endpoints (every ``/api`` error is JSON ``{"error": "..."}`` with a status that says
what kind of mistake it was):

=====================================  ========================================================
``GET /``                              the page (static, everything it needs ships here)
``GET /static/NAME``                   its script, styles and world outline
``GET /api/events``                    server-sent events: ``snapshot`` first, then
                                       ``reading``, ``alert``, ``report``, ``stations``,
                                       ``command`` as they happen
``GET /api/snapshot``                  the whole picture once
``GET /api/health``                    whether it runs, what feeds it, browsers connected
``GET /api/regions``                   each region's latest reading
``GET /api/regions/NAME``              one region with its score over the last hour
                                       (400: not a region name; 404: never seen)
``GET /api/alerts?limit=N``            the kept alerts, newest first (400: bad limit)
``GET /api/reports/ID?revision=N``     a report as JSON with its known revisions
                                       (400: bad id or revision; 404: unknown)
``GET /reports/ID?revision=N``         the same report as a standalone HTML page
``GET /api/stations``                  every station's row
``GET /api/stations/ID``               one station with the commands sent to it
``POST /api/stations/ID/quarantine``   send a control command (JSON body, optional:
``POST /api/stations/ID/resume``       ``{"ttl_s": 600, "reason": "..."}``); needs
                                       ``Authorization: Bearer TOKEN`` (401 without or
                                       wrong); 404 unknown station, 503 no control here,
                                       502 not sent, 504 sent but not acknowledged
=====================================  ========================================================

Bound to 127.0.0.1 by default; then it also answers only requests whose ``Host`` is
this machine (so a web page elsewhere cannot reach it through DNS rebinding). The
control token is compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from convergence.control import Action, ControlCommand, Target
from convergence.dashboard.hub import NAME_RE, CommandPort, Hub
from convergence.records import Report
from convergence.responses.render import render

__all__ = ["DashboardError", "DashboardServer", "ReportLookup", "make_app", "new_token"]

log = logging.getLogger(__name__)

#: reads a report's revisions from a store when the hub has not cached it (newest last)
ReportLookup = Callable[[str], Awaitable[list[Report]]]

STATIC: Final = Path(str(resources.files("convergence.dashboard") / "static"))
KEEPALIVE_S: Final = 15.0
MAX_BODY: Final = 4096
MAX_ALERTS_LIMIT: Final = 1000
CONTROL_ACTIONS: Final = {"quarantine": Action.QUARANTINE, "resume": Action.RESUME}

_HUB: Final = web.AppKey("hub", Hub)
_CFG: Final = web.AppKey("cfg", dict[str, Any])


class DashboardError(RuntimeError):
    """The dashboard cannot start; the message says what to do."""


def new_token() -> str:
    """A fresh control token (printed at start-up; the page's buttons send it)."""
    return secrets.token_urlsafe(18)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``127.x``, ``::1`` or ``localhost``).

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status)


class _Refused(Exception):
    """A request the dashboard refuses: ``status`` and a message a person can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@web.middleware
async def _guard(request: web.Request,
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    """Host check (when bound to loopback), JSON errors under ``/api``, no tracebacks."""
    cfg = request.app[_CFG]
    allowed: set[str] | None = cfg["allowed_hosts"]
    if allowed is not None and request.host.lower() not in allowed:
        return _error(403, f"this dashboard answers to {sorted(allowed)[0]} only (the request "
                           f"named host {request.host[:80]!r}); open it by that address")
    try:
        return await handler(request)
    except _Refused as exc:
        if request.path.startswith("/api"):
            return _error(exc.status, exc.message)
        return web.Response(text="<!doctype html><meta charset=utf-8><title>Not here</title>"
                                 f"<p>{html.escape(exc.message)}</p>", status=exc.status,
                            content_type="text/html")
    except web.HTTPException as exc:
        if not request.path.startswith("/api"):
            raise
        if exc.status == 404:
            return _error(404, f"no such endpoint: {request.method} {request.path[:120]}; "
                               "see the list in the dashboard's documentation")
        if exc.status == 405:
            return _error(405, f"{request.method} is not allowed on {request.path[:120]}")
        return _error(exc.status, exc.reason or "request refused")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug here must not become a browser-facing traceback
        log.exception("dashboard: %s %s failed", request.method, request.path)
        return _error(500, f"the dashboard failed on this request ({type(exc).__name__}); "
                           "its log has the details")


def _name(request: web.Request, key: str, what: str) -> str:
    value = request.match_info[key]
    if not NAME_RE.match(value):
        raise _Refused(400, f"{value[:80]!r} is not a {what} (letters, digits and _ . : -, "
                            "at most 64 characters)")
    return value


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def _health(request: web.Request) -> web.StreamResponse:
    hub = request.app[_HUB]
    return _json({"ok": True, "source": hub.source, "browsers": hub.subscribers,
                  "regions": len(hub.regions()), "stations": len(hub.stations()),
                  "controls": hub.controls, "rejected": hub.rejected})


async def _snapshot(request: web.Request) -> web.StreamResponse:
    return _json(request.app[_HUB].snapshot())


async def _events(request: web.Request) -> web.StreamResponse:
    hub = request.app[_HUB]
    try:
        sub = hub.subscribe()
    except RuntimeError as exc:
        return _error(503, str(exc))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        await resp.write(b"retry: 2000\n\n")
        while True:
            try:
                update = await asyncio.wait_for(sub.next_update(), KEEPALIVE_S)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if update is None:
                break
            data = update.data
            if update.kind == "snapshot":  # the page shows ages by the server's clock
                data = {**data, "server_time_s": request.app[_CFG]["clock"]()}
            await resp.write(b"event: " + update.kind.encode() + b"\ndata: "
                             + orjson.dumps(data) + b"\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        sub.close()
    return resp


async def _regions(request: web.Request) -> web.StreamResponse:
    hub = request.app[_HUB]
    rows = [hub.region(n) for n in hub.regions()]
    return _json([{k: v for k, v in r.items() if k != "series"} for r in rows if r is not None])


async def _region(request: web.Request) -> web.StreamResponse:
    name = _name(request, "region", "region name")
    row = request.app[_HUB].region(name)
    if row is None:
        known = ", ".join(request.app[_HUB].regions()[:20]) or "none yet"
        return _error(404, f"no region {name!r} has reported; known regions: {known}")
    return _json(row)


async def _alerts(request: web.Request) -> web.StreamResponse:
    raw = request.query.get("limit", "100")
    try:
        limit = int(raw)
        if not 1 <= limit <= MAX_ALERTS_LIMIT:
            raise ValueError
    except ValueError:
        return _error(400, f"limit must be a whole number from 1 to {MAX_ALERTS_LIMIT}, "
                           f"got {raw[:40]!r}")
    return _json(request.app[_HUB].alerts(limit))


async def _find_report(request: web.Request) -> tuple[Report, list[int]]:
    rid = _name(request, "report_id", "report id")
    raw = request.query.get("revision")
    revision: int | None = None
    if raw is not None:
        try:
            revision = int(raw)
            if revision < 1:
                raise ValueError
        except ValueError:
            raise _Refused(400, f"revision must be a whole number >= 1, got {raw[:40]!r}") from None
    hub = request.app[_HUB]
    revs = hub.revisions(rid)
    rep = hub.get_report(rid, revision)
    lookup: ReportLookup | None = request.app[_CFG]["reports"]
    if rep is None and lookup is not None:
        try:
            stored = await lookup(rid)
        except Exception as exc:  # the store is down: say so, do not pretend it is unknown
            log.warning("dashboard: reading report %s from the store failed: %s", rid, exc)
            raise _Refused(503, f"report {rid!r} is not cached here and the store could not "
                                f"be read ({exc}); try again when the store is back") from None
        for r in stored:
            hub.report(r)
        revs = hub.revisions(rid)
        rep = hub.get_report(rid, revision)
    if rep is None:
        if revs:
            raise _Refused(404, f"report {rid!r} has no revision {revision}; known: "
                                f"{', '.join(map(str, revs))}")
        where = " or in the store" if lookup is not None else ""
        raise _Refused(404, f"no report {rid!r} in this dashboard{where}; reports are kept "
                            "for the latest episodes only")
    return rep, revs


async def _report_json(request: web.Request) -> web.StreamResponse:
    rep, revs = await _find_report(request)
    return _json({"report": rep.to_dict(), "revisions": revs})


async def _report_page(request: web.Request) -> web.StreamResponse:
    rep, revs = await _find_report(request)
    hub = request.app[_HUB]
    known = [r for r in (hub.get_report(rep.report_id, n) for n in revs) if r is not None]
    # the very brief `convergence reports show --format html` writes
    page = render(rep, "html", revisions=known)
    return web.Response(text=page, content_type="text/html",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'none'; "
                                 "style-src 'unsafe-inline'; img-src data:"})


async def _stations(request: web.Request) -> web.StreamResponse:
    return _json(request.app[_HUB].stations())


async def _station(request: web.Request) -> web.StreamResponse:
    sid = _name(request, "station_id", "station id")
    row = request.app[_HUB].station_row(sid)
    if row is None:
        return _error(404, f"no station {sid!r} has reported to this dashboard")
    return _json(row)


def _authorized(request: web.Request) -> web.Response | None:
    token: str = request.app[_CFG]["token"]
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        return _error(401, "control needs the token printed when the dashboard started; send "
                           "it as 'Authorization: Bearer TOKEN' (the page asks for it)")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        return _error(401, "wrong control token; use the one printed when this dashboard "
                           "started (it changes at every start)")
    return None


async def _control(request: web.Request) -> web.StreamResponse:
    denied = _authorized(request)
    if denied is not None:
        return denied
    action = CONTROL_ACTIONS.get(request.match_info["action"])
    if action is None:
        return _error(404, f"no control action {request.match_info['action'][:40]!r}; "
                           "use quarantine or resume")
    sid = _name(request, "station_id", "station id")
    cfg = request.app[_CFG]
    port: CommandPort | None = cfg["commands"]
    hub = request.app[_HUB]
    if port is None:
        return _error(503, "this dashboard has no control connection; it shows the picture only")
    if hub.station_row(sid) is None:
        return _error(404, f"no station {sid!r} has reported to this dashboard")
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return _error(413, f"the request body is over {MAX_BODY} bytes")
    try:
        opts = orjson.loads(body) if body.strip() else {}
        if not isinstance(opts, dict):
            raise ValueError(f"expected a JSON object, got {type(opts).__name__}")
        unknown = set(opts) - {"ttl_s", "reason"}
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))[:80]}; "
                             "use ttl_s and reason")
        ttl = opts.get("ttl_s", cfg["ttl_s"])
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= 86_400:
            raise ValueError(f"ttl_s must be seconds from 1 to 86400, got {str(ttl)[:40]}")
        reason = opts.get("reason", f"{action.value} from the dashboard")
        if not isinstance(reason, str) or len(reason) > 200:
            raise ValueError("reason must be text of at most 200 characters")
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        return _error(400, f"bad control request: {exc}")
    cmd = ControlCommand.create(action, Target("station", sid), issued_at_s=cfg["clock"](),
                                ttl_s=float(ttl), reason=reason)
    timeout_s: float = cfg["command_timeout_s"]
    try:
        acks = await port.send(cmd, timeout_s)
    except Exception as exc:
        log.warning("dashboard: %s %s not sent: %s", action.value, sid, exc)
        return _error(502, f"{action.value} for {sid} was not sent: {exc}",
                      command=cmd.to_dict())
    hub.command(cmd, acks)
    if not acks:
        return _error(504, f"{action.value} {cmd.command_id} was sent but {sid} did not "
                           f"acknowledge it within {timeout_s:g} s; is the station running?",
                      command=cmd.to_dict())
    applied = sum(1 for a in acks if a.applied)
    return _json({"command": cmd.to_dict(), "acks": [a.to_dict() for a in acks],
                  "applied": applied, "refused": len(acks) - applied})


def make_app(hub: Hub, *, token: str, commands: CommandPort | None = None,
             reports: ReportLookup | None = None, allowed_hosts: set[str] | None = None,
             command_timeout_s: float = 5.0, ttl_s: float = 600.0,
             clock: Callable[[], float] = time.time) -> web.Application:
    """The aiohttp application over ``hub`` (see module docstring for the endpoints).

    ``allowed_hosts``: the ``Host`` values to answer (``None``: any). ``commands``:
    where the control buttons go (``None``: no control). ``reports``: where a report
    not cached in the hub is looked up. ``clock``: the time of whatever feeds the hub
    (a simulated run's clock), for command times and the page's ages.
    """
    if not token:
        raise ValueError("a control token is required")
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app[_HUB] = hub
    app[_CFG] = {"token": token, "commands": commands, "reports": reports,
                 "allowed_hosts": allowed_hosts, "command_timeout_s": command_timeout_s,
                 "ttl_s": ttl_s, "clock": clock}
    hub.controls = commands is not None
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_get("/api/health", _health)
    app.router.add_get("/api/snapshot", _snapshot)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/regions", _regions)
    app.router.add_get("/api/regions/{region}", _region)
    app.router.add_get("/api/alerts", _alerts)
    app.router.add_get("/api/reports/{report_id}", _report_json)
    app.router.add_get("/reports/{report_id}", _report_page)
    app.router.add_get("/api/stations", _stations)
    app.router.add_get("/api/stations/{station_id}", _station)
    app.router.add_post("/api/stations/{station_id}/{action}", _control)
    return app


class DashboardServer:
    """Serves :func:`make_app` on ``host:port`` until :meth:`stop`.

    Examples
    --------
    >>> async def demo():
    ...     srv = DashboardServer(Hub(), port=0, token="t")
    ...     await srv.start()
    ...     try:
    ...         return srv.url.startswith("http://127.0.0.1:"), srv.port > 0
    ...     finally:
    ...         await srv.stop()
    >>> asyncio.run(demo())
    (True, True)
    """

    def __init__(self, hub: Hub, *, host: str = "127.0.0.1", port: int = 8765,
                 token: str | None = None, commands: CommandPort | None = None,
                 reports: ReportLookup | None = None, command_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        self.hub = hub
        self.host = host
        self.port = port
        self.token = token or new_token()
        self.commands = commands
        self.reports = reports
        self.command_timeout_s = command_timeout_s
        self.clock = clock
        self._runner: web.AppRunner | None = None

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the page."""
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        """Listen; :class:`DashboardError` when the address cannot be used."""
        allowed = None
        if self.loopback:
            own = f"[{self.host}]" if ":" in self.host else self.host
            allowed = {"127.0.0.1", "localhost", "[::1]", own.lower()}
        app = make_app(self.hub, token=self.token, commands=self.commands, reports=self.reports,
                       allowed_hosts=allowed, command_timeout_s=self.command_timeout_s,
                       clock=self.clock)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise DashboardError(
                f"cannot serve the dashboard on {self.host}:{self.port} "
                f"({exc.strerror or exc}); is another dashboard running there? pick another "
                "port") from None
        self._runner = runner
        server = site._server
        socks = getattr(server, "sockets", None) or []
        if socks:
            self.port = int(socks[0].getsockname()[1])
        if allowed is not None:  # the Host header carries the port
            app[_CFG]["allowed_hosts"] = {f"{h}:{self.port}" for h in allowed}

    async def stop(self) -> None:
        """End every browser's stream, then stop listening."""
        self.hub.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
