"""The round loop, backends and checkpoints."""

from shoal.runtime.backend import Backend, BackendName, InProcessBackend
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
