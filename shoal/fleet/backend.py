"""Simulated clients on a fleet of devices, on a virtual clock.

:class:`FleetBackend` wraps the backend that trains (in process, vectorized, Ray) and
decides what the fleet makes of each round, with the barrier policy of synchronous
FedAvg (Bonawitz et al. 2019): the round starts when enough devices are eligible; each
picked device downloads the task, trains and uploads, taking the virtual time its
profile and the exact bytes give; a device whose eligible stretch ends first (it is
unplugged, busy, off Wi-Fi) is lost at that moment; a result after the deadline is too
late; with over-selection the round commits on the first results it needs and tells the
rest they were not needed. The round ends when the last result it waits for arrives, and
the clock stands there. Devices lost before their upload starts are not trained at all,
so a lost device costs no real time either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoal.client.hparams import TorchTrainer
from shoal.fleet.devices import DAY_S, Fleet
from shoal.messages import EvalResult, EvalTask, Failure, FailureKind, TrainResult, TrainTask, encoded_size
from shoal.runtime.backend import Backend

WAIT_HORIZON_S = DAY_S  # how long a round may wait for enough devices to become eligible


@dataclass(frozen=True)
class RoundPolicy:
    """When a synchronous round commits: ``deadline_s`` of virtual time after it starts
    (None: when every picked device has answered or left), and on the first
    ``commit_fraction`` of its tasks' results (over-selection picks more than it needs)."""

    deadline_s: float | None = None
    commit_fraction: float = 1.0


def examples_processed(trainer: TorchTrainer, task: TrainTask, num_examples: int) -> int:
    """How many examples a task's local training passes through (its overrides applied)."""
    steps = task.config.get("local_steps", trainer.local_steps)
    if steps:
        return int(steps) * trainer.batch_size
    return int(task.config.get("local_epochs", trainer.local_epochs)) * num_examples


