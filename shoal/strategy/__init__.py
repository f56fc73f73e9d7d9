"""Server algorithms (one file each) and the pure aggregators they compose with."""

from shoal.strategy.aggregators import Aggregator, mean, weighted_mean
from shoal.strategy.base import RoundContext, Strategy
from shoal.strategy.fedavg import FedAvg
from shoal.strategy.fedbuff import FedBuff
from shoal.strategy.feddyn import FedDyn
from shoal.strategy.fednova import FedNova
from shoal.strategy.fedprox import FedProxClient
from shoal.strategy.preagg import Bucketing, Clip, NearestNeighborMixing, RobustPipeline
from shoal.strategy.robust import (
    Bulyan,
    CenteredClipping,
    GeometricMedian,
    Krum,
    Median,
    MinimumDiameterAveraging,
    MultiKrum,
    RobustAggregator,
    TrimmedMean,
)
from shoal.strategy.scaffold import Scaffold
from shoal.strategy.server_opt import (
    Adaptive,
    AdaptiveRule,
    ServerMomentum,
    ServerOptimizer,
    ServerSGD,
)

__all__ = [
    "Adaptive",
    "AdaptiveRule",
    "Aggregator",
    "Bucketing",
    "Bulyan",
    "CenteredClipping",
    "Clip",
    "FedAvg",
    "FedBuff",
    "FedDyn",
    "FedNova",
    "FedProxClient",
    "GeometricMedian",
    "Krum",
    "Median",
    "MinimumDiameterAveraging",
    "MultiKrum",
    "NearestNeighborMixing",
    "RobustAggregator",
    "RobustPipeline",
    "RoundContext",
    "Scaffold",
    "ServerMomentum",
    "ServerOptimizer",
    "ServerSGD",
    "Strategy",
    "TrimmedMean",
    "mean",
    "weighted_mean",
]
