"""Grainery silo runtime and the grain authoring API.

Authoring: ``from silo import Grain``. Running: ``grainery silo --grains MODULE``
or :class:`silo.runtime.Silo`. Test clusters: :mod:`silo.testing`.
"""

from grainery.silo.grain import Grain

__all__ = ["Grain"]
