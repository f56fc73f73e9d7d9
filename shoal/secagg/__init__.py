"""Secure aggregation: Bonawitz et al. 2017 (with its active-server ConsistencyCheck) and
SecAgg+ (Bell et al. 2020). Modules: ``common`` (stages, errors, graph, threshold rule),
``client`` and ``server`` (the two protocol halves), ``wire`` (messages and their schemas),
``shamir``, ``crypto``, ``encoding`` (float updates <-> ring elements), ``transform`` (the
update transform)."""

from shoal.secagg.client import SecAggClient
from shoal.secagg.common import (
    ACTIVE_BOUND,
    ProtocolError,
    Stage,
    ThresholdError,
    complete_graph,
    harary_graph,
    secagg_plus_degree,
    secure_threshold,
    threshold_for,
)
from shoal.secagg.encoding import FixedPoint, Ring, RingEncoder
from shoal.secagg.server import SecAggServer
from shoal.secagg.transform import LocalDevices, SecureAggregation

__all__ = [
    "ACTIVE_BOUND",
    "FixedPoint",
    "LocalDevices",
    "ProtocolError",
    "Ring",
    "RingEncoder",
    "SecAggClient",
    "SecAggServer",
    "SecureAggregation",
    "Stage",
    "ThresholdError",
    "complete_graph",
    "harary_graph",
    "secagg_plus_degree",
    "secure_threshold",
    "threshold_for",
]
