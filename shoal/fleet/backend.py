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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoal.client.hparams import TorchTrainer
from shoal.fleet.devices import DAY_S, Fleet
from shoal.messages import (
    EvalResult,
    EvalTask,
    Failure,
    FailureKind,
    TrainResult,
    TrainTask,
    decode,
    encode,
    encoded_size,
)
from shoal.runtime.backend import Backend

WAIT_HORIZON_S = DAY_S  # how long a round may wait for enough devices to become eligible


@dataclass(frozen=True)
class RoundPolicy:
    """When the server aggregates. ``buffer_size`` None: the barrier of synchronous FedAvg,
    which commits on the first ``commit_fraction`` of a round's tasks (over-selection picks
    more than it needs) or once every device has answered or left. ``buffer_size`` K:
    FedBuff, which aggregates every K results, whenever they were sent. Either way a
    result later than ``deadline_s`` after its task was sent is dropped."""

    deadline_s: float | None = None
    commit_fraction: float = 1.0
    buffer_size: int | None = None


@dataclass
class _Pending:
    """A task's outcome, already known, and when it reaches the server (virtual time)."""

    outcome: TrainResult | Failure
    sent: float
    told: float


def examples_processed(trainer: TorchTrainer, task: TrainTask, num_examples: int) -> int:
    """How many examples a task's local training passes through (its overrides applied)."""
    steps = task.config.get("local_steps", trainer.local_steps)
    if steps:
        return int(steps) * trainer.batch_size
    return int(task.config.get("local_epochs", trainer.local_epochs)) * num_examples


