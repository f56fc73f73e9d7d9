"""Client side: the app protocol, the default trainer and the runner that wraps them."""

from shoal.client.app import AppBuilder, ClientApp, run_evaluate, run_train
from shoal.client.trainer import OptimizerName, TorchClient, TorchTrainer, evaluate_module

__all__ = [
    "AppBuilder",
    "ClientApp",
    "OptimizerName",
    "TorchClient",
    "TorchTrainer",
    "evaluate_module",
    "run_evaluate",
    "run_train",
]
