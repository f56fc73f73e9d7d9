"""FedProx's client half (Li et al. 2020, eq. 2): local objective + mu/2 ||w - w_global||^2.

The server half is FedAvg with ``proximal_mu`` in every task's config
(``FedAvg(client_config={"proximal_mu": mu})``, or ``strategy.name = "fedprox"``); on the
device the term's gradient, ``mu (w - w_global)``, joins every local step, in the
one-by-one trainer and in vectorized cohorts alike.
"""

from __future__ import annotations

from shoal.client.algorithm import ClientAlgorithm, GradientTerm, LocalRun, register
from shoal.client.state import ClientState
from shoal.messages import TrainTask

PROXIMAL_MU = "proximal_mu"  # in TrainTask.config


def proximal_mu(task: TrainTask) -> float:
    value = task.config.get(PROXIMAL_MU, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{PROXIMAL_MU} must be a number >= 0, got {value!r}")
    return float(value)


class FedProxClient(ClientAlgorithm):
    name = "fedprox"

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        return proximal_mu(task) > 0

    def gradient_term(self, task: TrainTask, state: ClientState, run: LocalRun) -> GradientTerm:
        return GradientTerm(coef=proximal_mu(task))


register(FedProxClient())
