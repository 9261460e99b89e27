"""Adaptive responses (AXON) and report synthesis (PRISM).

This gets a top-level folder of its own because it is neither detection nor
transport: it is the product's *reaction* to a meter reading — which stations to
steer, which to quarantine, when to escalate — and the written account of why.
Like ``detectors/`` it is pure: it takes readings and returns commands, alert
records and report documents; the runtimes deliver and store them. ``render`` turns a
report into the brief a person reads (text, Markdown, HTML, JSON); ``examples`` builds
a realistic report without running the pipeline.
"""
