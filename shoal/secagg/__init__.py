"""Secure aggregation: Bonawitz et al. 2017 and SecAgg+ (Bell et al. 2020)."""

from shoal.secagg.protocol import (
    ProtocolError,
    SecAggClient,
    SecAggServer,
    Stage,
    ThresholdError,
    complete_graph,
    harary_graph,
    secagg_plus_degree,
)
from shoal.secagg.transform import LocalDevices, SecureAggregation

__all__ = [
    "LocalDevices",
    "ProtocolError",
    "SecAggClient",
    "SecAggServer",
    "SecureAggregation",
    "Stage",
    "ThresholdError",
    "complete_graph",
    "harary_graph",
    "secagg_plus_degree",
]