class Picked(Sequence[str]):
    """Some of a population's ids, by index, without making a string for each."""

    def __init__(self, ids: Sequence[str], where: np.ndarray) -> None:
        self.ids, self.where = ids, where

    def __len__(self) -> int:
        return len(self.where)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self.ids[int(self.where[i])]

    def __iter__(self) -> Iterator[str]:
        return (self.ids[int(k)] for k in self.where)


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
        self.inner, self.fleet, self.sizes = inner, fleet, sizes
        self.flops, self.trainer, self.policy = train_flops_per_example, trainer, policy
        self.min_available = min_available
        self.now = 0.0  # virtual seconds since the run began (local midnight at UTC+0)
        self.tasks_today: dict[str, tuple[int, int]] = {}  # device -> (its local day, tasks begun)
        self.pending: list[_Pending] = []  # FedBuff: sent, not yet arrived
        self._round_count = 0
        self._eligible_cache: tuple[tuple[float, int], Picked] | None = None
        self._metrics: dict[str, float] = {}
        self._energy, self._late, self._not_needed, self._battery = 0.0, 0, 0, 0.0

    # -- who may be picked -----------------------------------------------------------------
    def _eligible_now(self) -> Picked:
        """Eligible, under the daily cap and not busy: numpy over the population, then
        Python only over the devices that trained lately or are in flight."""
        key = (self.now, self._round_count)  # asked twice a round (stop checks, then the draw)
        if self._eligible_cache is not None and self._eligible_cache[0] == key:
            return self._eligible_cache[1]
        mask = self.fleet.eligible(self.now)
        cap = self.fleet.spec.availability.max_tasks_per_day
        spent = [c for c in self.tasks_today if self._tasks_on(c) >= cap]
        busy = [e.outcome.client_id for e in self.pending]
        for c in [*spent, *busy]:
            mask[self.fleet.index(c)] = False
        picked = Picked(self.fleet.ids, np.flatnonzero(mask))
        self._eligible_cache = (key, picked)
        return picked

    def _tasks_on(self, client_id: str) -> int:
        day, count = self.tasks_today.get(client_id, (None, 0))
        return count if day == self.fleet.local_day(client_id, self.now) else 0

    def available(self) -> Sequence[str]:
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
    def _launch(self, tasks: Sequence[TrainTask]) -> list[_Pending]:
        """Send ``tasks`` now: each device downloads, trains, uploads or leaves first. The
        outcome is computed at once (a device's result depends only on its task); when the
        server learns it is the virtual time it takes."""
        start = self.now
        pending: list[_Pending | None] = [None] * len(tasks)
        to_train: list[tuple[int, float, float, str]] = []  # (n, trained at, leaves at, why it would)
        for n, task in enumerate(tasks):
            cid = task.client_id
            p = self.fleet.profile(cid)
            self.tasks_today[cid] = (self.fleet.local_day(cid, start), self._tasks_on(cid) + 1)
            flops = self.flops * examples_processed(self.trainer, task, self.sizes.get(cid, 0))
            leaves = self.fleet.online_until(cid, start)
            began = start + p.transfer_s(encoded_size(task), up=False)
            trained = began + p.compute_s(flops)
            why = LEFT
            level = self.fleet.off_charger_battery(cid, start)
            if level is not None and p.battery_wh > 0 and p.train_watts > 0:  # training drains it
                floor = self.fleet.spec.availability.battery_floor
                flat = began + max(level - floor, 0.0) * p.battery_wh * 3600.0 / p.train_watts
                if flat < min(trained, leaves):
                    leaves, why = flat, FLAT
            wh = p.train_watts * max(min(trained, leaves) - began, 0.0) / 3600.0
            self._energy += wh
            if p.battery_wh > 0:  # the hungriest task's share of its device's battery
                self._battery = max(self._battery, wh / p.battery_wh)
            if trained > leaves:  # gone before its upload could start: no need to train it
                pending[n] = _Pending(_left(task, leaves - start, why), start, leaves)
            else:
                to_train.append((n, trained, leaves, why))
        outs = self.inner.train([tasks[n] for n, _, _, _ in to_train])
        for (n, trained, leaves, why), out in zip(to_train, outs, strict=True):
            told = trained
            if isinstance(out, TrainResult):
                told += self.fleet.profile(out.client_id).transfer_s(encoded_size(out), up=True)
                if told > leaves:
                    out, told = _left(tasks[n], leaves - start, why), leaves
            pending[n] = _Pending(out, start, told)
        for entry in pending:
            assert entry is not None
            self._apply_deadline(entry)
        return [e for e in pending if e is not None]

    def _apply_deadline(self, entry: _Pending) -> None:
        """The server stops waiting ``deadline_s`` after a task was sent: a later result is
        dropped as late, and a device that left after that is given up at the deadline."""
        limit = self.policy.deadline_s
        if limit is None or entry.told - entry.sent <= limit:
            return
        o = entry.outcome
        if isinstance(o, TrainResult):
            why = f"late: {entry.told - entry.sent:.0f} s after it was sent, the deadline is {limit:g} s"
            entry.outcome = Failure(o.round, o.client_id, FailureKind.TIMEOUT, why)
            self._late += 1
        entry.told = entry.sent + limit

    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]:
        start = self.now
        self._energy, self._late, self._not_needed, self._battery = 0.0, 0, 0, 0.0
        self._round_count += 1  # tasks and arrivals change who is eligible
        if self.policy.buffer_size is None:
            outcomes = self._barrier(self._launch(tasks))
        else:
            outcomes = self._buffer(self._launch(tasks))
        self._metrics = {
            "virtual_hours": self.now / 3600.0,
            "round_virtual_s": self.now - start,
            "fleet_dropped": float(sum(_dropped(o) for o in outcomes)),
            "fleet_late": float(self._late),
            "fleet_not_needed": float(self._not_needed),
            "energy_wh": self._energy,
            "battery_pct_max": 100.0 * self._battery,
            **{f"tier_{name}_completed": 0.0 for name in self.fleet.tier_names},
        }
        if self.policy.buffer_size is not None:
            self._metrics["in_flight"] = float(len(self.pending))
        for name in self.fleet.tier_names:
            self._metrics[f"tier_{name}_lost"] = 0.0
        for o in outcomes:  # who got to contribute, and whose work was lost
            tier = self.fleet.profile(o.client_id).tier
            self._metrics[f"tier_{tier}_{'completed' if isinstance(o, TrainResult) else 'lost'}"] += 1.0
        return outcomes

    def _barrier(self, launched: list[_Pending]) -> list[TrainResult | Failure]:
        """Synchronous FedAvg: every task's outcome this round; commit on the first share
        the round wants, or wait for every device to answer or leave (or the deadline)."""
        wanted = math.ceil(self.policy.commit_fraction * len(launched))
        arrived = sorted((e.told, n) for n, e in enumerate(launched) if isinstance(e.outcome, TrainResult))
        for _, n in arrived[wanted:]:
            o = launched[n].outcome
            why = "not needed: enough devices answered first (over-selection)"
            launched[n].outcome = Failure(o.round, o.client_id, FailureKind.TIMEOUT, why)
            self._not_needed += 1
        if wanted and len(arrived) >= wanted:  # commits on the wanted-th answer
            self.now = arrived[wanted - 1][0]
        else:  # waited for every picked device to answer, leave or miss the deadline
            self.now = max((e.told for e in launched), default=self.now)
        return [e.outcome for e in launched]

    def _buffer(self, launched: list[_Pending]) -> list[TrainResult | Failure]:
        """FedBuff (Nguyen et al. 2022): outcomes in the order they reach the server, until
        ``buffer_size`` results are in; the rest stay in flight into later rounds."""
        self.pending.extend(launched)
        self.pending.sort(key=lambda e: e.told)  # stable: ties keep the order tasks were sent
        out: list[TrainResult | Failure] = []
        results = 0
        while self.pending and results < (self.policy.buffer_size or 0):
            entry = self.pending.pop(0)
            self.now = max(self.now, entry.told)
            out.append(entry.outcome)
            results += isinstance(entry.outcome, TrainResult)
        return out

    def in_flight(self) -> dict[str, int]:
        return {e.outcome.client_id: e.outcome.round for e in self.pending}

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
        state["fleet"] = {
            "now": self.now,
            "tasks_today": {c: list(v) for c, v in self.tasks_today.items()},
            # in flight: each outcome in shoal's wire format, with its times
            "pending": [np.frombuffer(encode(e.outcome), dtype=np.uint8) for e in self.pending],
            "pending_times": [[e.sent, e.told] for e in self.pending],
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        own = state.pop("fleet", {})
        self.now = float(own.get("now", 0.0))
        self.tasks_today = {c: (int(v[0]), int(v[1])) for c, v in own.get("tasks_today", {}).items()}
        self.pending = []
        for raw, (sent, told) in zip(own.get("pending", []), own.get("pending_times", []), strict=True):
            outcome = decode(np.asarray(raw, dtype=np.uint8).tobytes())
            assert isinstance(outcome, TrainResult | Failure)
            self.pending.append(_Pending(outcome, float(sent), float(told)))
        self.inner.load_state_dict(state)


def _dropped(outcome: TrainResult | Failure | None) -> bool:
    return isinstance(outcome, Failure) and outcome.kind is FailureKind.DROPPED


LEFT = "the device left (unplugged, busy or off Wi-Fi)"
FLAT = "the device's battery fell to the policy's floor"


def _left(task: TrainTask, after_s: float, why: str = LEFT) -> Failure:
    return Failure(
        task.round, task.client_id, FailureKind.DROPPED, f"{why} {after_s:.0f} s after it was sent"
    )
