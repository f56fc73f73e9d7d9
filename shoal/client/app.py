"""What a device runs, and how a runtime calls it.

A :class:`ClientApp` turns a task and local data into a result. The same app runs in
simulation, on a Ray worker and on a real device: :func:`run_train` wraps it with the
client half of the update transforms and turns any exception into a :class:`Failure`,
so one broken client can never stall a round.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from shoal.client.state import ClientState
from shoal.data.datasets import ClientData
from shoal.messages import EvalResult, EvalTask, Failure, FailureKind, TrainResult, TrainTask
from shoal.models import ModelFactory
from shoal.transforms.base import TransformContext, UpdateTransform, apply_client
from shoal.transforms.downlink import received


@runtime_checkable
class ClientApp(Protocol):
    """A device's training and evaluation code."""

    def train(self, task: TrainTask, data: ClientData, state: ClientState) -> TrainResult:
        """Train from ``task.params``; put the new-minus-global weights in ``payload["delta"]``.

        ``state`` is what this client kept from earlier rounds ({} at first); change it in
        place to keep something for the next (see :mod:`shoal.client.state`)."""
        ...

    def evaluate(self, task: EvalTask, data: ClientData, state: ClientState) -> EvalResult:
        """Evaluate ``task.params`` on the client's held-out data.

        ``state`` is a copy of what this client kept from training (a personal model to
        score beside the global one); nothing the app changes in it is kept."""
        ...


class AppBuilder(Protocol):
    """Builds a :class:`ClientApp` where it will run (once per process or worker)."""

    def build(self, model: ModelFactory) -> ClientApp: ...


def _failure(task: TrainTask | EvalTask, exc: BaseException) -> Failure:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" at {where[0].filename}:{where[0].lineno}" if where else ""
    return Failure(task.round, task.client_id, FailureKind.ERROR, f"{type(exc).__name__}: {exc}{at}")


def run_train(
    app: ClientApp,
    task: TrainTask,
    data: ClientData,
    transforms: Sequence[UpdateTransform] = (),
    run_seed: int = 0,
    state: ClientState | None = None,
) -> TrainResult | Failure:
    """Train, then apply the client side of each transform in order.

    ``state`` is a working copy of the client's state that the app may change; the caller
    keeps it only if a result comes back."""
    state = {} if state is None else state
    try:
        task = received(task)  # a compressed model is decoded on the device
        result = app.train(task, data, state)
    except Exception as exc:  # a client's bug is the client's failure, not the server's
        return _failure(task, exc)
    return finish_train(task, result, transforms, run_seed, state)


def finish_train(
    task: TrainTask,
    result: TrainResult,
    transforms: Sequence[UpdateTransform] = (),
    run_seed: int = 0,
    state: ClientState | None = None,
) -> TrainResult | Failure:
    """The client halves of the transforms, on a result however it was trained; they may
    keep something in ``state`` (error feedback's residual)."""
    try:
        ctx = TransformContext(
            round=task.round, run_seed=run_seed, num_params=task.params.shape[0], state=state
        )
        return apply_client(transforms, result, ctx)
    except Exception as exc:
        return _failure(task, exc)


def run_evaluate(
    app: ClientApp, task: EvalTask, data: ClientData, state: ClientState | None = None
) -> EvalResult | Failure:
    try:
        return app.evaluate(task, data, {} if state is None else state)
    except Exception as exc:
        return _failure(task, exc)
