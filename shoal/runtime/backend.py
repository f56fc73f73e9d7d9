"""Where client work runs. The round loop talks only to this interface.

A backend receives tasks and returns one outcome per task, in task order: a result or a
:class:`~shoal.messages.Failure`. It never raises for a client's fault. It also keeps the
clients' own state between rounds (:mod:`shoal.client.state`) where clients live, and
hands it to checkpoints through ``state_dict``. The in-process backend runs clients one
after another in this process, deterministically; Ray and gRPC backends implement the
same methods.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import Any

from shoal.client.app import AppBuilder, ClientApp, run_evaluate, run_train
from shoal.client.state import ClientStateStore
from shoal.data.datasets import FederatedDataset
from shoal.messages import EvalResult, EvalTask, Failure, FailureKind, TrainResult, TrainTask
from shoal.models import ModelFactory
from shoal.transforms.base import UpdateTransform


class Backend(abc.ABC):
    """Where client work runs. ``train`` and ``evaluate`` are required; every other
    method has a default, so the round loop calls each one directly."""

    @abc.abstractmethod
    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]:
        """One outcome per task, in task order; never raises for a client's fault."""

    @abc.abstractmethod
    def evaluate(self, tasks: Sequence[EvalTask]) -> list[EvalResult | Failure]: ...

    def available(self) -> Sequence[str] | None:
        """The clients a round may pick now (live devices), or None: every client in the data."""
        return None

    def commit(self, client_ids: Iterable[str]) -> None:
        """The round counted these clients' results: keep their new client states (and
        only theirs) from the last :meth:`train`."""

    def in_flight(self) -> dict[str, int]:
        """Tasks sent in earlier rounds whose outcome :meth:`train` has not returned yet
        (asynchronous rounds): client id -> the round of its task. {} by default."""
        return {}

    def round_metrics(self) -> dict[str, float]:
        """What the last :meth:`train` measured for the round's record (a fleet's virtual
        time, energy, participation by tier); {} by default."""
        return {}

    def close(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """The clients' committed states, for checkpoints ({} where devices keep their own)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class LocalClients(Backend):
    """A backend whose clients' states live in this process: staged by ``train``,
    kept by :meth:`commit`, saved in checkpoints."""

    def __init__(self) -> None:
        self.client_states = ClientStateStore()

    def commit(self, client_ids: Iterable[str]) -> None:
        self.client_states.commit(client_ids)

    def state_dict(self) -> dict[str, Any]:
        return {"clients": self.client_states.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.client_states.load_state_dict(state.get("clients", {}))


def unknown_client(task: TrainTask | EvalTask) -> Failure:
    """What every backend answers for a task whose client is not in its dataset."""
    return Failure(task.round, task.client_id, FailureKind.ERROR, "no such client in the dataset")


class InProcessBackend(LocalClients):
    """Sequential, deterministic: one client app, reused for every client in turn."""

    def __init__(
        self,
        builder: AppBuilder,
        model: ModelFactory,
        data: FederatedDataset,
        transforms: Sequence[UpdateTransform] = (),
        run_seed: int = 0,
    ) -> None:
        super().__init__()
        self._app: ClientApp = builder.build(model)
        self._data = data
        self._transforms = list(transforms)
        self._run_seed = run_seed

    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]:
        return [self._train_one(t) for t in tasks]

    def _train_one(self, task: TrainTask) -> TrainResult | Failure:
        if task.client_id not in self._data.clients:
            return unknown_client(task)
        state = self.client_states.get(task.client_id)
        out = run_train(self._app, task, self._data[task.client_id], self._transforms, self._run_seed, state)
        if isinstance(out, TrainResult):
            self.client_states.stage(task.client_id, state)
        return out

    def evaluate(self, tasks: Sequence[EvalTask]) -> list[EvalResult | Failure]:
        return [
            run_evaluate(self._app, t, self._data[t.client_id], self.client_states.get(t.client_id))
            if t.client_id in self._data.clients
            else unknown_client(t)
            for t in tasks
        ]
