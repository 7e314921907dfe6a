"""Test clusters for your own grains: ``from grainery.testing import TestCluster, TestStore``.

See :mod:`grainery.silo.testing`; the pytest fixtures are in :mod:`grainery.pytest_plugin`.
"""

from grainery.silo.testing import SiloProcess, TestCluster, TestStore

__all__ = ["SiloProcess", "TestCluster", "TestStore"]