class FleetBackend(Backend):
    def __init__(
        self,
        inner: Backend,
        fleet: Fleet,
        sizes: Mapping[str, int],
        train_flops_per_example: float,
        trainer: TorchTrainer,
        policy: RoundPolicy = RoundPolicy(),
        min_available: int = 1,
    ) -> None:
        self.inner, self.fleet, self.sizes = inner, fleet, dict(sizes)
        self.flops, self.trainer, self.policy = train_flops_per_example, trainer, policy
        self.min_available = min_available
        self.now = 0.0  # virtual seconds since the run began (local midnight at UTC+0)
        self.tasks_today: dict[str, tuple[int, int]] = {}  # device -> (its local day, tasks begun)
        self._metrics: dict[str, float] = {}

    # -- who may be picked -----------------------------------------------------------------
    def _eligible_now(self) -> list[str]:
        mask = self.fleet.eligible(self.now)
        cap = self.fleet.spec.availability.max_tasks_per_day
        ids = [self.fleet.ids[i] for i in np.flatnonzero(mask)]
        return [c for c in ids if self._tasks_on(c) < cap]

    def _tasks_on(self, client_id: str) -> int:
        day, count = self.tasks_today.get(client_id, (None, 0))
        return count if day == self.fleet.local_day(client_id, self.now) else 0

    def available(self) -> list[str]:
        """The devices eligible now. If fewer than a round picks, the clock moves on a
        stretch at a time (the server waits for the night, when phones charge on Wi-Fi);
        after a day without enough, the round starts at the day's best moment."""
        start = self.now
        ids = self._eligible_now()
        best_ids, best_at = ids, self.now
        while len(ids) < self.min_available and self.now - start < WAIT_HORIZON_S:
            self.now += self.fleet.stretch_s
            ids = self._eligible_now()
            if len(ids) > len(best_ids):  # the earliest moment with the most devices
                best_ids, best_at = ids, self.now
        if len(ids) < self.min_available:  # only looked ahead: nothing happened in between
            ids, self.now = best_ids, best_at
        return ids

    # -- a round ---------------------------------------------------------------------------
    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]:
        start = self.now
        outcomes: list[TrainResult | Failure | None] = [None] * len(tasks)
        told: dict[int, float] = {}  # when the server learns each outcome
        leaves: dict[int, float] = {}
        to_train: list[int] = []
        energy = 0.0
        for n, task in enumerate(tasks):
            cid = task.client_id
            p = self.fleet.profile(cid)
            self.tasks_today[cid] = (self.fleet.local_day(cid, start), self._tasks_on(cid) + 1)
            flops = self.flops * examples_processed(self.trainer, task, self.sizes.get(cid, 0))
            leaves[n] = self.fleet.online_until(cid, start)
            began = start + p.transfer_s(encoded_size(task), up=False)
            trained = began + p.compute_s(flops)
            energy += p.train_watts * max(min(trained, leaves[n]) - began, 0.0) / 3600.0
            if trained > leaves[n]:  # gone before its upload could start: no need to train it
                outcomes[n], told[n] = _left(task, leaves[n] - start), leaves[n]
            else:
                told[n] = trained
                to_train.append(n)
        for n, out in zip(to_train, self.inner.train([tasks[n] for n in to_train]), strict=True):
            outcomes[n] = out
            if isinstance(out, TrainResult):
                told[n] += self.fleet.profile(out.client_id).transfer_s(encoded_size(out), up=True)
                if told[n] > leaves[n]:
                    outcomes[n], told[n] = _left(tasks[n], leaves[n] - start), leaves[n]
        deadline = start + self.policy.deadline_s if self.policy.deadline_s is not None else math.inf
        wanted = math.ceil(self.policy.commit_fraction * len(tasks))
        arrived = sorted((told[n], n) for n, o in enumerate(outcomes) if isinstance(o, TrainResult))
        on_time = [n for at, n in arrived if at <= deadline]
        late = not_needed = 0
        for n in [n for _, n in arrived if n not in on_time[:wanted]]:
            task = tasks[n]
            if told[n] > deadline:
                late += 1
                why = f"late: {told[n] - start:.0f} s into a round with a {deadline - start:g} s deadline"
            else:
                not_needed += 1
                why = "not needed: enough devices answered first (over-selection)"
            outcomes[n] = Failure(task.round, task.client_id, FailureKind.TIMEOUT, why)
        if wanted and len(on_time) >= wanted:  # commits on the wanted-th answer
            self.now = told[on_time[wanted - 1]]
        else:  # waits for every picked device to answer or leave, or for the deadline
            self.now = min(deadline, max(told.values(), default=start))
        done = [o.client_id for o in outcomes if isinstance(o, TrainResult)]
        self._metrics = {
            "virtual_hours": self.now / 3600.0,
            "round_virtual_s": self.now - start,
            "fleet_dropped": float(sum(_dropped(o) for o in outcomes)),
            "fleet_late": float(late),
            "fleet_not_needed": float(not_needed),
            "energy_wh": energy,
            **{f"tier_{t.name}_completed": 0.0 for t in self.fleet.spec.tiers},
        }
        for cid in done:
            self._metrics[f"tier_{self.fleet.profile(cid).tier}_completed"] += 1.0
        assert all(o is not None for o in outcomes)
        return [o for o in outcomes if o is not None]

    def round_metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    # -- the rest is the inner backend's ---------------------------------------------------
    def evaluate(self, tasks: Sequence[EvalTask]) -> list[EvalResult | Failure]:
        return self.inner.evaluate(tasks)

    def commit(self, client_ids: Iterable[str]) -> None:
        self.inner.commit(client_ids)

    def close(self) -> None:
        self.inner.close()

    def state_dict(self) -> dict[str, Any]:
        state = dict(self.inner.state_dict())
        state["fleet"] = {"now": self.now, "tasks_today": {c: list(v) for c, v in self.tasks_today.items()}}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        own = state.pop("fleet", {})
        self.now = float(own.get("now", 0.0))
        self.tasks_today = {c: (int(v[0]), int(v[1])) for c, v in own.get("tasks_today", {}).items()}
        self.inner.load_state_dict(state)


def _dropped(outcome: TrainResult | Failure | None) -> bool:
    return isinstance(outcome, Failure) and outcome.kind is FailureKind.DROPPED


def _left(task: TrainTask, after_s: float) -> Failure:
    why = f"the device left (unplugged, busy or off Wi-Fi) {after_s:.0f} s into the round"
    return Failure(task.round, task.client_id, FailureKind.DROPPED, why)
