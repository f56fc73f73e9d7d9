"""Server algorithms (one file each) and the pure aggregators they compose with."""

from shoal.strategy.aggregators import Aggregator, mean, weighted_mean
from shoal.strategy.base import RoundContext, Strategy
from shoal.strategy.fedavg import FedAvg
from shoal.strategy.fedbuff import FedBuff
from shoal.strategy.feddyn import FedDyn
from shoal.strategy.fednova import FedNova
from shoal.strategy.fedprox import FedProxClient
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
    "FedAvg",
    "FedBuff",
    "FedDyn",
    "FedNova",
    "FedProxClient",
    "RoundContext",
    "Scaffold",
    "ServerMomentum",
    "ServerOptimizer",
    "ServerSGD",
    "Strategy",
    "mean",
    "weighted_mean",
]
