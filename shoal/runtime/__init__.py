"""The round loop, backends and checkpoints."""

from shoal.runtime.backend import Backend, BackendName, InProcessBackend
from shoal.runtime.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from shoal.runtime.history import History, load_history
from shoal.runtime.simulation import Simulation, initial_params, simulate

__all__ = [
    "Backend",
    "BackendName",
    "Checkpoint",
    "History",
    "InProcessBackend",
    "Simulation",
    "initial_params",
    "load_checkpoint",
    "load_history",
    "save_checkpoint",
    "simulate",
]
