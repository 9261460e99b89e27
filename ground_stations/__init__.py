"""Ground stations: feed agents that watch sources and push events.

A *source* (:mod:`~convergence.ground_stations.base`) turns what it sees into raw
event records; a *station agent* (:mod:`~convergence.ground_stations.agent`) polls
one source on its sampling interval, applies control commands, and hands batches to
a sink — the in-process bus (embedded) or a kafka-python producer (cluster).
Synthetic scenario feeds (:mod:`~convergence.ground_stations.scenario`,
:mod:`~convergence.ground_stations.synthetic`) are shared with the simulator.
"""
