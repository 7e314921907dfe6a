"""What an operator sees of the cluster: the web dashboard (``--dashboard-port``) and
``grainery top``.

Every silo samples its own metrics (``sampler``) and counts its grains' calls (``activity``);
``Management.SiloReport`` hands both out (``report``). Whoever shows the cluster (the
dashboard of any silo, or ``grainery top`` from a terminal) asks every live member for its
report and merges them (``overview``), so no silo is special and nothing is stored.
"""
