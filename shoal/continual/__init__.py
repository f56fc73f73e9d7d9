"""Continual learning under drift: client data that changes over rounds
(``shoal/data/drift.py``) and what devices do against forgetting.

- :mod:`shoal.continual.config`: :class:`ContinualConfig`, the ``[continual]`` settings
  (no torch on import).
- :mod:`shoal.continual.replay`: experience replay, a bounded reservoir of past examples
  kept in the client's state (the ``replay`` client algorithm).
- :mod:`shoal.continual.ewc`: elastic weight consolidation (the ``ewc`` client algorithm).

Importing :mod:`~shoal.continual.replay` or :mod:`~shoal.continual.ewc` registers its
client algorithm.
"""

from shoal.continual.config import ContinualConfig, DriftKind

__all__ = ["ContinualConfig", "DriftKind"]
