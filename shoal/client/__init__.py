"""Client side: the app protocol, the default trainer and the runner that wraps them."""

from typing import TYPE_CHECKING

from shoal._lazy import exports

_WHERE = {
    "ClientAlgorithm": "shoal.client.algorithm",
    "ClientOutput": "shoal.client.algorithm",
    "GradientTerm": "shoal.client.algorithm",
    "Local": "shoal.client.algorithm",
    "LocalModel": "shoal.client.algorithm",
    "LocalRun": "shoal.client.algorithm",
    "register_client_algorithm": "shoal.client.algorithm:register",
    "AppBuilder": "shoal.client.app",
    "ClientApp": "shoal.client.app",
    "run_evaluate": "shoal.client.app",
    "run_train": "shoal.client.app",
    "ClientState": "shoal.client.state",
    "OptimizerName": "shoal.config.names",
    "Personalization": "shoal.client.hparams",
    "TorchClient": "shoal.client.trainer",
    "TorchTrainer": "shoal.client.hparams",
    "evaluate_module": "shoal.client.trainer",
}
__getattr__, __dir__ = exports(globals(), _WHERE)

if TYPE_CHECKING:  # what _WHERE loads, for type checkers
    from shoal.client.algorithm import (
        ClientAlgorithm,
        ClientOutput,
        GradientTerm,
        Local,
        LocalModel,
        LocalRun,
    )
    from shoal.client.algorithm import register as register_client_algorithm
    from shoal.client.app import AppBuilder, ClientApp, run_evaluate, run_train
    from shoal.client.hparams import Personalization, TorchTrainer
    from shoal.client.state import ClientState
    from shoal.client.trainer import TorchClient, evaluate_module
    from shoal.config.names import OptimizerName

__all__ = [
    "AppBuilder",
    "ClientAlgorithm",
    "ClientApp",
    "ClientOutput",
    "ClientState",
    "GradientTerm",
    "Local",
    "LocalModel",
    "LocalRun",
    "OptimizerName",
    "Personalization",
    "TorchClient",
    "TorchTrainer",
    "evaluate_module",
    "register_client_algorithm",
    "run_evaluate",
    "run_train",
]
