"""The live dashboard: the convergence picture in a browser.

A room of its own because it is neither a stream processor nor a command: it serves
HTTP (aiohttp) and pushes updates to browsers (server-sent events), ships static
assets (hand-written JS and CSS, a world outline), and sits *beside* the runtimes
rather than inside them. Runtimes push typed records (:mod:`convergence.records`) into
a :class:`~convergence.dashboard.hub.Hub`; the page reads the hub. The embedded
runtime and the cluster each feed the same hub, so the page is the same for both.

* :mod:`~convergence.dashboard.hub` - the live picture, bounded, and its fan-out to
  browsers (pure asyncio: no Kafka, no HTTP);
* :mod:`~convergence.dashboard.server` - the aiohttp app: the page, the JSON API, the
  event stream, the control buttons (token-protected), a report's drill-down (the
  brief :func:`convergence.responses.render.render` writes, as ``reports show`` does);
* :mod:`~convergence.dashboard.embedded` - feeds the hub from ``convergence run``;
* :mod:`~convergence.dashboard.cluster` - feeds it from a cluster's topics and store;
* :mod:`~convergence.dashboard.geo` / :mod:`~convergence.dashboard.world_outline` -
  where regions and stations go on the map, and the shipped world outline.
"""
