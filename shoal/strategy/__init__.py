"""Server algorithms (one file each) and the pure aggregators they compose with."""

from shoal.strategy.aggregators import Aggregator, mean, weighted_mean
from shoal.strategy.base import RoundContext, Strategy
from shoal.strategy.fedavg import FedAvg

__all__ = ["Aggregator", "FedAvg", "RoundContext", "Strategy", "mean", "weighted_mean"]
