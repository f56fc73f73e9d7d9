"""The round loop, backends and checkpoints."""

from typing import TYPE_CHECKING

from shoal._lazy import exports

_WHERE = {
    "Backend": "shoal.runtime.backend",
    "BackendName": "shoal.config.names",
    "InProcessBackend": "shoal.runtime.backend",
    "Checkpoint": "shoal.runtime.checkpoint",
    "load_checkpoint": "shoal.runtime.checkpoint",
    "save_checkpoint": "shoal.runtime.checkpoint",
    "History": "shoal.runtime.history",
    "load_history": "shoal.runtime.history",
    "RayBackend": "shoal.runtime.ray_backend",
    "Simulation": "shoal.runtime.simulation",
    "initial_params": "shoal.runtime.simulation",
    "simulate": "shoal.runtime.simulation",
    "VectorizedBackend": "shoal.runtime.vectorized",
}
__getattr__, __dir__ = exports(globals(), _WHERE)

if TYPE_CHECKING:  # what _WHERE loads, for type checkers
    from shoal.config.names import BackendName
    from shoal.runtime.backend import Backend, InProcessBackend
    from shoal.runtime.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from shoal.runtime.history import History, load_history
    from shoal.runtime.ray_backend import RayBackend
    from shoal.runtime.simulation import Simulation, initial_params, simulate
    from shoal.runtime.vectorized import VectorizedBackend

__all__ = [
    "Backend",
    "BackendName",
    "Checkpoint",
    "History",
    "InProcessBackend",
    "RayBackend",
    "Simulation",
    "VectorizedBackend",
    "initial_params",
    "load_checkpoint",
    "load_history",
    "save_checkpoint",
    "simulate",
]
