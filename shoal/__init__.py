"""shoal: federated deep learning for PyTorch.

The short way in::

    import shoal
    from shoal.data import iid, mnist_subset
    from shoal.models import mcmahan_cnn

    data = iid(mnist_subset(), num_clients=100, seed=0)
    history = shoal.simulate(
        model=mcmahan_cnn,
        data=data,
        strategy=shoal.FedAvg(clients_per_round=10),
        trainer=shoal.TorchTrainer(lr=0.05, local_epochs=1, batch_size=32),
        rounds=20,
        seed=0,
    )
    print(history.final_accuracy)
"""

from typing import TYPE_CHECKING

from shoal._lazy import exports

_WHERE = {
    "ClientAlgorithm": "shoal.client",
    "ClientApp": "shoal.client",
    "TorchTrainer": "shoal.client",
    "register_client_algorithm": "shoal.client",
    "CheckpointError": "shoal.errors",
    "ConfigError": "shoal.errors",
    "DataError": "shoal.errors",
    "RoundAbortedError": "shoal.errors",
    "ShoalError": "shoal.errors",
    "SpecMismatchError": "shoal.errors",
    "WireFormatError": "shoal.errors",
    "EvalResult": "shoal.messages",
    "EvalTask": "shoal.messages",
    "Failure": "shoal.messages",
    "FailureKind": "shoal.messages",
    "TrainResult": "shoal.messages",
    "TrainTask": "shoal.messages",
    "ParamSpec": "shoal.params",
    "flatten": "shoal.params",
    "from_module": "shoal.params",
    "model_hash": "shoal.params",
    "to_module": "shoal.params",
    "unflatten": "shoal.params",
    "Backend": "shoal.runtime",
    "History": "shoal.runtime",
    "InProcessBackend": "shoal.runtime",
    "Simulation": "shoal.runtime",
    "simulate": "shoal.runtime",
    "FedAvg": "shoal.strategy",
    "FedDyn": "shoal.strategy",
    "FedNova": "shoal.strategy",
    "Scaffold": "shoal.strategy",
    "Strategy": "shoal.strategy",
    "weighted_mean": "shoal.strategy",
    "HalfPrecision": "shoal.transforms",
    "UpdateTransform": "shoal.transforms",
}
__getattr__, __dir__ = exports(globals(), _WHERE)

if TYPE_CHECKING:  # what _WHERE loads, for type checkers
    from shoal import privacy as privacy
    from shoal.client import ClientAlgorithm, ClientApp, TorchTrainer, register_client_algorithm
    from shoal.errors import (
        CheckpointError,
        ConfigError,
        DataError,
        RoundAbortedError,
        ShoalError,
        SpecMismatchError,
        WireFormatError,
    )
    from shoal.messages import EvalResult, EvalTask, Failure, FailureKind, TrainResult, TrainTask
    from shoal.params import ParamSpec, flatten, from_module, model_hash, to_module, unflatten
    from shoal.runtime import Backend, History, InProcessBackend, Simulation, simulate
    from shoal.strategy import FedAvg, FedDyn, FedNova, Scaffold, Strategy, weighted_mean
    from shoal.transforms import HalfPrecision, UpdateTransform

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "CheckpointError",
    "ClientAlgorithm",
    "ClientApp",
    "ConfigError",
    "DataError",
    "EvalResult",
    "EvalTask",
    "Failure",
    "FailureKind",
    "FedAvg",
    "FedDyn",
    "FedNova",
    "HalfPrecision",
    "History",
    "InProcessBackend",
    "ParamSpec",
    "RoundAbortedError",
    "Scaffold",
    "ShoalError",
    "Simulation",
    "SpecMismatchError",
    "Strategy",
    "TorchTrainer",
    "TrainResult",
    "TrainTask",
    "UpdateTransform",
    "WireFormatError",
    "__version__",
    "flatten",
    "from_module",
    "model_hash",
    "register_client_algorithm",
    "simulate",
    "to_module",
    "unflatten",
    "weighted_mean",
]
