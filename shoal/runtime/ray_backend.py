"""Run client work on a Ray cluster: a local one, or an existing one (``address="auto"``).

Each of ``num_workers`` actors owns a fixed share of the clients (by a hash of the client
id) and receives those clients' data once, when it starts; a round then ships only the
global weights (once per round, through Ray's object store) and small task headers.
Results come back encoded with shoal's own wire codec and are decoded and validated
here, exactly as they would be from a device. Clients' own state (SCAFFOLD's control
variates) is kept here, on the driver, and travels with each task and back with its result,
so a worker that restarts loses nothing and checkpoints hold it all. A worker that dies or misses the deadline
turns its clients' tasks into :class:`~shoal.messages.Failure`\\s and is restarted.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from shoal.client.app import AppBuilder, ClientApp, run_evaluate, run_train
from shoal.client.state import ClientState
from shoal.data.datasets import ClientData, FederatedDataset
from shoal.errors import ConfigError, WireFormatError
from shoal.messages import (
    EvalResult,
    EvalTask,
    Failure,
    FailureKind,
    TrainResult,
    TrainTask,
    decode,
    encode,
)
from shoal.models import ModelFactory
from shoal.runtime.backend import LocalClients, unknown_client
from shoal.transforms.base import UpdateTransform

# (index into the round's weight arrays, encoded task without weights, client state or None)
Job = tuple[int, bytes, ClientState | None]
Answer = tuple[bytes, ClientState | None]  # the encoded outcome and, for a train result, the new state


def _worker_of(client_id: str, num_workers: int) -> int:
    return int.from_bytes(hashlib.sha256(client_id.encode()).digest()[:4], "little") % num_workers


def _strip(task: TrainTask | EvalTask) -> bytes:
    """The task encoded without its weights, which travel once per round instead."""
    return encode(dataclasses.replace(task, params=np.empty(0, np.float32)))


class _Worker:
    """The actor body: one client app and a fixed share of the clients' data."""

    def __init__(
        self,
        builder: AppBuilder,
        model: ModelFactory,
        clients: dict[str, ClientData],
        transforms: Sequence[UpdateTransform],
        run_seed: int,
        torch_threads: int,
    ) -> None:
        import torch

        torch.set_num_threads(torch_threads)
        self.app: ClientApp = builder.build(model)
        self.clients, self.transforms, self.run_seed = clients, list(transforms), run_seed

    def run(self, weights: list[Any], jobs: list[Job]) -> list[Answer]:
        import ray

        arrays = ray.get(weights)
        out: list[Answer] = []
        for index, raw, state in jobs:
            task = decode(raw)
            data = self.clients[task.client_id]
            if isinstance(task, TrainTask):
                task = dataclasses.replace(task, params=arrays[index])
                working = dict(state or {})
                result = run_train(self.app, task, data, self.transforms, self.run_seed, working)
                out.append((encode(result), working if isinstance(result, TrainResult) else None))
            elif isinstance(task, EvalTask):
                task = dataclasses.replace(task, params=arrays[index])
                out.append((encode(run_evaluate(self.app, task, data, dict(state or {}))), None))
        return out


class RayBackend(LocalClients):
    """A :class:`~shoal.runtime.backend.Backend` on Ray actors."""

    def __init__(
        self,
        builder: AppBuilder,
        model: ModelFactory,
        data: FederatedDataset,
        transforms: Sequence[UpdateTransform] = (),
        run_seed: int = 0,
        *,
        address: str | None = None,
        num_workers: int = 2,
        timeout_s: float = 600.0,
        torch_threads: int = 1,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError('backend = "ray" needs Ray: pip install "shoal[ray]"') from None
        if num_workers < 1:
            raise ConfigError(f"ray_workers must be >= 1, got {num_workers}")
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        super().__init__()
        self._ray, self._timeout, self._data = ray, timeout_s, data
        actor = ray.remote(num_cpus=1, max_restarts=-1)(_Worker)
        shares: list[dict[str, ClientData]] = [{} for _ in range(num_workers)]
        for cid, client in data.clients.items():
            shares[_worker_of(cid, num_workers)][cid] = client
        # Held here so a restarted worker can fetch its share again (Ray frees unreferenced objects).
        self._shares = [ray.put(share) for share in shares]
        self._workers: list[Any] = [
            actor.remote(builder, model, share, list(transforms), run_seed, torch_threads)
            for share in self._shares
        ]

    def _run(self, tasks: Sequence[TrainTask | EvalTask]) -> list[Any]:
        out: list[Any] = [unknown_client(t) for t in tasks]
        weights: dict[int, int] = {}  # id(params) -> index: the same array is put once
        refs: list[Any] = []
        plan: dict[int, list[tuple[int, Job]]] = {}
        for pos, t in enumerate(tasks):
            if t.client_id not in self._data.clients:
                continue
            if id(t.params) not in weights:
                weights[id(t.params)] = len(refs)
                refs.append(self._ray.put(t.params))
            state = self.client_states.get(t.client_id)  # evaluation reads a personal model
            job = (weights[id(t.params)], _strip(t), state)
            plan.setdefault(_worker_of(t.client_id, len(self._workers)), []).append((pos, job))
        calls = {w: self._workers[w].run.remote(refs, [j for _, j in jobs]) for w, jobs in plan.items()}
        if not calls:
            return out
        ready, _ = self._ray.wait(list(calls.values()), num_returns=len(calls), timeout=self._timeout)
        for w, ref in calls.items():
            positions = [pos for pos, _ in plan[w]]
            answers = self._collect(w, ref, ref in ready, len(positions))
            for pos, answer in zip(positions, answers, strict=True):
                task = tasks[pos]
                if isinstance(answer[0], bytes):
                    out[pos] = _decode(answer[0], task)
                    if isinstance(out[pos], TrainResult) and answer[1] is not None:
                        self.client_states.stage(task.client_id, answer[1])
                else:
                    out[pos] = Failure(task.round, task.client_id, answer[0], answer[1])
        return out

    def _collect(self, w: int, ref: Any, ready: bool, n: int) -> Sequence[Answer | tuple[FailureKind, str]]:
        """The worker's encoded answers, or one (kind, reason) per task when it failed."""
        if not ready:
            self._ray.cancel(ref)  # force=True is not supported for actor tasks
            return [(FailureKind.TIMEOUT, f"ray worker {w} gave no answer in {self._timeout:.0f} s")] * n
        try:
            answers: list[Answer] = self._ray.get(ref)
            return answers
        except self._ray.exceptions.RayError as exc:
            return [(FailureKind.DROPPED, f"ray worker {w} failed: {type(exc).__name__}")] * n

    def train(self, tasks: Sequence[TrainTask]) -> list[TrainResult | Failure]:
        return self._run(tasks)

    def evaluate(self, tasks: Sequence[EvalTask]) -> list[EvalResult | Failure]:
        return self._run(tasks)

    def close(self) -> None:
        for w in self._workers:
            self._ray.kill(w)
        self._workers = []


def _decode(raw: bytes, task: TrainTask | EvalTask) -> TrainResult | EvalResult | Failure:
    try:
        msg = decode(raw)
    except WireFormatError as exc:
        return Failure(task.round, task.client_id, FailureKind.REJECTED, str(exc))
    if not isinstance(msg, TrainResult | EvalResult | Failure):
        return Failure(task.round, task.client_id, FailureKind.REJECTED, f"unexpected {type(msg).__name__}")
    return msg
