"""Local fine-tuning, the baseline every personalization method must beat (e.g. Wang et
al. 2019, "Federated Evaluation of On-device Personalization"): training is FedAvg's; at
evaluation each client trains the global model on its own training data for
``finetune_epochs`` with the trainer's settings and is scored on the result."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from shoal.client.algorithm import LocalModel, LocalRun, register
from shoal.client.state import ClientState
from shoal.config.names import PersonalizationName
from shoal.data.datasets import ClientData
from shoal.messages import EvalTask, TrainTask
from shoal.personal.base import PersonalMethod, own_seed, settings


class FineTune(PersonalMethod):
    name: ClassVar[str] = "finetune"
    method: ClassVar[PersonalizationName] = PersonalizationName.FINETUNE

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        return False  # training is FedAvg's own

    def personal_weights(
        self, task: EvalTask, state: ClientState, data: ClientData, run: LocalRun, model: LocalModel
    ) -> np.ndarray | None:
        hp = settings(run.trainer)
        if hp.method is not self.method or len(data.train) == 0:
            return None
        steps = hp.finetune_epochs * math.ceil(len(data.train) / run.batch_size)
        model.fit(task.params, data.train, steps, own_seed(0, task.round, task.client_id, "finetune"))
        return model.weights()


register(FineTune())
