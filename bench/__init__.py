"""Grainery benchmark suite: `python -m bench.run [--quick]`.

Every benchmark is a module with the same small interface (see ``bench.common``):

- ``NAME``: short id used in tables, JSON and plots;
- ``unavailable() -> str | None``: why it cannot run here (missing extra, core not built);
- ``run(cfg: RunConfig) -> list[Measurement]``: one repetition, which starts and always stops
  every process it needs.

The harness (``bench.run``) repeats each module, takes medians, computes ratios against the
baselines measured in the same run, and writes JSON and PNG plots to ``bench/results/``.
This package imports only the standard library at import time, so ``bench.grpc_echo`` also
runs in throwaway venvs that hold nothing but grpcio (the grpcio version study).
"""
