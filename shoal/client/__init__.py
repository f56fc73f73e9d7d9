"""Client side: the app protocol, the default trainer and the runner that wraps them."""

from shoal.client.algorithm import ClientAlgorithm, ClientOutput, GradientTerm, LocalRun
from shoal.client.algorithm import register as register_client_algorithm
from shoal.client.app import AppBuilder, ClientApp, run_evaluate, run_train
from shoal.client.trainer import OptimizerName, TorchClient, TorchTrainer, evaluate_module

__all__ = [
    "AppBuilder",
    "ClientAlgorithm",
    "ClientApp",
    "ClientOutput",
    "GradientTerm",
    "LocalRun",
    "OptimizerName",
    "TorchClient",
    "TorchTrainer",
    "evaluate_module",
    "register_client_algorithm",
    "run_evaluate",
    "run_train",
]
