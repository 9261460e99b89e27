"""Simulation: many scenario runs at once, through the same stages as the live system.

This is the third runtime of the design (beside embedded and cluster), so it gets a
folder of its own: it moves batches as in-memory arrays with a leading ``runs`` axis
instead of queues or Kafka topics, and it owns the *labelled* data the models train on
and the detection / false-alarm / time-to-detect figures campaigns report.
"""
