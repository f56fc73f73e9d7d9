"""Compatibility re-export: the protocol now lives in :mod:`.common`, :mod:`.client` (the
device's half) and :mod:`.server` (the coordinator's half). ``shoal.net.client`` still
imports ``SecAggClient`` from here; new code imports from those modules or the package."""

from shoal.secagg.client import SecAggClient
from shoal.secagg.common import (
    ProtocolError,
    Stage,
    ThresholdError,
    complete_graph,
    harary_graph,
    secagg_plus_degree,
)
from shoal.secagg.server import Channel, SecAggServer

__all__ = [
    "Channel",
    "ProtocolError",
    "SecAggClient",
    "SecAggServer",
    "Stage",
    "ThresholdError",
    "complete_graph",
    "harary_graph",
    "secagg_plus_degree",
]
