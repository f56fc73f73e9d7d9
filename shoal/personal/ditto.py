"""Ditto (Li, Hu, Beirami and Smith, ICML 2021): a personal model ``v`` per client that
minimizes ``F_k(v) + lambda/2 ||v - w||^2``, ``w`` the round's global model.

Each round the device trains two models from the same data: the shared one exactly as
FedAvg would (its update is what is sent), and ``v`` for as many steps, kept in the
client's state. The quadratic pull is taken in closed form after each gradient step
(``v <- (v + lr lambda w) / (1 + lr lambda)``, a proximal step): to first order in
``lr lambda`` it is the paper's ``v -= lr (grad F_k(v) + lambda (v - w))``, and it is
stable for every lambda, so ``lambda = inf`` gives ``v = w`` exactly (FedAvg) and
``lambda = 0`` purely local training.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from shoal.client.algorithm import Local, LocalModel, LocalRun, register
from shoal.client.state import ClientState
from shoal.config.names import PersonalizationName
from shoal.data.datasets import ClientData
from shoal.messages import EvalTask
from shoal.personal.base import PersonalMethod, own_seed, settings

KEY = "personal/ditto"  # the personal model, a flat vector like the global one


def personal_model(state: ClientState, global_params: np.ndarray) -> np.ndarray:
    """The client's ``v``; a client that never trained starts from the global model."""
    v = state.get(KEY)
    if v is None:
        return global_params
    if v.shape != global_params.shape:
        raise ValueError(
            f"this client's personal model has {v.size} values but the global one {global_params.size}: "
            "the model changed since it trained; delete its state to start afresh"
        )
    return v


class Ditto(PersonalMethod):
    name: ClassVar[str] = "ditto"
    method: ClassVar[PersonalizationName] = PersonalizationName.DITTO

    def cohort_unsupported(self) -> str | None:
        return "Ditto trains a second, personal model client by client"

    def local_loop(self) -> Ditto:
        return self

    def __call__(self, local: Local) -> tuple[float, int]:
        task, run = local.task, local.run
        lam = settings(run.trainer).ditto_lambda
        seed = own_seed(task.seed, task.round, task.client_id, "ditto")
        local.model.fit(
            personal_model(local.state, task.params),
            local.data,
            run.steps,
            seed,
            anchor=task.params,
            prox=lam,
        )
        local.state[KEY] = local.model.weights()
        # the shared model: what FedAvg's device would do, its update the one sent
        return local.model.fit(
            local.start, local.data, run.steps, task.seed, term=local.term, anchor=task.params
        )

    def personal_weights(
        self, task: EvalTask, state: ClientState, data: ClientData, run: LocalRun, model: LocalModel
    ) -> np.ndarray | None:
        if settings(run.trainer).method is not self.method:
            return None
        return personal_model(state, task.params)


register(Ditto())
