"""Where client work runs. The round loop talks only to this interface.

A backend receives tasks and returns one outcome per task, in task order: a result or a
:class:`~shoal.messages.Failure`. It never raises for a client's fault. The in-process
backend runs clients one after another in this process, deterministically; Ray and
gRPC backends implement the same three methods.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from shoal.client.app import AppBuilder, ClientApp, run_evaluate, run_train
from shoal.data.datasets import FederatedDataset
from shoal.messages import EvalResult, EvalTask, Failure, FailureKind, TrainResult, TrainTask
from shoal.models import ModelFactory
from shoal.transforms.base import UpdateTransform


class BackendName(enum.StrEnum):
    AUTO = "auto"  # vectorized where it is supported and pays off, else inprocess
    INPROCESS = "inprocess"  # one client after another: the reference
    VECTORIZED = "vectorized"  # cohorts of clients at once (torch.func.vmap)
    RAY = "ray"  # Ray actors on this machine or a cluster (ray_address)


@runtime_checkable
class Backend(Protocol):
    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]: ...

    def evaluate(self, tasks: Sequence[EvalTask]) -> list[EvalResult | Failure]: ...

    def close(self) -> None: ...


def unknown_client(task: TrainTask | EvalTask) -> Failure:
    """What every backend answers for a task whose client is not in its dataset."""
    return Failure(task.round, task.client_id, FailureKind.ERROR, "no such client in the dataset")


class InProcessBackend:
    """Sequential, deterministic: one client app, reused for every client in turn."""

    def __init__(
        self,
        builder: AppBuilder,
        model: ModelFactory,
        data: FederatedDataset,
        transforms: Sequence[UpdateTransform] = (),
        run_seed: int = 0,
    ) -> None:
        self._app: ClientApp = builder.build(model)
        self._data = data
        self._transforms = list(transforms)
        self._run_seed = run_seed

    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]:
        return [
            run_train(self._app, t, self._data[t.client_id], self._transforms, self._run_seed)
            if t.client_id in self._data.clients
            else unknown_client(t)
            for t in tasks
        ]

    def evaluate(self, tasks: Sequence[EvalTask]) -> list[EvalResult | Failure]:
        return [
            run_evaluate(self._app, t, self._data[t.client_id])
            if t.client_id in self._data.clients
            else unknown_client(t)
            for t in tasks
        ]

    def close(self) -> None:
        pass
