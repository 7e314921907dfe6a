"""Durable agents: ``@durable`` methods whose steps, waits and sleeps are recorded in the
grain's journal (silo/journal/) and replayed after a failure. One module per job: retry.py
(RetryPolicy), errors.py, decorator.py (``@durable``), gate.py (the run's turns), run.py (one
run: recording and replay), runtime.py (a grain's runs: start, resume, signals, cancel),
control.py (the hooks and RPCs that reach it from outside), cli.py."""
